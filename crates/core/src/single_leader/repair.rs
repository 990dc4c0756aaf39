//! Repairing damaged records from a healthy replica (`corruption = "repair"`; what a damaged
//! record is and how the store refuses it: `kv::damage`).
//!
//! A replica whose store lists damaged keys is degraded until every one is rewritten:
//!
//! - **A follower** asks its leader, every `resend_ms` while keys stay damaged, with
//!   `RepairRequest`: up to [`REPAIR_KEYS_MAX`] keys, taken in turn from the list (after the
//!   last key asked, wrapping), so that keys no replica can repair do not starve the others.
//!   The leader answers `RepairReply` with its records of those keys (up to
//!   `snapshot_chunk_bytes_max` of them, at least one), read from its engine, and its log end
//!   `lsn` when it read them. The reply leaves with the batch that read them, before the
//!   records up to `lsn` are shipped, so the follower keeps it, and asks nothing more while
//!   it does (for up to [`REPAIR_PENDING_MAX_MS`]), until
//!   1. its log matches the leader's through `lsn` (checked in this epoch, as acknowledgements
//!      are): the records are then what its own log gave it up to `lsn`; it drops the reply
//!      if its leader or epoch changes first, or its match falls (a snapshot starts, a cut:
//!      another history); and
//!   2. then takes the record of each key still listed as damaged: a later record of the key,
//!      which the follower applied since, replaced the damaged one already, and an older one
//!      must not go over it.
//!
//!   The record is put into the store as a replicated change is: the damaged record becomes
//!   dead, and the engine rewrites the segment that held it.
//! - **A leader** has no one to ask: once it has led, degraded, for
//!   [`REPAIR_ASKED_RECENTLY_RESENDS`] resend intervals (time for damaged followers to ask),
//!   it hands leadership to a follower that streams, answers, and has not asked for repairs
//!   itself within as long (a damaged follower would only hand it back), the furthest along
//!   (the FAILOVER handover: writes pause until it holds every record, then it stands), and
//!   repairs as a follower of the new leader. A handover that does not happen within
//!   [`DAMAGED_HANDOVER_TIMEOUT_MS`] is abandoned, and tried again after as long again. A
//!   leader without such a follower (or a standalone node) stays degraded: its damaged keys
//!   are refused until a client writes them.
//! - **A snapshot** for a follower leaves out the keys damaged on the leader and names them;
//!   the follower lists them, so that it refuses them (rather than serve them as missing)
//!   until they are written.
//!
//! CAVEATS
//! - A damaged key is found only when something reads it (see `kv::damage`).
//! - A key damaged on every replica cannot be repaired; it stays refused until written. When
//!   the leader and every follower are damaged (on any keys), the leader keeps leading.
//! - While a damaged leader hands over, its clients' writes pause (up to the handover's
//!   timeout), as in a FAILOVER; the handover shows as a FAILOVER in progress
//!   (`master_failover_state`), and a client's `FAILOVER ABORT` cancels it, until the next
//!   attempt, [`DAMAGED_HANDOVER_TIMEOUT_MS`] later.

use super::handover::Handover;
use super::{Outbox, Output, SingleLeader, State};
use crate::error::{Error, Result};
use crate::replication::{Change, Epoch, Lsn};
use crate::single_leader::Message;
use crate::storage::{Engine, Record};
use crate::version::{NodeId, Version};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::ops::Bound;

/// Keys one `RepairRequest` names at most; the rest wait for the next one.
pub const REPAIR_KEYS_MAX: usize = 256;

/// How long a damaged leader waits for its handover before it abandons it (and how long it
/// waits after before trying again), in milliseconds.
pub const DAMAGED_HANDOVER_TIMEOUT_MS: u64 = 10_000;

/// A follower that asked for repairs within this many resend intervals is damaged itself: a
/// damaged leader does not hand over to it.
pub const REPAIR_ASKED_RECENTLY_RESENDS: u64 = 4;

/// A replica's repair state.
#[derive(Debug, Default)]
pub(super) struct Repair {
    /// When a follower may next ask its leader for its damaged keys.
    ask_ms: u64,
    /// When a damaged leader may next try to hand over.
    handover_ms: u64,
    /// The last key a follower asked for: the next request starts after it.
    cursor: Option<Bytes>,
    /// The newest reply a follower could not take yet (its log behind the reply's `lsn`).
    pending: Option<PendingReply>,
    /// On a leader: when each follower last asked for repairs (bounded by the peers).
    asked: BTreeMap<NodeId, u64>,
    /// Since when the store has listed damaged keys without a break.
    degraded_since: Option<u64>,
}

