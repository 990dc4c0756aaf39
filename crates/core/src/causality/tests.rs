use super::*;
use crate::version::Timestamp;

fn node(i: u64) -> NodeId {
    NodeId(i)
}

fn dot(i: u64, counter: u64) -> Dot {
    Dot { node: node(i), counter }
}

fn vv(entries: &[(u64, u64)]) -> VersionVector {
    VersionVector::from_entries(entries.iter().map(|(n, c)| (node(*n), *c)).collect()).expect("valid vector")
}

/// A version at `millis` made by node `i`.
fn ver(millis: u64, i: u64) -> Version {
    Version { ts: Timestamp { millis, logical: 0 }, node: node(i) }
}

fn val(text: &str) -> Option<Bytes> {
    Some(Bytes::copy_from_slice(text.as_bytes()))
}

/// The values of the survivors, oldest version first (`None` for a tombstone).
fn values(s: &Siblings) -> Vec<Option<&[u8]>> {
    s.values().iter().map(|s| s.value.as_deref()).collect()
}

fn merged(a: &Siblings, b: &Siblings) -> Siblings {
    let mut m = a.clone();
    let outcome = m.merge(b).expect("merge");
    assert_eq!(outcome.clashes, 0, "no dot is ever handed out twice here");
    m
}

/// A vector's entries in a table: `(node, counter)` pairs.
type Entries = &'static [(u64, u64)];

#[test]
fn compare_table() {
    use Causality::*;
    // (self, other, expected self.compare(other))
    let table: &[(Entries, Entries, Causality)] = &[
        (&[], &[], Equal),
        (&[(1, 1)], &[(1, 1)], Equal),
        (&[], &[(1, 1)], Before),
        (&[(1, 1)], &[], After),
        (&[(1, 1)], &[(1, 2)], Before),
        (&[(1, 2), (2, 1)], &[(1, 2)], After),
        (&[(1, 1)], &[(2, 1)], Concurrent),
        (&[(1, 2), (2, 1)], &[(1, 1), (2, 2)], Concurrent),
        (&[(1, 3), (2, 5), (3, 1)], &[(1, 3), (2, 5), (3, 1)], Equal),
        (&[(1, 3), (3, 1)], &[(1, 3), (2, 5), (3, 1)], Before),
    ];
    for (a, b, want) in table {
        let (a, b) = (vv(a), vv(b));
        assert_eq!(a.compare(&b), *want, "{a:?} vs {b:?}");
        let mirrored = match want {
            Before => After,
            After => Before,
            other => *other,
        };
        assert_eq!(b.compare(&a), mirrored, "{b:?} vs {a:?}");
        assert_eq!(a.descends(&b), matches!(want, Equal | After), "{a:?} descends {b:?}");
    }
}

#[test]
fn version_vector_contains_join_and_get() {
    let a = vv(&[(1, 2), (3, 1)]);
    let b = vv(&[(1, 1), (2, 4)]);
    assert!(a.contains(dot(1, 1)) && a.contains(dot(1, 2)) && !a.contains(dot(1, 3)));
    assert!(!a.contains(dot(2, 1)));
    let j = a.join(&b).unwrap();
    assert_eq!(j, vv(&[(1, 2), (2, 4), (3, 1)]));
    assert_eq!(j, b.join(&a).unwrap());
    assert_eq!((j.get(node(2)), j.get(node(9)), j.len()), (4, 0, 3));
    assert!(j.descends(&a) && j.descends(&b));
}

#[test]
fn version_vector_refuses_bad_entries() {
    let table: &[(Vec<(NodeId, u64)>, &str)] = &[
        (vec![(node(2), 1), (node(1), 1)], "strictly increasing"),
        (vec![(node(1), 1), (node(1), 2)], "strictly increasing"),
        (vec![(node(1), 0)], "counter 0"),
        ((0..=VERSION_VECTOR_ENTRIES_MAX as u64).map(|i| (node(i), 1)).collect(), "VERSION_VECTOR_ENTRIES_MAX"),
    ];
    for (entries, want) in table {
        let err = VersionVector::from_entries(entries.clone()).unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} should say {want:?}");
    }
}

