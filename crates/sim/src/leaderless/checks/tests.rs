//! Each checker against hand-made histories: one that breaks its property, and the nearest
//! ones that do not.

use super::*;
use crate::leaderless::history::Outcome;
use bytes::Bytes;
use replikv_core::version::Timestamp;

fn node(n: u64) -> NodeId {
    NodeId::from_name(&format!("n{n}"))
}

fn version(ms: u64, n: u64) -> Version {
    Version { ts: Timestamp { millis: ms, logical: 0 }, node: node(n) }
}

fn dot(n: u64, counter: u64) -> Dot {
    Dot { node: node(n), counter }
}

fn context(entries: &[(u64, u64)]) -> VersionVector {
    let mut entries: Vec<(NodeId, u64)> = entries.iter().map(|&(n, c)| (node(n), c)).collect();
    entries.sort();
    VersionVector::from_entries(entries).unwrap()
}

/// A history and its stamps, built by hand; every operation is on key `k`.
#[derive(Default)]
struct Run {
    history: LeaderlessHistory,
    stamps: BTreeMap<u64, Stamp>,
}

/// A write's shape: its number, invocation, acknowledgement (`None`: indeterminate), dot,
/// version (ms, node) and what it replaced.
struct W<'a> {
    write: u64,
    at: (u64, Option<u64>),
    dot: (u64, u64),
    version: (u64, u64),
    replaced: &'a [(u64, u64)],
}

impl Run {
    fn write(&mut self, w: W, delete: bool) {
        let key = "k".to_string();
        let op = if delete {
            Op::Del { key: key.clone(), write: w.write }
        } else {
            Op::Set { key: key.clone(), write: w.write, context: false }
        };
        let outcome = if w.at.1.is_some() { Outcome::Written(None) } else { Outcome::Indeterminate };
        self.history.events.push(Event { client: 0, node: None, op, invoke_ms: w.at.0, complete_ms: w.at.1, outcome });
        let stamp = Stamp {
            key,
            dot: dot(w.dot.0, w.dot.1),
            version: version(w.version.0, w.version.1),
            replaced: context(w.replaced),
            delete,
        };
        self.stamps.insert(w.write, stamp);
    }

    fn set(&mut self, w: W) {
        self.write(w, false);
    }

    fn del(&mut self, w: W) {
        self.write(w, true);
    }

    fn read(&mut self, at: (u64, u64), values: &[u64], seen: Option<&[(u64, u64)]>) {
        let seen = Seen { values: values.to_vec(), context: seen.map(context) };
        let op = Op::Read { key: "k".into() };
        self.history.events.push(Event {
            client: 1,
            node: None,
            op,
            invoke_ms: at.0,
            complete_ms: Some(at.1),
            outcome: Outcome::Read(seen),
        });
    }

    fn stale(&self) -> Vec<Miss> {
        stale_reads(&self.history, &Writes::new(&self.history, &self.stamps))
    }
}

/// W1 then W2 (which had seen W1), both acknowledged, at versions 5 and 25.
fn two_writes() -> Run {
    let mut run = Run::default();
    run.set(W { write: 1, at: (0, Some(10)), dot: (1, 1), version: (5, 1), replaced: &[] });
    run.set(W { write: 2, at: (20, Some(30)), dot: (2, 1), version: (25, 2), replaced: &[(1, 1)] });
    run
}

#[test]
fn a_read_after_an_acknowledged_write_that_returns_an_older_one_is_stale() {
    let mut run = two_writes();
    run.read((40, 45), &[1], None);
    let misses = run.stale();
    assert_eq!(misses.len(), 1, "{misses:?}");
    assert_eq!((misses[0].missed, misses[0].dot), (2, dot(2, 1)));
    assert!(misses[0].why.contains("returned #1 (version 5.0@n1) but write #2 (version 25.0@n2)"), "{}", misses[0].why);
}

#[test]
fn the_newest_write_or_a_read_that_began_before_its_acknowledgement_is_not_stale() {
    let mut run = two_writes();
    run.read((40, 45), &[2], None);
    run.read((25, 35), &[1], None); // began before W2 was acknowledged
    run.read((5, 8), &[], None); // began before anything was acknowledged
    assert!(run.stale().is_empty(), "{:?}", run.stale());
}

