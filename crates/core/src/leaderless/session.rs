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
//! do not cover the floor, the coordinator waits for the others, and every
//! [`SESSION_REASK_MS`] it asks every replica again (the session's write may have reached only
//! a stand-in under a sloppy quorum, or a replica now down, or `w + r <= n` let the quorums
//! miss each other; a hint's delivery or anti-entropy brings it to the others), merging each
//! round into what it had, until the floor is covered or the session's `wait_ms` passed: then
//! `-TRYAGAIN` naming the gap, never a stale value.
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
//! after `r` replies whatever their context; its read-your-writes checker must catch it
//! (`replikv-sim`, `leaderless/checks/sessions.rs`).
//!
//! Consistent prefix across keys is not offered: a leaderless cluster has no single order of
//! writes whose prefixes a session could be kept to (the lecture: causally related writes
//! would have to go to one partition). The front end refuses it.

use super::coordinator::ReadOp;
use crate::causality::{Siblings, VersionVector, DOT_FLOOR_LOGICAL_BITS};
use crate::kv::{Reply, Request};
use crate::version::NodeId;

/// How often a coordinator asks every replica again for a session's floor, in ms.
pub const SESSION_REASK_MS: u64 = 50;

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
        }
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
        let missing: Vec<String> = self
            .seen
            .entries()
            .filter(|(node, counter)| merged.context().get(*node) < *counter)
            .map(|(node, counter)| format!("{node}:{counter} (replicas have {})", merged.context().get(node)))
            .collect();
        Reply::Error(format!(
            "TRYAGAIN the {answered} of {n} replicas of this key that answered do not hold what this session wrote or read of it after {} ms (asked {} times): missing writes {}; it may be on a stand-in until a replica is back, or reach the others by anti-entropy: try again later, or REPLIKV.SESSION RESET to drop what the session saw",
            now_ms.saturating_sub(self.started_ms),
            self.asked_again + 1,
            missing.join(", ")
        ))
    }
}

/// The answer to a session read: `reply` with its receipt.
pub(super) fn read_answer(read: &ReadOp, merged: &Siblings, reply: Reply, now_ms: u64) -> Reply {
    let Some(waiting) = &read.session else { return reply };
    let replicas: Vec<NodeId> = read.replies.iter().map(|(node, _)| *node).collect();
    let repaired: Vec<NodeId> =
        read.replies.iter().filter(|(_, state)| !super::coordinator::holds(state, merged)).map(|(n, _)| *n).collect();
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