#[test]
fn version_vector_join_refuses_past_the_limit_and_leaves_it_unchanged() {
    let half = VERSION_VECTOR_ENTRIES_MAX as u64 / 2 + 1;
    let low = VersionVector::from_entries((0..half).map(|i| (node(i), 1)).collect()).unwrap();
    let high = VersionVector::from_entries((half..2 * half).map(|i| (node(i), 1)).collect()).unwrap();
    let mut a = low.clone();
    let err = a.merge(&high).unwrap_err().to_string();
    assert!(err.contains("VERSION_VECTOR_ENTRIES_MAX"), "{err}");
    assert_eq!(a, low);
    // Shared nodes do not count twice.
    assert_eq!(low.join(&low).unwrap(), low);
}

/// The lecture's "version 7 beats version 6": a write whose context covers the old value
/// replaces it, on every replica, whichever way the states meet.
#[test]
fn newer_write_replaces_older() {
    let (mut r1, mut r2) = (Siblings::new(), Siblings::new());
    r1.write(node(1), &VersionVector::new(), ver(6, 1), val("v6")).unwrap();
    // The client read v6 from r1 and writes v7 through r2, which has not seen v6 yet.
    let read = r1.context().clone();
    let out = r2.write(node(2), &read, ver(7, 2), val("v7")).unwrap();
    assert_eq!((out.dot, out.superseded, out.dropped), (dot(2, 1), 0, 0));
    let (a, b) = (merged(&r1, &r2), merged(&r2, &r1));
    assert_eq!(a, b);
    assert_eq!(values(&a), [Some(&b"v7"[..])]);
    assert_eq!(r1.compare(&a), Causality::Before);
    assert_eq!(r2.compare(&a), Causality::Equal);
    // And on the coordinator that held v6 itself.
    let out = r1.write(node(1), &read, ver(7, 1), val("v7")).unwrap();
    assert_eq!((out.dot, out.superseded), (dot(1, 2), 1));
    assert_eq!(values(&r1), [Some(&b"v7"[..])]);
}

#[test]
fn concurrent_writes_become_siblings_and_a_write_with_both_replaces_both() {
    let (mut r1, mut r2) = (Siblings::new(), Siblings::new());
    r1.write(node(1), &VersionVector::new(), ver(10, 1), val("a")).unwrap();
    r2.write(node(2), &VersionVector::new(), ver(5, 2), val("b")).unwrap();
    assert_eq!(r1.compare(&r2), Causality::Concurrent);
    let mut r3 = merged(&merged(&Siblings::new(), &r1), &r2);
    assert_eq!(values(&r3), [Some(&b"b"[..]), Some(&b"a"[..])], "listed by version");
    assert_eq!(r3.winner().unwrap().value.as_deref(), Some(&b"a"[..]), "lww winner: highest version");

    let both = r3.context().clone();
    let out = r3.write(node(3), &both, ver(11, 3), val("c")).unwrap();
    assert_eq!((out.superseded, out.dropped), (2, 0));
    for r in [&r1, &r2] {
        let m = merged(r, &r3);
        assert_eq!(values(&m), [Some(&b"c"[..])]);
        assert_eq!(m, merged(&r3, r));
    }
}

#[test]
fn write_without_context_keeps_existing_values_as_siblings() {
    let mut r = Siblings::new();
    r.write(node(1), &VersionVector::new(), ver(1, 1), val("a")).unwrap();
    let out = r.write(node(1), &VersionVector::new(), ver(2, 1), val("b")).unwrap();
    assert_eq!((out.dot, out.superseded), (dot(1, 2), 0));
    assert_eq!(values(&r), [Some(&b"a"[..]), Some(&b"b"[..])]);
    assert_eq!(r.context(), &vv(&[(1, 2)]));
    // With its own context (what a caller under lww may pass) it replaces both.
    let own = r.context().clone();
    r.write(node(1), &own, ver(3, 1), val("c")).unwrap();
    assert_eq!(values(&r), [Some(&b"c"[..])]);
}

