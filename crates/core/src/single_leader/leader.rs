//! The leader's side of single-leader replication: shipping the log to each follower, counting
//! acknowledgements, releasing replies, heartbeats, lag and snapshots.
//!
//! Each follower has a [`Progress`] in one of three modes:
//!
//! - **probe**: the leader does not know where the follower's log ends (at start, or after
//!   the follower was silent for `link_timeout_ms`). It sends only heartbeats; the follower's
//!   acknowledgement tells it where the follower's log ends, and streaming resumes from there
//!   (or from the leader's log end, if the follower's is longer). Nothing piles up in the
//!   link's queue for a follower that is down.
//! - **stream**: the leader ships records after `sent` as soon as they are written out, in
//!   parallel with its own fsync (DESIGN §12), in `Append`s of at
//!   most `ship_bytes_max`, with at most `window_bytes_max` shipped and unacknowledged. The
//!   first `Append` after a probe goes out even with no record in it: its `prev_epoch` is
//!   what checks the follower's log against the leader's (see the follower's essay). `acked`
//!   is what the follower says matches; if no acknowledgement moves it for `resend_ms`, the
//!   leader probes again (the transport may lose messages).
//! - **snapshot**: the follower needs records the log no longer holds. The leader streams its
//!   keys in key order, a chunk at a time (at most [`SNAPSHOT_CHUNKS_IN_FLIGHT`] unacknowledged),
//!   then streams the log from the snapshot's position. While a snapshot is in flight to a
//!   follower that answers, the log keeps every record after that position, so a follower is
//!   never sent from snapshot to snapshot because retention overtook it; a follower silent for
//!   `link_timeout_ms` goes back to probe and pins nothing. Records no majority holds yet
//!   are kept too (within the log's `unreplicated_bytes_max`): if a failover cuts them, this
//!   node must still have them to save to its rollback log. Chunks and their acknowledgements
//!   carry the attempt's number, so a late one from an abandoned attempt changes nothing.
//!
//! # Reads (read index)
//!
//! A read is executed when it arrives, and its reply held until two things are true: a
//! heartbeat round the leader sent after the read arrived was echoed by a majority of the
//! cluster (so it still led when the read was served: no newer leader had been elected by
//! then, since that takes a majority's votes, and a voter that grants one stops echoing this
//! leader), and the log through the leader's end at the read's arrival is held by a majority
//! (so what the read saw cannot be cut later). A leader sends such a round at once when a read
//! arrives and none is in flight, so a read costs one round trip to the nearest majority, not a
//! heartbeat interval (a read that comes while a round is in flight waits for the next one). A
//! lone leader answers at once. A read not confirmed within `ack_timeout_ms` fails with an
//! error; reads count toward [`super::PENDING_REPLIES_MAX`] like writes.
//!
//! # Leases (`read_lease`, off by default)
//!
//! With `read_lease`, a leader answers reads without the round trip while it holds a lease:
//! once a majority (itself included) has echoed a heartbeat round it sent at `t` (its clock),
//! it holds the lease until `t + election_timeout_ms * (1 - d) / (1 + d)`, where `d` is
//! `read_lease_drift_ppm` ([`lease_ms`]). Its periodic heartbeats renew it. A read under the
//! lease still waits for the commit condition (the log through its arrival held by a
//! majority), so it never sees a write a failover could take back; on an idle leader it is
//! answered at once.
//!
//! What it rests on: a voter refuses every vote (a pre-vote, or a vote in any epoch) for the
//! leader's `election_timeout_ms`, by its own clock, after it last heard the leader's
//! heartbeat, whatever happened since: a newer epoch seen, a role change. Each heartbeat of a
//! leasing leader carries that guard (`lease_guard_ms`), and a voter keeps it whatever its own
//! settings, so nodes may differ in `read_lease` and `election_timeout_ms` (a rolling restart
//! that changes them keeps the lease safe). A node with `read_lease` also counts its own start
//! as hearing a leader, for its own election timeout. A majority heard the leader after `t`,
//! and any new leader needs a vote from one of them, so none can be elected before
//! `t + election_timeout_ms` by that voter's clock. The assumptions: every node's clock
//! advances at a rate within `d` of real time (the server's clock is boot time, which neither
//! NTP nor an operator steps and which counts a suspend; see `replikv_server::clock`), and a
//! voter that restarts keeps the guard only if it has `read_lease` itself and its election
//! timeout is at least the leader's (the guard a heartbeat asked for lives in memory). Drift
//! beyond `d`, or such a restart, can let a lease read return a value a newer leader has
//! already overwritten.
//! Message delays do
//! not enter: the lease counts from the round's send time. A planned handover revokes the
//! lease for the rest of the term before `TimeoutNow` leaves, since its votes ignore the
//! guard. The lease costs availability too: after a leader dies, voters that heard it wait out
//! the election timeout, as they already do without the lease, and a restarted voter waits
//! one election timeout before it votes.
//!
//! # Fencing
//!
//! With `auto_failover`, a leader that has not heard from a majority (itself included) for
//! `election_timeout_ms` steps down: the replica fails every write, read and WAIT still
//! waiting, and becomes a follower. The followers that stopped hearing from it wait at least
//! that long before they stand, so an old leader usually stops before a new one is elected;
//! without `read_lease` it is not what safety rests on: a write needs acknowledgements, and a
//! read a heartbeat round, from nodes of its epoch, which a newer epoch's voters no longer
//! give. With `read_lease`, a lease read rests on timing (the clocks and the voters' guard,
//! "Leases" above).

