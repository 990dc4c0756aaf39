//! End to end: `replikv bench` against a real `replikv node`, checking that what the bench counted
//! is what the node saw.
//!
//! The bench counts every command it writes, by name, load phase included; the node counts every
//! command it answers in `replikv_commands_total{command=...}`. A run without lost operations must
//! make the two agree exactly.

mod common;

use std::process::Command;

/// Runs `replikv bench` with `args` and parses its `--json` report.
fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_replikv"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .env("RUST_LOG", "warn")
        .output()
        .expect("running replikv bench");
    assert!(out.status.success(), "bench failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)))
}

/// The node's `replikv_commands_total` for `command`, 0 when absent.
fn node_count(node: &common::Node, command: &str) -> u64 {
    let (status, body) = node.http("GET", "/metrics", b"");
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    let prefix = format!("replikv_commands_total{{command=\"{command}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |n| n.trim().parse().unwrap())
}

/// The phase called `name` in `report`.
fn phase<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["phases"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("no phase {name}"))
}

#[test]
fn bench_counts_what_the_node_saw() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::Node::start(&dir.path().join("n1"), &["--engine", "memory"]);
    let port = node.resp_port.to_string();
    let report = bench(&["-p", &port, "-t", "set,get", "-n", "2000", "-c", "4", "-P", "4", "-r", "500"]);

    assert_eq!(report["errors_total"], 0, "{report}");
    assert_eq!(phase(&report, "load")["ops"], 500);
    assert_eq!(phase(&report, "test set")["ops"], 2000);
    assert_eq!(phase(&report, "test get")["ops"], 2000);
    assert_eq!(phase(&report, "test get")["misses"], 0, "the load phase stored every record");
    // Load phase (500 SETs) and the set test (2000) together, as the node counts them.
    assert_eq!(report["commands"]["set"], 2500);
    assert_eq!(report["commands"]["get"], 2000);
    for command in ["set", "get"] {
        assert_eq!(node_count(&node, command), report["commands"][command].as_u64().unwrap(), "{command}");
    }
    assert_eq!(node_count(&node, "wait"), 0);
}

#[test]
fn wait_without_replicas_is_short_on_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::Node::start(&dir.path().join("n1"), &["--engine", "memory"]);
    let port = node.resp_port.to_string();
    let report =
        bench(&["-p", &port, "--workload", "a", "-n", "1000", "-c", "4", "-r", "200", "--wait", "1,10", "--no-load"]);

    let run = phase(&report, "workload a");
    let ops = run["latency"].as_array().unwrap();
    let updates = ops.iter().find(|o| o["op"] == "update").expect("workload a updates");
    let writes = updates["ops"].as_u64().unwrap();
    assert!(writes > 300, "about half of 1000 operations write: {writes}");
    // A replikv node has no replicas yet: WAIT answers 0, short of 1, after every write.
    assert_eq!(run["errors"]["WAIT_SHORT"].as_u64(), Some(writes), "{run}");
    assert_eq!(run["errors_total"].as_u64(), Some(writes), "reads are no errors");
    assert_eq!(updates["errors"].as_u64(), Some(writes));
    assert_eq!(report["commands"]["wait"].as_u64(), Some(writes));
    assert_eq!(node_count(&node, "wait"), writes);
    assert_eq!(node_count(&node, "set"), writes);
    assert_eq!(node_count(&node, "get"), 1000 - writes);
}