#[test]
fn write_refuses_a_context_from_the_future_and_stays_unchanged() {
    let mut r = Siblings::new();
    r.write(node(1), &VersionVector::new(), ver(1, 1), val("a")).unwrap();
    let before = r.clone();
    let err = r.write(node(1), &vv(&[(1, 5)]), ver(2, 1), val("b")).unwrap_err().to_string();
    assert!(err.contains("names 5 writes") && err.contains("made only 1"), "{err}");
    assert_eq!(r, before);
    // Other nodes' entries cannot be checked here and are taken as seen.
    r.write(node(1), &vv(&[(2, 5)]), ver(2, 1), val("b")).unwrap();
    assert_eq!(r.context(), &vv(&[(1, 2), (2, 5)]));
}

#[test]
fn write_refuses_a_new_entry_past_the_limit() {
    let full = VersionVector::from_entries((1..=VERSION_VECTOR_ENTRIES_MAX as u64).map(|i| (node(i), 1)).collect());
    let mut r = Siblings::new();
    let err = r.write(node(0), &full.unwrap(), ver(1, 0), val("a")).unwrap_err().to_string();
    assert!(err.contains("VERSION_VECTOR_ENTRIES_MAX"), "{err}");
    assert_eq!(r, Siblings::new());
}

/// v1 on all three replicas; a delete reaches two; the stale third meets them in either
/// direction, and the value never comes back.
#[test]
fn tombstone_beats_a_replica_that_missed_the_delete() {
    let mut r1 = Siblings::new();
    r1.write(node(1), &VersionVector::new(), ver(1, 1), val("v1")).unwrap();
    let (mut r2, r3) = (merged(&Siblings::new(), &r1), merged(&Siblings::new(), &r1));
    let read = r2.context().clone();
    let out = r2.write(node(2), &read, ver(2, 2), None).unwrap();
    assert_eq!(out.superseded, 1);
    let r1 = merged(&r1, &r2);
    for deleter in [&r1, &r2] {
        assert!(deleter.is_tombstone() && deleter.live().count() == 0);
        assert_eq!(r3.compare(deleter), Causality::Before, "the third replica is stale");
        for m in [merged(deleter, &r3), merged(&r3, deleter)] {
            assert_eq!(values(&m), [None], "only the tombstone survives");
            assert_eq!(m.context(), &vv(&[(1, 1), (2, 1)]));
        }
    }
}

#[test]
fn delete_concurrent_with_a_write_keeps_both_and_lww_picks_by_version() {
    let mut r1 = Siblings::new();
    r1.write(node(1), &VersionVector::new(), ver(1, 1), val("v1")).unwrap();
    let mut r2 = merged(&Siblings::new(), &r1);
    let read = r1.context().clone();
    r1.write(node(1), &read, ver(3, 1), None).unwrap();
    r2.write(node(2), &read, ver(2, 2), val("v2")).unwrap();
    let m = merged(&r1, &r2);
    assert_eq!(values(&m), [Some(&b"v2"[..]), None]);
    assert!(m.is_tombstone(), "the delete has the higher version");
    assert_eq!(m.live().map(|s| s.dot).collect::<Vec<_>>(), [dot(2, 1)]);
}

