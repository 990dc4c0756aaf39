//! Failover: epochs, fencing, elections and the moves between roles (issue 6, DESIGN §7).
//!
//! The rules themselves (who may vote for whom, what a majority is) are pure functions in
//! [`crate::single_leader::election`]; this module drives them from the replica's inputs:
//!
//! - **Fencing** ([`SingleLeader::fence`]): every message carries its sender's epoch. One from an
//!   older epoch is refused, and an old leader is answered with the newer epoch, so it steps
//!   down; one from a newer epoch moves this node to it (durably, in its vote file) and makes
//!   it a follower, of the sender if the sender leads. A node therefore acts in one epoch at a
//!   time, and a leader never counts an acknowledgement from another epoch.
//! - **Standing**: a follower that hears no leader for its election timeout (drawn afresh from
//!   `election_timeout_ms..=2 * election_timeout_ms` each time) first asks for pre-votes for
//!   the next epoch, which change nothing anywhere; only with a majority of them does it move
//!   to that epoch, vote for itself (durably) and ask for votes. A majority of votes makes it
//!   leader; otherwise it waits for its next timeout.
//! - **Voting**: as [`decide_vote`] says, with the vote made durable before the answer leaves.
//!   A voter that heard from its leader within the election timeout refuses, so a node
//!   returning from a partition cannot depose a healthy leader. With `read_lease` it refuses
//!   for an election timeout after it last heard any leader of its epoch, whatever happened
//!   since (a newer epoch seen, a restart: its start counts as hearing one), and any node
//!   refuses for as long as a leasing leader's heartbeat asked (`lease_guard_ms`): that is
//!   what a leader's lease rests on (the leader's essay, "Leases").
//! - **Becoming leader**: the new leader appends an empty record in its epoch. Shipping it
//!   checks each follower's log against the leader's (a follower holding records of an older
//!   epoch that no majority had cuts them, see the follower's essay), and once a majority holds
//!   it, every record before it is safe to read (Raft's no-op).
//! - **Stepping down**: a leader fenced by a newer epoch, or cut off from a majority for the
//!   election timeout (see the leader's essay), fails what still waits and becomes a follower.
//! - **Forwarded writes**: a write a follower forwarded is answered only by the leader it went
//!   to, in the epoch it went in (the reply is fenced otherwise). So every move that changes
//!   either (standing for election, winning it, following another leader or none, a newer
//!   epoch) fails the writes this node forwarded, at once, with the forward timeout's "may or
//!   may not have been applied": [`SingleLeader::maybe_abort_forwarding`], after every step, is the
//!   one place that does it, whichever move ran. A pre-vote moves nothing: the leader's answer
//!   can still come, so they keep waiting.

use super::follower::{Candidacy, Follower};
use super::leader::Leader;
use super::{Canary, Outbox, Output, Role, SingleLeader, State};
use crate::error::Result;
use crate::kv::Reply;
use crate::replication::{Epoch, LogRecord};
use crate::single_leader::election::{decide_vote, election_timeout_ms, LogPosition, Tally, VoteRequest, VoterState};
use crate::single_leader::Message;
use crate::storage::Engine;
use crate::version::NodeId;

