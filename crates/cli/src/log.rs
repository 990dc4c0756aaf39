//! `replikv log show`: a node's replication log, read as the lecture's logical log.
//!
//! Asks a node (`--node`, or the first of the cluster file that answers) for
//! `GET /api/v1/log` and prints each record: its position, its leader's epoch and its
//! transaction (the id of the client request it belongs to, and whether the transaction
//! begins or ends in it), then each change with its old and new value and version. A key of
//! the form `table.row.column` is printed as the lecture's record:
//!
//! ```text
//! lsn 7  epoch 1  transaction 7 (begins, ends)
//!   table: users  key: 1234  column: picture_url  old_value: me-old.jpg  new_value: me-new.jpg  transaction: 7
//!     version 1764000000000.0@n1 -> 1764000000050.0@n1
//! ```
//!
//! `--key P` keeps the changes of keys starting with P. What is listed is what a change stream
//! would deliver: on a leader what a majority holds, on a follower what it applied, never a
//! request a failover abandoned half shipped. Every node of a single-leader cluster holds
//! the leader's log; a multi-leader node holds its datacenter's (its values are stored sets of
//! concurrent versions, printed as they are); a leaderless cluster keeps no log, and its nodes
//! say so. The last line gives the position to go on from. `-o json` prints the node's answer
//! as it is.

use crate::cluster::args::{Output, WhichCluster};
use crate::cluster::layout::ClusterDir;
use crate::cluster::net;
use crate::output::outln;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::Value;

/// Records listed at most.
pub const LIMIT_MAX: u64 = replikv_core::single_leader::LOG_LIST_RECORDS_MAX;

/// `replikv log` subcommands.
#[derive(Subcommand, Debug)]
pub enum LogCommand {
    /// Print a node's replication log: each record's transaction, each change's old and new
    /// value and version, the lecture's record for a table.row.column key.
    ///
    /// The same as GET /api/v1/log and REPLIKV.LOG after count CHANGES [PREFIX p]. Records
    /// whose changes are all outside --key are left out; the last line says where to go on.
    Show(ShowArgs),
}

/// `replikv log show` flags.
#[derive(Args, Debug)]
pub struct ShowArgs {
    /// Which cluster.
    #[command(flatten)]
    pub which: WhichCluster,
    /// The node to ask [default: the first of the cluster file that answers].
    #[arg(long, value_name = "ID")]
    pub node: Option<String>,
    /// The first position to print.
    #[arg(long, default_value_t = 1, value_name = "LSN", value_parser = clap::value_parser!(u64).range(1..))]
    pub from: u64,
    /// Only changes of keys starting with this.
    #[arg(long, default_value = "", value_name = "PREFIX")]
    pub key: String,
    /// Records read at most.
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=LIMIT_MAX))]
    pub limit: u64,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
}

/// Runs `replikv log`.
pub fn main(command: &LogCommand) -> Result<()> {
    let LogCommand::Show(args) = command;
    let cluster = ClusterDir::new(&args.which)?.read_config()?;
    let nodes = crate::conflicts::nodes_to_ask(&cluster, args.node.as_deref())?;
    let path =
        format!("/api/v1/log?from={}&limit={}&prefix={}", args.from, args.limit, crate::conflicts::percent(&args.key));
    let mut last_error = None;
    for node in &nodes {
        match net::get(node.http_addr, &path) {
            Ok((200, body)) => {
                let records: Value = serde_json::from_slice(&body).context("the node's answer is not JSON")?;
                if args.output == Output::Json {
                    outln!("{records}");
                    return Ok(());
                }
                let list = records.as_array().context("the node's answer is not a list")?;
                // Versions name their node by its id's hash: print the name instead.
                let names: Vec<(String, String)> = cluster
                    .nodes
                    .iter()
                    .map(|n| (replikv_core::version::NodeId::from_name(&n.id).to_string(), n.id.clone()))
                    .collect();
                for line in lines(&node.id, list, args) {
                    let line = names.iter().fold(line, |line, (hash, name)| line.replace(hash, name));
                    outln!("{line}");
                }
                return Ok(());
            }
            Ok((status, body)) => {
                let text = String::from_utf8_lossy(&body);
                bail!("{} answered {status}: {}", node.id, text.trim());
            }
            Err(e) => last_error = Some(e.context(format!("asking {}", node.id))),
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("cluster {:?} has no node", cluster.name)))
}

