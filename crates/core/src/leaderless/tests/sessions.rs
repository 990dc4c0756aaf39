//! Session guarantees on a leaderless coordinator, between nodes in one process.

use super::{bulk, request, Cluster, Input, Message};
use crate::causality::{Siblings, VersionVector};
use crate::kv::{Reply, Request};
use crate::leaderless::session::SESSION_REASK_MS;
use crate::leaderless::Canary;
use crate::node::RequestId;
use crate::quorum::Nwr;
use bytes::Bytes;

impl Cluster {
    /// Sends `line` to node `i` in a session whose floor for the key is `seen`.
    fn send_in_session(&mut self, i: usize, line: &str, seen: &VersionVector, wait_ms: u64) -> RequestId {
        self.next_id += 1;
        let id = self.next_id;
        let request =
            Request::KeySession { seen: seen.clone(), wait_ms, every_replica: false, request: Box::new(request(line)) };
        self.step(i, Input::Request { id, request });
        id
    }

    /// Advances the clock by `ms` and ticks every node, delivering everything.
    fn pass(&mut self, ms: u64) {
        self.now += ms;
        for i in 0..self.nodes.len() {
            self.step(i, Input::Tick);
        }
        self.settle();
    }

    /// Node `i`'s whole state of `key`.
    fn state(&mut self, i: usize, key: &str) -> Siblings {
        self.nodes[i].load(&Bytes::copy_from_slice(key.as_bytes())).unwrap().unwrap_or_default()
    }
}

/// The context and the answer of an [`Reply::InKeySession`] (panics on anything else).
fn in_session(reply: Option<Reply>) -> (VersionVector, Vec<crate::version::NodeId>, u64, u32, Reply) {
    match reply {
        Some(Reply::InKeySession { context, replicas, waited_ms, asked_again, reply, .. }) => {
            (context, replicas, waited_ms, asked_again, *reply)
        }
        other => panic!("expected an answer in session, got {other:?}"),
    }
}

/// n3 w1 r1: a write reaches node 0 only; its context is the session's floor.
fn written_on_node_0_only() -> (Cluster, VersionVector) {
    written_on_node_0_only_with(Canary::None)
}

/// [`written_on_node_0_only`], with `canary` planted in every node.
fn written_on_node_0_only_with(canary: Canary) -> (Cluster, VersionVector) {
    let mut c = Cluster::with(3, Nwr::new(3, 1, 1).unwrap(), |s| s.canary = canary);
    c.run(0, "SET k old");
    c.cut.extend([1, 2]);
    let id = c.send_in_session(0, "SET k new", &VersionVector::new(), 1_000);
    c.settle();
    let (context, holders, ..) = in_session(c.replies.remove(&id));
    assert_eq!(holders, vec![c.ids[0]], "w = 1: the coordinator's own copy");
    assert!(context.descends(c.state(0, "k").context()), "the write's context is its state's");
    c.cut.clear();
    (c, context)
}

#[test]
fn a_session_read_waits_for_the_replica_that_holds_its_write_where_a_plain_read_is_stale() {
    let (mut c, floor) = written_on_node_0_only();
    // Node 0's messages are held: the first replies (nodes 1 and 2) do not cover the floor.
    c.held.insert(0, Vec::new());
    // Without a session, r = 1 answers from node 1's own stale copy: the lecture's anomaly.
    assert_eq!(c.run(1, "GET k"), bulk("old"));
    let id = c.send_in_session(1, "GET k", &floor, 1_000);
    c.settle();
    assert!(!c.replies.contains_key(&id), "held: no replica that answered has the session's write");
    let held = c.held.remove(&0).unwrap();
    for (from, message) in held {
        let from = c.ids[from];
        c.step(0, Input::Message { from, message });
    }
    c.settle();
    let (context, replicas, ..) = in_session(c.replies.remove(&id));
    assert!(context.descends(&floor));
    assert_eq!(replicas.len(), 3, "answered once all three replied: {replicas:?}");
    // The read repaired the stale replicas: a plain read on node 1 now sees the write.
    assert_eq!(c.run(1, "GET k"), bulk("new"));
}

#[test]
fn the_floor_ignored_canary_answers_a_session_read_from_a_stale_replica_at_once() {
    // The planted bug the simulator's read-your-writes checker must catch: the same read as
    // above, answered from node 1's own stale copy with a context that misses the floor.
    let (mut c, floor) = written_on_node_0_only_with(Canary::SessionFloorIgnored);
    c.held.insert(0, Vec::new());
    let id = c.send_in_session(1, "GET k", &floor, 1_000);
    c.settle();
    let (context, replicas, ..) = in_session(c.replies.remove(&id));
    assert_eq!(replicas, vec![c.ids[1]], "answered after r = 1 reply, its own");
    assert!(!context.descends(&floor), "the answer does not cover the floor: {context:?} {floor:?}");
}