impl<E: Engine> SingleLeader<E> {
    /// Fencing by epoch (module documentation). Returns false when the message must go no
    /// further.
    pub(super) fn fence(&mut self, now_ms: u64, from: NodeId, message: &Message, outbox: &mut Outbox) -> Result<bool> {
        if matches!(self.state, State::Standalone) || matches!(message, Message::Vote { .. }) {
            return Ok(true); // a vote request is decided by its own rules, in vote()
        }
        let (epoch, mine) = (message.epoch(), self.settings.epoch);
        let pre_vote_reply = matches!(message, Message::VoteReply { pre_vote: true, .. });
        if epoch < mine && !pre_vote_reply {
            if self.settings.canary == Canary::NoFencing && message.from_leader() {
                return self.unfenced(now_ms, from, message.clone(), outbox).map(|()| false);
            }
            tracing::debug!(
                "refused a {} of epoch {epoch} from {from:?}: this node is in epoch {mine}",
                message.kind()
            );
            if message.from_leader() {
                // Tell the old leader the newer epoch: it steps down.
                let message = Message::Ack {
                    epoch: mine,
                    durable_lsn: self.log.last_lsn(),
                    matched_lsn: 0,
                    last_epoch: self.log.last_epoch(),
                    log_base: self.log.first_lsn() - 1,
                    round: 0,
                    generation: self.votes.generation(),
                    reject: true,
                    caught_up_at_ms: 0,
                    snapshot: None,
                };
                outbox.now.push(Output::Send { to: from, message: message.into() });
            }
            return Ok(false);
        }
        if epoch > mine && self.settings.canary == Canary::NoFencing && matches!(self.state, State::Leader(_)) {
            return Ok(false); // the planted bug: a deposed leader does not hear that it is
        }
        if epoch > mine {
            tracing::info!("{from:?} is in epoch {epoch}, newer than this node's {mine}: moving to it");
            self.votes.save(VoterState { epoch, voted_for: None })?;
            self.settings.epoch = epoch;
            self.become_follower(now_ms, message.from_leader().then_some(from), outbox)?;
            if message.from_leader() {
                self.heard_leader(now_ms, message);
            }
            return Ok(true);
        }
        if message.from_leader() {
            self.heard_leader(now_ms, message);
            match &mut self.state {
                State::Leader(_) => {
                    tracing::error!("{from:?} claims to lead epoch {epoch}, which this node leads: ignored");
                    return Ok(false);
                }
                State::Follower(f) if f.leader.is_none() => {
                    tracing::info!("{from:?} leads epoch {epoch}");
                    f.leader = Some(from);
                    f.candidacy = None;
                    let leader_hint = self.settings.hint(from);
                    self.settings.role = Role::Follower { leader: Some(from), leader_hint };
                }
                State::Follower(f) => {
                    // The epoch's leader is alive: a pre-vote under way is over (a late grant
                    // must not make this node stand against it).
                    f.candidacy = None;
                }
                State::Standalone => {}
            }
        }
        Ok(true)
    }

    /// Notes that a leader of this node's epoch was heard, and the vote guard its heartbeat
    /// asks for (the leader's essay, "Leases").
    fn heard_leader(&mut self, now_ms: u64, message: &Message) {
        self.leader_heard_ms = Some(now_ms);
        if let Message::Heartbeat { lease_guard_ms, .. } = message {
            self.vote_guard_until_ms = self.vote_guard_until_ms.max(now_ms.saturating_add(*lease_guard_ms));
        }
    }

    /// The `NoFencing` canary: a follower takes an old leader's message as its leader's and
    /// answers in the old epoch.
    fn unfenced(&mut self, now_ms: u64, from: NodeId, message: Message, outbox: &mut Outbox) -> Result<()> {
        let State::Follower(follower) = &mut self.state else { return Ok(()) };
        let mut settings = self.settings.clone();
        settings.epoch = message.epoch();
        let (log, store, rollback, votes) = (&mut self.log, &mut self.store, &mut self.rollback, &mut self.votes);
        follower.message(now_ms, from, message, log, store, rollback, votes, &settings, outbox)
    }

