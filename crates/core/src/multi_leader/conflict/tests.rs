use super::*;
use crate::causality::tests::Rng;
use crate::causality::VersionVector;
use crate::version::{Hlc, NodeId, Timestamp};
use std::collections::BTreeSet;

fn leader(i: u64) -> NodeId {
    NodeId(100 + i)
}

/// Leader `i`'s plain write of `value` on its own state: it replaces everything it has seen.
fn write(state: &mut Siblings, i: u64, millis: u64, value: Option<&str>) -> Dot {
    let version = Version { ts: Timestamp { millis, logical: 0 }, node: leader(i) };
    let context = state.context().clone();
    state.write(leader(i), &context, version, value.map(|v| Bytes::copy_from_slice(v.as_bytes()))).unwrap().dot
}

fn text(read: Read) -> String {
    match read {
        Read::Value(v) => String::from_utf8(v.to_vec()).unwrap(),
        other => format!("{other:?}"),
    }
}

/// The lecture's example: two leaders write the same cell while cut off from each other.
fn lecture() -> (Siblings, Siblings) {
    let (mut a, mut b) = (Siblings::new(), Siblings::new());
    write(&mut a, 1, 1_000, Some("me-old.jpg"));
    receive(&mut b, &a, Resolve::Lww).unwrap();
    write(&mut a, 1, 2_000, Some("me-new.jpg"));
    write(&mut b, 2, 2_500, Some("me-old2.jpg"));
    (a, b)
}

#[test]
fn a_change_that_saw_the_current_version_replaces_it_without_a_conflict() {
    let (mut a, mut b) = (Siblings::new(), Siblings::new());
    write(&mut a, 1, 1_000, Some("me-old.jpg"));
    let first = receive(&mut b, &a, Resolve::Lww).unwrap();
    assert!(first.changed);
    assert_eq!(first.conflict, None);
    write(&mut b, 2, 1_500, Some("me-new.jpg"));
    let back = receive(&mut a, &b, Resolve::Lww).unwrap();
    assert!(back.changed);
    assert_eq!(back.conflict, None, "the change's old version is a's current one");
    assert_eq!(text(read(&a, Resolve::Lww, b",")), "me-new.jpg");
    assert_eq!(a, b);
}

#[test]
fn a_duplicate_or_an_older_change_changes_nothing() {
    let (mut a, mut b) = (Siblings::new(), Siblings::new());
    write(&mut a, 1, 1_000, Some("x"));
    let old = a.clone();
    write(&mut a, 1, 2_000, Some("y"));
    receive(&mut b, &a, Resolve::Merge).unwrap();
    let again = receive(&mut b, &a, Resolve::Merge).unwrap();
    assert_eq!(again, Received::default(), "applied twice: no effect");
    let late = receive(&mut b, &old, Resolve::Merge).unwrap();
    assert_eq!(late, Received::default(), "an older change that arrives late: no effect");
    assert_eq!(text(read(&b, Resolve::Merge, b",")), "y");
}

#[test]
fn lww_keeps_the_highest_version_and_lists_the_loser() {
    let (a, b) = lecture();
    let (mut at_a, mut at_b) = (a.clone(), b.clone());
    let got = receive(&mut at_a, &b, Resolve::Lww).unwrap();
    receive(&mut at_b, &a, Resolve::Lww).unwrap();
    assert_eq!(at_a, at_b, "both leaders end alike");
    assert_eq!(text(read(&at_a, Resolve::Lww, b",")), "me-old2.jpg", "b's write is stamped later");
    let conflict = got.conflict.expect("concurrent writes");
    assert_eq!(conflict.resolve, Resolve::Lww);
    let value = |s: &Sibling| s.value.clone().unwrap();
    assert_eq!(conflict.held.iter().map(value).collect::<Vec<_>>(), ["me-new.jpg"]);
    assert_eq!(conflict.arrived.iter().map(value).collect::<Vec<_>>(), ["me-old2.jpg"]);
    assert_eq!(conflict.kept.iter().map(value).collect::<Vec<_>>(), ["me-old2.jpg"]);
    assert_eq!(conflict.lost.iter().map(value).collect::<Vec<_>>(), ["me-new.jpg"], "the loser is kept for the log");
    assert_eq!(at_a.values().len(), 1);
    let old = at_a.clone();
    let after = receive(&mut at_a, &a, Resolve::Lww).unwrap();
    assert_eq!(after, Received::default(), "the loser arriving again does not come back");
    assert_eq!(at_a, old);
}

