//! Manual failover: `FAILOVER [TO host port [FORCE]] [ABORT] [TIMEOUT ms]`, with Redis's
//! semantics, as a leadership transfer (issue 6).
//!
//! The leader answers `OK` at once and then:
//!
//! 1. **waiting-for-sync**: it stops executing writes. Each one is held, unanswered (clients
//!    see a pause), while the target (the named follower, or the most up-to-date one) catches
//!    up: it keeps shipping, and waits until the target's log matches its own to the end.
//! 2. **failover-in-progress**: it sends the target `TimeoutNow`; the target stands at once in
//!    the next epoch, without a pre-vote, and its votes say "transfer", which voters grant even
//!    while they hear the old leader. It holds every record, so it wins; the old leader, voting
//!    for it, moves to the new epoch and becomes a follower. No acknowledged write is lost: no
//!    write was executed since the target caught up.
//! 3. The held writes are then handled as the node's new role says: forwarded to the new
//!    leader (`forward_writes`), so that their clients see a pause and then the new leader's
//!    answer, or refused with `-READONLY` naming it. Only the leader's own clients' writes are
//!    held: one a follower forwarded during the handover is refused at once as not applied,
//!    since that follower fails what it forwarded when it moves to the new epoch.
//!
//! If the target has not caught up by the timeout, the handover is abandoned and the held
//! writes run on the old leader, unless `FORCE` was given: then it hands over all the same
//! (writes the target lacks may then be cut, into the old leader's rollback log). If no new
//! leader appears within twice the election timeout after `TimeoutNow` and the old leader still
//! leads (no transfer vote reached it), it resumes. `FAILOVER ABORT` cancels a handover still
//! waiting for the target. A held write waits `forward_timeout_ms` at most, then fails with an
//! error saying it was not applied.

use super::{Outbox, Output, RequestId, SingleLeader, State};
use crate::error::Result;
use crate::kv::{Reply, Request};
use crate::single_leader::Message;
use crate::storage::Engine;
use crate::version::NodeId;

/// Writes held during a handover, at most; beyond, a write is refused.
pub const HELD_WRITES_MAX: usize = 100_000;

/// A handover under way.
#[derive(Debug)]
pub(super) struct Handover {
    /// The follower taking over.
    pub(super) target: NodeId,
    /// When to give up waiting for it (or, with `force`, to hand over anyway).
    pub(super) deadline_ms: Option<u64>,
    /// Hand over at the deadline even if the target has not caught up.
    pub(super) force: bool,
    /// When `TimeoutNow` was sent.
    pub(super) sent_at_ms: Option<u64>,
}

/// A write held while its leader hands over.
#[derive(Debug)]
pub(super) struct Held {
    id: RequestId,
    request: Request,
    /// After this the client gets an error instead.
    deadline_ms: u64,
}

