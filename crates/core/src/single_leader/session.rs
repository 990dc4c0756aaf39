//! Session guarantees (the lecture's answers to replication lag; DESIGN §7): a
//! [`Request::Session`] names the newest position of the leader's history its session has
//! seen (what it wrote, and what it read before), and the replica answers only from a state
//! that holds it, saying which position its answer reflects ([`Reply::InSession`]). The front
//! end keeps that position in the session (its token), so that:
//!
//! - **read-your-writes**: a read after a write waits for the write's record;
//! - **monotonic reads**: a read never reflects an older state than one the session read
//!   before, whichever replica answers;
//! - **consistent prefix**: every state a replica serves is a prefix of the leader's log
//!   (records are applied in order, whole requests at a time), so a session that never reads
//!   an older prefix than it saw never sees an effect before its cause. In one log this is
//!   the monotonic-reads floor; the front end keeps the two apart only in name.
//!
//! A follower that does not hold the position yet waits for it, up to the request's
//! `wait_ms`, then answers `-TRYAGAIN` naming the gap in records and where to read instead
//! (the leader): never a silently older value. A replica whose history differs from the
//! session's at that position (the session saw a record a failover cut) answers at once with
//! an error that says so. A leader holds every record it leads with; one that does not hold
//! the position (a write lost in a failover under `async`) says so as well. With `on_leader`,
//! a follower forwards the request to its leader (reads too, whatever `forward_writes` says).
//!
//! The position travels with the reply wherever the reply goes: a forwarded request's
//! answer comes back already positioned by the leader.
//!
//! The simulator's `SessionNoWait` canary makes a follower answer at once, whatever its
//! position; its session checkers must catch it (`replikv-sim`, `run.rs`).

use super::{Outbox, Output, Reply, Request, RequestId, SingleLeader, State, PENDING_REPLIES_MAX};
use crate::error::Result;
use crate::kv::SessionPosition;
use crate::storage::Engine;

/// A read that waits for its replica to hold the session's position.
#[derive(Debug)]
pub(super) struct SessionWait {
    id: RequestId,
    after: SessionPosition,
    request: Request,
    since_ms: u64,
    deadline_ms: u64,
}

/// How a request in a session is answered, known when it was taken: its position (for a
/// read, the state it saw), whether on the leader, and how long it waited.
#[derive(Clone, Copy, Debug)]
pub(super) struct SessionAnswer {
    at: SessionPosition,
    by_leader: bool,
    waited_ms: u64,
    behind_records: u64,
    behind_ms: u64,
}

impl<E: Engine> SingleLeader<E> {
    /// Takes a [`Request::Session`].
    #[allow(clippy::too_many_arguments)] // the request's four fields, taken apart by the caller
    pub(super) fn session_request(
        &mut self,
        now_ms: u64,
        id: RequestId,
        after: SessionPosition,
        wait_ms: u64,
        on_leader: bool,
        request: Request,
        outbox: &mut Outbox,
    ) -> Result<()> {
        match &self.state {
            State::Follower(_) if on_leader || request.is_write() => {
                // Positioned by the leader, whose answer comes back whole; a write a follower
                // does not forward is refused by the plain path.
                let forwards = on_leader || self.settings.forward_writes;
                let request = match forwards {
                    true => Request::Session { after, wait_ms, on_leader, request: Box::new(request) },
                    false => request,
                };
                self.forward_or_refuse(now_ms, id, request, forwards, outbox)
            }
            State::Follower(_) => {
                if let Some(reply) = self.history_differs(after) {
                    outbox.after_flush.push(Output::Reply { id, reply });
                    return Ok(());
                }
                if self.holds_for_reads(after) || self.settings.canary == super::Canary::SessionNoWait {
                    return self.answer_in_session(now_ms, id, request, 0, outbox);
                }
                if self.session_waits.len() >= PENDING_REPLIES_MAX {
                    let reply = Reply::err("too many session reads are waiting for this replica; try again later");
                    outbox.after_flush.push(Output::Reply { id, reply });
                    return Ok(());
                }
                let deadline_ms = now_ms.saturating_add(wait_ms);
                self.session_waits.push_back(SessionWait { id, after, request, since_ms: now_ms, deadline_ms });
                self.session_due_ms = self.session_due_ms.min(deadline_ms);
                Ok(())
            }
            State::Leader(_) | State::Standalone => {
                if let Some(reply) = self.history_differs(after) {
                    outbox.after_flush.push(Output::Reply { id, reply });
                    return Ok(());
                }
                if after.lsn > self.log.last_lsn() {
                    let reply = Reply::Error(format!(
                        "ERR this session has seen record {} of epoch {}, which this leader's history does not \
                         hold (its log ends at {}): the write was lost in a failover (acks = async keeps no \
                         promise across one), or the session comes from another cluster",
                        after.lsn,
                        after.epoch,
                        self.log.last_lsn()
                    ));
                    outbox.after_flush.push(Output::Reply { id, reply });
                    return Ok(());
                }
                self.answer_in_session(now_ms, id, request, 0, outbox)
            }
        }
    }