#[test]
fn merge_orders_the_values_and_joins_them() {
    let (a, b) = lecture();
    let (mut at_a, mut at_b) = (a.clone(), b.clone());
    let got = receive(&mut at_a, &b, Resolve::Merge).unwrap();
    receive(&mut at_b, &a, Resolve::Merge).unwrap();
    assert_eq!(at_a, at_b);
    assert_eq!(text(read(&at_a, Resolve::Merge, b",")), "me-new.jpg,me-old2.jpg");
    assert_eq!(text(read(&at_a, Resolve::Merge, b" | ")), "me-new.jpg | me-old2.jpg");
    let conflict = got.conflict.expect("concurrent writes");
    assert!(conflict.lost.is_empty(), "merge loses nothing");
    assert_eq!(conflict.kept.len(), 2);
    // A client that read the merged value and writes over it replaces both.
    write(&mut at_a, 1, 3_000, Some("me-final.jpg"));
    let got = receive(&mut at_b, &at_a, Resolve::Merge).unwrap();
    assert_eq!(got.conflict, None);
    assert_eq!(text(read(&at_b, Resolve::Merge, b",")), "me-final.jpg");
}

#[test]
fn merge_shows_equal_values_once_and_a_concurrent_delete_loses() {
    let (mut a, mut b, mut c) = (Siblings::new(), Siblings::new(), Siblings::new());
    write(&mut a, 1, 1_000, Some("same"));
    write(&mut b, 2, 1_000, Some("same"));
    write(&mut c, 3, 1_000, None);
    receive(&mut a, &b, Resolve::Merge).unwrap();
    receive(&mut a, &c, Resolve::Merge).unwrap();
    assert_eq!(a.values().len(), 3);
    assert_eq!(text(read(&a, Resolve::Merge, b",")), "same");
    let mut only_deletes = Siblings::new();
    write(&mut only_deletes, 1, 1_000, None);
    assert_eq!(read(&only_deletes, Resolve::Merge, b","), Read::Nil);
}

#[test]
fn app_keeps_both_until_a_write_with_their_context_resolves_them() {
    let (a, b) = lecture();
    let mut at_a = a.clone();
    let got = receive(&mut at_a, &b, Resolve::App).unwrap();
    assert!(got.conflict.unwrap().lost.is_empty());
    assert_eq!(read(&at_a, Resolve::App, b","), Read::Siblings { count: 2, deletes: 0 });
    let context = at_a.context().clone();
    let version = Version { ts: Timestamp { millis: 4_000, logical: 0 }, node: leader(1) };
    at_a.write(leader(1), &context, version, Some(Bytes::from_static(b"chosen"))).unwrap();
    assert_eq!(text(read(&at_a, Resolve::App, b",")), "chosen");
    let mut deleted = Siblings::new();
    write(&mut deleted, 1, 1_000, None);
    assert_eq!(read(&deleted, Resolve::App, b","), Read::Nil);
    assert_eq!(read(&Siblings::new(), Resolve::App, b","), Read::Nil);
}

#[test]
fn the_sibling_bound_lists_what_it_drops() {
    let mut state = Siblings::new();
    let mut lost = 0;
    for i in 0..(crate::causality::SIBLINGS_MAX as u64 + 3) {
        let mut other = Siblings::new();
        write(&mut other, i, 1_000 + i, Some(&format!("v{i}")));
        let got = receive(&mut state, &other, Resolve::Merge).unwrap();
        lost += got.conflict.map_or(0, |c| c.lost.len());
    }
    assert_eq!(state.values().len(), crate::causality::SIBLINGS_MAX);
    assert_eq!(lost, 3, "every sibling dropped past the bound is listed");
}

#[test]
fn rules_pick_the_longest_matching_prefix() {
    let mut rules = Rules::new(Resolve::Lww);
    rules.add_prefix(b"users.", Resolve::Merge).unwrap();
    rules.add_prefix(b"users.1234.", Resolve::App).unwrap();
    rules.add_prefix(b"v", Resolve::App).unwrap();
    assert_eq!(rules.for_key(b"users.1234.picture_url"), Resolve::App);
    assert_eq!(rules.for_key(b"users.99.name"), Resolve::Merge);
    assert_eq!(rules.for_key(b"users."), Resolve::Merge);
    assert_eq!(rules.for_key(b"users"), Resolve::Lww);
    assert_eq!(rules.for_key(b"orders.1"), Resolve::Lww);
    assert_eq!(rules.for_key(b"v"), Resolve::App);
    assert_eq!(rules.for_key(b"w"), Resolve::Lww);
    assert_eq!(rules.for_key(b""), Resolve::Lww);
}

