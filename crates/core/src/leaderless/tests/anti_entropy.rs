//! Anti-entropy between nodes in one process: Merkle trees, rounds, tombstone collection.

use super::super::tree::{self, Tree};
use super::{bulk, Cluster, Input};
use crate::kv::Reply;
use crate::leaderless::{Canary, Leaderless, ReadRepair, Settings};
use crate::quorum::Nwr;
use crate::storage::{Engine, MemoryEngine};
use bytes::Bytes;

/// Milliseconds between rounds in these tests.
const INTERVAL_MS: u64 = 1_000;

fn cluster(nodes: usize, n: usize, adjust: impl Fn(&mut Settings)) -> Cluster {
    let q = if n == 2 { 1 } else { 2 };
    Cluster::with(nodes, Nwr::new(n, q, q).unwrap(), |s| {
        s.anti_entropy_interval_ms = INTERVAL_MS;
        adjust(s);
    })
}

impl Cluster {
    /// Advances the clock by one interval, ticking every node and delivering everything.
    fn round(&mut self) {
        self.now += INTERVAL_MS;
        for i in 0..self.nodes.len() {
            self.step(i, Input::Tick);
        }
        self.settle();
    }

    /// The tree a fresh scan of node `i`'s store builds: every key's entry.
    fn scanned(&mut self, i: usize) -> Tree {
        let mut t = Tree::new();
        let keys: Vec<Bytes> = self.nodes[i]
            .store()
            .engine()
            .scan(std::ops::Bound::Unbounded, usize::MAX)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            if let Some(state) = self.nodes[i].load(&key).unwrap() {
                t.set(&key, Some(tree::entry_hash(&key, &state.to_bytes().unwrap())));
            }
        }
        t
    }

    /// Node `i`'s only tree (a cluster of n nodes has one range).
    fn tree(&self, i: usize) -> Tree {
        let trees: Vec<&Tree> = self.nodes[i].trees.all().map(|(_, t)| t).collect();
        assert_eq!(trees.len(), 1, "one range when every node holds every key");
        trees[0].clone()
    }

    /// True when every node holds the same state of every key, by the stores themselves.
    fn stores_agree(&mut self) -> bool {
        let first = self.scanned(0);
        (1..self.nodes.len()).all(|i| self.scanned(i) == first)
    }
}

#[test]
fn anti_entropy_alone_brings_a_node_that_missed_writes_level_with_the_others_without_reads() {
    let mut c = cluster(3, 3, |_| {});
    c.cut.insert(2);
    for i in 0..300 {
        assert_eq!(c.run(i % 2, &format!("SET k{i} v{i}")), Reply::Ok);
    }
    assert_eq!(c.run(0, "DEL k7"), Reply::Int(1));
    assert!(!c.stores_agree(), "node 3 missed every write");
    c.cut.clear();
    let mut rounds = 0;
    while !c.stores_agree() {
        rounds += 1;
        assert!(rounds <= 20, "replicas still differ after 20 rounds");
        c.round();
    }
    assert_eq!(c.local(2, "k299"), Some(Bytes::from_static(b"v299")));
    assert_eq!(c.local(2, "k7"), None, "the delete reached it as a tombstone");
    let repaired: u64 = c.nodes.iter().map(|n| n.rounds.counters.keys_repaired).sum();
    assert_eq!(repaired, 300, "each missed key repaired once (k7 as its tombstone)");
    for i in 0..3 {
        assert_eq!(c.tree(i), c.scanned(i), "node {i}'s tree is what a scan of its store builds");
        assert_eq!(c.nodes[i].counters.reads_coordinated, 0, "no read ran");
    }
}

