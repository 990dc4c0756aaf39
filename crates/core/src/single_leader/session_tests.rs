//! Session guarantees on real replicas: a follower behind a session's position waits for it
//! or refuses, never answers older; every answer says which position it reflects.

use super::tests::Cluster;
use super::Input;
use crate::kv::{parse_command, Reply, Request, SessionPosition};
use crate::replication::ReplogOptions;
use bytes::Bytes;

fn request(line: &str) -> Request {
    let args: Vec<Bytes> = line.split(' ').map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
    parse_command(&args).expect("a known command").expect("valid arguments")
}

fn in_session(after: SessionPosition, wait_ms: u64, on_leader: bool, line: &str) -> Request {
    Request::Session { after, wait_ms, on_leader, request: Box::new(request(line)) }
}

/// Sends `request` to node `i`, runs the cluster until it is answered (at most `ms`), and
/// returns the answer.
fn ask(c: &mut Cluster, i: usize, request: Request, ms: u64) -> Reply {
    c.next_id += 1;
    let id = c.next_id;
    c.step(i, Input::Request { id, request });
    c.settle();
    let mut left = ms;
    while c.reply(id).is_none() && left > 0 {
        c.run_for(50);
        left = left.saturating_sub(50);
    }
    c.replies.remove(&id).unwrap_or_else(|| panic!("no answer within {ms} ms"))
}

/// The answer's position, and the answer.
fn positioned(reply: Reply) -> (SessionPosition, bool, u64, Reply) {
    match reply {
        Reply::InSession { at, by_leader, waited_ms, reply, .. } => (at, by_leader, waited_ms, *reply),
        other => panic!("an answer in session, got {other:?}"),
    }
}

fn bulk(text: &str) -> Reply {
    Reply::Bulk(Bytes::copy_from_slice(text.as_bytes()))
}

#[test]
fn a_read_after_a_write_waits_for_a_lagging_follower_and_never_answers_older() {
    let mut c = Cluster::new(2, 0, ReplogOptions::default());
    c.run_for(200);
    let (written, by_leader, _, reply) =
        positioned(ask(&mut c, 0, in_session(Default::default(), 0, false, "SET k v1"), 500));
    assert_eq!((reply, by_leader), (Reply::Ok, true));
    assert!(written.lsn > 0 && written.epoch > 0, "{written:?}");
    c.run_for(200);
    // n3 is cut off: the next write does not reach it.
    c.cut.insert(2);
    let (written, ..) = positioned(ask(&mut c, 0, in_session(written, 0, false, "SET k v2"), 500));
    // Without a guarantee, n3 answers what it has: the lecture's stale read.
    assert_eq!(ask(&mut c, 2, request("GET k"), 100), bulk("v1"));
    // In the session, it waits, then refuses, naming the gap and the leader.
    let Reply::Error(e) = ask(&mut c, 2, in_session(written, 300, false, "GET k"), 1_000) else { panic!("refused") };
    assert!(e.starts_with("TRYAGAIN this replica has applied the log through record"), "{e}");
    assert!(e.contains("1 records behind record") && e.contains("n1 at 127.0.0.1:7001"), "{e}");
    // A read that waits while the cut heals is answered with the write.
    c.next_id += 1;
    let id = c.next_id;
    c.step(2, Input::Request { id, request: in_session(written, 5_000, false, "GET k") });
    c.run_for(200);
    assert!(c.reply(id).is_none(), "it waits while cut off");
    c.cut.clear();
    c.run_for(1_000);
    let (at, by_leader, waited_ms, reply) = positioned(c.replies.remove(&id).expect("answered once caught up"));
    assert_eq!(reply, bulk("v2"));
    assert!(at.lsn >= written.lsn && !by_leader && waited_ms >= 200, "{at:?} {waited_ms}");
}

#[test]
fn a_session_read_on_the_leader_is_forwarded_and_positioned_by_it() {
    let mut c = Cluster::new(2, 0, ReplogOptions::default());
    c.run_for(200);
    c.cut.insert(2);
    let (written, ..) = positioned(ask(&mut c, 0, in_session(Default::default(), 0, false, "SET k v"), 500));
    c.cut.clear();
    // Before n3 has the write (the network is slower than this request), with on_leader.
    let (at, by_leader, _, reply) = positioned(ask(&mut c, 2, in_session(written, 0, true, "GET k"), 1_000));
    assert_eq!((reply, by_leader), (bulk("v"), true));
    assert!(at.lsn >= written.lsn);
}

