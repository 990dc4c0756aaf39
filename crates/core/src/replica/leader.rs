//! The leader's side of single-leader replication: shipping the log to each follower, counting
//! acknowledgements, releasing replies, heartbeats, lag and snapshots.
//!
//! Each follower has a [`Progress`] in one of four modes:
//!
//! - **probe**: the leader does not know where the follower's log ends (at start, or after
//!   the follower was silent for `link_timeout_ms`). It sends only heartbeats; the follower's
//!   acknowledgement tells it, and streaming resumes from there. Nothing piles up in the
//!   link's queue for a follower that is down.
//! - **stream**: the leader ships records after `sent`, durable ones only, in `Append`s of at
//!   most `ship_bytes_max`, with at most `window_bytes_max` shipped and unacknowledged. If no
//!   acknowledgement comes for `resend_ms`, it ships again from `acked` (the transport may lose
//!   messages; the follower skips what it already has).
//! - **diverged**: the follower reported records past the leader's log end (the leader lost
//!   data, or the follower's directory came from elsewhere). It is neither overwritten nor
//!   shipped to; the status shows it and an operator decides.
//! - **snapshot**: the follower needs records the log no longer holds. The leader streams its
//!   keys in key order, a chunk at a time (at most [`SNAPSHOT_CHUNKS_IN_FLIGHT`] unacknowledged),
//!   then streams the log from the snapshot's position. While a snapshot is in flight to a
//!   follower that answers, the log keeps every record after that position, so a follower is
//!   never sent from snapshot to snapshot because retention overtook it; a follower silent for
//!   `link_timeout_ms` goes back to probe and pins nothing. Chunks and their acknowledgements
//!   carry the attempt's number, so a late one from an abandoned attempt changes nothing.

use super::{Outbox, Output, ReplicationStatus, RequestId, Settings};
use crate::error::Result;
use crate::kv::{Reply, Store};
use crate::replication::{Change, Lsn, Message, ReplicationLog};
use crate::storage::Engine;
use crate::version::NodeId;
use bytes::Bytes;
use serde::Serialize;
use std::collections::VecDeque;
use std::ops::Bound;

/// Snapshot chunks shipped to one follower and not yet acknowledged, at most.
pub const SNAPSHOT_CHUNKS_IN_FLIGHT: u64 = 4;

/// Positions remembered for measuring lag in bytes, at most; a follower further behind shows
/// the bytes of the newest ones only (a lower bound).
pub const LAG_OFFSETS_MAX: usize = 1_000_000;

/// How often, at most, the leader warns that its log is over twice its size bound.
pub const SIZE_WARNING_EVERY_MS: u64 = 60_000;

/// Keys read from the engine at a time while building a snapshot chunk.
const SNAPSHOT_SCAN_KEYS: usize = 256;

/// A follower as the status pages show it.
#[derive(Clone, Debug, Serialize)]
pub struct FollowerProgress {
    /// The follower.
    pub node: NodeId,
    /// `probe`, `stream`, `snapshot` or `diverged`.
    pub mode: &'static str,
    /// True when it acknowledged something within the link timeout.
    pub up: bool,
    /// The newest record it has durable.
    pub acked_lsn: Lsn,
    /// Records the leader holds that it does not.
    pub lag_records: u64,
    /// Bytes of those records (estimated from their encoded size).
    pub lag_bytes: u64,
    /// How far behind the leader's clock it is: 0 when it has every record.
    pub lag_ms: u64,
    /// Milliseconds since its last acknowledgement; `None` if it never sent one.
    pub last_ack_ms_ago: Option<u64>,
    /// Snapshots it was sent since the leader started.
    pub snapshots: u64,
}

/// A reply waiting for its write's acknowledgements.
#[derive(Debug)]
struct PendingWrite {
    lsn: Lsn,
    id: RequestId,
    reply: Reply,
    deadline_ms: u64,
}

/// A WAIT waiting for its followers.
#[derive(Debug)]
struct PendingWait {
    id: RequestId,
    lsn: Lsn,
    replicas: u64,
    deadline_ms: Option<u64>,
}

