//! Tombstone collection (issue 14 point 5): a delete leaves a tombstone, a state whose every
//! surviving write is a delete, so that a replica that missed the delete cannot bring the value
//! back. Kept forever, tombstones would fill the store; purged too early, they let a replica
//! that missed the delete resurrect the key (Cassandra's `gc_grace_seconds` problem: a
//! replica down longer than the grace period comes back with the old value, and repair hands
//! it to the others).
//!
//! # The rule: prevent it
//!
//! A node purges its tombstone of a key only when both hold:
//!
//! 1. **`tombstone_grace_ms` has passed** since the delete (the tombstone's newest version).
//! 2. **every replica of the key is known to hold the tombstone**: each node keeps, per
//!    tombstone it holds, the set of replicas it has seen holding the same state. It learns
//!    that a peer does from anti-entropy: a comparison that finds a subtree of the peer's tree
//!    equal to its own covers every tombstone beneath it ([`super::anti_entropy::Side::same`]);
//!    and from the peer that sent it exactly this state. The set is reset whenever the key's
//!    state changes.
//!
//! A tombstone is in the node's Merkle tree like any state, so an equal subtree proves the
//! peer holds the same tombstone (or purged it, below), never nothing and never a live value.
//!
//! **A purged tombstone is remembered**: its tree entry stays, and the node keeps its state in
//! memory, for `tombstone_grace_ms` after the purge. So a node that purged and one that still
//! holds the tombstone look the same to anti-entropy (and to `REPLIKV.DIGEST`), and the purged
//! one keeps refusing the old data: a state that reaches it for a remembered key (a write
//! queued on a peer link, a repair, an exchange) is merged into the remembered tombstone first,
//! so a value the delete covered stays deleted and nothing is stored, and a peer that sent
//! such a state (a write or an exchange) is sent the tombstone back, which covers its old
//! value. Then the node drops the entry from its tree. Nodes purge a few rounds apart and
//! forget as far apart: meanwhile their trees differ in that key, and an exchange sends
//! nothing of it (neither store holds it). A read repair does not hand a tombstone past its
//! grace to a replica that holds nothing of the key: that replica purged and forgot it, and
//! has no old value to cover.
//!
//! A replica down through the whole grace period comes back with its old value in its tree;
//! nobody knew it held the tombstone, so nobody purged. Its subtree differs, and the first
//! exchange hands it the tombstone (a side sends its state of every key where the two differ),
//! which covers its old value (the merge keeps the delete, [`crate::causality::Siblings::merge`]).
//! Only then do the trees match and the tombstone go, everywhere. Nothing is refused and
//! nothing comes back: prevention, not refusal.
//!
//! The grace period still matters for what is on its way rather than on a replica: a write
//! message delayed in the network past the memory, and a hint (hinted handoff) older than the
//! grace period is dropped rather than delivered ([`super::hints`]).
//!
//! CAVEATS
//! - A grace period after the purge nothing is remembered: an old write delayed that long (a
//!   link down for twenty days by default) brings its value back. A node that still holds the
//!   tombstone then (it restarted and had to learn again who holds it) hands it back to the
//!   others, which store it and purge it again: harmless churn.
//! - Knowledge and memory are in memory: a node that restarts learns again who holds its
//!   tombstones, so it purges later, never sooner; and it forgets the tombstones it purged, so
//!   its tree lacks their entries while its peers' keep them, for up to a grace period: until
//!   then `replikv check` reports those keys as different, and exchanges list them every
//!   round though no state moves (no side holds one). Tombstones in the same leaves are still
//!   learned held key by key ([`super::anti_entropy::Side::same_key`]).
//! - At most [`TOMBSTONES_TRACKED_MAX`] tombstones are tracked and remembered together; past
//!   it a tombstone is kept and never purged, even once room frees up (counted in
//!   `tombstones_untracked`, logged).

use super::anti_entropy::RangeId;
use super::tree::{self, DEPTH};
use crate::causality::Siblings;
use crate::version::NodeId;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

/// Tombstones a node tracks for purging, and remembers once purged, at most.
pub const TOMBSTONES_TRACKED_MAX: usize = 1_000_000;

/// Tracked tombstones a tick looks at for purging at most (and remembered ones it forgets).
pub const PURGE_SCAN_PER_TICK: usize = 4096;

