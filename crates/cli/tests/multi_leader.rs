//! End-to-end multi-leader replication between real processes on 127.0.0.1 (issue 16 point
//! 8): two datacenters of two nodes each; during a cut between them (`replikv fault partition
//! dc2`) each datacenter's leader takes a write of the lecture's cell, and after the cut heals
//! every node holds the same result under `lww`, `merge` and `app`, with the conflict in the
//! conflict log (REPLIKV.CONFLICTS, `replikv conflicts`).

mod common;

use common::{free_ports, Node};
use redis::{Commands, Connection};
use serde_json::Value;
use std::time::{Duration, Instant};

const KEY: &str = "users.1234.picture_url";

/// Four nodes: n1 (leads dc1), n2, n3 (leads dc2), n4.
struct Dcs {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

impl Dcs {
    /// Starts the cluster with `replication` lines added to `[replication]` and faults on.
    fn start(replication: &str) -> Dcs {
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(12);
        let mut text = format!("cluster = \"e2e\"\n[replication]\nmode = \"multi-leader\"\n{replication}\n");
        for i in 0..4 {
            let (peer, resp, http) = (ports[3 * i], ports[3 * i + 1], ports[3 * i + 2]);
            text += &format!(
                "[[nodes]]\nid = \"n{}\"\npeer_addr = \"127.0.0.1:{peer}\"\nresp_addr = \"127.0.0.1:{resp}\"\nhttp_addr = \"127.0.0.1:{http}\"\ndatacenter = \"dc{}\"\n",
                i + 1,
                i / 2 + 1
            );
        }
        let root = dir.path().join("e2e");
        std::fs::create_dir_all(&root).unwrap();
        let file = root.join("cluster.toml");
        std::fs::write(&file, text).unwrap();
        let nodes = (0..4)
            .map(|i| {
                let id = format!("n{}", i + 1);
                let args = ["--config", file.to_str().unwrap(), "--id", &id, "--test-faults"];
                Node::start_on(&root.join(&id), ports[3 * i + 1], ports[3 * i + 2], &args)
            })
            .collect();
        let dcs = Dcs { nodes, dir };
        dcs.wait("both datacenters' leaders see each other", |d| {
            [0, 2].iter().all(|&i| d.status(i)["replication"]["multi_leader"]["datacenters"][0]["up"] == true)
        });
        dcs
    }

    fn con(&self, i: usize) -> Connection {
        let client = redis::Client::open(self.nodes[i].url()).unwrap();
        let con = client.get_connection_with_timeout(Duration::from_secs(10)).unwrap();
        con.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        con
    }

    fn status(&self, i: usize) -> Value {
        let (code, body) = self.nodes[i].http("GET", "/api/v1/status", b"");
        assert_eq!(code, 200);
        serde_json::from_slice(&body).unwrap()
    }

    /// Runs `replikv ARGS --name e2e --data DIR`: (exit success, stdout, stderr).
    fn replikv(&self, args: &[&str]) -> (bool, String, String) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_replikv"))
            .args(args)
            .args(["--name", "e2e", "--data"])
            .arg(self.dir.path())
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
    }

