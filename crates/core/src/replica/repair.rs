//! Repairing damaged records from a healthy replica (`corruption = "repair"`; what a damaged
//! record is and how the store refuses it: `kv::damage`).
//!
//! A replica whose store lists damaged keys is degraded until every one is rewritten:
//!
//! - **A follower** asks its leader, every `resend_ms` while keys stay damaged, with
//!   `RepairRequest` (up to [`REPAIR_KEYS_MAX`] keys). The leader answers `RepairReply` with
//!   its records of those keys, read from its engine, and its log end `lsn` when it read
//!   them. The follower takes a record only when
//!   1. its log matches the leader's through `lsn` (checked in this epoch, as acknowledgements
//!      are): the record is then what the follower's own log gave it up to `lsn`, and
//!   2. the key is still listed as damaged: a later record of the key, which the follower has
//!      applied since, replaced the damaged one already, and an older one must not go over it.
//!
//!   A reply that comes too early (the follower still behind `lsn`) is dropped, and the next
//!   request, once the follower caught up, gets a newer one. The record is put into the
//!   store as a replicated change is: the damaged record becomes dead, and the engine
//!   rewrites the segment that held it.
//! - **A leader** has no one to ask: it hands leadership to its most up-to-date follower
//!   first (the FAILOVER handover: writes pause until that follower holds every record, then
//!   it stands), and repairs as a follower of the new leader. A handover that does not happen
//!   within [`DAMAGED_HANDOVER_TIMEOUT_MS`] is abandoned, and tried again after as long
//!   again. A leader without followers (or a standalone node) stays degraded: its damaged
//!   keys are refused until a client writes them.
//!
//! CAVEATS
//! - A damaged key is found only when something reads it (see `kv::damage`).
//! - A key damaged on every replica cannot be repaired; it stays refused until written.
//! - While a damaged leader hands over, its clients' writes pause (up to the handover's
//!   timeout), as in a FAILOVER.

use super::handover::Handover;
use super::{Outbox, Output, Replica, State};
use crate::error::{Error, Result};
use crate::replication::{Change, Lsn, Message};
use crate::storage::{Engine, Record};
use crate::version::{NodeId, Version};
use bytes::Bytes;

/// Keys one `RepairRequest` names at most; the rest wait for the next one.
pub const REPAIR_KEYS_MAX: usize = 256;

/// How long a damaged leader waits for its handover before it abandons it (and how long it
/// waits after before trying again), in milliseconds.
pub const DAMAGED_HANDOVER_TIMEOUT_MS: u64 = 10_000;

impl<E: Engine> Replica<E> {
    /// At each tick: a damaged follower asks its leader for its damaged keys, a damaged
    /// leader hands over (see the module documentation).
    pub(super) fn repair_tick(&mut self, now_ms: u64, outbox: &mut Outbox) {
        if self.store.damaged().is_empty() {
            return;
        }
        match &self.state {
            State::Follower(follower) if now_ms >= self.repair_ask_ms => {
                let Some(leader) = follower.leader else { return };
                self.repair_ask_ms = now_ms + self.settings.resend_ms;
                let keys: Vec<Bytes> =
                    self.store.damaged().iter().take(REPAIR_KEYS_MAX).map(|(k, _)| k.clone()).collect();
                tracing::info!("asking {leader:?} for the records of {} damaged keys", keys.len());
                let message = Message::RepairRequest { epoch: self.settings.epoch, keys };
                outbox.now.push(Output::Send { to: leader, message });
            }
            State::Leader(leader) if self.handover.is_none() && now_ms >= self.repair_handover_ms => {
                let Some(target) = leader.most_up_to_date() else { return };
                self.repair_handover_ms = now_ms + 2 * DAMAGED_HANDOVER_TIMEOUT_MS;
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

    /// A leader answers a follower's `RepairRequest` with its records of `keys`. A key damaged
    /// here too is listed here and left out (this leader then hands over in turn).
    pub(super) fn repair_request(&mut self, from: NodeId, keys: Vec<Bytes>, outbox: &mut Outbox) -> Result<()> {
        let mut entries = Vec::with_capacity(keys.len().min(REPAIR_KEYS_MAX));
        for key in keys.into_iter().take(REPAIR_KEYS_MAX) {
            match self.store.engine().get(&key) {
                Ok(record) => entries.push((key, record)),
                Err(error) => self.store.note_damage(&key, error)?,
            }
        }
        let message = Message::RepairReply { epoch: self.settings.epoch, lsn: self.log.last_lsn(), entries };
        // The records may be newer than what is durable here: they wait for this batch's
        // fsync, as snapshot chunks do.
        outbox.after_flush.push(Output::Send { to: from, message });
        Ok(())
    }

    /// A follower takes its leader's records of its damaged keys, if its log matches the
    /// leader's through `lsn` (see the module documentation).
    pub(super) fn repair_reply(&mut self, lsn: Lsn, entries: Vec<(Bytes, Option<Record>)>) -> Result<()> {
        let State::Follower(follower) = &self.state else { return Ok(()) };
        if follower.matched < lsn {
            tracing::debug!(
                "a repair reply as of lsn {lsn}, past this log's match at {}: asked again later",
                follower.matched
            );
            self.repair_ask_ms = 0;
            return Ok(());
        }
        let mut repaired = 0;
        for (key, record) in entries {
            if self.store.damaged().get(&key).is_none() {
                continue;
            }
            // The leader has no record of a key this follower holds: none is what it had.
            let record = record.unwrap_or(Record { version: Version::default(), value: None, expire_at_ms: None });
            self.store.apply(Change { key, record })?;
            repaired += 1;
        }
        let left = self.store.damaged().count();
        tracing::info!("repaired {repaired} damaged keys from the leader's records; {left} left");
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
