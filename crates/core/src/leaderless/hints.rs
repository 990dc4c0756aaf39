//! Hinted handoff (the lecture's and Dynamo's "sloppy quorum"; issue 14 point 4), with
//! `hinted_handoff = true`.
//!
//! # Who is down
//!
//! A coordinator suspects a replica once a write it sent there waits [`HINT_AFTER_MS`]
//! without the replica's acknowledgement (or once any operation timed out without its
//! answer); it stops suspecting it as soon as any message comes from it. There is no separate
//! failure detector: a write is the probe.
//!
//! # Hints
//!
//! For a write whose replica is suspected (at once when the write starts, or when the write
//! waited [`HINT_AFTER_MS`] for it), the coordinator sends the state to a *stand-in*: the
//! first node after the key's preference list on the ring's walk that it does not suspect
//! ([`super::ring::Ring::stand_ins`]). The stand-in stores it durably as a *hint* naming the
//! intended replica (in its engine, apart from its own keys: namespace [`HINTS_NAMESPACE`],
//! the replica's id then the key), and acknowledges. When there is no stand-in (a cluster of
//! exactly n nodes, where every node is a replica of every key) the coordinator keeps the
//! hint itself, as Cassandra's coordinators do.
//!
//! The write still goes to the suspected replica too: if it is back, its acknowledgement
//! counts as usual.
//!
//! # Sloppy quorum
//!
//! With `sloppy_quorum = true` a stand-in's acknowledgement counts toward w, so a write
//! succeeds while fewer than w of its replicas are up. It then no longer follows that a read
//! of r replicas meets it (w + r > n counts stand-ins that no read asks), as Dynamo's paper
//! says: the write is durable on w nodes, but a read may miss it until the hints are
//! delivered. Without it (the default) hints only speed up convergence; a coordinator's own
//! hint never counts (it is already counted as a replica).
//!
//! # Delivery
//!
//! Every [`HINT_DELIVERY_INTERVAL_MS`] a node holding hints sends up to
//! [`HINTS_PER_DELIVERY`] of them to each node they are for (the delivery is also how it
//! finds the node back). The replica merges the state like any write (by causality: a
//! delivered hint never overwrites a newer state) and answers; the hint is then deleted,
//! unless it changed meanwhile (a newer hint for the same key, delivered next time).
//!
//! # Bounds
//!
//! - At most [`HINTS_PER_TARGET_MAX`] hints per node they are for: past it a stand-in refuses
//!   (does not acknowledge) and counts it; the write still reaches the replica through
//!   anti-entropy when it is back. Status, INFO and metrics show the backlog per node, and a
//!   warning is logged when a backlog reaches half the bound.
//! - A hint older than `tombstone_grace_ms` is dropped, not delivered: a tombstone of its key
//!   may have been purged since, and delivering an older value would bring the key back
//!   ([`super::tombstones`]). Anti-entropy repairs what it held.
//!
//! CAVEATS
//! - Suspicion is per coordinator and learned by waiting: the first writes after a replica
//!   goes down each wait [`HINT_AFTER_MS`] before their hints go out.
//! - A stand-in is chosen by the coordinator's own suspicion; two coordinators may pick
//!   different stand-ins for one replica. Each delivers its own hints.

use super::{Leaderless, Message, Taken};
use crate::causality::Siblings;
use crate::error::Result;
use crate::node::{Outbox, Output};
use crate::storage::{Engine, Record};
use crate::version::{NodeId, Timestamp, Version};
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::BTreeMap;
use std::ops::Bound;

/// The engine namespace hints are stored in (a leaderless node keeps its keys in 0).
pub const HINTS_NAMESPACE: u8 = 1;

/// Hints a node holds for one other node at most.
pub const HINTS_PER_TARGET_MAX: usize = 100_000;

/// How long a write waits for a replica's acknowledgement before hinting for it, in
/// milliseconds (at most half the request timeout).
pub const HINT_AFTER_MS: u64 = 250;

