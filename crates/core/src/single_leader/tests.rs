//! Single-leader replication between replicas in one process: memory engines, in-memory logs,
//! and a hand-driven network that can drop, duplicate and hold messages.

use super::{Input, Outbox, Output, ReplicaFiles, RequestId, Role, Settings, SingleLeader};
use crate::kv::{parse_command, Reply, Request};
use crate::node::PeerMessage;
use crate::replication::{Change, ReplogOptions};
use crate::single_leader::Message;
use crate::storage::{Engine, MemoryEngine};
use crate::version::NodeId;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The cluster's clock when it is built: every replica starts then.
const START_MS: u64 = 1_000;

/// A cluster of one leader (index 0) and followers, stepped by hand.
pub(super) struct Cluster {
    pub(super) nodes: Vec<SingleLeader<MemoryEngine>>,
    pub(super) ids: Vec<NodeId>,
    pub(super) now: u64,
    /// Messages in flight: (from, to, message).
    pub(super) net: VecDeque<(usize, usize, Message)>,
    pub(super) replies: BTreeMap<RequestId, Reply>,
    /// Nodes cut off: messages to and from them are dropped.
    pub(super) cut: BTreeSet<usize>,
    pub(super) next_id: RequestId,
    /// Deliver every message twice.
    duplicate: bool,
    /// Nodes whose fsyncs do not finish (`hold_fsync`): their batches are written out, their
    /// records shipped, but nothing more is durable and their held outputs wait, until
    /// `finish_fsync`.
    pub(super) fsync_held: BTreeMap<usize, Vec<Output>>,
}

fn request(line: &str) -> Request {
    let args: Vec<Bytes> = line.split(' ').map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
    parse_command(&args).expect("a known command").expect("valid arguments")
}

impl Cluster {
    pub(super) fn new(followers: usize, acks_needed: usize, options: ReplogOptions) -> Cluster {
        Cluster::with(followers, acks_needed, options, false, false)
    }

    /// A cluster with `auto_failover` on (election timeouts of 300..=600 ms).
    pub(super) fn failover(followers: usize, acks_needed: usize, options: ReplogOptions) -> Cluster {
        Cluster::with(followers, acks_needed, options, false, true)
    }

    pub(super) fn with(
        followers: usize,
        acks_needed: usize,
        options: ReplogOptions,
        forward_writes: bool,
        auto_failover: bool,
    ) -> Cluster {
        let ids: Vec<NodeId> = (1..=followers + 1).map(|i| NodeId::from_name(&format!("n{i}"))).collect();
        let nodes = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                let role = if i == 0 {
                    Role::Leader { followers: ids[1..].to_vec() }
                } else {
                    Role::Follower { leader: Some(ids[0]), leader_hint: "n1 at 127.0.0.1:7001".into() }
                };
                let mut settings = Settings::new(id, role);
                settings.common.peers = ids.iter().copied().filter(|&other| other != id).collect();
                settings.common.hints = ids
                    .iter()
                    .enumerate()
                    .map(|(j, &other)| (other, format!("n{} at 127.0.0.1:700{}", j + 1, j + 1)))
                    .collect();
                settings.auto_failover = auto_failover;
                settings.election_timeout_ms = 300;
                settings.common.seed = i as u64;
                settings.acks_needed = acks_needed;
                settings.acks_label = match acks_needed {
                    0 => "async".into(),
                    k if k == followers => "sync".into(),
                    k => format!("semi-sync:{k}"),
                };
                settings.ack_timeout_ms = 500;
                settings.resend_ms = 300;
                settings.ship_bytes_max = 256;
                settings.window_bytes_max = 4096;
                settings.snapshot_chunk_bytes_max = 200;
                settings.forward_writes = forward_writes;
                settings.forward_timeout_ms = 1_000;
                let files = ReplicaFiles::in_memory(options.clone());
                SingleLeader::replicated(MemoryEngine::new(), files, settings, START_MS).unwrap()
            })
            .collect();
        Cluster {
            nodes,
            ids,
            now: START_MS,
            net: VecDeque::new(),
            replies: BTreeMap::new(),
            cut: BTreeSet::new(),
            next_id: 0,
            duplicate: false,
            fsync_held: BTreeMap::new(),
        }
    }

    /// Steps node `i` with `input`, flushes, and routes every output; tells a leader its log
    /// is durable after the flush, as the runtime does.
    pub(super) fn step(&mut self, i: usize, input: Input) {
        let mut outbox = Outbox::default();
        self.nodes[i].step(self.now, input, &mut outbox).unwrap();
        if let Some(held) = self.fsync_held.get_mut(&i) {
            self.nodes[i].write_out(self.now, &mut outbox).unwrap();
            held.append(&mut outbox.after_flush);
            let now = std::mem::take(&mut outbox.now);
            self.route(i, now);
            return;
        }
        self.make_durable(i, outbox);
    }

    /// Flushes node `i`, tells it its log is durable through its end, as the runtime does,
    /// and routes what `outbox` holds then.
    fn make_durable(&mut self, i: usize, mut outbox: Outbox) {
        self.nodes[i].flush(self.now).unwrap();
        let (lsn, resets) = (self.nodes[i].last_lsn(), self.nodes[i].log_resets());
        self.nodes[i].step(self.now, Input::Durable { lsn, resets }, &mut outbox).unwrap();
        let outputs = outbox.drain_all();
        self.route(i, outputs);
    }

    /// From now on node `i`'s fsyncs do not finish (see `fsync_held`).
    pub(super) fn hold_fsync(&mut self, i: usize) {
        self.fsync_held.entry(i).or_default();
    }

    /// Node `i`'s held fsyncs finish: its log is durable through its end, what waited leaves,
    /// and its fsyncs finish at once again.
    pub(super) fn finish_fsync(&mut self, i: usize) {
        let held = self.fsync_held.remove(&i).unwrap_or_default();
        self.route(i, held);
        self.make_durable(i, Outbox::default());
    }

    /// Node `i` crashes with its fsyncs held and restarts: its log keeps only what was
    /// durable (the memory engine keeps every write, as pages that reached the disk would).
    pub(super) fn crash_losing_unsynced(&mut self, i: usize) {
        use crate::replication::ReplicationLog;
        self.fsync_held.remove(&i);
        let durable = self.nodes[i].durable_lsn();
        let settings = self.nodes[i].settings().clone();
        let placeholder = SingleLeader::new(MemoryEngine::new(), settings.common.node);
        let (engine, mut files) = std::mem::replace(&mut self.nodes[i], placeholder).into_parts();
        let old = &mut files.log;
        let base = old.first_lsn() - 1;
        let mut log = ReplicationLog::in_memory(old.options().clone());
        log.reset(base, old.epoch_at(base).expect("the base is in the log")).unwrap();
        let records = old.read(base, usize::MAX).unwrap().unwrap_or_default();
        for record in records.into_iter().take_while(|r| r.lsn <= durable) {
            log.append(record).unwrap();
        }
        files.log = log;
        self.nodes[i] = SingleLeader::replicated(engine, files, settings, self.now).unwrap();
    }

    /// Sends node `i`'s outputs: messages into the network, replies to their clients.
    fn route(&mut self, i: usize, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Reply { id, reply } => {
                    assert!(self.replies.insert(id, reply).is_none(), "one reply per request");
                }
                Output::Send { to, message: PeerMessage::SingleLeader(message) } => {
                    let to = self.ids.iter().position(|&id| id == to).expect("a known node");
                    if !self.cut.contains(&i) && !self.cut.contains(&to) {
                        if self.duplicate {
                            self.net.push_back((i, to, message.clone()));
                        }
                        self.net.push_back((i, to, message));
                    }
                }
                Output::Send { message, .. } => panic!("a single-leader node sent {message:?}"),
            }
        }
    }

    /// Delivers the vote request `vote` from node `from` to node `i` alone (nothing is
    /// routed) and returns whether `i` granted it; `i` must answer exactly once.
    pub(super) fn ask_vote(&mut self, i: usize, from: usize, vote: Message) -> bool {
        let mut outbox = Outbox::default();
        self.nodes[i].step(self.now, Input::Message { from: self.ids[from], message: vote }, &mut outbox).unwrap();
        let granted: Vec<bool> = outbox
            .drain_all()
            .into_iter()
            .filter_map(|o| match o {
                Output::Send { message: PeerMessage::SingleLeader(Message::VoteReply { granted, .. }), .. } => {
                    Some(granted)
                }
                _ => None,
            })
            .collect();
        assert_eq!(granted.len(), 1, "one answer to a vote request: {granted:?}");
        granted[0]
    }

    /// Sends a request to node `i`; returns its id.
    pub(super) fn send(&mut self, i: usize, line: &str) -> RequestId {
        self.next_id += 1;
        let id = self.next_id;
        self.step(i, Input::Request { id, request: request(line) });
        id
    }

    /// Delivers messages until none is in flight (bounded).
    pub(super) fn settle(&mut self) {
        for _ in 0..100_000 {
            let Some((from, to, message)) = self.net.pop_front() else { return };
            if self.cut.contains(&from) || self.cut.contains(&to) {
                continue;
            }
            let from = self.ids[from];
            self.step(to, Input::Message { from, message });
        }
        panic!("the network never went quiet");
    }

    /// Advances the clock by `ms` in ticks of 50 ms, settling after each.
    pub(super) fn run_for(&mut self, ms: u64) {
        for _ in 0..ms.div_ceil(50) {
            self.now += 50;
            for i in 0..self.nodes.len() {
                self.step(i, Input::Tick);
            }
            self.settle();
        }
    }

    pub(super) fn reply(&self, id: RequestId) -> Option<&Reply> {
        self.replies.get(&id)
    }

    /// Every key of node `i` with its record, tombstones included.
    pub(super) fn dump(&self, i: usize) -> Vec<(Bytes, Option<Bytes>)> {
        let engine = self.nodes[i].store().engine();
        engine
            .scan(std::ops::Bound::Unbounded, usize::MAX)
            .into_iter()
            .map(|(k, _)| {
                let record = engine.get(&k).unwrap().unwrap();
                (k, record.value)
            })
            .collect()
    }
}

#[test]
fn async_write_is_answered_at_once_and_reaches_every_follower() {
    let mut c = Cluster::new(2, 0, ReplogOptions::default());
    c.run_for(200); // heartbeats: the leader learns where each follower's log ends
    let id = c.send(0, "SET a 1");
    assert_eq!(c.reply(id), Some(&Reply::Ok), "async: answered once durable on the leader");
    c.settle();
    for i in 1..3 {
        let id = c.send(i, "GET a");
        assert_eq!(c.reply(id), Some(&Reply::Bulk(Bytes::from("1"))), "follower n{}", i + 1);
    }
    c.run_for(200);
    let status = c.nodes[0].status(c.now);
    assert_eq!(status.role, "leader");
    for f in &status.followers {
        assert_eq!((f.mode, f.acked_lsn, f.lag_records, f.lag_ms, f.up), ("stream", 1, 0, 0, true), "{f:?}");
    }
    let view = c.nodes[1].status(c.now).leader.unwrap();
    assert!(view.link_up && view.applied_lsn == 1 && view.lag_records == 0, "{view:?}");
}

