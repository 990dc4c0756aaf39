//! `replikv status` (also `replikv cluster status`): every node's `GET /api/v1/status`, as a
//! table or JSON.
//!
//! The nodes come from the cluster file, their pids from the pid file (shown only while the
//! process is alive and still that node). Each node is asked at once, from a thread of its
//! own, so a cluster with nodes down answers within one request timeout ([`super::net`]). A
//! node is up when its HTTP status answers 200 with its own id; anything else is down, with
//! the reason.
//!
//! The table has one row per node: id, RESP address, role, epoch, applied LSN (the newest
//! record in its replication log), lag in records and in seconds, up or down, keys, peer links
//! connected (of all), pid; then why a node is down, how many changes a node cut into its
//! rollback files (rejoining a newer leader), why the leader counts a follower's link down,
//! or why a peer link is refused. The heading names the node that says it leads (none during
//! an election).
//!
//! A follower's lag is the leader's view of it (its entry in the leader's `followers`, by id)
//! whenever the leader answers: the leader knows what it holds that the follower lacks, and
//! for how long. When the leader does not answer, the lag is the follower's own view (records
//! the leader had when last heard from); its seconds are unknown and shown as `-`. The leader's
//! lag is 0. [`replication_of`] derives all this from the two JSON objects, without I/O.
//!
//! The ROLE cell adds, in parentheses, what the leader says of a follower when it is not the
//! ordinary case: its mode when not `stream` (`probe` while the leader does not yet know where
//! its log ends, `snapshot` while it is sent one), and `link down` when the leader has had no
//! acknowledgement from it within the link timeout.
//!
//! # Leaderless
//!
//! A cluster whose file says `mode = "leaderless"` has no leader, no epochs, no log positions
//! and no lag: every node coordinates reads and writes. The heading names the mode and the
//! quorums instead (`cluster demo: leaderless, n = 3, w = 2, r = 2`, adding how many nodes
//! hold each key when n is fewer than the nodes), never a leader. The EPOCH, APPLIED, LAG and
//! LAG_S columns give way to each node's counters from its status's `replication.leaderless`
//! object ([`Counters`], [`counters_of`]): WRITES and READS it coordinated, PARTIAL writes
//! (that reached fewer than w replicas in time), REPAIRS_SENT (read repairs it sent as a
//! coordinator) and REPAIRS_RECV (read repairs it merged as a replica); then anti-entropy's:
//! TREES (`ready`, or `rebuilding` while its Merkle trees are filled from the store at open),
//! AE_ROUNDS (exchanges it started), AE_REPAIRED (keys an exchange changed here),
//! TOMBSTONES_PENDING (kept until every replica holds them and the grace passed) and HINTS
//! (hints it holds for other nodes, all targets together; `-o json` has them per node, and
//! the last exchange with each peer). `-o json` carries
//! `n`, `w` and `r` where a single-leader cluster has `acks` and `leader`, and each node's
//! counters as its `leaderless` object (its epoch and lag are null).
//!
//! CAVEATS
//! - The role, epoch and positions are whatever each node says, each at its own moment: the
//!   rows are not one snapshot of the cluster, so a busy follower's applied LSN can pass the
//!   leader's by the time both answer.
//! - The leader is the node that says it leads; if two ever do (a deposed leader cut off from
//!   the others has not yet heard of the newer epoch), the one of the higher epoch, and the
//!   first listed on a tie; none when some node is in a newer epoch than every leader that
//!   answered (that epoch's leader is the one that did not answer).
//! - A leaderless cluster's counters are each node's since it started, not the cluster's:
//!   a node restarted counts from 0 again.

use super::args::{Output, StatusArgs};
use super::layout::{self, ClusterDir, PidEntry};
use super::{net, process};
use crate::output::{out, outln};
use anyhow::{Context, Result};
use replikv_core::leaderless::AntiEntropyStatus;
use replikv_core::quorum::Nwr;
use replikv_server::config::{ClusterConfig, ClusterNode, ReplicationMode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One node as `status` reports it.
#[derive(Clone, Debug, Default, Serialize)]
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
    /// Its epoch, applied LSN and lag.
    #[serde(flatten)]
    pub replication: Replication,
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
    /// Its leaderless counters, when it is up and replicates leaderless (see [`counters_of`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaderless: Option<Counters>,
    /// When it is up and replicates multi-leader: the records still on their way from it (see
    /// [`multi_leader_pending`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multi_leader_pending: Option<u64>,
    /// When it is up and replicates multi-leader: its datacenter, and on its datacenter's
    /// leader each other datacenter's lag (`dc2: 0 records, 0.0 s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<String>,
    /// See `datacenter`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub datacenter_lags: Vec<String>,
}

