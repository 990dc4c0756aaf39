//! Leaderless replication between nodes in one process: memory engines and a hand-driven
//! network that can cut nodes off, hold messages and deliver them in any order.

use super::{Canary, Conflicts, Input, Leaderless, Message, ReadRepair, Settings};
use crate::kv::{parse_command, Reply, Request};
use crate::node::{Outbox, Output, PeerMessage, RequestId};
use crate::quorum::Nwr;
use crate::storage::MemoryEngine;
use crate::version::NodeId;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The cluster's clock when it is built.
const START_MS: u64 = 1_000;

/// Nodes stepped by hand.
struct Cluster {
    nodes: Vec<Leaderless<MemoryEngine>>,
    ids: Vec<NodeId>,
    now: u64,
    /// Messages in flight: (from, to, message).
    net: VecDeque<(usize, usize, Message)>,
    replies: BTreeMap<RequestId, Reply>,
    /// Nodes cut off: messages to and from them are dropped.
    cut: BTreeSet<usize>,
    /// Nodes whose incoming messages are held (delivered by `release`).
    held: BTreeMap<usize, Vec<(usize, Message)>>,
    next_id: RequestId,
}

fn request(line: &str) -> Request {
    let args: Vec<Bytes> = line.split(' ').map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
    parse_command(&args).expect("a known command").expect("valid arguments")
}

impl Cluster {
    fn new(nodes: usize, n: usize, w: usize, r: usize) -> Cluster {
        Cluster::with(nodes, Nwr::new(n, w, r).unwrap(), |_| {})
    }

    fn with(count: usize, nwr: Nwr, adjust: impl Fn(&mut Settings)) -> Cluster {
        let ids: Vec<NodeId> = (1..=count).map(|i| NodeId::from_name(&format!("n{i}"))).collect();
        let nodes = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                let mut settings = Settings::new(id, nwr);
                settings.common.peers = ids.iter().copied().filter(|&other| other != id).collect();
                settings.common.seed = i as u64;
                settings.request_timeout_ms = 500;
                // Anti-entropy off unless a test turns it on: these tests watch reads repair.
                settings.anti_entropy_interval_ms = 0;
                adjust(&mut settings);
                Leaderless::open(MemoryEngine::new(), settings, START_MS).unwrap()
            })
            .collect();
        Cluster {
            nodes,
            ids,
            now: START_MS,
            net: VecDeque::new(),
            replies: BTreeMap::new(),
            cut: BTreeSet::new(),
            held: BTreeMap::new(),
            next_id: 0,
        }
    }

    /// Steps node `i` with `input`, makes its writes durable and routes what it sent.
    fn step(&mut self, i: usize, input: Input) {
        let mut outbox = Outbox::default();
        self.nodes[i].step(self.now, input, &mut outbox).unwrap();
        let early = outbox
            .now
            .iter()
            .find(|o| matches!(o, Output::Send { message: PeerMessage::Leaderless(Message::Write { .. }), .. }));
        assert!(early.is_none(), "a state left before this batch's fsync: {early:?}");
        self.nodes[i].flush(self.now).unwrap();
        let lsn = self.nodes[i].last_lsn();
        self.nodes[i].step(self.now, Input::Durable { lsn, resets: 0 }, &mut outbox).unwrap();
        for output in outbox.drain_all() {
            match output {
                Output::Reply { id, reply } => {
                    assert!(self.replies.insert(id, reply).is_none(), "one reply per request");
                }
                Output::Send { to, message: PeerMessage::Leaderless(message) } => {
                    let to = self.ids.iter().position(|&id| id == to).expect("a known node");
                    if !self.cut.contains(&i) && !self.cut.contains(&to) {
                        self.net.push_back((i, to, message));
                    }
                }
                Output::Send { message, .. } => panic!("a leaderless node sent {message:?}"),
            }
        }
    }

    /// Sends `line` to node `i`; returns the request's id.
    fn send(&mut self, i: usize, line: &str) -> RequestId {
        self.next_id += 1;
        let id = self.next_id;
        self.step(i, Input::Request { id, request: request(line) });
        id
    }

    /// Delivers messages until none is in flight.
    fn settle(&mut self) {
        let mut steps = 0;
        while let Some((from, to, message)) = self.net.pop_front() {
            steps += 1;
            assert!(steps < 100_000, "the network never settles");
            if self.cut.contains(&to) || self.cut.contains(&from) {
                continue;
            }
            if let Some(held) = self.held.get_mut(&to) {
                held.push((from, message));
                continue;
            }
            let from_id = self.ids[from];
            self.step(to, Input::Message { from: from_id, message });
        }
    }

    /// Sends `line` to node `i`, settles the network and returns the reply.
    fn run(&mut self, i: usize, line: &str) -> Reply {
        let id = self.send(i, line);
        self.settle();
        self.replies.remove(&id).unwrap_or_else(|| panic!("no reply to {line:?} on node {i}"))
    }

    /// Advances the clock past every timeout and ticks every node.
    fn time_out(&mut self) {
        self.now += 1_000;
        for i in 0..self.nodes.len() {
            self.step(i, Input::Tick);
        }
        self.settle();
    }

    /// Node `i`'s own state of `key`: its winning value, `None` for none or a tombstone.
    fn local(&mut self, i: usize, key: &str) -> Option<Bytes> {
        let state = self.nodes[i].load(&Bytes::copy_from_slice(key.as_bytes())).unwrap()?;
        state.winner().and_then(|w| w.value.clone())
    }

    fn live_values(&mut self, i: usize, key: &str) -> usize {
        let state = self.nodes[i].load(&Bytes::copy_from_slice(key.as_bytes())).unwrap();
        state.map_or(0, |s| s.live().count())
    }
}