#[test]
fn a_round_between_equal_replicas_sends_only_their_roots() {
    let mut c = cluster(2, 2, |_| {});
    for i in 0..50 {
        c.run(0, &format!("SET k{i} v"));
    }
    c.round();
    let sent: u64 = c.nodes.iter().map(|n| n.rounds.bytes_sent).sum();
    let rounds: u64 = c.nodes.iter().map(|n| n.rounds.counters.rounds).sum();
    assert_eq!(rounds, 2, "each node started one round");
    assert!(sent < 200, "two root messages, {sent} bytes");
    assert_eq!(c.nodes.iter().map(|n| n.rounds.counters.ranges_same).sum::<u64>(), 2);
}

#[test]
fn one_differing_key_among_many_is_found_and_sent_alone_in_a_few_kilobytes() {
    let mut c = cluster(2, 2, |s| s.anti_entropy_interval_ms = 0);
    c.run(0, "SET key:0 value");
    let state = c.nodes[0].state_of(b"key:0").unwrap().unwrap();
    for i in 1..20_000 {
        for node in &mut c.nodes {
            node.save(&Bytes::from(format!("key:{i}")), &state, None, false).unwrap();
        }
    }
    assert!(c.stores_agree());
    c.cut.insert(1);
    c.run(0, "SET key:12345 changed");
    c.cut.clear();
    // One round started by hand from node 0.
    c.nodes[0].settings.anti_entropy_interval_ms = INTERVAL_MS;
    c.round();
    assert!(c.stores_agree(), "one round repairs one key");
    let sent: u64 = c.nodes.iter().map(|n| n.rounds.bytes_sent).sum();
    assert!(sent < 8 * 1024, "{sent} bytes for one key among 20,000");
    let keys: u64 = c.nodes.iter().map(|n| n.rounds.counters.keys_sent).sum();
    assert_eq!(keys, 2, "only the differing key's states travel, one each way (push-pull)");
    let repaired: u64 = c.nodes.iter().map(|n| n.rounds.counters.keys_repaired).sum();
    assert_eq!(repaired, 1, "and only the older side changes");
    assert_eq!(c.local(1, "key:12345"), Some(Bytes::from_static(b"changed")));
}

#[test]
fn push_sends_only_the_initiators_states_and_pull_only_the_peers() {
    for (style, expect_on_0, expect_on_1) in [
        (super::super::anti_entropy::Style::Push, false, true),
        (super::super::anti_entropy::Style::Pull, true, false),
        (super::super::anti_entropy::Style::PushPull, true, true),
    ] {
        let mut c = cluster(2, 2, |s| {
            s.anti_entropy_interval_ms = 0;
            s.anti_entropy_style = style;
        });
        c.cut.insert(1);
        c.run(0, "SET only-on-0 x");
        c.cut.clear();
        c.cut.insert(0);
        c.run(1, "SET only-on-1 y");
        c.cut.clear();
        c.nodes[0].settings.anti_entropy_interval_ms = INTERVAL_MS;
        c.round();
        assert_eq!(c.local(0, "only-on-1").is_some(), expect_on_0, "{style:?}: node 0 pulled");
        assert_eq!(c.local(1, "only-on-0").is_some(), expect_on_1, "{style:?}: node 0 pushed");
    }
}

#[test]
fn the_skip_subtree_canary_leaves_replicas_different_forever() {
    let mut c = cluster(2, 2, |s| s.canary = Canary::ExchangeSkipsSubtree);
    c.cut.insert(1);
    c.run(0, "SET lonely x");
    c.cut.clear();
    for _ in 0..10 {
        c.round();
    }
    assert!(!c.stores_agree(), "the one differing key sits in the subtree every comparison skips");
}

#[test]
fn the_tree_not_updated_on_repair_canary_leaves_a_tree_that_no_scan_would_build() {
    let mut c = cluster(3, 3, |s| {
        s.canary = Canary::TreeNotUpdatedOnRepair;
        s.anti_entropy_interval_ms = 0;
    });
    c.cut.insert(2);
    c.run(0, "SET k v");
    c.cut.clear();
    assert_eq!(c.run(2, "GET k"), bulk("v"), "a quorum read; it repairs node 3");
    c.time_out();
    assert_eq!(c.local(2, "k"), Some(Bytes::from_static(b"v")), "repaired");
    assert_ne!(c.tree(2), c.scanned(2), "but its tree does not know");
}