#[test]
fn a_session_read_asks_again_until_anti_entropy_brings_the_floor_and_says_so() {
    let (mut c, floor) = written_on_node_0_only();
    let state = c.state(0, "k");
    c.cut.insert(0);
    let id = c.send_in_session(1, "GET k", &floor, 1_000);
    c.settle();
    assert!(!c.replies.contains_key(&id), "nodes 1 and 2 answered old, node 0 is down");
    // Node 2 learns the write (as anti-entropy would), then the coordinator asks again.
    c.step(
        2,
        Input::Message { from: c.ids[0], message: Message::Write { op: 0, key: "k".into(), state, repair: true } },
    );
    c.settle();
    c.pass(SESSION_REASK_MS);
    let (context, _, waited_ms, asked_again, reply) = in_session(c.replies.remove(&id));
    assert_eq!(reply, bulk("new"));
    assert!(context.descends(&floor));
    assert_eq!((waited_ms, asked_again), (SESSION_REASK_MS, 1));
}

#[test]
fn a_session_read_that_no_replica_can_serve_in_time_is_refused_naming_the_gap() {
    let (mut c, floor) = written_on_node_0_only();
    c.cut.insert(0);
    let id = c.send_in_session(1, "GET k", &floor, 200);
    c.settle();
    for _ in 0..3 {
        c.pass(SESSION_REASK_MS);
    }
    assert!(!c.replies.contains_key(&id), "still within the session's wait");
    c.pass(SESSION_REASK_MS);
    let Some(Reply::Error(e)) = c.replies.remove(&id) else { panic!("expected an error") };
    assert!(e.starts_with("TRYAGAIN the 2 of 3 replicas of this key that answered"), "{e}");
    assert!(e.contains("writes of 1 coordinator(s) missing, the newest made 200 ms ago"), "{e}");
    // Rounds at 50 and 150 ms (each waits twice as long as the one before), then the wait ended.
    assert!(e.contains("after 200 ms (asked 3 times)"), "{e}");
}

#[test]
fn a_key_purged_everywhere_answers_nil_once_the_floor_is_older_than_the_grace() {
    let mut c = Cluster::with(3, Nwr::new(3, 2, 2).unwrap(), |s| s.tombstone_grace_ms = 1_000);
    // A floor of a write made at START_MS: no replica holds anything of the key.
    let dot = crate::causality::dot_floor(crate::version::Timestamp { millis: c.now, logical: 0 });
    let floor = VersionVector::from_entries(vec![(c.ids[0], dot)]).unwrap();
    let id = c.send_in_session(1, "GET k", &floor, 5_000);
    c.settle();
    assert!(!c.replies.contains_key(&id), "a write of a moment ago: not purged, held");
    c.pass(1_000);
    let (.., reply) = in_session(c.replies.remove(&id));
    assert_eq!(reply, Reply::Nil, "past the grace, nothing anywhere is the key deleted and purged");
}

#[test]
fn a_forwarded_session_write_answers_with_its_context() {
    let mut c = Cluster::new(5, 3, 2, 2);
    for k in 0..10 {
        let key = format!("key{k}");
        let id = c.send_in_session(k % 5, &format!("SET {key} v"), &VersionVector::new(), 1_000);
        c.settle();
        let (context, holders, ..) = in_session(c.replies.remove(&id));
        assert_eq!(context.len(), 1, "{key}: one write, one dot");
        assert!(holders.len() >= 2, "{key}: w = 2");
    }
    assert!(c.nodes.iter().map(|n| n.counters().forwarded).sum::<u64>() > 0, "some writes were forwarded");
}

#[test]
fn a_sessions_write_through_a_stale_coordinator_replaces_its_earlier_write() {
    let mut c = Cluster::with(3, Nwr::new(3, 1, 1).unwrap(), |s| s.conflicts = crate::leaderless::Conflicts::Siblings);
    c.cut.extend([1, 2]);
    let id = c.send_in_session(0, "SET k v1", &VersionVector::new(), 1_000);
    c.settle();
    let (written, ..) = in_session(c.replies.remove(&id));
    // Node 1 has not heard of v1 when the session writes v2 through it.
    c.cut.clear();
    c.cut.insert(0);
    let id = c.send_in_session(1, "SET k v2", &written, 1_000);
    c.settle();
    let (context, ..) = in_session(c.replies.remove(&id));
    assert!(context.descends(&written), "the second write's context covers the first");
    c.cut.clear();
    let id = c.send_in_session(2, "GET k", &context, 1_000);
    c.settle();
    c.pass(SESSION_REASK_MS);
    let (.., reply) = in_session(c.replies.remove(&id));
    assert_eq!(reply, bulk("v2"), "not siblings: v2 replaced the session's v1");
}