fn bulk(value: &str) -> Reply {
    Reply::Bulk(Bytes::copy_from_slice(value.as_bytes()))
}

#[test]
fn a_write_reaches_every_replica_and_any_node_reads_it() {
    let mut c = Cluster::new(3, 3, 2, 2);
    assert_eq!(c.run(0, "SET k v1"), Reply::Ok);
    for i in 0..3 {
        assert_eq!(c.local(i, "k"), Some(Bytes::from("v1")), "node {i}");
        assert_eq!(c.run(i, "GET k"), bulk("v1"), "node {i}");
    }
    assert_eq!(c.run(2, "EXISTS k"), Reply::Int(1));
    assert_eq!(c.run(1, "GET nothing"), Reply::Nil);
    assert_eq!(c.nodes[0].counters().writes_coordinated, 1);
}

#[test]
fn a_write_is_acknowledged_with_one_replica_down_and_fails_with_two_saying_how_many_took_it() {
    let mut c = Cluster::new(3, 3, 2, 2);
    c.cut.insert(2);
    assert_eq!(c.run(0, "SET k v1"), Reply::Ok);
    c.cut.insert(1);
    let id = c.send(0, "SET k v2");
    c.settle();
    assert!(!c.replies.contains_key(&id), "no answer before the timeout: w = 2 is not reached");
    c.time_out();
    let Some(Reply::Error(e)) = c.replies.remove(&id) else { panic!("expected an error") };
    assert!(e.starts_with("NOQUORUM the write reached 1 of 3 replicas (w = 2 needed) within 500 ms"), "{e}");
    assert!(e.contains("it may still be there"), "{e}");
    // It is still there: the apparently failed write is on the coordinator.
    assert_eq!(c.local(0, "k"), Some(Bytes::from("v2")));
    assert_eq!(c.nodes[0].counters().partial_writes, 1);
}

