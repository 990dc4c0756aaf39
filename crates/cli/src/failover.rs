//! `replikv failover`: a planned handover of a local cluster's leadership (issue 6), the manual
//! failover the lecture notes many operators prefer to an automatic one.
//!
//! It finds the leader (the node whose `/api/v1/status` says so), asks it to hand over
//! (`POST /api/v1/failover`, which is `FAILOVER [TO host port] [TIMEOUT ms] [FORCE]`), and waits
//! until another node leads: the leader stops taking writes (clients pause), lets the target
//! catch up, hands over and follows it. No acknowledged write is lost.
//!
//! `--dry-run` changes nothing: it says which follower an election would choose if the leader
//! died now (the one whose log is furthest along), and which records the leader holds that it
//! lacks: in `async` mode, acknowledged writes that such a failover would cut (and a
//! `FAILOVER`, which lets the target catch up first, would not).
//!
//! The records at risk are listed with their keys, from the leader's log
//! (`GET /api/v1/log`), up to [`LISTED_RECORDS_MAX`].
//!
//! CAVEATS
//! - The positions are each node's at its own moment; writes going on move them.

use crate::cluster::args::WhichCluster;
use crate::cluster::layout::ClusterDir;
use crate::cluster::net;
use crate::output::{outln, progressln};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use replikv_server::config::ClusterNode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Records at risk `--dry-run` lists by key, at most.
pub const LISTED_RECORDS_MAX: u64 = 100;

/// How long after the catch-up timeout the command waits for a new leader at most.
const ELECTION_SLACK_SECS: u64 = 10;

/// How long the command waits for a leader when none answers as one (an election under way).
const LEADER_WAIT_SECS: u64 = 10;

/// How many times the command asks again when the leader it asked has just lost an election.
const LEADER_CHANGES_MAX: u32 = 3;

/// How often the leader is asked again while the handover runs.
const POLL_MS: u64 = 50;

/// Move a local cluster's leadership to a follower, or say what a failover would do.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
replikv failover --to n2          # n1 waits for n2 to catch up, then n2 leads\n  \
replikv failover                  # to the most up-to-date follower\n  \
replikv failover --dry-run        # who would win an election now, and what it would lack")]
pub struct FailoverArgs {
    /// Which cluster.
    #[command(flatten)]
    pub which: WhichCluster,
    /// The follower to hand over to (its id, e.g. n2); default: the most up-to-date one.
    #[arg(long)]
    pub to: Option<String>,
    /// Milliseconds the target may take to catch up; then the handover is abandoned (or,
    /// with --force, done anyway).
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Hand over at the timeout even if the target has not caught up (needs --to).
    #[arg(long)]
    pub force: bool,
    /// Change nothing: say who would win an election now and what it would lack.
    #[arg(long)]
    pub dry_run: bool,
}

/// `replikv failover`.
pub fn main(args: &FailoverArgs) -> Result<()> {
    let dir = ClusterDir::new(&args.which)?;
    let cluster = dir.read_config()?;
    if args.force && args.to.is_none() {
        bail!("--force needs --to");
    }
    let body = |target: Option<&ClusterNode>| {
        json!({
            "to": target.map(|t| t.resp_addr.to_string()),
            "timeout_ms": args.timeout_ms,
            "force": args.force,
        })
        .to_string()
    };
    // The leader found here may lose an election before it is asked (a busy machine, a short
    // election timeout): it then refuses as a replica, and the node that leads now is asked.
    let mut attempt = 1;
    let waiting_until = Instant::now() + Duration::from_secs(LEADER_WAIT_SECS);
    let (leader, target, epoch) = loop {
        let statuses: Vec<(&ClusterNode, Option<Value>)> = cluster.nodes.iter().map(|n| (n, status(n).ok())).collect();
        // A leader deposed while cut off may still say it leads: the one of the newest epoch.
        let leading = statuses
            .iter()
            .filter(|(_, s)| s.as_ref().is_some_and(|s| s["replication"]["role"] == "leader"))
            .max_by_key(|(_, s)| s.as_ref().and_then(|s| s["replication"]["epoch"].as_u64()));
        let Some((leader, Some(leader_status))) = leading else {
            // An election under way: wait for its winner, a while.
            if Instant::now() < waiting_until {
                std::thread::sleep(Duration::from_millis(POLL_MS));
                continue;
            }
            bail!("no node leads after {LEADER_WAIT_SECS} s: is the cluster running (replikv status)?");
        };
        if args.dry_run {
            return dry_run(leader, leader_status, &statuses);
        }
        let target = match &args.to {
            Some(id) => {
                let node = cluster.node(id).ok_or_else(|| anyhow!("no node {id} in the cluster"))?;
                if node.id == leader.id {
                    if attempt > 1 {
                        // An election chose the target while the command was asking.
                        progressln!("{id} leads epoch {}", leader_status["replication"]["epoch"]);
                        return Ok(());
                    }
                    bail!("{id} already leads");
                }
                Some(node)
            }
            None => None,
        };
        let (code, reply) = net::post(leader.http_addr, "/api/v1/failover", body(target).as_bytes())?;
        if code == 200 {
            break (*leader, target, leader_status["replication"]["epoch"].as_u64().unwrap_or(0));
        }
        let reply = String::from_utf8_lossy(&reply);
        if attempt < LEADER_CHANGES_MAX && reply.contains("when server is a replica") {
            progressln!("{} no longer leads (an election ran); asking the node that leads now", leader.id);
            attempt += 1;
            std::thread::sleep(Duration::from_millis(POLL_MS));
            continue;
        }
        bail!("{} refused: {}", leader.id, reply.trim());
    };
    progressln!(
        "{} holds writes until {} has caught up, then hands over",
        leader.id,
        target.map_or("the most up-to-date follower", |t| t.id.as_str())
    );
    let deadline = Instant::now() + Duration::from_millis(args.timeout_ms) + Duration::from_secs(ELECTION_SLACK_SECS);
    loop {
        for node in &cluster.nodes {
            let Ok(s) = status(node) else { continue };
            // A newer epoch's leader: one deposed earlier may still say it leads, in an older one.
            let newer = s["replication"]["epoch"].as_u64().is_some_and(|e| e > epoch);
            if s["replication"]["role"] == "leader" && node.id != leader.id && newer {
                progressln!("{} leads epoch {}; {} follows it", node.id, s["replication"]["epoch"], leader.id);
                return Ok(());
            }
        }
        let old = status(leader).ok();
        if old.as_ref().is_some_and(|s| s["replication"]["failover_state"] == "no-failover")
            && old.as_ref().is_some_and(|s| s["replication"]["role"] == "leader")
        {
            bail!("{} abandoned the handover (the target did not catch up in time) and leads on", leader.id);
        }
        if Instant::now() >= deadline {
            bail!("no other node leads after {} ms", args.timeout_ms + ELECTION_SLACK_SECS * 1000);
        }
        std::thread::sleep(Duration::from_millis(POLL_MS));
    }
}