/// A snapshot being sent.
#[derive(Debug)]
struct SnapshotSend {
    /// Which attempt this is for the follower (its `snapshots` count), carried by every chunk
    /// and acknowledgement so that one from an abandoned attempt is not taken for this one.
    attempt: u64,
    /// The log position it starts from.
    lsn: Lsn,
    /// The next chunk's number.
    next_seq: u64,
    /// The last key sent; `None` before the first chunk.
    after: Option<Bytes>,
    /// True once the last chunk is sent.
    done_sent: bool,
    /// The newest chunk acknowledged.
    acked_seq: Option<u64>,
}

#[derive(Debug)]
enum Mode {
    Probe,
    Stream,
    Snapshot(SnapshotSend),
    /// The follower has records past this leader's log end: it is not overwritten, nothing is
    /// shipped to it, and the status says so until an operator decides.
    Diverged,
}

/// What the leader knows of one follower.
#[derive(Debug)]
struct Progress {
    node: NodeId,
    mode: Mode,
    /// The newest record it has durable.
    acked: Lsn,
    /// The newest record shipped to it.
    sent: Lsn,
    /// (last record of an `Append`, its bytes), for the window.
    inflight: VecDeque<(Lsn, usize)>,
    /// When it last acknowledged anything.
    last_ack_ms: Option<u64>,
    /// When `acked` last moved, or shipping last restarted.
    last_progress_ms: u64,
    /// The leader clock it has caught up to (from its acknowledgements).
    caught_up_at_ms: u64,
    /// The position and time of its last refusal.
    last_reject: Option<(Lsn, u64)>,
    /// Since when its acknowledgements report less than `acked` (it lost or reset records, or
    /// they are stale): past `resend_ms`, the leader probes it again.
    low_since: Option<u64>,
    /// Snapshot attempt numbers start here: this leader's start time, shifted, so that a
    /// restarted leader's attempts are newer than its predecessor's.
    attempt_base: u64,
    snapshots: u64,
}

impl Progress {
    fn inflight_bytes(&self) -> usize {
        self.inflight.iter().map(|(_, b)| b).sum()
    }
}

/// The leader's state.
#[derive(Debug)]
pub(super) struct Leader {
    followers: Vec<Progress>,
    pending: VecDeque<PendingWrite>,
    waits: Vec<PendingWait>,
    /// The log is durable through here; nothing after it is shipped.
    durable: Lsn,
    noreplicas: u64,
    last_heartbeat_ms: u64,
    /// (lsn, bytes logged through it), for lag in bytes.
    offsets: VecDeque<(Lsn, u64)>,
    logged_bytes: u64,
    /// When the log's size over its bound was last warned about.
    last_size_warning_ms: Option<u64>,
    /// When this leader started.
    started_ms: u64,
}

impl Leader {
    pub(super) fn new(followers: &[NodeId], now_ms: u64) -> Leader {
        let followers = followers
            .iter()
            .map(|&node| Progress {
                node,
                mode: Mode::Probe,
                acked: 0,
                sent: 0,
                inflight: VecDeque::new(),
                last_ack_ms: None,
                last_progress_ms: now_ms,
                caught_up_at_ms: 0,
                last_reject: None,
                low_since: None,
                attempt_base: now_ms << 16,
                snapshots: 0,
            })
            .collect();
        Leader {
            followers,
            pending: VecDeque::new(),
            waits: Vec::new(),
            durable: 0,
            noreplicas: 0,
            last_heartbeat_ms: 0,
            offsets: VecDeque::new(),
            logged_bytes: 0,
            last_size_warning_ms: None,
            started_ms: now_ms,
        }
    }

    /// At open: the log is durable through `lsn` (the replica fsynced it), so shipping may
    /// start at once; and retention waits until the followers have said where they are.
    pub(super) fn restarted(&mut self, lsn: Lsn) {
        self.durable = lsn;
    }

    /// True when no more replies may wait.
    pub(super) fn is_full(&self) -> bool {
        self.pending.len() + self.waits.len() >= super::PENDING_REPLIES_MAX
    }