#[test]
fn a_read_returns_the_newest_version_not_the_majority_and_repairs_the_stale_replicas() {
    let mut c = Cluster::new(3, 3, 2, 2);
    assert_eq!(c.run(0, "SET k v6"), Reply::Ok);
    // Only node 0 takes v7: the others are cut off while it is written.
    c.cut.extend([1, 2]);
    let id = c.send(0, "SET k v7");
    c.settle();
    c.time_out();
    assert!(matches!(c.replies.remove(&id), Some(Reply::Error(_))));
    c.cut.clear();
    assert_eq!(c.local(1, "k"), Some(Bytes::from("v6")));
    // Node 1 coordinates: itself and node 2 say v6, node 0 says v7; the newest wins even if
    // the first r replies were both v6, because the read waits for r and merges by version.
    c.held.insert(2, Vec::new());
    assert_eq!(c.run(1, "GET k"), bulk("v7"));
    let held = c.held.remove(&2).unwrap();
    for (from, message) in held {
        let from = c.ids[from];
        c.step(2, Input::Message { from, message });
    }
    c.settle();
    for i in 0..3 {
        assert_eq!(c.local(i, "k"), Some(Bytes::from("v7")), "node {i} repaired");
    }
    assert!(c.nodes[1].counters().read_repairs_sent >= 1);
    assert!(c.nodes[2].counters().read_repairs_received >= 1);
}

#[test]
fn an_acknowledged_delete_never_comes_back_through_a_read_repair_from_a_replica_that_missed_it() {
    let mut c = Cluster::new(3, 3, 2, 2);
    assert_eq!(c.run(0, "SET k v1"), Reply::Ok);
    c.cut.insert(2);
    assert_eq!(c.run(0, "DEL k"), Reply::Int(1));
    c.cut.clear();
    assert_eq!(c.local(2, "k"), Some(Bytes::from("v1")), "node 2 missed the delete");
    // Every node coordinates a read; node 2's stale value meets the tombstone and loses.
    for i in [2, 1, 0] {
        assert_eq!(c.run(i, "GET k"), Reply::Nil, "read on node {i}");
    }
    c.time_out();
    for i in 0..3 {
        assert_eq!(c.local(i, "k"), None, "node {i} holds the tombstone");
    }
    assert_eq!(c.run(2, "EXISTS k"), Reply::Int(0));
}

#[test]
fn concurrent_writes_become_siblings_listed_with_a_context_that_a_write_resolves() {
    let mut c = Cluster::with(3, Nwr::new(3, 1, 2).unwrap(), |s| s.conflicts = Conflicts::Siblings);
    // A partition: node 0 and node 2 each take a write the other does not see.
    c.cut.insert(2);
    assert_eq!(c.run(0, "SET k a"), Reply::Ok);
    c.cut.clear();
    c.cut.insert(0);
    assert_eq!(c.run(2, "SET k b"), Reply::Ok);
    c.cut.clear();
    let Reply::Error(e) = c.run(1, "GET k") else { panic!("expected the siblings error") };
    assert!(e.starts_with("SIBLINGS the key has 2 concurrent values"), "{e}");
    let Reply::Array(listed) = c.run(1, "REPLIKV.SIBLINGS k") else { panic!("expected an array") };
    let [Reply::Bulk(token), Reply::Array(values)] = &listed[..] else { panic!("{listed:?}") };
    let mut values: Vec<Reply> = values.clone();
    values.sort_by_key(|v| format!("{v:?}"));
    assert_eq!(values, vec![bulk("a"), bulk("b")]);
    let token = String::from_utf8(token.to_vec()).unwrap();
    assert_eq!(c.run(1, &format!("SET k c CONTEXT {token}")), Reply::Ok);
    assert_eq!(c.run(0, "GET k"), bulk("c"));
    c.time_out();
    for i in 0..3 {
        assert_eq!(c.live_values(i, "k"), 1, "node {i} holds one value");
    }
    assert!(c.nodes[1].counters().sibling_reads >= 1);
    // A context of another key is refused.
    let Reply::Error(e) = c.run(0, &format!("SET other x CONTEXT {token}")) else { panic!() };
    assert!(e.starts_with("ERR invalid CONTEXT"), "{e}");
}

#[test]
fn under_lww_a_get_of_concurrent_writes_returns_the_highest_version() {
    let mut c = Cluster::new(3, 3, 1, 3);
    c.cut.insert(2);
    assert_eq!(c.run(0, "SET k early"), Reply::Ok);
    c.cut.clear();
    c.now += 5;
    c.cut.insert(0);
    assert_eq!(c.run(2, "SET k late"), Reply::Ok);
    c.cut.clear();
    assert_eq!(c.run(1, "GET k"), bulk("late"));
}