#[test]
fn a_node_reopened_over_its_store_rebuilds_its_trees_a_slice_per_tick_answering_meanwhile() {
    let mut c = cluster(2, 2, |s| s.anti_entropy_interval_ms = 0);
    let keys = super::super::REBUILD_KEYS_PER_TICK * 2 + 10;
    c.run(0, "SET k0 v");
    let state = c.nodes[0].state_of(b"k0").unwrap().unwrap();
    for i in 1..keys {
        c.nodes[0].save(&Bytes::from(format!("k{i}")), &state, None, false).unwrap();
    }
    let before = c.tree(0);
    let settings = c.nodes[0].settings().clone();
    let old =
        std::mem::replace(&mut c.nodes[0], Leaderless::open(MemoryEngine::new(), settings.clone(), c.now).unwrap());
    c.nodes[0] = Leaderless::open(old.into_engine(), settings, c.now).unwrap();
    let status = |c: &Cluster| c.nodes[0].status(c.now).leaderless.unwrap().anti_entropy;
    assert_eq!(status(&c).trees, "rebuilding");
    match c.run(0, "REPLIKV.DIGEST") {
        Reply::Error(e) => assert!(e.starts_with("BUSY") && e.contains("rebuilding"), "{e}"),
        other => panic!("a digest while rebuilding: {other:?}"),
    }
    assert_eq!(c.run(0, "GET k5"), bulk("v"), "requests are answered while it rebuilds");
    c.run(0, "SET late v2");
    let mut ticks = 0;
    while status(&c).trees == "rebuilding" {
        ticks += 1;
        c.step(0, Input::Tick);
    }
    assert_eq!(ticks, 4, "three slices of keys, and one that finds the end");
    assert_eq!(status(&c).tree_keys, keys as u64 + 1);
    let mut expect = before;
    let late = Bytes::from_static(b"late");
    let state = c.nodes[0].load(&late).unwrap().unwrap();
    expect.set(&late, Some(tree::entry_hash(&late, &state.to_bytes().unwrap())));
    assert_eq!(c.tree(0), expect, "the rebuilt tree, with the write made while it rebuilt");
    assert!(matches!(c.run(0, "REPLIKV.DIGEST"), Reply::Array(_)));
}

#[test]
fn a_digest_lists_the_trees_and_two_equal_replicas_give_the_same_digest() {
    let mut c = cluster(2, 2, |_| {});
    for i in 0..100 {
        c.run(0, &format!("SET k{i} v"));
    }
    let (a, b) = (c.run(0, "REPLIKV.DIGEST"), c.run(1, "REPLIKV.DIGEST"));
    assert_eq!(a, b);
    let Reply::Array(parts) = a else { panic!("{a:?}") };
    assert_eq!(parts[1], Reply::Int(100));
    let Reply::Array(buckets) = &parts[3] else { panic!() };
    assert_eq!(buckets.len(), 256);
    // Every key is listed in the bucket its leaf falls in.
    let leaf = tree::leaf_of(b"k42");
    let bucket = leaf / (tree::LEAVES / 256);
    let Reply::Array(listing) = c.run(0, &format!("REPLIKV.DIGEST BUCKET {bucket}")) else { panic!() };
    let Reply::Array(entries) = &listing[1] else { panic!() };
    assert!(entries.iter().any(|e| matches!(e, Reply::Array(kv) if kv[0] == bulk("k42"))));
}

