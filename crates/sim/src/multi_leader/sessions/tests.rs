//! The checker on hand-built histories: client 1 is the session, of datacenter 0; client 0
//! writes in datacenter 0 too, client 2 in datacenter 1.

use super::*;
use crate::check::sessions::Figures;
use crate::history::{Event, History};
use crate::leaderless::history::Seen;

fn set(client: ClientId, key: &str, write: u64, at: (u64, u64)) -> Event<Op, Outcome> {
    let op = Op::Set { key: key.into(), write, context: false };
    Event { client, node: Some(0), op, invoke_ms: at.0, complete_ms: Some(at.1), outcome: Outcome::Written(None) }
}

fn del(client: ClientId, key: &str, write: u64, at: (u64, u64)) -> Event<Op, Outcome> {
    let op = Op::Del { key: key.into(), write };
    Event { client, node: Some(0), op, invoke_ms: at.0, complete_ms: Some(at.1), outcome: Outcome::Written(None) }
}

fn read(key: &str, values: &[u64], at: (u64, u64)) -> Event<Op, Outcome> {
    let outcome = Outcome::Read(Seen { values: values.to_vec(), context: None });
    Event {
        client: 1,
        node: Some(1),
        op: Op::Read { key: key.into() },
        invoke_ms: at.0,
        complete_ms: Some(at.1),
        outcome,
    }
}

/// The violations client 1 is judged on under `guarantee`, and what its session saw.
fn judge(events: Vec<Event<Op, Outcome>>, guarantee: Guarantee) -> (usize, Figures) {
    let sessions = BTreeMap::from([(1, guarantee)]);
    let dc_of = BTreeMap::from([(0, 0), (1, 0), (2, 1)]);
    let judged = check(&History { events }, &sessions, &dc_of);
    let violations = judged.violations.values().map(Vec::len).sum();
    (violations, judged.figures[&guarantee].clone())
}

fn seen(figures: &Figures, anomaly: Anomaly) -> u64 {
    figures.tallies.get(&anomaly).map_or(0, |t| t.seen)
}

#[test]
fn reading_an_older_write_of_its_datacenter_after_its_own_fails_read_your_writes() {
    // Client 0 wrote 1, acknowledged before the session wrote 2; the session then read 1.
    let events = vec![set(0, "k", 1, (0, 5)), set(1, "k", 2, (10, 15)), read("k", &[1], (20, 22))];
    let (violations, figures) = judge(events.clone(), Guarantee::ReadYourWrites);
    assert_eq!((violations, seen(&figures, Anomaly::StaleOwnWrite)), (1, 1));
    // Without the guarantee it is counted, not failed.
    let (violations, figures) = judge(events, Guarantee::None);
    assert_eq!((violations, seen(&figures, Anomaly::StaleOwnWrite)), (0, 1));
}

#[test]
fn another_datacenters_write_concurrent_writes_and_context_writes_are_never_called_stale() {
    // 1 is another datacenter's: its shipment may arrive after 2 and win (lww, clock ahead).
    let events = vec![set(2, "k", 1, (0, 5)), set(1, "k", 2, (10, 15)), read("k", &[1], (20, 22))];
    assert_eq!(judge(events, Guarantee::ReadYourWrites).0, 0);
    // 1 overlaps 2: either order.
    let events = vec![set(0, "k", 1, (8, 12)), set(1, "k", 2, (10, 15)), read("k", &[1], (20, 22))];
    assert_eq!(judge(events, Guarantee::ReadYourWrites).0, 0);
    // 2 carried a context token (app): it replaced only what the token named, maybe not 1.
    let mut with_context = set(1, "k", 2, (10, 15));
    with_context.op = Op::Set { key: "k".into(), write: 2, context: true };
    let events = vec![set(0, "k", 1, (0, 5)), with_context, read("k", &[1, 2], (20, 22))];
    assert_eq!(judge(events, Guarantee::ReadYourWrites).0, 0);
}

#[test]
fn nil_is_stale_only_while_no_delete_of_the_key_was_invoked() {
    let events = vec![set(1, "k", 1, (0, 5)), read("k", &[], (10, 12))];
    assert_eq!(judge(events, Guarantee::ReadYourWrites).0, 1);
    // Another datacenter's DEL, invoked before the read completed, may have won.
    let events = vec![set(1, "k", 1, (0, 5)), del(2, "k", 2, (6, 7)), read("k", &[], (10, 12))];
    assert_eq!(judge(events, Guarantee::ReadYourWrites).0, 0);
}

#[test]
fn a_write_the_session_saw_dead_must_stay_dead_under_monotonic_reads() {
    // 1 and 2 are of the session's datacenter; 3, another's, was invoked after both were
    // acknowledged. A merged read of 2 and 3 proves 1 dead; 2 still lives.
    let writes = vec![set(0, "k", 1, (0, 5)), set(0, "k", 2, (6, 8)), set(2, "k", 3, (10, 15))];
    let case = |later: &[u64]| {
        let mut events = writes.clone();
        events.extend([read("k", &[2, 3], (20, 22)), read("k", later, (30, 32))]);
        judge(events, Guarantee::MonotonicReads)
    };
    let (violations, figures) = case(&[1]);
    assert_eq!((violations, seen(&figures, Anomaly::MonotonicRegression)), (1, 1));
    assert_eq!(case(&[2]).0, 0, "2 was live in the state read: it may still be");
    assert_eq!(case(&[3]).0, 0);
    // Read-your-writes promises nothing here (the session wrote nothing).
    let mut events = writes;
    events.extend([read("k", &[2, 3], (20, 22)), read("k", &[1], (30, 32))]);
    assert_eq!(judge(events, Guarantee::ReadYourWrites).0, 0);
}

#[test]
fn an_effect_without_its_datacenters_cause_fails_consistent_prefix() {
    // a (2 on x) replaced 1 before b (3 on y, another datacenter's) was invoked; the session
    // saw b, then x without a.
    let events = vec![
        set(0, "x", 1, (0, 5)),
        set(0, "x", 2, (8, 9)),
        set(2, "y", 3, (10, 15)),
        read("y", &[3], (20, 22)),
        read("x", &[1], (30, 32)),
    ];
    let (violations, figures) = judge(events.clone(), Guarantee::ConsistentPrefix);
    assert_eq!((violations, seen(&figures, Anomaly::EffectBeforeCause)), (1, 1));
    // Of another datacenter, a is no cause the session's log must hold.
    let mut events = events;
    events[1] = set(2, "x", 2, (8, 9));
    assert_eq!(judge(events, Guarantee::ConsistentPrefix).0, 0);
}
