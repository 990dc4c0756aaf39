//! The rules of a leader election (issue 6, DESIGN §7), as pure functions: who may vote for
//! whom, when a candidate has won, how long a follower waits before standing. The replica
//! drives them (see [`crate::single_leader`]'s essay); keeping them apart keeps each rule small
//! enough to test on its own and to model (`crates/model` checks them with stateright).
//!
//! # Rules
//!
//! - **Up to date.** A log position is (epoch of its last record, its LSN), compared epoch
//!   first. A voter grants its vote only to a candidate whose log is at least as up to date as
//!   its own, so the winner holds every record a majority holds: with acknowledgements on a
//!   majority (sync, or semi-sync where K+1 is a majority), no acknowledged write is lost.
//! - **One vote per epoch.** A voter grants at most one vote in an epoch (to one candidate,
//!   again if it asks again), and never in an epoch older than the newest it has seen. Its
//!   vote must be durable before the grant leaves (the replica's job).
//! - **Pre-vote.** Before standing, a candidate asks "would you vote for me in the next
//!   epoch?" without anyone changing epoch. A voter says yes only if it would grant the vote
//!   and it has not heard from a leader within the election timeout. A node returning from a
//!   partition therefore cannot depose a healthy leader: its pre-vote fails, and it never
//!   bumps the epoch that would fence the leader.
//! - **Majority.** A candidate wins with votes (its own included) from more than half of the
//!   cluster's voters.
//! - **Timeouts.** A follower stands after `election_timeout` without a leader's message, the
//!   timeout drawn afresh each time from a range, from randomness the caller supplies (the
//!   core draws none of its own), so that two followers rarely stand at once.
//!
//! CAVEATS
//! - A voter that heard from its leader recently refuses real votes too, not only pre-votes
//!   (leader stickiness); the replica passes `leader_recent = false` for the votes of a
//!   planned handover (FAILOVER), which the leader itself asked for. With `read_lease` the
//!   replica's `leader_recent` also holds for an election timeout after it last heard a
//!   leader, across a newer epoch and a restart (the lease's guard).

use crate::replication::record::{Epoch, Lsn};
use crate::version::NodeId;
use std::collections::BTreeSet;

/// How up to date a log is: the epoch of its last record, then its LSN.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogPosition {
    /// The epoch of the last record (the log's base epoch when it holds none).
    pub epoch: Epoch,
    /// The last record's LSN.
    pub lsn: Lsn,
}

/// What a voter remembers, durably, across elections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VoterState {
    /// The newest epoch this node has seen.
    pub epoch: Epoch,
    /// Whom it voted for in that epoch, if anyone.
    pub voted_for: Option<NodeId>,
}

/// A request for a vote (or a pre-vote).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteRequest {
    /// The epoch the candidate stands in (for a pre-vote: the one it would stand in).
    pub epoch: Epoch,
    /// The candidate.
    pub candidate: NodeId,
    /// How up to date its log is.
    pub last: LogPosition,
    /// A pre-vote: no state changes on either side.
    pub pre_vote: bool,
}

/// A voter's answer, and the state it must make durable before sending it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteDecision {
    /// Granted or refused.
    pub granted: bool,
    /// The voter's state after the request (unchanged for a pre-vote).
    pub state: VoterState,
    /// Why, for logs and golden scripts.
    pub reason: &'static str,
}

/// Decides `request` for a voter in `state` whose log is at `mine`. `leader_recent` is true
/// when the voter heard from a leader within its election timeout (pre-votes are refused
/// then, and so are votes: a follower that still hears its leader does not help depose it).
pub fn decide_vote(state: VoterState, mine: LogPosition, request: VoteRequest, leader_recent: bool) -> VoteDecision {
    let refuse = |state, reason| VoteDecision { granted: false, state, reason };
    if request.epoch < state.epoch || (request.pre_vote && request.epoch <= state.epoch) {
        return refuse(state, "stale epoch");
    }
    // A newer epoch moves the voter to it (forgetting its old vote), even if it refuses.
    let mut next = state;
    if !request.pre_vote && request.epoch > state.epoch {
        next = VoterState { epoch: request.epoch, voted_for: None };
    }
    if leader_recent {
        return refuse(next, "a leader is alive");
    }
    if request.last < mine {
        return refuse(next, "candidate's log is behind");
    }
    if request.pre_vote {
        return VoteDecision { granted: true, state, reason: "would vote" };
    }
    match next.voted_for {
        Some(other) if other != request.candidate => refuse(next, "already voted in this epoch"),
        _ => VoteDecision {
            granted: true,
            state: VoterState { epoch: request.epoch, voted_for: Some(request.candidate) },
            reason: "granted",
        },
    }
}

/// The votes a candidate has gathered in one round.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Who granted.
    granted: BTreeSet<NodeId>,
    /// Who refused.
    refused: BTreeSet<NodeId>,
}