/// The tombstones a node holds and who else is known to hold them, and those it purged.
#[derive(Debug, Default)]
pub(super) struct Tombstones {
    /// By (range, leaf, key), so that an equal subtree finds its tombstones by a range query.
    pending: BTreeMap<(RangeId, u32, Bytes), Pending>,
    /// Each tracked key's place in `pending`.
    places: BTreeMap<Bytes, (RangeId, u32)>,
    /// Where the purge scan resumes.
    cursor: Option<(RangeId, u32, Bytes)>,
    /// Purged tombstones still remembered: their range, their state, and when to forget them.
    purged: BTreeMap<Bytes, (RangeId, Siblings, u64)>,
    /// The same by the time to forget them.
    forget_at: BTreeSet<(u64, Bytes)>,
    /// Peers that sent a state a remembered tombstone covers, with the key: each is sent
    /// the tombstone after this step. At most [`SEND_BACKS_MAX`].
    send_backs: BTreeSet<(NodeId, Bytes)>,
    /// Tombstones left untracked past [`TOMBSTONES_TRACKED_MAX`].
    pub(super) untracked: u64,
}

/// Remembered tombstones a node sends back in one step at most (one exchange's keys); a peer
/// past it gets the rest at a later exchange.
pub const SEND_BACKS_MAX: usize = super::anti_entropy::KEYS_PER_EXCHANGE_MAX;

/// The operation a sent-back tombstone names: none a coordinator hands out (their ids start
/// below 2^63), so its acknowledgement counts toward nothing.
pub(super) const SEND_BACK_OP: u64 = u64::MAX;

/// True when `state` is a tombstone (deletes only) whose grace period has passed at `now_ms`.
pub(super) fn aged(state: &Siblings, now_ms: u64, grace_ms: u64) -> bool {
    !state.is_empty() && state.live().next().is_none() && now_ms >= deleted_ms(state).saturating_add(grace_ms)
}

/// One tombstone's facts.
#[derive(Debug)]
struct Pending {
    /// The delete's time: its newest version's wall-clock milliseconds.
    deleted_ms: u64,
    /// Replicas known to hold this state, this node included.
    holders: BTreeSet<NodeId>,
}

/// A tombstone's delete time: its newest version's wall-clock milliseconds.
fn deleted_ms(state: &Siblings) -> u64 {
    state.newest_version().map_or(0, |v| v.ts.millis)
}

impl Tombstones {
    /// Tombstones pending purge.
    pub(super) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Purged tombstones remembered.
    pub(super) fn remembered_len(&self) -> usize {
        self.purged.len()
    }

    /// The state of `key`'s purged tombstone, while remembered.
    pub(super) fn remembered(&self, key: &[u8]) -> Option<&Siblings> {
        self.purged.get(key).map(|(_, state, _)| state)
    }

    /// `key` (in `range`) now has `state` at `me`; `from` sent exactly this state, if a peer did.
    pub(super) fn stored(&mut self, key: &Bytes, range: RangeId, state: &Siblings, me: NodeId, from: Option<NodeId>) {
        self.forget(key);
        self.unremember(key);
        let all_deletes = !state.is_empty() && state.live().next().is_none();
        if !all_deletes {
            return;
        }
        if self.pending.len() + self.purged.len() >= TOMBSTONES_TRACKED_MAX {
            self.untracked += 1;
            if self.untracked.is_power_of_two() {
                tracing::warn!(
                    "{} tombstones are tracked for purging or remembered (TOMBSTONES_TRACKED_MAX): {} more are kept and never purged",
                    TOMBSTONES_TRACKED_MAX,
                    self.untracked
                );
            }
            return;
        }
        let leaf = tree::leaf_of(key);
        let mut holders = BTreeSet::from([me]);
        holders.extend(from);
        self.pending.insert((range, leaf, key.clone()), Pending { deleted_ms: deleted_ms(state), holders });
        self.places.insert(key.clone(), (range, leaf));
    }

    /// `key` is no longer a tracked tombstone here (overwritten, or purged).
    pub(super) fn forget(&mut self, key: &Bytes) {
        if let Some((range, leaf)) = self.places.remove(key) {
            self.pending.remove(&(range, leaf, key.clone()));
        }
    }

    /// `key`'s purged tombstone is no longer remembered (a state replaced it).
    fn unremember(&mut self, key: &Bytes) {
        if let Some((_, _, at)) = self.purged.remove(key) {
            self.forget_at.remove(&(at, key.clone()));
        }
    }