    /// Executes `request` through the plain path, its reply positioned when it leaves.
    fn answer_in_session(
        &mut self,
        now_ms: u64,
        id: RequestId,
        request: Request,
        waited_ms: u64,
        outbox: &mut Outbox,
    ) -> Result<()> {
        let by_leader = matches!(self.state, State::Leader(_));
        let seen = self.session_seen();
        let (behind_records, behind_ms) = match &self.state {
            State::Follower(follower) => (
                follower.leader_lsn().saturating_sub(follower.applied),
                follower.caught_up_local_ms.map_or(u64::MAX, |at| now_ms.saturating_sub(at)),
            ),
            _ => (0, 0),
        };
        let answer = SessionAnswer { at: seen, by_leader, waited_ms, behind_records, behind_ms };
        self.session_answers.insert(id, answer);
        self.request(now_ms, id, request, outbox)?;
        // A write's record, if the request wrote one.
        if let Some(answer) = self.session_answers.get_mut(&id) {
            let last = self.log.last_lsn();
            if by_leader && last > seen.lsn {
                answer.at = SessionPosition { lsn: last, epoch: self.log.epoch_at(last).unwrap_or(0) };
            }
        }
        Ok(())
    }

    /// The state this replica's readers see: a leader's log end (it executed every record),
    /// a follower's applied records.
    fn session_seen(&self) -> SessionPosition {
        let lsn = match &self.state {
            State::Follower(follower) => follower.applied,
            _ => self.log.last_lsn(),
        };
        let epoch = self.log.epoch_at(lsn).unwrap_or(if lsn == 0 { 0 } else { self.settings.epoch });
        SessionPosition { lsn, epoch }
    }

    /// True when this follower serves reads from a state that holds `after`.
    fn holds_for_reads(&self, after: SessionPosition) -> bool {
        self.follower_serves_through().is_some_and(|applied| applied >= after.lsn)
    }

    /// An error when this replica's history and the session's differ at `after` (the session
    /// saw a record of another epoch there). Not knowable before the log's base; on a
    /// follower, only within what it applied (a record past it may still be cut and replaced
    /// by the leader's: the read waits for that).
    fn history_differs(&self, after: SessionPosition) -> Option<Reply> {
        let through = match &self.state {
            State::Follower(follower) => follower.applied,
            _ => self.log.last_lsn(),
        };
        if after.lsn == 0 || after.lsn < self.log.first_lsn() || after.lsn > through {
            return None;
        }
        let here = self.log.epoch_at(after.lsn)?;
        (here != after.epoch).then(|| {
            Reply::Error(format!(
                "ERR this session has seen record {} of epoch {}, but this replica's record {} is of epoch {here}: a \
                 failover cut what the session saw (acks = async keeps no promise across one)",
                after.lsn, after.epoch, after.lsn
            ))
        })
    }