#[test]
fn sibling_bound_drops_the_oldest_and_reports_them() {
    // Versions in shuffled order, the first write the oldest, so "oldest" cannot be mistaken
    // for "first written" or "last written".
    let extra = 3;
    let n = (SIBLINGS_MAX + extra) as u64;
    let mut versions: Vec<u64> = (101..100 + n).collect();
    let mut rng = Rng(7);
    for k in (1..versions.len()).rev() {
        versions.swap(k, rng.below(k + 1));
    }
    versions.insert(0, 100);
    let (mut r, mut early) = (Siblings::new(), Siblings::new());
    let mut dropped = 0;
    for (i, millis) in versions.iter().enumerate() {
        let out = r.write(node(1), &VersionVector::new(), ver(*millis, 1), val(&format!("w{i}"))).unwrap();
        dropped += out.dropped;
        if i == 0 {
            early = r.clone();
        }
    }
    assert_eq!(dropped, extra);
    let kept: Vec<Version> = r.values().iter().map(|s| s.version).collect();
    let newest: Vec<Version> = (100 + extra as u64..100 + n).map(|m| ver(m, 1)).collect();
    assert_eq!(kept, newest, "the newest SIBLINGS_MAX survive");
    assert_eq!(r.context(), &vv(&[(1, n)]), "dropped dots stay in the context");

    // A replica that still holds a dropped sibling does not bring it back.
    assert_eq!(values(&early), [Some(&b"w0"[..])]);
    assert_eq!(merged(&r, &early), r);
    assert_eq!(merged(&early, &r), r);

    // A merge past the bound drops and reports too.
    let mut other = Siblings::new();
    for i in 0..4 {
        other.write(node(2), &VersionVector::new(), ver(2000 + i, 2), val("x")).unwrap();
    }
    let mut m = r.clone();
    let outcome = m.merge(&other).unwrap();
    assert_eq!((outcome.dropped, outcome.changed, m.values().len()), (4, true, SIBLINGS_MAX));
    assert_eq!(m.values()[0].version, r.values()[4].version);
}

#[test]
fn merge_reports_a_change_of_context_alone() {
    // b has seen, and seen replaced, a write of node 2 that a never met: same survivor.
    let a = Siblings::from_bytes(&raw_state(1, &[(1, 1)], &[(dot(1, 1), 1)])).unwrap();
    let b = Siblings::from_bytes(&raw_state(1, &[(1, 1), (2, 1)], &[(dot(1, 1), 1)])).unwrap();
    let mut m = a.clone();
    let outcome = m.merge(&b).unwrap();
    assert_eq!(outcome, MergeOutcome { changed: true, dropped: 0, clashes: 0 });
    assert_eq!((m, a.compare(&b)), (b.clone(), Causality::Before));
    let mut m = b.clone();
    assert!(!m.merge(&a).unwrap().changed, "b learns nothing from a");
}

#[test]
fn merge_of_a_clash_keeps_the_greater_sibling_on_both_sides() {
    // Node 1 lost its data and handed out dot 1:1 twice.
    let (mut a, mut b) = (Siblings::new(), Siblings::new());
    a.write(node(1), &VersionVector::new(), ver(1, 1), val("first")).unwrap();
    b.write(node(1), &VersionVector::new(), ver(2, 1), val("second")).unwrap();
    let (mut ab, mut ba) = (a.clone(), b.clone());
    assert_eq!(ab.merge(&b).unwrap().clashes, 1);
    assert_eq!(ba.merge(&a).unwrap().clashes, 1);
    assert_eq!(ab, ba);
    assert_eq!(values(&ab), [Some(&b"second"[..])]);
}

/// A small deterministic generator (splitmix64), so every history replays from its seed.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A random run of three replicas: writes with random contexts, merges of random (possibly
/// old, possibly repeated) states, as delayed and duplicated messages would deliver them.
struct History {
    /// Each replica's state at the end.
    replicas: Vec<Siblings>,
    /// Every state any replica held along the way.
    snapshots: Vec<Siblings>,
    /// Every write: its dot and the client context it carried.
    writes: Vec<(Dot, VersionVector)>,
    /// Siblings dropped by the bound, over all writes and merges.
    dropped: usize,
}

const NODES: u64 = 3;