/// A `RepairReply` waiting for the follower's log to match the leader's through `lsn`.
#[derive(Debug)]
struct PendingReply {
    /// The leader that sent it, in `epoch`.
    leader: NodeId,
    /// The epoch it was sent in.
    epoch: Epoch,
    /// The leader's log end when it read the records.
    lsn: Lsn,
    /// The follower's match with the leader when the reply came: a match that falls below it
    /// since (a snapshot started, a cut) describes another history, and the reply is dropped.
    matched_then: Lsn,
    /// When it came.
    received_ms: u64,
    /// The records.
    entries: Vec<(Bytes, Option<Record>)>,
}

/// How long a follower keeps a reply its log has not reached before it drops it and asks
/// again, in milliseconds.
pub const REPAIR_PENDING_MAX_MS: u64 = 30_000;

impl<E: Engine> SingleLeader<E> {
    /// At each tick: a damaged follower asks its leader for its damaged keys, a damaged
    /// leader hands over (see the module documentation).
    pub(super) fn repair_tick(&mut self, now_ms: u64, outbox: &mut Outbox) {
        if self.store.damaged().is_empty() {
            self.repair.pending = None;
            self.repair.degraded_since = None;
            return;
        }
        let degraded_since = *self.repair.degraded_since.get_or_insert(now_ms);
        // Damaged followers ask every resend interval: a leader waits that long, degraded and
        // leading, before it believes a follower that has not asked is healthy.
        let recently = REPAIR_ASKED_RECENTLY_RESENDS * self.settings.resend_ms;
        match &self.state {
            State::Follower(follower) if now_ms >= self.repair.ask_ms => {
                let Some(leader) = follower.leader else { return };
                // One reply at a time: a newer one would only move the lsn to wait for.
                match &self.repair.pending {
                    Some(p) if now_ms.saturating_sub(p.received_ms) < REPAIR_PENDING_MAX_MS => return,
                    Some(_) => self.repair.pending = None,
                    None => {}
                }
                self.repair.ask_ms = now_ms + self.settings.resend_ms;
                let keys = self.next_keys_to_ask();
                tracing::debug!("asking {leader:?} for the records of {} damaged keys", keys.len());
                let message = Message::RepairRequest { epoch: self.settings.epoch, keys };
                outbox.now.push(Output::Send { to: leader, message: message.into() });
            }
            State::Leader(leader)
                if self.handover.is_none()
                    && now_ms >= self.repair.handover_ms
                    && now_ms >= degraded_since.max(leader.started_ms()) + recently =>
            {
                self.repair.handover_ms = now_ms + DAMAGED_HANDOVER_TIMEOUT_MS;
                let asked = &self.repair.asked;
                let damaged = |node| asked.get(&node).is_some_and(|&at| now_ms.saturating_sub(at) < recently);
                let Some(target) = leader.live_target(now_ms, &self.settings, damaged) else {
                    tracing::debug!("damaged keys, and no healthy follower that streams to hand over to");
                    return;
                };
                self.repair.handover_ms = now_ms + 2 * DAMAGED_HANDOVER_TIMEOUT_MS;
                tracing::warn!(
                    "{} damaged keys: handing leadership to {target:?} to repair them from it",
                    self.store.damaged().count()
                );
                let deadline_ms = Some(now_ms + DAMAGED_HANDOVER_TIMEOUT_MS);
                self.handover = Some(Handover { target, deadline_ms, force: false, sent_at_ms: None });
            }
            _ => {}
        }
    }

    /// Up to [`REPAIR_KEYS_MAX`] listed keys after the cursor, wrapping; moves the cursor.
    fn next_keys_to_ask(&mut self) -> Vec<Bytes> {
        let listed = self.store.damaged();
        let after = self.repair.cursor.as_ref().map_or(Bound::Unbounded, |c| Bound::Excluded(c.clone()));
        let mut keys: Vec<Bytes> = listed.range_from(after).take(REPAIR_KEYS_MAX).cloned().collect();
        if keys.len() < REPAIR_KEYS_MAX {
            let more = listed.range_from(Bound::Unbounded).take(REPAIR_KEYS_MAX - keys.len());
            keys.extend(more.filter(|k| !keys.contains(k)).cloned().collect::<Vec<_>>());
        }
        self.repair.cursor = keys.last().cloned();
        keys
    }