#[test]
fn a_tombstone_is_kept_while_a_replica_lacks_it_however_long_and_purged_once_all_hold_it() {
    let grace = 5 * INTERVAL_MS;
    let mut c = cluster(3, 3, |s| s.tombstone_grace_ms = grace);
    assert_eq!(c.run(0, "SET doomed old"), Reply::Ok);
    c.cut.insert(2);
    assert_eq!(c.run(0, "DEL doomed"), Reply::Int(1));
    // Node 3 is down through many grace periods: nobody purges.
    for _ in 0..30 {
        c.round();
    }
    for i in 0..2 {
        let status = c.nodes[i].status(c.now).leaderless.unwrap();
        assert_eq!(status.anti_entropy.tombstones_pending, 1, "node {i} keeps the tombstone");
        assert_eq!(status.counters.tombstones_purged, 0);
    }
    assert_eq!(c.local(2, "doomed"), Some(Bytes::from_static(b"old")), "node 3 still has the old value");
    // It returns: anti-entropy hands it the tombstone, and then every node purges.
    c.cut.clear();
    let mut rounds = 0;
    while c.nodes.iter().any(|n| n.state_of(b"doomed").unwrap().is_some()) {
        rounds += 1;
        assert!(rounds <= 30, "the tombstone was never purged everywhere");
        c.round();
    }
    for _ in 0..10 {
        c.round();
    }
    let purged: Vec<u64> = c.nodes.iter().map(|n| n.counters.tombstones_purged).collect();
    assert_eq!(purged, [1, 1, 1], "each node purged once: no purged tombstone was handed back");
    assert_eq!(c.run(2, "GET doomed"), Reply::Nil, "the old value did not come back");
    for i in 0..3 {
        assert!(c.nodes[i].load(&Bytes::from_static(b"doomed")).unwrap().is_none(), "node {i} holds nothing of it");
        assert_eq!(c.nodes[i].status(c.now).leaderless.unwrap().anti_entropy.tombstones_pending, 0);
    }
}

#[test]
fn a_replica_that_never_held_the_key_gets_the_tombstone_before_any_purge_and_a_queued_old_write_stays_deleted() {
    // Found by the simulator (seeds 557 and 963): when aged tombstones left the trees, a
    // replica holding nothing of the key matched one holding the tombstone and counted as
    // safe; the old write still on its way to it then brought the key back after the purges.
    let grace = 5 * INTERVAL_MS;
    let (mut c, queued, deleted) = old_write_queued_to_node_3(grace, ReadRepair::Async);
    assert!(matches!(&queued[0].1, super::Message::Write { state, .. } if state.live().count() == 1));
    assert_eq!(c.nodes[2].state_of(b"doomed").unwrap(), None);
    let key = Bytes::from_static(b"doomed");
    let held_or_purged = |c: &Cluster, i: usize| {
        let state = c.nodes[i].state_of(&key).unwrap().or_else(|| c.nodes[i].purged_state(&key).cloned());
        state.is_some_and(|s| !s.is_empty() && s.live().next().is_none())
    };
    let mut rounds = 0;
    while c.nodes.iter().any(|n| n.counters.tombstones_purged == 0) {
        rounds += 1;
        assert!(rounds <= 40, "the tombstone was never purged everywhere");
        c.round();
        if c.nodes.iter().any(|n| n.counters.tombstones_purged > 0) {
            for i in 0..3 {
                assert!(held_or_purged(&c, i), "a node purged while node {} held no tombstone", i + 1);
            }
        }
    }
    assert!(c.nodes.iter().all(|n| n.tombstones.remembered_len() == 1));
    // The old write arrives at node 3 after every purge: the remembered tombstone covers it.
    for (from, message) in queued {
        let from = c.ids[from];
        c.step(2, Input::Message { from, message });
    }
    c.settle();
    assert_eq!(c.nodes[2].state_of(b"doomed").unwrap(), None, "node 3 stored the old value");
    for _ in 0..5 {
        c.round();
    }
    for i in 0..3 {
        assert_eq!(c.run(i, "GET doomed"), Reply::Nil, "the key came back through node {}", i + 1);
    }
    assert!(c.stores_agree());
    // Remembered for a grace period after the purge, then gone from the trees too.
    while c.now < deleted + 3 * grace + 2 * INTERVAL_MS {
        c.round();
    }
    for i in 0..3 {
        assert_eq!(c.nodes[i].tombstones.remembered_len(), 0, "node {} still remembers", i + 1);
        assert_eq!(c.tree(i).keys(), 0, "node {}'s tree keeps the purged key", i + 1);
    }
    assert_eq!(c.nodes.iter().map(|n| n.counters.tombstones_purged).sum::<u64>(), 3, "one purge per node");
}

