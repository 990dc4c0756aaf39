//! Golden scripts for single-leader replication: a leader and its followers in one process,
//! a network the script drives message by message, and every message and reply printed.
//!
//! Scripts live in `clusterscripts/`, each named for what it pins. Lines:
//!
//! - `:cluster acks=sync|semi-sync:K|async followers=N retain=BYTES unreplicated=BYTES
//!   failover=on|off`: first, sets up the nodes (n1 leads); `unreplicated` is the log's
//!   `unreplicated_bytes_max` (records no majority holds kept past `retain`). `failover=on` turns on elections and step-down, with an
//!   election timeout of 300 ms (a follower stands after 300..=600 ms without a leader, each
//!   node drawing its waits from its own seed, so they differ but repeat from run to run).
//! - `nI COMMAND ARGS`: a client sends the command to node I; its number is printed, and its
//!   reply whenever it arrives (`#3 -> OK`).
//! - `:deliver` delivers the next message in flight, `:deliver N` the next N, `:deliver all`
//!   until none is left; each is printed as `nA -> nB Kind fields`.
//! - `:drop` loses the next message; `:dup` delivers it twice (now, and again later);
//!   `:swap` exchanges the next two (reordering).
//! - `:cut nI` / `:heal`: messages to and from node I are lost / no longer.
//! - `:tick MS`: time passes in ticks of 50 ms, messages stay in flight (heartbeats join them).
//!   `:tick nI MS`: the same, but only node I's timers run (the others are stalled, as a paused
//!   process is, until their next tick): the way to make one node's election timeout fire
//!   first, or to keep a cut-off leader from noticing it lost its majority.
//! - `:run MS`: time passes and every message is delivered as it is sent, unprinted (replies
//!   and node logs still print).
//! - `:crash nI`: node I restarts from its engine and log (the memory engine keeps what was
//!   written: a crash of the process, not of the disk). `:crash nI lose`: the same, but its
//!   log keeps only what was durable (a power loss while its fsync was held).
//! - `:hold nI`: node I's fsyncs stop finishing: its batches are written out and a leader's
//!   records shipped, but nothing more becomes durable and what waits on that (replies,
//!   acknowledgements) is held. `:fsync nI`: they finish, and finish at once again from then.
//! - `:status`: each node's role, epoch, vote in that epoch (`voted=nJ`), leader as it knows
//!   it (`leader=nJ`), log end with its last record's epoch (`lsn=3@e2`), the changes it cut
//!   into its rollback log and how many times it started again (`rolled_back=N rebuilds=N`,
//!   when not 0), and the leader's view of each follower.
//!
//! Besides messages and replies, a script prints what the nodes log about failover, as
//! `nI: text` (everything from `single_leader::failover`: votes and why they were granted or
//! refused, standing, winning, fencing; and warnings from the rest of the replica: stepping
//! down, cutting a log), with node ids written as `nI`. The log lines are the replica's own
//! `tracing` events, caught by a subscriber scoped to the script's thread.
//!
//! Run with `UPDATE_GOLDEN=1` to rewrite the expected output, then review the diff.

use super::golden_tests::{check_scripts, render, split_line};
use super::tests::Cluster;
use super::{Input, SingleLeader};
use crate::kv::{parse_command, Reply};
use crate::replication::ReplogOptions;
use crate::single_leader::Message;
use crate::storage::MemoryEngine;
use std::cell::RefCell;
use std::collections::BTreeMap;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata};

/// Deliveries one `:deliver all` or one settling round of `:run` makes at most.
const DELIVERIES_MAX: usize = 100_000;

