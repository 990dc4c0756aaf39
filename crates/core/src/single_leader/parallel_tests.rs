//! The leader ships records before its own fsync (DESIGN §12): a write is acknowledged only
//! once the leader holds it durably too, and a follower applies nothing past the leader's
//! durable end, so no reader sees a write that a leader crash could take back.

use super::tests::{restart, Cluster};
use super::{Input, Message, Outbox, Output};
use crate::kv::{parse_command, Reply, Request};
use crate::node::PeerMessage;
use crate::replication::ReplogOptions;
use bytes::Bytes;

fn request(line: &str) -> Request {
    let args: Vec<Bytes> = line.split(' ').map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
    parse_command(&args).unwrap().unwrap()
}

/// Outputs split: (to, message) and (request, reply).
type Split = (Vec<(usize, Message)>, Vec<(u64, Reply)>);

/// Node `i`'s outputs split into (to, message) and replies.
fn split(c: &Cluster, outputs: Vec<Output>) -> Split {
    let (mut sent, mut replies) = (Vec::new(), Vec::new());
    for output in outputs {
        match output {
            Output::Send { to, message: PeerMessage::SingleLeader(m) } => {
                sent.push((c.ids.iter().position(|&id| id == to).unwrap(), m));
            }
            Output::Reply { id, reply } => replies.push((id, reply)),
            other => panic!("unexpected {other:?}"),
        }
    }
    (sent, replies)
}

/// `GET key` on node `i` (stepped at once, its reply read back).
fn get(c: &mut Cluster, i: usize, key: &str) -> Reply {
    let id = c.send(i, &format!("GET {key}"));
    c.reply(id).cloned().expect("a follower answers a read at once")
}

#[test]
fn the_leader_ships_before_its_fsync_and_acknowledges_and_lets_followers_apply_only_after_it() {
    let mut c = Cluster::new(2, 2, ReplogOptions::default()); // sync
    c.run_for(200);
    let lsn = c.nodes[0].last_lsn() + 1;
    // The leader steps a write and writes the batch out; its fsync has not finished.
    let mut outbox = Outbox::default();
    c.nodes[0].step(c.now, Input::Request { id: 900, request: request("SET a 1") }, &mut outbox).unwrap();
    c.nodes[0].write_out(c.now, &mut outbox).unwrap();
    let (sent, replies) = split(&c, std::mem::take(&mut outbox.now));
    assert!(replies.is_empty(), "{replies:?}");
    let appends: Vec<&(usize, Message)> = sent
        .iter()
        .filter(|(_, m)| matches!(m, Message::Append { records, .. } if records.iter().any(|r| r.lsn == lsn)))
        .collect();
    assert_eq!(appends.len(), 2, "shipped to both followers before the leader's fsync: {sent:?}");
    for (to, message) in sent {
        if let Message::Append { leader_lsn, .. } = &message {
            assert!(*leader_lsn < lsn, "the Append says the record is not durable on the leader yet");
        }
        let from = c.ids[0];
        c.step(to, Input::Message { from, message });
    }
    // Both followers hold it durably (and acknowledge), but apply it only once the leader has.
    for i in 1..3 {
        assert_eq!(c.nodes[i].last_lsn(), lsn, "n{} holds the record", i + 1);
        assert_eq!(get(&mut c, i, "a"), Reply::Nil, "n{} applied a record its leader has not made durable", i + 1);
    }
    let acks: Vec<_> = std::mem::take(&mut c.net).into_iter().collect();
    assert_eq!(acks.iter().filter(|(_, to, m)| *to == 0 && matches!(m, Message::Ack { .. })).count(), 2);
    for (from, _, message) in acks {
        c.nodes[0].step(c.now, Input::Message { from: c.ids[from], message }, &mut outbox).unwrap();
    }
    let (_, replies) = split(&c, outbox.drain_all());
    assert!(replies.is_empty(), "acknowledged before the leader's own copy was durable: {replies:?}");
    // The leader's fsync completes: the reply leaves, and the followers are told at once.
    let resets = c.nodes[0].log_resets();
    c.nodes[0].step(c.now, Input::Durable { lsn, resets }, &mut outbox).unwrap();
    let (sent, replies) = split(&c, std::mem::take(&mut outbox.now));
    assert_eq!(replies, vec![(900, Reply::Ok)]);
    let notices = sent.iter().filter(
        |(_, m)| matches!(m, Message::Append { records, leader_lsn, .. } if records.is_empty() && *leader_lsn == lsn),
    );
    assert_eq!(notices.count(), 2, "each follower is told the leader's new durable end: {sent:?}");
    for (to, message) in sent {
        let from = c.ids[0];
        c.step(to, Input::Message { from, message });
    }
    c.settle();
    for i in 1..3 {
        assert_eq!(get(&mut c, i, "a"), Reply::Bulk(Bytes::from("1")), "n{}", i + 1);
        assert_eq!(c.nodes[i].status(c.now).leader.unwrap().applied_lsn, lsn);
    }
}