/// Node `i` forgets what a restart forgets of its purges: the tombstones it remembers, and
/// their tree entries.
fn forget_purges(c: &mut Cluster, i: usize) {
    let node = &mut c.nodes[i];
    for (range, key) in node.tombstones.forget_due(u64::MAX) {
        node.trees.set(range, &key, None);
    }
}

/// A cluster of three where `doomed` was written and deleted through node 1 while node 3 got
/// neither: the write is still queued on its link (returned), the delete is lost; and the
/// delete's time.
fn old_write_queued_to_node_3(grace: u64, read_repair: ReadRepair) -> (Cluster, Vec<(usize, super::Message)>, u64) {
    let mut c = cluster(3, 3, |s| (s.tombstone_grace_ms, s.read_repair) = (grace, read_repair));
    c.held.insert(2, Vec::new());
    assert_eq!(c.run(0, "SET doomed old"), Reply::Ok);
    assert_eq!(c.run(0, "DEL doomed"), Reply::Int(1));
    let deleted = c.now;
    let mut queued = c.held.remove(&2).unwrap();
    queued.truncate(1);
    (c, queued, deleted)
}

/// A cluster of three whose nodes all purged the tombstone of `doomed` (and remember it),
/// with the old write of `doomed` to node 3 still queued; the delete's time.
fn purged_everywhere_with_an_old_write_queued(
    grace: u64,
    read_repair: ReadRepair,
) -> (Cluster, Vec<(usize, super::Message)>, u64) {
    let (mut c, queued, deleted) = old_write_queued_to_node_3(grace, read_repair);
    let mut rounds = 0;
    while c.nodes.iter().any(|n| n.counters.tombstones_purged == 0) {
        rounds += 1;
        assert!(rounds <= 40, "the tombstone was never purged everywhere");
        c.round();
    }
    (c, queued, deleted)
}

#[test]
fn a_node_that_forgot_a_purge_and_then_took_an_old_write_is_sent_the_tombstone_back() {
    // Found in review: anti-entropy sent nothing of a remembered tombstone, so the old value
    // stayed on the node that forgot, and came back once the others forgot too.
    let grace = 5 * INTERVAL_MS;
    let (mut c, queued, deleted) = purged_everywhere_with_an_old_write_queued(grace, ReadRepair::Async);
    forget_purges(&mut c, 2);
    for (from, message) in queued {
        let from = c.ids[from];
        c.step(2, Input::Message { from, message });
    }
    c.settle();
    assert_eq!(c.local(2, "doomed"), Some(Bytes::from_static(b"old")), "node 3 took the old write");
    for _ in 0..5 {
        c.round();
    }
    assert!(c.nodes.iter().map(|n| n.counters.tombstones_sent_back).sum::<u64>() > 0);
    assert_eq!(c.local(2, "doomed"), None, "node 3 still holds the old value");
    while c.now < deleted + 5 * grace {
        c.round();
    }
    for i in 0..3 {
        assert_eq!(c.run(i, "GET doomed"), Reply::Nil, "the key came back through node {}", i + 1);
    }
}

