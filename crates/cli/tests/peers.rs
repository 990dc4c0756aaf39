//! End-to-end: the nodes of a cluster connect to each other at start and check each other's
//! handshake; a node of another cluster is refused, and says why.

mod common;

use common::Node;
use std::time::{Duration, Instant};

/// A cluster file naming `nodes` as (id, peer port); RESP and HTTP addresses are placeholders
/// the test overrides with flags.
fn cluster_file(dir: &std::path::Path, cluster: &str, nodes: &[(&str, u16)]) -> std::path::PathBuf {
    let mut text = format!("cluster = \"{cluster}\"\n[replication]\nacks = \"async\"\n");
    for (i, (id, peer)) in nodes.iter().enumerate() {
        text += &format!(
            "[[nodes]]\nid = \"{id}\"\npeer_addr = \"127.0.0.1:{peer}\"\nresp_addr = \"127.0.0.1:{}\"\nhttp_addr = \"127.0.0.1:{}\"\n",
            1000 + i,
            2000 + i
        );
    }
    let path = dir.join(format!("{cluster}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The node's `peers` from `/api/v1/status`, once `done` holds for them (bounded wait).
fn peers_when(node: &Node, what: &str, done: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, body) = node.http("GET", "/api/v1/status", b"");
        let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let peers = status["peers"].as_array().cloned().unwrap_or_default();
        if done(&peers) {
            return peers;
        }
        assert!(Instant::now() < deadline, "never {what}: {peers:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn cluster_nodes_connect_and_a_node_of_another_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let [p1, p2, p3] = common::free_ports(3)[..] else { unreachable!() };
    let demo = cluster_file(dir.path(), "demo", &[("n1", p1), ("n2", p2)]);
    let config = demo.to_str().unwrap();
    let n1 = Node::start(&dir.path().join("n1"), &["--config", config, "--id", "n1"]);
    let n2 = Node::start(&dir.path().join("n2"), &["--config", config, "--id", "n2"]);
    for node in [&n1, &n2] {
        let peers = peers_when(node, "connected", |p| p.len() == 1 && p[0]["state"] == "connected");
        assert_eq!(peers[0]["inbound"], true, "the other node's link reached this one too");
    }

    // A node of cluster "other" that believes n1 is its peer.
    let other = cluster_file(dir.path(), "other", &[("x1", p3), ("n1", p1)]);
    let x1 = Node::start(&dir.path().join("x1"), &["--config", other.to_str().unwrap(), "--id", "x1"]);
    let peers = peers_when(&x1, "refused", |p| p.len() == 1 && p[0]["state"] == "refused");
    let reason = peers[0]["reason"].as_str().unwrap();
    assert!(reason.contains("\"demo\"") && reason.contains("\"other\""), "the reason names both clusters: {reason}");
    // n1 still talks to n2.
    peers_when(&n1, "still connected", |p| p.len() == 1 && p[0]["state"] == "connected");
    // x1 keeps redialing after its backoff; n1 warns about it once, not at every dial.
    std::thread::sleep(Duration::from_millis(1500));
    let warnings = n1.log_text().matches("refused a peer connection").count();
    assert_eq!(warnings, 1, "one warning for a peer that keeps redialing; log:\n{}", n1.log_text());
}
