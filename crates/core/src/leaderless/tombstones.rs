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
//! 2. **every replica of the key is known to hold no live value of it**: each node keeps, per
//!    tombstone it holds, the set of replicas it has seen holding the same state. It learns
//!    that a peer does from anti-entropy: a comparison that finds a subtree of the peer's tree
//!    equal to its own covers every tombstone beneath it ([`super::anti_entropy::Side::same`]);
//!    and from the peer that sent it exactly this state. The set is reset whenever the key's
//!    state changes.
//!
//! **Aged tombstones are not compared.** Once its grace period has passed, a tombstone leaves
//! the node's Merkle tree (it stays in the store until purged). So a node that purged and one
//! that has not yet look the same to anti-entropy, and a purged tombstone is never handed
//! back. A subtree that matches then tells that the peer holds, for each aged tombstone
//! beneath, either the same aged tombstone or nothing at all, never a live value: a live
//! value (or a younger tombstone) is always in the tree. That is all a purge needs: a replica
//! that holds nothing of a key cannot bring it back.
//!
//! A replica down through the whole grace period comes back with its old value in its tree;
//! its subtree differs, so nobody learns it is safe, and nobody purges. The first exchange
//! hands it the tombstone (a side sends its state of every key where the two differ, and asks
//! for the other's, even of keys its tree leaves out), which covers its old value (the merge
//! keeps the delete, [`crate::causality::Siblings::merge`]); the tombstone, being aged, leaves
//! its tree too, and only then is it purged everywhere. Nothing is refused and nothing comes
//! back: prevention, not refusal.
//!
//! The grace period still matters for what is on its way rather than on a replica: a write
//! message delayed in the network, and a hint (hinted handoff) older than the grace period
//! is dropped rather than delivered ([`super::hints`]).
//!
//! CAVEATS
//! - This rule is weaker than "every replica holds the tombstone": a matching subtree also
//!   counts a replica that holds nothing of the key (it never got the value nor the delete).
//!   Such a replica cannot bring the value back from its store, but a write of the old value
//!   still on its way to it (a peer link holds what it queues while a node is down) could,
//!   if it arrives after every replica purged. The simulator's purge check, which demands the
//!   tombstone itself, fails on seeds 557 and 963 of 500..1000 (`--anti-entropy-ms 1000`).
//!   The fix (keeping an aged tombstone's entry in the trees as a marker all holders share,
//!   and a purged key's marker for a while after) is issue 14's open end.
//! - Aged tombstones are absent from `REPLIKV.DIGEST` too, so `replikv check` does not see a
//!   replica that holds one next to one that purged it (or never had it) as different.
//! - A tombstone leaves the trees on each node's own clock: for the few ticks between two
//!   nodes' scans (and for as long as their clocks differ) they see one difference, which a
//!   round resolves by sending the tombstone once more, harmlessly.
//! - Knowledge is in memory: a node that restarts learns again who holds its tombstones, so it
//!   purges later, never sooner.
//! - At most [`TOMBSTONES_TRACKED_MAX`] tombstones are tracked; past it a tombstone is kept
//!   and never purged (counted in `tombstones_untracked`, logged).

use super::anti_entropy::RangeId;
use super::tree::{self, DEPTH};
use crate::causality::Siblings;
use crate::version::NodeId;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

/// Tombstones a node tracks for purging at most.
pub const TOMBSTONES_TRACKED_MAX: usize = 1_000_000;

/// Tracked tombstones a tick looks at for purging at most.
pub const PURGE_SCAN_PER_TICK: usize = 4096;

/// The tombstones a node holds and who else is known to hold them.
#[derive(Debug, Default)]
pub(super) struct Tombstones {
    /// By (range, leaf, key), so that an equal subtree finds its tombstones by a range query.
    pending: BTreeMap<(RangeId, u32, Bytes), Pending>,
    /// Each tracked key's place in `pending`.
    places: BTreeMap<Bytes, (RangeId, u32)>,
    /// Where the purge scan resumes.
    cursor: Option<(RangeId, u32, Bytes)>,
    /// Tombstones left untracked past [`TOMBSTONES_TRACKED_MAX`].
    pub(super) untracked: u64,
}