fn history(seed: u64, writes_max: usize, steps: usize) -> History {
    let mut rng = Rng(seed);
    let mut h =
        History { replicas: vec![Siblings::new(); NODES as usize], snapshots: vec![], writes: vec![], dropped: 0 };
    h.snapshots.push(Siblings::new());
    for _ in 0..steps {
        let i = rng.below(NODES as usize);
        if h.writes.len() < writes_max && rng.below(2) == 0 {
            let pick = |rng: &mut Rng, h: &History| h.snapshots[rng.below(h.snapshots.len())].context().clone();
            let context = match rng.below(4) {
                0 => VersionVector::new(),
                1 => h.replicas[i].context().clone(),
                2 => pick(&mut rng, &h),
                _ => pick(&mut rng, &h).join(&pick(&mut rng, &h)).unwrap(), // a read of two replicas
            };
            // Random millis, unique logical: versions unrelated to causality.
            let ts = Timestamp { millis: rng.below(1000) as u64, logical: h.writes.len() as u32 };
            let version = Version { ts, node: node(i as u64) };
            let value = if rng.below(5) == 0 { None } else { val(&format!("w{}", h.writes.len())) };
            let out = h.replicas[i].write(node(i as u64), &context, version, value).expect("valid write");
            h.dropped += out.dropped;
            h.writes.push((out.dot, context));
        } else {
            let from = h.snapshots[rng.below(h.snapshots.len())].clone();
            let out = h.replicas[i].merge(&from).expect("merge");
            assert_eq!(out.clashes, 0, "seed {seed}");
            h.dropped += out.dropped;
        }
        h.snapshots.push(h.replicas[i].clone());
    }
    h
}

/// Checks that no state holds a write replaced by one it has seen.
fn assert_no_resurrection(h: &History, state: &Siblings, seed: u64) {
    for (w, context) in &h.writes {
        if state.context().contains(*w) {
            for s in state.values() {
                assert!(!context.contains(s.dot), "seed {seed}: {:?} came back after {w:?} replaced it", s.dot);
            }
        }
    }
}

#[test]
fn merge_is_a_join_over_random_histories() {
    // Fewer writes than SIBLINGS_MAX: no state ever reaches the bound, so merge is a join.
    let writes_max = SIBLINGS_MAX - 1;
    for seed in 0..200 {
        let h = history(seed, writes_max, 60);
        assert_eq!(h.dropped, 0);
        let mut rng = Rng(seed ^ 0xdead_beef);
        let mut pick = || h.snapshots[rng.below(h.snapshots.len())].clone();
        for _ in 0..50 {
            let (a, b, c) = (pick(), pick(), pick());
            assert_eq!(merged(&a, &b), merged(&b, &a), "seed {seed}: commutative");
            assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)), "seed {seed}: associative");
            let mut aa = a.clone();
            assert!(!aa.merge(&a).unwrap().changed, "seed {seed}: idempotent");
            assert_eq!(aa, a);
            match a.compare(&b) {
                Causality::Before => assert_eq!(merged(&a, &b), b, "seed {seed}: stale side catches up"),
                Causality::After => assert_eq!(merged(&a, &b), a, "seed {seed}: newer side unchanged"),
                Causality::Equal => assert_eq!(a, b, "seed {seed}: equal contexts, equal states"),
                Causality::Concurrent => {}
            }
        }

        // Every state merged in two random orders, with duplicates, ends in one state...
        let mut orders = vec![];
        for _ in 0..2 {
            let mut all = h.snapshots.clone();
            all.extend(h.snapshots.iter().take(10).cloned());
            for k in (1..all.len()).rev() {
                all.swap(k, rng.below(k + 1));
            }
            orders.push(all.iter().fold(Siblings::new(), |acc, s| merged(&acc, s)));
        }
        assert_eq!(orders[0], orders[1], "seed {seed}: merge order matters");

        // ...which holds exactly the writes no write's context replaced.
        let all = &orders[0];
        let live: BTreeSet<Dot> =
            h.writes.iter().map(|(d, _)| *d).filter(|d| !h.writes.iter().any(|(_, c)| c.contains(*d))).collect();
        assert_eq!(all.values().iter().map(|s| s.dot).collect::<BTreeSet<_>>(), live, "seed {seed}");
        for s in h.snapshots.iter().chain([all]) {
            assert_no_resurrection(&h, s, seed);
        }
    }
}