#[test]
fn a_blocking_read_waits_until_w_replicas_hold_what_it_returns() {
    let mut c = Cluster::with(3, Nwr::new(3, 2, 2).unwrap(), |s| s.read_repair = ReadRepair::Blocking);
    c.cut.extend([1, 2]);
    let id = c.send(0, "SET k v1");
    c.settle();
    c.time_out();
    assert!(matches!(c.replies.remove(&id), Some(Reply::Error(_))), "a partial write");
    c.cut.clear();
    // Node 1 reads from itself and node 0 (node 2 held): it answers v1 only once a second
    // replica holds v1, itself repaired.
    c.held.insert(2, Vec::new());
    assert_eq!(c.run(1, "GET k"), bulk("v1"));
    assert_eq!(c.local(1, "k"), Some(Bytes::from("v1")), "the coordinator was repaired before it answered");
}

#[test]
fn read_modify_writes_and_multi_key_commands_are_refused_with_the_reason() {
    let mut c = Cluster::new(3, 3, 2, 2);
    for (line, expected) in [
        ("INCR k", "is not available in leaderless mode: a read-modify-write"),
        ("APPEND k x", "read-modify-write"),
        ("SET k v NX", "SET with NX, XX, GET or an expiry is not available"),
        ("MGET a b", "a command over several keys"),
        ("DEL a b", "a command over several keys"),
        ("EXPIRE k 10", "expiry is not available"),
        ("FLUSHALL", "quorum write of every key"),
        ("WAIT 1 0", "there is no leader"),
    ] {
        let Reply::Error(e) = c.run(0, line) else { panic!("{line} was not refused") };
        assert!(e.contains(expected), "{line}: {e}");
    }
}

#[test]
fn with_more_nodes_than_n_each_key_lives_on_n_nodes_and_a_non_replica_forwards_the_write() {
    let mut c = Cluster::new(5, 3, 2, 2);
    for k in 0..40 {
        let key = format!("key{k}");
        // Any node coordinates, replica or not.
        assert_eq!(c.run(k % 5, &format!("SET {key} v{k}")), Reply::Ok, "{key}");
        let holders = (0..5).filter(|&i| c.local(i, &key).is_some()).count();
        assert_eq!(holders, 3, "{key} on exactly n nodes");
        assert_eq!(c.run((k + 1) % 5, &format!("GET {key}")), bulk(&format!("v{k}")));
    }
    let forwarded: u64 = c.nodes.iter().map(|n| n.counters().forwarded).sum();
    assert!(forwarded > 0, "some writes came to a node that is no replica of their key");
}

#[test]
fn a_replica_counts_once_however_often_it_acknowledges() {
    let mut c = Cluster::new(3, 3, 3, 1);
    c.cut.insert(2);
    let id = c.send(0, "SET k v");
    // Duplicate node 1's acknowledgement: still 2 of 3.
    let acks: Vec<_> = c.net.iter().cloned().collect();
    c.settle();
    for (from, to, message) in acks {
        if let Message::Write { op, .. } = message {
            let from_id = c.ids[to];
            c.step(from, Input::Message { from: from_id, message: Message::WriteAck { op } });
        }
    }
    c.settle();
    assert!(!c.replies.contains_key(&id), "w = 3 is not reached by node 1 twice");
}

#[test]
fn a_coordinator_sends_its_write_only_once_its_own_copy_is_durable() {
    // Found by the simulator (`replikv sim --mode leaderless`, n = 3, w = r = 2): sent at
    // once, a write lived on at the replicas while its coordinator crashed before its fsync,
    // came back without it and handed the same dot to its next write of the key.
    let mut c = Cluster::new(3, 3, 2, 2);
    let mut outbox = Outbox::default();
    c.nodes[0].step(c.now, Input::Request { id: 1, request: request("SET k v") }, &mut outbox).unwrap();
    assert!(outbox.now.is_empty(), "nothing leaves before the coordinator's copy is durable: {:?}", outbox.now);
    let sends = outbox.after_flush.iter().filter(|o| matches!(o, Output::Send { .. })).count();
    assert_eq!(sends, 2, "the write goes to both other replicas once durable");
}