use super::{Outbox, Output, ReplicationStatus, RequestId, Settings};
use crate::error::{Error, Result};
use crate::kv::{Reply, Store};
use crate::quorum::majority_value;
use crate::replication::{Change, Epoch, Lsn, ReplicationLog};
use crate::single_leader::Message;
use crate::storage::Engine;
use crate::version::{NodeId, Version};
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

/// Heartbeat rounds whose send times a leasing leader remembers, at most (a round not
/// confirmed before it is forgotten extends no lease).
pub const LEASE_ROUNDS_MAX: usize = 1024;

/// Keys read from the engine at a time while building a snapshot chunk.
const SNAPSHOT_SCAN_KEYS: usize = 256;

/// A follower as the status pages show it.
#[derive(Clone, Debug, Serialize)]
pub struct FollowerProgress {
    /// The follower.
    pub node: NodeId,
    /// `probe`, `stream` or `snapshot`.
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
    /// The ack timeout it was given, for its `-NOREPLICAS` (the setting may change since).
    timeout_ms: u64,
}

/// A read's reply waiting for the leader to confirm it still leads.
#[derive(Debug)]
struct PendingRead {
    id: RequestId,
    reply: Reply,
    /// The heartbeat round that must be echoed by a majority.
    round: u64,
    /// The log end when it arrived, which a majority must hold.
    lsn: Lsn,
    /// When it fails instead (the leader could not confirm it leads).
    deadline_ms: u64,
    /// The ack timeout it was given, for its error (the setting may change since).
    timeout_ms: u64,
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
    /// The epoch of the record there.
    lsn_epoch: Epoch,
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
}

/// What the leader knows of one follower.
#[derive(Debug)]
struct Progress {
    node: NodeId,
    mode: Mode,
    /// The newest record it has durable and known to match this leader's log.
    acked: Lsn,
    /// The first `Append` after a probe is still to be sent, records or not.
    check: bool,
    /// The newest heartbeat round it echoed.
    round: u64,
    /// Its newest log generation seen (acknowledgements from older ones are ignored).
    generation: u64,
    /// The newest record shipped to it.
    sent: Lsn,
    /// The leader's durable end as last sent to it (in an `Append` or a heartbeat): it applies
    /// no record past it.
    told: Lsn,
    /// (last record of an `Append`, its bytes), for the window.
    inflight: VecDeque<(Lsn, usize)>,
    /// When it last acknowledged anything.
    last_ack_ms: Option<u64>,
    /// When `acked` last moved, or shipping last restarted.
    last_progress_ms: u64,
    /// The leader clock it has caught up to (from its acknowledgements).
    caught_up_at_ms: u64,
    /// The position, the epoch of its last record and the time of its last refusal.
    last_reject: Option<(Lsn, Epoch, u64)>,
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
    reads: VecDeque<PendingRead>,
    /// The newest heartbeat round sent.
    round: u64,
    /// The log is durable through here: no write past it is acknowledged, and followers apply
    /// nothing past it (they may hold it: records are shipped before they are durable here).
    durable: Lsn,
    noreplicas: u64,
    last_heartbeat_ms: u64,
    /// (lsn, bytes logged through it), for lag in bytes.
    offsets: VecDeque<(Lsn, u64)>,
    logged_bytes: u64,
    /// When the log's size over its bound was last warned about.
    last_size_warning_ms: Option<u64>,
    /// Records another family still needs, from here on (see [`super::SingleLeader::hold_log_from`]):
    /// the log keeps them as it keeps a live follower's.
    pub(super) hold_from: Option<Lsn>,
    /// The newest record known held by a majority since this leader's epoch began (a record
    /// of its own epoch included), so in every later leader's history; 0 until then.
    majority_held: Lsn,
    /// When this leader started.
    started_ms: u64,
    /// A follower showed that this node lost records of its own epoch: it must step down.
    pub(super) lost_data: bool,
    /// Damaged records met while reading the engine for a snapshot ([`Error::Damaged`]), for
    /// the replica to list (the snapshot to that follower waits meanwhile).
    pub(super) damage_found: Vec<Error>,
    /// With `read_lease`: (round, when it was sent) for the rounds not yet confirmed.
    rounds_sent: VecDeque<(u64, u64)>,
    /// Reads may be answered without a round until here (its clock), unless `lease_revoked`.
    lease_until_ms: u64,
    /// A handover asked another node to take over: no lease for the rest of this term.
    lease_revoked: bool,
    /// Reads taken under the lease since this node started leading (answered, or failed
    /// if it stepped down before their commit).
    lease_reads: u64,
}