#[test]
fn followers_refuse_writes_naming_the_leader_and_serve_reads() {
    let mut c = Cluster::new(1, 0, ReplogOptions::default());
    let id = c.send(1, "SET a 1");
    let Some(Reply::Error(text)) = c.reply(id) else { panic!("refused: {:?}", c.reply(id)) };
    assert!(text.starts_with("READONLY You can't write against a read only replica."), "{text}");
    assert!(text.contains("n1 at 127.0.0.1:7001"), "names the leader: {text}");
    let id = c.send(1, "WAIT 1 0");
    assert!(matches!(c.reply(id), Some(Reply::Error(t)) if t.contains("replica")));
    let id = c.send(1, "GET a");
    assert_eq!(c.reply(id), Some(&Reply::Nil));
}

#[test]
fn sync_write_waits_for_every_follower_then_fails_with_noreplicas_when_one_is_cut() {
    let mut c = Cluster::new(2, 2, ReplogOptions::default());
    c.run_for(200);
    let id = c.send(0, "SET a 1");
    assert_eq!(c.reply(id), None, "not answered before the followers acknowledge");
    c.settle();
    assert_eq!(c.reply(id), Some(&Reply::Ok), "answered once both have it");

    c.cut.insert(2);
    let id = c.send(0, "SET b 2");
    c.settle();
    assert_eq!(c.reply(id), None, "one follower is not enough");
    c.run_for(600);
    let Some(Reply::Error(text)) = c.reply(id) else { panic!("NOREPLICAS expected: {:?}", c.reply(id)) };
    assert!(text.starts_with("NOREPLICAS"), "{text}");
    assert!(text.contains("1 of the 2 followers"), "says how many have it: {text}");
    assert_eq!(c.nodes[0].status(c.now).noreplicas, 1);

    // The cut follower comes back and catches up; writes succeed again.
    c.cut.clear();
    c.run_for(2_000);
    let id = c.send(0, "SET c 3");
    c.settle();
    assert_eq!(c.reply(id), Some(&Reply::Ok));
    assert_eq!(c.dump(2), c.dump(0), "the returning follower has everything");
}

#[test]
fn a_changed_ack_timeout_applies_to_writes_that_start_waiting_after_it() {
    let mut c = Cluster::new(2, 2, ReplogOptions::default());
    c.run_for(200);
    c.cut.insert(2);
    let before = c.send(0, "SET a 1"); // waits under the 500 ms it was given
    c.nodes[0].set_timeouts(2_000, 7_000);
    assert_eq!((c.nodes[0].settings().ack_timeout_ms, c.nodes[0].settings().forward_timeout_ms), (2_000, 7_000));
    let after = c.send(0, "SET b 2");
    c.run_for(600);
    let Some(Reply::Error(text)) = c.reply(before) else { panic!("NOREPLICAS expected: {:?}", c.reply(before)) };
    assert!(text.contains("within 500 ms"), "the old deadline, named as given: {text}");
    assert_eq!(c.reply(after), None, "the new timeout is not up after 600 ms");
    c.run_for(1_500);
    let Some(Reply::Error(text)) = c.reply(after) else { panic!("NOREPLICAS expected: {:?}", c.reply(after)) };
    assert!(text.starts_with("NOREPLICAS") && text.contains("within 2000 ms"), "{text}");
}

#[test]
#[should_panic(expected = "timeouts must be positive")]
fn a_zero_timeout_is_a_broken_invariant() {
    let mut c = Cluster::new(1, 1, ReplogOptions::default());
    c.nodes[0].set_timeouts(0, 5_000);
}

#[test]
fn semi_sync_one_keeps_accepting_writes_with_one_follower_cut() {
    let mut c = Cluster::new(2, 1, ReplogOptions::default());
    c.run_for(200);
    c.cut.insert(2);
    let id = c.send(0, "SET a 1");
    c.settle();
    assert_eq!(c.reply(id), Some(&Reply::Ok));
    let id = c.send(0, "WAIT 2 100");
    c.settle();
    assert_eq!(c.reply(id), None, "WAIT blocks until its timeout");
    c.run_for(150);
    assert_eq!(c.reply(id), Some(&Reply::Int(1)), "WAIT answers how many have it");
}

#[test]
fn duplicated_messages_change_nothing() {
    let mut c = Cluster::new(2, 2, ReplogOptions::default());
    c.duplicate = true;
    c.run_for(200);
    for i in 0..20 {
        let id = c.send(0, &format!("INCR counter{}", i % 3));
        c.settle();
        assert!(matches!(c.reply(id), Some(Reply::Int(_))), "{:?}", c.reply(id));
    }
    c.run_for(200);
    assert_eq!(c.dump(1), c.dump(0));
    assert_eq!(c.dump(2), c.dump(0));
}

#[test]
fn a_follower_behind_the_retained_log_catches_up_through_a_snapshot() {
    let options = ReplogOptions { retain_bytes_max: 2048, segment_bytes_max: 512, ..ReplogOptions::default() };
    let mut c = Cluster::new(2, 0, options);
    c.run_for(200);
    c.cut.insert(2);
    for i in 0..300 {
        c.send(0, &format!("SET key{i:03} value{i}"));
        if i % 7 == 0 {
            c.send(0, &format!("DEL key{:03}", i / 2));
        }
        c.settle();
    }
    c.run_for(1_500); // past the link timeout: the cut follower no longer pins the log
    assert!(c.nodes[0].status(c.now).first_lsn > 1, "retention dropped the start of the log");
    c.cut.clear();
    c.run_for(3_000);
    let status = c.nodes[0].status(c.now);
    let f = status.followers.iter().find(|f| f.node == c.ids[2]).unwrap();
    assert_eq!(f.snapshots, 1, "one snapshot, not a loop of them: {f:?}");
    assert_eq!((f.mode, f.lag_records), ("stream", 0), "{f:?}");
    assert_eq!(c.dump(2), c.dump(0), "the follower matches the leader key for key");
    assert_eq!(c.dump(1), c.dump(0));
    // Writes after the snapshot stream as usual.
    c.send(0, "SET after snapshot");
    c.run_for(200);
    assert_eq!(c.dump(2), c.dump(0));
}

#[test]
fn lost_appends_are_shipped_again() {
    let mut c = Cluster::new(1, 1, ReplogOptions::default());
    c.run_for(200);
    let id = c.send(0, "SET a 1");
    c.net.clear(); // the Append is lost
    assert_eq!(c.reply(id), None);
    c.run_for(400);
    assert_eq!(c.reply(id), Some(&Reply::Ok), "resent after resend_ms and acknowledged");
}

#[test]
fn expiry_on_the_leader_reaches_followers_as_deletes() {
    let mut c = Cluster::new(1, 0, ReplogOptions::default());
    c.run_for(200);
    c.send(0, "SET a 1 PX 100");
    c.settle();
    c.run_for(300);
    assert_eq!(c.dump(1), c.dump(0));
    assert_eq!(c.dump(1), vec![(Bytes::from("a"), None)], "a tombstone on both");
}

#[test]
fn forwarded_writes_are_executed_by_the_leader_and_answered_after_its_acks() {
    let mut c = Cluster::with(2, 2, ReplogOptions::default(), true, false);
    c.run_for(200);
    let id = c.send(1, "SET a 1");
    assert_eq!(c.reply(id), None, "on its way to the leader");
    c.settle();
    assert_eq!(c.reply(id), Some(&Reply::Ok), "the leader's reply, after both followers acknowledged");
    let id = c.send(2, "INCR n");
    c.settle();
    assert_eq!(c.reply(id), Some(&Reply::Int(1)));
    assert_eq!(c.dump(1), c.dump(0));
    // Reads stay local; WAIT is still refused on a follower.
    let id = c.send(1, "GET a");
    assert_eq!(c.reply(id), Some(&Reply::Bulk(Bytes::from("1"))));

    // With the leader cut off, a forwarded write times out with an honest error.
    c.cut.insert(0);
    let id = c.send(1, "SET b 2");
    c.run_for(1_200);
    let Some(Reply::Error(text)) = c.reply(id) else { panic!("a timeout error: {:?}", c.reply(id)) };
    assert!(text.contains("may or may not have been applied"), "{text}");
}

#[test]
fn a_leader_that_lost_its_data_steps_down_rather_than_overwrite_a_follower() {
    let mut c = Cluster::new(1, 0, ReplogOptions::default());
    c.run_for(200);
    for i in 0..5 {
        c.send(0, &format!("SET k{i} v"));
        c.settle();
    }
    // The leader loses everything (a wiped data directory) and starts over in the same epoch.
    let ids = c.ids.clone();
    let mut settings = Settings::new(ids[0], Role::Leader { followers: vec![ids[1]] });
    settings.resend_ms = 300;
    c.nodes[0] =
        SingleLeader::replicated(MemoryEngine::new(), ReplicaFiles::in_memory(Default::default()), settings, c.now)
            .unwrap();
    c.run_for(300);
    let status = c.nodes[0].status(c.now);
    assert_eq!(status.role, "follower", "it stepped down: {status:?}");
    assert_eq!(c.dump(1).len(), 5, "the follower keeps its data");
    let id = c.send(0, "SET new v");
    assert!(matches!(c.reply(id), Some(Reply::Error(t)) if t.starts_with("READONLY")), "{:?}", c.reply(id));
    assert_eq!(c.dump(1).len(), 5);
}

#[test]
fn a_request_bigger_than_a_record_is_logged_as_several_and_replicated_whole() {
    let mut c = Cluster::new(1, 1, ReplogOptions::default());
    c.run_for(200);
    let big = "x".repeat(7 * 1024 * 1024);
    let before = c.nodes[0].last_lsn();
    let id = c.send(0, &format!("MSET a {big} b {big} c {big}"));
    c.settle();
    assert_eq!(c.reply(id), Some(&Reply::Ok));
    assert_eq!(c.nodes[0].last_lsn() - before, 2, "21 MiB of changes: two records under the 16 MiB bound");
    assert_eq!(c.dump(1), c.dump(0));
}

#[test]
fn failover_hands_over_to_the_named_follower_and_held_writes_reach_the_new_leader() {
    let mut c = Cluster::with(2, 1, ReplogOptions::default(), true, true);
    c.run_for(300);
    for i in 0..5 {
        let id = c.send(0, &format!("SET k{i} v{i}"));
        c.settle();
        assert_eq!(c.reply(id), Some(&Reply::Ok));
    }
    let id = c.send(0, "FAILOVER TO 127.0.0.1 7003");
    assert_eq!(c.reply(id), Some(&Reply::Ok), "answered at once, as Redis does");
    let held = c.send(0, "SET during handover");
    assert_eq!(c.reply(held), None, "a write waits while the leader hands over");
    c.run_for(1_000);
    assert!(c.nodes[2].is_leader(), "n3 leads: {:?}", c.nodes[2].status(c.now));
    assert_eq!(c.nodes[0].status(c.now).role, "follower");
    assert_eq!(c.nodes[2].status(c.now).epoch, 2);
    assert_eq!(c.reply(held), Some(&Reply::Ok), "the held write was forwarded to n3: a pause, not an error");
    c.run_for(200);
    assert_eq!(c.dump(0), c.dump(2), "nothing was lost or cut");
    assert_eq!(c.dump(1), c.dump(2));
    assert_eq!(c.nodes[0].status(c.now).rolled_back, 0);
}

