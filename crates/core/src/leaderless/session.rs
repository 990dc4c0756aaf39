//! Session guarantees on a leaderless coordinator (the lecture's read-your-writes and
//! monotonic reads, without a leader; DESIGN §7).
//!
//! A leaderless cluster has no log, so a session cannot name a position of one. What it can
//! name, per key, is a causal context ([`VersionVector`]): the context of the state its write
//! made, and of the states its reads were answered from. A read in session
//! ([`Request::KeySession`]) carries the context the session's guarantee needs for its key,
//! its *floor*; the coordinator answers only from a merge of replies whose context covers the
//! floor, so the answer holds every write the session wrote or saw of the key, or a later
//! write that replaced it (a context covers a dot also when the value was overwritten by a
//! write that had seen it).
//!
//! Without a session, a read answers after `r` replies. With one, when the first `r` replies
//! do not cover the floor, the coordinator waits for the others, then asks every replica again
//! ([`SESSION_REASK_MS`] after the read started, each later round twice as late, up to
//! [`SESSION_REASK_MAX_MS`] apart): the replicas that hold the floor may be down or cut off, or
//! `w + r <= n` let the quorums miss each other, and read repair, a hint's delivery or
//! anti-entropy may bring it to the others meanwhile. Each round merges into what the earlier
//! said, until the floor is covered or the session's `wait_ms` passed: then `-TRYAGAIN` naming
//! the gap, never a stale value. A coordinator holds at most [`SESSION_READS_HELD_MAX`] such
//! reads, and refuses at once a floor stamped further ahead of its clock than any
//! coordinator's could be (a forged token would hold every read for the whole wait).
//!
//! A write in session carries the session's floor too: it replaces what the floor names as
//! well as what the coordinator holds, so the session's later write supersedes its earlier one
//! even on a coordinator that has not heard of it (by causality, whatever the clocks say).
//!
//! A key deleted long enough ago may be purged on every replica (its tombstone dropped once
//! all held it and the grace passed): every replica then answers with nothing, which covers
//! no context. Such a read is the deleted key's true state; the coordinator takes it when
//! every replica answered nothing and the floor's newest write is older than
//! `tombstone_grace_ms` (dots carry their coordinator's clock, [`crate::causality::dot_floor`]).
//!
//! The answer goes back as [`Reply::InKeySession`]: the context it reflects, which replicas
//! answered, which of them were behind (read repair sends them the answer's state), how long
//! the floor held the read and how often the replicas were asked again. A write in session
//! answers with the context of the state it made and the replicas that hold it.
//!
//! The simulator's `SessionFloorIgnored` canary ([`super::Canary`]) makes a coordinator answer
//! after `r` replies whatever their context; the session checkers must catch it
//! (`replikv-sim`, `leaderless/checks/sessions.rs`).
//!
//! Consistent prefix across keys is not offered: a leaderless cluster has no single order of
//! writes whose prefixes a session could be kept to (the lecture: causally related writes
//! would have to go to one partition). The front end refuses it.
//!
//! CAVEATS
//! - A floor is the client's (from its token): the coordinator checks only that it names no
//!   write stamped past [`super::CLOCK_AHEAD_MAX_MS`] ahead of its clock. A session write
//!   joins the floor into the key's context, so a forged token can make that write replace
//!   another node's writes of the key it names (the same as a forged `CONTEXT` token; see the
//!   caveats of [`crate::causality`]). Tokens are not signed.
//! - A session write is stamped above the floor's newest dot time (so `lww` ranks it above
//!   what it replaced): a floor up to the clock bound ahead moves this node's clock as far.

use super::coordinator::ReadOp;
use crate::causality::{Siblings, VersionVector, DOT_FLOOR_LOGICAL_BITS};
use crate::kv::{Reply, Request};
use crate::version::NodeId;

/// How long a coordinator waits before it first asks every replica again for a session's
/// floor, in ms; each later round waits twice as long, up to [`SESSION_REASK_MAX_MS`].
pub const SESSION_REASK_MS: u64 = 50;

/// The longest wait between two rounds of asking again, in ms.
pub const SESSION_REASK_MAX_MS: u64 = 800;

