use super::*;
use crate::check::sessions::Figures;
use crate::history::Event;
use crate::leaderless::history::Seen;
use replikv_core::causality::{Dot, VersionVector};
use replikv_core::version::NodeId;

fn node(i: usize) -> NodeId {
    NodeId::from_name(&format!("n{i}"))
}

/// A context of `(node, counter)` entries.
fn context(entries: &[(usize, u64)]) -> VersionVector {
    let mut pairs: Vec<(NodeId, u64)> = entries.iter().map(|&(i, c)| (node(i), c)).collect();
    pairs.sort();
    VersionVector::from_entries(pairs).unwrap()
}

/// An acknowledged SET (`delete`: DEL) of k, number `write`, by `client` through node `at`,
/// whose state's context is `entries` (the write's dot is node `at`'s entry).
fn write(
    client: ClientId,
    write: u64,
    delete: bool,
    at: usize,
    entries: &[(usize, u64)],
    ms: (u64, u64),
) -> Event<Op, Outcome> {
    let context = context(entries);
    let dot = Dot { node: node(at), counter: context.get(node(at)) };
    let key = "k".to_string();
    let op = if delete { Op::Del { key, write } } else { Op::Set { key, write, context: false } };
    let outcome = Outcome::Written(Some(Receipt { dot, context, token: None }));
    Event { client, node: Some(at), op, invoke_ms: ms.0, complete_ms: Some(ms.1), outcome }
}

fn read(client: ClientId, values: &[u64], ms: (u64, u64)) -> Event<Op, Outcome> {
    let outcome = Outcome::Read(Seen { values: values.to_vec(), context: None });
    Event { client, node: Some(2), op: Op::Read { key: "k".into() }, invoke_ms: ms.0, complete_ms: Some(ms.1), outcome }
}

/// The violations client 1 is judged on under `guarantee`, and what its session saw.
fn judge(events: Vec<Event<Op, Outcome>>, guarantee: Guarantee) -> (Vec<String>, Figures) {
    let sessions = BTreeMap::from([(1, guarantee)]);
    let judged = check(&LeaderlessHistory { events }, &sessions);
    (judged.violations.into_values().flatten().collect(), judged.figures[&guarantee].clone())
}

fn seen(figures: &Figures, anomaly: Anomaly) -> (u64, u64) {
    figures.tallies.get(&anomaly).map_or((0, 0), |t| (t.seen, t.exposed))
}

/// Client 0 writes #1 through n1; client 1 then writes #2 through n2 over it (its context
/// covers #1's dot: #2 replaced #1).
fn one_over_the_other() -> Vec<Event<Op, Outcome>> {
    vec![write(0, 1, false, 1, &[(1, 10)], (0, 5)), write(1, 2, false, 2, &[(1, 10), (2, 20)], (10, 15))]
}

#[test]
fn a_read_of_a_write_the_sessions_own_replaced_or_of_nothing_fails_read_your_writes() {
    for values in [&[1][..], &[]] {
        let mut events = one_over_the_other();
        events.push(read(1, values, (20, 22)));
        let (violations, figures) = judge(events.clone(), Guarantee::ReadYourWrites);
        assert_eq!(violations.len(), 1, "read {values:?}: {violations:?}");
        assert!(violations[0].contains("after write #2 it had made"), "{}", violations[0]);
        assert_eq!(seen(&figures, Anomaly::StaleOwnWrite), (1, 1));
        // Without the guarantee it is counted, not failed.
        let (violations, figures) = judge(events, Guarantee::None);
        assert_eq!((violations.len(), seen(&figures, Anomaly::StaleOwnWrite)), (0, (1, 1)));
    }
}