#[test]
fn a_read_does_not_hand_an_aged_tombstone_to_a_replica_that_purged_and_forgot_it() {
    // Found in review: the read repaired the node that forgot with the tombstone, which then
    // purged it again and remembered it for another grace period: a key read at least once
    // per grace period kept its tombstone for ever.
    // Under blocking read repair too, where the read waits for w replicas to hold its answer.
    let grace = 5 * INTERVAL_MS;
    for read_repair in [ReadRepair::Async, ReadRepair::Blocking] {
        let (mut c, _, _) = purged_everywhere_with_an_old_write_queued(grace, read_repair);
        forget_purges(&mut c, 2);
        let sent = c.nodes[0].counters.read_repairs_sent;
        // The read hears from nodes 1 and 3 only: one holds the answer, one nothing.
        c.held.insert(1, Vec::new());
        assert_eq!(c.run(0, "GET doomed"), Reply::Nil, "{read_repair:?}");
        c.time_out();
        c.held.remove(&1);
        assert_eq!(c.nodes[0].counters.read_repairs_sent, sent, "{read_repair:?}: a read repair was sent");
        assert_eq!(c.nodes[2].state_of(b"doomed").unwrap(), None, "{read_repair:?}: node 3 was handed the tombstone");
    }
}

#[test]
fn a_damaged_record_of_a_tombstone_past_its_grace_is_repaired_by_a_read() {
    // Found in review: a damaged record read as none, which a read took for a replica that
    // purged and forgot the tombstone, and left unrepaired.
    let grace = 5 * INTERVAL_MS;
    let mut c = cluster(3, 3, |s| (s.tombstone_grace_ms, s.anti_entropy_interval_ms) = (grace, 0));
    assert_eq!(c.run(0, "SET k v"), Reply::Ok);
    assert_eq!(c.run(0, "DEL k"), Reply::Int(1));
    c.now += 2 * grace; // past the grace; without anti-entropy nobody purges
    c.nodes[2].store.engine_mut().damage(b"k");
    assert_eq!(c.run(2, "GET k"), Reply::Nil);
    c.time_out();
    assert_eq!(c.nodes[2].store.damaged().count(), 0, "the read did not repair the damaged record");
    let state = c.nodes[2].state_of(b"k").unwrap().expect("the tombstone, rewritten");
    assert!(state.live().next().is_none());
}

#[test]
fn a_tombstone_held_everywhere_waits_for_the_grace_period() {
    let grace = 20 * INTERVAL_MS;
    let mut c = cluster(3, 3, |s| s.tombstone_grace_ms = grace);
    c.run(0, "SET k v");
    c.run(0, "DEL k");
    let deleted = c.now;
    let key = Bytes::from_static(b"k");
    while c.nodes.iter().any(|n| n.state_of(&key).unwrap().is_some()) {
        c.round();
        assert!(c.now < deleted + grace + 20 * INTERVAL_MS, "never purged");
    }
    assert!(c.now >= deleted + grace, "purged after {} ms, before the grace of {grace} ms", c.now - deleted);
}

#[test]
fn a_round_from_a_node_with_trees_of_another_shape_is_refused_and_counted() {
    use super::super::anti_entropy::{Exchange, Round, Shape, Style};
    let mut c = cluster(2, 2, |_| {});
    let from = c.ids[1];
    let message = Exchange::Roots {
        round: Round { initiator: from, number: 1, style: Style::PushPull },
        shape: Shape { fanout: 2, depth: 16 },
        ranges: vec![(1, [0; 32])],
    };
    c.step(0, Input::Message { from, message: super::Message::AntiEntropy(message) });
    assert_eq!(c.nodes[0].rounds.counters.refused, 1);
    assert!(c.net.is_empty(), "no answer");
}