/// A leaderless node's counters, since it started: its status's `replication.leaderless`
/// object, less the settings n, w, r, `conflicts` and `read_repair` (the heading says them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Operations it coordinates now (writes until w replicas hold them, reads until every
    /// replica answered), and writes it answered whose last replicas have not acknowledged
    /// yet; each until its timeout at most.
    pub in_flight: u64,
    /// What it counted (writes and reads coordinated, partial writes, read repairs, ...), as
    /// the node serializes it.
    #[serde(flatten)]
    pub counts: replikv_core::leaderless::Counters,
    /// Its anti-entropy: trees, rounds, keys repaired, tombstones awaiting purge, hint
    /// backlog; absent from a node that predates anti-entropy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_entropy: Option<replikv_core::leaderless::AntiEntropyStatus>,
}

/// A node's replication cells: epoch and applied LSN from its own status, lag from the
/// leader's when the leader answers (see the module documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Replication {
    /// Its epoch, when up.
    pub epoch: Option<u64>,
    /// The newest record in its replication log (its `replication.last_lsn`), when up.
    pub applied_lsn: Option<u64>,
    /// Records the leader holds that it lacks: 0 on the leader, unknown for a lone node.
    pub lag_records: Option<u64>,
    /// How far behind the leader's clock it is, in milliseconds: 0 on the leader, unknown
    /// when only the follower's own view is at hand.
    pub lag_ms: Option<u64>,
    /// Whose view the lag is: `leader` (the leader's, or the leader itself) or `follower`.
    pub lag_from: Option<&'static str>,
    /// How the leader ships to it (`probe`, `stream`, `snapshot`); by its own view, only
    /// `snapshot` while it installs one.
    pub follower_mode: Option<String>,
    /// Whether the leader had an acknowledgement from it within the link timeout.
    pub up_at_leader: Option<bool>,
    /// Changes it cut from its log and saved under `rollback/` (rejoining a newer leader).
    pub rolled_back: Option<u64>,
}

/// The whole `-o json` answer.
#[derive(Serialize)]
struct Report<'a> {
    /// The cluster's id.
    cluster: &'a str,
    /// Its replication mode.
    mode: String,
    /// Its acknowledgement setting; absent in a leaderless cluster, which has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    acks: Option<String>,
    /// Leaderless: replicas per key.
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<usize>,
    /// Leaderless: replicas a write waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    w: Option<usize>,
    /// Leaderless: replicas a read waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    r: Option<usize>,
    /// The node that leads now (see [`leader`]), `null` during an election; absent in a
    /// leaderless cluster, where no node ever leads.
    #[serde(skip_serializing_if = "Option::is_none")]
    leader: Option<Option<&'a str>>,
    /// The nodes, in the file's order.
    nodes: Vec<NodeRow>,
}

/// The quorums of `cluster` when it is leaderless; `None` when it has a leader.
pub fn leaderless_nwr(cluster: &ClusterConfig) -> Result<Option<Nwr>> {
    if cluster.replication.mode != ReplicationMode::Leaderless {
        return Ok(None);
    }
    let nwr = cluster.replication.nwr(cluster.nodes.len()).with_context(|| format!("cluster {}", cluster.name))?;
    Ok(Some(nwr))
}

/// What the table's heading says of a leaderless cluster of `nodes` nodes: its mode and
/// quorums, and how many nodes hold each key when not all do.
pub fn leaderless_heading(nwr: Nwr, nodes: usize) -> String {
    let Nwr { n, w, r } = nwr;
    let mut out = format!("leaderless, n = {n}, w = {w}, r = {r}");
    if n < nodes {
        out += &format!(", each key on {n} of the {nodes} nodes");
    }
    out
}

/// Runs `replikv status` (and `replikv cluster status`, the same command).
pub fn main(args: &StatusArgs) -> Result<()> {
    let dir = ClusterDir::new(&args.which)?;
    let cluster = dir.read_config()?;
    let pids = layout::read_pids(&dir.pids())?.unwrap_or_default();
    let rows = probe_all(&cluster, &pids, &dir.config());
    if let Some(nwr) = leaderless_nwr(&cluster)? {
        return print_leaderless(args.output, &cluster, &dir, nwr, rows);
    }
    let leader_id = leader(&rows).map(|r| r.id.clone());
    let leader = leader_id.as_deref();
    match args.output {
        Output::Json => {
            let report = Report {
                cluster: &cluster.name,
                mode: cluster.replication.mode.to_string(),
                acks: Some(cluster.replication.acks.to_string()),
                n: None,
                w: None,
                r: None,
                leader: Some(leader),
                nodes: rows,
            };
            outln!("{}", serde_json::to_string_pretty(&report)?);
        }
        Output::Table => {
            let r = &cluster.replication;
            let leads = match cluster.nodes.len() {
                1 => "one node, nothing to replicate".to_string(),
                _ => match leader {
                    Some(id) => format!("{id} leads"),
                    None => "no node leads (an election may be under way)".to_string(),
                },
            };
            outln!("cluster {}: {}, acks {}, {leads} ({})", cluster.name, r.mode, r.acks, dir.config().display());
            out!("{}", render_table(&rows));
        }
    }
    Ok(())
}