/// The lines `records` (node `id`'s answer to `args`) print as.
pub fn lines(id: &str, records: &[Value], args: &ShowArgs) -> Vec<String> {
    let mut out = Vec::new();
    let mut shown = 0;
    for record in records {
        let changes = record["changes"].as_array().cloned().unwrap_or_default();
        let statement = &record["statement"];
        if changes.is_empty() && statement.is_null() && !args.key.is_empty() {
            continue; // none of its keys is under the prefix
        }
        shown += 1;
        out.push(record_line(record));
        if !statement.is_null() {
            out.extend(statement_lines(statement));
        } else if changes.is_empty() {
            out.push("  (no changes: the empty record a new leader writes)".into());
        }
        for change in &changes {
            out.extend(change_lines(change));
        }
    }
    let last = records.last().and_then(|r| r["lsn"].as_u64());
    let under = if args.key.is_empty() { String::new() } else { format!(" with keys under {:?}", args.key) };
    match last {
        None => out.push(format!("{id}'s log holds no record from lsn {}", args.from)),
        Some(last) => {
            out.push(format!(
                "{shown} record(s){under} of lsn {} to {last} in {id}'s log; next: --from {}",
                args.from,
                last + 1
            ));
        }
    }
    out
}

/// A statement's lines: the request as a command line, the keys it wrote and why the leader
/// judged it nondeterministic, if it did.
fn statement_lines(statement: &Value) -> Vec<String> {
    let keys: Vec<&str> =
        statement["keys"].as_array().map(|k| k.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let mut out = vec![
        format!("  statement: {}", statement["command"].as_str().unwrap_or("?")),
        format!("    keys: {}  first_version: {}", keys.join(" "), statement["first_version"].as_str().unwrap_or("?")),
    ];
    if let Some(why) = statement["nondeterministic"].as_str() {
        out.push(format!("    nondeterministic: {why}"));
    }
    out
}

/// A record's first line: its position, epoch and transaction.
fn record_line(record: &Value) -> String {
    let (part, parts) = (record["part"].as_u64().unwrap_or(0), record["parts"].as_u64().unwrap_or(1));
    let mut marks = Vec::new();
    if record["begins"] == 1 {
        marks.push("begins".to_string());
    }
    if record["ends"] == 1 {
        marks.push("ends".to_string());
    }
    if parts > 1 {
        marks.push(format!("part {} of {parts}", part + 1));
    }
    format!(
        "lsn {}  epoch {}  transaction {} ({})",
        record["lsn"],
        record["epoch"],
        record["transaction"],
        marks.join(", ")
    )
}

/// A change's lines: the lecture's record (its table and column when the key has them), then
/// its versions, deadline and namespace.
pub fn change_lines(change: &Value) -> Vec<String> {
    let lecture = &change["lecture"];
    let fields = ["table", "key", "column", "old_value", "new_value", "transaction"];
    let record: Vec<String> =
        fields.iter().filter(|f| !lecture[**f].is_null()).map(|f| format!("{f}: {}", text(&lecture[*f]))).collect();
    let old_version = if change["old_version"].is_null() { "-".to_string() } else { text(&change["old_version"]) };
    let mut details = format!("    version {old_version} -> {}", text(&change["new_version"]));
    if let Some(at) = change["expire_at_ms"].as_u64() {
        details += &format!("  expires at {at} ms");
    }
    match &change["namespace"] {
        Value::Number(ns) if ns.as_u64() == Some(0) => {}
        ns => details += &format!("  namespace {}", text(ns)),
    }
    vec![format!("  {}", record.join("  ")), details]
}

/// A JSON value as text: a string as it is, a number as written, `{"hex"}` as its hex.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Object(o) if o.contains_key("hex") => format!("0x{}", o["hex"].as_str().unwrap_or("")),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(key: &str, limit: u64) -> ShowArgs {
        ShowArgs {
            which: WhichCluster { name: "demo".into(), data: "data".into() },
            node: None,
            from: 328142,
            key: key.into(),
            limit,
            output: Output::Table,
        }
    }

    /// The lecture's record, golden: the UPDATE of user 1234's picture in transaction 328142.
    #[test]
    fn the_lectures_update_prints_as_its_record() {
        let record = json!({
            "lsn": 328142, "epoch": 3, "transaction": 328142, "part": 0, "parts": 1, "begins": 1, "ends": 1,
            "changes": [{
                "key": "users.1234.picture_url", "namespace": 0, "old": "value", "old_value": "me-old.jpg",
                "old_bytes": 10, "old_version": "1700000000000.0@n1", "old_expire_at_ms": null,
                "new_value": "me-new.jpg", "new_bytes": 10, "new_version": "1700000000050.0@n1", "expire_at_ms": null,
                "lecture": {"table": "users", "key": "1234", "column": "picture_url", "old_value": "me-old.jpg",
                            "new_value": "me-new.jpg", "transaction": "328142"}
            }],
            "keys": ["users.1234.picture_url"]
        });
        assert_eq!(
            lines("n1", &[record], &args("", 100)),
            vec![
                "lsn 328142  epoch 3  transaction 328142 (begins, ends)",
                "  table: users  key: 1234  column: picture_url  old_value: me-old.jpg  new_value: me-new.jpg  transaction: 328142",
                "    version 1700000000000.0@n1 -> 1700000000050.0@n1",
                "1 record(s) of lsn 328142 to 328142 in n1's log; next: --from 328143",
            ]
        );
    }

    #[test]
    fn a_statement_prints_as_its_command_line_and_why_it_is_nondeterministic() {
        let record = json!({
            "lsn": 7, "epoch": 1, "transaction": 7, "part": 0, "parts": 1, "begins": 1, "ends": 1, "changes": [],
            "statement": {"command": "SET k v PX 10000", "keys": ["k"], "first_version": "5.0@n1",
                          "nondeterministic": "it sets a deadline relative to the clock (a relative TTL)"},
            "keys": ["k"]
        });
        assert_eq!(
            lines("n1", &[record], &args("k", 100)),
            vec![
                "lsn 7  epoch 1  transaction 7 (begins, ends)",
                "  statement: SET k v PX 10000",
                "    keys: k  first_version: 5.0@n1",
                "    nondeterministic: it sets a deadline relative to the clock (a relative TTL)",
                "1 record(s) with keys under \"k\" of lsn 328142 to 7 in n1's log; next: --from 8",
            ]
        );
    }

    #[test]
    fn other_keys_parts_filtered_records_and_the_next_page_are_named() {
        let change = json!({
            "key": "plain", "namespace": 2, "old": "absent", "old_version": null, "new_version": "5.0@n1",
            "expire_at_ms": 99, "new_value": {"hex": "ff00"},
            "lecture": {"table": null, "key": "plain", "column": null, "old_value": "(none)",
                        "new_value": "\u{fffd}\u{0}", "transaction": "40"}
        });
        let records = [
            json!({"lsn": 41, "epoch": 2, "transaction": 40, "part": 1, "parts": 3, "begins": 0, "ends": 0, "changes": [change]}),
            json!({"lsn": 42, "epoch": 2, "transaction": 40, "part": 2, "parts": 3, "begins": 0, "ends": 1, "changes": []}),
        ];
        let printed = lines("n2", &records, &args("pl", 2));
        assert_eq!(printed[0], "lsn 41  epoch 2  transaction 40 (part 2 of 3)");
        assert_eq!(printed[1], "  key: plain  old_value: (none)  new_value: \u{fffd}\u{0}  transaction: 40");
        assert_eq!(printed[2], "    version - -> 5.0@n1  expires at 99 ms  namespace 2");
        assert_eq!(
            printed[3], "1 record(s) with keys under \"pl\" of lsn 328142 to 42 in n2's log; next: --from 43",
            "lsn 42 has no such key"
        );
        let unfiltered = lines("n2", &records, &args("", 100));
        assert_eq!(unfiltered[3], "lsn 42  epoch 2  transaction 40 (ends, part 3 of 3)");
        assert_eq!(unfiltered[4], "  (no changes: the empty record a new leader writes)");
        assert_eq!(lines("n2", &[], &args("", 100)), vec!["n2's log holds no record from lsn 328142"]);
    }
}