impl Leader {
    pub(super) fn new(followers: &[NodeId], now_ms: u64) -> Leader {
        let followers = followers
            .iter()
            .map(|&node| Progress {
                node,
                mode: Mode::Probe,
                acked: 0,
                check: false,
                round: 0,
                generation: 0,
                sent: 0,
                told: 0,
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
            reads: VecDeque::new(),
            round: 0,
            durable: 0,
            noreplicas: 0,
            last_heartbeat_ms: 0,
            offsets: VecDeque::new(),
            logged_bytes: 0,
            last_size_warning_ms: None,
            hold_from: None,
            majority_held: 0,
            started_ms: now_ms,
            lost_data: false,
            damage_found: Vec::new(),
            rounds_sent: VecDeque::new(),
            lease_until_ms: 0,
            lease_revoked: false,
            lease_reads: 0,
        }
    }

    /// At open: the log is durable through `lsn` (the replica fsynced it), so shipping may
    /// start at once.
    pub(super) fn restarted(&mut self, lsn: Lsn) {
        self.durable = lsn;
    }

    /// True when no more replies may wait.
    pub(super) fn is_full(&self) -> bool {
        self.pending.len() + self.waits.len() + self.reads.len() >= super::PENDING_REPLIES_MAX
    }

    /// A read was executed with `reply` while the log ended at `lsn`: answer once this leader
    /// has confirmed it leads (module documentation, "Reads").
    pub(super) fn read(
        &mut self,
        now_ms: u64,
        id: RequestId,
        reply: Reply,
        lsn: Lsn,
        settings: &Settings,
        outbox: &mut Outbox,
    ) {
        if self.followers.is_empty() || settings.canary == super::Canary::UnconfirmedReads {
            outbox.after_flush.push(Output::Reply { id, reply });
            return;
        }
        if self.lease_holds(now_ms, settings) {
            // Under the lease this node still leads: only the commit condition is left.
            self.lease_reads += 1;
            if settings.canary == super::Canary::LeaseSkipsCommit {
                outbox.after_flush.push(Output::Reply { id, reply });
                return;
            }
            let (deadline_ms, timeout_ms) = (now_ms + settings.ack_timeout_ms, settings.ack_timeout_ms);
            self.reads.push_back(PendingRead { id, reply, round: 0, lsn, deadline_ms, timeout_ms });
            self.release(now_ms, settings, outbox);
            return;
        }
        let round = if self.confirmed_round() >= self.round {
            self.heartbeat(now_ms, settings, outbox); // no round in flight: start one now
            self.round
        } else {
            self.round + 1 // the round in flight left before this read came: the next one
        };
        let (deadline_ms, timeout_ms) = (now_ms + settings.ack_timeout_ms, settings.ack_timeout_ms);
        self.reads.push_back(PendingRead { id, reply, round, lsn, deadline_ms, timeout_ms });
    }

    /// The newest record `node` holds that matches this leader's log (0 unless it streams).
    pub(super) fn matched_of(&self, node: NodeId) -> Lsn {
        self.followers.iter().find(|p| p.node == node && matches!(p.mode, Mode::Stream)).map_or(0, |p| p.acked)
    }

    /// When this leader started leading.
    pub(super) fn started_ms(&self) -> u64 {
        self.started_ms
    }

    /// The follower furthest along among those that stream and answer now, leaving out
    /// `excluded`: a target for a handover this leader starts on its own (a damaged leader),
    /// which must not wait for a follower that is down or installing a snapshot.
    pub(super) fn live_target(
        &self,
        now_ms: u64,
        settings: &Settings,
        excluded: impl Fn(NodeId) -> bool,
    ) -> Option<NodeId> {
        self.followers
            .iter()
            .filter(|p| matches!(p.mode, Mode::Stream) && is_up(p, now_ms, settings) && !excluded(p.node))
            .max_by_key(|p| p.acked)
            .map(|p| p.node)
    }

    /// The follower furthest along that answers, if any.
    pub(super) fn most_up_to_date(&self) -> Option<NodeId> {
        self.followers.iter().filter(|p| p.last_ack_ms.is_some()).max_by_key(|p| p.acked).map(|p| p.node)
    }

    /// True when a read arriving now may be answered under the lease (essay, "Leases").
    fn lease_holds(&self, now_ms: u64, settings: &Settings) -> bool {
        settings.read_lease && !self.lease_revoked && now_ms < self.lease_until_ms
    }

    /// Extends the lease from the newest round a majority has confirmed: it holds until that
    /// round's send time plus [`lease_ms`].
    fn extend_lease(&mut self, settings: &Settings) {
        let confirmed = self.confirmed_round();
        while let Some(&(round, sent_ms)) = self.rounds_sent.front() {
            if round > confirmed {
                break;
            }
            self.rounds_sent.pop_front();
            if round == confirmed && !self.lease_revoked {
                self.lease_until_ms = self.lease_until_ms.max(sent_ms + lease_ms(settings));
            }
        }
    }

    /// A handover sent `TimeoutNow`: the target may be elected at once, with votes that ignore
    /// the guard, so no read is answered under the lease for the rest of this term.
    pub(super) fn revoke_lease(&mut self) {
        self.lease_revoked = true;
        self.lease_until_ms = 0;
    }

    /// Milliseconds the lease still holds at `now_ms` (0: none), and reads answered under it.
    pub(super) fn lease(&self, now_ms: u64, settings: &Settings) -> (u64, u64) {
        let left = if self.lease_holds(now_ms, settings) { self.lease_until_ms - now_ms } else { 0 };
        (left, self.lease_reads)
    }

    /// Sends a heartbeat round to every follower.
    fn heartbeat(&mut self, now_ms: u64, settings: &Settings, outbox: &mut Outbox) {
        self.round += 1;
        self.last_heartbeat_ms = now_ms;
        if settings.read_lease && !self.followers.is_empty() {
            if self.rounds_sent.len() >= LEASE_ROUNDS_MAX {
                self.rounds_sent.pop_front();
            }
            self.rounds_sent.push_back((self.round, now_ms));
        }
        for p in &mut self.followers {
            p.told = p.told.max(self.durable);
            let message = Message::Heartbeat {
                epoch: settings.epoch,
                round: self.round,
                leader_lsn: self.durable,
                sent_at_ms: now_ms,
                lease_guard_ms: if settings.read_lease { settings.election_timeout_ms } else { 0 },
                log_hold: self.hold_from,
                majority_held: self.majority_held,
            };
            outbox.now.push(Output::Send { to: p.node, message: message.into() });
        }
    }

    /// The newest round a majority of the cluster (this leader included) has echoed.
    fn confirmed_round(&self) -> u64 {
        let mut rounds: Vec<u64> = self.followers.iter().map(|p| p.round).collect();
        rounds.push(self.round);
        majority_value(rounds)
    }

    /// The newest record a majority of the cluster (this leader included) holds durably and
    /// in this leader's history.
    pub(super) fn committed(&self) -> Lsn {
        let mut lsns: Vec<Lsn> =
            self.followers.iter().map(|p| if matches!(p.mode, Mode::Stream) { p.acked } else { 0 }).collect();
        lsns.push(self.durable);
        majority_value(lsns)
    }

    /// True when no majority of the cluster (this leader included) was heard from within
    /// `election_timeout_ms`: the leader must step down (module documentation, "Fencing").
    pub(super) fn lost_majority(&self, now_ms: u64, settings: &Settings) -> bool {
        if !settings.auto_failover || self.followers.is_empty() || settings.canary == super::Canary::NoFencing {
            return false;
        }
        let mut heard: Vec<u64> =
            self.followers.iter().map(|p| p.last_ack_ms.unwrap_or(self.started_ms).max(self.started_ms)).collect();
        heard.push(now_ms);
        now_ms.saturating_sub(majority_value(heard)) >= settings.election_timeout_ms
    }

    /// Steps down: every reply still waiting fails, saying why.
    pub(super) fn step_down(&mut self, settings: &Settings, outbox: &mut Outbox) {
        for w in self.pending.drain(..) {
            let reply = Reply::err(format!(
                "this node stopped leading (epoch {}) before the write was acknowledged; it may or may not have \
                 been applied",
                settings.epoch
            ));
            outbox.now.push(Output::Reply { id: w.id, reply });
        }
        for r in self.reads.drain(..) {
            let reply = Reply::err(format!(
                "this node stopped leading (epoch {}) before it could confirm the read; try again on the new leader",
                settings.epoch
            ));
            outbox.now.push(Output::Reply { id: r.id, reply });
        }
        let waits = std::mem::take(&mut self.waits);
        for w in waits {
            let have = self.acked_by(w.lsn) as i64;
            outbox.now.push(Output::Reply { id: w.id, reply: Reply::Int(have) });
        }
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
            let (deadline_ms, timeout_ms) = (now_ms + settings.ack_timeout_ms, settings.ack_timeout_ms);
            self.pending.push_back(PendingWrite { lsn, id, reply, deadline_ms, timeout_ms });
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

    /// The log is durable through `lsn`: release what waited on it, and tell the followers,
    /// which apply records only through it.
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
        self.release(now_ms, settings, outbox);
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
            self.heartbeat(now_ms, settings, outbox);
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
                Mode::Stream if stalled && (p.sent > p.acked || p.check) => {
                    tracing::debug!(
                        "no acknowledgement from {:?} for {} ms: probing where its log ends",
                        p.node,
                        settings.resend_ms
                    );
                    p.mode = Mode::Probe;
                    p.inflight.clear();
                    p.last_progress_ms = now_ms;
                }
                Mode::Snapshot(s) if stalled && s.next_seq > 0 && up => {
                    tracing::info!("snapshot to {:?} stalled for {} ms: starting it again", p.node, settings.resend_ms);
                    start_snapshot(p, log, now_ms);
                }
                _ => {}
            }
        }
        self.expire(now_ms, settings, outbox);
        self.release(now_ms, settings, outbox);
        self.ship_all(now_ms, log, store, settings, outbox)?;
        // Keep what snapshots in flight and live followers still need, and what no majority
        // holds yet (within its own bound); drop the rest past the size bound.
        self.majority_held = self.majority_held_now(log);
        let unreplicated_from = log.unconfirmed_from(self.majority_held);
        let keep_from = self
            .followers
            .iter()
            .filter_map(|p| match &p.mode {
                Mode::Snapshot(s) => Some(s.lsn + 1),
                Mode::Stream if is_up(p, now_ms, settings) => Some(p.acked + 1),
                _ => None,
            })
            .chain(self.hold_from)
            .chain([unreplicated_from])
            .min()
            .unwrap_or(log.last_lsn() + 1);
        // Just after a start, wait for every follower to say where it is before deleting
        // anything: one that is only a little behind should not be sent a snapshot.
        let waiting = now_ms.saturating_sub(self.started_ms) < settings.link_timeout_ms
            && self.followers.iter().any(|p| p.last_ack_ms.is_none());
        if !waiting {
            let before = log.first_lsn();
            log.retain(keep_from)?;
            super::warn_unconfirmed_dropped(log, before, self.majority_held);
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
                    Mode::Probe => false,
                })
                .map(|p| format!("{:?}", p.node))
                .chain((self.hold_from == Some(keep_from)).then(|| "another datacenter".to_string()))
                .chain((unreplicated_from == keep_from).then(|| "a majority to hold them".to_string()))
                .collect();
            let pinning = match pinning.is_empty() {
                true => "its active segment, which is never deleted".to_string(),
                false => pinning.join(", "),
            };
            tracing::warn!(
                "the replication log holds {bytes} bytes, over twice its bound of {bound}: records from {keep_from} on \
                 are kept for {pinning}"
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
        let Message::Ack {
            epoch,
            durable_lsn,
            matched_lsn,
            last_epoch,
            log_base,
            round,
            generation,
            reject,
            caught_up_at_ms,
            snapshot,
        } = message
        else {
            tracing::warn!("leader ignores a {} from {from:?}", message.kind());
            return Ok(());
        };
        assert_eq!(epoch, settings.epoch, "the replica fences other epochs before the leader sees them");
        let Some(p) = self.followers.iter_mut().find(|p| p.node == from) else {
            tracing::warn!("leader ignores an acknowledgement from {from:?}, which is not a follower");
            return Ok(());
        };
        if generation < p.generation {
            tracing::debug!("ignoring an acknowledgement from {from:?} about a log it has since emptied");
            return Ok(());
        }
        if generation > p.generation {
            // The follower emptied its log since: what it acknowledged before means nothing.
            p.generation = generation;
            p.acked = 0;
        }
        p.last_ack_ms = Some(now_ms);
        if round <= self.round {
            // A round this leader never sent is an echo of another incarnation's (a leader
            // restarted with a wiped directory in the same epoch): it confirms nothing.
            p.round = p.round.max(round);
        }
        p.caught_up_at_ms = p.caught_up_at_ms.max(caught_up_at_ms);
        let probing = matches!(p.mode, Mode::Probe);
        // A refusal of the position already being shipped again (every Append queued behind a
        // gap is refused in turn) restarts nothing more. One from a follower whose log changed
        // since (it cut its records: its last epoch differs) is news.
        let repeated = reject
            && p.last_reject.is_some_and(|(lsn, epoch, at)| {
                lsn == durable_lsn && epoch == last_epoch && now_ms.saturating_sub(at) < settings.resend_ms
            });
        if reject {
            p.last_reject = Some((durable_lsn, last_epoch, now_ms));
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
                start_snapshot(p, log, now_ms);
            }
            (Mode::Snapshot(_), _) => {}
            (_, _) if (reject || probing) && last_epoch == settings.epoch && durable_lsn > log.last_lsn() => {
                // Every record of this epoch came from this leader, yet the follower holds more
                // of them: this node lost data (a wiped or restored directory). It must not
                // overwrite the follower, nor go on leading.
                tracing::error!(
                    "{from:?} holds records of epoch {} through {durable_lsn}, past this leader's log end {}: this \
                     node lost data; stepping down",
                    settings.epoch,
                    log.last_lsn()
                );
                self.lost_data = true;
            }
            (_, _) if reject || probing => {
                // The follower's word is the truth about where its log ends; the next Append
                // checks whether it matches this leader's (its log may also be longer). Its
                // records are of its last epoch or older, so it shares nothing of this log past
                // this log's last record of such an epoch: starting further on would be refused
                // again, and a long divergent suffix would send the two back and forth for ever.
                // Nor before its base, where it has nothing to compare: a check there would be
                // refused for ever too (a base past that record is not in this history, and the
                // check at it tells the follower to start again from nothing).
                let shared = last_at_or_before_epoch(log, last_epoch).max(log_base);
                p.sent = durable_lsn.min(log.last_lsn()).min(shared);
                // What it matched stays matched while its log generation is the same (a log
                // that lost or cut records has a new one, which reset `acked` above): a
                // follower asking for a check must not count as holding nothing meanwhile.
                p.acked = p.acked.max(matched_lsn).min(p.sent);
                p.check = true;
                p.low_since = None;
                p.inflight.clear();
                p.last_progress_ms = now_ms;
                p.mode = Mode::Stream;
            }
            (_, _) => {
                if matched_lsn < p.acked {
                    p.low_since.get_or_insert(now_ms);
                } else {
                    p.low_since = None;
                }
                if matched_lsn > p.acked {
                    p.acked = matched_lsn.min(log.last_lsn());
                    p.last_progress_ms = now_ms;
                }
                p.sent = p.sent.max(p.acked);
                while p.inflight.front().is_some_and(|(lsn, _)| *lsn <= p.acked) {
                    p.inflight.pop_front();
                }
            }
        }
        self.release(now_ms, settings, outbox);
        self.ship_all(now_ms, log, store, settings, outbox)
    }

    /// The newest record known held by a majority since this leader's epoch began, with what
    /// its followers acknowledged so far (see `majority_held`).
    fn majority_held_now(&self, log: &ReplicationLog) -> Lsn {
        let committed = self.committed();
        match log.epoch_run_start(log.last_lsn()).is_some_and(|start| committed >= start) {
            true => self.majority_held.max(committed),
            false => self.majority_held,
        }
    }

    /// Where retention may drop records before, by the pins a tick cannot move back: what no
    /// majority holds, and what another family holds. A tick's own (snapshots, live
    /// followers) only pin more: [`ReplicationLog::would_retain_drop`] of this tells whether
    /// the tick may drop records.
    pub(super) fn retain_bound(&self, log: &ReplicationLog) -> Lsn {
        log.unconfirmed_from(self.majority_held_now(log)).min(self.hold_from.unwrap_or(Lsn::MAX))
    }

    /// True while a snapshot is in flight to a follower.
    pub(super) fn snapshotting(&self) -> bool {
        self.followers.iter().any(|p| matches!(p.mode, Mode::Snapshot(_)))
    }

    /// How many followers have every record through `lsn` durable.
    fn acked_by(&self, lsn: Lsn) -> usize {
        self.followers.iter().filter(|p| matches!(p.mode, Mode::Stream) && p.acked >= lsn).count()
    }

    /// Releases the replies whose acknowledgements are in (`acks_needed` followers per write)
    /// and the reads whose leadership is confirmed.
    fn release(&mut self, now_ms: u64, settings: &Settings, outbox: &mut Outbox) {
        let needed = settings.acks_needed;
        if settings.read_lease {
            self.extend_lease(settings);
        }
        // Under the lease every read waiting now is confirmed: this node leads at this moment,
        // so it led when each of them arrived.
        let confirmed = if self.lease_holds(now_ms, settings) { u64::MAX } else { self.confirmed_round() };
        let committed = self.committed();
        while self.reads.front().is_some_and(|r| r.round <= confirmed && r.lsn <= committed) {
            let done = self.reads.pop_front().expect("front exists");
            outbox.now.push(Output::Reply { id: done.id, reply: done.reply });
        }
        if self.reads.back().is_some_and(|r| r.round > self.round) && confirmed >= self.round {
            // Reads arrived after the last round was sent and it is confirmed: start theirs.
            self.heartbeat(now_ms, settings, outbox);
        }
        while let Some(front) = self.pending.front() {
            // The mode's followers and the leader's own copy: a write is acknowledged only
            // once it is durable here too (records are shipped before it is).
            if self.acked_by(front.lsn) < needed || front.lsn > self.durable {
                break;
            }
            let done = self.pending.pop_front().expect("front exists");
            outbox.now.push(Output::Reply { id: done.id, reply: done.reply });
        }
        let mut waits = std::mem::take(&mut self.waits);
        waits.retain(|w| {
            let have = self.acked_by(w.lsn) as u64;
            if have >= w.replicas && w.lsn <= self.durable {
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
            let text = if have >= settings.acks_needed {
                format!(
                    "NOREPLICAS Not enough good replicas to write: the leader's own copy was not durable within {} ms \
                     (its fsync is slow), though {have} of the {} followers that acks = \"{}\" needs acknowledged \
                     it. The write is applied on the leader and may still become durable.",
                    w.timeout_ms, settings.acks_needed, settings.acks_label
                )
            } else {
                format!(
                    "NOREPLICAS Not enough good replicas to write: {have} of the {} followers that acks = \"{}\" \
                     needs acknowledged it within {} ms. The write is applied on the leader and may still reach them.",
                    settings.acks_needed, settings.acks_label, w.timeout_ms
                )
            };
            outbox.now.push(Output::Reply { id: w.id, reply: Reply::Error(text) });
            false
        });
        self.pending = pending;
        // Every read, not only the front: a later read has an earlier deadline once the ack
        // timeout is lowered (CONFIG SET).
        self.reads.retain(|r| {
            if r.deadline_ms > now_ms {
                return true;
            }
            let reply = Reply::err(format!(
                "this leader could not confirm within {} ms that it still leads (no majority answered); try again",
                r.timeout_ms
            ));
            outbox.now.push(Output::Reply { id: r.id, reply });
            false
        });
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

    /// Ships what each follower is owed: also what a batch just appended, as soon as it is
    /// written out (the replica's `write_out`), while its fsync runs.
    pub(super) fn ship_all<E: Engine>(
        &mut self,
        now_ms: u64,
        log: &mut ReplicationLog,
        store: &Store<E>,
        settings: &Settings,
        outbox: &mut Outbox,
    ) -> Result<()> {
        for p in &mut self.followers {
            ship(p, now_ms, self.durable, log, store, settings, &mut self.damage_found, outbox)?;
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
        (status.read_lease_ms_left, status.lease_reads) = self.lease(now_ms, settings);
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
                    },
                    up: is_up(p, now_ms, settings),
                    acked_lsn: p.acked,
                    lag_records,
                    lag_bytes: if lag_records == 0 { 0 } else { self.logged_bytes.saturating_sub(bytes_at(p.acked)) },
                    // Behind since this leader started, at least, for one it never heard from.
                    lag_ms: if lag_records == 0 {
                        0
                    } else {
                        now_ms.saturating_sub(p.caught_up_at_ms.max(self.started_ms))
                    },
                    last_ack_ms_ago: p.last_ack_ms.map(|at| now_ms.saturating_sub(at)),
                    snapshots: p.snapshots,
                }
            })
            .collect();
    }
}