#[test]
fn a_floor_stamped_past_the_clock_bound_is_refused_at_once() {
    let mut c = Cluster::new(3, 3, 2, 2);
    let far = crate::causality::dot_floor(crate::version::Timestamp { millis: c.now + 3_600_000, logical: 0 });
    let floor = VersionVector::from_entries(vec![(c.ids[0], far)]).unwrap();
    let id = c.send_in_session(1, "GET k", &floor, 5_000);
    c.settle();
    let Some(Reply::Error(e)) = c.replies.remove(&id) else { panic!("expected an error at once") };
    assert!(e.contains("ahead of this node's clock") && e.contains("REPLIKV.SESSION RESET"), "{e}");
}

#[test]
fn a_coordinator_holds_a_bounded_number_of_session_reads_and_refuses_the_next_at_once() {
    let (mut c, floor) = written_on_node_0_only();
    c.cut.insert(0);
    let max = crate::leaderless::session::SESSION_READS_HELD_MAX;
    let ids: Vec<RequestId> = (0..=max).map(|_| c.send_in_session(1, "GET k", &floor, 1_000)).collect();
    assert!(ids[..max].iter().all(|id| !c.replies.contains_key(id)), "the first {max} are held");
    let Some(Reply::Error(e)) = c.replies.remove(&ids[max]) else { panic!("the next is refused at once") };
    assert!(e.starts_with("TRYAGAIN") && e.contains(&format!("holds {max} session reads already")), "{e}");
}

#[test]
fn held_reads_are_counted_across_ticks_for_the_cap() {
    let (mut c, floor) = written_on_node_0_only();
    c.cut.insert(0);
    let max = crate::leaderless::session::SESSION_READS_HELD_MAX;
    for _ in 0..max / 2 {
        c.send_in_session(1, "GET k", &floor, 5_000);
    }
    c.now += 1; // a tick at which no round is due: every read is still held, and counted
    c.step(1, Input::Tick);
    let ids: Vec<RequestId> = (0..=max / 2).map(|_| c.send_in_session(1, "GET k", &floor, 5_000)).collect();
    let Some(Reply::Error(e)) = c.replies.remove(ids.last().unwrap()) else { panic!("the cap was not kept") };
    assert!(e.contains(&format!("holds {max} session reads already")), "{e}");
}

#[test]
fn a_sessions_write_is_stamped_above_the_writes_its_floor_names() {
    let mut c = Cluster::new(3, 3, 1, 1);
    // The session saw a write of node 0 stamped 30 s ahead of node 1's clock.
    let ahead = c.now + 30_000;
    let dot = crate::causality::dot_floor(crate::version::Timestamp { millis: ahead, logical: 0 });
    let floor = VersionVector::from_entries(vec![(c.ids[0], dot)]).unwrap();
    let id = c.send_in_session(1, "SET k v", &floor, 1_000);
    c.settle();
    in_session(c.replies.remove(&id));
    let version = c.state(1, "k").winner().expect("written").version;
    assert!(
        version.ts.millis >= ahead,
        "stamped {version}, below the replaced write's {ahead} ms: lww would rank it lower"
    );
}

#[test]
fn a_held_read_whose_new_round_hears_fewer_than_r_is_refused_at_its_wait_not_its_timeout() {
    let mut c = Cluster::new(3, 3, 1, 2);
    c.run(0, "SET k old");
    c.cut.extend([1, 2]);
    let id = c.send_in_session(0, "SET k new", &VersionVector::new(), 1_000);
    c.settle();
    let (floor, ..) = in_session(c.replies.remove(&id));
    c.cut.clear();
    c.cut.insert(0);
    let id = c.send_in_session(1, "GET k", &floor, 200);
    c.settle();
    assert!(!c.replies.contains_key(&id), "nodes 1 and 2 answered without the write: held");
    c.cut.insert(2); // the next rounds hear node 1 alone, below r = 2
    for _ in 0..4 {
        c.pass(SESSION_REASK_MS);
    }
    let Some(Reply::Error(e)) = c.replies.remove(&id) else { panic!("no answer at the session's wait") };
    assert!(e.starts_with("TRYAGAIN the 2 of 3 replicas of this key that answered"), "{e}");
}
