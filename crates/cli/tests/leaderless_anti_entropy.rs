//! Leaderless anti-entropy end to end (issue 14 points 8 and 9): three real `replikv node`
//! processes, n = 3, w = 2, r = 2, anti-entropy every [`INTERVAL_MS`].
//!
//! A node killed (SIGKILL) misses writes to other keys and deletes of keys it holds; the others
//! discard what they would send it (their links hold what they queue while it is down and
//! would deliver the writes when it comes back, leaving nothing to repair: the test waits for
//! their queues to drain, discarded, before it unblocks them). Restarted, with no read issued
//! anywhere, it converges within a few intervals: `replikv check` finds every replica the same,
//! its status counts the keys anti-entropy repaired (every key it missed) and no read repair,
//! and INFO, `/metrics` and `replikv status` show the same. On the way back it rebuilds its
//! Merkle trees from its data directory: its status says `rebuilding` or `ready`, and its
//! REPLIKV.DIGEST answers BUSY until they are ready and the digest after.
//!
//! With hinted handoff on and anti-entropy off, the writes a killed node misses are kept as
//! hints by their coordinator (with n equal to the nodes there is no other node to stand in);
//! its backlog for the node shows in status and metrics, and once the node is back the hints
//! are delivered, the backlog returns to zero, and `replikv check` finds every replica the same,
//! again with no read.
//!
//! Tombstone collection (point 5): with a grace period of a second, a key deleted while a
//! replica holding its value is down stays a tombstone on the others however long that replica
//! stays down (nobody knows it holds the tombstone); once it is back, anti-entropy hands it the
//! tombstone and the key does not come back through any node; then every node purges the
//! tombstone for good, and `replikv check` finds every replica the same.

mod common;

use common::trio::Trio;
use redis::{Connection, Value};
use std::time::{Duration, Instant};

/// Milliseconds between the rounds each node starts.
const INTERVAL_MS: u64 = 300;
/// Keys written before the kill, which the killed node holds.
const KEYS_BEFORE: usize = 50;
/// Keys written while it is down, which it misses.
const KEYS_WHILE_DOWN: usize = 200;
/// Keys of [`KEYS_BEFORE`] deleted while it is down.
const DELETES_WHILE_DOWN: usize = 5;
/// How long the restarted node may take to converge: tens of intervals, for a loaded machine.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `f` until it succeeds, for `within` at most.
fn retry<T>(what: &str, within: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match f() {
            Ok(value) => return value,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("{what}: still failing after {within:?}: {e}"),
        }
    }
}

fn cmd(con: &mut Connection, args: &[&str]) -> Result<Value, String> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query::<Value>(con).map_err(|e| e.to_string())
}

/// Makes node `i`'s link to node `peer` discard every message (`blocked`), or clears it.
fn block(trio: &Trio, i: usize, peer: usize, blocked: bool) {
    let body = format!(r#"{{"peer": "n{}", "blocked": {blocked}}}"#, peer + 1);
    let (code, answer) = trio.nodes[i].http("PUT", "/api/v1/test/faults", body.as_bytes());
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&answer));
}

/// Unblocks n1's and n2's links to node `down` once what they queued for it while it was down
/// has left their queues, discarded: otherwise the queued writes would reach it as writes.
fn unblock_drained(trio: &Trio, down: usize) {
    let id = format!("n{}", down + 1);
    for i in (0..3).filter(|i| *i != down) {
        retry(&format!("n{}'s link to {id} up and its queue drained", i + 1), CONVERGE_TIMEOUT, || {
            let status = trio.status(i);
            let link = status["peers"].as_array().unwrap().iter().find(|p| p["id"] == id.as_str()).cloned().unwrap();
            (link["state"] == "connected" && link["queued"] == 0).then_some(()).ok_or(link.to_string())
        });
        block(trio, i, down, false);
    }
}

/// Node `i`'s `replication.leaderless.anti_entropy` status object.
fn anti_entropy(trio: &Trio, i: usize) -> serde_json::Value {
    trio.status(i)["replication"]["leaderless"]["anti_entropy"].clone()
}

/// `replikv check`: its exit code and output.
fn check(trio: &Trio) -> (Option<i32>, String) {
    let (code, out, err) = trio.replikv_code(&["check", "--timeout-secs", "5"]);
    (code, out + &err)
}