#[test]
fn rules_refuse_bad_settings_and_say_why() {
    let mut rules = Rules::new(Resolve::Lww);
    rules.add_prefix(b"users.", Resolve::Merge).unwrap();
    let e = rules.add_prefix(b"users.", Resolve::App).unwrap_err().to_string();
    assert!(e.contains("\"users.\" is given twice (merge and app)"), "{e}");
    let e = rules.add_prefix(b"", Resolve::App).unwrap_err().to_string();
    assert!(e.contains("empty conflict prefix"), "{e}");
    let e = rules.add_prefix(&[b'x'; PREFIX_BYTES_MAX + 1], Resolve::App).unwrap_err().to_string();
    assert!(e.contains("PREFIX_BYTES_MAX"), "{e}");
    assert!(rules.set_separator(b"").is_err());
    assert!(rules.set_separator(&[b'-'; SEPARATOR_BYTES_MAX + 1]).is_err());
    rules.set_separator(&[b'-'; SEPARATOR_BYTES_MAX]).unwrap();
    let mut full = Rules::new(Resolve::Lww);
    for i in 0..PREFIX_RULES_MAX {
        full.add_prefix(format!("p{i}.").as_bytes(), Resolve::Merge).unwrap();
    }
    let e = full.add_prefix(b"one.more", Resolve::Merge).unwrap_err().to_string();
    assert!(e.contains("PREFIX_RULES_MAX"), "{e}");
    assert_eq!(Resolve::parse("merge"), Ok(Resolve::Merge));
    assert_eq!(
        Resolve::parse("lwww").unwrap_err(),
        "unknown conflict resolution \"lwww\": valid values are lww, merge, app"
    );
}

#[test]
fn the_fingerprint_tells_rule_sets_apart() {
    let mut a = Rules::new(Resolve::Lww);
    let b = a.clone();
    assert_eq!(a.fingerprint(), b.fingerprint());
    a.add_prefix(b"users.", Resolve::Merge).unwrap();
    assert_ne!(a.fingerprint(), b.fingerprint());
    let mut c = b.clone();
    c.set_separator(b";").unwrap();
    assert_ne!(c.fingerprint(), b.fingerprint());
    assert_ne!(Rules::new(Resolve::App).fingerprint(), b.fingerprint());
}

#[test]
fn ahead_by_measures_past_the_allowance() {
    let at = |millis| Version { ts: Timestamp { millis, logical: 7 }, node: leader(1) };
    assert_eq!(ahead_by(at(10_500), 10_000, 500), None);
    assert_eq!(ahead_by(at(10_501), 10_000, 500), Some(1));
    assert_eq!(ahead_by(at(9_000), 10_000, 0), None);
    assert_eq!(ahead_by(at(u64::MAX), u64::MAX - 1, 5), None);
}

/// A random run of leaders writing one key while changes between them are delayed,
/// reordered and duplicated; at the end every change is delivered.
struct Run {
    /// Each leader's state.
    states: Vec<Siblings>,
    /// Each leader's clock: it observes every change it receives, as a node does.
    clocks: Vec<Hlc>,
    /// Changes in flight: (to, the sender's state when it wrote).
    flight: Vec<(usize, Siblings)>,
    /// Every write, in order.
    writes: Vec<Write>,
    /// Every write any leader's conflict log lists as lost.
    logged: BTreeSet<Dot>,
}

const LEADERS: usize = 3;

/// One write of the run.
struct Write {
    dot: Dot,
    version: Version,
    value: Option<Bytes>,
    /// What the write replaced: its leader's context before it.
    seen: VersionVector,
}

impl Run {
    fn new() -> Run {
        Run {
            states: vec![Siblings::new(); LEADERS],
            clocks: vec![Hlc::new(Timestamp::default()); LEADERS],
            flight: Vec::new(),
            writes: Vec::new(),
            logged: BTreeSet::new(),
        }
    }

    fn deliver(&mut self, at: usize, resolve: Resolve, seed: u64) {
        let (to, change) = self.flight[at].clone();
        if let Some(newest) = change.newest_version() {
            self.clocks[to].observe(newest.ts);
        }
        let got = receive(&mut self.states[to], &change, resolve).unwrap();
        assert_eq!(got.clashes, 0, "seed {seed}");
        if let Some(conflict) = got.conflict {
            assert!(!conflict.kept.is_empty(), "seed {seed}: a conflict always keeps a write");
            self.logged.extend(conflict.lost.iter().map(|s| s.dot));
        }
    }