/// Milliseconds between deliveries of a node's hints.
pub const HINT_DELIVERY_INTERVAL_MS: u64 = 1_000;

/// Hints sent to one node per delivery at most.
pub const HINTS_PER_DELIVERY: usize = 256;

/// A node's hints and suspicions.
#[derive(Debug, Default)]
pub(super) struct Hints {
    /// Hints held here: the node they are for -> key -> when the hint was made (ms).
    held: BTreeMap<NodeId, BTreeMap<Bytes, u64>>,
    /// Replicas this node suspects down, since when.
    pub(super) suspected: BTreeMap<NodeId, u64>,
    /// Deliveries on their way: id -> (node, key, the state sent).
    deliveries: BTreeMap<u64, (NodeId, Bytes, Siblings)>,
    /// The next delivery's id.
    next_delivery: u64,
    /// When the next delivery goes out.
    next_delivery_at_ms: u64,
    /// Hints stored here.
    pub(super) stored: u64,
    /// Hints delivered and deleted.
    pub(super) delivered: u64,
    /// Hints dropped: too old, or refused past the bound.
    pub(super) dropped: u64,
}

impl Hints {
    /// The backlog per node, for status.
    pub(super) fn backlog(&self) -> BTreeMap<String, u64> {
        self.held.iter().filter(|(_, h)| !h.is_empty()).map(|(n, h)| (n.to_string(), h.len() as u64)).collect()
    }
}

/// The engine key of the hint of `key` for `owner`.
fn hint_key(owner: NodeId, key: &[u8]) -> Bytes {
    let mut raw = BytesMut::with_capacity(8 + key.len());
    raw.put_u64(owner.0);
    raw.extend_from_slice(key);
    crate::kv::physical(HINTS_NAMESPACE, &raw.freeze())
}

impl<E: Engine> Leaderless<E> {
    /// Reads the hints stored in the engine (at open).
    pub(super) fn load_hints(&mut self) -> Result<()> {
        let prefix = crate::kv::physical(HINTS_NAMESPACE, &Bytes::new());
        let mut from: Bytes = prefix.clone();
        let mut first = true;
        loop {
            let bound = if first { Bound::Included(&from[..]) } else { Bound::Excluded(&from[..]) };
            let chunk = self.store.engine().scan(bound, 4096);
            first = false;
            let Some((last, _)) = chunk.last() else { return Ok(()) };
            let last = last.clone();
            for (physical, meta) in chunk {
                if !physical.starts_with(&prefix) {
                    return Ok(());
                }
                if meta.tombstone || physical.len() < prefix.len() + 8 {
                    continue;
                }
                let raw = physical.slice(prefix.len()..);
                let owner = NodeId(u64::from_be_bytes(raw[..8].try_into().expect("8 bytes")));
                self.hints.held.entry(owner).or_default().insert(raw.slice(8..), meta.version.ts.millis);
            }
            from = last;
        }
    }

