//! `replikv cluster status`: every node's `GET /api/v1/status`, as a table or JSON.
//!
//! The nodes come from the cluster file, their pids from the pid file (shown only while the
//! process is alive and still that node). Each node is asked at once, from a thread of its
//! own, so a cluster with nodes down answers within one request timeout ([`super::net`]). A
//! node is up when its HTTP status answers 200 with its own id; anything else is down, with
//! the reason.
//!
//! The table has one row per node: id, RESP address, role, up or down, keys, peer links
//! connected (of all), pid; then why a node is down or a link refused. Issue 4 adds
//! epoch, applied LSN and lag once nodes replicate.
//!
//! CAVEATS
//! - The role is whatever the node says; today every node says `standalone`.

use super::args::{Output, StatusArgs};
use super::layout::{self, ClusterDir, PidEntry};
use super::{net, process, STANDALONE_NOTE};
use anyhow::Result;
use replikv_server::config::{ClusterConfig, ClusterNode};
use serde::Serialize;

/// One node as `status` reports it.
#[derive(Clone, Debug, Serialize)]
pub struct NodeRow {
    /// The node's id.
    pub id: String,
    /// Its RESP address.
    pub resp_addr: String,
    /// Its HTTP address.
    pub http_addr: String,
    /// Its role as it reports it, when up.
    pub role: Option<String>,
    /// Whether it answered its status with 200 and its own id.
    pub up: bool,
    /// Its key count, when up.
    pub keys: Option<u64>,
    /// Its links to the other nodes, `connected/total`, when up.
    pub peers: Option<String>,
    /// Its links that are refused or down, with the reason (a peer of another cluster, say).
    pub peer_problems: Vec<String>,
    /// Its process id, while the process the pid file names is alive.
    pub pid: Option<u32>,
    /// Why it is down, when it is.
    pub error: Option<String>,
}

/// The whole `-o json` answer.
#[derive(Serialize)]
struct Report<'a> {
    /// The cluster's id.
    cluster: &'a str,
    /// Its replication mode.
    mode: String,
    /// Its acknowledgement setting.
    acks: String,
    /// What replication does today.
    replication: &'a str,
    /// The nodes, in the file's order.
    nodes: Vec<NodeRow>,
}