    fn play(seed: u64, resolve: Resolve, steps: usize) -> Run {
        let mut rng = Rng(seed);
        let mut run = Run::new();
        let mut now = 1_000;
        for _ in 0..steps {
            now += rng.below(3) as u64;
            if run.flight.is_empty() || rng.below(3) == 0 {
                let i = rng.below(LEADERS);
                let ts = run.clocks[i].tick(now);
                let version = Version { ts, node: leader(i as u64) };
                let value = (rng.below(6) != 0).then(|| Bytes::from(format!("w{}", run.writes.len())));
                let context = run.states[i].context().clone();
                let dot = run.states[i].write(leader(i as u64), &context, version, value.clone()).unwrap().dot;
                run.writes.push(Write { dot, version, value, seen: context });
                for to in (0..LEADERS).filter(|to| *to != i) {
                    run.flight.push((to, run.states[i].clone()));
                }
            } else {
                let at = rng.below(run.flight.len());
                run.deliver(at, resolve, seed);
                if rng.below(4) != 0 {
                    run.flight.swap_remove(at); // else it stays: delivered again later
                }
            }
        }
        while !run.flight.is_empty() {
            let at = rng.below(run.flight.len());
            run.deliver(at, resolve, seed);
            run.flight.swap_remove(at);
        }
        run
    }

    /// The writes no other write had seen: what must survive (or, under `lww`, be logged).
    fn maximal(&self) -> Vec<&Write> {
        self.writes.iter().filter(|w| !self.writes.iter().any(|other| other.seen.contains(w.dot))).collect()
    }
}

#[test]
fn leaders_converge_whatever_the_order_and_the_duplicates() {
    for resolve in Resolve::ALL {
        for seed in 0..300 {
            let run = Run::play(seed, resolve, 80);
            for (i, state) in run.states.iter().enumerate() {
                assert_eq!(*state, run.states[0], "seed {seed}, {resolve}: leader {i} differs from leader 0");
            }
            let first = read(&run.states[0], resolve, b",");
            assert!(run.states.iter().all(|s| read(s, resolve, b",") == first), "seed {seed}, {resolve}: reads differ");
        }
    }
}

#[test]
fn lww_keeps_the_newest_and_logs_every_other_concurrent_write() {
    let mut conflicts = 0;
    for seed in 0..300 {
        let run = Run::play(seed, Resolve::Lww, 80);
        let maximal = run.maximal();
        let state = &run.states[0];
        let winner = state.winner().expect("something was written").dot;
        let newest = maximal.iter().max_by_key(|w| w.version).unwrap().dot;
        assert_eq!(winner, newest, "seed {seed}: the highest version wins");
        for w in maximal.iter().filter(|w| w.dot != winner) {
            assert!(
                run.logged.contains(&w.dot),
                "seed {seed}: concurrent write {:?} lost without a conflict entry",
                w.dot
            );
        }
        conflicts += run.logged.len();
    }
    assert!(conflicts > 300, "the runs make conflicts: {conflicts} losers logged");
}

#[test]
fn merge_shows_every_concurrent_value_exactly_once() {
    for seed in 0..300 {
        let run = Run::play(seed, Resolve::Merge, 60);
        let mut expected: Vec<String> = run
            .maximal()
            .iter()
            .filter_map(|w| w.value.as_ref().map(|v| String::from_utf8(v.to_vec()).unwrap()))
            .collect();
        expected.sort();
        assert!(expected.len() <= crate::causality::SIBLINGS_MAX, "seed {seed}: the run stays under the bound");
        let got = match read(&run.states[0], Resolve::Merge, b",") {
            Read::Nil => Vec::new(),
            Read::Value(v) => String::from_utf8(v.to_vec()).unwrap().split(',').map(String::from).collect(),
            other => panic!("seed {seed}: {other:?}"),
        };
        assert_eq!(got, expected, "seed {seed}");
        assert!(run.logged.is_empty(), "seed {seed}: merge loses nothing under the bound");
    }
}

#[test]
fn app_keeps_every_concurrent_write_as_a_sibling() {
    for seed in 0..300 {
        let run = Run::play(seed, Resolve::App, 60);
        let expected: BTreeSet<Dot> = run.maximal().iter().map(|w| w.dot).collect();
        let got: BTreeSet<Dot> = run.states[0].values().iter().map(|s| s.dot).collect();
        assert_eq!(got, expected, "seed {seed}");
    }
}