/// Prints the status of a leaderless cluster: its quorums where a leader would be named, and
/// each node's counters where epochs and lag would be.
fn print_leaderless(
    output: Output,
    cluster: &ClusterConfig,
    dir: &ClusterDir,
    nwr: Nwr,
    rows: Vec<NodeRow>,
) -> Result<()> {
    match output {
        Output::Json => {
            let report = Report {
                cluster: &cluster.name,
                mode: cluster.replication.mode.to_string(),
                acks: None,
                n: Some(nwr.n),
                w: Some(nwr.w),
                r: Some(nwr.r),
                leader: None,
                nodes: rows,
            };
            outln!("{}", serde_json::to_string_pretty(&report)?);
        }
        Output::Table => {
            let heading = leaderless_heading(nwr, cluster.nodes.len());
            outln!("cluster {}: {heading} ({})", cluster.name, dir.config().display());
            out!("{}", render_leaderless_table(&rows));
        }
    }
    Ok(())
}

/// The node that leads now, among `rows` (see [`leading`]); `None` during an election or when
/// no leader answers. `replikv check` takes it as the reference.
pub fn leader(rows: &[NodeRow]) -> Option<&NodeRow> {
    leading(rows.iter().map(|r| (r, r.role.as_deref() == Some("leader"), r.replication.epoch)))
}

/// Of the nodes that answered, each with whether it says it leads and its epoch, the one that
/// leads now: the leader of the highest epoch, since a leader deposed while cut off still says
/// it leads, in an older epoch (until it hears of the newer one); the first listed if two ever
/// say so in one epoch. None when a node is in a newer epoch than every leader that answered:
/// that epoch's leader (if it has one yet) did not answer, and the others are deposed.
fn leading<T>(nodes: impl Iterator<Item = (T, bool, Option<u64>)>) -> Option<T> {
    let mut best: Option<(T, Option<u64>)> = None;
    let mut newest = None;
    for (node, leads, epoch) in nodes {
        newest = newest.max(epoch);
        if leads && best.as_ref().is_none_or(|(_, best)| epoch > *best) {
            best = Some((node, epoch));
        }
    }
    best.filter(|(_, epoch)| *epoch >= newest).map(|(node, _)| node)
}

/// Asks every node at once and returns their rows in the cluster's order, each with its
/// replication cells filled from its own status and the leader's. `pids` may be empty: the
/// rows then name no pid.
pub fn probe_all(cluster: &ClusterConfig, pids: &[PidEntry], config: &std::path::Path) -> Vec<NodeRow> {
    let probed: Vec<(NodeRow, Option<Value>)> = std::thread::scope(|scope| {
        let probes: Vec<_> = cluster
            .nodes
            .iter()
            .map(|node| {
                let pid = pids.iter().find(|(id, _)| *id == node.id).map(|(_, pid)| *pid);
                scope.spawn(move || probe(node, pid, config))
            })
            .collect();
        probes.into_iter().map(|p| p.join().expect("a status probe panicked")).collect()
    });
    let leader =
        leading(probed.iter().filter_map(|(_, r)| r.as_ref()).map(|r| (r, r["role"] == "leader", r["epoch"].as_u64())));
    probed
        .iter()
        .map(|(row, own)| NodeRow {
            replication: replication_of(&row.id, own.as_ref(), leader),
            leaderless: own.as_ref().and_then(counters_of),
            multi_leader_pending: own.as_ref().and_then(multi_leader_pending),
            datacenter: own.as_ref().and_then(|o| o["multi_leader"]["datacenter"].as_str().map(String::from)),
            datacenter_lags: own.as_ref().map(datacenter_lags).unwrap_or_default(),
            ..row.clone()
        })
        .collect()
}

/// One node's row: its status over HTTP, and its pid if that process still runs; with its
/// status's `replication` object when it is up, for [`replication_of`].
fn probe(node: &ClusterNode, pid: Option<u32>, config: &std::path::Path) -> (NodeRow, Option<Value>) {
    let mut row = NodeRow {
        id: node.id.clone(),
        resp_addr: node.resp_addr.to_string(),
        http_addr: node.http_addr.to_string(),
        role: None,
        up: false,
        replication: Replication::default(),
        keys: None,
        peers: None,
        peer_problems: Vec::new(),
        pid: pid.filter(|pid| process::alive(*pid) && process::is_node(*pid, &node.id, config)),
        error: None,
        leaderless: None,
        multi_leader_pending: None,
        datacenter: None,
        datacenter_lags: Vec::new(),
    };
    let status = match net::get(node.http_addr, "/api/v1/status") {
        Ok((200, body)) => serde_json::from_slice::<Value>(&body).map_err(|e| format!("bad JSON: {e}")),
        Ok((code, _)) => Err(format!("HTTP {code} from {}", node.http_addr)),
        Err(e) => Err(format!("{e:#}")),
    };
    let mut replication = None;
    match status {
        Ok(mut status) if status["id"] == node.id.as_str() => {
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
            replication = Some(status["replication"].take()).filter(Value::is_object);
        }
        Ok(status) => {
            row.error = Some(format!("{} is answered by node {}, not {}", node.http_addr, status["id"], node.id))
        }
        Err(e) => row.error = Some(e),
    }
    (row, replication)
}