impl<E: Engine> SingleLeader<E> {
    /// A FAILOVER request.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn failover(
        &mut self,
        now_ms: u64,
        id: RequestId,
        to: Option<String>,
        force: bool,
        abort: bool,
        timeout_ms: u64,
        outbox: &mut Outbox,
    ) -> Result<()> {
        let reply = match &self.state {
            State::Standalone => Reply::err("FAILOVER requires connected replicas."),
            State::Follower(_) => Reply::err("FAILOVER is not valid when server is a replica."),
            State::Leader(_) if abort => match self.handover.take_if(|h| h.sent_at_ms.is_none()) {
                Some(_) => {
                    tracing::info!("FAILOVER ABORT: the handover is cancelled; writes resume here");
                    Reply::Ok
                }
                None => Reply::err("No failover in progress."),
            },
            State::Leader(_) if self.handover.is_some() => Reply::err("FAILOVER already in progress."),
            State::Leader(leader) => {
                let target = match &to {
                    Some(addr) => self.settings.common.peers.iter().copied().find(|&p| {
                        let hint = self.settings.hint(p);
                        hint == *addr || hint.ends_with(&format!(" at {addr}"))
                    }),
                    None => leader.most_up_to_date(),
                };
                match target {
                    None if to.is_some() => Reply::err("FAILOVER target HOST and PORT is not a replica."),
                    None => Reply::err("FAILOVER requires connected replicas."),
                    Some(target) => {
                        tracing::info!("FAILOVER to {target:?}: holding writes until it has caught up");
                        let deadline_ms = (timeout_ms > 0).then(|| now_ms + timeout_ms);
                        self.handover = Some(Handover { target, deadline_ms, force, sent_at_ms: None });
                        Reply::Ok
                    }
                }
            }
        };
        outbox.after_flush.push(Output::Reply { id, reply });
        Ok(())
    }

    /// True when a write must wait for a handover (and it is held).
    pub(super) fn maybe_hold(&mut self, now_ms: u64, id: RequestId, request: &Request, outbox: &mut Outbox) -> bool {
        if self.handover.is_none() || !request.is_write() {
            return false;
        }
        if self.held.len() >= HELD_WRITES_MAX {
            let reply = Reply::err("too many writes are waiting for a leader handover; try again later");
            outbox.after_flush.push(Output::Reply { id, reply });
            return true;
        }
        if self.forwarded.contains_key(&id) {
            // A follower forwarded it: that follower moves to the new leader's epoch with the
            // handover and fails what it forwarded ("may or may not"), so holding it here and
            // applying it later would apply a write its client was told may have failed.
            // Refused now, it is certainly not applied.
            let reply = Reply::err("a leader handover is under way: the forwarded write was not applied; try again");
            outbox.after_flush.push(Output::Reply { id, reply });
            return true;
        }
        let deadline_ms = now_ms + self.settings.forward_timeout_ms;
        self.held.push_back(Held { id, request: request.clone(), deadline_ms });
        true
    }

    /// After every step: moves a handover on, and lets held writes go once it is over.
    pub(super) fn drive_handover(&mut self, now_ms: u64, outbox: &mut Outbox) -> Result<()> {
        while self.held.front().is_some_and(|h| h.deadline_ms <= now_ms) {
            let h = self.held.pop_front().expect("front exists");
            let reply = Reply::err("the write waited for a leader handover that did not finish; it was not applied");
            outbox.now.push(Output::Reply { id: h.id, reply });
        }
        let last = self.log.last_lsn();
        let durable = self.durable_lsn();
        match (&self.state, &mut self.handover) {
            (State::Leader(leader), Some(h)) if h.sent_at_ms.is_none() => {
                // The target holds every record, and so does this node durably: a write it
                // held for its own fsync would otherwise fail as it steps down.
                let caught_up = leader.matched_of(h.target) >= last && durable >= last;
                let late = h.deadline_ms.is_some_and(|d| now_ms >= d);
                if caught_up || (late && h.force) {
                    tracing::info!("FAILOVER: {:?} holds the log through {last}: asking it to take over", h.target);
                    h.sent_at_ms = Some(now_ms);
                    let message = Message::TimeoutNow { epoch: self.settings.epoch };
                    outbox.now.push(Output::Send { to: h.target, message: message.into() });
                } else if late {
                    tracing::warn!("FAILOVER: {:?} did not catch up in time: abandoned, writes resume here", h.target);
                    self.handover = None;
                }
            }
            (State::Leader(_), Some(h)) => {
                let sent = h.sent_at_ms.unwrap_or(now_ms);
                if now_ms.saturating_sub(sent) >= 2 * self.settings.election_timeout_ms {
                    tracing::warn!("FAILOVER: {:?} did not take over: this node leads on", h.target);
                    self.handover = None;
                }
            }
            (_, Some(_)) => {
                tracing::info!("FAILOVER: handed over; now following epoch {}", self.settings.epoch);
                self.handover = None;
            }
            _ => {}
        }
        if let (State::Leader(leader), Some(h)) = (&mut self.state, &self.handover) {
            if h.sent_at_ms.is_some() {
                // TimeoutNow leaves with this step's outputs: the lease ends before it does.
                leader.revoke_lease();
            }
        }
        self.release_held(now_ms, outbox)
    }

    /// Lets held writes go once no handover holds them: run here if this node still leads,
    /// else as a follower of the new leader (forwarded, or refused naming it). While no
    /// leader is known they wait, up to their deadline.
    fn release_held(&mut self, now_ms: u64, outbox: &mut Outbox) -> Result<()> {
        if self.handover.is_some() || self.held.is_empty() {
            return Ok(());
        }
        if matches!(&self.state, State::Follower(f) if f.leader.is_none()) {
            return Ok(()); // they wait for a leader to be known, up to their deadline
        }
        for h in std::mem::take(&mut self.held) {
            self.request(now_ms, h.id, h.request, outbox)?;
        }
        Ok(())
    }

    /// `master_failover_state`, as Redis names it.
    pub(super) fn failover_state(&self) -> &'static str {
        match &self.handover {
            None => "no-failover",
            Some(h) if h.sent_at_ms.is_none() => "waiting-for-sync",
            Some(_) => "failover-in-progress",
        }
    }
}
