//! End-to-end tests of `replikv check` and `replikv status` on a leaderless cluster: real
//! `replikv` processes on 127.0.0.1, started as a user starts them (`replikv cluster start
//! --mode leaderless --detach`).
//!
//! A converged cluster passes the check. A write that reached two of the three replicas (the
//! third cut off with `replikv fault partition`, whose blocked links drop what they carry)
//! leaves that replica without the key: the check exits 1 naming both pairs and the key. A read
//! of the key repairs it, and the check passes again. `status` names n, w and r and the
//! counters, and never a leader. A cluster whose n is fewer than its nodes is refused.
//! Anti-entropy is off here (`--anti-entropy-ms 0`): its rounds would repair the replica before
//! the check saw it differ (`leaderless_anti_entropy.rs` tests them).
//!
//! Why a partition and not SIGSTOP: a stopped process still has its peer connections, and the
//! kernel keeps what the coordinator sends it in the socket's buffers; it applies the write
//! when it resumes, and never differs.

mod common;

use redis::Commands;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The cluster's base port: RESP on 19401..=19403, HTTP on 19501..=19503, peers on
/// 19601..=19603. No other test uses these: `cluster.rs` draws its bases from 20000 up, and
/// `common::free_ports` takes ports from the 8,000 below the kernel's ephemeral range.
const BASE_PORT: u16 = 19400;
/// How long any one `replikv` command may take before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the nodes may take to link up, show their counters, or converge after a read.
const WAIT_TIMEOUT: Duration = Duration::from_secs(15);

/// A leaderless cluster of three detached nodes under a temporary `--data` directory; stopped
/// on drop.
struct Cluster {
    /// The `--data` directory (removed on drop, after the nodes stop).
    data: tempfile::TempDir,
}

impl Cluster {
    /// Starts n1, n2, n3 on [`BASE_PORT`] with their fault tables on, and waits (bounded) until
    /// every node has both peer links up.
    fn start() -> Cluster {
        let cluster = Cluster { data: tempfile::tempdir().unwrap() };
        let base = BASE_PORT.to_string();
        let (code, out, err) = cluster.replikv(&[
            "cluster",
            "start",
            "--mode",
            "leaderless",
            "--anti-entropy-ms",
            "0",
            "--detach",
            "--base-port",
            &base,
        ]);
        assert_eq!(code, Some(0), "cluster start:\n{out}{err}");
        cluster.wait_status("every node linked to both others", |status| {
            status["nodes"].as_array().unwrap().iter().all(|n| n["up"] == true && n["peers"] == "2/2")
        });
        cluster
    }