#[test]
fn under_lww_an_older_write_stamped_ahead_wins_and_is_counted_not_failed() {
    let mut run = Run::default();
    // W1's coordinator's clock runs 500 ms ahead; W2, acknowledged later, did not see W1.
    run.set(W { write: 1, at: (0, Some(10)), dot: (1, 1), version: (500, 1), replaced: &[] });
    run.set(W { write: 2, at: (20, Some(30)), dot: (2, 1), version: (25, 2), replaced: &[] });
    run.read((40, 45), &[1], None);
    assert!(run.stale().is_empty(), "W1 has the highest version: lww returns it");
    let writes = Writes::new(&run.history, &run.stamps);
    assert_eq!(older_overwrites(&run.history, &writes), BTreeSet::from([2]));
    // Without skew W2 is stamped higher and wins: nothing to count.
    let mut calm = two_writes();
    calm.read((40, 45), &[2], None);
    assert!(older_overwrites(&calm.history, &Writes::new(&calm.history, &calm.stamps)).is_empty());
}

#[test]
fn a_nil_read_needs_a_delete_at_least_as_new_as_the_newest_acknowledged_write() {
    let mut run = two_writes();
    run.read((40, 45), &[], None);
    assert_eq!(run.stale().len(), 1, "nil with no delete at all");
    // An indeterminate delete invoked before the read ended may have taken effect.
    run.del(W { write: 3, at: (42, None), dot: (3, 1), version: (43, 3), replaced: &[(1, 1), (2, 1)] });
    assert!(run.stale().is_empty(), "{:?}", run.stale());
    // An older delete does not excuse it.
    let mut run = two_writes();
    run.del(W { write: 3, at: (12, None), dot: (3, 1), version: (15, 3), replaced: &[(1, 1)] });
    run.read((40, 45), &[], None);
    assert_eq!(run.stale().len(), 1);
}

#[test]
fn under_siblings_a_read_must_have_seen_every_acknowledged_write() {
    let mut run = two_writes();
    run.read((40, 45), &[1], Some(&[(1, 1)]));
    assert_eq!(run.stale().len(), 1, "the context misses W2");
    let mut run = two_writes();
    run.read((40, 45), &[2], Some(&[(1, 1), (2, 1)]));
    assert!(run.stale().is_empty());
}

#[test]
fn a_value_an_acknowledged_delete_replaced_must_not_come_back() {
    let mut run = Run::default();
    run.set(W { write: 1, at: (0, Some(10)), dot: (1, 1), version: (5, 1), replaced: &[] });
    run.del(W { write: 2, at: (20, Some(30)), dot: (2, 1), version: (25, 2), replaced: &[(1, 1)] });
    // A write concurrent with the delete (it had not seen W1 deleted) may live on.
    run.set(W { write: 3, at: (22, Some(32)), dot: (3, 1), version: (26, 3), replaced: &[] });
    run.read((40, 45), &[3], None);
    run.read((25, 28), &[1], None); // began before the delete was acknowledged
    let writes = Writes::new(&run.history, &run.stamps);
    assert!(resurrections(&run.history, &writes).is_empty());
    run.read((50, 55), &[1], None);
    let writes = Writes::new(&run.history, &run.stamps);
    let found = resurrections(&run.history, &writes);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("returned #1, which delete #2"), "{}", found[0]);
}

/// A state merged from one write per entry, `[write number, node, ms]`: each the node's first
/// write, on an empty state, stamped at ms.
fn state_with(writes: &[[u64; 3]]) -> Siblings {
    let mut state = Siblings::new();
    for &[write, n, ms] in writes {
        let mut one = Siblings::new();
        one.write(node(n), &VersionVector::new(), version(ms, n), Some(Bytes::from(write.to_string()))).unwrap();
        state.merge(&one).unwrap();
    }
    state
}

#[test]
fn concurrent_writes_kept_as_siblings_are_accounted_for() {
    let mut run = Run::default();
    run.set(W { write: 1, at: (0, Some(10)), dot: (1, 1), version: (5, 1), replaced: &[] });
    run.set(W { write: 2, at: (0, Some(10)), dot: (2, 1), version: (6, 2), replaced: &[] });
    let state = state_with(&[[1, 1, 5], [2, 2, 6]]);
    let states = vec![BTreeMap::from([("k".to_string(), state)])];
    let found = unaccounted_writes(&states, &Writes::new(&run.history, &run.stamps), false);
    assert_eq!(found, Unaccounted::default());
    assert_eq!(resurrected_in_final_states(&states, &Writes::new(&run.history, &run.stamps)), Vec::<String>::new());
}