#[test]
fn replicas_converge_past_the_sibling_bound() {
    let mut dropped = 0;
    for seed in 0..100 {
        let mut h = history(seed, 80, 250);
        // Gossip until nothing changes: every replica merges every other's state.
        let mut rounds = 0;
        loop {
            let mut changed = false;
            for i in 0..h.replicas.len() {
                for j in 0..h.replicas.len() {
                    let other = h.replicas[j].clone();
                    let out = h.replicas[i].merge(&other).unwrap();
                    changed |= out.changed;
                    h.dropped += out.dropped;
                }
            }
            rounds += 1;
            assert!(rounds < 20, "seed {seed}: no convergence after {rounds} rounds");
            if !changed {
                break;
            }
        }
        assert!(h.replicas.iter().all(|r| *r == h.replicas[0]), "seed {seed}: replicas differ");
        assert!(h.replicas[0].values().len() <= SIBLINGS_MAX);
        let mut rng = Rng(seed);
        for _ in 0..30 {
            let a = &h.snapshots[rng.below(h.snapshots.len())];
            let b = &h.snapshots[rng.below(h.snapshots.len())];
            assert_eq!(merged(a, b), merged(b, a), "seed {seed}: commutative past the bound");
            assert_eq!(merged(a, a), *a, "seed {seed}: idempotent past the bound");
        }
        for s in h.snapshots.iter().chain(&h.replicas) {
            assert_no_resurrection(&h, s, seed);
        }
        dropped += h.dropped;
    }
    assert!(dropped > 0, "the histories never reached the bound: the test proves nothing");
}

#[test]
fn state_round_trips_through_bytes() {
    for seed in 0..20 {
        for s in history(seed, 40, 80).snapshots {
            let bytes = s.to_bytes().unwrap();
            assert_eq!(bytes[0], SIBLINGS_FORMAT);
            assert_eq!(Siblings::from_bytes(&bytes).unwrap(), s, "seed {seed}");
            // Through serde too, as a peer message carries it.
            let wire = postcard::to_allocvec(&s).unwrap();
            assert_eq!(postcard::from_bytes::<Siblings>(&wire).unwrap(), s);
        }
    }
}

#[test]
fn every_cut_of_a_stored_state_is_refused() {
    let mut r = Siblings::new();
    r.write(node(1), &VersionVector::new(), ver(1, 1), val("hello")).unwrap();
    r.write(node(2), &VersionVector::new(), ver(2, 2), None).unwrap();
    let bytes = r.to_bytes().unwrap();
    for cut in 0..bytes.len() {
        assert!(Siblings::from_bytes(&bytes[..cut]).is_err(), "cut at {cut} of {} accepted", bytes.len());
    }
}

/// Bytes of a stored state as a corrupt disk could hold them, invariants unchecked.
fn raw_state(format: u8, context: &[(u64, u64)], values: &[(Dot, u64)]) -> Vec<u8> {
    let context: Vec<(NodeId, u64)> = context.iter().map(|(n, c)| (node(*n), *c)).collect();
    let values: Vec<Sibling> =
        values.iter().map(|(dot, millis)| Sibling { dot: *dot, version: ver(*millis, 0), value: val("x") }).collect();
    postcard::to_extend(&(context, values), vec![format]).unwrap()
}