#[test]
fn failover_without_forwarding_redirects_held_writes_and_refuses_what_it_cannot_do() {
    let mut c = Cluster::failover(2, 1, ReplogOptions::default());
    c.run_for(300);
    let refusals = [
        (1, "FAILOVER", "not valid when server is a replica"),
        (0, "FAILOVER TO 127.0.0.1 9999", "is not a replica"),
        (0, "FAILOVER ABORT", "No failover in progress"),
    ];
    for (node, line, want) in refusals {
        let id = c.send(node, line);
        assert!(matches!(c.reply(id), Some(Reply::Error(e)) if e.contains(want)), "{line}: {:?}", c.reply(id));
    }
    for (line, want) in [
        ("FAILOVER TO 127.0.0.1 7002 FORCE", "requires both a timeout and target"),
        ("FAILOVER ABORT TIMEOUT 10", "abort option can't have other options"),
        ("FAILOVER TIMEOUT 0", "must be greater than 0"),
        ("FAILOVER TO 127.0.0.1", "syntax error"),
    ] {
        let args: Vec<Bytes> = line.split(' ').map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
        let Some(Err(Reply::Error(e))) = parse_command(&args) else { panic!("{line} parsed") };
        assert!(e.contains(want), "{line}: {e}");
    }
    let id = c.send(0, "FAILOVER");
    assert_eq!(c.reply(id), Some(&Reply::Ok));
    let again = c.send(0, "FAILOVER");
    assert!(matches!(c.reply(again), Some(Reply::Error(e)) if e.contains("already in progress")));
    let held = c.send(0, "SET a 1");
    c.run_for(1_000);
    let leader = (1..3).find(|&i| c.nodes[i].is_leader()).expect("a follower took over");
    let Some(Reply::Error(text)) = c.reply(held) else { panic!("a redirect: {:?}", c.reply(held)) };
    assert!(text.starts_with("READONLY") && text.contains(&format!("n{}", leader + 1)), "{text}");
}

/// Restarts node `i` of `c` from its engine and files, as after a crash of the process.
pub(super) fn restart(c: &mut Cluster, i: usize) {
    // What waited on the old incarnation's fsync dies with it, and the new one's fsyncs finish.
    c.fsync_held.remove(&i);
    let settings = c.nodes[i].settings().clone();
    let placeholder = SingleLeader::new(MemoryEngine::new(), settings.common.node);
    let (engine, files) = std::mem::replace(&mut c.nodes[i], placeholder).into_parts();
    c.nodes[i] = SingleLeader::replicated(engine, files, settings, c.now).unwrap();
}

#[test]
fn without_auto_failover_nobody_stands_but_a_restarted_leader_resumes_and_a_deposed_one_does_not() {
    let mut c = Cluster::new(2, 1, ReplogOptions::default());
    c.run_for(300);
    c.cut.insert(0);
    c.run_for(2_000);
    assert!(c.nodes[0].is_leader(), "no step-down without auto_failover");
    assert!((1..3).all(|i| c.nodes[i].status(c.now).role == "follower" && c.nodes[i].status(c.now).epoch == 1));
    c.cut.clear();
    let id = c.send(0, "SET a 1");
    c.run_for(300);
    assert_eq!(c.reply(id), Some(&Reply::Ok));

    // The leader restarts: it comes back as a follower, asks to lead again, and does.
    restart(&mut c, 0);
    assert_eq!(c.nodes[0].status(c.now).role, "follower");
    c.run_for(1_500);
    assert!(c.nodes[0].is_leader(), "{:?}", c.nodes[0].status(c.now));
    assert_eq!(c.nodes[0].status(c.now).epoch, 2);

    // A FAILOVER moves the leader to n2; n1, restarted, stays a follower of it.
    let id = c.send(0, "FAILOVER TO 127.0.0.1 7002");
    assert_eq!(c.reply(id), Some(&Reply::Ok));
    c.run_for(500);
    assert!(c.nodes[1].is_leader());
    restart(&mut c, 0);
    c.run_for(1_500);
    assert!(c.nodes[1].is_leader() && !c.nodes[0].is_leader(), "{:?}", c.nodes[0].status(c.now));
    assert_eq!(c.dump(0), c.dump(1));
}

#[test]
fn a_follower_never_heard_from_lags_since_the_leader_started_not_since_the_clock_began() {
    let mut c = Cluster::new(2, 0, ReplogOptions::default());
    c.cut.insert(2);
    c.send(0, "SET a 1");
    c.run_for(500);
    let status = c.nodes[0].status(c.now);
    let f = status.followers.iter().find(|f| f.node == c.ids[2]).unwrap();
    assert!(f.lag_records > 0 && f.last_ack_ms_ago.is_none(), "{f:?}");
    assert!(f.lag_ms > 0 && f.lag_ms <= 500, "behind for as long as the leader ran (500 ms), not {} ms", f.lag_ms);
}

#[test]
fn a_node_that_emptied_its_log_still_votes_with_the_position_it_had() {
    let mut c = Cluster::failover(2, 0, ReplogOptions::default());
    c.run_for(300);
    for i in 0..5 {
        c.send(0, &format!("SET k{i} v"));
        c.settle();
    }
    // n1, cut off, logs a write only it has; n2 or n3 takes over and writes another.
    c.cut.insert(0);
    c.send(0, "SET x 1");
    c.run_for(1_500);
    let leader = (1..3).find(|&i| c.nodes[i].is_leader()).expect("a new leader");
    c.send(leader, "SET y 1");
    c.settle();
    let before = c.nodes[0].status(c.now);
    let held = (before.last_lsn, c.nodes[0].log_epoch_at(before.last_lsn).unwrap());
    // Heal, and deliver one message at a time until n1 has cut its log.
    c.cut.clear();
    for _ in 0..10_000 {
        if c.nodes[0].status(c.now).leader.is_some_and(|v| v.rebuilds == 1) {
            break;
        }
        let Some((from, to, message)) = c.net.pop_front() else {
            c.now += 50;
            for i in 0..3 {
                c.step(i, Input::Tick);
            }
            continue;
        };
        let from = c.ids[from];
        c.step(to, Input::Message { from, message });
    }
    assert_eq!(c.nodes[0].status(c.now).leader.unwrap().rebuilds, 1, "n1 cut its log");
    // A candidate one record behind the history n1 held (its records before the one it cut)
    // asks for its vote: refused, although n1's log is now (nearly) empty. The cut record
    // itself is not covered: no leader lacking it can have acknowledged it.
    assert!(c.nodes[0].last_lsn() < held.0 - 2, "n1's log is emptied: {:?}", c.nodes[0].status(c.now));
    assert!(c.nodes[0].behind_vote_floor(), "n1 does not stand meanwhile");
    let epoch = c.nodes[0].status(c.now).epoch + 1;
    let vote = Message::Vote { epoch, last_epoch: held.1, last_lsn: held.0 - 2, pre_vote: false, transfer: true };
    let granted = c.ask_vote(0, 2, vote);
    assert!(!granted, "the vote floor keeps n1 from electing a node missing what it held");
}

#[test]
fn a_leader_that_cannot_confirm_it_leads_fails_its_reads_after_the_ack_timeout() {
    let mut c = Cluster::new(2, 0, ReplogOptions::default());
    c.run_for(300);
    c.send(0, "SET a 1");
    c.settle();
    c.cut.insert(1);
    c.cut.insert(2);
    let id = c.send(0, "GET a");
    c.run_for(300);
    assert_eq!(c.reply(id), None, "held while no majority echoes (auto_failover off: no step-down)");
    c.run_for(300);
    let Some(Reply::Error(text)) = c.reply(id) else { panic!("an error: {:?}", c.reply(id)) };
    assert!(text.contains("could not confirm"), "{text}");
    c.cut.clear();
    let id = c.send(0, "GET a");
    c.run_for(200); // the next heartbeat round confirms it
    assert_eq!(c.reply(id), Some(&Reply::Bulk(Bytes::from("1"))));
}

#[test]
fn a_lowered_ack_timeout_fails_a_later_read_before_an_earlier_one() {
    let mut c = Cluster::new(2, 0, ReplogOptions::default());
    c.run_for(300);
    c.cut.insert(1);
    c.cut.insert(2);
    let first = c.send(0, "GET a"); // 500 ms
    c.nodes[0].set_timeouts(100, 5_100);
    let second = c.send(0, "GET a");
    c.run_for(150);
    let Some(Reply::Error(text)) = c.reply(second) else { panic!("an error: {:?}", c.reply(second)) };
    assert!(text.contains("could not confirm within 100 ms"), "{text}");
    assert_eq!(c.reply(first), None, "the earlier read keeps its own deadline");
    c.run_for(400);
    let Some(Reply::Error(text)) = c.reply(first) else { panic!("an error: {:?}", c.reply(first)) };
    assert!(text.contains("could not confirm within 500 ms"), "{text}");
}

#[test]
fn a_late_acknowledgement_about_a_log_the_follower_has_since_emptied_is_ignored() {
    let mut c = Cluster::new(1, 1, ReplogOptions::default());
    c.run_for(300);
    for i in 0..5 {
        c.send(0, &format!("SET k{i} v"));
        c.settle();
    }
    let acked = |c: &Cluster| c.nodes[0].status(c.now).followers[0].acked_lsn;
    assert_eq!(acked(&c), 5);
    let ack = |durable_lsn, matched_lsn, generation, reject| Message::Ack {
        epoch: 1,
        durable_lsn,
        matched_lsn,
        last_epoch: if durable_lsn > 0 { 1 } else { 0 },
        log_base: 0,
        round: 0,
        generation,
        reject,
        caught_up_at_ms: 0,
        snapshot: None,
    };
    // n2 emptied its log (a new generation) and says so; then an acknowledgement it sent
    // before, delayed in the network, arrives.
    let n2 = c.ids[1];
    let mut outbox = Outbox::default();
    c.nodes[0].step(c.now, Input::Message { from: n2, message: ack(0, 0, 1, true) }, &mut outbox).unwrap();
    c.nodes[0].step(c.now, Input::Message { from: n2, message: ack(5, 5, 0, false) }, &mut outbox).unwrap();
    assert_eq!(acked(&c), 0, "the late acknowledgement does not count n2 as holding records it dropped");
}

#[test]
fn a_snapshot_holding_writes_past_its_base_taints_the_store_until_the_log_holds_them() {
    use crate::replication::{Change, LogRecord};
    use crate::storage::Record;
    use crate::version::Version;
    let chunk = |epoch| Message::SnapshotChunk {
        epoch,
        attempt: 1,
        lsn: 5,
        lsn_epoch: 1,
        epochs: vec![(0, 0), (1, 1)],
        seq: 0,
        after: None,
        through: None,
        entries: vec![Change {
            key: Bytes::from("a"),
            record: Record { version: Version::default(), value: Some(Bytes::from("from 8")), expire_at_ms: None },
        }],
        damaged: Vec::new(),
        done: true,
        end: Some((8, 1)),
    };
    let append = |epoch, records_epoch| Message::Append {
        epoch,
        prev_lsn: 5,
        prev_epoch: 1,
        records: (6..=8).map(|lsn| LogRecord::whole(lsn, records_epoch, Vec::new())).collect(),
        leader_lsn: 8,
        sent_at_ms: 0,
    };
    let follower_view = |c: &Cluster| c.nodes[1].status(c.now).leader.unwrap();
    for (leader_epoch, records_epoch, kept) in [(1, 1, true), (2, 2, false)] {
        let mut c = Cluster::new(1, 0, ReplogOptions::default());
        let n1 = c.ids[0];
        let mut outbox = Outbox::default();
        c.nodes[1].step(c.now, Input::Message { from: n1, message: chunk(1) }, &mut outbox).unwrap();
        assert_eq!(c.nodes[1].last_lsn(), 5);
        let message = append(leader_epoch, records_epoch);
        c.nodes[1].step(c.now, Input::Message { from: n1, message }, &mut outbox).unwrap();
        let a = c.dump(1).into_iter().find(|(k, _)| k == "a").and_then(|(_, v)| v);
        if kept {
            assert_eq!(a, Some(Bytes::from("from 8")), "the log holds 8@e1: the snapshot's write stands");
            assert_eq!(follower_view(&c).rebuilds, 0);
        } else {
            assert_eq!(a, None, "a new history at 6..8: the snapshot's write past its base is gone");
            assert_eq!(follower_view(&c).rebuilds, 1);
        }
    }
}