    /// Notes that the log grew through `lsn` by `bytes`.
    pub(super) fn logged(&mut self, lsn: Lsn, bytes: u64) {
        self.logged_bytes += bytes;
        self.offsets.push_back((lsn, self.logged_bytes));
        if self.offsets.len() > LAG_OFFSETS_MAX {
            self.offsets.pop_front();
        }
    }

    /// A write was logged at `lsn`: reply now (`async`) or when enough followers have it.
    pub(super) fn written(
        &mut self,
        now_ms: u64,
        id: RequestId,
        lsn: Lsn,
        reply: Reply,
        settings: &Settings,
        outbox: &mut Outbox,
    ) {
        if settings.acks_needed == 0 && settings.canary == super::Canary::AckBeforeFsync {
            outbox.now.push(Output::Reply { id, reply });
        } else if settings.acks_needed == 0 {
            outbox.after_flush.push(Output::Reply { id, reply });
        } else {
            self.pending.push_back(PendingWrite { lsn, id, reply, deadline_ms: now_ms + settings.ack_timeout_ms });
        }
    }

    /// WAIT `replicas` `timeout_ms` for every record through `lsn`.
    pub(super) fn wait(
        &mut self,
        now_ms: u64,
        id: RequestId,
        replicas: u64,
        timeout_ms: u64,
        lsn: Lsn,
        outbox: &mut Outbox,
    ) {
        let have = self.acked_by(lsn) as u64;
        if have >= replicas || self.followers.is_empty() {
            outbox.after_flush.push(Output::Reply { id, reply: Reply::Int(have as i64) });
        } else if self.is_full() {
            let reply = Reply::err("too many WAITs are pending; try again later");
            outbox.after_flush.push(Output::Reply { id, reply });
        } else {
            let deadline_ms = (timeout_ms > 0).then(|| now_ms.saturating_add(timeout_ms));
            self.waits.push(PendingWait { id, lsn, replicas, deadline_ms });
        }
    }

    /// The log is durable through `lsn`: ship it.
    pub(super) fn durable<E: Engine>(
        &mut self,
        now_ms: u64,
        lsn: Lsn,
        log: &mut ReplicationLog,
        store: &Store<E>,
        settings: &Settings,
        outbox: &mut Outbox,
    ) -> Result<()> {
        self.durable = self.durable.max(lsn);
        self.ship_all(now_ms, log, store, settings, outbox)
    }

