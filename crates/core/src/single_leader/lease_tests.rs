//! Leader reads under a lease (`read_lease`): answered without a round while the lease
//! holds, never after it runs out, and never once a handover asked another node to lead; and
//! the voters' side it rests on.

use super::leader::lease_ms;
use super::tests::{restart, Cluster};
use super::{Input, Message};
use crate::kv::Reply;
use crate::replication::ReplogOptions;
use bytes::Bytes;

/// A 3-node cluster with auto_failover (election timeout 300 ms), semi-sync:1, `read_lease`
/// as given, its heartbeats confirmed and `a` written.
fn cluster(read_lease: bool) -> Cluster {
    let mut c = Cluster::with(2, 1, ReplogOptions::default(), false, true);
    for node in &mut c.nodes {
        node.settings_mut().read_lease = read_lease;
    }
    c.run_for(300);
    let id = c.send(0, "SET a 1");
    c.settle();
    assert_eq!(c.reply(id), Some(&Reply::Ok));
    c.run_for(100);
    c
}

#[test]
fn a_leased_read_is_answered_without_a_round_and_a_read_index_one_is_not() {
    for read_lease in [true, false] {
        let mut c = cluster(read_lease);
        let id = c.send(0, "GET a");
        let at_once = c.reply(id).cloned();
        c.settle();
        assert_eq!(c.reply(id), Some(&Reply::Bulk(Bytes::from("1"))), "read_lease {read_lease}");
        let status = c.nodes[0].status(c.now);
        if read_lease {
            assert_eq!(at_once, Some(Reply::Bulk(Bytes::from("1"))), "under the lease: no round trip");
            assert_eq!(status.lease_reads, 1);
            assert!(status.read_lease_ms_left > 0 && status.read_lease_ms_left <= lease_ms(c.nodes[0].settings()));
        } else {
            assert_eq!(at_once, None, "read index: the reply waits for a heartbeat round");
            assert_eq!((status.lease_reads, status.read_lease_ms_left), (0, 0));
        }
    }
}

#[test]
fn a_lease_read_still_waits_for_the_write_it_sees_to_be_committed() {
    let mut c = cluster(true);
    c.send(0, "SET a 2"); // not delivered yet: held by no follower
    let id = c.send(0, "GET a");
    assert_eq!(c.reply(id), None, "it sees a write no majority holds yet");
    c.settle();
    assert_eq!(c.reply(id), Some(&Reply::Bulk(Bytes::from("2"))));
}

#[test]
fn a_leader_cut_off_answers_under_its_lease_only_until_it_runs_out() {
    let mut c = cluster(true);
    let lease = lease_ms(c.nodes[0].settings());
    assert_eq!(lease, 300 * 990_000 / 1_010_000, "300 ms shortened by a 1% drift allowance, twice");
    // The last round a majority echoed left at most one heartbeat interval ago.
    let left = c.nodes[0].status(c.now).read_lease_ms_left;
    let ends = c.now + left;
    c.cut.extend([1, 2]);
    let mut answered_at_once = 0;
    while c.now < ends + 100 {
        c.now += 10;
        c.step(0, Input::Tick);
        if !c.nodes[0].is_leader() {
            // It stepped down (no majority for an election timeout), after its lease ended:
            // what it answers now is a follower's read.
            assert!(c.now >= ends, "stepped down at {} under a lease that held until {ends}", c.now);
            break;
        }
        let id = c.send(0, "GET a");
        match c.reply(id) {
            Some(Reply::Bulk(_)) => {
                assert!(c.now < ends, "answered at {} under a lease that ended at {ends}", c.now);
                answered_at_once += 1;
            }
            None => assert!(c.now >= ends, "not answered at {} under a lease that holds until {ends}", c.now),
            Some(other) => assert!(c.now >= ends, "{other:?} at {}", c.now),
        }
    }
    assert!(answered_at_once > 0, "the lease held for a while after the cut");
    assert_eq!(c.nodes[0].status(c.now).read_lease_ms_left, 0);
}

#[test]
fn a_handover_revokes_the_lease_before_timeout_now_leaves() {
    let mut c = cluster(true);
    assert!(c.nodes[0].status(c.now).read_lease_ms_left > 0);
    let id = c.send(0, "FAILOVER TO 127.0.0.1 7002");
    assert_eq!(c.reply(id), Some(&Reply::Ok));
    let timeout_now = c.net.iter().any(|(_, to, m)| *to == 1 && matches!(m, Message::TimeoutNow { .. }));
    assert!(timeout_now, "n2 had caught up: TimeoutNow left in the same step");
    assert_eq!(c.nodes[0].status(c.now).read_lease_ms_left, 0, "no lease once TimeoutNow left");
    let id = c.send(0, "GET a");
    assert_eq!(c.reply(id), None, "a read waits for a round again");
}

/// What node `i` answers to a real (not pre-) vote for `epoch` from n3, with a log far ahead.
fn vote(c: &mut Cluster, i: usize, epoch: u64) -> bool {
    let vote = Message::Vote { epoch, last_epoch: epoch - 1, last_lsn: 1_000, pre_vote: false, transfer: false };
    c.ask_vote(i, 2, vote)
}

#[test]
fn a_voter_that_heard_the_leader_keeps_refusing_after_a_newer_epoch_moved_it() {
    for read_lease in [true, false] {
        let mut c = cluster(read_lease);
        let epoch = c.nodes[1].status(c.now).epoch + 1;
        assert!(!vote(&mut c, 1, epoch), "refused: n1 was heard just now");
        // The refusal moved n2 to the newer epoch, with no leader known: without the lease
        // guard the next ask is granted while n1 may still answer reads.
        assert_eq!(vote(&mut c, 1, epoch), !read_lease, "read_lease {read_lease}");
        if read_lease {
            c.now += c.nodes[1].settings().election_timeout_ms;
            assert!(vote(&mut c, 1, epoch), "granted once an election timeout has passed");
        }
    }
}

#[test]
fn a_restarted_voter_waits_one_election_timeout_before_it_votes() {
    for read_lease in [true, false] {
        let mut c = cluster(read_lease);
        restart(&mut c, 1);
        let epoch = c.nodes[1].status(c.now).epoch + 1;
        assert_eq!(vote(&mut c, 1, epoch), !read_lease, "read_lease {read_lease}: a vote at once after a restart");
        c.now += c.nodes[1].settings().election_timeout_ms;
        assert!(vote(&mut c, 1, epoch + 1), "read_lease {read_lease}: granted an election timeout later");
    }
}

#[test]
fn a_voter_keeps_the_guard_a_leasing_leader_asks_for_whatever_its_own_settings() {
    // The leader leases with an election timeout of 1000 ms; the followers run without a
    // lease and with 300 ms, as in the middle of a rolling restart that changes both.
    let mut c = cluster(false);
    c.nodes[0].settings_mut().read_lease = true;
    c.nodes[0].settings_mut().election_timeout_ms = 1_000;
    c.run_for(100); // a heartbeat carrying the leader's guard reaches n2
    let heard = c.now;
    let epoch = c.nodes[1].status(c.now).epoch + 1;
    assert!(!vote(&mut c, 1, epoch), "refused: n1 was heard just now");
    c.now = heard + 500; // past n2's own 300 ms, within the leader's 1000 ms
    assert!(!vote(&mut c, 1, epoch), "n2 keeps the guard the leader's lease needs");
    c.now = heard + 1_000;
    assert!(vote(&mut c, 1, epoch), "granted once the leader's guard has passed");
}