#[test]
fn a_restarted_node_converges_by_anti_entropy_alone_and_says_so() {
    let replication = format!(
        "mode = \"leaderless\"\nn = 3\nw = 2\nr = 2\nack_timeout_ms = 1500\nanti_entropy_interval_ms = {INTERVAL_MS}"
    );
    let mut trio = Trio::launch(&replication, &["--test-faults"]);
    // Writes need w = 2: the first succeeds once a node's links are up.
    retry("a first write", Duration::from_secs(30), || cmd(&mut trio.con(0), &["SET", "k0", "v"]).map(|_| ()));
    let mut con = trio.con(0);
    for i in 1..KEYS_BEFORE {
        cmd(&mut con, &["SET", &format!("k{i}"), "v"]).unwrap();
    }
    retry("every replica the same before the kill", CONVERGE_TIMEOUT, || match check(&trio) {
        (Some(0), _) => Ok(()),
        (_, out) => Err(out),
    });

    // n3 down; n1 and n2 discard what they would send it.
    let down = 2;
    block(&trio, 0, down, true);
    block(&trio, 1, down, true);
    trio.nodes[down].kill9();
    let (mut n1, mut n2) = (trio.con(0), trio.con(1));
    for i in 0..KEYS_WHILE_DOWN {
        let con = if i % 2 == 0 { &mut n1 } else { &mut n2 };
        cmd(con, &["SET", &format!("new{i}"), "while n3 was down"]).unwrap();
    }
    for i in 0..DELETES_WHILE_DOWN {
        assert_eq!(cmd(&mut n2, &["DEL", &format!("k{i}")]).unwrap(), Value::Int(1), "k{i} existed");
    }

    // Back, with no read anywhere: its trees come from its data directory first.
    trio.nodes[down].restart();
    unblock_drained(&trio, down);
    let trees = retry("n3's trees ready", CONVERGE_TIMEOUT, || {
        let status = trio.try_status(down).ok_or("no status yet")?;
        let ae = status["replication"]["leaderless"]["anti_entropy"].clone();
        let trees = ae["trees"].as_str().ok_or(format!("no trees in {status}"))?.to_string();
        assert!(trees == "rebuilding" || trees == "ready", "trees {trees:?}");
        let digest = cmd(&mut trio.con(down), &["REPLIKV.DIGEST"]);
        match (trees.as_str(), digest) {
            ("ready", Ok(Value::Array(parts))) => Ok((ae, parts)),
            ("ready", other) => panic!("trees ready, yet the digest is {other:?}"),
            // Rebuilding when asked: the digest may have been asked after they became ready.
            (_, Err(e)) if e.contains("rebuilding its Merkle trees") => Err(e),
            (_, other) => Err(format!("rebuilding; digest {other:?}")),
        }
    });
    let (ae, digest) = trees;
    assert!(ae["tree_keys"].as_u64() >= Some(KEYS_BEFORE as u64), "the trees hold what n3 held: {ae}");
    assert_eq!(digest.len(), 4, "a digest is [lsn, keys, root, buckets]: {digest:?}");

    let out = retry("every replica the same, by anti-entropy alone", CONVERGE_TIMEOUT, || match check(&trio) {
        (Some(0), out) => Ok(out),
        (_, out) => Err(out),
    });
    assert!(out.contains("every pair the same"), "{out}");

    // Its status: every key it missed came by anti-entropy, none by a read.
    let status = trio.status(down);
    let l = &status["replication"]["leaderless"];
    let repaired = l["anti_entropy"]["keys_repaired"].as_u64().unwrap();
    let missed = (KEYS_WHILE_DOWN + DELETES_WHILE_DOWN) as u64;
    assert!(repaired >= missed, "n3 repaired {repaired} keys by anti-entropy, missed {missed}: {l:#}");
    assert_eq!((l["reads_coordinated"].as_u64(), l["read_repairs_received"].as_u64()), (Some(0), Some(0)), "{l:#}");
    // The peers it exchanged with (one or both, as the draws went), by name.
    let last = l["anti_entropy"]["last_exchange_ms_ago"].as_object().unwrap();
    assert!(!last.is_empty() && last.keys().all(|p| p == "n1" || p == "n2"), "{l:#}");
    assert_eq!(cmd(&mut trio.con(down), &["DBSIZE"]).unwrap(), cmd(&mut trio.con(0), &["DBSIZE"]).unwrap());
    // The deletes are tombstones kept for the grace period (10 days by default), on every replica.
    for i in 0..3 {
        let pending = trio.status(i)["replication"]["leaderless"]["anti_entropy"]["tombstones_pending"].as_u64();
        assert!(pending >= Some(DELETES_WHILE_DOWN as u64), "n{}: {pending:?} tombstones pending", i + 1);
    }

    // The same, seen through INFO, /metrics and `replikv status`.
    let Value::BulkString(info) = cmd(&mut trio.con(down), &["INFO", "replication"]).unwrap() else { panic!("INFO") };
    let info = String::from_utf8(info).unwrap();
    assert!(info.contains("replikv_anti_entropy_trees:ready\r\n"), "{info}");
    assert!(info.contains(&format!("replikv_anti_entropy_interval_ms:{INTERVAL_MS}\r\n")), "{info}");
    let field = |name: &str| -> u64 {
        let line =
            info.lines().find(|l| l.starts_with(&format!("{name}:"))).unwrap_or_else(|| panic!("{name}: {info}"));
        line[name.len() + 1..].parse().unwrap()
    };
    assert!(field("replikv_anti_entropy_keys_repaired") >= missed, "{info}");
    assert!(field("replikv_anti_entropy_keys_received") >= missed, "{info}");
    // Some side of some round found its roots differ (which side counts it depends on who
    // started the rounds that repaired n3).
    let differing: u64 = (0..3)
        .map(|i| {
            let l = &trio.status(i)["replication"]["leaderless"]["anti_entropy"];
            l["ranges_differing"].as_u64().unwrap()
        })
        .sum();
    assert!(differing > 0, "no round found a range differing");
    let (code, metrics) = trio.nodes[down].http("GET", "/metrics", b"");
    assert_eq!(code, 200);
    let metrics = String::from_utf8(metrics).unwrap();
    let metric = |prefix: &str| -> f64 {
        let line =
            metrics.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(metric("replikv_anti_entropy_events{event=\"keys_repaired\"}") >= missed as f64);
    assert!(metric("replikv_anti_entropy_events{event=\"keys_received\"}") >= missed as f64);
    assert_eq!(metric("replikv_anti_entropy_trees_ready"), 1.0);
    let peer = last.keys().next().unwrap();
    assert!(metric(&format!("replikv_anti_entropy_last_exchange_seconds{{peer=\"{peer}\"}}")) >= 0.0);
    assert!(metrics.contains("replikv_tombstones_pending_purge "), "{metrics}");
    let (ok, table, err) = trio.replikv(&["status"]);
    assert!(ok, "{table}{err}");
    assert!(table.contains("TREES  AE_ROUNDS  AE_REPAIRED  TOMBSTONES_PENDING  HINTS"), "{table}");
    let n3 = table.lines().find(|l| l.starts_with("n3 ")).unwrap_or_else(|| panic!("{table}"));
    assert!(n3.contains(" ready "), "{n3}");
}

#[test]
fn hints_kept_for_a_killed_node_are_delivered_when_it_is_back_and_the_backlog_returns_to_zero() {
    let replication = "mode = \"leaderless\"\nn = 3\nw = 2\nr = 2\nack_timeout_ms = 1500\n\
                       anti_entropy_interval_ms = 0\nhinted_handoff = true";
    let mut trio = Trio::launch(replication, &["--test-faults"]);
    retry("a first write", Duration::from_secs(30), || cmd(&mut trio.con(0), &["SET", "k0", "v"]).map(|_| ()));
    retry("every replica the same before the kill", CONVERGE_TIMEOUT, || match check(&trio) {
        (Some(0), _) => Ok(()),
        (_, out) => Err(out),
    });

    let down = 2;
    block(&trio, 0, down, true);
    block(&trio, 1, down, true);
    trio.nodes[down].kill9();
    let mut n1 = trio.con(0);
    const HINTED: u64 = 50;
    for i in 0..HINTED {
        cmd(&mut n1, &["SET", &format!("hinted{i}"), "while n3 was down"]).unwrap();
    }
    // n1 coordinated them all and keeps a hint of each for n3.
    retry("n1's backlog for n3", CONVERGE_TIMEOUT, || {
        let ae = anti_entropy(&trio, 0);
        (ae["hint_backlog"]["n3"].as_u64() == Some(HINTED)).then_some(()).ok_or(ae.to_string())
    });
    let (_, metrics) = trio.nodes[0].http("GET", "/metrics", b"");
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(metrics.contains(&format!("replikv_hint_backlog{{peer=\"n3\"}} {HINTED}\n")), "{metrics}");
    let Value::BulkString(info) = cmd(&mut trio.con(0), &["INFO", "replication"]).unwrap() else { panic!("INFO") };
    let info = String::from_utf8(info).unwrap();
    for line in [
        "replikv_hinted_handoff:1\r\n",
        "replikv_sloppy_quorum:0\r\n",
        &format!("replikv_hint_backlog:n3={HINTED}\r\n"),
    ] {
        assert!(info.contains(line), "{line:?} in\n{info}");
    }
    let (ok, table, err) = trio.replikv(&["status"]);
    assert!(ok, "{table}{err}");
    let row = table.lines().find(|l| l.starts_with("n1 ")).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(&format!(" {HINTED} ")), "n1's HINTS cell: {row}\n{table}");

    trio.nodes[down].restart();
    unblock_drained(&trio, down);
    let ae = retry("the hints delivered and the backlog back to zero", CONVERGE_TIMEOUT, || {
        let ae = anti_entropy(&trio, 0);
        let empty = ae["hint_backlog"].as_object().is_some_and(|b| b.values().all(|n| n == 0));
        (empty && ae["hints_delivered"].as_u64() >= Some(HINTED)).then_some(ae.clone()).ok_or(ae.to_string())
    });
    assert_eq!(ae["hints_dropped"], 0, "{ae}");
    let out = retry("every replica the same, by hinted handoff alone", CONVERGE_TIMEOUT, || match check(&trio) {
        (Some(0), out) => Ok(out),
        (_, out) => Err(out),
    });
    assert!(out.contains("every pair the same"), "{out}");
    // Neither a read nor anti-entropy (off) brought them.
    let l = &trio.status(down)["replication"]["leaderless"];
    assert_eq!(
        (l["read_repairs_received"].as_u64(), l["anti_entropy"]["keys_repaired"].as_u64()),
        (Some(0), Some(0)),
        "{l:#}"
    );
    let (_, metrics) = trio.nodes[0].http("GET", "/metrics", b"");
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(metrics.contains("replikv_hint_backlog{peer=\"n3\"} 0\n"), "{metrics}");
}