/// One tombstone's facts.
#[derive(Debug)]
struct Pending {
    /// The delete's time: its newest version's wall-clock milliseconds.
    deleted_ms: u64,
    /// Replicas known to hold this state (or, once it aged, nothing live of the key), this
    /// node included.
    holders: BTreeSet<NodeId>,
    /// Aged past the grace period and taken out of the trees.
    unlisted: bool,
}

impl Tombstones {
    /// Tombstones pending purge.
    pub(super) fn len(&self) -> usize {
        self.pending.len()
    }

    /// `key` (in `range`) now has `state` at `me`; `from` sent exactly this state, if a peer did.
    pub(super) fn stored(&mut self, key: &Bytes, range: RangeId, state: &Siblings, me: NodeId, from: Option<NodeId>) {
        self.forget(key);
        let all_deletes = !state.is_empty() && state.live().next().is_none();
        if !all_deletes {
            return;
        }
        if self.pending.len() >= TOMBSTONES_TRACKED_MAX {
            self.untracked += 1;
            if self.untracked.is_power_of_two() {
                tracing::warn!(
                    "{} tombstones are tracked for purging (TOMBSTONES_TRACKED_MAX): {} more are kept and never purged",
                    TOMBSTONES_TRACKED_MAX,
                    self.untracked
                );
            }
            return;
        }
        let leaf = tree::leaf_of(key);
        let mut holders = BTreeSet::from([me]);
        holders.extend(from);
        let deleted_ms = state.newest_version().map_or(0, |v| v.ts.millis);
        self.pending.insert((range, leaf, key.clone()), Pending { deleted_ms, holders, unlisted: false });
        self.places.insert(key.clone(), (range, leaf));
    }

    /// `key` is no longer a tracked tombstone here (overwritten, or purged).
    pub(super) fn forget(&mut self, key: &Bytes) {
        if let Some((range, leaf)) = self.places.remove(key) {
            self.pending.remove(&(range, leaf, key.clone()));
        }
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
    /// stopped: returns the keys whose tombstones just aged past `grace_ms` (to take out of
    /// the trees) and the keys whose tombstones may go now (aged, and every one of
    /// `members(range)` known to hold them or nothing of the key).
    pub(super) fn scan<'a>(
        &mut self,
        now_ms: u64,
        grace_ms: u64,
        members: impl Fn(RangeId) -> Option<&'a [NodeId]>,
    ) -> (Vec<(RangeId, Bytes)>, Vec<Bytes>) {
        let (mut aged, mut due) = (Vec::new(), Vec::new());
        let start = self.cursor.take();
        let mut seen = 0;
        let mut last = None;
        let iter: Box<dyn Iterator<Item = _>> = match &start {
            Some(from) => {
                Box::new(self.pending.range_mut((std::ops::Bound::Excluded(from.clone()), std::ops::Bound::Unbounded)))
            }
            None => Box::new(self.pending.iter_mut()),
        };
        for (place, pending) in iter {
            seen += 1;
            last = Some(place.clone());
            if now_ms >= pending.deleted_ms.saturating_add(grace_ms) {
                if !pending.unlisted {
                    pending.unlisted = true;
                    aged.push((place.0, place.2.clone()));
                }
                if members(place.0).is_some_and(|m| m.iter().all(|n| pending.holders.contains(n))) {
                    due.push(place.2.clone());
                }
            }
            if seen >= PURGE_SCAN_PER_TICK {
                break;
            }
        }
        // Wrap to the start once the scan reaches the end.
        self.cursor = if seen >= PURGE_SCAN_PER_TICK { last } else { None };
        (aged, due)
    }
}