#[test]
fn a_position_from_another_history_is_refused_not_served() {
    let mut c = Cluster::new(2, 0, ReplogOptions::default());
    c.run_for(200);
    let (written, ..) = positioned(ask(&mut c, 0, in_session(Default::default(), 0, false, "SET k v"), 500));
    c.run_for(300);
    let other = SessionPosition { lsn: written.lsn, epoch: written.epoch + 1 };
    for node in [0, 1] {
        let Reply::Error(e) = ask(&mut c, node, in_session(other, 0, false, "GET k"), 500) else { panic!() };
        assert!(e.contains("a failover cut what the session saw"), "{e}");
    }
    let ahead = SessionPosition { lsn: written.lsn + 100, epoch: written.epoch };
    let Reply::Error(e) = ask(&mut c, 0, in_session(ahead, 0, false, "GET k"), 500) else { panic!() };
    assert!(e.contains("which this leader's history does not hold"), "{e}");
}

#[test]
fn a_session_write_held_by_a_handover_is_positioned_where_it_lands() {
    let mut c = Cluster::with(2, 1, ReplogOptions::default(), true, true);
    c.run_for(500);
    // n2 lags (cut), so the handover to it waits, holding writes meanwhile.
    c.cut.insert(1);
    positioned(ask(&mut c, 0, in_session(Default::default(), 0, false, "SET a 1"), 1_000));
    c.next_id += 1;
    let failover = c.next_id;
    c.step(0, Input::Request { id: failover, request: request("FAILOVER TO 127.0.0.1 7002 TIMEOUT 5000") });
    c.next_id += 1;
    let held = c.next_id;
    c.step(0, Input::Request { id: held, request: in_session(Default::default(), 0, false, "SET k v") });
    c.run_for(200);
    assert!(c.reply(held).is_none(), "held while the handover runs");
    c.cut.clear();
    c.run_for(3_000);
    let (at, by_leader, _, reply) = positioned(c.replies.remove(&held).expect("answered after the handover"));
    assert_eq!((reply, by_leader), (Reply::Ok, true));
    // The write's own record, on whichever node now leads.
    let leader = (0..3).find(|&i| c.nodes[i].is_leader()).expect("a leader");
    let record = (1..=c.nodes[leader].last_lsn())
        .rev()
        .find(|&lsn| {
            let records = c.nodes[leader].read_log(lsn - 1, 1).unwrap().unwrap_or_default();
            records.first().is_some_and(|r| r.changes.iter().any(|ch| ch.key.ends_with(b"k")))
        })
        .expect("the write is in the log");
    assert_eq!(at.lsn, record, "positioned at its record, not where it was held");
}

#[test]
fn an_answer_says_how_stale_it_may_be() {
    let mut c = Cluster::new(2, 0, ReplogOptions::default());
    c.run_for(300);
    let staleness = |reply: Reply| match reply {
        Reply::InSession { behind_records, behind_ms, .. } => (behind_records, behind_ms),
        other => panic!("{other:?}"),
    };
    assert_eq!(staleness(ask(&mut c, 0, in_session(Default::default(), 0, false, "GET k"), 500)), (0, 0));
    let (records, ms) = staleness(ask(&mut c, 2, in_session(Default::default(), 0, false, "GET k"), 500));
    assert!(records == 0 && ms <= 100, "a follower in step: {records} records, {ms} ms");
    // n3 is cut off: what it holds grows older by the clock, whatever the leader writes.
    c.cut.insert(2);
    for i in 0..3 {
        ask(&mut c, 0, request(&format!("SET k{i} v")), 500);
    }
    c.run_for(400);
    let (_, ms) = staleness(ask(&mut c, 2, in_session(Default::default(), 0, false, "GET k"), 500));
    assert!(ms >= 400, "a follower cut off for 400 ms says so: {ms} ms");
}

#[test]
fn a_forwarded_read_the_leader_never_answers_fails_saying_it_took_no_effect() {
    let mut c = Cluster::new(2, 0, ReplogOptions::default());
    c.run_for(300);
    c.cut.insert(0);
    let reply = ask(&mut c, 1, in_session(SessionPosition::default(), 0, true, "GET a"), 30_000);
    let Reply::Error(text) = reply else { panic!("an error, got {reply:?}") };
    assert!(
        text.contains("did not answer this forwarded read") && text.ends_with("it took no effect; try again"),
        "{text}"
    );
}