    /// Stores a hint of `state` for `owner`'s copy of `key`, merged with any hint already
    /// held; false (and counted) when the backlog for `owner` is full or the state cannot be
    /// stored.
    pub(super) fn store_hint(&mut self, now_ms: u64, owner: NodeId, key: &Bytes, state: &Siblings) -> Result<bool> {
        let grace = self.settings.tombstone_grace_ms;
        let stale = self
            .hints
            .held
            .get(&owner)
            .and_then(|held| held.get(key))
            .is_some_and(|created| now_ms >= created.saturating_add(grace));
        if stale {
            // Past the grace period the held hint would be dropped at its next delivery, and
            // this state with it: it is replaced, not merged.
            self.delete_hint(owner, key)?;
            self.hints.dropped += 1;
        }
        let held = self.hints.held.entry(owner).or_default();
        let created = match held.get(key) {
            Some(created) => *created,
            None if held.len() >= HINTS_PER_TARGET_MAX => {
                self.hints.dropped += 1;
                tracing::warn!(
                    "a hint for {owner} is refused: HINTS_PER_TARGET_MAX = {HINTS_PER_TARGET_MAX} held for it"
                );
                return Ok(false);
            }
            None => now_ms,
        };
        let mut merged = self.hint_state(owner, key)?.unwrap_or_default();
        if let Err(e) = merged.merge(state) {
            tracing::warn!("a hint of key {:?} cannot be merged: {e}", String::from_utf8_lossy(key));
            return Ok(false);
        }
        let value = match merged.to_bytes() {
            Ok(value) => value,
            Err(e) => {
                tracing::warn!("a hint of key {:?} cannot be stored: {e}", String::from_utf8_lossy(key));
                return Ok(false);
            }
        };
        let version = Version { ts: Timestamp { millis: created, logical: 0 }, node: self.settings.common.node };
        let record = Record { version, value: Some(value), expire_at_ms: None };
        self.store.apply(crate::replication::Change { key: hint_key(owner, key), record })?;
        self.stored += 1;
        let held = self.hints.held.entry(owner).or_default();
        held.insert(key.clone(), created);
        self.hints.stored += 1;
        if held.len() == HINTS_PER_TARGET_MAX / 2 {
            tracing::warn!("{} hints are held for {owner}, half of HINTS_PER_TARGET_MAX: is it down?", held.len());
        }
        Ok(true)
    }

