//! Golden scripts for single-leader replication: a leader and its followers in one process,
//! a network the script drives message by message, and every message and reply printed.
//!
//! Scripts live in `clusterscripts/`, each named for what it pins. Lines:
//!
//! - `:cluster acks=sync|semi-sync:K|async followers=N retain=BYTES`: first, sets up the nodes
//!   (n1 leads).
//! - `nI COMMAND ARGS`: a client sends the command to node I; its number is printed, and its
//!   reply whenever it arrives (`#3 -> OK`).
//! - `:deliver` delivers the next message in flight, `:deliver N` the next N, `:deliver all`
//!   until none is left; each is printed as `nA -> nB Kind fields`.
//! - `:drop` loses the next message; `:dup` delivers it twice (now, and again later);
//!   `:swap` exchanges the next two (reordering).
//! - `:cut nI` / `:heal`: messages to and from node I are lost / no longer.
//! - `:tick MS`: time passes in ticks of 50 ms, messages stay in flight (heartbeats join them).
//! - `:run MS`: time passes and every message is delivered as it is sent, unprinted (replies
//!   still print).
//! - `:crash nI`: node I restarts from its engine and log (the memory engine keeps what was
//!   written: a crash of the process, not of the disk).
//! - `:status`: each node's log end, and the leader's view of each follower.
//!
//! Run with `UPDATE_GOLDEN=1` to rewrite the expected output, then review the diff.

use super::golden_tests::{check_scripts, render, split_line};
use super::tests::Cluster;
use super::{Input, Replica};
use crate::kv::{parse_command, Reply};
use crate::replication::{Message, ReplogOptions};
use crate::storage::MemoryEngine;
use std::collections::BTreeMap;

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
        Message::Vote { epoch, last_epoch, last_lsn, pre_vote } => {
            format!("{} e{epoch} last={last_lsn}@e{last_epoch}", if *pre_vote { "PreVote" } else { "Vote" })
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
        c.step(to, Input::Message { from, message });
    }
    true
}

/// Runs one script and returns its text with fresh output.
fn run_script(text: &str) -> String {
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
            for w in &words[1..] {
                match w.split_once('=').expect("name=value") {
                    ("acks", "sync") => acks = usize::MAX,
                    ("acks", "async") => acks = 0,
                    ("acks", k) => acks = k.strip_prefix("semi-sync:").and_then(|k| k.parse().ok()).expect("acks"),
                    ("followers", n) => followers = n.parse().expect("followers"),
                    ("retain", n) => retain = n.parse().expect("retain"),
                    other => panic!("unknown :cluster setting {other:?}"),
                }
            }
            let options =
                ReplogOptions { retain_bytes_max: retain, segment_bytes_max: retain / 4, ..Default::default() };
            cluster = Some(Cluster::new(followers, acks.min(followers), options));
            continue;
        }
        let c = cluster.as_mut().expect("the script starts with :cluster");
        match words[0] {
            ":deliver" => match words.get(1).copied() {
                None => {
                    deliver_one(c, &mut results);
                }
                Some("all") => {
                    let mut left = 10_000;
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
                let ms: u64 = words[1].parse().expect(":tick MS");
                for _ in 0..ms.div_ceil(50) {
                    c.now += 50;
                    for i in 0..c.nodes.len() {
                        c.step(i, Input::Tick);
                    }
                }
            }
            ":run" => c.run_for(words[1].parse().expect(":run MS")),
            ":crash" => {
                let i = node(words[1]);
                let settings = c.nodes[i].settings().clone();
                let placeholder = Replica::new(MemoryEngine::new(), settings.node);
                let (engine, files) = std::mem::replace(&mut c.nodes[i], placeholder).into_parts();
                c.nodes[i] = Replica::replicated(engine, files, settings, c.now).expect("restart");
                results.push(format!("n{} restarted at lsn {}", i + 1, c.nodes[i].last_lsn()));
            }
            ":status" => {
                for (i, n) in c.nodes.iter().enumerate() {
                    let status = n.status(c.now);
                    let mut text = format!("n{} {} lsn={}", i + 1, status.role, status.last_lsn);
                    for f in &status.followers {
                        let j = c.ids.iter().position(|id| *id == f.node).expect("a node") + 1;
                        text += &format!(" | n{j}: {} acked={} lag={}", f.mode, f.acked_lsn, f.lag_records);
                        if f.snapshots > 0 {
                            text += &format!(" snapshots={}", f.snapshots);
                        }
                    }
                    results.push(text);
                }
            }
            w if w.starts_with('n') && !w.starts_with(':') => {
                let i = node(w);
                let args = split_line(&words[1..].join(" "));
                let request = parse_command(&args).expect("a known command").expect("valid arguments");
                next_id += 1;
                c.replies.remove(&next_id);
                results.push(format!("#{next_id} sent to n{}", i + 1));
                c.step(i, Input::Request { id: next_id, request });
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
    // The five scripts issue 5 names, at least.
    check_scripts("clusterscripts", 5, run_script);
}