#[test]
fn the_count_ack_twice_canary_acknowledges_a_write_too_early() {
    let mut c = Cluster::with(3, Nwr::new(3, 3, 1).unwrap(), |s| s.canary = Canary::CountAckTwice);
    c.cut.insert(2);
    let id = c.send(0, "SET k v");
    c.settle();
    assert_eq!(c.replies.remove(&id), Some(Reply::Ok), "the planted bug counts node 1 twice");
}

#[test]
fn a_request_runs_with_the_quorums_its_connection_chose() {
    let mut c = Cluster::new(3, 3, 2, 2);
    let with = |consistency: &str, line: &str| Request::WithConsistency {
        consistency: crate::kv::Consistency::parse(consistency).unwrap(),
        request: Box::new(request(line)),
    };
    c.cut.extend([1, 2]);
    // ONE: the coordinator alone is enough.
    c.next_id += 1;
    let id = c.next_id;
    c.step(0, Input::Request { id, request: with("ONE", "SET k v") });
    c.settle();
    assert_eq!(c.replies.remove(&id), Some(Reply::Ok));
    // The cluster's default (w = 2) is not.
    let id = c.send(0, "SET k v2");
    c.settle();
    assert!(!c.replies.contains_key(&id));
    c.time_out();
    assert!(matches!(c.replies.remove(&id), Some(Reply::Error(e)) if e.contains("(w = 2 needed)")));
    c.cut.clear();
    // ALL with one node cut off: the read waits for 3 and fails, naming r = 3.
    c.cut.insert(2);
    c.next_id += 1;
    let id = c.next_id;
    c.step(0, Input::Request { id, request: with("ALL", "GET k") });
    c.settle();
    c.time_out();
    assert!(matches!(c.replies.remove(&id), Some(Reply::Error(e)) if e.contains("(r = 3 needed)")), "ALL waits for 3");
    // A choice that does not fit n is refused, naming it.
    c.next_id += 1;
    let id = c.next_id;
    c.step(0, Input::Request { id, request: with("4,1", "GET k") });
    let Some(Reply::Error(e)) = c.replies.remove(&id) else { panic!("refused") };
    assert!(e.contains("consistency 4,1: w = 4 must be between 1 and n = 3"), "{e}");
}

#[test]
fn a_coordinator_sends_a_write_to_its_replicas_only_once_it_is_durable_on_its_own_disk() {
    let mut c = Cluster::new(3, 3, 2, 2);
    let mut outbox = Outbox::default();
    c.nodes[0].step(c.now, Input::Request { id: 1, request: request("SET k v") }, &mut outbox).unwrap();
    let writes = |outputs: &[Output]| {
        outputs
            .iter()
            .filter(|o| matches!(o, Output::Send { message: PeerMessage::Leaderless(Message::Write { .. }), .. }))
            .count()
    };
    assert_eq!(writes(&outbox.now), 0, "nothing leaves before the fsync");
    assert_eq!(writes(&outbox.after_flush), 2, "both other replicas, after it");
}

#[test]
fn a_write_is_forgotten_once_answered_even_with_a_replica_down() {
    let mut c = Cluster::new(3, 3, 2, 2);
    c.cut.insert(2);
    for i in 0..10 {
        assert_eq!(c.run(0, &format!("SET k{i} v")), Reply::Ok);
    }
    assert_eq!(c.nodes[0].ops.len(), 0, "no write waits for the replica that is down");
    // They are watched until their timeout, so `replikv check` knows a copy is on its way.
    assert_eq!(c.nodes[0].status(c.now).leaderless.unwrap().in_flight, 10);
    c.time_out();
    assert_eq!(c.nodes[0].status(c.now).leaderless.unwrap().in_flight, 0);
    c.cut.clear();
    assert_eq!(c.run(0, "SET k v"), Reply::Ok);
    assert_eq!(c.nodes[0].status(c.now).leaderless.unwrap().in_flight, 0, "every replica acknowledged");
}