    /// `key`'s tombstone, `state`, in `range`, was purged at `now_ms`: it is remembered for
    /// `grace_ms` more.
    pub(super) fn purged(&mut self, key: &Bytes, range: RangeId, state: Siblings, now_ms: u64, grace_ms: u64) {
        self.forget(key);
        self.unremember(key);
        let at = now_ms.saturating_add(grace_ms);
        self.forget_at.insert((at, key.clone()));
        self.purged.insert(key.clone(), (range, state, at));
    }

    /// Forgets at most [`PURGE_SCAN_PER_TICK`] purged tombstones whose time came: returns
    /// them, to drop from the trees.
    pub(super) fn forget_due(&mut self, now_ms: u64) -> Vec<(RangeId, Bytes)> {
        let mut out = Vec::new();
        while out.len() < PURGE_SCAN_PER_TICK {
            let Some((at, key)) = self.forget_at.first().cloned() else { break };
            if at > now_ms {
                break;
            }
            self.forget_at.pop_first();
            if let Some((range, _, _)) = self.purged.remove(&key) {
                out.push((range, key));
            }
        }
        out
    }

    /// `peer` sent a state of `key` that the tombstone this node remembers covers: it is sent
    /// the tombstone ([`Tombstones::take_send_backs`]).
    pub(super) fn send_back(&mut self, peer: NodeId, key: &Bytes) {
        if self.send_backs.len() < SEND_BACKS_MAX {
            self.send_backs.insert((peer, key.clone()));
        }
    }

    /// The tombstones to send back, with the peers they go to; empties the list.
    pub(super) fn take_send_backs(&mut self) -> Vec<(NodeId, Bytes, Siblings)> {
        let list = std::mem::take(&mut self.send_backs);
        list.into_iter().filter_map(|(peer, key)| self.remembered(&key).cloned().map(|s| (peer, key, s))).collect()
    }

    /// `peer` holds exactly this node's state of `key`.
    pub(super) fn held_by(&mut self, key: &Bytes, peer: NodeId) {
        if let Some((range, leaf)) = self.places.get(key) {
            if let Some(p) = self.pending.get_mut(&(*range, *leaf, key.clone())) {
                p.holders.insert(peer);
            }
        }
    }

    /// `peer`'s subtree `index` of `level` in `range` equals this node's: it holds every
    /// tombstone beneath.
    pub(super) fn held_beneath(&mut self, peer: NodeId, range: RangeId, level: u8, index: u32) {
        let span = tree::width(DEPTH - level);
        let (lo, hi) = (index * span, (index + 1) * span);
        let from = (range, lo, Bytes::new());
        for ((r, leaf, _), pending) in self.pending.range_mut(from..) {
            if *r != range || *leaf >= hi {
                break;
            }
            pending.holders.insert(peer);
        }
    }

    /// Looks at [`PURGE_SCAN_PER_TICK`] tracked tombstones, resuming where the last call
    /// stopped: returns the keys whose tombstones may go now (past `grace_ms`, and every one
    /// of `members(range)` known to hold them), with their ranges.
    pub(super) fn scan<'a>(
        &mut self,
        now_ms: u64,
        grace_ms: u64,
        members: impl Fn(RangeId) -> Option<&'a [NodeId]>,
    ) -> Vec<(RangeId, Bytes)> {
        let mut due = Vec::new();
        let start = self.cursor.take();
        let mut seen = 0;
        let mut last = None;
        let iter: Box<dyn Iterator<Item = _>> = match &start {
            Some(from) => {
                Box::new(self.pending.range((std::ops::Bound::Excluded(from.clone()), std::ops::Bound::Unbounded)))
            }
            None => Box::new(self.pending.iter()),
        };
        for (place, pending) in iter {
            seen += 1;
            last = Some(place.clone());
            if now_ms >= pending.deleted_ms.saturating_add(grace_ms)
                && members(place.0).is_some_and(|m| m.iter().all(|n| pending.holders.contains(n)))
            {
                due.push((place.0, place.2.clone()));
            }
            if seen >= PURGE_SCAN_PER_TICK {
                break;
            }
        }
        // Wrap to the start once the scan reaches the end.
        self.cursor = if seen >= PURGE_SCAN_PER_TICK { last } else { None };
        due
    }
}