    /// A request for a vote or a pre-vote from `candidate` (`transfer`: in a handover the
    /// leader asked for, so hearing that leader is no reason to refuse).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn vote(
        &mut self,
        now_ms: u64,
        candidate: NodeId,
        epoch: Epoch,
        last: LogPosition,
        pre_vote: bool,
        transfer: bool,
        outbox: &mut Outbox,
    ) -> Result<()> {
        let timeout = self.settings.election_timeout_ms;
        let leader_recent = match &self.state {
            State::Standalone => return Ok(()),
            State::Leader(_) => true,
            State::Follower(f) => {
                f.leader.is_some() && f.last_heard_ms.is_some_and(|at| now_ms.saturating_sub(at) < timeout)
            }
        };
        // The lease guard: a leader heard within the election timeout, whatever happened since
        // (a newer epoch seen, a restart), keeps this vote (the leader's essay, "Leases").
        let lease_guard = (self.settings.read_lease
            && self.leader_heard_ms.is_some_and(|at| now_ms.saturating_sub(at) < timeout))
            || now_ms < self.vote_guard_until_ms;
        let leader_recent = leader_recent || lease_guard;
        // A node that emptied its log votes with the position it had (the vote floor).
        let mine = LogPosition { epoch: self.log.last_epoch(), lsn: self.log.last_lsn() }.max(self.votes.floor());
        let request = VoteRequest { epoch, candidate, last, pre_vote };
        let decision = decide_vote(self.votes.state(), mine, request, leader_recent && !transfer);
        if decision.state != self.votes.state() {
            self.votes.save(decision.state)?;
        }
        if decision.state.epoch > self.settings.epoch {
            self.settings.epoch = decision.state.epoch;
            self.become_follower(now_ms, None, outbox)?;
        }
        if decision.granted && !pre_vote {
            self.election_deadline_ms = now_ms + self.draw_election_timeout();
        }
        tracing::debug!(
            "{} from {candidate:?} for epoch {epoch}: {} ({})",
            if pre_vote { "pre-vote" } else { "vote" },
            if decision.granted { "granted" } else { "refused" },
            decision.reason
        );
        let message = Message::VoteReply { epoch: self.settings.epoch, granted: decision.granted, pre_vote };
        outbox.now.push(Output::Send { to: candidate, message: message.into() });
        Ok(())
    }

    /// An answer to this node's request for votes.
    pub(super) fn vote_reply(
        &mut self,
        now_ms: u64,
        from: NodeId,
        epoch: Epoch,
        granted: bool,
        pre_vote: bool,
        outbox: &mut Outbox,
    ) -> Result<()> {
        let voters = self.settings.common.peers.len() + 1;
        let State::Follower(follower) = &mut self.state else { return Ok(()) };
        let Some(candidacy) = &mut follower.candidacy else { return Ok(()) };
        if candidacy.pre_vote != pre_vote || (!pre_vote && candidacy.epoch != epoch) {
            return Ok(()); // an answer to an earlier round
        }
        candidacy.tally.record(from, granted);
        if candidacy.tally.won(voters) {
            return if pre_vote {
                self.stand(now_ms, false, false, outbox)
            } else {
                self.become_leader(now_ms, outbox)
            };
        }
        if candidacy.tally.lost(voters) {
            tracing::debug!(
                "lost the {} for epoch {}",
                if pre_vote { "pre-vote" } else { "election" },
                candidacy.epoch
            );
            follower.candidacy = None;
        }
        Ok(())
    }

    /// Stands in the next epoch: a pre-vote first, the election once the pre-vote is won
    /// (`transfer`: straight to the election, in a handover the leader asked for).
    pub(super) fn stand(&mut self, now_ms: u64, pre_vote: bool, transfer: bool, outbox: &mut Outbox) -> Result<()> {
        let State::Follower(follower) = &mut self.state else { return Ok(()) };
        let epoch = self.settings.epoch + 1;
        if pre_vote {
            tracing::debug!("no leader heard: asking for pre-votes for epoch {epoch}");
        } else {
            self.votes.save(VoterState { epoch, voted_for: Some(self.settings.common.node) })?;
            self.settings.epoch = epoch;
            self.settings.role = Role::Follower { leader: None, leader_hint: String::new() };
            follower.follow(None);
            self.elections.0 += 1;
            tracing::info!("standing for election in epoch {epoch}");
        }
        let mut tally = Tally::default();
        tally.record(self.settings.common.node, true);
        follower.candidacy = Some(Candidacy { pre_vote, epoch, tally });
        self.election_deadline_ms = now_ms + self.draw_election_timeout();
        let (last_epoch, last_lsn) = (self.log.last_epoch(), self.log.last_lsn());
        for &to in &self.settings.common.peers {
            let message = Message::Vote { epoch, last_epoch, last_lsn, pre_vote, transfer };
            outbox.now.push(Output::Send { to, message: message.into() });
        }
        if self.settings.common.peers.is_empty() {
            // A cluster of one: its own vote is the majority.
            return if pre_vote {
                self.stand(now_ms, false, false, outbox)
            } else {
                self.become_leader(now_ms, outbox)
            };
        }
        Ok(())
    }

    /// Won the election: leads the epoch, from an empty record in it.
    fn become_leader(&mut self, now_ms: u64, outbox: &mut Outbox) -> Result<()> {
        let followers = self.settings.common.peers.clone();
        let epoch = self.settings.epoch;
        self.reclaim = false;
        if let State::Follower(follower) = &mut self.state {
            // Its log is the history from now on: its store holds all of it.
            follower.apply_all(now_ms, &mut self.log, &mut self.store)?;
        }
        let mut leader = Leader::new(&followers, now_ms);
        leader.hold_from = self.log_hold; // from its first tick, which follows
        leader.restarted(self.durable_lsn());
        let record = LogRecord::whole(self.log.last_lsn() + 1, epoch, Vec::new());
        let bytes = record.size_hint() as u64;
        self.log.append(record)?;
        leader.logged(self.log.last_lsn(), bytes);
        self.elections.1 += 1;
        tracing::info!("won the election: leading epoch {epoch} from lsn {}", self.log.last_lsn());
        self.settings.role = Role::Leader { followers };
        self.state = State::Leader(leader);
        if let State::Leader(leader) = &mut self.state {
            // Its tick may drop records: the engine holds them durably first.
            if self.log.would_retain_drop(leader.retain_bound(&self.log)) {
                self.store.engine_mut().sync_written(now_ms)?;
            }
            leader.tick(now_ms, &mut self.log, &self.store, &self.settings, outbox)?;
        }
        Ok(())
    }

    /// Becomes a follower of `leader` (`None`: unknown yet) in the current epoch; a leader
    /// steps down first, failing what still waits.
    pub(super) fn become_follower(&mut self, now_ms: u64, leader: Option<NodeId>, outbox: &mut Outbox) -> Result<()> {
        // What a majority held when it led: past it, its records may not be in the next
        // leader's history.
        let mut committed = self.durable_lsn();
        if let State::Leader(old) = &mut self.state {
            tracing::warn!("stepping down: no longer leading (now in epoch {})", self.settings.epoch);
            committed = committed.min(old.committed());
            old.step_down(&self.settings, outbox);
        }
        let leader_hint = leader.map(|l| self.settings.hint(l)).unwrap_or_default();
        self.settings.role = Role::Follower { leader, leader_hint };
        match &mut self.state {
            State::Follower(follower) => follower.follow(leader),
            _ => {
                let mut follower = Follower::new(leader, self.log.complete_lsn());
                if self.log.complete_lsn() > committed {
                    // It led, and applied writes no majority (or not even its own fsync) holds:
                    // the next leader may cut them, so no reader sees them until it confirms.
                    follower.unconfirmed_through(self.log.complete_lsn(), "stepped down from leading");
                }
                self.state = State::Follower(follower);
            }
        }
        self.election_deadline_ms = now_ms + self.draw_election_timeout();
        Ok(())
    }

    /// Fails every write this node forwarded if it no longer follows the leader they went to
    /// in the epoch they went in (module documentation): that leader's answer would be fenced
    /// or ignored, and only a follower times them out, so on a leader their clients would wait
    /// for ever. Run after every step, and before a write is forwarded (so that all of
    /// `forwarding` went to one leader).
    pub(super) fn maybe_abort_forwarding(&mut self, outbox: &mut Outbox) {
        let now_following = match &self.state {
            State::Follower(f) => f.leader.map(|leader| (leader, self.settings.epoch)),
            State::Leader(_) | State::Standalone => None,
        };
        if self.forwarding.is_empty() || now_following == Some(self.forwarding_to) {
            return;
        }
        let (leader, epoch) = self.forwarding_to;
        let hint = self.settings.hint(leader);
        let now = self.settings.epoch;
        let change = match &self.state {
            State::Leader(_) => format!("this node became the leader of epoch {now}"),
            State::Follower(f) => match f.leader {
                Some(other) => format!("this node moved to the leader of epoch {now}, {}", self.settings.hint(other)),
                None if f.candidacy.is_some() => format!("this node stood for election in epoch {now}"),
                None => format!("this node lost its leader (now epoch {now}; an election may be under way)"),
            },
            State::Standalone => "this node left the cluster".to_string(),
        };
        tracing::warn!(
            "{} requests forwarded to {hint} in epoch {epoch} fail: {change} before it answered them",
            self.forwarding.len()
        );
        for (_, (id, _, what)) in std::mem::take(&mut self.forwarding) {
            let reply = Reply::err(format!(
                "the leader ({hint}) did not answer this forwarded {} before {change}{}",
                what.name(),
                what.outcome()
            ));
            outbox.now.push(Output::Reply { id, reply });
        }
    }

    /// The next election timeout, from the replica's seeded draws.
    pub(super) fn draw_election_timeout(&mut self) -> u64 {
        // splitmix64: small, and every seed gives a different sequence.
        self.random = self.random.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.random;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let t = self.settings.election_timeout_ms;
        election_timeout_ms(t, t.saturating_mul(2), z ^ (z >> 31))
    }
}