#[test]
fn corrupt_stored_states_are_refused_with_a_reason() {
    let many: Vec<(Dot, u64)> = (1..=SIBLINGS_MAX as u64 + 1).map(|c| (dot(1, c), c)).collect();
    let mut trailing = raw_state(1, &[(1, 1)], &[(dot(1, 1), 1)]);
    trailing.push(0);
    let table: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "empty"),
        (raw_state(2, &[(1, 1)], &[(dot(1, 1), 1)]), "format byte 2"),
        (trailing, "1 trailing bytes"),
        (raw_state(1, &[(2, 1), (1, 1)], &[]), "strictly increasing"),
        (raw_state(1, &[(1, 0)], &[]), "counter 0"),
        (raw_state(1, &[(1, 1)], &[(dot(1, 2), 1)]), "not covered"),
        (raw_state(1, &[(1, 1)], &[(dot(1, 0), 1)]), "dot counter 0"),
        (raw_state(1, &[(1, 2)], &[(dot(1, 1), 1), (dot(1, 1), 2)]), "appears twice"),
        (raw_state(1, &[(1, 2)], &[(dot(1, 1), 2), (dot(1, 2), 1)]), "not in version order"),
        (raw_state(1, &[(1, 20)], &many), "over SIBLINGS_MAX"),
        (vec![1, 0xff, 0xff, 0xff], "bad key state"),
    ];
    for (bytes, want) in table {
        let err = Siblings::from_bytes(&bytes).unwrap_err();
        assert!(!err.is_fatal(), "decoding refuses input; the caller decides how grave it is");
        let err = err.to_string();
        assert!(err.starts_with("bad key state") && err.contains(want), "{err:?} should say {want:?}");
    }
    // The same checks guard the serde path a peer message takes.
    let bad = raw_state(1, &[(1, 1)], &[(dot(1, 2), 1)]);
    assert!(postcard::from_bytes::<Siblings>(&bad[1..]).is_err());
    let bad_vector = postcard::to_allocvec(&vec![(node(2), 1u64), (node(1), 1u64)]).unwrap();
    assert!(postcard::from_bytes::<VersionVector>(&bad_vector).is_err());
}

#[test]
fn context_token_round_trips_and_is_bound_to_its_key() {
    for context in [VersionVector::new(), vv(&[(1, 3), (7, 1)])] {
        let token = encode_context(b"users.1.name", &context);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{token}");
        assert_eq!(decode_context(b"users.1.name", token.as_bytes()).unwrap(), context);
        assert_eq!(decode_context(b"users.1.name", token.to_uppercase().as_bytes()).unwrap(), context);
        let err = decode_context(b"users.2.name", token.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("another key"), "{err}");
    }
    // The fullest vector, with the widest varints, fits the named limit.
    let fullest = VersionVector::from_entries(
        (0..VERSION_VECTOR_ENTRIES_MAX as u64).map(|i| (NodeId(u64::MAX - i), u64::MAX)).rev().collect(),
    )
    .unwrap();
    let token = encode_context(b"k", &fullest);
    assert!(token.len() <= CONTEXT_TOKEN_BYTES_MAX, "{} > {CONTEXT_TOKEN_BYTES_MAX}", token.len());
    assert_eq!(decode_context(b"k", token.as_bytes()).unwrap(), fullest);
}

#[test]
fn bad_context_tokens_are_refused_with_a_reason() {
    let good = encode_context(b"k", &vv(&[(1, 1)]));
    let header = &good[..18]; // format byte and key hash, in hex
    let unsorted = {
        let body = postcard::to_allocvec(&vec![(node(2), 1u64), (node(1), 1u64)]).unwrap();
        format!("{header}{}", body.iter().map(|b| format!("{b:02x}")).collect::<String>())
    };
    let table: Vec<(String, &str)> = vec![
        (String::new(), "shorter than its 9-byte header"),
        ("abc".into(), "odd number"),
        ("zz".into(), "not a hex digit"),
        ("é".into(), "not a hex digit"),
        (format!("02{}", &good[2..]), "format byte 2"),
        (format!("{good}00"), "1 trailing bytes"),
        (good[..good.len() - 2].to_string(), "bad causal context"),
        (unsorted, "strictly increasing"),
        ("0".repeat(CONTEXT_TOKEN_BYTES_MAX + 2), "over CONTEXT_TOKEN_BYTES_MAX"),
    ];
    for (token, want) in table {
        let err = decode_context(b"k", token.as_bytes()).unwrap_err().to_string();
        assert!(err.starts_with("bad causal context") && err.contains(want), "{token:?}: {err:?} should say {want:?}");
    }
}