    /// Heartbeats, resends, timeouts and retention.
    pub(super) fn tick<E: Engine>(
        &mut self,
        now_ms: u64,
        log: &mut ReplicationLog,
        store: &Store<E>,
        settings: &Settings,
        outbox: &mut Outbox,
    ) -> Result<()> {
        if now_ms.saturating_sub(self.last_heartbeat_ms) >= settings.heartbeat_ms {
            self.last_heartbeat_ms = now_ms;
            for p in &self.followers {
                let message =
                    Message::Heartbeat { epoch: settings.epoch, leader_lsn: self.durable, sent_at_ms: now_ms };
                outbox.now.push(Output::Send { to: p.node, message });
            }
        }
        for p in &mut self.followers {
            let stalled = now_ms.saturating_sub(p.last_progress_ms) >= settings.resend_ms;
            let up = is_up(p, now_ms, settings);
            match &p.mode {
                Mode::Stream | Mode::Snapshot(_) if !up && p.last_ack_ms.is_some() => {
                    // Gone quiet: stop shipping into its link's queue and stop keeping the
                    // log for it; its next acknowledgement says where to resume.
                    tracing::info!(
                        "follower {:?} has not answered for {} ms: probing",
                        p.node,
                        settings.link_timeout_ms
                    );
                    p.mode = Mode::Probe;
                    p.sent = p.acked;
                    p.inflight.clear();
                }
                Mode::Stream if p.low_since.is_some_and(|since| now_ms.saturating_sub(since) >= settings.resend_ms) => {
                    tracing::info!(
                        "follower {:?} keeps reporting fewer records than it acknowledged: probing it again",
                        p.node
                    );
                    p.mode = Mode::Probe;
                    p.low_since = None;
                    p.inflight.clear();
                }
                Mode::Stream if stalled && p.sent > p.acked => {
                    tracing::debug!(
                        "no acknowledgement from {:?} for {} ms: shipping again",
                        p.node,
                        settings.resend_ms
                    );
                    p.sent = p.acked;
                    p.inflight.clear();
                    p.last_progress_ms = now_ms;
                }
                Mode::Snapshot(s) if stalled && s.next_seq > 0 && up => {
                    tracing::info!("snapshot to {:?} stalled for {} ms: starting it again", p.node, settings.resend_ms);
                    start_snapshot(p, log.last_lsn(), now_ms);
                }
                _ => {}
            }
        }
        self.expire(now_ms, settings, outbox);
        self.ship_all(now_ms, log, store, settings, outbox)?;
        // Keep what snapshots in flight and live followers still need; drop the rest past the
        // size bound.
        let keep_from = self
            .followers
            .iter()
            .filter_map(|p| match &p.mode {
                Mode::Snapshot(s) => Some(s.lsn + 1),
                Mode::Stream if is_up(p, now_ms, settings) => Some(p.acked + 1),
                _ => None,
            })
            .min()
            .unwrap_or(log.last_lsn() + 1);
        // Just after a start, wait for every follower to say where it is before deleting
        // anything: one that is only a little behind should not be sent a snapshot.
        let waiting = now_ms.saturating_sub(self.started_ms) < settings.link_timeout_ms
            && self.followers.iter().any(|p| p.last_ack_ms.is_none());
        if !waiting {
            log.retain(keep_from)?;
        }
        // The log never grows past its bound in silence: a follower that pins it is named.
        let (bytes, bound) = (log.stats().bytes, log.options().retain_bytes_max);
        if bytes > bound.saturating_mul(2)
            && self.last_size_warning_ms.is_none_or(|at| now_ms.saturating_sub(at) >= SIZE_WARNING_EVERY_MS)
        {
            self.last_size_warning_ms = Some(now_ms);
            let pinning: Vec<String> = self
                .followers
                .iter()
                .filter(|p| match &p.mode {
                    Mode::Snapshot(s) => s.lsn + 1 == keep_from,
                    Mode::Stream => p.acked + 1 == keep_from,
                    Mode::Probe | Mode::Diverged => false,
                })
                .map(|p| format!("{:?}", p.node))
                .collect();
            tracing::warn!(
                "the replication log holds {bytes} bytes, over twice its bound of {bound}: records from {keep_from} on \
                 are kept for {}",
                pinning.join(", ")
            );
        }
        let oldest = self.followers.iter().map(|p| p.acked).min().unwrap_or(self.durable);
        while self.offsets.len() > 1 && self.offsets[1].0 <= oldest {
            self.offsets.pop_front();
        }
        Ok(())
    }