#[test]
fn under_siblings_a_delete_concurrent_with_a_write_is_a_sibling_listed_as_nil() {
    let mut c = Cluster::with(3, Nwr::new(3, 1, 3).unwrap(), |s| s.conflicts = Conflicts::Siblings);
    assert_eq!(c.run(0, "SET k v0"), Reply::Ok);
    c.cut.insert(2);
    assert_eq!(c.run(0, "DEL k"), Reply::Int(1));
    c.cut.clear();
    c.cut.insert(0);
    assert_eq!(c.run(2, "SET k v1"), Reply::Ok);
    c.cut.clear();
    let Reply::Error(e) = c.run(1, "GET k") else { panic!("expected siblings") };
    assert!(e.contains("2 concurrent values (1 of them deletes)"), "{e}");
    assert_eq!(c.run(1, "EXISTS k"), Reply::Int(1), "a live value among the siblings");
    let Reply::Array(listed) = c.run(1, "REPLIKV.SIBLINGS k") else { panic!() };
    let Reply::Array(values) = &listed[1] else { panic!() };
    let mut values: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    values.sort();
    assert_eq!(values, vec![format!("{:?}", bulk("v1")), format!("{:?}", Reply::Nil)]);
}

#[test]
fn a_damaged_record_is_read_as_missing_repaired_by_a_read_and_never_stops_the_node() {
    let mut c = Cluster::new(3, 3, 2, 2);
    assert_eq!(c.run(0, "SET k v1"), Reply::Ok);
    c.nodes[2].store.engine_mut().damage(b"k");
    // A write through the damaged node is refused (its own dots may be in the record).
    let Reply::Error(e) = c.run(2, "SET k v2") else { panic!("a write on the damaged node is refused") };
    assert!(e.starts_with("DAMAGED"), "{e}");
    assert_eq!(c.nodes[2].store.damaged().count(), 1);
    // A peer's read of the damaged record, and a client's, are answered (no Err from step).
    c.held.insert(0, Vec::new());
    assert_eq!(c.run(1, "GET k"), bulk("v1"));
    c.held.remove(&0);
    assert_eq!(c.run(2, "GET k"), bulk("v1"));
    c.time_out();
    assert_eq!(c.local(2, "k"), Some(Bytes::from("v1")), "the read repaired it");
    assert_eq!(c.nodes[2].store.damaged().count(), 0);
    assert_eq!(c.run(2, "SET k v2"), Reply::Ok);
}

#[test]
fn a_read_of_a_missing_key_repairs_nothing() {
    let mut c = Cluster::with(3, Nwr::new(3, 2, 2).unwrap(), |s| s.read_repair = ReadRepair::Blocking);
    assert_eq!(c.run(0, "GET nothing"), Reply::Nil);
    c.time_out();
    assert_eq!(c.nodes[0].counters().read_repairs_sent, 0);
}

#[test]
fn a_forwarded_partial_write_says_how_many_replicas_took_it() {
    let mut c = Cluster::new(5, 3, 2, 2);
    // A key whose replicas do not include node 0, which forwards it.
    let key =
        (0..100).map(|k| format!("key{k}")).find(|k| !c.nodes[0].ring.is_replica(k.as_bytes(), c.ids[0])).unwrap();
    let replicas = c.nodes[0].ring.preference_list(key.as_bytes());
    for other in &replicas[1..] {
        c.cut.insert(c.ids.iter().position(|id| id == other).unwrap());
    }
    let id = c.send(0, &format!("SET {key} v"));
    c.settle();
    c.now += 600; // past the coordinator's timeout, not the forwarder's
    for i in 0..5 {
        c.step(i, Input::Tick);
    }
    c.settle();
    let Some(Reply::Error(e)) = c.replies.remove(&id) else { panic!("an answer after the coordinator's timeout") };
    assert!(e.contains("the write reached 1 of 3 replicas (w = 2 needed)"), "{e}");
}

#[test]
fn under_siblings_two_concurrent_deletes_read_as_nil() {
    let mut c = Cluster::with(3, Nwr::new(3, 1, 3).unwrap(), |s| s.conflicts = Conflicts::Siblings);
    assert_eq!(c.run(1, "SET k v"), Reply::Ok);
    c.cut.insert(2);
    assert_eq!(c.run(0, "DEL k"), Reply::Int(1));
    c.cut.clear();
    c.cut.insert(0);
    assert_eq!(c.run(2, "DEL k"), Reply::Int(1));
    c.cut.clear();
    assert_eq!(c.run(1, "GET k"), Reply::Nil);
    assert_eq!(c.run(1, "EXISTS k"), Reply::Int(0));
}

