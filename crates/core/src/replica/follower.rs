//! The follower's side of single-leader replication: append the leader's records in order,
//! apply them, acknowledge once durable, install snapshots, and know how far behind it is.
//!
//! A follower's acknowledgement is always an `after_flush` output: it says "durable through
//! N", and the runtime sends it only once this batch's fsync has made that true.

use super::{Outbox, Output, Settings};
use crate::error::Result;
use crate::kv::Store;
use crate::replication::{Change, Lsn, Message, ReplicationLog};
use crate::storage::{Engine, Record};
use crate::version::{NodeId, Version};
use bytes::Bytes;
use serde::Serialize;
use std::collections::VecDeque;
use std::ops::Bound;

/// Leader positions remembered for measuring lag in time, at most.
const MARKS_MAX: usize = 1024;

/// Keys scanned at a time while installing a snapshot chunk.
const INSTALL_SCAN_KEYS: usize = 1024;

/// What a follower knows of its leader, for the status pages.
#[derive(Clone, Debug, Serialize)]
pub struct FollowerView {
    /// The leader.
    pub leader: NodeId,
    /// How a client reaches it.
    pub leader_hint: String,
    /// True when the leader was heard from within the link timeout.
    pub link_up: bool,
    /// Milliseconds since the leader was last heard from; `None` if never.
    pub last_io_ms_ago: Option<u64>,
    /// The newest record applied (and durable, or about to be in this batch).
    pub applied_lsn: Lsn,
    /// The leader's durable log end, as last heard.
    pub leader_lsn: Lsn,
    /// Records the leader had, as last heard, that this follower does not.
    pub lag_records: u64,
    /// True while a snapshot is being installed.
    pub installing_snapshot: bool,
    /// Snapshots installed since start.
    pub snapshots_installed: u64,
}

/// A snapshot being installed.
#[derive(Debug)]
struct Install {
    attempt: u64,
    lsn: Lsn,
    next_seq: u64,
}

/// The follower's state.
#[derive(Debug)]
pub(super) struct Follower {
    last_heard_ms: Option<u64>,
    /// (leader log end, leader clock) from the leader's messages, oldest first.
    marks: VecDeque<(Lsn, u64)>,
    caught_up_at_ms: u64,
    leader_lsn: Lsn,
    installing: Option<Install>,
    snapshots_installed: u64,
    /// The newest snapshot attempt seen: chunks of an older one, still in flight, are ignored.
    newest_attempt: u64,
}

impl Follower {
    pub(super) fn new(_now_ms: u64) -> Follower {
        Follower {
            last_heard_ms: None,
            marks: VecDeque::new(),
            caught_up_at_ms: 0,
            leader_lsn: 0,
            installing: None,
            snapshots_installed: 0,
            newest_attempt: 0,
        }
    }

    /// Retention of the follower's own log, by size.
    pub(super) fn tick(&mut self, _now_ms: u64, log: &mut ReplicationLog) -> Result<()> {
        log.retain(log.last_lsn() + 1)?;
        Ok(())
    }