/// The replication cells of node `id`, from its own status's `replication` object (`None`
/// when it is down) and the leader's (`None` when no node that says it leads answers).
///
/// The leader's lag is 0. A node the leader lists among its followers takes its lag, mode
/// and link from that entry, even when the node itself is down; any other follower takes its
/// records of lag from its own view of the leader, with the seconds unknown. A lone node has
/// no lag.
fn replication_of(id: &str, own: Option<&Value>, leader: Option<&Value>) -> Replication {
    if own.is_some_and(|o| o["role"] == "leaderless") {
        // No epoch, log position or lag means anything there: its counters do (counters_of).
        return Replication::default();
    }
    let mut cells = Replication {
        epoch: own.and_then(|o| o["epoch"].as_u64()),
        // A follower applies its log only as far as its leader holds it durably.
        applied_lsn: own.and_then(|o| o["leader"]["applied_lsn"].as_u64().or_else(|| o["last_lsn"].as_u64())),
        rolled_back: own.and_then(|o| o["rolled_back"].as_u64()),
        ..Replication::default()
    };
    let at_leader = leader.and_then(|l| l["followers"].as_array()).and_then(|fs| fs.iter().find(|f| f["id"] == id));
    if own.is_some_and(|o| o["role"] == "leader") {
        (cells.lag_records, cells.lag_ms, cells.lag_from) = (Some(0), Some(0), Some("leader"));
    } else if let Some(entry) = at_leader {
        cells.lag_records = entry["lag_records"].as_u64();
        cells.lag_ms = entry["lag_ms"].as_u64();
        cells.lag_from = Some("leader");
        cells.follower_mode = entry["mode"].as_str().map(str::to_string);
        cells.up_at_leader = entry["up"].as_bool();
    } else if let Some(view) = own.filter(|o| o["role"] == "follower").map(|o| &o["leader"]) {
        cells.lag_records = view["lag_records"].as_u64();
        cells.lag_from = Some("follower");
        if view["installing_snapshot"] == true {
            cells.follower_mode = Some("snapshot".into());
        }
    }
    cells
}

/// A leaderless node's counters, from its own status's `replication` object: `None` for a
/// node of another mode, or one whose object lacks a counter (another version of replikv).
pub fn counters_of(own: &Value) -> Option<Counters> {
    let counters = own.get("leaderless").filter(|l| l.is_object())?;
    serde_json::from_value(counters.clone()).ok()
}

/// A multi-leader node's records still on their way, from its own status's `replication`
/// object: on its datacenter's leader, what each other datacenter lacks of its log and what each
/// follower lacks (a datacenter not heard from within the link timeout counts one more, its lag
/// unknown); on a follower, 0 (its leader counts it). `None` for a node of another mode.
pub fn multi_leader_pending(own: &Value) -> Option<u64> {
    let ml = own.get("multi_leader").filter(|m| m.is_object())?;
    if own["role"] != "leader" {
        return Some(0);
    }
    let lag = |list: &Value| -> u64 {
        let items = list.as_array().map(Vec::as_slice).unwrap_or_default();
        items.iter().map(|x| x["lag_records"].as_u64().unwrap_or(0) + u64::from(x["up"] == false)).sum()
    };
    Some(lag(&ml["datacenters"]) + lag(&own["followers"]))
}

/// On a multi-leader datacenter's leader, each other datacenter's lag as the status shows it.
fn datacenter_lags(own: &Value) -> Vec<String> {
    let items = own["multi_leader"]["datacenters"].as_array().map(Vec::as_slice).unwrap_or_default();
    items
        .iter()
        .map(|dc| {
            let state = if dc["up"] == true { "" } else { ", cut off" };
            format!(
                "{}: {} records, {} s{state}",
                dc["name"].as_str().unwrap_or("?"),
                dc["lag_records"].as_u64().unwrap_or(0),
                seconds(dc["lag_ms"].as_u64().unwrap_or(0))
            )
        })
        .collect()
}

