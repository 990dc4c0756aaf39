//! `replikv fault`: partitions, delays and drops between the real node processes of a local
//! cluster, for tests and demonstrations.
//!
//! There is no netem or iptables here: each node's outbound peer links obey a fault table
//! ([`replikv_server::faults::LinkFaults`]), switched on when the node starts with
//! `REPLIKV_TEST_FAULTS=1` (`REPLIKV_TEST_FAULTS=1 replikv cluster start --detach` passes it to
//! every node) and set through each node's `PUT /api/v1/test/faults`. A fault between two nodes
//! is two halves, one on each side, so a command asks every node of the cluster file:
//!
//! | command | what each node is told |
//! | --- | --- |
//! | `partition n1` | n1 blocks its links to everyone; every other node blocks its link to n1 |
//! | `partition n1 --one-way` | n1 blocks its links to everyone; others still reach n1 |
//! | `partition dc2` | each node of datacenter dc2 blocks its links to the other datacenters' nodes, and they theirs to it |
//! | `delay n2 50ms` | n2 delays what it sends to everyone; every other node delays what it sends to n2 |
//! | `drop n3 0.3` | n3 drops what it sends with probability 0.3; every other node, what it sends to n3 |
//! | `heal` | every node clears its table |
//! | `status` | nothing: prints each node's table |
//!
//! A command sets only its own field of each link (`blocked`, `delay_ms` or `drop`), so faults
//! combine: `partition n3` then `delay n2 50ms` keeps n3 cut off. `delay n2 0` and `drop n3 0`
//! undo one fault; `heal` undoes them all.
//!
//! Every node is asked first whether it has a table (`GET /api/v1/test/faults`), and nothing is
//! changed unless all answer, so that a node down or started without the flag does not leave
//! half a partition behind.
//!
//! CAVEATS
//! - The changes reach the nodes one after another, a few milliseconds apart; a partition is
//!   whole only once the command returns.
//! - The nodes' tables live in their processes: a node restarted comes back clear.

use crate::cluster::args::WhichCluster;
use crate::cluster::layout::ClusterDir;
use crate::cluster::net;
use crate::output::{outln, progressln};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use replikv_server::config::ClusterNode;
use replikv_server::faults::{parse_delay_ms, parse_drop, LinkFault};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The path of a node's fault table.
pub const FAULTS_PATH: &str = "/api/v1/test/faults";

/// Partition, delay or drop messages between a local cluster's nodes (started with
/// REPLIKV_TEST_FAULTS=1).
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
REPLIKV_TEST_FAULTS=1 replikv cluster start --detach --acks sync\n  \
replikv fault partition n3           # n3 and the others stop hearing each other\n  \
replikv fault partition n3 --one-way # n3's messages are lost; it still hears the others\n  \
replikv fault partition dc2          # multi-leader: dc2 cut from the other datacenters\n  \
replikv fault delay n2 50ms          # messages to and from n2 arrive 50 ms late\n  \
replikv fault drop n3 0.3            # 30% of messages to and from n3 are lost\n  \
replikv fault status\n  \
replikv fault heal                   # every fault cleared")]
pub struct FaultArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: FaultCommand,
}

/// The `replikv fault` subcommands.
#[derive(Subcommand, Debug)]
pub enum FaultCommand {
    /// Cut a node (or a datacenter: all its nodes, from every other datacenter) off: it blocks its links to the others and (unless --one-way) they block theirs to it.
    Partition {
        /// The node, or the datacenter, to cut off.
        node: String,
        /// Block only what the node sends; the others still reach it.
        #[arg(long)]
        one_way: bool,
        /// Which cluster.
        #[command(flatten)]
        which: WhichCluster,
    },
    /// Clear every fault on every node.
    Heal {
        /// Which cluster.
        #[command(flatten)]
        which: WhichCluster,
    },
    /// Delay messages to and from a node: 50ms, 2s or 50 (milliseconds); 0 undoes it.
    Delay {
        /// The node.
        node: String,
        /// How late messages arrive, at most 10s.
        #[arg(value_parser = |s: &str| parse_delay_ms(s).map_err(|e| e.to_string()))]
        delay: u64,
        /// Which cluster.
        #[command(flatten)]
        which: WhichCluster,
    },
    /// Drop messages to and from a node with a probability within 0..=1; 0 undoes it.
    Drop {
        /// The node.
        node: String,
        /// The probability that a message is lost.
        #[arg(value_parser = |s: &str| parse_drop(s).map_err(|e| e.to_string()))]
        probability: f64,
        /// Which cluster.
        #[command(flatten)]
        which: WhichCluster,
    },
    /// Print each node's fault table.
    Status {
        /// Which cluster.
        #[command(flatten)]
        which: WhichCluster,
    },
}

/// What one link's fault becomes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Change {
    /// Messages are discarded.
    Block,
    /// Messages are held this many milliseconds.
    Delay(u64),
    /// Messages are discarded with this probability.
    Drop(f64),
}