/// How long a lease lasts from the send time of the round that confirmed it, by the leader's
/// clock: `election_timeout_ms * (1 - d) / (1 + d)` for a drift allowance `d`, so that it ends
/// in real time before any voter that echoed the round can vote again (essay, "Leases").
pub(super) fn lease_ms(settings: &Settings) -> u64 {
    let d = u128::from(settings.read_lease_drift_ppm.min(super::READ_LEASE_DRIFT_PPM_MAX));
    let ms = u128::from(settings.election_timeout_ms) * (1_000_000 - d) / (1_000_000 + d);
    u64::try_from(ms).expect("shorter than the election timeout")
}

/// The last record of `log` whose epoch is `epoch` or older (its base when there is none):
/// as far as a log that ends in `epoch` can share it.
fn last_at_or_before_epoch(log: &ReplicationLog, epoch: Epoch) -> Lsn {
    let runs = log.epoch_runs();
    let mut end = log.first_lsn().saturating_sub(1);
    for (i, &(start, run_epoch)) in runs.iter().enumerate() {
        if run_epoch > epoch {
            break;
        }
        end = runs.get(i + 1).map_or(log.last_lsn(), |&(next, _)| next.saturating_sub(1)).max(start.saturating_sub(1));
    }
    end
}

/// True when `p` acknowledged something within the link timeout.
fn is_up(p: &Progress, now_ms: u64, settings: &Settings) -> bool {
    p.last_ack_ms.is_some_and(|at| now_ms.saturating_sub(at) < settings.link_timeout_ms)
}