/// Runs `replikv cluster status`.
pub fn main(args: &StatusArgs) -> Result<()> {
    let dir = ClusterDir::new(&args.which)?;
    let cluster = dir.read_config()?;
    let pids = layout::read_pids(&dir.pids())?.unwrap_or_default();
    let rows = probe_all(&cluster, &pids, &dir.config());
    match args.output {
        Output::Json => {
            let report = Report {
                cluster: &cluster.name,
                mode: cluster.replication.mode.to_string(),
                acks: cluster.replication.acks.to_string(),
                replication: "not implemented yet (issue 4): each node is standalone",
                nodes: rows,
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Output::Table => {
            let r = &cluster.replication;
            println!("cluster {}: {}, acks {} ({})", cluster.name, r.mode, r.acks, dir.config().display());
            println!("{STANDALONE_NOTE}");
            print!("{}", render_table(&rows));
        }
    }
    Ok(())
}

/// Asks every node at once and returns their rows in the cluster's order.
fn probe_all(cluster: &ClusterConfig, pids: &[PidEntry], config: &std::path::Path) -> Vec<NodeRow> {
    std::thread::scope(|scope| {
        let probes: Vec<_> = cluster
            .nodes
            .iter()
            .map(|node| {
                let pid = pids.iter().find(|(id, _)| *id == node.id).map(|(_, pid)| *pid);
                scope.spawn(move || probe(node, pid, config))
            })
            .collect();
        probes.into_iter().map(|p| p.join().expect("a status probe panicked")).collect()
    })
}

/// One node's row: its status over HTTP, and its pid if that process still runs.
fn probe(node: &ClusterNode, pid: Option<u32>, config: &std::path::Path) -> NodeRow {
    let mut row = NodeRow {
        id: node.id.clone(),
        resp_addr: node.resp_addr.to_string(),
        http_addr: node.http_addr.to_string(),
        role: None,
        up: false,
        keys: None,
        peers: None,
        peer_problems: Vec::new(),
        pid: pid.filter(|pid| process::alive(*pid) && process::is_node(*pid, &node.id, config)),
        error: None,
    };
    let status = match net::get(node.http_addr, "/api/v1/status") {
        Ok((200, body)) => serde_json::from_slice::<serde_json::Value>(&body).map_err(|e| format!("bad JSON: {e}")),
        Ok((code, _)) => Err(format!("HTTP {code} from {}", node.http_addr)),
        Err(e) => Err(format!("{e:#}")),
    };
    match status {
        Ok(status) if status["id"] == node.id.as_str() => {
            row.up = true;
            row.role = status["role"].as_str().map(str::to_string);
            row.keys = status["storage"]["keys"].as_u64();
            let links = status["peers"].as_array().cloned().unwrap_or_default();
            let connected = links.iter().filter(|l| l["state"] == "connected").count();
            row.peers = Some(format!("{connected}/{}", links.len()));
            for link in links.iter().filter(|l| l["state"] == "refused" || l["state"] == "down") {
                let reason = link["reason"].as_str().unwrap_or("");
                row.peer_problems.push(format!(
                    "link to {} {}: {reason}",
                    link["id"].as_str().unwrap_or("?"),
                    link["state"].as_str().unwrap_or("?")
                ));
            }
        }
        Ok(status) => {
            row.error = Some(format!("{} is answered by node {}, not {}", node.http_addr, status["id"], node.id))
        }
        Err(e) => row.error = Some(e),
    }
    row
}

/// The table: a header, one row per node, then why each node that is down is down.
fn render_table(rows: &[NodeRow]) -> String {
    let dash = || "-".to_string();
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                r.resp_addr.clone(),
                r.role.clone().unwrap_or_else(dash),
                if r.up { "up" } else { "down" }.to_string(),
                r.keys.map(|k| k.to_string()).unwrap_or_else(dash),
                r.peers.clone().unwrap_or_else(dash),
                r.pid.map(|p| p.to_string()).unwrap_or_else(dash),
            ]
        })
        .collect();
    let header = ["ID", "RESP", "ROLE", "STATE", "KEYS", "PEERS", "PID"].map(str::to_string);
    let mut widths = header.clone().map(|h| h.len());
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&cells) {
        let line: Vec<String> = row.iter().zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out += line.join("  ").trim_end();
        out.push('\n');
    }
    for row in rows.iter().filter(|r| !r.up) {
        out += &format!("{}: {}\n", row.id, row.error.as_deref().unwrap_or("down"));
    }
    for row in rows {
        for problem in &row.peer_problems {
            out += &format!("{}: {problem}\n", row.id);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_aligns_columns_and_explains_down_nodes() {
        let up = NodeRow {
            id: "n1".into(),
            resp_addr: "127.0.0.1:7001".into(),
            http_addr: "127.0.0.1:7101".into(),
            role: Some("standalone".into()),
            up: true,
            keys: Some(12),
            peers: Some("1/2".into()),
            peer_problems: vec!["link to n2 down: connection refused".into()],
            pid: Some(4242),
            error: None,
        };
        let down = NodeRow {
            id: "n2".into(),
            resp_addr: "127.0.0.1:7002".into(),
            role: None,
            up: false,
            keys: None,
            peers: None,
            peer_problems: Vec::new(),
            pid: None,
            error: Some("connection refused".into()),
            ..up.clone()
        };
        let want = "\
ID  RESP            ROLE        STATE  KEYS  PEERS  PID
n1  127.0.0.1:7001  standalone  up     12    1/2    4242
n2  127.0.0.1:7002  -           down   -     -      -
n2: connection refused
n1: link to n2 down: connection refused
";
        assert_eq!(render_table(&[up, down]), want);
    }

    #[test]
    fn a_node_that_does_not_answer_is_down_with_the_reason() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let node = ClusterNode {
            id: "n1".into(),
            peer_addr: ([127, 0, 0, 1], 1).into(),
            resp_addr: ([127, 0, 0, 1], 2).into(),
            http_addr: ([127, 0, 0, 1], port).into(),
            datacenter: None,
        };
        let row = probe(&node, Some(u32::MAX / 2), std::path::Path::new("cluster.toml"));
        assert!(!row.up && row.pid.is_none() && row.error.is_some(), "{row:?}");
    }
}