#[test]
fn a_replica_that_crashed_while_emptying_itself_finishes_at_open() {
    let mut c = Cluster::new(1, 0, ReplogOptions::default());
    c.run_for(300);
    for i in 0..3 {
        c.send(0, &format!("SET k{i} v"));
        c.settle();
    }
    assert_eq!(c.dump(1).len(), 3);
    // n2 had started emptying itself (the rebuild flag is durable) when it crashed.
    let settings = c.nodes[1].settings().clone();
    let placeholder = SingleLeader::new(MemoryEngine::new(), settings.common.node);
    let (engine, mut files) = std::mem::replace(&mut c.nodes[1], placeholder).into_parts();
    files.votes.emptying_log(crate::single_leader::election::LogPosition { epoch: 1, lsn: 3 }).unwrap();
    c.nodes[1] = SingleLeader::replicated(engine, files, settings, c.now).unwrap();
    assert_eq!(c.nodes[1].last_lsn(), 0, "the log is emptied");
    assert!(c.dump(1).iter().all(|(_, v)| v.is_none()), "the store is emptied: {:?}", c.dump(1));
    c.run_for(1_000);
    assert_eq!(c.dump(1), c.dump(0), "and takes the leader's history again");
}

#[test]
fn a_write_held_by_a_handover_that_does_not_finish_fails_after_its_deadline() {
    let mut c = Cluster::failover(2, 1, ReplogOptions::default());
    c.run_for(300);
    c.cut.insert(2);
    let id = c.send(0, "SET before 1");
    c.settle();
    assert_eq!(c.reply(id), Some(&Reply::Ok), "semi-sync:1: n2's acknowledgement is enough; n3 lacks it");
    let id = c.send(0, "FAILOVER TO 127.0.0.1 7003");
    assert_eq!(c.reply(id), Some(&Reply::Ok));
    let held = c.send(0, "SET a 1");
    c.run_for(500);
    assert_eq!(c.reply(held), None, "held while n3, cut off, cannot catch up");
    c.run_for(700); // past forward_timeout_ms (1000 ms here)
    let Some(Reply::Error(text)) = c.reply(held) else { panic!("an error: {:?}", c.reply(held)) };
    assert!(text.contains("not applied"), "{text}");
    assert_eq!(c.nodes[0].status(c.now).failover_state, "waiting-for-sync", "the handover itself goes on");
}

/// Cuts the leader (n1) off, sends `SET a 1` to n2, which forwards it into the void, then
/// ticks only node `stander` until it leads (the others only answer messages, so it stands
/// first); returns the write's id. The forward timeout is far past the election, so an answer
/// in time can only come from the role change.
fn forward_then_elect(c: &mut Cluster, stander: usize) -> RequestId {
    c.run_for(300);
    c.nodes[1].set_timeouts(500, 60_000);
    c.cut.insert(0);
    let id = c.send(1, "SET a 1");
    let sent = c.now;
    while !c.nodes[stander].is_leader() {
        assert!(c.now - sent < 3_000, "no election: {:?}", c.nodes[stander].status(c.now));
        c.now += 50;
        c.step(stander, Input::Tick);
        c.settle();
    }
    id
}

#[test]
fn a_forwarded_write_fails_at_once_when_its_follower_becomes_leader() {
    let mut c = Cluster::with(2, 0, ReplogOptions::default(), true, true);
    let id = forward_then_elect(&mut c, 1);
    let Some(Reply::Error(text)) = c.reply(id) else { panic!("an error once n2 leads: {:?}", c.reply(id)) };
    assert!(
        text.contains("the leader (n1 at 127.0.0.1:7001) did not answer this forwarded write before this node")
            && text.contains("epoch 2")
            && text.ends_with("it may or may not have been applied"),
        "{text}"
    );
    // Writes to n2 now run there.
    let id = c.send(1, "SET b 2");
    assert_eq!(c.reply(id), Some(&Reply::Ok));
}

#[test]
fn a_forwarded_write_fails_at_once_when_its_follower_moves_to_another_leader() {
    let mut c = Cluster::with(2, 0, ReplogOptions::default(), true, true);
    let id = forward_then_elect(&mut c, 2);
    let Some(Reply::Error(text)) = c.reply(id) else { panic!("an error once n3 leads: {:?}", c.reply(id)) };
    assert!(text.contains("n1 at 127.0.0.1:7001") && text.contains("may or may not have been applied"), "{text}");
    c.settle();
    // n2 forwards to its new leader, which answers.
    let id = c.send(1, "SET b 2");
    c.settle();
    assert_eq!(c.reply(id), Some(&Reply::Ok));
    assert_eq!(c.dump(1), c.dump(2));
}

/// Sends `request` (not a parsed line) to node `i`; returns its id.
fn send_request(c: &mut Cluster, i: usize, request: Request) -> RequestId {
    c.next_id += 1;
    let id = c.next_id;
    c.step(i, Input::Request { id, request });
    id
}

/// DBSIZE on node `i`, which must answer at once (a follower).
fn db_size(c: &mut Cluster, i: usize) -> i64 {
    let id = send_request(c, i, Request::DbSize);
    match c.replies.remove(&id) {
        Some(Reply::Int(n)) => n,
        other => panic!("DBSIZE answered {other:?}"),
    }
}

#[test]
fn a_request_over_several_records_is_applied_whole_by_a_follower() {
    let mut c = Cluster::new(1, 0, ReplogOptions::default());
    c.run_for(200);
    let keys = 2 * super::RECORD_CHANGES_MAX + 5;
    let pairs = (0..keys).map(|i| (Bytes::from(format!("k{i}")), Bytes::from("v"))).collect();
    let id = send_request(&mut c, 0, Request::MSet { pairs, if_none_exist: false });
    assert_eq!(c.reply(id), Some(&Reply::Ok));
    assert_eq!(c.nodes[0].last_lsn(), 3, "three parts");
    // Deliver one message at a time; a reader on the follower sees none of the keys or all.
    let mut seen = BTreeSet::new();
    for _ in 0..1_000 {
        let Some((from, to, message)) = c.net.pop_front() else { break };
        let from = c.ids[from];
        c.step(to, Input::Message { from, message });
        let size = db_size(&mut c, 1);
        assert!(size == 0 || size == keys as i64, "a reader saw {size} of the {keys} keys");
        seen.insert(size);
    }
    assert_eq!(seen, BTreeSet::from([0, keys as i64]), "the follower went from none to all");
    let view = c.nodes[1].status(c.now).leader.unwrap();
    assert_eq!(view.applied_lsn, 3, "{view:?}");
}

#[test]
fn a_request_whose_later_parts_never_come_is_abandoned() {
    let mut c = Cluster::new(1, 0, ReplogOptions::default());
    c.run_for(200);
    let leader = c.ids[0];
    let epoch = c.nodes[1].status(c.now).epoch;
    let now = c.now;
    let change = |key: &str| crate::replication::Change {
        key: Bytes::copy_from_slice(key.as_bytes()),
        record: crate::storage::Record {
            version: crate::version::Version {
                ts: crate::version::Timestamp { millis: now, logical: 0 },
                node: leader,
            },
            value: Some(Bytes::from("v")),
            expire_at_ms: None,
        },
    };
    let part = |lsn, part, parts, key: &str| crate::replication::LogRecord {
        lsn,
        epoch,
        changes: vec![change(key)],
        part,
        parts,
        olds: Vec::new(),
        statement: None,
        physical: None,
    };
    let append = |records: Vec<crate::replication::LogRecord>, prev_lsn| Message::Append {
        epoch,
        prev_lsn,
        // The empty log's base is of epoch 0.
        prev_epoch: if prev_lsn == 0 { 0 } else { epoch },
        leader_lsn: prev_lsn + records.len() as u64,
        records,
        sent_at_ms: now,
    };
    // Two of three parts, then a new request: the first is never applied.
    let base = c.nodes[1].last_lsn();
    assert_eq!(base, 0, "nothing written yet");
    let message = append(vec![part(base + 1, 0, 3, "a"), part(base + 2, 1, 3, "b")], base);
    c.step(1, Input::Message { from: leader, message });
    assert_eq!(c.nodes[1].last_lsn(), base + 2, "both parts taken");
    assert_eq!(db_size(&mut c, 1), 0, "nothing applied before the last part");
    assert_eq!(c.nodes[1].status(c.now).leader.unwrap().applied_lsn, base);
    let message = append(vec![part(base + 3, 0, 1, "c")], base + 2);
    c.step(1, Input::Message { from: leader, message });
    let id = send_request(&mut c, 1, request("MGET a b c"));
    let want = Reply::Array(vec![Reply::Nil, Reply::Nil, Reply::Bulk(Bytes::from("v"))]);
    assert_eq!(c.reply(id), Some(&want), "the abandoned request's keys never appear");
    assert_eq!(c.nodes[1].status(c.now).leader.unwrap().applied_lsn, base + 3);
}

#[test]
fn a_transaction_is_one_request_of_the_log_and_reaches_followers_whole() {
    let mut c = Cluster::new(1, 1, ReplogOptions::default());
    c.run_for(200);
    let exec = Request::Exec {
        requests: vec![request("SET a 1"), request("INCR a"), request("SET b 2").in_db(3), request("GET a")],
        watched: Vec::new(),
    };
    let id = send_request(&mut c, 0, exec);
    c.settle();
    let want = Reply::Array(vec![Reply::Ok, Reply::Int(2), Reply::Ok, Reply::Bulk(Bytes::from("2"))]);
    assert_eq!(c.reply(id), Some(&want));
    assert_eq!(c.nodes[0].last_lsn(), 1, "one record for the whole transaction");
    let id = send_request(&mut c, 1, request("GET b").in_db(3));
    assert_eq!(c.reply(id), Some(&Reply::Bulk(Bytes::from("2"))), "database 3 on the follower");
    assert_eq!(c.nodes[1].keyspace(), c.nodes[0].keyspace(), "the follower counts its databases as the leader");
    assert_eq!(c.nodes[1].keyspace().len(), 2);
    // A transaction with writes is refused by a follower as a write.
    let id = send_request(&mut c, 1, Request::Exec { requests: vec![request("SET z 1")], watched: Vec::new() });
    assert!(matches!(c.reply(id), Some(Reply::Error(e)) if e.starts_with("READONLY")), "{:?}", c.reply(id));
}