thread_local! {
    /// The log lines caught since the last step was printed, on this thread.
    static LOG_LINES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// A `tracing` subscriber that keeps the replica's failover events as text, for the script.
struct CaptureLogs;

impl tracing::Subscriber for CaptureLogs {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // Asked every time: other test threads have no subscriber, and a cached "never" from
        // them must not hide this thread's events.
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let target = metadata.target();
        target == "replikv_core::single_leader::failover"
            || (target.starts_with("replikv_core::single_leader") && *metadata.level() <= Level::WARN)
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        LOG_LINES.with(|lines| lines.borrow_mut().push(message.0));
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// Steps node `i` with `input`, printing what it logged.
fn step(c: &mut Cluster, i: usize, input: Input, out: &mut Vec<String>) {
    c.step(i, input);
    print_logs(c, i, out);
}

/// Prints the log lines caught since the last call as node `i`'s, `nI: text`.
fn print_logs(c: &Cluster, i: usize, out: &mut Vec<String>) {
    let lines = LOG_LINES.with(|lines| std::mem::take(&mut *lines.borrow_mut()));
    for line in lines {
        let named = c.ids.iter().enumerate().fold(line, |text, (j, id)| text.replace(&format!("{id:?}"), &name(j)));
        out.push(format!("{}: {named}", name(i)));
    }
}

/// How a script names node index `i`.
fn name(i: usize) -> String {
    format!("n{}", i + 1)
}

/// A message, as a script prints it.
fn describe(message: &Message) -> String {
    match message {
        Message::Append { epoch, prev_lsn, prev_epoch, records, leader_lsn, .. } => {
            let lsns = match (records.first(), records.last()) {
                (Some(a), Some(b)) => format!("{}..{}", a.lsn, b.lsn),
                _ => "none".into(),
            };
            format!("Append e{epoch} prev={prev_lsn}@e{prev_epoch} records={lsns} leader_lsn={leader_lsn}")
        }
        Message::Heartbeat { epoch, leader_lsn, round, .. } => {
            format!("Heartbeat e{epoch} round={round} leader_lsn={leader_lsn}")
        }
        Message::Ack { epoch, durable_lsn, matched_lsn, reject, snapshot, .. } => format!(
            "Ack e{epoch} durable={durable_lsn} matched={matched_lsn}{}{}",
            if *reject { " REJECT" } else { "" },
            snapshot.map_or(String::new(), |(_, seq)| format!(" snapshot_chunk={seq}"))
        ),
        Message::Vote { epoch, last_epoch, last_lsn, pre_vote, transfer } => format!(
            "{} e{epoch} last={last_lsn}@e{last_epoch}{}",
            if *pre_vote { "PreVote" } else { "Vote" },
            if *transfer { " transfer" } else { "" }
        ),
        Message::TimeoutNow { epoch } => format!("TimeoutNow e{epoch}"),
        Message::RepairRequest { epoch, keys } => format!("RepairRequest e{epoch} keys={}", keys.len()),
        Message::RepairReply { epoch, lsn, entries } => {
            format!("RepairReply e{epoch} lsn={lsn} entries={}", entries.len())
        }
        Message::VoteReply { epoch, granted, pre_vote } => format!(
            "{}Reply e{epoch} {}",
            if *pre_vote { "PreVote" } else { "Vote" },
            if *granted { "granted" } else { "refused" }
        ),
        Message::SnapshotChunk { lsn, seq, entries, done, .. } => {
            format!("SnapshotChunk lsn={lsn} seq={seq} keys={}{}", entries.len(), if *done { " done" } else { "" })
        }
        Message::Forward { id, .. } => format!("Forward #{id}"),
        Message::ForwardReply { id, .. } => format!("ForwardReply #{id}"),
    }
}

/// The node index of `nI`.
fn node(word: &str) -> usize {
    word.strip_prefix('n').and_then(|n| n.parse::<usize>().ok()).filter(|n| *n >= 1).expect("a node is nI") - 1
}

/// Replies that arrived since `seen`, rendered.
fn new_replies(c: &Cluster, seen: &mut BTreeMap<u64, Reply>, out: &mut Vec<String>) {
    for (id, reply) in &c.replies {
        if seen.contains_key(id) {
            continue;
        }
        let mut lines = Vec::new();
        render(reply, 0, &mut lines);
        out.push(format!("#{id} -> {}", lines.join(" ")));
        seen.insert(*id, reply.clone());
    }
}

/// Delivers the next message in flight, printing it; false when none is.
fn deliver_one(c: &mut Cluster, out: &mut Vec<String>) -> bool {
    let Some((from, to, message)) = c.net.pop_front() else { return false };
    let lost = c.cut.contains(&from) || c.cut.contains(&to);
    out.push(format!("n{} -> n{} {}{}", from + 1, to + 1, describe(&message), if lost { " (lost: cut)" } else { "" }));
    if !lost {
        let from = c.ids[from];
        step(c, to, Input::Message { from, message }, out);
    }
    true
}

/// Time passes in ticks of 50 ms for the nodes `which` (all: `None`), each message
/// delivered as it is sent, unprinted, when `settle`.
fn pass(c: &mut Cluster, ms: u64, which: Option<usize>, settle: bool, out: &mut Vec<String>) {
    for _ in 0..ms.div_ceil(50) {
        c.now += 50;
        for i in 0..c.nodes.len() {
            if which.is_none_or(|w| w == i) {
                step(c, i, Input::Tick, out);
            }
        }
        if !settle {
            continue;
        }
        let mut left = DELIVERIES_MAX;
        while let Some((from, to, message)) = c.net.pop_front() {
            assert!(left > 0, "the network never went quiet");
            left -= 1;
            if !c.cut.contains(&from) && !c.cut.contains(&to) {
                let from = c.ids[from];
                step(c, to, Input::Message { from, message }, out);
            }
        }
    }
}

/// One node's line of `:status`.
fn status_line(c: &Cluster, i: usize) -> String {
    let node = &c.nodes[i];
    let status = node.status(c.now);
    let index = |id| c.ids.iter().position(|known| *known == id).expect("a node of the cluster");
    let mut text = format!("{} {} e{}", name(i), status.role, status.epoch);
    if let Some(voted) = status.voted_for {
        text += &format!(" voted={}", name(index(voted)));
    }
    if let Some(leader) = status.leader.as_ref().and_then(|view| view.leader) {
        text += &format!(" leader={}", name(index(leader)));
    }
    let last_epoch = node.log_epoch_at(status.last_lsn).unwrap_or(0);
    text += &format!(" lsn={}@e{last_epoch}", status.last_lsn);
    if status.durable_lsn < status.last_lsn {
        text += &format!(" durable={}", status.durable_lsn);
    }
    if let Some(view) = status.leader.as_ref().filter(|view| view.applied_lsn < status.last_lsn) {
        text += &format!(" applied={}", view.applied_lsn);
    }
    if status.rolled_back > 0 {
        text += &format!(" rolled_back={}", status.rolled_back);
    }
    if let Some(view) = status.leader.as_ref().filter(|view| view.rebuilds > 0) {
        text += &format!(" rebuilds={}", view.rebuilds);
    }
    if let Some(view) = status.leader.as_ref().filter(|view| view.tail_cuts > 0) {
        text += &format!(" tail_cuts={}", view.tail_cuts);
    }
    for f in &status.followers {
        text += &format!(" | {}: {} acked={} lag={}", name(index(f.node)), f.mode, f.acked_lsn, f.lag_records);
        if f.snapshots > 0 {
            text += &format!(" snapshots={}", f.snapshots);
        }
    }
    text
}

/// Runs one script and returns its text with fresh output.
fn run_script(text: &str) -> String {
    let _capture = tracing::subscriber::set_default(CaptureLogs);
    // Callsites another thread registered while no subscriber was set cached "never": ask again.
    tracing::callsite::rebuild_interest_cache();
    LOG_LINES.with(|lines| lines.borrow_mut().clear());
    let mut cluster: Option<Cluster> = None;
    let mut seen = BTreeMap::new();
    let mut next_id = 0u64;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("  ") {
            continue;
        }
        out.push(line.to_string());
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut results = Vec::new();
        let words: Vec<&str> = line.split_whitespace().collect();
        if words[0] == ":cluster" {
            let mut acks = 0;
            let mut followers = 2;
            let mut retain = ReplogOptions::default().retain_bytes_max;
            let mut unreplicated = ReplogOptions::default().unreplicated_bytes_max;
            let mut failover = false;
            for w in &words[1..] {
                match w.split_once('=').expect("name=value") {
                    ("acks", "sync") => acks = usize::MAX,
                    ("acks", "async") => acks = 0,
                    ("acks", k) => acks = k.strip_prefix("semi-sync:").and_then(|k| k.parse().ok()).expect("acks"),
                    ("followers", n) => followers = n.parse().expect("followers"),
                    ("retain", n) => retain = n.parse().expect("retain"),
                    ("unreplicated", n) => unreplicated = n.parse().expect("unreplicated"),
                    ("failover", "on") => failover = true,
                    ("failover", "off") => failover = false,
                    other => panic!("unknown :cluster setting {other:?}"),
                }
            }
            let options = ReplogOptions {
                retain_bytes_max: retain,
                segment_bytes_max: retain / 4,
                unreplicated_bytes_max: unreplicated,
                ..Default::default()
            };
            let acks = acks.min(followers);
            cluster = Some(if failover {
                Cluster::failover(followers, acks, options)
            } else {
                Cluster::new(followers, acks, options)
            });
            continue;
        }
        let c = cluster.as_mut().expect("the script starts with :cluster");
        match words[0] {
            ":deliver" => match words.get(1).copied() {
                None => {
                    deliver_one(c, &mut results);
                }
                Some("all") => {
                    let mut left = DELIVERIES_MAX;
                    while left > 0 && deliver_one(c, &mut results) {
                        left -= 1;
                    }
                }
                Some(n) => {
                    for _ in 0..n.parse::<usize>().expect(":deliver N") {
                        deliver_one(c, &mut results);
                    }
                }
            },
            ":drop" => {
                if let Some((from, to, message)) = c.net.pop_front() {
                    results.push(format!("dropped n{} -> n{} {}", from + 1, to + 1, describe(&message)));
                }
            }
            ":dup" => {
                if let Some((from, to, message)) = c.net.front().cloned() {
                    results.push(format!("duplicated n{} -> n{} {}", from + 1, to + 1, describe(&message)));
                    c.net.push_back((from, to, message));
                }
            }
            ":swap" => {
                if c.net.len() >= 2 {
                    c.net.swap(0, 1);
                    let (from, to, message) = &c.net[0];
                    results.push(format!("now first: n{} -> n{} {}", from + 1, to + 1, describe(message)));
                }
            }
            ":cut" => {
                c.cut.insert(node(words[1]));
            }
            ":heal" => c.cut.clear(),
            ":tick" => {
                let (which, ms) = match words[1..] {
                    [ms] => (None, ms),
                    [n, ms] => (Some(node(n)), ms),
                    _ => panic!(":tick [nI] MS"),
                };
                pass(c, ms.parse().expect(":tick [nI] MS"), which, false, &mut results);
            }
            ":run" => pass(c, words[1].parse().expect(":run MS"), None, true, &mut results),
            ":crash" if words.get(2) == Some(&"lose") => {
                let i = node(words[1]);
                c.crash_losing_unsynced(i);
                print_logs(c, i, &mut results);
                results.push(format!(
                    "n{} restarted at lsn {} (its unsynced records lost)",
                    i + 1,
                    c.nodes[i].last_lsn()
                ));
            }
            ":crash" => {
                let i = node(words[1]);
                // What waited on its held fsync dies with the process.
                c.fsync_held.remove(&i);
                let settings = c.nodes[i].settings().clone();
                let placeholder = SingleLeader::new(MemoryEngine::new(), settings.common.node);
                let (engine, files) = std::mem::replace(&mut c.nodes[i], placeholder).into_parts();
                c.nodes[i] = SingleLeader::replicated(engine, files, settings, c.now).expect("restart");
                print_logs(c, i, &mut results);
                results.push(format!("n{} restarted at lsn {}", i + 1, c.nodes[i].last_lsn()));
            }
            ":hold" => c.hold_fsync(node(words[1])),
            ":fsync" => {
                let i = node(words[1]);
                c.finish_fsync(i);
                print_logs(c, i, &mut results);
            }
            ":status" => results.extend((0..c.nodes.len()).map(|i| status_line(c, i))),
            w if w.starts_with('n') && !w.starts_with(':') => {
                let i = node(w);
                let args = split_line(&words[1..].join(" "));
                let request = parse_command(&args).expect("a known command").expect("valid arguments");
                next_id += 1;
                c.replies.remove(&next_id);
                results.push(format!("#{next_id} sent to n{}", i + 1));
                step(c, i, Input::Request { id: next_id, request }, &mut results);
            }
            other => panic!("unknown script line {other:?}"),
        }
        new_replies(c, &mut seen, &mut results);
        out.extend(results.into_iter().map(|r| format!("  {r}")));
    }
    out.join("\n") + "\n"
}

#[test]
fn cluster_golden_scripts() {
    // The five scripts issue 5 names and the six of issue 6's elections, at least.
    check_scripts("clusterscripts", 11, run_script);
}
