//! `replikv conflicts`: a multi-leader cluster's conflict log, as one node holds it.
//!
//! Asks a node (`--node`, or the first of the cluster file that answers) for
//! `GET /api/v1/conflicts` and prints each entry: when, which key, which datacenter's change
//! met it, the rule that resolved it, and the writes on each side with their origins and
//! versions. A key of the form `table.row.column` is printed as the lecture's record:
//!
//! ```text
//! table: users  key: 1234  column: picture_url  old_value: me-new.jpg  new_value: me-old2.jpg  transaction: ...
//! ```
//!
//! Each datacenter keeps its own log (its leader detected the conflicts it lists, and its
//! followers hold the same), so two nodes of different datacenters list the same conflict
//! seen from each side. `-o json` prints the node's answer as it is.

use crate::cluster::args::{Output, WhichCluster};
use crate::cluster::layout::ClusterDir;
use crate::cluster::net;
use crate::output::outln;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;

/// Entries listed at most.
pub const COUNT_MAX: u64 = replikv_core::multi_leader::conflict_log::CONFLICTS_LISTED_MAX as u64;

/// `replikv conflicts` flags.
#[derive(Args, Debug)]
pub struct ConflictsArgs {
    /// Which cluster.
    #[command(flatten)]
    pub which: WhichCluster,
    /// The node to ask [default: the first of the cluster file that answers].
    #[arg(long, value_name = "ID")]
    pub node: Option<String>,
    /// Only keys starting with this.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// The newest N entries.
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=COUNT_MAX))]
    pub count: u64,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
}

/// Runs `replikv conflicts`.
pub fn main(args: &ConflictsArgs) -> Result<()> {
    let cluster = ClusterDir::new(&args.which)?.read_config()?;
    let nodes = nodes_to_ask(&cluster, args.node.as_deref())?;
    let path = format!("/api/v1/conflicts?prefix={}&count={}", percent(&args.prefix), args.count);
    let mut last_error = None;
    for node in &nodes {
        match net::get(node.http_addr, &path) {
            Ok((200, body)) => {
                let entries: Value = serde_json::from_slice(&body).context("the node's answer is not JSON")?;
                let names: Vec<(String, String)> = cluster
                    .nodes
                    .iter()
                    .map(|n| (replikv_core::version::NodeId::from_name(&n.id).to_string(), n.id.clone()))
                    .collect();
                return print(&node.id, &entries, args.output, &names);
            }
            Ok((status, body)) => {
                let text = String::from_utf8_lossy(&body);
                bail!("{} answered {status}: {text}", node.id);
            }
            Err(e) => last_error = Some(e.context(format!("asking {}", node.id))),
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("cluster {:?} has no node", cluster.name)))
}

/// The nodes to ask, in order: the one `--node` names, or every node of the cluster file.
pub fn nodes_to_ask(
    cluster: &replikv_server::config::ClusterConfig,
    node: Option<&str>,
) -> Result<Vec<replikv_server::config::ClusterNode>> {
    Ok(match node {
        Some(id) => match cluster.node(id) {
            Some(node) => vec![node.clone()],
            None => bail!("no node {id:?} in cluster {:?}", cluster.name),
        },
        None => cluster.nodes.clone(),
    })
}

/// `text` with every byte outside unreserved URL characters percent-encoded.
pub fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// Prints the entries node `id` listed, node ids shown by the names in `names` (id, name).
fn print(id: &str, entries: &Value, output: Output, names: &[(String, String)]) -> Result<()> {
    if output == Output::Json {
        outln!("{entries}");
        return Ok(());
    }
    let list = entries.as_array().context("the node's answer is not a list")?;
    outln!("{} conflict(s) in the log of {id}, oldest first", list.len());
    for entry in list {
        for line in lines(entry) {
            let line = names.iter().fold(line, |line, (id, name)| line.replace(id, name));
            outln!("{line}");
        }
    }
    Ok(())
}

/// The lines one entry prints as.
pub fn lines(entry: &Value) -> Vec<String> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "(deleted)".into(),
        other => other.to_string(),
    };
    let writes = |name: &str| -> String {
        let list = entry[name].as_array().cloned().unwrap_or_default();
        let shown: Vec<String> =
            list.iter().map(|w| format!("{} (from {}, version {})", text(&w[2]), text(&w[0]), text(&w[1]))).collect();
        if shown.is_empty() {
            "-".into()
        } else {
            shown.join(", ")
        }
    };
    let mut out = vec![format!(
        "{}  key {}  from datacenter {}  resolved by {}",
        text(&entry["time_ms"]),
        text(&entry["key"]),
        text(&entry["datacenter"]),
        text(&entry["resolve"])
    )];
    if let Some(lecture) = entry["lecture"].as_object() {
        let fields = ["table", "key", "column", "old_value", "new_value", "transaction"];
        let record: Vec<String> = fields.iter().map(|f| format!("{f}: {}", text(&lecture[*f]))).collect();
        out.push(format!("  {}", record.join("  ")));
    }
    for (label, name) in [("held here", "held"), ("arrived", "arrived"), ("kept", "kept"), ("lost", "lost")] {
        out.push(format!("  {label:<9} {}", writes(name)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_entry_prints_the_lecture_record_and_both_sides() {
        let entry = json!({
            "time_ms": 1700000000000u64, "key": "users.1234.picture_url", "datacenter": "dc2",
            "detected_by": "n1", "resolve": "lww",
            "held": [["n1", "1.0@n1", "me-new.jpg", 10]], "arrived": [["n3", "2.0@n3", "me-old2.jpg", 11]],
            "kept": [["n3", "2.0@n3", "me-old2.jpg", 11]], "lost": [["n1", "1.0@n1", "me-new.jpg", 10]],
            "lecture": {"table": "users", "key": "1234", "column": "picture_url", "old_value": "me-new.jpg",
                        "new_value": "me-old2.jpg", "transaction": "2.0@n3"}
        });
        let lines = lines(&entry);
        assert_eq!(lines[0], "1700000000000  key users.1234.picture_url  from datacenter dc2  resolved by lww");
        assert_eq!(
            lines[1],
            "  table: users  key: 1234  column: picture_url  old_value: me-new.jpg  new_value: me-old2.jpg  transaction: 2.0@n3"
        );
        assert_eq!(lines[5], "  lost      me-new.jpg (from n1, version 1.0@n1)");
        let plain = json!({"time_ms": 1, "key": "k", "datacenter": "dc1", "resolve": "merge", "held": [], "arrived": [],
                           "kept": [], "lost": [], "lecture": null});
        assert_eq!(lines_of(&plain), 5, "no lecture line for a key that is not table.row.column");
    }

    fn lines_of(entry: &Value) -> usize {
        lines(entry).len()
    }

    #[test]
    fn a_prefix_is_percent_encoded() {
        assert_eq!(percent("users.1234/x y"), "users.1234%2Fx%20y");
    }
}