#[test]
fn with_more_nodes_than_n_each_pair_compares_the_ranges_it_shares_and_all_converge() {
    let mut c = cluster(5, 3, |_| {});
    let ranges = c.nodes[0].trees.all().count();
    assert!(ranges > 1, "five nodes, n = 3: node 1 replicates {ranges} ranges");
    c.cut.insert(4);
    for i in 0..200 {
        let key = format!("k{i}");
        let list = c.nodes[0].ring.preference_list(key.as_bytes());
        let via = list.iter().map(|id| c.ids.iter().position(|x| x == id).unwrap()).find(|i| *i != 4).unwrap();
        assert_eq!(c.run(via, &format!("SET {key} v{i}")), Reply::Ok);
    }
    c.cut.clear();
    let agree = |c: &mut Cluster| {
        (0..200).all(|i| {
            let key = Bytes::from(format!("k{i}"));
            let replicas = c.nodes[0].ring.preference_list(&key);
            let states: Vec<_> = replicas
                .iter()
                .map(|id| c.nodes[c.ids.iter().position(|x| x == id).unwrap()].state_of(&key).unwrap())
                .collect();
            states.windows(2).all(|w| w[0] == w[1])
        })
    };
    assert!(!agree(&mut c), "node 5 missed its share");
    let mut rounds = 0;
    while !agree(&mut c) {
        rounds += 1;
        assert!(rounds <= 40, "replicas still differ after 40 rounds");
        c.round();
    }
    for i in 0..5 {
        let held: u64 = c.nodes[i].trees.all().map(|(_, t)| t.keys()).sum();
        let stored = c.scanned(i).keys();
        assert_eq!(held, stored, "node {i}'s trees hold exactly its keys");
    }
}

#[test]
fn states_of_a_key_the_two_sides_do_not_both_replicate_are_refused() {
    use super::super::anti_entropy::{Exchange, Round, Style};
    let mut c = cluster(5, 3, |_| {});
    // A key node 1 does not replicate, sent to it as if in a round.
    let key = (0..).map(|i| Bytes::from(format!("x{i}"))).find(|k| !c.nodes[0].ring.is_replica(k, c.ids[0])).unwrap();
    let from = c.nodes[0].ring.preference_list(&key)[0];
    let state = {
        let i = c.ids.iter().position(|x| *x == from).unwrap();
        c.run(i, &format!("SET {} v", String::from_utf8_lossy(&key)));
        c.nodes[i].state_of(&key).unwrap().unwrap()
    };
    let round = Round { initiator: c.ids[0], number: 1, style: Style::PushPull };
    let message = Exchange::States { round, states: vec![(key.clone(), state)], want: vec![] };
    c.step(0, Input::Message { from, message: super::Message::AntiEntropy(message) });
    assert_eq!(c.nodes[0].state_of(&key).unwrap(), None, "not stored");
    assert_eq!(c.nodes[0].rounds.counters.refused, 1);
}

#[test]
fn a_coordinator_that_purged_a_tombstone_never_hands_the_old_dots_out_again() {
    let mut c = cluster(3, 3, |s| s.anti_entropy_interval_ms = 0);
    assert_eq!(c.run(0, "SET k old"), Reply::Ok);
    assert_eq!(c.run(0, "DEL k"), Reply::Int(1));
    // Node 1 purges its tombstone (as it would once it knew every replica safe); the others
    // have not yet.
    let version = c.nodes[0].state_of(b"k").unwrap().unwrap().newest_version().unwrap();
    let record = crate::storage::Record { version, value: None, expire_at_ms: None };
    c.nodes[0].store.apply(crate::replication::Change { key: Bytes::from_static(b"k"), record }).unwrap();
    assert_eq!(c.nodes[0].state_of(b"k").unwrap(), None);
    // Its next write of the key, acknowledged by all three, is on all three.
    assert_eq!(c.run(0, "SET k new"), Reply::Ok);
    for i in 0..3 {
        assert_eq!(c.local(i, "k"), Some(Bytes::from_static(b"new")), "node {i} kept the new write");
    }
}