/// The ROLE cell: the role (in a multi-leader cluster, with its datacenter), and in
/// parentheses what is unusual about a follower.
fn role_cell(row: &NodeRow) -> String {
    let Some(role) = &row.role else { return "-".into() };
    let role = match &row.datacenter {
        Some(dc) => format!("{role} of {dc}"),
        None => role.clone(),
    };
    let r = &row.replication;
    let mut notes: Vec<&str> = Vec::new();
    notes.extend(r.follower_mode.as_deref().filter(|m| *m != "stream"));
    if r.up_at_leader == Some(false) {
        notes.push("link down");
    }
    match notes.is_empty() {
        true => role,
        false => format!("{role} ({})", notes.join(", ")),
    }
}

/// Milliseconds as seconds with one decimal, truncated: `1234` is `1.2`.
fn seconds(ms: u64) -> String {
    format!("{}.{}", ms / 1000, ms % 1000 / 100)
}

/// The table: a header, one row per node, then why each node that is down is down, which
/// followers the leader counts unlinked, and the refused peer links.
fn render_table(rows: &[NodeRow]) -> String {
    let dash = || "-".to_string();
    let number = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_else(dash);
    let cells: Vec<[String; 11]> = rows
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                r.resp_addr.clone(),
                role_cell(r),
                number(r.replication.epoch),
                number(r.replication.applied_lsn),
                number(r.replication.lag_records),
                r.replication.lag_ms.map(seconds).unwrap_or_else(dash),
                if r.up { "up" } else { "down" }.to_string(),
                number(r.keys),
                r.peers.clone().unwrap_or_else(dash),
                r.pid.map(|p| p.to_string()).unwrap_or_else(dash),
            ]
        })
        .collect();
    let header = ["ID", "RESP", "ROLE", "EPOCH", "APPLIED", "LAG", "LAG_S", "STATE", "KEYS", "PEERS", "PID"];
    let mut out = aligned(header, &cells);
    out += &down_notes(rows);
    for row in rows.iter().filter(|r| r.replication.rolled_back.is_some_and(|n| n > 0)) {
        out += &format!(
            "{}: cut {} changes the leader's history lacks, saved under rollback/ in its data directory\n",
            row.id,
            row.replication.rolled_back.unwrap_or(0)
        );
    }
    for row in rows.iter().filter(|r| r.up && r.replication.up_at_leader == Some(false)) {
        out +=
            &format!("{}: link down: the leader has had no acknowledgement from it within its link timeout\n", row.id);
    }
    for row in rows.iter().filter(|r| !r.datacenter_lags.is_empty()) {
        out += &format!(
            "{} (leads {}): other datacenters' lag behind it: {}\n",
            row.id,
            row.datacenter.as_deref().unwrap_or("?"),
            row.datacenter_lags.join("; ")
        );
    }
    out += &peer_notes(rows);
    out
}

/// The table of a leaderless cluster: a header, one row per node with its counters where a
/// leader's cluster has epochs and lag (see the module documentation), then why each node
/// that is down is down, and the refused peer links.
fn render_leaderless_table(rows: &[NodeRow]) -> String {
    let dash = || "-".to_string();
    let counter = |r: &NodeRow, pick: fn(&replikv_core::leaderless::Counters) -> u64| {
        r.leaderless.as_ref().map_or_else(dash, |c| pick(&c.counts).to_string())
    };
    let anti_entropy = |r: &NodeRow, pick: fn(&AntiEntropyStatus) -> String| {
        r.leaderless.as_ref().and_then(|c| c.anti_entropy.as_ref()).map_or_else(dash, pick)
    };
    let cells: Vec<[String; 17]> = rows
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                r.resp_addr.clone(),
                r.role.clone().unwrap_or_else(dash),
                if r.up { "up" } else { "down" }.to_string(),
                r.keys.map_or_else(dash, |k| k.to_string()),
                counter(r, |c| c.writes_coordinated),
                counter(r, |c| c.reads_coordinated),
                counter(r, |c| c.partial_writes),
                counter(r, |c| c.read_repairs_sent),
                counter(r, |c| c.read_repairs_received),
                anti_entropy(r, |a| a.trees.clone()),
                anti_entropy(r, |a| a.counters.rounds.to_string()),
                anti_entropy(r, |a| a.counters.keys_repaired.to_string()),
                anti_entropy(r, |a| a.tombstones_pending.to_string()),
                anti_entropy(r, |a| a.hint_backlog.values().sum::<u64>().to_string()),
                r.peers.clone().unwrap_or_else(dash),
                r.pid.map_or_else(dash, |p| p.to_string()),
            ]
        })
        .collect();
    let header = [
        "ID",
        "RESP",
        "ROLE",
        "STATE",
        "KEYS",
        "WRITES",
        "READS",
        "PARTIAL",
        "REPAIRS_SENT",
        "REPAIRS_RECV",
        "TREES",
        "AE_ROUNDS",
        "AE_REPAIRED",
        "TOMBSTONES_PENDING",
        "HINTS",
        "PEERS",
        "PID",
    ];
    aligned(header, &cells) + &down_notes(rows) + &peer_notes(rows)
}