#[test]
fn a_restarted_follower_refuses_reads_until_its_leader_confirms_what_it_holds() {
    let mut c = Cluster::new(2, 1, ReplogOptions::default());
    c.run_for(200);
    let id = c.send(0, "SET a 1");
    c.settle();
    assert_eq!(c.reply(id), Some(&Reply::Ok));
    assert_eq!(get(&mut c, 1, "a"), Reply::Bulk(Bytes::from("1")));
    restart(&mut c, 1);
    // Recovery applied its whole log, which may hold records no leader made durable.
    let through = format!("through {}", c.nodes[1].last_lsn());
    let Reply::Error(text) = get(&mut c, 1, "a") else { panic!("a restarted follower served a read") };
    assert!(text.starts_with("TRYAGAIN") && text.contains(&through), "{text}");
    // The first heartbeat it hears has the leader check its log; then it serves reads again.
    c.run_for(100);
    assert_eq!(get(&mut c, 1, "a"), Reply::Bulk(Bytes::from("1")), "{:?}", c.nodes[1].status(c.now));
}

#[test]
fn a_leader_that_steps_down_before_a_majority_holds_its_writes_refuses_reads_until_a_leader_confirms_them() {
    let mut c = Cluster::new(2, 1, ReplogOptions::default());
    c.run_for(200);
    let mut outbox = Outbox::default();
    c.nodes[0].step(c.now, Input::Request { id: 900, request: request("SET a 1") }, &mut outbox).unwrap();
    c.nodes[0].write_out(c.now, &mut outbox).unwrap();
    // It loses its leadership while the write's fsync still runs: the store it serves from
    // holds a write no leader holds durably.
    c.nodes[0].become_follower(c.now, None, &mut outbox).unwrap();
    let Reply::Error(text) = get(&mut c, 0, "a") else { panic!("a deposed leader served an undurable write") };
    assert!(text.starts_with("TRYAGAIN"), "{text}");
    // Durable on itself but on no majority yet (its followers' acknowledgements are still on
    // their way): the next leader may not hold it either, so reads wait too.
    let mut c = Cluster::new(2, 1, ReplogOptions::default());
    c.run_for(200);
    c.send(0, "SET a 1");
    c.nodes[0].become_follower(c.now, None, &mut outbox).unwrap();
    let Reply::Error(text) = get(&mut c, 0, "a") else { panic!("a deposed leader served a write no majority held") };
    assert!(text.starts_with("TRYAGAIN"), "{text}");
    // Once a majority holds it (the same step-down after the acknowledgements), reads go on.
    let mut c = Cluster::new(2, 1, ReplogOptions::default());
    c.run_for(200);
    c.send(0, "SET a 1");
    c.settle();
    c.nodes[0].become_follower(c.now, None, &mut outbox).unwrap();
    assert_eq!(get(&mut c, 0, "a"), Reply::Bulk(Bytes::from("1")));
}

/// Node `i`'s view of follower `f` on the leader `leader`: its acknowledged position.
fn acked(c: &Cluster, leader: usize, f: usize) -> u64 {
    let status = c.nodes[leader].status(c.now);
    status.followers.iter().find(|p| p.node == c.ids[f]).expect("a follower").acked_lsn
}

#[test]
fn a_follower_asking_for_a_check_keeps_what_it_matched_on_the_leader() {
    let mut c = Cluster::new(2, 1, ReplogOptions::default());
    c.run_for(200);
    c.send(0, "SET a 1");
    c.settle();
    let before = acked(&c, 0, 1);
    assert!(before >= 1);
    restart(&mut c, 1);
    // Its first acknowledgement refuses a heartbeat to have its log checked: the leader must
    // not count it as holding nothing meanwhile (sync writes and reads would wait on it).
    for _ in 0..4 {
        c.now += 50;
        c.step(0, Input::Tick);
        while let Some((from, to, message)) = c.net.pop_front() {
            let from = c.ids[from];
            c.step(to, Input::Message { from, message });
            assert!(acked(&c, 0, 1) >= before, "the leader dropped n2's acknowledged position");
        }
    }
    assert_eq!(get(&mut c, 1, "a"), Reply::Bulk(Bytes::from("1")));
}

#[test]
fn a_restarted_follower_sent_a_snapshot_refuses_reads_until_the_snapshot_is_whole() {
    let options = ReplogOptions { retain_bytes_max: 2_000, segment_bytes_max: 500, ..Default::default() };
    let mut c = Cluster::new(2, 1, options);
    c.run_for(200);
    c.send(0, "SET a 1");
    c.settle();
    c.cut.insert(1);
    for i in 0..100 {
        c.send(0, &format!("SET k{i:03} {}", "v".repeat(50)));
        c.settle();
    }
    c.run_for(3_000);
    assert!(c.nodes[0].first_lsn() > c.nodes[1].last_lsn() + 1, "the leader kept the records n2 lacks");
    restart(&mut c, 1);
    c.cut.clear();
    let mut installing_seen = false;
    for _ in 0..100 {
        c.now += 50;
        for i in 0..3 {
            c.step(i, Input::Tick);
        }
        while let Some((from, to, message)) = c.net.pop_front() {
            let from = c.ids[from];
            c.step(to, Input::Message { from, message });
            if c.nodes[1].status(c.now).leader.is_some_and(|v| v.installing_snapshot) {
                installing_seen = true;
                // Key ranges the snapshot has not reached hold what n2 held at its restart.
                let reply = get(&mut c, 1, "a");
                assert!(matches!(&reply, Reply::Error(e) if e.starts_with("TRYAGAIN")), "{reply:?}");
            }
        }
    }
    assert!(installing_seen, "no snapshot was installed");
    assert_eq!(get(&mut c, 1, "k099"), Reply::Bulk(Bytes::from("v".repeat(50))));
}

