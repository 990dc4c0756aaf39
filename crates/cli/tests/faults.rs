//! End-to-end test faults between real processes on 127.0.0.1: `replikv fault partition`
//! cuts a follower off (a sync write fails with NOREPLICAS, the leader sees the follower down),
//! `replikv fault heal` brings it back (writes succeed, it catches up); a node started without
//! `--test-faults` has no fault endpoint.

mod common;

use common::trio::Trio;
use common::Node;
use redis::Commands;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The flag `REPLIKV_TEST_FAULTS=1` sets (`start_on` takes flags, not variables).
const FAULTS: &[&str] = &["--test-faults"];

/// Runs `replikv fault ARGS` on the cluster: (exit success, stdout, stderr).
fn fault(trio: &Trio, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["fault"];
    all.extend_from_slice(args);
    trio.replikv(&all)
}

/// Node `i`'s fault table, as its endpoint answers it.
fn table(trio: &Trio, i: usize) -> Value {
    let (code, body) = trio.nodes[i].http("GET", "/api/v1/test/faults", b"");
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice::<Value>(&body).unwrap()["peers"].clone()
}

#[test]
fn a_partitioned_follower_stops_sync_writes_and_catches_up_after_heal() {
    let trio = Trio::start("acks = \"sync\"\nack_timeout_ms = 300", FAULTS);
    let ok: String = trio.con(0).set("before", "1").unwrap();
    assert_eq!(ok, "OK");

    let (ok, out, err) = fault(&trio, &["partition", "n3"]);
    assert!(ok, "partition: {out}{err}");
    assert!(out.contains("n3 -> n1: blocked") && out.contains("n1 -> n3: blocked"), "{out}");
    assert_eq!(table(&trio, 0)["n3"]["blocked"], true, "n1 blocks its link to n3");
    assert_eq!(table(&trio, 0)["n2"]["blocked"], false, "n1 still reaches n2");
    assert_eq!(table(&trio, 2)["n1"]["blocked"], true, "n3 blocks its link to n1");
    let (_, status_out, _) = fault(&trio, &["status"]);
    assert!(status_out.contains("n2: -> n3 blocked"), "{status_out}");

    let err = trio.con(0).set::<_, _, String>("during", "1").unwrap_err().to_string();
    assert!(err.contains("NOREPLICAS") && err.contains("1 of the 2 followers"), "{err}");
    trio.wait_follower(2, "down", |f| f["up"] == false);

    let (ok, out, err) = fault(&trio, &["heal"]);
    assert!(ok, "heal: {out}{err}");
    assert_eq!(table(&trio, 2)["n1"]["blocked"], false);
    trio.wait_follower(2, "up again", |f| f["up"] == true);
    let ok: String = trio.con(0).set("after", "1").unwrap();
    assert_eq!(ok, "OK", "writes succeed again once healed");

    let leader_lsn = trio.status(0)["replication"]["last_lsn"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lsn = trio.status(2)["replication"]["last_lsn"].as_u64().unwrap();
        if lsn == leader_lsn {
            break;
        }
        assert!(Instant::now() < deadline, "n3 stuck at {lsn}, the leader at {leader_lsn}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let during: Option<String> = trio.con(2).get("during").unwrap();
    assert_eq!(during.as_deref(), Some("1"), "n3 caught up on the write it missed");
}

#[test]
fn a_fault_on_a_node_that_is_not_in_the_cluster_or_out_of_bounds_is_refused() {
    let trio = Trio::start("acks = \"async\"", FAULTS);
    let (ok, _, err) = fault(&trio, &["partition", "n9"]);
    assert!(!ok && err.contains("no node or datacenter \"n9\""), "{err}");
    let (ok, _, err) = fault(&trio, &["drop", "n2", "1.5"]);
    assert!(!ok && err.contains("0..=1"), "{err}");
    let (code, body) = trio.nodes[0].http("PUT", "/api/v1/test/faults", br#"{"peer": "n2", "delay_ms": 99999}"#);
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
    let (code, _) = trio.nodes[0].http("PUT", "/api/v1/test/faults", br#"{"peer": "n7", "blocked": true}"#);
    assert_eq!(code, 400);
    // Faults combine: a delay after a partition keeps the partition.
    assert!(fault(&trio, &["partition", "n3"]).0);
    assert!(fault(&trio, &["delay", "n2", "20ms"]).0);
    let n2 = table(&trio, 1);
    assert_eq!((n2["n3"]["blocked"].clone(), n2["n3"]["delay_ms"].clone()), (Value::from(true), Value::from(20)));
}

#[test]
fn a_node_started_without_the_flag_has_no_fault_endpoint_and_the_variable_sets_it() {
    let dir = tempfile::tempdir().unwrap();
    let plain = Node::start(&dir.path().join("plain"), &[]);
    let (code, body) = plain.http("GET", "/api/v1/test/faults", b"");
    let body = String::from_utf8_lossy(&body);
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("not started with --test-faults"), "{body}");
    let (code, _) = plain.http("PUT", "/api/v1/test/faults", br#"{"clear": true}"#);
    assert_eq!(code, 404);

    let enabled = Node::start_with_env(&dir.path().join("enabled"), &[], &[("REPLIKV_TEST_FAULTS", "1")]);
    let (code, body) = enabled.http("GET", "/api/v1/test/faults", b"");
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let table: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(table["peers"], serde_json::json!({}), "a node alone has no links");
}