/// Session reads a coordinator holds for their floor at most; one more is refused at once
/// with `-TRYAGAIN` (each held read asks every replica again, round after round).
pub const SESSION_READS_HELD_MAX: usize = 10_000;

/// What a session asks of one request ([`Request::KeySession`], unwrapped).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Ask {
    /// The floor: the context the answer must cover.
    pub(super) seen: VersionVector,
    /// How long to ask again for it.
    pub(super) wait_ms: u64,
    /// Read every replica (r = n).
    pub(super) every_replica: bool,
}

/// `request` without its session wrapper, and what the session asks (`None`: no session).
pub(super) fn peel(request: Request) -> (Option<Ask>, Request) {
    match request {
        Request::KeySession { seen, wait_ms, every_replica, request } => {
            (Some(Ask { seen, wait_ms, every_replica }), *request)
        }
        request => (None, request),
    }
}

/// A session read in flight: its floor, and what earlier rounds of replies said.
#[derive(Debug)]
pub(super) struct Waiting {
    /// The floor.
    pub(super) seen: VersionVector,
    /// When the read started.
    pub(super) started_ms: u64,
    /// When the read gives up on the floor.
    pub(super) until_ms: u64,
    /// When the replicas were last asked.
    pub(super) asked_ms: u64,
    /// How many times they were asked again.
    pub(super) asked_again: u32,
    /// The merge of earlier rounds' replies.
    pub(super) earlier: Siblings,
    /// The floor held the read past its `r`-th reply.
    pub(super) held: bool,
    /// How long until the next round.
    pub(super) interval_ms: u64,
    /// Replicas that answered an earlier round.
    pub(super) answered: std::collections::BTreeSet<NodeId>,
    /// It reads every replica because the session forgot the key's floor.
    pub(super) every_replica: bool,
}

impl Waiting {
    /// A read of `ask` starting at `now_ms`.
    pub(super) fn new(ask: &Ask, now_ms: u64) -> Waiting {
        Waiting {
            seen: ask.seen.clone(),
            started_ms: now_ms,
            until_ms: now_ms.saturating_add(ask.wait_ms),
            asked_ms: now_ms,
            asked_again: 0,
            earlier: Siblings::new(),
            held: false,
            interval_ms: SESSION_REASK_MS,
            answered: std::collections::BTreeSet::new(),
            every_replica: ask.every_replica,
        }
    }

    /// True when the next round is due at `now_ms`.
    pub(super) fn due(&self, now_ms: u64) -> bool {
        now_ms >= self.asked_ms.saturating_add(self.interval_ms)
    }

    /// A new round starts at `now_ms`: `replies` (this round's) join the earlier ones.
    pub(super) fn next_round(&mut self, now_ms: u64, replies: Vec<(NodeId, Option<Siblings>)>) {
        for (node, state) in replies {
            self.answered.insert(node);
            if let Some(state) = state {
                // Past a named limit only: the reply is left out of the floor's merge.
                let _ = self.earlier.merge(&state);
            }
        }
        self.asked_ms = now_ms;
        self.asked_again += 1;
        self.interval_ms = (self.interval_ms * 2).min(SESSION_REASK_MAX_MS);
    }

    /// True when `merged`, the merge of this round's `replies` and the earlier rounds, may
    /// answer the session: it covers the floor, or every one of `n` replicas answered with
    /// nothing for a floor older than the tombstone grace (purged).
    pub(super) fn covered(
        &self,
        merged: &Siblings,
        replies: &[(NodeId, Option<Siblings>)],
        n: usize,
        now_ms: u64,
        grace_ms: u64,
    ) -> bool {
        if merged.context().descends(&self.seen) {
            return true;
        }
        let newest_ms = self.seen.entries().map(|(_, counter)| counter >> DOT_FLOOR_LOGICAL_BITS).max().unwrap_or(0);
        let purged = replies.len() == n && replies.iter().all(|(_, state)| state.is_none()) && self.earlier.is_empty();
        purged && newest_ms.saturating_add(grace_ms) <= now_ms
    }