/// The tombstone grace period of the tombstone tests, in milliseconds.
const GRACE_MS: u64 = 1_000;

/// A trio whose n3 held key `doomed` and was down while it was deleted through n1, for four
/// grace periods (checking that n1 and n2 purged nothing meanwhile); n3 is back and its links
/// unblocked when this returns.
fn deleted_while_a_replica_was_down() -> Trio {
    let replication = format!(
        "mode = \"leaderless\"\nn = 3\nw = 2\nr = 2\nack_timeout_ms = 1500\nanti_entropy_interval_ms = {INTERVAL_MS}\n\
         tombstone_grace_ms = {GRACE_MS}"
    );
    let mut trio = Trio::launch(&replication, &["--test-faults"]);
    retry("a first write", Duration::from_secs(30), || cmd(&mut trio.con(0), &["SET", "doomed", "v"]).map(|_| ()));
    retry("every replica holds it", CONVERGE_TIMEOUT, || match check(&trio) {
        (Some(0), _) => Ok(()),
        (_, out) => Err(out),
    });
    // n3 down with the value; the delete reaches n1 and n2 only.
    let down = 2;
    block(&trio, 0, down, true);
    block(&trio, 1, down, true);
    trio.nodes[down].kill9();
    assert_eq!(cmd(&mut trio.con(0), &["DEL", "doomed"]).unwrap(), Value::Int(1));
    // Four grace periods pass while n3 is down: nobody purges, for nobody knows n3 holds it.
    std::thread::sleep(Duration::from_millis(4 * GRACE_MS));
    for i in 0..2 {
        let ae = anti_entropy(&trio, i);
        let purged = trio.status(i)["replication"]["leaderless"]["tombstones_purged"].as_u64();
        assert_eq!((ae["tombstones_pending"].as_u64(), purged), (Some(1), Some(0)), "n{}: {ae}", i + 1);
    }
    trio.nodes[down].restart();
    assert_eq!(cmd(&mut trio.con(down), &["DBSIZE"]).unwrap(), Value::Int(1), "n3 is back with its old value");
    unblock_drained(&trio, down);
    trio
}