    /// Runs `replikv ARGS --data DIR` to its end (at most [`COMMAND_TIMEOUT`]): (exit code,
    /// `None` if a signal ended it; stdout; stderr).
    fn replikv(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let (out, err) = (self.data.path().join("stdout"), self.data.path().join("stderr"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_replikv"))
            .args(args)
            .arg("--data")
            .arg(self.data.path())
            .env("REPLIKV_TEST_FAULTS", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("starting replikv");
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("replikv {args:?} did not finish within {COMMAND_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let read = |path| std::fs::read_to_string(path).unwrap_or_default();
        (status.code(), read(out), read(err))
    }

    /// `replikv status -o json`.
    fn status(&self) -> Value {
        let (code, out, err) = self.replikv(&["status", "-o", "json"]);
        assert_eq!(code, Some(0), "status:\n{out}{err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("status JSON: {e}:\n{out}"))
    }

    /// Waits (bounded by [`WAIT_TIMEOUT`]) until `done` holds for `replikv status -o json`.
    fn wait_status(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            let status = self.status();
            if done(&status) {
                return status;
            }
            assert!(Instant::now() < deadline, "never {what} within {WAIT_TIMEOUT:?}: {status:#}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A RESP connection to node `i` (1-based, as its id).
    fn con(&self, i: u16) -> redis::Connection {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", BASE_PORT + i)).unwrap();
        let con = client.get_connection_with_timeout(Duration::from_secs(10)).unwrap();
        con.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        con
    }

    /// Node `id`'s row in a status JSON.
    fn node<'a>(status: &'a Value, id: &str) -> &'a Value {
        status["nodes"].as_array().unwrap().iter().find(|n| n["id"] == id).unwrap_or_else(|| panic!("{id}: {status}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // `cluster stop` is bounded (SIGTERM, then SIGKILL after its own timeout).
        let _ = self.replikv(&["cluster", "stop"]);
    }
}

#[test]
fn check_passes_names_the_pairs_and_key_a_partial_write_left_and_passes_again_after_read_repair() {
    let cluster = Cluster::start();
    for i in 1..=3 {
        let ok: String = cluster.con(i).set(format!("k{i}"), format!("v{i}")).unwrap();
        assert_eq!(ok, "OK", "a SET through n{i}");
    }

    // status: the mode and quorums, no leader, counters where epochs and lag would be.
    let status = cluster.wait_status("showing one coordinated write per node", |status| {
        ["n1", "n2", "n3"].iter().all(|id| Cluster::node(status, id)["leaderless"]["writes_coordinated"] == 1)
    });
    assert_eq!(
        (&status["mode"], &status["n"], &status["w"], &status["r"]),
        (&"leaderless".into(), &3.into(), &2.into(), &2.into())
    );
    assert!(status.get("leader").is_none() && status.get("acks").is_none(), "{status:#}");
    assert!(Cluster::node(&status, "n1")["epoch"].is_null(), "{status:#}");
    let (code, table, err) = cluster.replikv(&["status"]);
    assert_eq!(code, Some(0), "{table}{err}");
    assert!(table.starts_with("cluster demo: leaderless, n = 3, w = 2, r = 2 ("), "{table}");
    assert!(!table.contains("leads") && !table.contains("EPOCH") && !table.contains("acks"), "{table}");
    assert!(table.contains("WRITES  READS  PARTIAL  REPAIRS_SENT  REPAIRS_RECV"), "{table}");
    assert_eq!(table.lines().filter(|l| l.contains(" leaderless  up ")).count(), 3, "{table}");

    // Converged: every pair the same.
    let (code, out, err) = cluster.replikv(&["check", "--timeout-secs", "20"]);
    assert_eq!(code, Some(0), "a converged cluster passes:\n{out}{err}");
    assert!(out.contains("every replica's Merkle root against every other's"), "{out}");
    assert!(out.contains("3 replicas answered: 3 pair(s) compared, every pair the same"), "{out}");
    assert!(!out.contains("differ"), "{out}");

    // A write that reaches n1 and n2 only: n3's links drop everything while it is cut off.
    let (code, out, err) = cluster.replikv(&["fault", "partition", "n3"]);
    assert_eq!(code, Some(0), "partition:\n{out}{err}");
    let ok: String = cluster.con(1).set("late", "x").unwrap();
    assert_eq!(ok, "OK", "w = 2: n1 and n2 are enough");
    let (code, out, err) = cluster.replikv(&["fault", "heal"]);
    assert_eq!(code, Some(0), "heal:\n{out}{err}");
    let (code, out, err) = cluster.replikv(&["check", "--timeout-secs", "20"]);
    assert_eq!(code, Some(1), "check exits 1 while n3 lacks the write:\n{out}{err}");
    assert!(out.contains("differs from n1, n2") && out.contains("differs from n3"), "{out}");
    for pair in ["n1 and n3", "n2 and n3"] {
        let named = format!("{pair} differ in 1 of 256 key ranges:\n  key range ");
        assert!(out.contains(&named), "{pair} named:\n{out}");
        assert!(err.contains(&format!("{pair} differ in 1 of 256 key ranges")), "{err}");
    }
    assert_eq!(out.matches("\"late\": missing on n3").count(), 2, "{out}");
    assert!(!out.contains("n1 and n2"), "n1 and n2 agree:\n{out}");
    let (code, json, err) = cluster.replikv(&["check", "-o", "json", "--timeout-secs", "20"]);
    assert_eq!(code, Some(1), "{json}{err}");
    let report: Value = serde_json::from_str(&json).unwrap();
    let pairs: Vec<&Value> = report["pairs"].as_array().unwrap().iter().map(|p| &p["replicas"]).collect();
    assert_eq!(pairs, [&serde_json::json!(["n1", "n3"]), &serde_json::json!(["n2", "n3"])], "{report:#}");
    assert_eq!(report["ok"], false);

    // A read of the key through n2 repairs n3; the check passes again once the repair landed.
    let value: String = cluster.con(2).get("late").unwrap();
    assert_eq!(value, "x");
    let deadline = Instant::now() + WAIT_TIMEOUT;
    loop {
        let (code, out, err) = cluster.replikv(&["check", "--timeout-secs", "20"]);
        if code == Some(0) {
            assert!(out.contains("every pair the same"), "{out}");
            break;
        }
        assert_eq!(code, Some(1), "{out}{err}");
        assert!(Instant::now() < deadline, "n3 not repaired within {WAIT_TIMEOUT:?}:\n{out}{err}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = cluster.wait_status("showing the read repair", |status| {
        Cluster::node(status, "n2")["leaderless"]["read_repairs_sent"].as_u64() >= Some(1)
            && Cluster::node(status, "n3")["leaderless"]["read_repairs_received"].as_u64() >= Some(1)
    });
    assert_eq!(Cluster::node(&status, "n2")["leaderless"]["reads_coordinated"], 1, "{status:#}");
}

#[test]
fn check_refuses_a_leaderless_cluster_whose_nodes_do_not_each_hold_every_key() {
    // No process runs: check refuses from the cluster file alone, before asking any node.
    let data = tempfile::tempdir().unwrap();
    let mut text = "cluster = \"ring\"\n[replication]\nmode = \"leaderless\"\nn = 3\n".to_string();
    for i in 1..=5 {
        // Ports nothing listens on (base 19700, beside the other test's), never connected to.
        text += &format!(
            "[[nodes]]\nid = \"n{i}\"\npeer_addr = \"127.0.0.1:{}\"\nresp_addr = \"127.0.0.1:{}\"\nhttp_addr = \"127.0.0.1:{}\"\n",
            19900 + i,
            19700 + i,
            19800 + i
        );
    }
    std::fs::create_dir_all(data.path().join("ring")).unwrap();
    std::fs::write(data.path().join("ring/cluster.toml"), text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_replikv"))
        .args(["check", "--name", "ring", "--timeout-secs", "1", "--data"])
        .arg(data.path())
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "check could not be made:\n{stdout}{stderr}");
    assert!(stderr.contains("leaderless with n = 3 replicas per key on 5 nodes"), "{stderr}");
    assert!(stderr.contains("only when n equals the number of nodes (5)"), "{stderr}");
    assert!(stdout.is_empty(), "nothing compared, nothing printed: {stdout}");
}