/// Puts `p` into snapshot mode from the leader's current log end.
fn start_snapshot(p: &mut Progress, log: &ReplicationLog, now_ms: u64) {
    p.snapshots += 1;
    let attempt = p.attempt_base + p.snapshots;
    let (lsn, lsn_epoch) = (log.last_lsn(), log.last_epoch());
    let send = SnapshotSend { attempt, lsn, lsn_epoch, next_seq: 0, after: None, done_sent: false, acked_seq: None };
    p.mode = Mode::Snapshot(send);
    p.inflight.clear();
    p.last_progress_ms = now_ms;
}

/// Ships what `p` is owed: every record in stream mode (durable here or not: each `Append`
/// carries how far the leader's log is durable, and a follower applies no record past that),
/// then, when the leader's durable end passed what `p` was told and `p` holds records past
/// it, an `Append` of no records that says so; chunks in snapshot mode.
// A free function over one follower's progress, so that the leader's other fields can be
// borrowed beside it: hence the arguments.
#[allow(clippy::too_many_arguments)]
fn ship<E: Engine>(
    p: &mut Progress,
    now_ms: u64,
    durable: Lsn,
    log: &mut ReplicationLog,
    store: &Store<E>,
    settings: &Settings,
    damage_found: &mut Vec<Error>,
    outbox: &mut Outbox,
) -> Result<()> {
    if matches!(p.mode, Mode::Stream) {
        let mut tell = durable > p.told && p.sent > p.told;
        while (p.sent < log.last_lsn() || p.check || tell) && p.inflight_bytes() < settings.window_bytes_max {
            // The log holds `sent`'s epoch exactly when it holds the records after it.
            let prev_epoch = log.epoch_at(p.sent);
            let records = match prev_epoch {
                Some(_) => log.read(p.sent, settings.ship_bytes_max)?,
                None => None,
            };
            let (Some(prev_epoch), Some(records)) = (prev_epoch, records) else {
                tracing::info!(
                    "{:?} needs records from {}, but the log starts at {}: sending a snapshot",
                    p.node,
                    p.sent + 1,
                    log.first_lsn()
                );
                start_snapshot(p, log, now_ms);
                break;
            };
            let last = records.last().map_or(p.sent, |r| r.lsn);
            if records.is_empty() && !p.check && !tell {
                break;
            }
            p.check = false;
            tell = false;
            p.told = durable;
            let bytes = records.iter().map(|r| r.size_hint()).sum();
            let message = Message::Append {
                epoch: settings.epoch,
                prev_epoch,
                prev_lsn: p.sent,
                records,
                leader_lsn: durable,
                sent_at_ms: now_ms,
            };
            outbox.now.push(Output::Send { to: p.node, message: message.into() });
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
            let (mut entries, damaged, through, done) =
                snapshot_chunk(store, s.after.as_ref(), settings.snapshot_chunk_bytes_max, damage_found)?;
            if settings.canary == super::Canary::SnapshotSkipsKey && !entries.is_empty() {
                entries.remove(0);
            }
            let message = Message::SnapshotChunk {
                epoch: settings.epoch,
                attempt: s.attempt,
                lsn: s.lsn,
                lsn_epoch: s.lsn_epoch,
                epochs: if s.next_seq == 0 { log.epoch_runs() } else { Vec::new() },
                seq: s.next_seq,
                after: s.after.clone(),
                through: if done { None } else { through.clone() },
                entries,
                damaged,
                done,
                end: done.then(|| (log.last_lsn(), log.last_epoch())),
            };
            // Chunks read the engine, which may hold writes not yet durable: they wait for
            // this batch's fsync.
            outbox.after_flush.push(Output::Send { to: p.node, message: message.into() });
            s.next_seq += 1;
            s.after = through;
            s.done_sent = done;
        }
    }
    Ok(())
}