    /// The error for a read whose floor was not covered in time: names the gap.
    pub(super) fn gap(&self, merged: &Siblings, answered: usize, n: usize, now_ms: u64) -> Reply {
        let missing: Vec<u64> = self
            .seen
            .entries()
            .filter(|(node, counter)| merged.context().get(*node) < *counter)
            .map(|(_, counter)| counter)
            .collect();
        let newest_ms = missing.iter().map(|counter| counter >> DOT_FLOOR_LOGICAL_BITS).max().unwrap_or(0);
        Reply::Error(format!(
            "TRYAGAIN the {answered} of {n} replicas of this key that answered do not hold what this session wrote or read of it after {} ms (asked {} times): writes of {} coordinator(s) missing, the newest made {} ms ago; a replica that holds them may be down or cut off: try again later, or REPLIKV.SESSION RESET to drop what the session saw",
            now_ms.saturating_sub(self.started_ms),
            self.asked_again + 1,
            missing.len(),
            now_ms.saturating_sub(newest_ms)
        ))
    }

    /// The error for a read refused at once: this coordinator holds too many.
    pub(super) fn too_many(&self) -> Reply {
        Reply::Error(format!(
            "TRYAGAIN the replies so far do not hold what this session wrote or read of the key, and this node holds {SESSION_READS_HELD_MAX} session reads already, its limit: try again later"
        ))
    }
}

/// The newest time a floor's dots carry (a dot counter is its write's clock reading, or above
/// it: [`crate::causality::dot_floor`]); `None` for an empty floor.
pub(super) fn floor_time(seen: &VersionVector) -> Option<crate::version::Timestamp> {
    let newest = seen.entries().map(|(_, counter)| counter).max()?;
    let logical = (newest & ((1 << DOT_FLOOR_LOGICAL_BITS) - 1)) as u32;
    Some(crate::version::Timestamp { millis: newest >> DOT_FLOOR_LOGICAL_BITS, logical })
}

/// An error for a floor no coordinator could have handed out yet: a write stamped more than
/// `ahead_ms` past `now_ms` (a forged or corrupted token would hold every read it names for
/// the session's whole wait).
pub(super) fn check_floor(ask: &Ask, now_ms: u64, ahead_ms: u64) -> Option<Reply> {
    let newest_ms = ask.seen.entries().map(|(_, counter)| counter >> DOT_FLOOR_LOGICAL_BITS).max().unwrap_or(0);
    (newest_ms > now_ms.saturating_add(ahead_ms)).then(|| {
        Reply::err(format!(
            "the session's floor names a write made {} ms ahead of this node's clock, past the bound of {ahead_ms} ms: a forged or damaged token? (REPLIKV.SESSION RESET forgets it)",
            newest_ms - now_ms
        ))
    })
}

/// The answer to a session read: `reply` with its receipt (`aged`: the answer is a tombstone
/// past its grace, which replicas that hold nothing need not be sent).
pub(super) fn read_answer(read: &ReadOp, merged: &Siblings, reply: Reply, now_ms: u64, aged: bool) -> Reply {
    let Some(waiting) = &read.session else { return reply };
    let mut replicas = waiting.answered.clone();
    replicas.extend(read.replies.iter().map(|(node, _)| *node));
    let replicas: Vec<NodeId> = replicas.into_iter().collect();
    let repaired: Vec<NodeId> = read
        .replies
        .iter()
        .filter(|(_, state)| !(super::coordinator::holds(state, merged) || (aged && state.is_none())))
        .map(|(n, _)| *n)
        .collect();
    if matches!(reply, Reply::Error(_)) {
        return reply;
    }
    Reply::InKeySession {
        context: merged.context().clone(),
        replicas,
        repaired,
        waited_ms: if waiting.held { now_ms.saturating_sub(waiting.started_ms) } else { 0 },
        asked_again: waiting.asked_again,
        reply: Box::new(reply),
    }
}

/// The answer to a session write: `reply` with the context of the state it made, and who
/// holds it.
pub(super) fn write_answer(state: &Siblings, holders: Vec<NodeId>, reply: Reply) -> Reply {
    if matches!(reply, Reply::Error(_)) {
        return reply;
    }
    Reply::InKeySession {
        context: state.context().clone(),
        replicas: holders,
        repaired: Vec::new(),
        waited_ms: 0,
        asked_again: 0,
        reply: Box::new(reply),
    }
}