    /// A message from a follower.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn message<E: Engine>(
        &mut self,
        now_ms: u64,
        from: NodeId,
        message: Message,
        log: &mut ReplicationLog,
        store: &Store<E>,
        settings: &Settings,
        outbox: &mut Outbox,
    ) -> Result<()> {
        let Message::Ack { epoch, durable_lsn, reject, caught_up_at_ms, snapshot } = message else {
            tracing::warn!("leader ignores a {} from {from:?}", message_kind(&message));
            return Ok(());
        };
        if epoch != settings.epoch {
            tracing::warn!(
                "leader ignores an acknowledgement of epoch {epoch} from {from:?} (its epoch is {})",
                settings.epoch
            );
            return Ok(());
        }
        let Some(p) = self.followers.iter_mut().find(|p| p.node == from) else {
            tracing::warn!("leader ignores an acknowledgement from {from:?}, which is not a follower");
            return Ok(());
        };
        p.last_ack_ms = Some(now_ms);
        p.caught_up_at_ms = p.caught_up_at_ms.max(caught_up_at_ms);
        let probing = matches!(p.mode, Mode::Probe);
        // A refusal of the position already being shipped again (every Append queued behind a
        // gap is refused in turn) restarts nothing more.
        let repeated = reject
            && p.last_reject
                .is_some_and(|(lsn, at)| lsn == durable_lsn && now_ms.saturating_sub(at) < settings.resend_ms);
        if reject {
            p.last_reject = Some((durable_lsn, now_ms));
        }
        match (&mut p.mode, snapshot) {
            (_, _) if repeated => {}
            (Mode::Snapshot(s), Some((attempt, _))) if attempt != s.attempt => {}
            (Mode::Snapshot(s), Some((_, seq))) if !reject && seq < s.next_seq => {
                s.acked_seq = Some(s.acked_seq.map_or(seq, |a| a.max(seq)));
                p.last_progress_ms = now_ms;
                if s.done_sent && s.acked_seq == Some(s.next_seq - 1) {
                    tracing::info!("{from:?} installed a snapshot at {}; streaming the log after it", s.lsn);
                    p.acked = s.lsn;
                    p.sent = s.lsn;
                    p.inflight.clear();
                    p.mode = Mode::Stream;
                }
            }
            (Mode::Snapshot(_), _) if reject => {
                tracing::info!("{from:?} refused a snapshot chunk: starting the snapshot again");
                start_snapshot(p, log.last_lsn(), now_ms);
            }
            (Mode::Snapshot(_), _) | (Mode::Diverged, _) => {}
            (_, _) if reject || probing => {
                // The follower's word is the truth about its log.
                p.acked = durable_lsn;
                p.sent = durable_lsn;
                p.inflight.clear();
                p.last_progress_ms = now_ms;
                p.mode = Mode::Stream;
                if durable_lsn > log.last_lsn() {
                    tracing::error!(
                        "{from:?} has records through {durable_lsn}, past this leader's log end {}: the leader lost \
                         data, or the follower came from elsewhere. Not overwriting it; nothing is shipped to it until \
                         an operator empties one of the two data directories",
                        log.last_lsn()
                    );
                    p.mode = Mode::Diverged;
                }
            }
            (_, _) if durable_lsn > log.last_lsn() => {
                tracing::error!(
                    "{from:?} acknowledges records through {durable_lsn}, past this leader's log end {}: treating it \
                     as diverged",
                    log.last_lsn()
                );
                p.mode = Mode::Diverged;
            }
            (_, _) => {
                if durable_lsn < p.acked {
                    p.low_since.get_or_insert(now_ms);
                } else {
                    p.low_since = None;
                }
                if durable_lsn > p.acked {
                    p.acked = durable_lsn;
                    p.last_progress_ms = now_ms;
                }
                p.sent = p.sent.max(p.acked);
                while p.inflight.front().is_some_and(|(lsn, _)| *lsn <= p.acked) {
                    p.inflight.pop_front();
                }
            }
        }
        self.release(settings.acks_needed, outbox);
        self.ship_all(now_ms, log, store, settings, outbox)
    }

    /// How many followers have every record through `lsn` durable.
    fn acked_by(&self, lsn: Lsn) -> usize {
        self.followers.iter().filter(|p| matches!(p.mode, Mode::Stream) && p.acked >= lsn).count()
    }

    /// Releases the replies whose acknowledgements are in (`needed` followers per write).
    fn release(&mut self, needed: usize, outbox: &mut Outbox) {
        while let Some(front) = self.pending.front() {
            if self.acked_by(front.lsn) < needed {
                break;
            }
            let done = self.pending.pop_front().expect("front exists");
            outbox.now.push(Output::Reply { id: done.id, reply: done.reply });
        }
        let mut waits = std::mem::take(&mut self.waits);
        waits.retain(|w| {
            let have = self.acked_by(w.lsn) as u64;
            if have >= w.replicas {
                outbox.now.push(Output::Reply { id: w.id, reply: Reply::Int(have as i64) });
                return false;
            }
            true
        });
        self.waits = waits;
    }

    /// Fails the writes, and answers the WAITs, whose time is up.
    fn expire(&mut self, now_ms: u64, settings: &Settings, outbox: &mut Outbox) {
        let mut pending = std::mem::take(&mut self.pending);
        pending.retain(|w| {
            if w.deadline_ms > now_ms {
                return true;
            }
            let have = self.acked_by(w.lsn);
            if settings.canary == super::Canary::SilentAsync {
                outbox.now.push(Output::Reply { id: w.id, reply: Reply::Ok });
                return false;
            }
            self.noreplicas += 1;
            let text = format!(
                "NOREPLICAS Not enough good replicas to write: {have} of the {} followers that acks = \"{}\" needs \
                 acknowledged it within {} ms. The write is applied on the leader and may still reach them.",
                settings.acks_needed, settings.acks_label, settings.ack_timeout_ms
            );
            outbox.now.push(Output::Reply { id: w.id, reply: Reply::Error(text) });
            false
        });
        self.pending = pending;
        let mut waits = std::mem::take(&mut self.waits);
        waits.retain(|w| {
            if w.deadline_ms.is_none_or(|d| d > now_ms) {
                return true;
            }
            let have = self.acked_by(w.lsn) as i64;
            outbox.now.push(Output::Reply { id: w.id, reply: Reply::Int(have) });
            false
        });
        self.waits = waits;
    }

    /// Ships what each follower is owed.
    fn ship_all<E: Engine>(
        &mut self,
        now_ms: u64,
        log: &mut ReplicationLog,
        store: &Store<E>,
        settings: &Settings,
        outbox: &mut Outbox,
    ) -> Result<()> {
        for p in &mut self.followers {
            ship(p, now_ms, self.durable, log, store, settings, outbox)?;
        }
        Ok(())
    }

    /// Fills in the leader's part of the status.
    pub(super) fn fill_status(
        &self,
        now_ms: u64,
        log: &ReplicationLog,
        settings: &Settings,
        status: &mut ReplicationStatus,
    ) {
        status.durable_lsn = self.durable;
        status.pending_writes = self.pending.len();
        status.noreplicas = self.noreplicas;
        let last = log.last_lsn();
        let bytes_at = |lsn: Lsn| -> u64 {
            // The bytes logged through `lsn`: the newest offset at or before it.
            let i = self.offsets.partition_point(|(l, _)| *l <= lsn);
            if i == 0 {
                self.offsets.front().map_or(0, |(_, b)| b.saturating_sub(1))
            } else {
                self.offsets[i - 1].1
            }
        };
        status.followers = self
            .followers
            .iter()
            .map(|p| {
                let lag_records = last.saturating_sub(p.acked);
                FollowerProgress {
                    node: p.node,
                    mode: match p.mode {
                        Mode::Probe => "probe",
                        Mode::Stream => "stream",
                        Mode::Snapshot(_) => "snapshot",
                        Mode::Diverged => "diverged",
                    },
                    up: is_up(p, now_ms, settings),
                    acked_lsn: p.acked,
                    lag_records,
                    lag_bytes: if lag_records == 0 { 0 } else { self.logged_bytes.saturating_sub(bytes_at(p.acked)) },
                    lag_ms: if lag_records == 0 { 0 } else { now_ms.saturating_sub(p.caught_up_at_ms) },
                    last_ack_ms_ago: p.last_ack_ms.map(|at| now_ms.saturating_sub(at)),
                    snapshots: p.snapshots,
                }
            })
            .collect();
    }
}