#[test]
fn a_replica_down_through_the_whole_grace_period_does_not_bring_a_deleted_key_back() {
    let trio = deleted_while_a_replica_was_down();
    // Anti-entropy hands n3 the tombstone, which covers its old value (n3 then holds it, or
    // has already purged it).
    retry("n3 takes the tombstone", CONVERGE_TIMEOUT, || {
        let l = trio.status(2)["replication"]["leaderless"].clone();
        let (pending, purged) = (l["anti_entropy"]["tombstones_pending"].as_u64(), l["tombstones_purged"].as_u64());
        (pending >= Some(1) || purged >= Some(1)).then_some(()).ok_or(l.to_string())
    });
    // However the tombstone fares after that, the value never comes back through any node.
    for _ in 0..10 {
        for i in 0..3 {
            assert_eq!(cmd(&mut trio.con(i), &["GET", "doomed"]).unwrap(), Value::Nil, "read through n{}", i + 1);
        }
        std::thread::sleep(Duration::from_millis(INTERVAL_MS));
    }
}

#[test]
fn once_every_replica_holds_a_tombstone_past_its_grace_every_node_purges_it_for_good() {
    let trio = deleted_while_a_replica_was_down();
    retry("the tombstone purged on every replica", CONVERGE_TIMEOUT, || {
        let purged: Vec<Option<u64>> =
            (0..3).map(|i| trio.status(i)["replication"]["leaderless"]["tombstones_purged"].as_u64()).collect();
        let pending: Vec<Option<u64>> = (0..3).map(|i| anti_entropy(&trio, i)["tombstones_pending"].as_u64()).collect();
        let done = purged.iter().all(|p| *p >= Some(1)) && pending.iter().all(|p| *p == Some(0));
        done.then_some(()).ok_or(format!("purged {purged:?}, pending {pending:?}"))
    });
    let out = retry("every replica the same", CONVERGE_TIMEOUT, || match check(&trio) {
        (Some(0), out) => Ok(out),
        (_, out) => Err(out),
    });
    assert!(out.contains("every pair the same"), "{out}");
    for i in 0..3 {
        assert_eq!(cmd(&mut trio.con(i), &["DBSIZE"]).unwrap(), Value::Int(0), "n{} holds nothing", i + 1);
    }
}

#[test]
fn a_sloppy_quorum_is_warned_about_at_start_and_refused_without_hinted_handoff() {
    let replication = "mode = \"leaderless\"\nn = 3\nw = 2\nr = 2\nhinted_handoff = true\nsloppy_quorum = true";
    let trio = Trio::launch(replication, &[]);
    let log = trio.nodes[0].log_text();
    assert!(log.contains("sloppy_quorum = true") && log.contains("w + r > n no longer guarantees overlap"), "{log}");
    let Value::BulkString(info) = cmd(&mut trio.con(0), &["INFO", "replication"]).unwrap() else { panic!("INFO") };
    assert!(String::from_utf8(info).unwrap().contains("replikv_sloppy_quorum:1\r\n"));
    // The same file without hinted_handoff: the node refuses to start, naming both settings.
    let file = trio.cluster_file();
    let text = std::fs::read_to_string(&file).unwrap().replace("hinted_handoff = true\n", "");
    let other = file.with_file_name("no-handoff.toml");
    std::fs::write(&other, text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_replikv"))
        .args(["node", "--id", "n1", "--config", other.to_str().unwrap(), "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("sloppy_quorum = true") && stderr.contains("hinted_handoff = true"), "{stderr}");
}