/// One snapshot chunk as read: the records; the keys whose records are damaged here (left
/// out), with their versions; the last key taken; and whether the keys ran out.
type Chunk = (Vec<Change>, Vec<(Bytes, Option<Version>)>, Option<Bytes>, bool);

/// The keys after `after`, with their records, up to about `bytes_max`, as a [`Chunk`]; the
/// errors of the damaged records are added to `damage_found` for the replica to list.
pub(super) fn snapshot_chunk<E: Engine>(
    store: &Store<E>,
    after: Option<&Bytes>,
    bytes_max: usize,
    damage_found: &mut Vec<Error>,
) -> Result<Chunk> {
    let engine = store.engine();
    let (mut entries, mut damaged) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    let mut last = after.cloned();
    // Keys listed as damaged with no record in the engine (a snapshot left them out here)
    // are named in the chunk whose range holds them.
    let listed_only = |from: Option<&Bytes>, to: Option<&Bytes>, damaged: &mut Vec<(Bytes, Option<Version>)>| {
        let start = from.map_or(Bound::Unbounded, |k| Bound::Excluded(k.clone()));
        for key in store.damaged().range_from(start) {
            if to.is_some_and(|to| key > to) {
                break;
            }
            if engine.meta(key).is_none() {
                damaged.push((key.clone(), None));
            }
        }
        damaged.sort();
    };
    loop {
        let from = last.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let keys = engine.scan(from, SNAPSHOT_SCAN_KEYS);
        let exhausted = keys.len() < SNAPSHOT_SCAN_KEYS;
        for (key, meta) in keys {
            if bytes >= bytes_max {
                listed_only(after, last.as_ref(), &mut damaged);
                return Ok((entries, damaged, last, false));
            }
            // A key listed as damaged here is not sent as whatever the engine holds for it;
            // one whose read fails is listed by the replica (`damage_found`).
            let read = match store.damaged().get(&key) {
                Some(_) => None,
                None => match engine.get(&key).map_err(|e| e.reading(&key)) {
                    Err(error @ Error::Damaged { .. }) => {
                        damage_found.push(error);
                        None
                    }
                    result => Some(result?),
                },
            };
            last = Some(key.clone());
            match read {
                Some(Some(record)) => {
                    bytes += key.len() + record.value.as_ref().map_or(0, Bytes::len) + 32;
                    entries.push(Change { key, record });
                }
                Some(None) => {}
                None => {
                    bytes += key.len() + 32;
                    damaged.push((key, Some(meta.version)));
                }
            }
        }
        if exhausted {
            listed_only(after, None, &mut damaged);
            return Ok((entries, damaged, last, true));
        }
    }
}