#[test]
fn a_blocking_read_answers_only_once_w_replicas_hold_its_answer() {
    let mut c = Cluster::with(3, Nwr::new(3, 3, 2).unwrap(), |s| s.read_repair = ReadRepair::Blocking);
    c.cut.extend([1, 2]);
    let id = c.send(0, "SET k v1");
    c.settle();
    c.time_out();
    assert!(matches!(c.replies.remove(&id), Some(Reply::Error(_))), "a partial write on node 0 only");
    c.cut.clear();
    // Node 1 hears itself and node 0; w = 3 needs node 2 too, whose messages are held.
    c.held.insert(2, Vec::new());
    let id = c.send(1, "GET k");
    c.settle();
    assert!(!c.replies.contains_key(&id), "answered before w replicas held v1");
    for (from, message) in c.held.remove(&2).unwrap() {
        let from = c.ids[from];
        c.step(2, Input::Message { from, message });
    }
    c.settle();
    assert_eq!(c.replies.remove(&id), Some(bulk("v1")));
    assert_eq!(c.local(2, "k"), Some(Bytes::from("v1")));
}

#[test]
fn a_state_stamped_far_ahead_of_the_replica_clock_is_refused_and_counted() {
    let mut c = Cluster::new(3, 3, 1, 1);
    let mut state = crate::causality::Siblings::new();
    let version = crate::version::Version {
        ts: crate::version::Timestamp { millis: u64::MAX, logical: u32::MAX },
        node: c.ids[0],
    };
    state.write(c.ids[0], &Default::default(), version, Some(Bytes::from("future"))).unwrap();
    let message = Message::Write { op: 7, key: Bytes::from("k"), state, repair: false };
    let from = c.ids[0];
    c.step(1, Input::Message { from, message });
    assert!(c.net.is_empty(), "no acknowledgement");
    assert_eq!(c.local(1, "k"), None);
    assert_eq!(c.nodes[1].counters().refused_states, 1);
}

#[test]
fn a_node_that_lost_its_data_writes_under_a_new_dot_id_and_its_writes_are_kept() {
    let mut c = Cluster::new(3, 3, 2, 2);
    assert_eq!(c.run(0, "SET k old1"), Reply::Ok);
    assert_eq!(c.run(0, "SET k old2"), Reply::Ok);
    // Node 0 comes back empty (a memory engine restarted), as the server restarts it: with a
    // new dot id.
    let mut settings = c.nodes[0].settings().clone();
    settings.dot_id = NodeId::from_name("n1 incarnation 2");
    c.nodes[0] = Leaderless::open(MemoryEngine::new(), settings, c.now).unwrap();
    c.now += 10;
    assert_eq!(c.run(0, "SET k new"), Reply::Ok);
    for i in 0..3 {
        assert_eq!(c.run(i, "GET k"), bulk("new"), "read through node {i}");
    }
}

#[test]
fn a_replica_answers_a_read_only_after_its_fsync() {
    // Its state may hold a write it just stamped: sent sooner, a crash before its fsync could
    // leave that dot on other nodes while this one hands it out again.
    let mut c = Cluster::new(3, 3, 2, 2);
    let mut outbox = Outbox::default();
    c.nodes[1].step(c.now, Input::Request { id: 1, request: request("SET k mine") }, &mut outbox).unwrap();
    let from = c.ids[0];
    let read = Message::Read { op: 9, key: Bytes::from("k") };
    c.nodes[1].step(c.now, Input::Message { from, message: read }, &mut outbox).unwrap();
    let reply = |o: &Output| {
        matches!(o, Output::Send { message: PeerMessage::Leaderless(Message::ReadReply { op: 9, .. }), .. })
    };
    assert!(!outbox.now.iter().any(reply), "not before the fsync");
    assert!(outbox.after_flush.iter().any(reply));
}

mod anti_entropy;
mod hints;
mod sessions;