    /// A leader answers a follower's `RepairRequest` with its records of `keys`, up to
    /// `snapshot_chunk_bytes_max` of them (at least one). A key damaged here too is listed
    /// here and left out.
    pub(super) fn repair_request(
        &mut self,
        now_ms: u64,
        from: NodeId,
        keys: Vec<Bytes>,
        outbox: &mut Outbox,
    ) -> Result<()> {
        if self.settings.common.peers.contains(&from) {
            self.repair.asked.insert(from, now_ms);
        }
        let mut entries = Vec::with_capacity(keys.len().min(REPAIR_KEYS_MAX));
        let mut bytes = 0;
        for key in keys.into_iter().take(REPAIR_KEYS_MAX) {
            if bytes >= self.settings.snapshot_chunk_bytes_max {
                break;
            }
            if self.store.damaged().get(&key).is_some() {
                continue;
            }
            match self.store.engine().get(&key) {
                Ok(record) => {
                    bytes += key.len() + record.as_ref().and_then(|r| r.value.as_ref()).map_or(0, Bytes::len) + 32;
                    entries.push((key, record));
                }
                Err(error) => self.store.note_damage(&key, error)?,
            }
        }
        let message = Message::RepairReply { epoch: self.settings.epoch, lsn: self.log.last_lsn(), entries };
        // The records may be newer than what is durable here: they wait for this batch's
        // fsync, as snapshot chunks do.
        outbox.after_flush.push(Output::Send { to: from, message: message.into() });
        Ok(())
    }

    /// A follower keeps its leader's reply until its log matches the leader's through `lsn`
    /// (see the module documentation), and takes it then.
    pub(super) fn repair_reply(
        &mut self,
        now_ms: u64,
        from: NodeId,
        lsn: Lsn,
        entries: Vec<(Bytes, Option<Record>)>,
    ) -> Result<()> {
        let State::Follower(follower) = &self.state else { return Ok(()) };
        if self.repair.pending.is_some() {
            return Ok(()); // the one kept is older: its lsn comes first
        }
        let (epoch, matched_then) = (self.settings.epoch, follower.matched);
        let received_ms = now_ms;
        self.repair.pending = Some(PendingReply { leader: from, epoch, lsn, matched_then, received_ms, entries });
        self.take_pending_repair()
    }

    /// Takes the pending repair reply if the store now holds the leader's history through its
    /// `lsn` (the log matches the leader's there, and the follower has applied it: a follower
    /// applies only what its leader holds durably); drops it if the leader or the epoch changed.
    pub(super) fn take_pending_repair(&mut self) -> Result<()> {
        let Some(pending) = &self.repair.pending else { return Ok(()) };
        let matched = match &self.state {
            State::Follower(f)
                if f.leader == Some(pending.leader)
                    && self.settings.epoch == pending.epoch
                    && f.matched >= pending.matched_then =>
            {
                f.matched.min(f.applied)
            }
            _ => {
                self.repair.pending = None;
                return Ok(());
            }
        };
        if matched < pending.lsn {
            return Ok(());
        }
        let pending = self.repair.pending.take().expect("checked above");
        let mut repaired = 0;
        for (key, record) in pending.entries {
            if self.store.damaged().get(&key).is_none() {
                continue;
            }
            // The leader has no record of a key this follower holds: none is what it had.
            let record = record.unwrap_or(Record { version: Version::default(), value: None, expire_at_ms: None });
            self.store.apply(Change { key, record })?;
            repaired += 1;
        }
        if repaired > 0 {
            let left = self.store.damaged().count();
            tracing::info!("repaired {repaired} damaged keys from the leader's records; {left} left");
        }
        Ok(())
    }

    /// Lists the damaged records a leader met outside a request (snapshot reads).
    pub(super) fn take_damage_found(&mut self) -> Result<()> {
        let State::Leader(leader) = &mut self.state else { return Ok(()) };
        for error in std::mem::take(&mut leader.damage_found) {
            let Error::Damaged { key, .. } = &error else { return Err(error) };
            let key = key.clone();
            self.store.note_damage(&key, error)?;
        }
        Ok(())
    }
}