/// True when `p` acknowledged something within the link timeout.
fn is_up(p: &Progress, now_ms: u64, settings: &Settings) -> bool {
    p.last_ack_ms.is_some_and(|at| now_ms.saturating_sub(at) < settings.link_timeout_ms)
}

/// Puts `p` into snapshot mode from the leader's current log end.
fn start_snapshot(p: &mut Progress, lsn: Lsn, now_ms: u64) {
    p.snapshots += 1;
    let attempt = p.attempt_base + p.snapshots;
    p.mode = Mode::Snapshot(SnapshotSend { attempt, lsn, next_seq: 0, after: None, done_sent: false, acked_seq: None });
    p.inflight.clear();
    p.last_progress_ms = now_ms;
}

/// Ships what `p` is owed: durable records in stream mode, chunks in snapshot mode.
fn ship<E: Engine>(
    p: &mut Progress,
    now_ms: u64,
    durable: Lsn,
    log: &mut ReplicationLog,
    store: &Store<E>,
    settings: &Settings,
    outbox: &mut Outbox,
) -> Result<()> {
    if matches!(p.mode, Mode::Stream) {
        while p.sent < durable && p.inflight_bytes() < settings.window_bytes_max {
            let Some(mut records) = log.read(p.sent, settings.ship_bytes_max)? else {
                tracing::info!(
                    "{:?} needs records from {}, but the log starts at {}: sending a snapshot",
                    p.node,
                    p.sent + 1,
                    log.first_lsn()
                );
                start_snapshot(p, log.last_lsn(), now_ms);
                break;
            };
            records.retain(|r| r.lsn <= durable);
            let Some(last) = records.last().map(|r| r.lsn) else { break };
            let bytes = records.iter().map(|r| r.size_hint()).sum();
            let message = Message::Append {
                epoch: settings.epoch,
                prev_lsn: p.sent,
                records,
                leader_lsn: durable,
                sent_at_ms: now_ms,
            };
            outbox.now.push(Output::Send { to: p.node, message });
            p.inflight.push_back((last, bytes));
            p.sent = last;
        }
    }
    let up = is_up(p, now_ms, settings);
    if let Mode::Snapshot(s) = &mut p.mode {
        // Chunks go only to a follower that answers; one that is down gets them when it is back.
        while up
            && !s.done_sent
            && s.next_seq.saturating_sub(s.acked_seq.map_or(0, |a| a + 1)) < SNAPSHOT_CHUNKS_IN_FLIGHT
        {
            let (mut entries, through, done) =
                snapshot_chunk(store, s.after.as_ref(), settings.snapshot_chunk_bytes_max)?;
            if settings.canary == super::Canary::SnapshotSkipsKey && !entries.is_empty() {
                entries.remove(0);
            }
            let message = Message::SnapshotChunk {
                epoch: settings.epoch,
                attempt: s.attempt,
                lsn: s.lsn,
                seq: s.next_seq,
                after: s.after.clone(),
                through: if done { None } else { through.clone() },
                entries,
                done,
            };
            // Chunks read the engine, which may hold writes not yet durable: they wait for
            // this batch's fsync.
            outbox.after_flush.push(Output::Send { to: p.node, message });
            s.next_seq += 1;
            s.after = through;
            s.done_sent = done;
        }
    }
    Ok(())
}