#[test]
fn recovery_applies_no_part_of_a_request_the_log_holds_only_some_parts_of() {
    let mut c = Cluster::new(1, 0, ReplogOptions::default());
    c.run_for(200);
    let (leader, now) = (c.ids[0], c.now);
    let epoch = c.nodes[1].status(c.now).epoch;
    let change = |key: &str, logical| crate::replication::Change {
        key: Bytes::copy_from_slice(key.as_bytes()),
        record: crate::storage::Record {
            version: crate::version::Version { ts: crate::version::Timestamp { millis: now, logical }, node: leader },
            value: Some(Bytes::from("v")),
            expire_at_ms: None,
        },
    };
    let records = vec![
        crate::replication::LogRecord {
            lsn: 1,
            epoch,
            changes: vec![change("a", 0)],
            part: 0,
            parts: 3,
            olds: Vec::new(),
            statement: None,
            physical: None,
        },
        crate::replication::LogRecord {
            lsn: 2,
            epoch,
            changes: vec![change("b", 1)],
            part: 1,
            parts: 3,
            olds: Vec::new(),
            statement: None,
            physical: None,
        },
    ];
    let message = Message::Append { epoch, prev_lsn: 0, prev_epoch: 0, records, leader_lsn: 3, sent_at_ms: now };
    c.step(1, Input::Message { from: leader, message });
    assert_eq!(c.nodes[1].last_lsn(), 2);
    // The engine holds the whole request, as an old leader's would after a crash that lost
    // the log's last part.
    let settings = c.nodes[1].settings().clone();
    let placeholder = SingleLeader::new(MemoryEngine::new(), settings.common.node);
    let (mut engine, files) = std::mem::replace(&mut c.nodes[1], placeholder).into_parts();
    for (i, key) in ["a", "b", "c"].into_iter().enumerate() {
        engine.put(Bytes::from(key), change(key, i as u32).record).unwrap();
    }
    c.nodes[1] = SingleLeader::replicated(engine, files, settings, c.now).unwrap();
    assert_eq!(c.nodes[1].last_lsn(), 2, "the log keeps its parts");
    let id = send_request(&mut c, 1, request("MGET a b c"));
    let want = Reply::Array(vec![Reply::Nil, Reply::Nil, Reply::Nil]);
    assert_eq!(c.reply(id), Some(&want), "no part of the open request is applied, from the log or the engine");
}

#[test]
fn a_follower_forwards_a_whole_transaction_and_its_watch_holds_across_nodes() {
    let mut c = Cluster::with(1, 1, ReplogOptions::default(), true, false);
    c.run_for(200);
    c.send(0, "SET k 1");
    c.settle();
    // WATCH on the follower, EXEC forwarded to the leader: versions are the same everywhere.
    let watch = send_request(&mut c, 1, request("WATCH k"));
    let Some(Reply::Watched(watched)) = c.replies.remove(&watch) else { panic!("{:?}", c.reply(watch)) };
    let exec = |watched: Vec<crate::kv::Watched>| Request::Exec {
        requests: vec![request("INCR k"), request("SET other 1")],
        watched,
    };
    let id = send_request(&mut c, 1, exec(watched.clone()));
    c.settle();
    assert_eq!(c.reply(id), Some(&Reply::Array(vec![Reply::Int(2), Reply::Ok])), "forwarded and executed");
    // The same WATCH is stale now: the leader refuses the next EXEC that carries it.
    let id = send_request(&mut c, 1, exec(watched));
    c.settle();
    assert_eq!(c.reply(id), Some(&Reply::NullArray));
    let id = send_request(&mut c, 1, request("GET k"));
    assert_eq!(c.reply(id), Some(&Reply::Bulk(Bytes::from("2"))), "the aborted transaction changed nothing");
}

#[test]
fn follower_retention_keeps_the_parts_of_a_request_it_has_yet_to_apply() {
    // Segments and retention far smaller than the request: the follower's ticks would delete
    // its first parts before the last one comes.
    let small = ReplogOptions { segment_bytes_max: 64 * 1024, retain_bytes_max: 64 * 1024, ..ReplogOptions::default() };
    let mut c = Cluster::new(1, 0, small);
    c.run_for(200);
    let keys = 2 * super::RECORD_CHANGES_MAX + 5;
    let pairs = (0..keys).map(|i| (Bytes::from(format!("k{i}")), Bytes::from("v"))).collect();
    send_request(&mut c, 0, Request::MSet { pairs, if_none_exist: false });
    for _ in 0..1_000 {
        let Some((from, to, message)) = c.net.pop_front() else { break };
        let from = c.ids[from];
        c.step(to, Input::Message { from, message });
        c.step(1, Input::Tick);
        let size = db_size(&mut c, 1);
        assert!(size == 0 || size == keys as i64, "the follower holds {size} of the {keys} keys");
    }
    assert_eq!(db_size(&mut c, 1), keys as i64);
}

#[test]
fn keys_fit_every_database_and_a_long_one_is_refused_not_fatal() {
    let mut replica = SingleLeader::new(MemoryEngine::new(), NodeId(1));
    let mut run = |request: Request| {
        let mut outbox = Outbox::default();
        replica.step(START_MS, Input::Request { id: 1, request }, &mut outbox).expect("never a node failure");
        let Some(Output::Reply { reply, .. }) = outbox.drain_all().pop() else { panic!("a reply") };
        reply
    };
    let longest = Bytes::from(vec![b'k'; crate::kv::CLIENT_KEY_BYTES_MAX]);
    let set = |key: &Bytes| request(&format!("SET {} v", String::from_utf8_lossy(key)));
    assert_eq!(run(set(&longest)), Reply::Ok);
    assert_eq!(run(Request::Move { key: longest.clone(), db: 1 }), Reply::Int(1), "it fits database 1");
    assert_eq!(run(set(&longest).in_db(2)), Reply::Ok);
    let mut nul = longest.to_vec();
    nul[0] = 0;
    let nul = Request::Set {
        key: Bytes::from(nul),
        value: Bytes::from("v"),
        condition: crate::kv::SetCondition::Always,
        get: false,
        expiry: crate::kv::Expiry::Clear,
    };
    assert_eq!(run(nul), Reply::Ok, "a key starting with NUL, escaped in database 0");
    let longer = Bytes::from(vec![b'k'; crate::kv::CLIENT_KEY_BYTES_MAX + 1]);
    for request in [set(&longer), Request::Get { key: longer.clone() }, Request::Move { key: longer.clone(), db: 1 }] {
        let Reply::Error(e) = run(request) else { panic!("refused") };
        assert!(e.contains("over the limit of 65534 bytes"), "{e}");
    }
}

#[test]
fn per_database_counts_follow_every_write_and_swap() {
    let mut replica = SingleLeader::new(MemoryEngine::new(), NodeId(1));
    let mut now = START_MS;
    let run = |replica: &mut SingleLeader<MemoryEngine>, line: &str, db: u32, now: u64| {
        let mut outbox = Outbox::default();
        replica.step(now, Input::Request { id: 1, request: request(line).in_db(db) }, &mut outbox).unwrap();
    };
    let script: &[(&str, u32)] = &[
        ("SET a 1", 0),
        ("SET b 1 PX 100", 0),
        ("SET a 1", 1),
        ("SET b 1 PX 100", 1),
        ("SET c 1", 1),
        ("MSET x 1 y 2 z 3", 3),
        ("DEL c", 1),
        ("SWAPDB 0 3", 0),
        ("MOVE a 2", 1),
        ("COPY x a DB 2", 0),
        ("RENAME y w", 0),
        ("SET b 2", 1),
        ("FLUSHDB", 2),
        ("SWAPDB 1 2", 0),
        ("PEXPIRE x 100", 0),
    ];
    for &(line, db) in script {
        run(&mut replica, line, db, now);
        // The counts against a walk of each database.
        let mut want = Vec::new();
        for db in 0..16u32 {
            let mut outbox = Outbox::default();
            let keys = Request::Keys { pattern: Bytes::from("*") }.in_db(db);
            replica.step(now, Input::Request { id: 2, request: keys }, &mut outbox).unwrap();
            let Some(Output::Reply { reply: Reply::Array(found), .. }) = outbox.drain_all().pop() else { panic!() };
            if !found.is_empty() {
                want.push((db, found.len() as u64));
            }
        }
        let got: Vec<(u32, u64)> = replica.keyspace().iter().map(|d| (d.db, d.keys)).collect();
        assert_eq!(got, want, "after {line} in db {db}");
    }
    // Expiry deletes: the counts follow the tick's deletes.
    now += 1_000;
    replica.step(now, Input::Tick, &mut Outbox::default()).unwrap();
    let expires: u64 = replica.keyspace().iter().map(|d| d.expires).sum();
    assert_eq!(expires, 0, "{:?}", replica.keyspace());
    assert_eq!(replica.keyspace().iter().map(|d| d.keys).sum::<u64>(), replica.stats().keys - 1, "the map record");
}

#[test]
fn a_write_forwarded_during_a_handover_is_refused_as_not_applied_and_never_applied() {
    let mut c = Cluster::with(2, 1, ReplogOptions::default(), true, true);
    c.run_for(300);
    let id = c.send(0, "FAILOVER TO 127.0.0.1 7003");
    assert_eq!(c.reply(id), Some(&Reply::Ok));
    // n2 forwards a write to n1, which is handing over to n3.
    let forwarded = c.send(1, "SET forwarded 1");
    c.run_for(1_000);
    assert!(c.nodes[2].is_leader(), "n3 leads: {:?}", c.nodes[2].status(c.now));
    // n2 may move to epoch 2 before n1's refusal reaches it ("may or may not"); either way it
    // is an error, and the write must then never be applied by anyone.
    let Some(Reply::Error(text)) = c.reply(forwarded) else { panic!("an error: {:?}", c.reply(forwarded)) };
    assert!(text.contains("not applied") || text.contains("may or may not"), "{text}");
    c.run_for(300);
    for i in 0..3 {
        let id = c.send(i, "GET forwarded");
        c.run_for(100); // a leader's read waits for its heartbeat round
        assert_eq!(c.reply(id), Some(&Reply::Nil), "n{} never applied it", i + 1);
    }
}

#[test]
fn a_durable_notice_from_before_a_reset_vouches_for_nothing_after_it() {
    use crate::replication::LogRecord;
    let mut c = Cluster::new(1, 1, ReplogOptions::default());
    c.run_for(200);
    for i in 0..5 {
        c.send(0, &format!("SET k{i} v"));
        c.settle();
    }
    let f = &mut c.nodes[1];
    // A batch through lsn 5 is written out; its fsync is still running when a cut empties the
    // log and the leader's history starts again, two records of which arrive, not yet durable.
    let (lsn, resets) = (f.last_lsn(), f.log_resets());
    assert!(lsn >= 5, "the follower holds the writes: {lsn}");
    f.log.reset(0, 0).unwrap();
    for lsn in 1..=2 {
        f.log.append(LogRecord::whole(lsn, 1, Vec::new())).unwrap();
    }
    assert_eq!(f.durable_lsn(), 0, "a reset is durable at its base, and nothing after it is yet");
    let mut outbox = Outbox::default();
    f.step(c.now, Input::Durable { lsn, resets }, &mut outbox).unwrap();
    assert_eq!(f.durable_lsn(), 0, "the stale notice names records the reset discarded");
    f.step(c.now, Input::Durable { lsn: 2, resets: f.log_resets() }, &mut outbox).unwrap();
    assert_eq!(f.durable_lsn(), 2, "a notice of the log as it is now counts");
}

/// The reply to `GET key` on node `i`.
fn get(c: &mut Cluster, i: usize, key: &str) -> Option<Reply> {
    let id = c.send(i, &format!("GET {key}"));
    c.settle();
    c.reply(id).cloned()
}