#[test]
fn a_handover_waits_for_the_leaders_own_fsync() {
    let mut c = Cluster::failover(2, 1, ReplogOptions::default());
    c.run_for(300);
    c.hold_fsync(0);
    c.send(0, "SET b 2");
    c.settle();
    let id = c.send(0, "FAILOVER TO 127.0.0.1 7002");
    c.settle();
    let timeout_now = |c: &Cluster| c.net.iter().any(|(_, _, m)| matches!(m, Message::TimeoutNow { .. }));
    // n2 holds every record, but n1's own copy of the write is not durable: handing over now
    // would fail the write as n1 steps down, though n2 has it.
    assert!(!timeout_now(&c), "asked n2 to take over before n1's own fsync");
    c.finish_fsync(0);
    assert!(timeout_now(&c), "n1 never asked n2 to take over");
    c.settle();
    c.run_for(300);
    assert!(c.nodes[1].is_leader());
    assert_eq!(c.reply(id), Some(&Reply::Ok));
}

#[test]
fn a_record_its_leader_lost_is_cut_from_the_log_alone_keeping_the_store_and_the_vote_floor() {
    let mut c = Cluster::failover(2, 0, ReplogOptions::default());
    c.run_for(300);
    c.send(0, "SET a 1");
    c.settle();
    c.run_for(100);
    // Record 2 (b) reaches n2 only, before n1's fsync; n1 loses it in a crash.
    c.cut.insert(2);
    c.hold_fsync(0);
    c.send(0, "SET b 2");
    c.settle();
    assert_eq!(c.nodes[1].last_lsn(), c.nodes[0].last_lsn());
    let floor = c.nodes[1].votes.floor();
    c.crash_losing_unsynced(0);
    c.cut.clear();
    // Only n3's timers run: it stands, n1 (restarted, as far as n3) votes for it, n2 refuses.
    for _ in 0..40 {
        if c.nodes[2].is_leader() {
            break;
        }
        c.now += 50;
        c.step(2, Input::Tick);
        c.settle();
    }
    assert!(c.nodes[2].is_leader(), "{:?}", c.nodes[2].status(c.now));
    c.run_for(300);
    let view = c.nodes[1].status(c.now).leader.unwrap();
    assert_eq!((view.tail_cuts, view.rebuilds), (1, 0), "n2 cut its tail alone: {view:?}");
    assert_eq!(c.nodes[1].votes.floor(), floor, "the log kept all of the history it held");
    assert!(c.nodes[1].rollback().entries_total() > 0, "the cut write is in the rollback log");
    assert_eq!(get(&mut c, 1, "a"), Reply::Bulk(Bytes::from("1")));
    assert_eq!(get(&mut c, 1, "b"), Reply::Nil);
}

#[test]
fn a_repair_reply_waits_until_the_follower_has_applied_what_it_depends_on() {
    let mut c = Cluster::new(2, 1, ReplogOptions::default());
    c.run_for(200);
    c.send(0, "SET a 1");
    c.settle();
    // c = 9, then a = 2, reach the followers before the leader's fsync: held, not applied.
    c.hold_fsync(0);
    c.send(0, "SET c 9");
    c.send(0, "SET a 2");
    c.settle();
    assert_eq!(get(&mut c, 1, "a"), Reply::Bulk(Bytes::from("1")));
    // n2's record of a is found damaged: it asks the leader, whose store holds a = 2 (its
    // reply waits for the leader's fsync, like any reply that read its store).
    c.nodes[1].store.engine_mut().damage(b"a");
    assert!(matches!(get(&mut c, 1, "a"), Reply::Error(e) if e.starts_with("DAMAGED")));
    c.run_for(500);
    // The fsync finishes: the repair reply leaves, then the notice of the leader's durable end.
    // Whatever n2 has received, it never shows a = 2 without c = 9, written before it.
    c.finish_fsync(0);
    let mut repaired = false;
    while let Some((from, to, message)) = c.net.pop_front() {
        let from = c.ids[from];
        c.step(to, Input::Message { from, message });
        if to == 1 && get(&mut c, 1, "a") == Reply::Bulk(Bytes::from("2")) {
            repaired = true;
            assert_eq!(get(&mut c, 1, "c"), Reply::Bulk(Bytes::from("9")), "n2 shows a = 2 but not c = 9");
        }
    }
    assert!(repaired, "n2 never took a back");
    assert_eq!(c.nodes[1].status(c.now).damaged_keys, 0, "repaired");
}