/// `header` and `cells` as lines of columns, each as wide as its widest cell, two spaces
/// apart, with no trailing blanks.
fn aligned<const N: usize>(header: [&str; N], cells: &[[String; N]]) -> String {
    let header = header.map(str::to_string);
    let mut widths = header.clone().map(|h| h.len());
    for row in cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(cells) {
        let line: Vec<String> = row.iter().zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out += line.join("  ").trim_end();
        out.push('\n');
    }
    out
}

/// One line per node that is down, saying why.
fn down_notes(rows: &[NodeRow]) -> String {
    rows.iter().filter(|r| !r.up).map(|r| format!("{}: {}\n", r.id, r.error.as_deref().unwrap_or("down"))).collect()
}

/// One line per peer link refused or down, with the reason.
fn peer_notes(rows: &[NodeRow]) -> String {
    rows.iter().flat_map(|r| r.peer_problems.iter().map(move |p| format!("{}: {p}\n", r.id))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_table_aligns_columns_and_explains_down_nodes() {
        let leader = NodeRow {
            id: "n1".into(),
            resp_addr: "127.0.0.1:7001".into(),
            http_addr: "127.0.0.1:7101".into(),
            role: Some("leader".into()),
            up: true,
            replication: Replication {
                epoch: Some(1),
                applied_lsn: Some(1042),
                lag_records: Some(0),
                lag_ms: Some(0),
                lag_from: Some("leader"),
                ..Replication::default()
            },
            keys: Some(12),
            peers: Some("1/2".into()),
            peer_problems: vec!["link to n3 down: connection refused".into()],
            pid: Some(4242),
            error: None,
            leaderless: None,
            multi_leader_pending: None,
            datacenter: None,
            datacenter_lags: Vec::new(),
        };
        let snapshot = NodeRow {
            id: "n2".into(),
            resp_addr: "127.0.0.1:7002".into(),
            role: Some("follower".into()),
            replication: Replication {
                epoch: Some(1),
                applied_lsn: Some(7),
                lag_records: Some(1035),
                lag_ms: Some(2345),
                lag_from: Some("leader"),
                follower_mode: Some("snapshot".into()),
                up_at_leader: Some(false),
                rolled_back: Some(2),
            },
            keys: Some(3),
            peer_problems: Vec::new(),
            pid: Some(4243),
            ..leader.clone()
        };
        let down = NodeRow {
            id: "n3".into(),
            resp_addr: "127.0.0.1:7003".into(),
            role: None,
            up: false,
            replication: Replication::default(),
            keys: None,
            peers: None,
            peer_problems: Vec::new(),
            pid: None,
            error: Some("connection refused".into()),
            ..leader.clone()
        };
        let want = "\
ID  RESP            ROLE                            EPOCH  APPLIED  LAG   LAG_S  STATE  KEYS  PEERS  PID
n1  127.0.0.1:7001  leader                          1      1042     0     0.0    up     12    1/2    4242
n2  127.0.0.1:7002  follower (snapshot, link down)  1      7        1035  2.3    up     3     1/2    4243
n3  127.0.0.1:7003  -                               -      -        -     -      down   -     -      -
n3: connection refused
n2: cut 2 changes the leader's history lacks, saved under rollback/ in its data directory
n2: link down: the leader has had no acknowledgement from it within its link timeout
n1: link to n3 down: connection refused
";
        assert_eq!(render_table(&[leader, snapshot, down]), want);
    }

    /// A leader's `replication` object with one follower, n2, in `mode`.
    fn leader_status(mode: &str, up: bool) -> Value {
        json!({"role": "leader", "epoch": 3, "last_lsn": 50, "followers": [
            {"id": "n2", "mode": mode, "up": up, "acked_lsn": 40, "lag_records": 10, "lag_ms": 1500},
        ]})
    }

    /// A follower's `replication` object: its own view of the leader.
    fn follower_status(installing: bool) -> Value {
        json!({"role": "follower", "epoch": 3, "last_lsn": 44, "followers": [], "leader": {
            "id": "n1", "link_up": false, "applied_lsn": 44, "leader_lsn": 47, "lag_records": 3,
            "installing_snapshot": installing,
        }})
    }

    /// The cells wanted: `node` is (epoch, applied LSN) when the node answers, `lag` is
    /// (records, milliseconds, whose view).
    fn want(
        node: Option<(u64, u64)>,
        lag: Option<(u64, Option<u64>, &'static str)>,
        mode: Option<&str>,
        up_at_leader: Option<bool>,
    ) -> Replication {
        Replication {
            epoch: node.map(|(epoch, _)| epoch),
            applied_lsn: node.map(|(_, lsn)| lsn),
            lag_records: lag.map(|(records, _, _)| records),
            lag_ms: lag.and_then(|(_, ms, _)| ms),
            lag_from: lag.map(|(_, _, from)| from),
            follower_mode: mode.map(str::to_string),
            up_at_leader,
            rolled_back: None,
        }
    }

    #[test]
    fn lag_comes_from_the_leader_when_it_answers_and_from_the_follower_otherwise() {
        let (leader, follower) = (leader_status("stream", true), follower_status(false));
        let (probing, installing) = (leader_status("probe", false), follower_status(true));
        let lone = json!({"role": "standalone", "epoch": 0, "last_lsn": 0, "followers": []});
        let table: Vec<(&str, Option<&Value>, Option<&Value>, Replication)> = vec![
            // The leader itself: lag 0.
            ("n1", Some(&leader), Some(&leader), want(Some((3, 50)), Some((0, Some(0), "leader")), None, None)),
            // A follower the leader lists: the leader's lag, mode and link, not its own 3 records.
            (
                "n2",
                Some(&follower),
                Some(&leader),
                want(Some((3, 44)), Some((10, Some(1500), "leader")), Some("stream"), Some(true)),
            ),
            // The leader is down: the follower's own records of lag, seconds unknown.
            ("n2", Some(&follower), None, want(Some((3, 44)), Some((3, None, "follower")), None, None)),
            ("n2", Some(&installing), None, want(Some((3, 44)), Some((3, None, "follower")), Some("snapshot"), None)),
            // The follower is down: the leader still knows its lag, and that its link is down.
            ("n2", None, Some(&probing), want(None, Some((10, Some(1500), "leader")), Some("probe"), Some(false))),
            // A follower the leader does not list: its own view.
            ("n3", Some(&follower), Some(&leader), want(Some((3, 44)), Some((3, None, "follower")), None, None)),
            // Nobody answers; a lone node has no lag.
            ("n2", None, None, want(None, None, None, None)),
            ("n1", Some(&lone), None, want(Some((0, 0)), None, None, None)),
        ];
        for (id, own, at_leader, want) in table {
            assert_eq!(replication_of(id, own, at_leader), want, "{id} {own:?} {at_leader:?}");
        }
    }

    #[test]
    fn the_leader_is_the_one_of_the_highest_epoch_and_the_first_on_a_tie() {
        /// The nodes that answered: whether each says it leads, and its epoch.
        type Claims<'a> = &'a [(&'a str, bool, Option<u64>)];
        // (the claims; the node that leads now)
        let table: [(Claims, Option<&str>); 9] = [
            (&[], None),
            (&[("n1", true, Some(1))], Some("n1")),
            (&[("n1", true, Some(1)), ("n2", false, Some(1))], Some("n1")),
            // n1 was deposed while cut off and still says it leads.
            (&[("n1", true, Some(1)), ("n2", true, Some(2))], Some("n2")),
            (&[("n2", true, Some(2)), ("n1", true, Some(1))], Some("n2")),
            (&[("n1", true, Some(2)), ("n3", true, Some(2))], Some("n1")),
            // A leader whose epoch is unknown loses to any that says one.
            (&[("n1", true, None), ("n2", true, Some(0))], Some("n2")),
            // n1 was deposed, and n3, which leads epoch 2, did not answer: n2 follows it.
            (&[("n1", true, Some(1)), ("n2", false, Some(2))], None),
            (&[("n2", false, Some(2)), ("n1", true, Some(1))], None),
        ];
        for (leaders, want) in table {
            assert_eq!(leading(leaders.iter().copied()), want, "{leaders:?}");
        }
    }

    #[test]
    fn a_leaderless_table_shows_counters_and_no_epoch_or_lag() {
        let counts = replikv_core::leaderless::Counters {
            writes_coordinated: 12,
            reads_coordinated: 7,
            partial_writes: 1,
            read_repairs_sent: 3,
            read_repairs_received: 0,
            ..Default::default()
        };
        let mut anti_entropy = AntiEntropyStatus { trees: "ready".into(), tombstones_pending: 2, ..Default::default() };
        anti_entropy.counters.rounds = 40;
        anti_entropy.counters.keys_repaired = 200;
        anti_entropy.hint_backlog = [("n2".to_string(), 3), ("n3".to_string(), 4)].into();
        let counters = Counters { in_flight: 0, counts, anti_entropy: Some(anti_entropy) };
        let up = NodeRow {
            id: "n1".into(),
            resp_addr: "127.0.0.1:7001".into(),
            role: Some("leaderless".into()),
            up: true,
            keys: Some(9),
            peers: Some("1/2".into()),
            peer_problems: vec!["link to n3 down: connection refused".into()],
            pid: Some(4242),
            leaderless: Some(counters),
            ..NodeRow::default()
        };
        let down = NodeRow {
            id: "n3".into(),
            resp_addr: "127.0.0.1:7003".into(),
            error: Some("refused".into()),
            ..NodeRow::default()
        };
        let want = "\
ID  RESP            ROLE        STATE  KEYS  WRITES  READS  PARTIAL  REPAIRS_SENT  REPAIRS_RECV  TREES  AE_ROUNDS  AE_REPAIRED  TOMBSTONES_PENDING  HINTS  PEERS  PID
n1  127.0.0.1:7001  leaderless  up     9     12      7      1        3             0             ready  40         200          2                   7      1/2    4242
n3  127.0.0.1:7003  -           down   -     -       -      -        -             -             -      -          -            -                   -      -      -
n3: refused
n1: link to n3 down: connection refused
";
        let text = render_leaderless_table(&[up, down]);
        assert_eq!(text, want);
        assert!(!text.contains("EPOCH") && !text.contains("leads"), "{text}");
    }

    #[test]
    fn a_leaderless_heading_names_the_quorums_and_never_a_leader() {
        let nwr = |n, w, r| Nwr::new(n, w, r).unwrap();
        assert_eq!(leaderless_heading(nwr(3, 2, 2), 3), "leaderless, n = 3, w = 2, r = 2");
        assert_eq!(leaderless_heading(nwr(1, 1, 1), 1), "leaderless, n = 1, w = 1, r = 1");
        assert_eq!(
            leaderless_heading(nwr(3, 3, 1), 5),
            "leaderless, n = 3, w = 3, r = 1, each key on 3 of the 5 nodes"
        );
    }

    #[test]
    fn a_leaderless_node_has_counters_and_no_epoch_or_lag() {
        let own = json!({"role": "leaderless", "mode": "leaderless", "epoch": 0, "last_lsn": 0, "followers": [],
            "leaderless": {"n": 3, "w": 2, "r": 2, "conflicts": "lww", "read_repair": "async", "in_flight": 2,
                "writes_coordinated": 5, "reads_coordinated": 4, "partial_writes": 1, "failed_reads": 0,
                "read_repairs_sent": 3, "read_repairs_received": 2, "sibling_reads": 0, "siblings_dropped": 0,
                "forwarded": 0}});
        assert_eq!(replication_of("n1", Some(&own), None), Replication::default());
        let counters = counters_of(&own).expect("counters");
        assert_eq!(
            (counters.in_flight, counters.counts.writes_coordinated, counters.counts.read_repairs_received),
            (2, 5, 2)
        );
        // A node that predates anti-entropy has none; one that has it shows its trees.
        assert_eq!(counters.anti_entropy, None);
        let mut with = own.clone();
        with["leaderless"]["anti_entropy"] = json!({"trees": "rebuilding", "tree_keys": 10, "ranges": 1,
            "interval_ms": 300, "style": "push-pull", "bytes_sent": 0, "last_exchange_ms_ago": {"n2": 100},
            "tombstones_pending": 0, "tombstones_untracked": 0, "hint_backlog": {}, "hints_stored": 0,
            "hints_delivered": 0, "hints_dropped": 0, "rounds": 3, "ranges_differing": 0, "ranges_same": 3,
            "keys_sent": 0, "keys_received": 0, "keys_repaired": 0, "refused": 0, "truncated": 0});
        let a = counters_of(&with).expect("counters").anti_entropy.expect("anti-entropy");
        assert_eq!((a.trees.as_str(), a.counters.rounds, a.last_exchange_ms_ago["n2"]), ("rebuilding", 3, 100));
        // A leader's status has no such object; one missing a counter is not guessed at.
        assert_eq!(counters_of(&leader_status("stream", true)), None);
        let mut partial = own.clone();
        partial["leaderless"].as_object_mut().unwrap().remove("partial_writes");
        assert_eq!(counters_of(&partial), None);
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
        let (row, replication) = probe(&node, Some(u32::MAX / 2), std::path::Path::new("cluster.toml"));
        assert!(!row.up && row.pid.is_none() && row.error.is_some() && replication.is_none(), "{row:?}");
    }

    #[test]
    fn a_multi_leader_node_counts_what_its_datacenters_and_followers_lack() {
        let leader = serde_json::json!({
            "role": "leader",
            "followers": [{"lag_records": 2, "up": true}],
            "multi_leader": {"datacenters": [{"lag_records": 3, "up": true}, {"lag_records": 0, "up": false}]}
        });
        assert_eq!(multi_leader_pending(&leader), Some(6), "2 + 3, and 1 for a datacenter cut off");
        let follower = serde_json::json!({"role": "follower", "multi_leader": {"datacenters": []}});
        assert_eq!(multi_leader_pending(&follower), Some(0));
        assert_eq!(multi_leader_pending(&serde_json::json!({"role": "leader"})), None, "another mode");
    }
}