#[test]
fn a_damaged_follower_takes_the_damaged_keys_back_from_its_leader() {
    let mut c = Cluster::new(2, 1, ReplogOptions::default());
    c.run_for(200);
    for (key, value) in [("a", "1"), ("b", "2")] {
        let id = c.send(0, &format!("SET {key} {value}"));
        c.settle();
        assert_eq!(c.reply(id), Some(&Reply::Ok));
    }
    c.nodes[1].store.engine_mut().damage(b"a");
    let Some(Reply::Error(text)) = get(&mut c, 1, "a") else { panic!("a damaged key is refused") };
    assert!(text.starts_with("DAMAGED") && text.contains("'a'"), "{text}");
    assert_eq!(get(&mut c, 1, "b"), Some(Reply::Bulk(Bytes::from("2"))), "the others are served");
    let status = c.nodes[1].status(c.now);
    assert_eq!((status.damaged_keys, status.damaged[0].key.as_str()), (1, "a"), "degraded: {status:?}");
    c.run_for(500);
    assert_eq!(get(&mut c, 1, "a"), Some(Reply::Bulk(Bytes::from("1"))), "repaired from the leader");
    assert_eq!(c.nodes[1].status(c.now).damaged_keys, 0, "healthy again");
    assert_eq!(c.dump(1), c.dump(0));
    // A later write to the key reaches it as usual.
    let id = c.send(0, "SET a 3");
    c.settle();
    assert_eq!(c.reply(id), Some(&Reply::Ok));
    assert_eq!(get(&mut c, 1, "a"), Some(Reply::Bulk(Bytes::from("3"))));
}

#[test]
fn a_repair_reply_from_past_the_followers_log_waits_for_it_and_never_goes_over_newer_writes() {
    let mut c = Cluster::new(1, 0, ReplogOptions::default());
    c.run_for(200);
    let id = c.send(0, "SET a 1");
    c.settle();
    assert_eq!(c.reply(id), Some(&Reply::Ok));
    c.nodes[1].store.engine_mut().damage(b"a");
    assert!(matches!(get(&mut c, 1, "a"), Some(Reply::Error(_))));
    // The leader's reply leaves before the records up to its lsn reach the follower (it goes
    // with the batch that read them): kept, and taken once the log gets there.
    let leader = c.ids[0];
    let lsn = c.nodes[1].last_lsn() + 2;
    let entries = vec![(Bytes::from("a"), c.nodes[0].store.engine().get(b"a").unwrap())];
    c.nodes[1].repair_reply(c.now, leader, lsn, entries).unwrap();
    assert_eq!(c.nodes[1].status(c.now).damaged_keys, 1, "not taken: the follower is behind the reply");
    for line in ["SET x 1", "SET y 2"] {
        c.send(0, line);
        c.settle();
    }
    assert_eq!(c.nodes[1].status(c.now).damaged_keys, 0, "taken once the log matched through its lsn");
    assert_eq!(get(&mut c, 1, "a"), Some(Reply::Bulk(Bytes::from("1"))));
    // A key rewritten since it was damaged is not listed any more: a reply does not touch it.
    c.nodes[1].store.engine_mut().damage(b"a");
    assert!(matches!(get(&mut c, 1, "a"), Some(Reply::Error(_))));
    c.nodes[1].store.apply(Change { key: Bytes::from("a"), record: record("9") }).unwrap();
    let lsn = c.nodes[1].last_lsn();
    c.nodes[1].repair_reply(c.now, leader, lsn, vec![(Bytes::from("a"), Some(record("old")))]).unwrap();
    assert_eq!(get(&mut c, 1, "a"), Some(Reply::Bulk(Bytes::from("9"))));
}

#[test]
fn a_repair_reply_holds_about_a_snapshot_chunk_of_values_and_the_rest_follow() {
    let mut c = Cluster::new(1, 0, ReplogOptions::default());
    c.run_for(200);
    let big = "v".repeat(300);
    for key in ["a", "b", "c"] {
        c.send(0, &format!("SET {key} {big}"));
        c.settle();
    }
    let mut outbox = Outbox::default();
    let keys = ["a", "b", "c"].map(Bytes::from).to_vec();
    let follower = c.ids[1];
    c.nodes[0].repair_request(c.now, follower, keys, &mut outbox).unwrap();
    let Some(Output::Send { message: PeerMessage::SingleLeader(Message::RepairReply { entries, .. }), .. }) =
        outbox.after_flush.first()
    else {
        panic!("a reply: {outbox:?}")
    };
    assert_eq!(entries.len(), 1, "one value is over the 200-byte budget: the rest wait");
    for key in ["a", "b", "c"] {
        c.nodes[1].store.engine_mut().damage(key.as_bytes());
        assert!(matches!(get(&mut c, 1, key), Some(Reply::Error(_))));
    }
    c.run_for(2_000);
    assert_eq!(c.nodes[1].status(c.now).damaged_keys, 0, "every key repaired, a reply at a time");
    assert_eq!(c.dump(1), c.dump(0));
}

#[test]
fn a_damaged_leader_hands_over_only_to_a_healthy_follower_and_stays_when_there_is_none() {
    // n2 is damaged too (it asks for repairs): n1 hands over to n3.
    let mut c = Cluster::with(2, 1, ReplogOptions::default(), false, true);
    c.run_for(300);
    for key in ["a", "b"] {
        c.send(0, &format!("SET {key} 1"));
        c.settle();
    }
    c.nodes[0].store.engine_mut().damage(b"a");
    c.nodes[1].store.engine_mut().damage(b"b");
    assert!(matches!(get(&mut c, 1, "b"), Some(Reply::Error(_))));
    c.run_for(500); // n2 asks n1 for b
    assert!(matches!(get(&mut c, 0, "a"), Some(Reply::Error(_))));
    c.run_for(3_000);
    assert!(c.nodes[2].is_leader(), "the healthy follower leads: {:?}", c.nodes[2].status(c.now));
    c.run_for(1_000);
    for i in 0..2 {
        assert_eq!(c.nodes[i].status(c.now).damaged_keys, 0, "n{} repaired from n3", i + 1);
    }
    assert_eq!(c.dump(0), c.dump(2));
    assert_eq!(c.dump(1), c.dump(2));

    // Two nodes, both damaged: the leader keeps leading (no handover back and forth).
    let mut c = Cluster::with(1, 1, ReplogOptions::default(), false, true);
    c.run_for(300);
    c.send(0, "SET k 1");
    c.settle();
    for i in 0..2 {
        c.nodes[i].store.engine_mut().damage(b"k");
        assert!(matches!(get(&mut c, i, "k"), Some(Reply::Error(_))));
    }
    c.run_for(30_000);
    assert!(c.nodes[0].is_leader(), "{:?}", c.nodes[0].status(c.now));
    assert_eq!(c.nodes[0].status(c.now).epoch, 1, "no handover back and forth");
    assert_eq!(c.nodes[1].status(c.now).damaged_keys, 1, "nobody has k whole");
}

#[test]
fn a_snapshot_leaves_out_a_key_damaged_on_the_leader_and_the_follower_refuses_it() {
    let options = ReplogOptions { retain_bytes_max: 2048, segment_bytes_max: 512, ..ReplogOptions::default() };
    let mut c = Cluster::new(2, 0, options);
    c.run_for(200);
    c.cut.insert(2);
    for i in 0..300 {
        c.send(0, &format!("SET key{i:03} value{i}"));
        c.settle();
    }
    c.run_for(1_500);
    assert!(c.nodes[0].status(c.now).first_lsn > 1, "retention dropped the start of the log");
    c.nodes[0].store.engine_mut().damage(b"key007");
    c.cut.clear();
    // n3 takes a snapshot without key007 (damaged on n1), and refuses it rather than serve it
    // as missing; n1 then hands over to n2, which holds it whole, and n1 and n3 take it back.
    let mut refused = false;
    for _ in 0..100 {
        c.run_for(50);
        match get(&mut c, 2, "key007") {
            Some(Reply::Error(text)) => {
                assert!(text.starts_with("DAMAGED"), "{text}");
                refused = true;
            }
            other => assert_eq!(other, Some(Reply::Bulk(Bytes::from("value7"))), "never served as missing"),
        }
    }
    assert!(refused, "n3 refused the key it did not get whole");
    assert!(c.nodes[1].is_leader(), "n1 handed over to n2: {:?}", c.nodes[1].status(c.now));
    for i in 0..3 {
        assert_eq!(c.nodes[i].status(c.now).damaged_keys, 0, "n{} repaired", i + 1);
    }
    assert_eq!(c.dump(0), c.dump(1));
    assert_eq!(c.dump(2), c.dump(1));
}

/// A record of `value` with the default version.
fn record(value: &str) -> crate::storage::Record {
    crate::storage::Record {
        version: Default::default(),
        value: Some(Bytes::from(value.to_string())),
        expire_at_ms: None,
    }
}

#[test]
fn a_damaged_leader_hands_over_then_repairs_from_the_new_leader() {
    let mut c = Cluster::with(2, 1, ReplogOptions::default(), false, true);
    c.run_for(300);
    for (key, value) in [("a", "1"), ("b", "2")] {
        let id = c.send(0, &format!("SET {key} {value}"));
        c.settle();
        assert_eq!(c.reply(id), Some(&Reply::Ok));
    }
    c.nodes[0].store.engine_mut().damage(b"a");
    assert!(matches!(get(&mut c, 0, "a"), Some(Reply::Error(t)) if t.starts_with("DAMAGED")));
    c.run_for(2_000);
    assert!(!c.nodes[0].is_leader(), "the damaged leader handed over: {:?}", c.nodes[0].status(c.now));
    let new = (1..3).find(|&i| c.nodes[i].is_leader()).expect("a follower leads");
    assert_eq!(c.nodes[0].status(c.now).damaged_keys, 0, "repaired as a follower of n{}", new + 1);
    assert_eq!(get(&mut c, 0, "a"), Some(Reply::Bulk(Bytes::from("1"))));
    assert_eq!(c.dump(0), c.dump(new));
    assert_eq!(c.nodes[0].status(c.now).rolled_back, 0, "a handover cuts nothing");
}

#[test]
fn a_damaged_record_the_engine_kept_past_the_log_is_listed_at_open_not_a_failed_start() {
    use crate::replication::{LogRecord, ReplicationLog};
    use crate::storage::Record;
    use crate::version::{Timestamp, Version};
    // The engine kept two writes the log lost in a crash; one of them is damaged on disk.
    let (n1, n2) = (NodeId::from_name("n1"), NodeId::from_name("n2"));
    let mut engine = MemoryEngine::new();
    for key in ["a", "b"] {
        let version = Version { ts: Timestamp { millis: 5, logical: 0 }, node: n1 };
        engine.put(Bytes::from(key), Record { version, value: Some(Bytes::from("v")), expire_at_ms: None }).unwrap();
    }
    engine.damage(b"a");
    let mut log = ReplicationLog::in_memory(ReplogOptions::default());
    log.append(LogRecord::whole(1, 1, Vec::new())).unwrap();
    let mut settings = Settings::new(n1, Role::Leader { followers: vec![n2] });
    settings.common.peers = vec![n2];
    let replica = SingleLeader::replicated(engine, ReplicaFiles::with_log(log), settings, START_MS).unwrap();
    assert_eq!(replica.status(START_MS).damaged_keys, 1, "listed, and b logged again");
    assert_eq!(replica.last_lsn(), 2, "b's record is logged again, a's is not");
}