    /// Waits (bounded) until `done` holds.
    fn wait(&self, what: &str, done: impl Fn(&Dcs) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(self) {
            assert!(Instant::now() < deadline, "{what}: not within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every node's GET of `KEY` (a SIBLINGS error as its text).
    fn reads(&self) -> Vec<String> {
        (0..4)
            .map(|i| match self.con(i).get::<_, Option<String>>(KEY) {
                Ok(value) => value.unwrap_or_else(|| "(nil)".into()),
                Err(e) => e.to_string(),
            })
            .collect()
    }

    /// The lecture's example: the cell written in dc1, seen in dc2, then written in both
    /// during a cut; returns once every node reads the same again.
    fn lecture(&self) -> Vec<String> {
        let ok: String = self.con(0).set(KEY, "me-old.jpg").unwrap();
        assert_eq!(ok, "OK");
        self.wait("dc2 has the first write", |d| d.reads()[3] == "me-old.jpg");
        let (ok, out, err) = self.replikv(&["fault", "partition", "dc2"]);
        assert!(ok, "partition: {out}{err}");
        assert!(
            out.contains("n3 -> n1: blocked") && !out.contains("n3 -> n4"),
            "a cut between datacenters only: {out}"
        );
        let ok: String = self.con(0).set(KEY, "me-new.jpg").unwrap();
        assert_eq!(ok, "OK", "dc1 takes writes during the cut");
        std::thread::sleep(Duration::from_millis(20));
        let ok: String = self.con(2).set(KEY, "me-old2.jpg").unwrap();
        assert_eq!(ok, "OK", "so does dc2");
        self.wait("each datacenter's follower has its own write", |d| {
            let reads = d.reads();
            reads[1] == "me-new.jpg" && reads[3] == "me-old2.jpg"
        });
        let (ok, out, err) = self.replikv(&["fault", "heal"]);
        assert!(ok, "heal: {out}{err}");
        // Before the exchange each datacenter reads its own write, so equal reads are the end.
        self.wait("every node reads the same", |d| {
            let reads = d.reads();
            reads.iter().all(|r| *r == reads[0])
        });
        self.reads()
    }
}

/// The conflict log entries node `i` lists, as `GET /api/v1/conflicts` answers them.
fn conflicts(d: &Dcs, i: usize) -> Vec<Value> {
    let (code, body) = d.nodes[i].http("GET", "/api/v1/conflicts?prefix=users.", b"");
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice::<Value>(&body).unwrap().as_array().unwrap().clone()
}

#[test]
fn under_lww_the_later_write_wins_everywhere_and_the_loser_is_in_the_conflict_log() {
    let d = Dcs::start("resolve = \"lww\"");
    let reads = d.lecture();
    assert_eq!(reads, vec!["me-old2.jpg"; 4], "dc2's write was stamped later");
    d.wait("dc1 logged the conflict", |d| !conflicts(d, 0).is_empty());
    let entries = conflicts(&d, 0);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert_eq!(
        (entry["key"].as_str(), entry["datacenter"].as_str(), entry["resolve"].as_str()),
        (Some(KEY), Some("dc2"), Some("lww"))
    );
    assert_eq!(entry["lost"][0][2], "me-new.jpg", "the losing value is kept: {entry}");
    let lecture = &entry["lecture"];
    assert_eq!(
        (lecture["table"].as_str(), lecture["key"].as_str(), lecture["column"].as_str()),
        (Some("users"), Some("1234"), Some("picture_url"))
    );
    assert_eq!(
        (lecture["old_value"].as_str(), lecture["new_value"].as_str()),
        (Some("me-new.jpg"), Some("me-old2.jpg"))
    );
    d.wait("dc1's follower holds the log too", |d| conflicts(d, 1).len() == 1);
    // The same over RESP and from the command line.
    let listed: redis::Value =
        redis::cmd("REPLIKV.CONFLICTS").arg("users.").arg("COUNT").arg(5).query(&mut d.con(0)).unwrap();
    let redis::Value::Array(listed) = listed else { panic!("{listed:?}") };
    assert_eq!(listed.len(), 1);
    let (ok, out, err) = d.replikv(&["conflicts", "--node", "n1"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("table: users  key: 1234  column: picture_url  old_value: me-new.jpg  new_value: me-old2.jpg"),
        "{out}"
    );
    let info: String = redis::cmd("INFO").arg("replication").query(&mut d.con(0)).unwrap();
    assert!(info.contains("replikv_datacenter:dc1") && info.contains("replikv_conflicts:1"), "{info}");
    assert!(info.contains("datacenter0:name=dc2,leader=n3,state=online"), "{info}");
    // The metrics follow the status the node publishes every few milliseconds.
    d.wait("the metrics show the conflict and dc2's lag", |d| {
        let (code, metrics) = d.nodes[0].http("GET", "/metrics", b"");
        let metrics = String::from_utf8_lossy(&metrics);
        code == 200
            && metrics.contains("replikv_multi_leader_events{event=\"conflicts\"} 1")
            && metrics.contains("replikv_datacenter_lag_records{datacenter=\"dc2\"} 0")
            && metrics.contains("replikv_conflict_log_entries 1")
    });
    let status = d.status(0);
    let dc2 = &status["replication"]["multi_leader"]["datacenters"][0];
    assert_eq!((dc2["name"].as_str(), dc2["up"].as_bool()), (Some("dc2"), Some(true)), "{dc2}");
    // Cut again, with a write dc2 lacks: check waits, then says it could not compare.
    assert!(d.replikv(&["fault", "partition", "dc2"]).0);
    let ok: String = d.con(0).set("later", "1").unwrap();
    assert_eq!(ok, "OK");
    let (ok, out, err) = d.replikv(&["check", "--timeout-secs", "2"]);
    assert!(!ok && err.contains("record(s) to replicate"), "{out}{err}");
}

#[test]
fn under_merge_both_values_are_kept_sorted_and_joined() {
    let d = Dcs::start("resolve = \"merge\"");
    assert_eq!(d.lecture(), vec!["me-new.jpg,me-old2.jpg"; 4]);
    let entries = conflicts(&d, 2);
    assert_eq!(entries.len(), 1, "dc2 logged it too, seen from its side: {entries:?}");
    let (ok, out, err) = d.replikv(&["check", "--timeout-secs", "20"]);
    assert!(ok, "every node holds the same data: {out}{err}");
    assert!(
        out.contains("multi-leader, 2 datacenters")
            && out.contains("4 replicas answered: 6 pair(s) compared, every pair the same"),
        "{out}"
    );
    assert_eq!(entries[0]["lost"], Value::Array(vec![]), "merge loses nothing");
}

#[test]
fn under_app_both_values_are_siblings_until_a_write_with_their_context_resolves_them() {
    let d = Dcs::start("resolve = \"app\"");
    for read in d.lecture() {
        assert!(read.contains("SIBLINGS") && read.contains("2 concurrent values"), "{read}");
    }
    let listed: redis::Value = redis::cmd("REPLIKV.SIBLINGS").arg(KEY).query(&mut d.con(3)).unwrap();
    let redis::Value::Array(parts) = listed else { panic!("{listed:?}") };
    let redis::Value::BulkString(token) = &parts[0] else { panic!("{parts:?}") };
    let token = String::from_utf8(token.clone()).unwrap();
    let ok: String =
        redis::cmd("SET").arg(KEY).arg("me-final.jpg").arg("CONTEXT").arg(&token).query(&mut d.con(2)).unwrap();
    assert_eq!(ok, "OK");
    d.wait("every node reads the resolution", |d| d.reads() == vec!["me-final.jpg"; 4]);
}