impl Change {
    /// The `PUT /api/v1/test/faults` body that makes this change on the link to `peer`.
    fn body(self, peer: &str) -> Value {
        match self {
            Change::Block => json!({ "peer": peer, "blocked": true }),
            Change::Delay(ms) => json!({ "peer": peer, "delay_ms": ms }),
            Change::Drop(p) => json!({ "peer": peer, "drop": p }),
        }
    }
}

/// The links to change for a fault on `target`, as (sending node, receiving node), in the
/// cluster's order: the target's links to everyone outside it, then (if `both_ways`) theirs to
/// it. `nodes` are (id, datacenter); the target is a node, or a datacenter (all its nodes: a
/// cut between it and the other datacenters, its own links untouched). Refuses a target that
/// is neither.
pub fn links(nodes: &[(String, Option<String>)], target: &str, both_ways: bool) -> Result<Vec<(String, String)>> {
    let inside = |(id, dc): &(String, Option<String>)| id == target || dc.as_deref() == Some(target);
    if !nodes.iter().any(|n| n.0 == target) && !nodes.iter().any(inside) {
        let ids: Vec<&str> = nodes.iter().map(|(id, _)| id.as_str()).collect();
        bail!("no node or datacenter {target:?} in the cluster: its nodes are {}", ids.join(", "));
    }
    let (members, others): (Vec<_>, Vec<_>) = nodes.iter().partition(|n| inside(n));
    let mut links = Vec::new();
    for (from, _) in &members {
        links.extend(others.iter().map(|(to, _)| (from.clone(), to.clone())));
    }
    if both_ways {
        for (to, _) in &members {
            links.extend(others.iter().map(|(from, _)| (from.clone(), to.clone())));
        }
    }
    Ok(links)
}

/// Runs `replikv fault`.
pub fn main(args: &FaultArgs) -> Result<()> {
    let (which, target, change, both_ways) = match &args.command {
        FaultCommand::Partition { node, one_way, which } => (which, node, Change::Block, !one_way),
        FaultCommand::Delay { node, delay, which } => (which, node, Change::Delay(*delay), true),
        FaultCommand::Drop { node, probability, which } => (which, node, Change::Drop(*probability), true),
        FaultCommand::Heal { which } => return heal(which),
        FaultCommand::Status { which } => return status(which),
    };
    let nodes = cluster_nodes(which)?;
    let ids: Vec<(String, Option<String>)> = nodes.iter().map(|n| (n.id.clone(), n.datacenter.clone())).collect();
    let links = links(&ids, target, both_ways)?;
    tables(&nodes)?;
    for (from, to) in &links {
        let node = nodes.iter().find(|n| &n.id == from).expect("links come from the cluster's nodes");
        ask(node, Some(&change.body(to)))?;
        progressln!("{from} -> {to}: {}", describe_change(change));
    }
    Ok(())
}

/// `replikv fault heal`: clears every node's table.
fn heal(which: &WhichCluster) -> Result<()> {
    let nodes = cluster_nodes(which)?;
    tables(&nodes)?;
    for node in &nodes {
        ask(node, Some(&json!({ "clear": true })))?;
        progressln!("{}: every link clear", node.id);
    }
    Ok(())
}

/// `replikv fault status`: each node's table, one line per node.
fn status(which: &WhichCluster) -> Result<()> {
    let nodes = cluster_nodes(which)?;
    for (node, table) in nodes.iter().zip(tables(&nodes)?) {
        let faulty: Vec<String> = table
            .iter()
            .filter(|(_, fault)| !fault.is_clear())
            .map(|(peer, fault)| format!("-> {peer} {}", describe(fault)))
            .collect();
        let line = if faulty.is_empty() { "every link clear".to_string() } else { faulty.join(", ") };
        outln!("{}: {line}", node.id);
    }
    Ok(())
}

/// The cluster file's nodes.
fn cluster_nodes(which: &WhichCluster) -> Result<Vec<ClusterNode>> {
    let dir = ClusterDir::new(which)?;
    Ok(dir.read_config()?.nodes)
}

/// Every node's fault table, in the cluster's order; fails naming the first node that does not
/// answer or has no table.
fn tables(nodes: &[ClusterNode]) -> Result<Vec<BTreeMap<String, LinkFault>>> {
    nodes
        .iter()
        .map(|node| {
            let answer = ask(node, None)?;
            serde_json::from_value(answer["peers"].clone())
                .with_context(|| format!("node {}: a fault table that does not parse: {answer}", node.id))
        })
        .collect()
}