#[test]
fn an_older_aged_tombstone_read_back_into_a_coordinator_that_purged_does_not_make_it_reuse_a_dot() {
    // Found in review: the floor applied only to a context naming none of the coordinator's
    // dots, and an older tombstone can bring back a context that names some.
    let mut c = cluster(3, 3, |s| s.anti_entropy_interval_ms = 0);
    assert_eq!(c.run(0, "SET k v1"), Reply::Ok);
    assert_eq!(c.run(0, "DEL k"), Reply::Int(1)); // an old tombstone on all three
    c.cut.insert(2);
    assert_eq!(c.run(0, "SET k v2"), Reply::Ok);
    assert_eq!(c.run(0, "DEL k"), Reply::Int(1)); // a newer one on nodes 1 and 2; node 3 keeps the old
    c.cut.clear();
    // Node 1 purged the newer tombstone and forgot it (as after a restart); node 2 has not.
    let version = c.nodes[0].state_of(b"k").unwrap().unwrap().newest_version().unwrap();
    let record = crate::storage::Record { version, value: None, expire_at_ms: None };
    c.nodes[0].store.apply(crate::replication::Change { key: Bytes::from_static(b"k"), record }).unwrap();
    // A read through node 1 that hears nodes 1 and 3 repairs node 1 with the old tombstone.
    c.cut.insert(1);
    let _ = c.run(0, "GET k");
    c.time_out();
    c.cut.clear();
    assert_eq!(c.run(0, "SET k new"), Reply::Ok);
    let via_node_2 = c.run(1, "GET k");
    c.time_out();
    assert_eq!(via_node_2, bulk("new"), "an acknowledged write was lost");
}

#[test]
fn a_client_context_read_before_a_purge_is_still_accepted_after_it() {
    let mut c = cluster(3, 3, |s| s.anti_entropy_interval_ms = 0);
    assert_eq!(c.run(0, "SET k v1"), Reply::Ok);
    let Reply::Array(parts) = c.run(0, "REPLIKV.SIBLINGS k") else { panic!("siblings") };
    let Reply::Bulk(token) = &parts[0] else { panic!("a context token: {parts:?}") };
    let token = String::from_utf8(token.to_vec()).unwrap();
    assert_eq!(c.run(0, "DEL k"), Reply::Int(1));
    for node in &mut c.nodes {
        let version = node.state_of(b"k").unwrap().unwrap().newest_version().unwrap();
        let record = crate::storage::Record { version, value: None, expire_at_ms: None };
        node.store.apply(crate::replication::Change { key: Bytes::from_static(b"k"), record }).unwrap();
    }
    c.now += 1;
    assert_eq!(c.run(0, &format!("SET k v2 CONTEXT {token}")), Reply::Ok);
    assert_eq!(c.run(1, "GET k"), bulk("v2"));
}

#[test]
fn a_listing_cut_short_is_compared_only_up_to_its_last_key() {
    use super::super::anti_entropy::{Exchange, Round, Style};
    let mut c = cluster(2, 2, |s| s.anti_entropy_interval_ms = 0);
    // Three keys in one leaf, on node 1 only.
    let leaf = tree::leaf_of(b"seed");
    let mut keys: Vec<Bytes> =
        (0..).map(|i| Bytes::from(format!("x{i}"))).filter(|k| tree::leaf_of(k) == leaf).take(3).collect();
    keys.sort();
    c.cut.insert(1);
    for k in &keys {
        assert_eq!(c.run(0, &format!("SET {} v", String::from_utf8_lossy(k))), Reply::Ok);
    }
    c.cut.clear();
    // Node 2's listing of the leaf, cut after the first key (with another hash).
    let round = Round { initiator: c.ids[0], number: 7, style: Style::PushPull };
    let message = Exchange::Leaves {
        round,
        range: c.tree_range(0),
        leaves: vec![(leaf, vec![(keys[0].clone(), [9; 32])])],
        cut: true,
    };
    let from = c.ids[1];
    c.cut.insert(1);
    c.step(0, Input::Message { from, message: super::Message::AntiEntropy(message) });
    assert_eq!(c.nodes[0].rounds.counters.keys_sent, 1, "only the key the cut listing covers is sent");
}

impl Cluster {
    /// The id of node `i`'s only range.
    fn tree_range(&self, i: usize) -> u64 {
        self.nodes[i].trees.all().next().unwrap().0
    }
}