#[test]
fn a_follower_holding_the_very_record_the_leader_has_damaged_keeps_it_whole() {
    let options = ReplogOptions { retain_bytes_max: 2048, segment_bytes_max: 512, ..ReplogOptions::default() };
    let mut c = Cluster::new(2, 0, options);
    c.run_for(200);
    c.send(0, "SET kept value");
    c.run_for(200);
    c.cut.insert(2);
    for i in 0..300 {
        c.send(0, &format!("SET key{i:03} value{i}"));
        c.settle();
    }
    c.run_for(1_500);
    c.nodes[0].store.engine_mut().damage(b"kept");
    c.cut.clear();
    for _ in 0..60 {
        c.run_for(50);
        assert_eq!(get(&mut c, 2, "kept"), Some(Reply::Bulk(Bytes::from("value"))), "its own record, whole");
    }
    assert_eq!(c.nodes[2].status(c.now).damaged_keys, 0, "not listed: it has the record");
}

#[test]
fn a_key_listed_without_a_record_is_named_in_the_snapshot_chunk_that_covers_it() {
    let mut store = crate::kv::Store::new(MemoryEngine::new(), NodeId(1));
    for key in ["a", "c"] {
        let record =
            crate::storage::Record { version: Default::default(), value: Some(Bytes::from("v")), expire_at_ms: None };
        store.apply(Change { key: Bytes::from(key), record }).unwrap();
    }
    let damage = crate::kv::Damage { path: "(the leader's copy)".into(), offset: 0, reason: "left out".into() };
    store.list_damaged(&Bytes::from("b"), damage);
    let mut found = Vec::new();
    let (entries, damaged, _, done) = super::leader::snapshot_chunk(&store, None, 1 << 20, &mut found).unwrap();
    assert!(done);
    assert_eq!(entries.iter().map(|c| c.key.clone()).collect::<Vec<_>>(), [Bytes::from("a"), Bytes::from("c")]);
    assert_eq!(damaged, [(Bytes::from("b"), None)], "named, so the next follower refuses it too");
}

#[test]
fn a_replicating_node_fsyncs_only_its_log_per_batch_and_its_engine_before_the_log_drops_records() {
    use crate::replication::ReplicationLog;
    use crate::storage::{LogEngine, LogOptions};
    let dir = tempfile::tempdir().unwrap();
    let engine = LogEngine::open(&dir.path().join("engine"), LogOptions::default()).unwrap();
    // n2 never answers, so no record is held by a majority: with no room for those, the log
    // drops them as it would replicated ones.
    let options = ReplogOptions {
        retain_bytes_max: 2048,
        segment_bytes_max: 512,
        unreplicated_bytes_max: 0,
        ..ReplogOptions::default()
    };
    let log = ReplicationLog::open(&dir.path().join("log"), options).unwrap();
    let (n1, n2) = (NodeId::from_name("n1"), NodeId::from_name("n2"));
    let mut settings = Settings::new(n1, Role::Leader { followers: vec![n2] });
    settings.common.peers = vec![n2];
    let mut replica = SingleLeader::replicated(engine, ReplicaFiles::with_log(log), settings, START_MS).unwrap();
    assert!(replica.is_leader());
    let mut outbox = Outbox::default();
    let mut now = START_MS;
    let mut opened = 0;
    for i in 0..40 {
        let request = request(&format!("SET key{i:02} {}", "v".repeat(100)));
        replica.step(now, Input::Request { id: i + 1, request }, &mut outbox).unwrap();
        let written = replica.write_out(now, &mut outbox).unwrap();
        assert_eq!(written.syncs.len(), 1, "batch {i}: the log's fsync alone");
        for sync in written.syncs {
            sync.sync().unwrap();
        }
        if i == 0 {
            // Its files created, and what it held fsynced once as it starts its SYNCED record.
            opened = replica.stats().fsyncs;
        }
    }
    assert_eq!(replica.stats().fsyncs, opened, "the engine was fsynced per batch");
    assert!(replica.log.over_retention());
    // Past the start's wait for followers, the log drops segments at a tick: the engine is
    // fsynced first.
    now += 5_000;
    replica.step(now, Input::Tick, &mut outbox).unwrap();
    assert!(replica.log.stats().dropped_segments > 0, "the log dropped nothing");
    assert_eq!(
        replica.stats().fsyncs,
        opened + 2,
        "the engine (and its SYNCED record) not fsynced before the log dropped records"
    );
    // Flushed (at shutdown), the engine is fsynced whatever its policy's interval.
    let options = LogOptions { fsync: crate::storage::FsyncPolicy::IntervalMs(3_600_000), ..LogOptions::default() };
    let engine = LogEngine::open(&dir.path().join("interval"), options).unwrap();
    let log = ReplicationLog::open(&dir.path().join("interval-log"), ReplogOptions::default()).unwrap();
    let mut settings = Settings::new(n1, Role::Leader { followers: vec![n2] });
    settings.common.peers = vec![n2];
    let mut interval = SingleLeader::replicated(engine, ReplicaFiles::with_log(log), settings, now).unwrap();
    interval.step(now, Input::Request { id: 1, request: request("SET k v") }, &mut outbox).unwrap();
    interval.write_out(now, &mut outbox).unwrap();
    interval.step(now, Input::Request { id: 2, request: request("SET k2 v") }, &mut outbox).unwrap();
    interval.write_out(now, &mut outbox).unwrap();
    let before = interval.stats().fsyncs;
    interval.flush(now + 1).unwrap();
    assert_eq!(interval.stats().fsyncs, before + 2, "the engine (and its SYNCED record) not fsynced at the flush");
    // A standalone node's engine is its own write-ahead log: fsynced per batch.
    let engine = LogEngine::open(&dir.path().join("alone"), LogOptions::default()).unwrap();
    let mut alone = SingleLeader::standalone(engine, n1).unwrap();
    alone.step(now, Input::Request { id: 1, request: request("SET k v") }, &mut outbox).unwrap();
    assert_eq!(alone.write_out(now, &mut outbox).unwrap().syncs.len(), 1, "the engine's fsync");
}

/// Commands of another state machine, for the seam's tests: values are stored reversed and
/// read back the right way round.
#[derive(Debug)]
struct Reversed;

impl<E: Engine> crate::kv::Commands<E> for Reversed {
    fn execute(&mut self, store: &mut crate::kv::Store<E>, now_ms: u64, request: Request) -> crate::Result<Reply> {
        let flip = |b: &Bytes| Bytes::from(b.iter().rev().copied().collect::<Vec<u8>>());
        let request = match request {
            Request::Set { key, value, condition, get, expiry } => {
                Request::Set { key, value: flip(&value), condition, get, expiry }
            }
            request => request,
        };
        Ok(match store.execute(now_ms, request)? {
            Reply::Bulk(value) => Reply::Bulk(flip(&value)),
            reply => reply,
        })
    }
}

#[test]
fn another_state_machine_runs_on_the_leader_and_its_followers_read_through_it() {
    let mut c = Cluster::new(1, 1, ReplogOptions::default());
    for node in &mut c.nodes {
        node.set_commands(Box::new(Reversed));
    }
    c.run_for(200); // heartbeats: the leader learns where its follower's log ends
    let id = c.send(0, "SET a abc");
    c.settle();
    assert_eq!(c.reply(id), Some(&Reply::Ok));
    for i in 0..2 {
        assert_eq!(get(&mut c, i, "a"), Some(Reply::Bulk(Bytes::from("abc"))), "n{} reads through the commands", i + 1);
        let stored = c.nodes[i].store().engine().get(b"a").unwrap().unwrap().value;
        assert_eq!(stored, Some(Bytes::from("cba")), "n{} holds what the commands wrote", i + 1);
    }
}

#[test]
fn a_leaders_own_write_is_logged_and_shipped_and_a_follower_makes_none() {
    let mut c = Cluster::new(1, 1, ReplogOptions::default());
    c.run_for(200);
    let before = c.nodes[0].last_lsn();
    let record = record("mine");
    let lsn = c.nodes[0]
        .leader_write(|store| store.put_record(Bytes::from("k"), record.clone()))
        .unwrap()
        .expect("a leader logs it");
    assert_eq!(lsn, before + 1, "one request, one record");
    assert_eq!(c.nodes[0].leader_write(|_| Ok(())).unwrap(), None, "a write that changed nothing is not logged");
    let mut called = false;
    let none = c.nodes[1].leader_write(|_| {
        called = true;
        Ok(())
    });
    assert_eq!((none.unwrap(), called), (None, false), "a follower makes no write of its own");
    c.step(0, Input::Tick);
    c.settle();
    assert_eq!(get(&mut c, 1, "k"), Some(Reply::Bulk(Bytes::from("mine"))), "the follower has it");
}

#[test]
fn a_log_held_for_another_family_is_held_from_an_elected_leaders_first_tick() {
    // A multi-leader datacenter of one node: its log is held for a datacenter that is cut
    // off. The node restarts, elects itself, and its first tick as leader must keep the hold.
    let options = ReplogOptions { retain_bytes_max: 4 * 1024, segment_bytes_max: 1024, ..ReplogOptions::default() };
    let id = NodeId(1);
    let settings = Settings::new(id, Role::Leader { followers: vec![] });
    let files = ReplicaFiles::in_memory(options);
    let mut replica = SingleLeader::replicated(MemoryEngine::new(), files, settings, START_MS).unwrap();
    replica.hold_log_from(Some(1));
    let mut now = START_MS;
    let value = "v".repeat(200);
    for i in 0..100 {
        now += 10;
        let mut outbox = Outbox::default();
        replica
            .step(now, Input::Request { id: i, request: request(&format!("SET k{i} {value}")) }, &mut outbox)
            .unwrap();
        replica.flush(now).unwrap();
        let (lsn, resets) = (replica.last_lsn(), replica.log_resets());
        replica.step(now, Input::Durable { lsn, resets }, &mut outbox).unwrap();
        replica.step(now, Input::Tick, &mut outbox).unwrap();
    }
    assert_eq!(replica.first_lsn(), 1, "held while it leads");
    let (engine, files) = replica.into_parts();
    let mut settings = Settings::new(id, Role::Follower { leader: None, leader_hint: String::new() });
    settings.auto_failover = true;
    settings.election_timeout_ms = 300;
    let mut replica = SingleLeader::replicated(engine, files, settings, now).unwrap();
    replica.hold_log_from(Some(1));
    for _ in 0..40 {
        now += 50;
        let mut outbox = Outbox::default();
        replica.step(now, Input::Tick, &mut outbox).unwrap();
        replica.flush(now).unwrap();
        let (lsn, resets) = (replica.last_lsn(), replica.log_resets());
        replica.step(now, Input::Durable { lsn, resets }, &mut outbox).unwrap();
    }
    assert!(replica.is_leader(), "it elected itself");
    assert_eq!(replica.first_lsn(), 1, "still held once it leads again");
}

use crate::replication::show::fields as log_fields;