    /// A message from the leader.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn message<E: Engine>(
        &mut self,
        now_ms: u64,
        leader: NodeId,
        message: Message,
        log: &mut ReplicationLog,
        store: &mut Store<E>,
        settings: &Settings,
        outbox: &mut Outbox,
    ) -> Result<()> {
        if message.epoch() != settings.epoch {
            tracing::warn!("follower ignores a message of epoch {} (its epoch is {})", message.epoch(), settings.epoch);
            return Ok(());
        }
        self.last_heard_ms = Some(now_ms);
        let mut reject = false;
        let mut snapshot = None;
        match message {
            Message::Append { prev_lsn, records, leader_lsn, sent_at_ms, .. } => {
                self.mark(leader_lsn, sent_at_ms);
                if self.installing.is_some() {
                    if prev_lsn > log.last_lsn() {
                        // Sent before the leader switched to a snapshot: the log follows it.
                        return Ok(());
                    }
                    // The leader streams the log from where this follower's log is (it gave
                    // up the snapshot, or restarted): the log replays over the partial
                    // snapshot, which held only the leader's own data.
                    tracing::info!("the leader streams from {prev_lsn}: abandoning the snapshot being installed");
                    self.installing = None;
                }
                if prev_lsn > log.last_lsn() {
                    reject = true;
                } else {
                    let mut records = records;
                    if settings.canary == super::Canary::FollowerOutOfOrder {
                        // Applies the batch's changes newest first, then logs it as usual.
                        for record in records.iter().rev().filter(|r| r.lsn > log.last_lsn()) {
                            for change in &record.changes {
                                store.apply(change.clone())?;
                            }
                        }
                        let last = log.last_lsn();
                        for record in records.drain(..).filter(|r| r.lsn > last) {
                            log.append(record)?;
                        }
                    }
                    for record in records {
                        if record.lsn <= log.last_lsn() {
                            continue; // a duplicate: already here
                        }
                        if record.lsn != log.last_lsn() + 1 {
                            reject = true;
                            break;
                        }
                        for change in &record.changes {
                            store.apply(change.clone())?;
                        }
                        log.append(record)?;
                    }
                }
            }
            Message::Heartbeat { leader_lsn, sent_at_ms, .. } => self.mark(leader_lsn, sent_at_ms),
            Message::SnapshotChunk { attempt, lsn, seq, after, through, entries, done, .. } => {
                if attempt < self.newest_attempt {
                    return Ok(()); // an abandoned attempt's chunk, delivered late
                }
                self.newest_attempt = attempt;
                if seq == 0 {
                    // Until the snapshot is whole, this follower's log must say "I have
                    // nothing", so that a crash mid-install starts it over.
                    log.reset(0, settings.epoch)?;
                    self.installing = Some(Install { attempt, lsn, next_seq: 0 });
                }
                match &mut self.installing {
                    Some(install) if install.attempt != attempt => {
                        // A chunk of an abandoned attempt, still in flight: nothing to do.
                        return Ok(());
                    }
                    Some(install) if install.next_seq == seq && install.lsn == lsn => {
                        install_chunk(store, after.as_ref(), through.as_ref(), entries)?;
                        install.next_seq += 1;
                        snapshot = Some((attempt, seq));
                        if done {
                            // The chunks must be durable before the log says they are there.
                            store.engine_mut().flush(now_ms)?;
                            log.reset(lsn, settings.epoch)?;
                            self.installing = None;
                            self.snapshots_installed += 1;
                            tracing::info!("installed a snapshot at {lsn}; the log follows from {}", lsn + 1);
                        }
                    }
                    _ => reject = true,
                }
            }
            Message::Ack { .. } | Message::Forward { .. } | Message::ForwardReply { .. } => {
                tracing::warn!("follower ignores a message meant for a leader");
                return Ok(());
            }
        }
        let durable_lsn = log.last_lsn();
        while self.marks.front().is_some_and(|(lsn, _)| *lsn <= durable_lsn) {
            let (_, at) = self.marks.pop_front().expect("front exists");
            self.caught_up_at_ms = self.caught_up_at_ms.max(at);
        }
        let message = Message::Ack {
            epoch: settings.epoch,
            durable_lsn,
            reject,
            caught_up_at_ms: self.caught_up_at_ms,
            snapshot,
        };
        outbox.after_flush.push(Output::Send { to: leader, message });
        Ok(())
    }

    /// Notes the leader's log end at its clock `at_ms`.
    fn mark(&mut self, leader_lsn: Lsn, at_ms: u64) {
        self.leader_lsn = self.leader_lsn.max(leader_lsn);
        if self.marks.back().is_some_and(|(lsn, _)| *lsn == leader_lsn) {
            if let Some(back) = self.marks.back_mut() {
                back.1 = back.1.max(at_ms);
            }
        } else {
            self.marks.push_back((leader_lsn, at_ms));
        }
        if self.marks.len() > MARKS_MAX {
            self.marks.pop_front();
        }
    }

    /// What the status pages show.
    pub(super) fn view(&self, now_ms: u64, leader: NodeId, log: &ReplicationLog, settings: &Settings) -> FollowerView {
        let applied = log.last_lsn();
        FollowerView {
            leader,
            leader_hint: match &settings.role {
                super::Role::Follower { leader_hint, .. } => leader_hint.clone(),
                _ => String::new(),
            },
            link_up: self.last_heard_ms.is_some_and(|at| now_ms.saturating_sub(at) < settings.link_timeout_ms),
            last_io_ms_ago: self.last_heard_ms.map(|at| now_ms.saturating_sub(at)),
            applied_lsn: applied,
            leader_lsn: self.leader_lsn,
            lag_records: self.leader_lsn.saturating_sub(applied),
            installing_snapshot: self.installing.is_some(),
            snapshots_installed: self.snapshots_installed,
        }
    }
}

/// Installs one snapshot chunk: the leader's records for the keys in (`after`, `through`]
/// (to the end when `through` is `None`), and a tombstone for every key of this follower's in
/// that range that the leader does not have.
fn install_chunk<E: Engine>(
    store: &mut Store<E>,
    after: Option<&Bytes>,
    through: Option<&Bytes>,
    entries: Vec<Change>,
) -> Result<()> {
    let mut from = after.cloned();
    let mut strays = Vec::new();
    let leader_has = |key: &[u8]| entries.binary_search_by(|c| c.key[..].cmp(key)).is_ok();
    'scan: loop {
        let bound = from.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let keys = store.engine().scan(bound, INSTALL_SCAN_KEYS);
        let exhausted = keys.len() < INSTALL_SCAN_KEYS;
        for (key, meta) in keys {
            if through.is_some_and(|t| key > *t) {
                break 'scan;
            }
            if !meta.tombstone && !leader_has(&key) {
                strays.push(key.clone());
            }
            from = Some(key);
        }
        if exhausted {
            break;
        }
    }
    for key in strays {
        let record = Record { version: Version::default(), value: None, expire_at_ms: None };
        store.apply(Change { key, record })?;
    }
    for change in entries {
        store.apply(change)?;
    }
    Ok(())
}
