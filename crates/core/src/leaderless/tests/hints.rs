//! Hinted handoff between nodes in one process.

use super::{bulk, Cluster, Input};
use crate::kv::Reply;
use crate::leaderless::{Leaderless, Settings, HINT_AFTER_MS, HINT_DELIVERY_INTERVAL_MS};
use crate::quorum::Nwr;
use bytes::Bytes;

fn cluster(nodes: usize, nwr: Nwr, sloppy: bool) -> Cluster {
    Cluster::with(nodes, nwr, |s: &mut Settings| {
        s.hinted_handoff = true;
        s.sloppy_quorum = sloppy;
        s.request_timeout_ms = 2_000;
    })
}

/// Four nodes, n3 w2 r2, hinted handoff on, tombstones (and so hints) kept `grace_ms`.
fn with_grace(grace_ms: u64) -> Cluster {
    Cluster::with(4, Nwr::new(3, 2, 2).unwrap(), |s| {
        s.hinted_handoff = true;
        s.request_timeout_ms = 2_000;
        s.tombstone_grace_ms = grace_ms;
    })
}

impl Cluster {
    /// Advances the clock by `ms`, ticking every node and delivering everything.
    fn advance(&mut self, ms: u64) {
        self.now += ms;
        for i in 0..self.nodes.len() {
            self.step(i, Input::Tick);
        }
        self.settle();
    }

    fn index(&self, id: crate::version::NodeId) -> usize {
        self.ids.iter().position(|x| *x == id).unwrap()
    }

    fn backlog(&self, i: usize) -> u64 {
        self.nodes[i].status(self.now).leaderless.unwrap().anti_entropy.hint_backlog.values().sum()
    }
}

/// A key, its coordinator (primary), the replica to cut off, and the first stand-in.
fn placement(c: &Cluster, key: &str) -> (usize, usize, Option<usize>) {
    let ring = &c.nodes[0].ring;
    let list = ring.preference_list(key.as_bytes());
    let stand_in = ring.stand_ins(key.as_bytes()).first().map(|id| c.index(*id));
    (c.index(list[0]), c.index(list[2]), stand_in)
}

#[test]
fn a_write_to_a_down_replica_is_hinted_to_the_next_node_on_the_ring_and_delivered_when_it_returns() {
    let mut c = cluster(4, Nwr::new(3, 2, 2).unwrap(), false);
    let (coordinator, down, stand_in) = placement(&c, "k");
    let stand_in = stand_in.expect("4 nodes, n = 3: one stand-in");
    c.cut.insert(down);
    let id = c.send(coordinator, "SET k v");
    c.settle();
    assert_eq!(c.replies.remove(&id), Some(Reply::Ok), "w = 2 of the 2 replicas up");
    c.advance(HINT_AFTER_MS);
    assert_eq!(c.backlog(stand_in), 1, "the stand-in holds a hint for the down replica");
    assert_eq!(c.local(down, "k"), None);
    // Still down at the next delivery: the hint stays.
    c.advance(HINT_DELIVERY_INTERVAL_MS);
    assert_eq!(c.backlog(stand_in), 1);
    c.cut.clear();
    c.advance(HINT_DELIVERY_INTERVAL_MS);
    assert_eq!(c.local(down, "k"), Some(Bytes::from_static(b"v")), "delivered");
    assert_eq!(c.backlog(stand_in), 0, "and deleted once the replica took it");
    let status = c.nodes[stand_in].status(c.now).leaderless.unwrap().anti_entropy;
    assert_eq!((status.hints_stored, status.hints_delivered), (1, 1));
    // The coordinator suspects the replica until it hears from it: its next write is hinted
    // at once, and the replica's acknowledgement of it ends the suspicion.
    assert_eq!(c.run(coordinator, "SET k v2"), Reply::Ok);
    c.advance(HINT_DELIVERY_INTERVAL_MS);
    assert_eq!(c.backlog(stand_in), 0);
    let stored = c.nodes[stand_in].status(c.now).leaderless.unwrap().anti_entropy.hints_stored;
    assert_eq!(c.run(coordinator, "SET k v3"), Reply::Ok);
    c.advance(HINT_AFTER_MS);
    let status = c.nodes[stand_in].status(c.now).leaderless.unwrap().anti_entropy;
    assert_eq!((status.hints_stored, c.backlog(stand_in)), (stored, 0), "no hint once it is heard from");
}

#[test]
fn a_stand_ins_hint_counts_toward_w_only_under_a_sloppy_quorum() {
    for sloppy in [false, true] {
        let mut c = cluster(4, Nwr::new(3, 3, 1).unwrap(), sloppy);
        let (coordinator, down, _) = placement(&c, "k");
        c.cut.insert(down);
        let id = c.send(coordinator, "SET k v");
        c.settle();
        assert_eq!(c.replies.get(&id), None, "two replicas of the three w needs");
        c.advance(HINT_AFTER_MS);
        let reply = c.replies.remove(&id);
        if sloppy {
            assert_eq!(reply, Some(Reply::Ok), "the stand-in's hint is the third acknowledgement");
        } else {
            assert_eq!(reply, None, "a hint is no replica: the write still waits");
            c.advance(2_000);
            let reply = c.replies.remove(&id);
            assert!(matches!(&reply, Some(Reply::Error(e)) if e.starts_with("NOQUORUM")), "{reply:?}");
        }
    }
}