/// The keys after `after`, with their records, up to about `bytes_max`; the last key taken;
/// and whether the keys ran out.
fn snapshot_chunk<E: Engine>(
    store: &Store<E>,
    after: Option<&Bytes>,
    bytes_max: usize,
) -> Result<(Vec<Change>, Option<Bytes>, bool)> {
    let engine = store.engine();
    let mut entries = Vec::new();
    let mut bytes = 0;
    let mut last = after.cloned();
    loop {
        let from = last.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let keys = engine.scan(from, SNAPSHOT_SCAN_KEYS);
        let exhausted = keys.len() < SNAPSHOT_SCAN_KEYS;
        for (key, _) in keys {
            if bytes >= bytes_max {
                return Ok((entries, last, false));
            }
            if let Some(record) = engine.get(&key)? {
                bytes += key.len() + record.value.as_ref().map_or(0, Bytes::len) + 32;
                last = Some(key.clone());
                entries.push(Change { key, record });
            }
        }
        if exhausted {
            return Ok((entries, last, true));
        }
    }
}

/// A message's name, for logs.
fn message_kind(message: &Message) -> &'static str {
    match message {
        Message::Append { .. } => "Append",
        Message::Heartbeat { .. } => "Heartbeat",
        Message::Ack { .. } => "Ack",
        Message::SnapshotChunk { .. } => "SnapshotChunk",
        Message::Forward { .. } => "Forward",
        Message::ForwardReply { .. } => "ForwardReply",
    }
}