#[test]
fn the_log_carries_old_values_and_transactions_to_every_replica() {
    let mut c = Cluster::new(1, 1, ReplogOptions::default());
    c.run_for(200);
    for line in [
        "SET users.1234.picture_url me-old.jpg",
        "SET users.1234.picture_url me-new.jpg",
        "DEL users.1234.picture_url",
        "MSET users.1.name ann users.2.name bob",
    ] {
        let id = c.send(0, line);
        c.settle();
        assert!(matches!(c.reply(id), Some(Reply::Ok | Reply::Int(1))), "{line}: {:?}", c.reply(id));
    }
    let mut listed = Vec::new();
    for i in 0..2 {
        let id = c.send(i, "REPLIKV.LOG 0 100 CHANGES PREFIX users.");
        let Some(Reply::Array(records)) = c.reply(id).cloned() else { panic!("n{}: {:?}", i + 1, c.reply(id)) };
        listed.push(records);
    }
    assert_eq!(listed[0], listed[1], "the follower's log is the leader's, old values and all");
    let records: Vec<_> = listed[0].iter().map(log_fields).collect();
    let changes = |r: &BTreeMap<String, Reply>| match &r["changes"] {
        Reply::Array(changes) => changes.iter().map(log_fields).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    let text = |reply: &Reply| match reply {
        Reply::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
        Reply::Nil => "nil".into(),
        other => format!("{other:?}"),
    };
    let summary: Vec<(String, String, String)> = records
        .iter()
        .flat_map(&changes)
        .map(|c| (text(&c["key"]), format!("{}:{}", text(&c["old"]), text(&c["old_value"])), text(&c["new_value"])))
        .collect();
    let row = |k: &str, old: &str, new: &str| (k.to_string(), old.to_string(), new.to_string());
    assert_eq!(
        summary,
        vec![
            row("users.1234.picture_url", "absent:nil", "me-old.jpg"),
            row("users.1234.picture_url", "value:me-old.jpg", "me-new.jpg"),
            row("users.1234.picture_url", "value:me-new.jpg", "nil"),
            row("users.1.name", "absent:nil", "ann"),
            row("users.2.name", "absent:nil", "bob"),
        ]
    );
    // The second write's old version is the first write's new one.
    let (first, second) = (changes(&records[0]), changes(&records[1]));
    assert_eq!(second[0]["old_version"], first[0]["new_version"]);
    // The MSET is one transaction of two changes, begun and ended in one record, whose id is
    // its position; each record's transaction is its own.
    let last = records.last().expect("records");
    assert_eq!(changes(last).len(), 2);
    assert_eq!((&last["begins"], &last["ends"]), (&Reply::Int(1), &Reply::Int(1)));
    let ids: Vec<&Reply> = records.iter().map(|r| &r["transaction"]).collect();
    let lsns: Vec<&Reply> = records.iter().map(|r| &r["lsn"]).collect();
    assert_eq!(ids, lsns, "a transaction's id is its first record's position");
    // The keys form filters by the prefix too, and keeps every record.
    let id = c.send(0, "REPLIKV.LOG 0 100 PREFIX users.1.");
    let Some(Reply::Array(keys)) = c.reply(id).cloned() else { panic!("{:?}", c.reply(id)) };
    let keyed: Vec<Reply> = keys
        .iter()
        .map(|r| match r {
            Reply::Array(parts) => parts[2].clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(keyed.len(), records.len(), "every record is listed");
    assert_eq!(keyed.last(), Some(&Reply::Array(vec![Reply::Bulk(Bytes::from("users.1.name"))])));
    for bad in ["REPLIKV.LOG 0 100 PREFIX", "REPLIKV.LOG 0 100 VALUES"] {
        let args: Vec<Bytes> = bad.split(' ').map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
        let parsed = parse_command(&args).expect("a known command");
        assert!(matches!(&parsed, Err(Reply::Error(e)) if e.contains("syntax")), "{bad}: {parsed:?}");
    }
}

#[test]
fn a_request_cut_into_parts_keeps_each_changes_old_value_beside_it() {
    use crate::replication::{LogRecord, Old, ReplicationLog};
    use crate::storage::Record;
    let count = super::RECORD_CHANGES_MAX * 2 + 1;
    let record =
        |value: String| Record { version: Default::default(), value: Some(Bytes::from(value)), expire_at_ms: None };
    let changes: Vec<Change> =
        (0..count).map(|i| Change { key: Bytes::from(format!("k{i}")), record: record(format!("new{i}")) }).collect();
    let olds: Vec<Old> = (0..count).map(|i| Old::Held(record(format!("old{i}")))).collect();
    let mut log = ReplicationLog::in_memory(ReplogOptions::default());
    super::append_changes(&mut log, 1, (changes, olds), super::RECORD_CHANGES_MAX).unwrap();
    let records: Vec<LogRecord> = log.read(0, usize::MAX).unwrap().unwrap();
    assert_eq!(records.len(), 3, "cut at RECORD_CHANGES_MAX");
    for r in &records {
        assert!(r.parts_error().is_none(), "{:?}", r.parts_error());
        assert_eq!(r.transaction(), 1, "one transaction");
        for (i, change) in r.changes.iter().enumerate() {
            let Old::Held(old) = r.old(i) else { panic!("an old value") };
            let n = &change.key[1..];
            assert_eq!(old.value.as_deref(), Some([&b"old"[..], n].concat().as_slice()), "beside its change");
        }
    }
    assert!(records[0].begins() && !records[1].begins() && records[1].continues() && !records[2].continues());
}

#[test]
fn the_changes_listed_leave_out_a_request_a_failover_abandoned() {
    let mut c = Cluster::new(1, 0, ReplogOptions::default());
    c.run_for(200);
    let (leader, now) = (c.ids[0], c.now);
    let epoch = c.nodes[1].status(c.now).epoch;
    let record = |lsn, epoch, part, parts, key: &str| crate::replication::LogRecord {
        lsn,
        epoch,
        changes: vec![Change {
            key: Bytes::copy_from_slice(key.as_bytes()),
            record: crate::storage::Record {
                version: crate::version::Version {
                    ts: crate::version::Timestamp { millis: now, logical: lsn as u32 },
                    node: leader,
                },
                value: Some(Bytes::from("v")),
                expire_at_ms: None,
            },
        }],
        part,
        parts,
        olds: Vec::new(),
        statement: None,
        physical: None,
    };
    // A whole request, then two parts of five of a request its leader never finished (its end
    // would lie past the log's end: the next leader's record shows it abandoned all the same).
    let records = vec![record(1, epoch, 0, 1, "a"), record(2, epoch, 0, 5, "b"), record(3, epoch, 1, 5, "c")];
    let message = Message::Append { epoch, prev_lsn: 0, prev_epoch: 0, records, leader_lsn: 3, sent_at_ms: now };
    c.step(1, Input::Message { from: leader, message });
    // The next leader's history goes on after them.
    let message = Message::Append {
        epoch: epoch + 1,
        prev_lsn: 3,
        prev_epoch: epoch,
        records: vec![record(4, epoch + 1, 0, 1, "d")],
        leader_lsn: 4,
        sent_at_ms: now,
    };
    c.step(1, Input::Message { from: leader, message });
    let id = send_request(&mut c, 1, request("REPLIKV.LOG 0 10 CHANGES"));
    let Some(Reply::Array(listed)) = c.reply(id).cloned() else { panic!("{:?}", c.reply(id)) };
    let lsns: Vec<Reply> = listed.iter().map(|r| log_fields(r)["lsn"].clone()).collect();
    assert_eq!(lsns, vec![Reply::Int(1), Reply::Int(4)], "the abandoned parts are not listed");
    // Page by page, as a stream reads it: nothing after the abandoned parts is skipped.
    let mut paged = Vec::new();
    let mut after = 0;
    for _ in 0..4 {
        let id = send_request(&mut c, 1, request(&format!("REPLIKV.LOG {after} 1 CHANGES")));
        let Some(Reply::Array(page)) = c.reply(id).cloned() else { panic!("{:?}", c.reply(id)) };
        let Some(record) = page.first() else { break };
        let Reply::Int(lsn) = log_fields(record)["lsn"] else { panic!("an lsn") };
        paged.push(lsn);
        after = lsn as u64;
    }
    assert_eq!(paged, [1, 4]);
    let id = send_request(&mut c, 1, request("REPLIKV.LOG 0 10"));
    let Some(Reply::Array(keys)) = c.reply(id).cloned() else { panic!("{:?}", c.reply(id)) };
    assert_eq!(keys.len(), 4, "the keys form lists every record the log holds");
}

#[test]
fn a_physical_leader_that_lost_its_engines_tail_replays_a_failed_script_and_its_undoing_by_place() {
    use crate::replication::ReplicationLog;
    use crate::storage::{LogEngine, LogOptions};
    let dir = tempfile::tempdir().unwrap();
    let (n1, n2) = (NodeId::from_name("n1"), NodeId::from_name("n2"));
    let open = |now| {
        let engine = LogEngine::open(&dir.path().join("engine"), LogOptions::default()).unwrap();
        let log = ReplicationLog::open(&dir.path().join("log"), ReplogOptions::default()).unwrap();
        let mut settings = Settings::new(n1, Role::Leader { followers: vec![n2] });
        settings.common.peers = vec![n2];
        settings.log_format = crate::replication::LogFormat::Physical;
        SingleLeader::replicated(engine, ReplicaFiles::with_log(log), settings, now).unwrap()
    };
    let mut replica = open(START_MS);
    let mut outbox = Outbox::default();
    let mut batch = |replica: &mut SingleLeader<LogEngine>, id, request| {
        replica.step(START_MS, Input::Request { id, request }, &mut outbox).unwrap();
        for sync in replica.write_out(START_MS, &mut outbox).unwrap().syncs {
            sync.sync().unwrap();
        }
    };
    batch(&mut replica, 1, request("SET k before"));
    // The engine's active segment: its newest.
    let segments = std::fs::read_dir(dir.path().join("engine")).unwrap().map(|e| e.unwrap().path());
    let segment = segments.filter(|p| p.extension().is_some_and(|e| e == "seg")).max().unwrap();
    let kept = std::fs::metadata(&segment).unwrap().len();
    // A script that writes k and fails: its write and the record that undoes it (k's old
    // record, its older version) are both in the engine and in the physical log.
    let script = "redis.call('SET', KEYS[1], 'script') return redis.call('NOSUCHCOMMAND')";
    let args: Vec<Bytes> = ["EVAL", script, "1", "k"].iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
    batch(&mut replica, 2, parse_command(&args).unwrap().unwrap());
    assert_eq!(replica.store.engine().get(b"k").unwrap().unwrap().value.as_deref(), Some(&b"before"[..]));
    drop(replica);
    // The power went before the engine's last bytes reached the disk (the log's had).
    let written = std::fs::read(&segment).unwrap();
    assert!(written.len() as u64 > kept, "the script's records were written");
    std::fs::OpenOptions::new().write(true).open(&segment).unwrap().set_len(kept).unwrap();
    let mut replica = open(START_MS + 1);
    assert_eq!(replica.store.engine().get(b"k").unwrap().unwrap().value.as_deref(), Some(&b"before"[..]));
    replica.write_out(START_MS + 1, &mut Outbox::default()).unwrap();
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        written,
        "recovery wrote the failed script's write and its undoing back where they were, the same bytes its \
         followers hold"
    );
}

#[test]
fn a_physical_replica_that_empties_itself_says_durably_that_its_files_left_the_leaders() {
    use crate::storage::{LogEngine, LogOptions};
    let dir = tempfile::tempdir().unwrap();
    let engine = LogEngine::open(dir.path(), LogOptions::default()).unwrap();
    let mut store = crate::kv::Store::new(engine, NodeId::from_name("n2"));
    store.set_physical_log(true);
    let record =
        crate::storage::Record { version: crate::version::Version::default(), value: None, expire_at_ms: None };
    store
        .apply(Change {
            key: Bytes::from("k"),
            record: crate::storage::Record { value: Some(Bytes::from("v")), ..record },
        })
        .unwrap();
    super::follower::wipe(&mut store).unwrap();
    assert!(store.physical_left(), "its tombstones are its own writes");
    drop(store);
    // Known at the next start, before recovery replays its log (by version, then).
    let engine = LogEngine::open(dir.path(), LogOptions::default()).unwrap();
    assert!(crate::kv::Store::new(engine, NodeId::from_name("n2")).physical_left());
}