#[test]
fn with_every_node_a_replica_the_coordinator_keeps_the_hint_itself_and_delivers_it() {
    let mut c = cluster(3, Nwr::new(3, 2, 2).unwrap(), true);
    let (coordinator, down, stand_in) = placement(&c, "k");
    assert_eq!(stand_in, None, "no node outside the preference list");
    c.cut.insert(down);
    assert_eq!(c.run(coordinator, "SET k v"), Reply::Ok);
    c.advance(HINT_AFTER_MS);
    assert_eq!(c.backlog(coordinator), 1);
    // Suspected now: the next write is hinted at once.
    assert_eq!(c.run(coordinator, "SET k2 v"), Reply::Ok);
    let (_, down2, _) = placement(&c, "k2");
    if down2 == down {
        assert_eq!(c.backlog(coordinator), 2, "hinted when it started, without waiting");
    }
    c.cut.clear();
    c.advance(HINT_DELIVERY_INTERVAL_MS);
    assert_eq!(c.local(down, "k"), Some(Bytes::from_static(b"v")));
    assert_eq!(c.backlog(coordinator), 0);
}

#[test]
fn hints_survive_a_restart_of_the_node_holding_them() {
    let mut c = cluster(4, Nwr::new(3, 2, 2).unwrap(), false);
    let (coordinator, down, stand_in) = placement(&c, "k");
    let stand_in = stand_in.unwrap();
    c.cut.insert(down);
    assert_eq!(c.run(coordinator, "SET k v"), Reply::Ok);
    c.advance(HINT_AFTER_MS);
    assert_eq!(c.backlog(stand_in), 1);
    let settings = c.nodes[stand_in].settings().clone();
    let old = std::mem::replace(
        &mut c.nodes[stand_in],
        Leaderless::open(crate::storage::MemoryEngine::new(), settings.clone(), c.now).unwrap(),
    );
    c.nodes[stand_in] = Leaderless::open(old.into_engine(), settings, c.now).unwrap();
    assert_eq!(c.backlog(stand_in), 1, "read back from its engine");
    c.cut.clear();
    c.advance(HINT_DELIVERY_INTERVAL_MS);
    assert_eq!(c.run(down, "GET k"), bulk("v"));
    assert_eq!(c.backlog(stand_in), 0);
}

#[test]
fn a_hint_older_than_the_tombstone_grace_period_is_dropped_not_delivered() {
    let mut c = with_grace(3_000);
    let (coordinator, down, stand_in) = placement(&c, "k");
    let stand_in = stand_in.unwrap();
    c.cut.insert(down);
    assert_eq!(c.run(coordinator, "SET k v"), Reply::Ok);
    c.advance(HINT_AFTER_MS);
    assert_eq!(c.backlog(stand_in), 1);
    for _ in 0..4 {
        c.advance(HINT_DELIVERY_INTERVAL_MS);
    }
    c.cut.clear();
    c.advance(HINT_DELIVERY_INTERVAL_MS);
    assert_eq!(c.backlog(stand_in), 0);
    assert_eq!(c.local(down, "k"), None, "dropped, not delivered");
    assert_eq!(c.nodes[stand_in].status(c.now).leaderless.unwrap().anti_entropy.hints_dropped, 1);
}

#[test]
fn a_write_merged_into_a_hint_past_its_grace_replaces_it_and_is_delivered() {
    // Found in review: the merged hint kept the first hint's age and was dropped at the next
    // delivery, with the new write (counted toward w under a sloppy quorum) in it.
    let mut c = with_grace(2_500);
    let (coordinator, down, stand_in) = placement(&c, "k");
    let stand_in = stand_in.unwrap();
    c.cut.insert(down);
    assert_eq!(c.run(coordinator, "SET k v1"), Reply::Ok);
    c.advance(HINT_AFTER_MS);
    assert_eq!(c.backlog(stand_in), 1);
    c.advance(HINT_DELIVERY_INTERVAL_MS);
    c.advance(HINT_DELIVERY_INTERVAL_MS);
    // Just past the first hint's grace, before the next delivery: a new write, hinted at once.
    c.advance(550);
    assert_eq!(c.run(coordinator, "SET k v2"), Reply::Ok);
    c.advance(450);
    assert_eq!(c.backlog(stand_in), 1, "the new hint is kept");
    c.cut.clear();
    c.advance(HINT_DELIVERY_INTERVAL_MS);
    assert_eq!(c.local(down, "k"), Some(Bytes::from_static(b"v2")), "and delivered");
}
