//! The checkers on hand-built evidence: two datacenters' leaders `a` and `b`, one key.

use super::*;
use crate::history::Event;
use crate::leaderless::history::{Op, Outcome};
use bytes::Bytes;
use replikv_core::causality::{Dot, Sibling, VersionVector};
use replikv_core::multi_leader::{Conflict, Resolve};
use replikv_core::version::{NodeId, Timestamp, Version};

fn a() -> NodeId {
    NodeId::from_name("a")
}

fn b() -> NodeId {
    NodeId::from_name("b")
}

fn version(ms: u64, node: NodeId) -> Version {
    Version { ts: Timestamp { millis: ms, logical: 0 }, node }
}

/// Write `write` of `k`, made on `node` as its `counter`th at `ms`, over `replaced`.
fn stamp(node: NodeId, counter: u64, ms: u64, replaced: VersionVector) -> Stamp {
    Stamp { key: "k".into(), dot: Dot { node, counter }, version: version(ms, node), replaced, delete: false }
}

/// An acknowledged SET of `k` numbered `write`.
fn acked(write: u64) -> Event<Op, Outcome> {
    let op = Op::Set { key: "k".into(), write, context: false };
    Event { client: 0, node: None, op, invoke_ms: 0, complete_ms: Some(1), outcome: Outcome::Written(None) }
}

/// A state of `k` holding the writes `(stamp, write)`, having seen them all (and each
/// node's earlier writes of it; one write per node).
fn state(writes: &[(&Stamp, u64)]) -> States {
    let mut s = Siblings::new();
    for (stamp, write) in writes {
        let mut one = Siblings::new();
        for _ in 0..stamp.dot.counter {
            one.write(stamp.dot.node, &one.context().clone(), stamp.version, Some(Bytes::from(write.to_string())))
                .unwrap();
        }
        s.merge(&one).unwrap();
    }
    BTreeMap::from([("k".to_string(), s)])
}

/// A conflict log entry: `lost` lost to `kept` under lww.
fn entry(lost: &Stamp, kept: &Stamp) -> ConflictEntry {
    let sibling = |s: &Stamp| Sibling { dot: s.dot, version: s.version, value: Some(Bytes::from_static(b"v")) };
    let conflict = Conflict {
        resolve: Resolve::Lww,
        held: vec![sibling(lost)],
        arrived: vec![sibling(kept)],
        kept: vec![sibling(kept)],
        lost: vec![sibling(lost)],
    };
    ConflictEntry::new(0, Bytes::from_static(b"k"), "dc2", a(), &conflict)
}

struct Case {
    history: LeaderlessHistory,
    stamps: BTreeMap<u64, Stamp>,
    states: Vec<States>,
    conflicts: Vec<ConflictEntry>,
}

impl Case {
    fn evidence(&self) -> Evidence<'_> {
        Evidence {
            history: &self.history,
            stamps: &self.stamps,
            states: &self.states,
            conflicts: &self.conflicts,
            rolled_back: &[],
            excuse_rolled_back: false,
        }
    }
}

/// Write 1 on `a` at 10 ms and write 2 on `b` at `b_ms`, concurrent, both acknowledged; the
/// final state holds write 2 only.
fn concurrent_pair(b_ms: u64) -> Case {
    let (one, two) = (stamp(a(), 1, 10, VersionVector::new()), stamp(b(), 1, b_ms, VersionVector::new()));
    let states = vec![state(&[(&two, 2)]); 2];
    Case {
        history: LeaderlessHistory { events: vec![acked(1), acked(2)] },
        stamps: BTreeMap::from([(1, one), (2, two)]),
        states,
        conflicts: Vec::new(),
    }
}

#[test]
fn lww_passes_a_loser_logged_as_lost_to_a_higher_version() {
    let mut case = concurrent_pair(20);
    case.conflicts = vec![entry(&case.stamps[&1], &case.stamps[&2])];
    let (failures, lost) = lww_losers(&case.evidence());
    assert_eq!((failures, lost), (Vec::<String>::new(), 1));
}

#[test]
fn lww_fails_a_loser_no_conflict_log_lists() {
    let case = concurrent_pair(20);
    let (failures, _) = lww_losers(&case.evidence());
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].contains("no conflict log lists it as lost"), "{failures:?}");
}

#[test]
fn lww_fails_a_conflict_that_kept_the_lower_version() {
    // b's write is stamped before a's, yet it is kept and a's logged as lost.
    let mut case = concurrent_pair(5);
    case.conflicts = vec![entry(&case.stamps[&1], &case.stamps[&2])];
    let (failures, _) = lww_losers(&case.evidence());
    assert!(failures.len() == 1 && failures[0].contains("to a lower version"), "{failures:?}");
}

#[test]
fn a_write_another_had_seen_may_be_gone_under_every_rule() {
    // b's write replaced a's: its context covers a's dot.
    let mut case = concurrent_pair(20);
    let mut replaced = Siblings::new();
    replaced.write(a(), &VersionVector::new(), version(10, a()), Some(Bytes::from_static(b"1"))).unwrap();
    case.stamps.get_mut(&2).unwrap().replaced = replaced.context().clone();
    assert_eq!(lww_losers(&case.evidence()), (Vec::new(), 0));
    assert!(siblings_kept(&case.evidence()).is_empty());
    assert!(merged_once(&case.evidence()).is_empty());
}

#[test]
fn merge_and_app_fail_a_concurrent_write_missing_from_the_final_state() {
    let case = concurrent_pair(20);
    let merged = merged_once(&case.evidence());
    assert!(merged.len() == 1 && merged[0].contains("is 0 times"), "{merged:?}");
    let kept = siblings_kept(&case.evidence());
    assert!(kept.len() == 1 && kept[0].contains("not among n1's siblings"), "{kept:?}");
}

#[test]
fn merge_passes_each_concurrent_value_once_and_fails_one_twice() {
    let mut case = concurrent_pair(20);
    let (one, two) = (case.stamps[&1].clone(), case.stamps[&2].clone());
    case.states = vec![state(&[(&one, 1), (&two, 2)]); 2];
    assert!(merged_once(&case.evidence()).is_empty());
    assert!(siblings_kept(&case.evidence()).is_empty());
    // n2 holds write 1's value a second time, under a dot of its own (applied twice).
    let again = stamp(NodeId::from_name("c"), 1, 30, VersionVector::new());
    case.states[1] = state(&[(&one, 1), (&two, 2), (&again, 1)]);
    let merged = merged_once(&case.evidence());
    assert!(merged.len() == 1 && merged[0].contains("is 2 times in n2's"), "{merged:?}");
}

#[test]
fn divergence_names_the_key_and_every_nodes_state() {
    let case = concurrent_pair(20);
    assert!(divergence(&case.states).is_empty());
    let mut states = case.states.clone();
    states[1] = state(&[(&case.stamps[&1], 1)]);
    let differ = divergence(&states);
    assert!(
        differ.len() == 1 && differ[0].starts_with("k differs (n1: [2]") && differ[0].contains("n2: [1]"),
        "{differ:?}"
    );
}