    /// Answers the session reads whose position this replica now holds, and refuses those
    /// that waited their time.
    pub(super) fn session_tick(&mut self, now_ms: u64, outbox: &mut Outbox) -> Result<()> {
        if self.session_waits.is_empty() {
            return Ok(());
        }
        // Nothing to do unless what readers see moved, the role changed, or a wait is due.
        let now_seen = (matches!(self.state, State::Follower(_)), self.follower_serves_through());
        if self.session_checked == Some(now_seen) && now_ms < self.session_due_ms {
            return Ok(());
        }
        self.session_checked = Some(now_seen);
        let waits = std::mem::take(&mut self.session_waits);
        for wait in waits {
            let follower = matches!(self.state, State::Follower(_));
            if !follower {
                // It leads now (or stands): its log holds what it led with; the plain checks.
                let request = Request::Session {
                    after: wait.after,
                    wait_ms: wait.deadline_ms.saturating_sub(now_ms),
                    on_leader: false,
                    request: Box::new(wait.request),
                };
                self.request(now_ms, wait.id, request, outbox)?;
                continue;
            }
            if let Some(reply) = self.history_differs(wait.after) {
                outbox.after_flush.push(Output::Reply { id: wait.id, reply });
            } else if self.holds_for_reads(wait.after) {
                let waited = now_ms.saturating_sub(wait.since_ms);
                self.answer_in_session(now_ms, wait.id, wait.request, waited, outbox)?;
            } else if now_ms >= wait.deadline_ms {
                let reply = self.behind_error(&wait, now_ms);
                outbox.after_flush.push(Output::Reply { id: wait.id, reply });
            } else {
                self.session_waits.push_back(wait);
            }
        }
        self.session_due_ms = self.session_waits.iter().map(|w| w.deadline_ms).min().unwrap_or(u64::MAX);
        Ok(())
    }

    /// The answer to a session read that waited its time on a replica still behind it.
    fn behind_error(&self, wait: &SessionWait, now_ms: u64) -> Reply {
        let leader = match &self.state {
            State::Follower(follower) => match follower.leader {
                Some(leader) => format!("read from the leader, {}", self.settings.hint(leader)),
                None => String::from("no leader is known right now; try again shortly"),
            },
            _ => String::from("try again"),
        };
        let waited = now_ms.saturating_sub(wait.since_ms);
        if self.follower_serves_through().is_none() {
            return Reply::Error(format!(
                "TRYAGAIN this replica serves no reads right now (it is installing a snapshot, or holds records no \
                 leader has confirmed yet); it waited {waited} ms (session_wait_ms): {leader}"
            ));
        }
        let applied = self.session_seen().lsn;
        Reply::Error(format!(
            "TRYAGAIN this replica has applied the log through record {applied}, {} records behind record {} that \
             this session has seen; it waited {} ms (session_wait_ms): {leader}",
            wait.after.lsn.saturating_sub(applied),
            wait.after.lsn,
            now_ms.saturating_sub(wait.since_ms)
        ))
    }

    /// Positions the session replies in `outputs` (those of this step).
    pub(super) fn position_session_replies<'a>(&mut self, outputs: impl Iterator<Item = &'a mut Output>) {
        for output in outputs {
            let Output::Reply { id, reply } = output else { continue };
            let Some(answer) = self.session_answers.remove(id) else { continue };
            if matches!(reply, Reply::InSession { .. }) {
                continue; // positioned by the leader that answered it
            }
            let inner = std::mem::replace(reply, Reply::Nil);
            *reply = Reply::InSession {
                at: answer.at,
                by_leader: answer.by_leader,
                waited_ms: answer.waited_ms,
                behind_records: answer.behind_records,
                behind_ms: answer.behind_ms,
                reply: Box::new(inner),
            };
        }
    }
}