    /// The hint held for `owner`'s copy of `key`, if any.
    fn hint_state(&mut self, owner: NodeId, key: &Bytes) -> Result<Option<Siblings>> {
        let physical = hint_key(owner, key);
        match self.store.engine().get(&physical) {
            Ok(Some(Record { value: Some(bytes), .. })) => match Siblings::from_bytes(&bytes) {
                Ok(state) => Ok(Some(state)),
                Err(e) => {
                    tracing::warn!("a hint of key {:?} is unreadable and dropped: {e}", String::from_utf8_lossy(key));
                    Ok(None)
                }
            },
            Ok(_) => Ok(None),
            Err(e @ crate::Error::Damaged { .. }) => {
                tracing::warn!("a hint of key {:?} is damaged on disk and dropped: {e}", String::from_utf8_lossy(key));
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes the hint held for `owner`'s copy of `key`.
    fn delete_hint(&mut self, owner: NodeId, key: &Bytes) -> Result<()> {
        let version = Version { ts: self.clock.tick(0), node: self.settings.common.node };
        let record = Record { version, value: None, expire_at_ms: None };
        self.store.apply(crate::replication::Change { key: hint_key(owner, key), record })?;
        self.stored += 1;
        if let Some(held) = self.hints.held.get_mut(&owner) {
            held.remove(key);
            if held.is_empty() {
                self.hints.held.remove(&owner);
            }
        }
        Ok(())
    }

    /// Sends the hint of a write of `key` (operation `op`) for `owner`, suspected down, to a
    /// stand-in, or keeps it here when there is none.
    pub(super) fn hint(
        &mut self,
        now_ms: u64,
        op: u64,
        owner: NodeId,
        key: &Bytes,
        state: &Siblings,
        outbox: &mut Outbox,
    ) -> Result<()> {
        let me = self.settings.common.node;
        let stand_in = self.ring.stand_ins(key).into_iter().find(|n| *n != me && !self.hints.suspected.contains_key(n));
        match stand_in {
            Some(to) => {
                let message = Message::Hint { op, owner, key: key.clone(), state: state.clone() };
                outbox.after_flush.push(Output::Send { to, message: message.into() });
            }
            None => {
                self.store_hint(now_ms, owner, key, state)?;
            }
        }
        Ok(())
    }

    /// A stand-in's side of `Hint`.
    pub(super) fn take_hint(
        &mut self,
        now_ms: u64,
        from: NodeId,
        (op, owner): (u64, NodeId),
        key: &Bytes,
        state: &Siblings,
        outbox: &mut Outbox,
    ) -> Result<()> {
        if !self.ring.is_replica(key, owner) || !self.ring.is_replica(key, from) {
            tracing::warn!("a hint from {from} for {owner} names a node that is no replica of its key: refused");
            self.hints.dropped += 1;
            return Ok(());
        }
        if state.newest_version().is_some_and(|v| v.ts.millis > now_ms.saturating_add(super::CLOCK_AHEAD_MAX_MS)) {
            self.counters.refused_states += 1;
            return Ok(());
        }
        if self.store_hint(now_ms, owner, key, state)? {
            outbox.after_flush.push(Output::Send { to: from, message: Message::HintAck { op }.into() });
        }
        Ok(())
    }

    /// Delivers hints when a delivery is due.
    pub(super) fn deliver_hints(&mut self, now_ms: u64, outbox: &mut Outbox) -> Result<()> {
        if now_ms < self.hints.next_delivery_at_ms || self.hints.held.is_empty() {
            return Ok(());
        }
        self.hints.next_delivery_at_ms = now_ms + HINT_DELIVERY_INTERVAL_MS;
        // Deliveries not answered by now are sent again below.
        self.hints.deliveries.clear();
        let grace = self.settings.tombstone_grace_ms;
        let batches: Vec<(NodeId, Vec<(Bytes, u64)>)> = self
            .hints
            .held
            .iter()
            .map(|(owner, keys)| (*owner, keys.iter().take(HINTS_PER_DELIVERY).map(|(k, c)| (k.clone(), *c)).collect()))
            .collect();
        for (owner, keys) in batches {
            for (key, created) in keys {
                if now_ms >= created.saturating_add(grace) {
                    tracing::warn!(
                        "a hint of key {:?} for {owner} is older than tombstone_grace_ms and is dropped; anti-entropy repairs the key",
                        String::from_utf8_lossy(&key)
                    );
                    self.hints.dropped += 1;
                    self.delete_hint(owner, &key)?;
                    continue;
                }
                let Some(state) = self.hint_state(owner, &key)? else {
                    self.delete_hint(owner, &key)?;
                    continue;
                };
                self.hints.next_delivery += 1;
                let id = self.hints.next_delivery;
                self.hints.deliveries.insert(id, (owner, key.clone(), state.clone()));
                if owner == self.settings.common.node {
                    // A hint for this very node (kept from before it was restarted under
                    // another name? never made): merge it here.
                    self.take_state(now_ms, &key, &state, Taken::Handoff)?;
                    self.delete_hint(owner, &key)?;
                    continue;
                }
                let message = Message::Handoff { id, key, state };
                outbox.after_flush.push(Output::Send { to: owner, message: message.into() });
            }
        }
        Ok(())
    }

    /// The replica's side of `Handoff`: merge the hint's state like a write.
    pub(super) fn take_handoff(
        &mut self,
        now_ms: u64,
        from: NodeId,
        id: u64,
        key: &Bytes,
        state: &Siblings,
        outbox: &mut Outbox,
    ) -> Result<()> {
        if !self.ring.is_replica(key, self.settings.common.node) {
            tracing::warn!("a hint from {from} is for a key this node does not replicate: refused");
            return Ok(());
        }
        if self.take_state(now_ms, key, state, Taken::Handoff)?.is_some() {
            outbox.after_flush.push(Output::Send { to: from, message: Message::HandoffAck { id }.into() });
        }
        Ok(())
    }

    /// A replica took hint delivery `id`: the hint goes, unless it changed since.
    pub(super) fn handed_off(&mut self, from: NodeId, id: u64) -> Result<()> {
        let Some((owner, key, sent)) = self.hints.deliveries.remove(&id) else { return Ok(()) };
        if owner != from {
            return Ok(());
        }
        if self.hint_state(owner, &key)?.as_ref() == Some(&sent) {
            self.delete_hint(owner, &key)?;
            self.hints.delivered += 1;
        }
        Ok(())
    }
}