/// A node's `/api/v1/status`.
fn status(node: &ClusterNode) -> Result<Value> {
    let (code, body) = net::get(node.http_addr, "/api/v1/status").with_context(|| format!("{} is down", node.id))?;
    if code != 200 {
        bail!("{}: status {code}", node.id);
    }
    serde_json::from_slice(&body).map_err(|e| anyhow!("{}: bad status JSON: {e}", node.id))
}

/// Prints the leader's records after `after`, with their keys (the first few).
fn list_records(leader: &ClusterNode, after: u64) {
    let path = format!("/api/v1/log?after={after}&limit={LISTED_RECORDS_MAX}&keys_only=true");
    let records = match net::get(leader.http_addr, &path) {
        Ok((200, body)) => serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
        Ok((code, body)) => {
            outln!("    (cannot list them: HTTP {code}: {})", String::from_utf8_lossy(&body).trim());
            return;
        }
        Err(e) => {
            outln!("    (cannot list them: {e:#})");
            return;
        }
    };
    for r in records.as_array().into_iter().flatten() {
        let keys: Vec<&str> = r["keys"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let shown = if keys.is_empty() { "(no keys: an election's empty record)".to_string() } else { keys.join(" ") };
        outln!("    lsn {} (epoch {}): {shown}", r["lsn"], r["epoch"]);
    }
}

/// `--dry-run`: who would win an election now, and what it would lack.
fn dry_run(leader: &ClusterNode, status: &Value, statuses: &[(&ClusterNode, Option<Value>)]) -> Result<()> {
    let r = &status["replication"];
    let leader_lsn = r["last_lsn"].as_u64().unwrap_or(0);
    outln!(
        "{} leads epoch {} at lsn {leader_lsn} (acks = {})",
        leader.id,
        r["epoch"],
        r["acks"].as_str().unwrap_or("?")
    );
    let mut best: Option<(&str, u64)> = None;
    for (node, s) in statuses.iter().filter(|(n, _)| n.id != leader.id) {
        match s {
            None => outln!("  {}: down, cannot vote or win", node.id),
            Some(s) => {
                let lsn = s["replication"]["last_lsn"].as_u64().unwrap_or(0);
                outln!("  {}: log ends at lsn {lsn}", node.id);
                if best.is_none_or(|(_, b)| lsn > b) {
                    best = Some((node.id.as_str(), lsn));
                }
            }
        }
    }
    // The leader dead, the others that are up must be a majority of the cluster to elect.
    let up = statuses.iter().filter(|(n, s)| s.is_some() && n.id != leader.id).count();
    match best {
        Some((id, lsn)) if up > statuses.len() / 2 => {
            outln!("if {} died now, {id} would win the election (its log is the furthest along)", leader.id);
            if lsn >= leader_lsn {
                outln!("it holds every record the leader has: nothing would be lost");
            } else {
                outln!(
                    "it lacks records {}..={leader_lsn} ({} records): {}",
                    lsn + 1,
                    leader_lsn - lsn,
                    if r["acks"] == "async" {
                        "writes the leader acknowledged (async) that would be cut, into its rollback log"
                    } else {
                        "writes not yet acknowledged (their acknowledgements were pending)"
                    }
                );
            }
            if lsn < leader_lsn {
                list_records(leader, lsn);
            }
            outln!("`replikv failover --to {id}` would first let it catch up: nothing lost");
        }
        _ => outln!("if {} died now, no majority would be left to elect a leader", leader.id),
    }
    Ok(())
}