/// Gets (`body` None) or changes a node's fault table; returns the table it answers.
fn ask(node: &ClusterNode, body: Option<&Value>) -> Result<Value> {
    let addr = node.http_addr;
    let answer = match body {
        None => net::get(addr, FAULTS_PATH),
        Some(body) => net::put(addr, FAULTS_PATH, body.to_string().as_bytes()),
    };
    let (code, text) = answer.with_context(|| {
        format!(
            "node {} at {addr} did not answer: is the cluster running? (start it with \
             `REPLIKV_TEST_FAULTS=1 replikv cluster start`)",
            node.id
        )
    })?;
    let reason = || {
        let value: Value = serde_json::from_slice(&text).unwrap_or_default();
        value["error"].as_str().map(str::to_string).unwrap_or_else(|| String::from_utf8_lossy(&text).into_owned())
    };
    match code {
        200 => serde_json::from_slice(&text).with_context(|| format!("node {}: an answer that is not JSON", node.id)),
        404 => bail!(
            "node {} has no fault table: {} (restart the cluster with `REPLIKV_TEST_FAULTS=1 replikv cluster start`)",
            node.id,
            reason()
        ),
        code => bail!("node {}: HTTP {code}: {}", node.id, reason()),
    }
}

/// A change in words.
fn describe_change(change: Change) -> String {
    match change {
        Change::Block => "blocked".to_string(),
        Change::Delay(ms) => format!("delay {ms} ms"),
        Change::Drop(p) => format!("drop {p}"),
    }
}

/// A link's fault in words: `blocked, delay 50 ms, drop 0.3`.
fn describe(fault: &LinkFault) -> String {
    let mut parts = Vec::new();
    if fault.blocked {
        parts.push("blocked".to_string());
    }
    if fault.delay_ms > 0 {
        parts.push(format!("delay {} ms", fault.delay_ms));
    }
    if fault.drop > 0.0 {
        parts.push(format!("drop {}", fault.drop));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: FaultCommand,
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn a_fault_covers_the_targets_links_and_the_others_links_to_it() {
        let nodes: Vec<(String, Option<String>)> = ["n1", "n2", "n3"].map(|n| (n.to_string(), None)).to_vec();
        let both = links(&nodes, "n1", true).unwrap();
        assert_eq!(both, pairs(&[("n1", "n2"), ("n1", "n3"), ("n2", "n1"), ("n3", "n1")]));
        let one_way = links(&nodes, "n3", false).unwrap();
        assert_eq!(one_way, pairs(&[("n3", "n1"), ("n3", "n2")]));
        let err = links(&nodes, "n9", true).unwrap_err().to_string();
        assert!(err.contains("n9") && err.contains("n1, n2, n3"), "{err}");
    }

    #[test]
    fn a_datacenter_is_cut_from_the_others_and_keeps_its_own_links() {
        let nodes: Vec<(String, Option<String>)> = [("n1", "dc1"), ("n2", "dc1"), ("n3", "dc2"), ("n4", "dc2")]
            .map(|(n, d)| (n.into(), Some(d.into())))
            .to_vec();
        let cut = links(&nodes, "dc2", true).unwrap();
        let expected = [("n3", "n1"), ("n3", "n2"), ("n4", "n1"), ("n4", "n2"), ("n1", "n3"), ("n2", "n3")];
        let mut expected = pairs(&expected);
        expected.extend(pairs(&[("n1", "n4"), ("n2", "n4")]));
        assert_eq!(cut, expected);
        assert!(!cut.contains(&("n3".into(), "n4".into())), "inside the datacenter nothing changes");
    }

    #[test]
    fn each_change_sets_only_its_own_field() {
        assert_eq!(Change::Block.body("n2"), json!({ "peer": "n2", "blocked": true }));
        assert_eq!(Change::Delay(50).body("n2"), json!({ "peer": "n2", "delay_ms": 50 }));
        assert_eq!(Change::Drop(0.3).body("n3"), json!({ "peer": "n3", "drop": 0.3 }));
    }

    #[test]
    fn the_command_line_parses_delays_and_probabilities_and_refuses_bad_ones() {
        let cli = Cli::try_parse_from(["fault", "delay", "n2", "50ms", "--name", "x"]).unwrap();
        let FaultCommand::Delay { node, delay, which } = cli.command else { panic!("delay") };
        assert_eq!((node.as_str(), delay, which.name.as_str()), ("n2", 50, "x"));
        let cli = Cli::try_parse_from(["fault", "delay", "n2", "75"]).unwrap();
        assert!(matches!(cli.command, FaultCommand::Delay { delay: 75, .. }));
        let cli = Cli::try_parse_from(["fault", "partition", "n1", "--one-way"]).unwrap();
        assert!(matches!(cli.command, FaultCommand::Partition { one_way: true, .. }));
        let err = Cli::try_parse_from(["fault", "delay", "n2", "20s"]).err().unwrap().to_string();
        assert!(err.contains("at most 10000"), "{err}");
        let err = Cli::try_parse_from(["fault", "drop", "n3", "1.5"]).err().unwrap().to_string();
        assert!(err.contains("0..=1"), "{err}");
    }

    #[test]
    fn faults_read_as_words() {
        assert_eq!(describe(&LinkFault { blocked: true, delay_ms: 50, drop: 0.3 }), "blocked, delay 50 ms, drop 0.3");
        assert_eq!(describe(&LinkFault { drop: 0.5, ..LinkFault::default() }), "drop 0.5");
    }
}