#[test]
fn a_write_seen_but_neither_kept_nor_replaced_has_vanished_and_one_in_no_state_is_lost() {
    let mut run = Run::default();
    run.set(W { write: 1, at: (0, Some(10)), dot: (1, 1), version: (5, 1), replaced: &[] });
    run.set(W { write: 2, at: (0, Some(10)), dot: (2, 1), version: (6, 2), replaced: &[] });
    // A state that has seen both but holds only W2: W1 went without a write replacing it
    // (what a replica that lets an older state overwrite its own can do).
    let mut state = state_with(&[[2, 2, 6]]);
    let mut seen_w1 = state_with(&[[1, 1, 5]]);
    let mut replaced = Siblings::new();
    replaced.write(node(3), seen_w1.context(), version(7, 3), Some(Bytes::from("9"))).unwrap();
    seen_w1.merge(&replaced).unwrap();
    state.merge(&seen_w1).unwrap();
    let states = vec![BTreeMap::from([("k".to_string(), state.clone())])];
    let writes = Writes::new(&run.history, &run.stamps);
    let found = unaccounted_writes(&states, &writes, false);
    assert_eq!(found.vanished.len(), 1, "{found:?}");
    assert!(found.vanished[0].contains("write #1 of k (dot n1:1)"), "{:?}", found.vanished);
    // Excused when a node counted siblings merged away by the bound.
    assert_eq!(unaccounted_writes(&states, &writes, true).merged_by_bound, 1);
    // Once the replacing write is known to the oracle, W1 was replaced on purpose.
    run.set(W { write: 9, at: (11, Some(20)), dot: (3, 1), version: (7, 3), replaced: &[(1, 1)] });
    let writes = Writes::new(&run.history, &run.stamps);
    assert_eq!(unaccounted_writes(&states, &writes, false), Unaccounted::default());
    // An acknowledged write no final state has seen is lost.
    run.set(W { write: 4, at: (21, Some(30)), dot: (1, 2), version: (22, 1), replaced: &[(1, 1)] });
    let found = unaccounted_writes(&states, &Writes::new(&run.history, &run.stamps), false);
    assert_eq!(found.lost.len(), 1, "{found:?}");
}

#[test]
fn one_dot_given_to_two_writes_is_a_clash() {
    let mut run = Run::default();
    run.set(W { write: 1, at: (0, None), dot: (1, 1), version: (5, 1), replaced: &[] });
    run.set(W { write: 2, at: (100, Some(110)), dot: (1, 1), version: (105, 1), replaced: &[] });
    let found = unaccounted_writes(&[], &Writes::new(&run.history, &run.stamps), false);
    assert_eq!(found.clashes, vec!["writes [1, 2] of k were all given dot n1:1".to_string()]);
}

#[test]
fn a_siblings_read_must_list_every_write_it_has_seen_unless_replaced() {
    let mut run = Run::default();
    run.set(W { write: 1, at: (0, Some(10)), dot: (1, 1), version: (5, 1), replaced: &[] });
    run.set(W { write: 2, at: (0, Some(10)), dot: (2, 1), version: (6, 2), replaced: &[] });
    run.read((20, 25), &[1, 2], Some(&[(1, 1), (2, 1)]));
    let writes = Writes::new(&run.history, &run.stamps);
    assert_eq!(unaccounted_in_reads(&run.history, &writes, false), Unaccounted::default());
    run.read((30, 35), &[2], Some(&[(1, 1), (2, 1)]));
    let writes = Writes::new(&run.history, &run.stamps);
    assert_eq!(unaccounted_in_reads(&run.history, &writes, false).vanished.len(), 1);
    let many: Vec<u64> = (100..100 + SIBLINGS_MAX as u64 + 1).collect();
    run.read((40, 45), &many, Some(&[(1, 1), (2, 1)]));
    let writes = Writes::new(&run.history, &run.stamps);
    assert_eq!(unaccounted_in_reads(&run.history, &writes, false).over_bound.len(), 1);
}