impl Tally {
    /// Records `voter`'s answer (a repeated answer counts once; the first one stands).
    pub fn record(&mut self, voter: NodeId, granted: bool) {
        if self.granted.contains(&voter) || self.refused.contains(&voter) {
            return;
        }
        if granted {
            self.granted.insert(voter);
        } else {
            self.refused.insert(voter);
        }
    }

    /// True when the grants are a majority of `voters` (the cluster's nodes).
    pub fn won(&self, voters: usize) -> bool {
        crate::quorum::is_majority(self.granted.len(), voters)
    }

    /// True when the refusals make a majority impossible.
    pub fn lost(&self, voters: usize) -> bool {
        crate::quorum::majority_lost(self.refused.len(), voters)
    }
}

/// An election timeout in `min_ms..=max_ms`, from `random` (any 64 random bits the caller
/// drew: the runtime from the OS, the simulator from its seed).
pub fn election_timeout_ms(min_ms: u64, max_ms: u64, random: u64) -> u64 {
    let span = max_ms.saturating_sub(min_ms) + 1;
    min_ms + random % span
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);

    fn pos(epoch: Epoch, lsn: Lsn) -> LogPosition {
        LogPosition { epoch, lsn }
    }

    fn ask(epoch: Epoch, candidate: NodeId, last: LogPosition, pre_vote: bool) -> VoteRequest {
        VoteRequest { epoch, candidate, last, pre_vote }
    }

    #[test]
    fn up_to_date_compares_epoch_first() {
        assert!(pos(2, 1) > pos(1, 100), "a newer epoch wins over a longer log");
        assert!(pos(2, 5) > pos(2, 4));
        assert_eq!(pos(2, 5).cmp(&pos(2, 5)), std::cmp::Ordering::Equal);
    }

    #[test]
    fn one_vote_per_epoch_and_only_for_a_log_at_least_as_up_to_date() {
        let start = VoterState { epoch: 1, voted_for: None };
        let d = decide_vote(start, pos(1, 10), ask(2, A, pos(1, 10), false), false);
        assert!(d.granted);
        assert_eq!(d.state, VoterState { epoch: 2, voted_for: Some(A) });
        let again = decide_vote(d.state, pos(1, 10), ask(2, A, pos(1, 10), false), false);
        assert!(again.granted, "the same candidate asking again gets the same vote");
        let other = decide_vote(d.state, pos(1, 10), ask(2, B, pos(1, 50), false), false);
        assert!(!other.granted && other.reason == "already voted in this epoch", "{other:?}");
        let behind = decide_vote(start, pos(1, 10), ask(2, B, pos(1, 9), false), false);
        assert!(!behind.granted, "a candidate missing records cannot win this voter");
        assert_eq!(behind.state.epoch, 2, "the voter still moves to the newer epoch");
        let stale = decide_vote(d.state, pos(1, 10), ask(1, B, pos(1, 10), false), false);
        assert!(!stale.granted && stale.reason == "stale epoch");
    }

    #[test]
    fn a_pre_vote_changes_nothing_and_fails_while_a_leader_is_heard() {
        let state = VoterState { epoch: 3, voted_for: Some(B) };
        let d = decide_vote(state, pos(3, 7), ask(4, A, pos(3, 7), true), false);
        assert!(d.granted && d.state == state, "{d:?}");
        let d = decide_vote(state, pos(3, 7), ask(4, A, pos(3, 7), true), true);
        assert!(!d.granted && d.state == state, "a returning node cannot depose a live leader: {d:?}");
        let d = decide_vote(state, pos(3, 7), ask(3, A, pos(3, 7), true), false);
        assert!(!d.granted, "a pre-vote is for the next epoch, not this one");
    }

    #[test]
    fn a_majority_wins_and_enough_refusals_lose() {
        let mut t = Tally::default();
        t.record(A, true);
        assert!(!t.won(3) && !t.lost(3));
        t.record(A, false);
        t.record(B, true);
        assert!(t.won(3), "two of three");
        let mut t = Tally::default();
        t.record(A, true);
        t.record(B, false);
        t.record(NodeId(3), false);
        assert!(t.lost(3) && !t.won(3));
        let mut t = Tally::default();
        t.record(A, true);
        t.record(B, true);
        assert!(!t.won(4), "two of four is not a majority");
    }

    #[test]
    fn timeouts_stay_in_their_range_and_spread() {
        let random = |i: u64| xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes());
        let draws: BTreeSet<u64> = (0..1000u64).map(|i| election_timeout_ms(150, 300, random(i))).collect();
        assert!(draws.iter().all(|t| (150..=300).contains(t)));
        assert!(draws.len() > 140, "spread over the 151 values: {} distinct", draws.len());
        assert_eq!(election_timeout_ms(200, 200, 12345), 200);
    }
}