#[test]
fn writes_the_floor_did_not_replace_may_be_read() {
    // Its own write, and a write concurrent with it (through n3, that had not seen #2).
    let mut events = one_over_the_other();
    events.push(write(0, 3, false, 3, &[(3, 30)], (11, 14)));
    events.extend([read(1, &[2], (20, 22)), read(1, &[3], (30, 32)), read(1, &[2, 3], (40, 42))]);
    let (violations, figures) = judge(events, Guarantee::ReadYourWrites);
    assert_eq!((violations, seen(&figures, Anomaly::StaleOwnWrite)), (vec![], (0, 3)));
    // A SET ... CONTEXT whose token did not cover #1 kept it as a sibling: #1 may be read.
    let mut events = one_over_the_other();
    let Outcome::Written(Some(receipt)) = &mut events[1].outcome else { unreachable!() };
    receipt.token = Some(VersionVector::new());
    events.push(read(1, &[1, 2], (20, 22)));
    assert_eq!(judge(events.clone(), Guarantee::ReadYourWrites).0, Vec::<String>::new());
    // One whose token covered #1 replaced it.
    let Outcome::Written(Some(receipt)) = &mut events[1].outcome else { unreachable!() };
    receipt.token = Some(context(&[(1, 10)]));
    assert_eq!(judge(events, Guarantee::ReadYourWrites).0.len(), 1);
}

#[test]
fn a_nil_needs_a_delete_the_floor_did_not_replace_invoked_before_the_read_ended() {
    let nil_after = |delete: Event<Op, Outcome>| {
        let mut events = one_over_the_other();
        events.extend([delete, read(1, &[], (20, 22))]);
        judge(events, Guarantee::ReadYourWrites).0.len()
    };
    // A delete #2 replaced (it came before, and #2's context covers it) explains nothing.
    let mut events = one_over_the_other();
    let Outcome::Written(Some(receipt)) = &mut events[1].outcome else { unreachable!() };
    receipt.context = context(&[(1, 10), (2, 20), (3, 5)]);
    events.extend([write(0, 3, true, 3, &[(3, 5)], (1, 2)), read(1, &[], (20, 22))]);
    assert_eq!(judge(events, Guarantee::ReadYourWrites).0.len(), 1, "a delete #2 replaced explains no nil");
    // A later delete, or one whose outcome is unknown, does (if invoked before the read ended).
    assert_eq!(nil_after(write(0, 3, true, 3, &[(3, 5)], (16, 18))), 0);
    let mut unknown = write(0, 3, true, 3, &[(3, 5)], (21, 25));
    (unknown.outcome, unknown.complete_ms) = (Outcome::Indeterminate, None);
    assert_eq!(nil_after(unknown.clone()), 0);
    unknown.invoke_ms = 23;
    assert_eq!(nil_after(unknown), 1, "invoked after the read ended: it cannot explain it");
}

#[test]
fn reading_a_write_an_earlier_read_replaced_fails_monotonic_reads() {
    // Client 0 writes #1, then #2 over it; client 1 reads #2, then #1.
    let mut events =
        vec![write(0, 1, false, 1, &[(1, 10)], (0, 5)), write(0, 2, false, 2, &[(1, 10), (2, 20)], (10, 15))];
    events.extend([read(1, &[2], (20, 22)), read(1, &[1], (30, 32))]);
    let (violations, figures) = judge(events.clone(), Guarantee::MonotonicReads);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(violations[0].contains("after write #2 it had read, and got #1"), "{}", violations[0]);
    assert_eq!(seen(&figures, Anomaly::MonotonicRegression), (1, 1));
    // Read-your-writes promises nothing here: the session wrote nothing.
    let (violations, figures) = judge(events, Guarantee::ReadYourWrites);
    assert_eq!((violations.len(), seen(&figures, Anomaly::StaleOwnWrite)), (0, (0, 0)));
    // The other order is no regression.
    let mut events =
        vec![write(0, 1, false, 1, &[(1, 10)], (0, 5)), write(0, 2, false, 2, &[(1, 10), (2, 20)], (10, 15))];
    events.extend([read(1, &[1], (20, 22)), read(1, &[2], (30, 32))]);
    assert_eq!(judge(events, Guarantee::MonotonicReads).0, Vec::<String>::new());
}
