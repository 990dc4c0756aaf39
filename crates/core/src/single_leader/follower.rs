//! The follower's side of single-leader replication: append the leader's records in order,
//! apply them, acknowledge once durable, install snapshots, know how far behind it is, and
//! cut what the leader's history does not hold.
//!
//! A follower's acknowledgement is always an `after_flush` output: it says "durable through
//! N", and the runtime sends it only once this batch's fsync has made that true.
//!
//! # Matching the leader's log
//!
//! An `Append` names the leader's record before its first one, `(prev_lsn, prev_epoch)`. The
//! follower takes the records only if its own record at `prev_lsn` has that epoch: one leader
//! per epoch writes each position at most once, so the two logs are then equal through
//! `prev_lsn` (Raft's log matching). On a mismatch it refuses, pointing the leader at the
//! start of its own run of records of that epoch, so the leader backs up an epoch at a time.
//! A record it already holds in the same epoch is skipped; one it holds in another epoch is a
//! conflict: its log from there on is a history the new leader does not share (writes an old
//! leader made that no majority held). It saves those records to its [`RollbackLog`]. If it
//! never applied them (they were past its old leader's durable end, "Applying" below) and
//! they are all in its log's active segment, it cuts them from its log alone and goes on; else
//! it empties its store and its log and starts again from the leader's log or a snapshot,
//! like a new node: a logical log has no old values to undo with. The acknowledgement's `matched_lsn`
//! says how far the log is known to equal this leader's; only that counts for the leader's
//! acknowledgements and reads.
//!
//! # Applying: only what the leader holds durably
//!
//! The leader ships records as it writes them, in parallel with its own fsync (DESIGN §12),
//! so a follower may hold a record its leader then loses in a crash; the next leader's history
//! may not have it, and the follower cuts it. So a follower appends every record it is sent
//! but applies to its store (which its readers see) only the records through
//! `min(matched, leader's durable end)`: its log equals the leader's there, and the leader
//! holds it on disk. Every `Append` and heartbeat carries the leader's durable end, and the
//! leader sends an `Append` of no records when its fsync moves that end past what a follower
//! holds, so a write is readable on a follower about one message after the leader's fsync.
//! A follower that restarts has applied its whole log again (recovery), including records no
//! leader may hold: it refuses reads (`-TRYAGAIN`) until a leader's durable end covers its log,
//! or a cut or snapshot replaces what it held. So does a leader that steps down holding
//! records no majority held (its own writes, applied as it made them): the next leader may
//! not have them, and a reader that saw them could then see them vanish (a session reading
//! elsewhere would go back in time). A follower that wins an election applies its whole log
//! first: a leader's log is the history.
//!
//! A follower applies through its leader's durable end, not through what a majority holds:
//! in a cluster of five or more, a record on the leader and one follower only is readable
//! there, and a failover to a node without it cuts it. Sessions notice (the replica's record
//! at the session's position is of another epoch: an error, not a silent older value) unless
//! the session's position lies before the replica's log base, where nothing is left to
//! compare.
//!
//! A request spanning several records (its parts, see [`LogRecord`]) is applied when its last
//! part is within that bound, the parts read back from the log, all in one step: a reader sees
//! all of it or none. A request still open when a record of another request follows it is
//! abandoned (its leader died while shipping it) and never applied; a cut inside a request
//! saves its earlier parts to the rollback log too. Retention keeps every record not yet
//! applied, and every record not known to be in every later leader's history (its leader has
//! not both matched it and said a majority holds it; within the log's `unreplicated_bytes_max`):
//! a deposed leader's last writes stay until a leader cuts them (saving them to the rollback
//! log) or confirms them. A request whose first parts are gone anyway (they were before a snapshot's
//! base, or a log written before retention kept them) is not applied in part: the replica
//! empties itself and takes the leader's history again.
//!
//! Before the log's base (after a snapshot or retention) nothing is left to compare: an
//! `Append` from before it is refused, pointing the leader at the base (every acknowledgement
//! names the base, and a leader looking for where two logs part starts no further back), and a
//! mismatch at the base itself empties the replica, as does an `Append` from before the base
//! whose previous record is of a newer epoch than the base's (epochs never fall along a log,
//! so the leader's record at the base cannot be the base). Emptying the log (a cut, a snapshot) first raises the
//! vote floor and the log generation (see [`crate::single_leader::vote`]): the replica votes
//! with the position it had, and the leader ignores its acknowledgements about the old log. A
//! snapshot's writes past its base taint the store until the log holds them (see the replica's
//! CAVEATS).

use super::{Outbox, Output, Settings};
use crate::error::Result;
use crate::kv::Store;
use crate::replication::{Change, Epoch, LogRecord, Lsn, ReplicationLog};
use crate::single_leader::election::{LogPosition, Tally};
use crate::single_leader::{Message, RollbackLog, VoteStore};
use crate::storage::{Engine, PhysicalRole, Record};
use crate::version::{NodeId, Version};
use bytes::Bytes;
use serde::Serialize;
use std::collections::VecDeque;
use std::ops::Bound;

/// Leader positions remembered for measuring lag in time, at most.
const MARKS_MAX: usize = 1024;

/// Keys scanned at a time while installing a snapshot chunk.
const INSTALL_SCAN_KEYS: usize = 1024;

/// Bytes of the log read at a time while saving a cut to the rollback log.
const CUT_READ_BYTES: usize = 4 * 1024 * 1024;

/// Bytes of the log read at a time while applying records (records past what may be applied
/// are read too, and dropped: this bounds that waste per message).
const APPLY_READ_BYTES: usize = 64 * 1024;

/// What a follower knows of its leader, for the status pages.
#[derive(Clone, Debug, Serialize)]
pub struct FollowerView {
    /// The leader; `None` while none is known (an election is under way).
    pub leader: Option<NodeId>,
    /// How a client reaches it.
    pub leader_hint: String,
    /// True when the leader was heard from within the link timeout.
    pub link_up: bool,
    /// Milliseconds since the leader was last heard from; `None` if never.
    pub last_io_ms_ago: Option<u64>,
    /// The newest record applied: what its readers see (its leader holds it durably).
    pub applied_lsn: Lsn,
    /// After a restart (or a step-down before an fsync finished): reads are refused until a
    /// leader confirms the log through here (0: they are not).
    pub unconfirmed_lsn: Lsn,
    /// The leader's durable log end, as last heard.
    pub leader_lsn: Lsn,
    /// Records the leader had, as last heard, that this follower does not.
    pub lag_records: u64,
    /// True while a snapshot is being installed.
    pub installing_snapshot: bool,
    /// Snapshots installed since start.
    pub snapshots_installed: u64,
    /// The log is known to equal the leader's through here.
    pub matched_lsn: Lsn,
    /// Times since start it cut records the leader does not hold and started again.
    pub rebuilds: u64,
    /// Times since start it cut records the leader does not hold from its log alone (it had
    /// not applied them).
    pub tail_cuts: u64,
}

/// An election this node stands in (or a pre-vote before one).
#[derive(Debug)]
pub(super) struct Candidacy {
    /// A pre-vote: the epoch is not moved yet.
    pub(super) pre_vote: bool,
    /// The epoch it stands in (for a pre-vote, the one it would).
    pub(super) epoch: Epoch,
    /// The answers so far, its own included.
    pub(super) tally: Tally,
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
    /// The epoch's leader, once heard from.
    pub(super) leader: Option<NodeId>,
    /// An election it stands in, if any.
    pub(super) candidacy: Option<Candidacy>,
    /// When the leader was last heard from.
    pub(super) last_heard_ms: Option<u64>,
    /// The log equals the leader's through here (reset with each new leader).
    pub(super) matched: Lsn,
    /// The leader's newest heartbeat round seen.
    round: u64,
    /// Cuts since start.
    rebuilds: u64,
    /// Cuts of records never applied (the log's tail only) since start.
    tail_cuts: u64,
    /// (leader log end, leader clock) from the leader's messages, oldest first.
    marks: VecDeque<(Lsn, u64)>,
    caught_up_at_ms: u64,
    leader_lsn: Lsn,
    installing: Option<Install>,
    /// The store holds every request through here (never inside one): what readers see.
    pub(super) applied: Lsn,
    /// It refused a heartbeat to have its log checked (see `message`); once per leader.
    asked_match: bool,
    /// After a restart: the store holds records through here that no leader has confirmed
    /// durable (recovery applied the whole log); reads are refused until one does (0: none).
    unconfirmed: Lsn,
    /// Why `unconfirmed` is set, for the error reads get: "restarted", "stepped down".
    unconfirmed_because: &'static str,
    snapshots_installed: u64,
    /// The newest snapshot attempt seen: chunks of an older one, still in flight, are ignored.
    newest_attempt: u64,
    /// When (this node's clock) it last heard a leader message after which its store held every
    /// record the leader had told it of: what it serves is at most this old.
    pub(super) caught_up_local_ms: Option<u64>,
    /// Where the leader's log is held from for another family, from its last heartbeat (the
    /// outer `None`: none heard yet): this log keeps those records too.
    leader_hold: Option<Option<Lsn>>,
    /// Where this leader's heartbeats say a majority holds its log through (see
    /// `Message::Heartbeat`); 0 until one says, and at each new leader.
    leader_majority: Lsn,
}

impl Follower {
    /// A follower of `leader` whose store holds every request through `applied`.
    pub(super) fn new(leader: Option<NodeId>, applied: Lsn) -> Follower {
        Follower {
            leader,
            candidacy: None,
            last_heard_ms: None,
            matched: 0,
            round: 0,
            rebuilds: 0,
            tail_cuts: 0,
            marks: VecDeque::new(),
            caught_up_at_ms: 0,
            leader_lsn: 0,
            installing: None,
            applied,
            asked_match: false,
            unconfirmed: 0,
            unconfirmed_because: "",
            snapshots_installed: 0,
            newest_attempt: 0,
            caught_up_local_ms: None,
            leader_hold: None,
            leader_majority: 0,
        }
    }

    /// The store holds the whole log through `applied`, which no leader has confirmed durable
    /// (recovery at open applied it; or this node led, and steps down before a majority held
    /// its writes): reads wait for a leader's word (module documentation, "Applying").
    /// `because` says how, for the error reads get ("restarted", "stepped down from leading").
    pub(super) fn unconfirmed_through(&mut self, applied: Lsn, because: &'static str) {
        self.applied = applied;
        self.unconfirmed = applied;
        self.unconfirmed_because = because;
    }

    /// The records through here are applied but not confirmed durable by a leader (0: none):
    /// reads must wait.
    pub(super) fn unconfirmed(&self) -> Lsn {
        self.unconfirmed
    }

    /// True while a snapshot is being installed: the store holds part of it beside what the
    /// replica held before, and reads wait until it is whole.
    pub(super) fn installing_snapshot(&self) -> bool {
        self.installing.is_some()
    }

    /// Why reads wait (see [`Follower::unconfirmed_through`]).
    pub(super) fn unconfirmed_because(&self) -> &'static str {
        self.unconfirmed_because
    }

    /// Follows `leader` (`None`: unknown yet) in a new epoch: nothing is known to match yet.
    pub(super) fn follow(&mut self, leader: Option<NodeId>) {
        self.leader = leader;
        self.candidacy = None;
        self.last_heard_ms = None;
        self.matched = 0;
        self.leader_majority = 0;
        self.asked_match = false;
        self.round = 0;
        self.marks.clear();
        self.leader_lsn = 0;
        // A snapshot being installed stays so: the new leader's first chunk starts another, or
        // its first Append abandons it (emptying the half-installed store) and streams the log.
        // A new leader numbers its snapshot attempts from its own clock, which may be behind.
        self.newest_attempt = 0;
    }

    /// Through where its log is known to be in every later leader's history: what its leader
    /// confirmed it holds (`matched`) and says a majority holds.
    fn confirmed(&self) -> Lsn {
        self.matched.min(self.leader_majority)
    }

    /// Retention of the follower's own log, by size; never the parts of a request it has yet
    /// to apply (they are read back from the log when its last part comes), nor records not
    /// known to be in every later leader's history (within `unreplicated_bytes_max`): those
    /// its leader has not both confirmed it holds and said a majority holds. A replica that
    /// led, or that holds records its leader may lose, keeps them until they are confirmed or
    /// cut, so a cut finds them to save to the rollback log.
    /// Where retention may drop records before, with `hold` this replica's own (see `tick`).
    pub(super) fn keep_from(&self, log: &ReplicationLog, hold: Option<Lsn>) -> Lsn {
        let keep_from = log.open_request().unwrap_or(log.last_lsn() + 1).min(self.applied + 1);
        let keep_from = keep_from.min(log.unconfirmed_from(self.confirmed()));
        keep_from.min(self.leader_hold.unwrap_or(hold).unwrap_or(Lsn::MAX))
    }

    /// Drops what retention lets go: never a record not yet applied, of a request still open,
    /// or held: from where the leader's last heartbeat said its log is held, or before one
    /// came, from `hold` (this replica's own, see
    /// [`crate::single_leader::SingleLeader::hold_log_from`]).
    pub(super) fn tick(&mut self, log: &mut ReplicationLog, hold: Option<Lsn>) -> Result<()> {
        let before = log.first_lsn();
        log.retain(self.keep_from(log, hold))?;
        super::warn_unconfirmed_dropped(log, before, self.confirmed());
        Ok(())
    }

    /// A message from the leader, in this replica's epoch.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn message<E: Engine>(
        &mut self,
        now_ms: u64,
        leader: NodeId,
        message: Message,
        log: &mut ReplicationLog,
        store: &mut Store<E>,
        rollback: &mut RollbackLog,
        votes: &mut VoteStore,
        settings: &Settings,
        outbox: &mut Outbox,
    ) -> Result<()> {
        assert_eq!(message.epoch(), settings.epoch, "the replica fences other epochs before the follower sees them");
        self.last_heard_ms = Some(now_ms);
        let mut reject = false;
        let mut snapshot = None;
        let mut durable_hint = None;
        match message {
            Message::Append { prev_lsn, prev_epoch, records, leader_lsn, sent_at_ms, .. } => {
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
                    // The partial snapshot is dropped too: the log replays the whole history
                    // over an empty store (key ranges not yet installed held this replica's
                    // old keys).
                    wipe(store)?;
                    store.engine_mut().sync_written(now_ms)?;
                    votes.rebuilt()?;
                    (self.applied, self.unconfirmed) = (log.first_lsn() - 1, 0);
                }
                let outcome = self.append(now_ms, prev_lsn, prev_epoch, records, log, store, rollback, votes)?;
                (reject, durable_hint) = outcome;
            }
            Message::Heartbeat { leader_lsn, sent_at_ms, round, log_hold, majority_held, .. } => {
                self.leader_hold = Some(log_hold);
                self.leader_majority = self.leader_majority.max(majority_held);
                self.mark(leader_lsn, sent_at_ms);
                self.round = self.round.max(round);
                if self.matched == 0 && log.last_lsn() > 0 && self.installing.is_none() && !self.asked_match {
                    // Nothing of its log is known to match this leader's (it restarted, or
                    // follows a new one): refusing once makes the leader check where it ends
                    // now, rather than after `resend_ms`, so that what it holds is applied
                    // (or cut) and its reads resume.
                    self.asked_match = true;
                    reject = true;
                }
            }
            Message::SnapshotChunk {
                attempt,
                lsn,
                lsn_epoch,
                epochs,
                seq,
                after,
                through,
                entries,
                damaged,
                done,
                end,
                ..
            } => {
                if attempt < self.newest_attempt {
                    return Ok(()); // an abandoned attempt's chunk, delivered late
                }
                self.newest_attempt = attempt;
                if seq == 0 {
                    save_outside_history(now_ms, lsn, &epochs, log, rollback)?;
                    votes.emptying_log(LogPosition { epoch: log.last_epoch(), lsn: log.last_lsn() })?;
                    // Until the snapshot is whole, this follower's log must say "I have
                    // nothing", so that a crash mid-install starts it over.
                    log.reset(0, 0)?;
                    self.matched = 0;
                    // Reads stay refused if they were: until the snapshot is whole, key
                    // ranges it has not reached hold what this replica held.
                    self.applied = 0;
                    self.installing = Some(Install { attempt, lsn, next_seq: 0 });
                }
                match &mut self.installing {
                    Some(install) if install.attempt != attempt => {
                        // A chunk of an abandoned attempt, still in flight: nothing to do.
                        return Ok(());
                    }
                    Some(install) if install.next_seq == seq && install.lsn == lsn => {
                        let named: Vec<&Bytes> = damaged.iter().map(|(key, _)| key).collect();
                        install_chunk(store, after.as_ref(), through.as_ref(), entries, &named)?;
                        for (key, version) in damaged {
                            // This follower's own record of the key is kept: if it is the very
                            // record the leader holds damaged, and reads whole, it is whole.
                            let same = version.is_some() && store.engine().meta(&key).map(|m| m.version) == version;
                            if same && store.engine().get(&key).is_ok() {
                                continue;
                            }
                            let reason = "damaged on the leader's disk when it sent its snapshot: left out".into();
                            let damage = crate::kv::Damage { path: "(the leader's copy)".into(), offset: 0, reason };
                            store.list_damaged(&key, damage);
                        }
                        install.next_seq += 1;
                        snapshot = Some((attempt, seq));
                        if done {
                            // The chunks must be durable before the log says they are there.
                            store.engine_mut().sync_written(now_ms)?;
                            let taint = end.filter(|(end, _)| *end > lsn);
                            votes.set_taint(taint.map(|(lsn, epoch)| LogPosition { epoch, lsn }))?;
                            log.reset(lsn, lsn_epoch)?;
                            votes.rebuilt()?;
                            self.matched = lsn;
                            (self.applied, self.unconfirmed) = (lsn, 0);
                            self.installing = None;
                            self.snapshots_installed += 1;
                            tracing::info!("installed a snapshot at {lsn}; the log follows from {}", lsn + 1);
                        }
                    }
                    _ => reject = true,
                }
            }
            other => {
                tracing::debug!("follower ignores a {} from its leader", other.kind());
                return Ok(());
            }
        }
        if self.installing.is_none() && !self.apply_confirmed(now_ms, log, store, settings)? {
            tracing::warn!(
                "the first parts of the request after record {} are gone from this log: emptying this replica to \
                 take the leader's history again",
                self.applied
            );
            self.cut(now_ms, log.last_lsn() + 1, log, store, rollback, votes)?;
            reject = true;
        }
        let durable_lsn = log.last_lsn();
        while self.marks.front().is_some_and(|(lsn, _)| *lsn <= durable_lsn) {
            let (_, at) = self.marks.pop_front().expect("front exists");
            self.caught_up_at_ms = self.caught_up_at_ms.max(at);
        }
        let message = Message::Ack {
            epoch: settings.epoch,
            durable_lsn: durable_hint.unwrap_or(durable_lsn),
            matched_lsn: self.matched.min(durable_lsn),
            last_epoch: log.last_epoch(),
            log_base: log.first_lsn() - 1,
            round: self.round,
            generation: votes.generation(),
            reject,
            caught_up_at_ms: self.caught_up_at_ms,
            snapshot,
        };
        outbox.after_flush.push(Output::Send { to: leader, message: message.into() });
        Ok(())
    }

    /// Takes an `Append`'s records as "Matching the leader's log" in the module
    /// documentation says. Returns whether it refused, and where the leader should ship from
    /// when that is not this log's end.
    #[allow(clippy::too_many_arguments)]
    fn append<E: Engine>(
        &mut self,
        now_ms: u64,
        prev_lsn: Lsn,
        prev_epoch: Epoch,
        records: Vec<LogRecord>,
        log: &mut ReplicationLog,
        store: &mut Store<E>,
        rollback: &mut RollbackLog,
        votes: &mut VoteStore,
    ) -> Result<(bool, Option<Lsn>)> {
        if prev_lsn > log.last_lsn() {
            return Ok((true, None)); // a gap: ship from this log's end
        }
        // Nothing before the base is left to compare: the leader must ship from the base, whose
        // epoch the log keeps.
        let base = log.first_lsn() - 1;
        if prev_lsn < base {
            // Epochs never fall along a log: a leader whose record before the base is of a newer
            // epoch than the base's has no record at the base of the base's epoch.
            if log.epoch_at(base).is_some_and(|epoch| prev_epoch > epoch) {
                self.cut(now_ms, base + 1, log, store, rollback, votes)?;
                return Ok((true, None));
            }
            return Ok((true, Some(base)));
        }
        if log.epoch_at(prev_lsn) != Some(prev_epoch) {
            if prev_lsn == base {
                // The base itself (a snapshot's position) is not in the leader's history: the
                // store holds a history the leader does not share. Start again from nothing.
                self.cut(now_ms, base + 1, log, store, rollback, votes)?;
                return Ok((true, None));
            }
            let start = log.epoch_run_start(prev_lsn).expect("prev_lsn is within the log");
            return Ok((true, Some(start.saturating_sub(1).max(base))));
        }
        let mut matched = Some(prev_lsn);
        for record in records {
            if record.lsn <= log.last_lsn() {
                if log.epoch_at(record.lsn) == Some(record.epoch) {
                    matched = Some(record.lsn); // already here
                    continue;
                }
                // Not if a snapshot's taint reaches the record: the store may hold its writes.
                let untainted = votes.taint().is_none_or(|taint| taint.lsn < record.lsn);
                if record.lsn > self.applied && untainted && log.can_truncate_after(record.lsn - 1) {
                    // Never applied: the store is as the leader's history has it, and only the
                    // log's tail goes. The record then follows the log's end.
                    self.cut_tail(now_ms, record.lsn - 1, log, rollback, votes)?;
                } else {
                    self.cut(now_ms, record.lsn, log, store, rollback, votes)?;
                    return Ok((true, None));
                }
            }
            if record.lsn != log.last_lsn() + 1 {
                return Ok((true, None));
            }
            if let Some(why) = record.parts_error() {
                tracing::error!("refusing an append from the leader: {why}");
                return Ok((true, None));
            }
            matched = Some(record.lsn);
            log.append(record)?;
        }
        if let Some(lsn) = matched {
            self.matched = self.matched.max(lsn);
        }
        if let Some(taint) = votes.taint().filter(|t| log.last_lsn() >= t.lsn) {
            if log.epoch_at(taint.lsn) == Some(taint.epoch) {
                votes.set_taint(None)?; // the log now holds every write the snapshot had
            } else {
                tracing::warn!(
                    "the snapshot this replica installed held writes up to {}@e{} that the leader's history does not \
                     have: emptying this replica to take the history again",
                    taint.lsn,
                    taint.epoch
                );
                self.cut(now_ms, log.last_lsn() + 1, log, store, rollback, votes)?;
                return Ok((true, None));
            }
        }
        Ok((false, None))
    }

    /// Cuts the log from `from` on, saving what it held to the rollback log, and empties the
    /// store and the log to start again from the leader's history. The order survives a
    /// crash at any point: the rollback file first, then the rebuild flag (with the vote floor
    /// and a new log generation), then the store, then the log; a restart that finds the flag
    /// empties both before anything else.
    fn cut<E: Engine>(
        &mut self,
        now_ms: u64,
        from: Lsn,
        log: &mut ReplicationLog,
        store: &mut Store<E>,
        rollback: &mut RollbackLog,
        votes: &mut VoteStore,
    ) -> Result<()> {
        let last = log.last_lsn();
        // A cut inside a request takes its earlier parts too: the history goes on without it.
        let first = log.read(from - 1, 1)?.and_then(|records| records.first().map(LogRecord::request_start));
        let mut after = first.map_or(from, |start| start.max(log.first_lsn())) - 1;
        let mut saved = 0;
        while let Some(records) = log.read(after, CUT_READ_BYTES)? {
            let Some(end) = records.last().map(|r| r.lsn) else { break };
            saved += rollback.save(&records, now_ms)?;
            after = end;
        }
        if from <= last {
            tracing::warn!(
                "records {from}..={last} are not in the leader's history: saved their {saved} changes to the rollback \
                 log; emptying this replica to take the leader's history again"
            );
        }
        // Until its log is back past the history it held, it votes as if it still held it (the
        // vote floor), and does not stand. What it cuts is not the history's: no leader that
        // lacks it can have acknowledged it, so the floor need not cover it.
        let kept = from - 1;
        let position = LogPosition { epoch: log.epoch_at(kept).unwrap_or_else(|| log.last_epoch()), lsn: kept };
        votes.emptying_log(position.min(LogPosition { epoch: log.last_epoch(), lsn: last }))?;
        wipe(store)?;
        store.engine_mut().sync_written(now_ms)?;
        log.reset(0, 0)?;
        votes.rebuilt()?;
        self.matched = 0;
        (self.applied, self.unconfirmed) = (0, 0);
        self.rebuilds += 1;
        Ok(())
    }

    /// Drops the log's records after `after` (none of them applied: see "Matching the
    /// leader's log"), saving them to the rollback log first.
    fn cut_tail(
        &mut self,
        now_ms: u64,
        after: Lsn,
        log: &mut ReplicationLog,
        rollback: &mut RollbackLog,
        votes: &mut VoteStore,
    ) -> Result<()> {
        let last = log.last_lsn();
        // A cut inside a request saves its earlier parts too (they stay in the log, abandoned:
        // the history goes on without the request), as `cut` does.
        let first = log.read(after, 1)?.and_then(|records| records.first().map(LogRecord::request_start));
        let (mut at, mut saved) = (first.map_or(after + 1, |start| start.max(log.first_lsn())) - 1, 0);
        while let Some(records) = log.read(at, CUT_READ_BYTES)? {
            let Some(end) = records.last().map(|r| r.lsn) else { break };
            saved += rollback.save(&records, now_ms)?;
            at = end;
        }
        tracing::warn!(
            "records {}..={last} are not in the leader's history and were never applied: saved their {saved} changes to \
             the rollback log and cut them from the log",
            after + 1
        );
        // The leader ignores acknowledgements about the log as it was. The vote floor stays: the
        // log keeps all of the history it held.
        votes.cutting_tail()?;
        log.truncate_after(after)?;
        self.matched = self.matched.min(after);
        self.tail_cuts += 1;
        Ok(())
    }

    /// Applies every whole request the leader has confirmed (module documentation,
    /// "Applying"): through `min(matched, leader's durable end)`. False when the request after
    /// `applied` lost its first parts (before the log's base): the replica must take the
    /// history again.
    fn apply_confirmed<E: Engine>(
        &mut self,
        now_ms: u64,
        log: &mut ReplicationLog,
        store: &mut Store<E>,
        settings: &Settings,
    ) -> Result<bool> {
        let bound = match settings.canary {
            super::Canary::FollowerAppliesUndurable => self.matched.min(log.last_lsn()),
            _ => self.matched.min(self.leader_lsn).min(log.last_lsn()),
        };
        if self.unconfirmed <= bound {
            self.unconfirmed = 0;
        }
        let out_of_order = settings.canary == super::Canary::FollowerOutOfOrder;
        let parts_apart = settings.canary == super::Canary::FollowerAppliesParts;
        apply_through(&mut self.applied, bound, log, store, now_ms, out_of_order, parts_apart)
    }

    /// Applies every whole request in the log (a follower about to lead: its log is the
    /// history from now on). A request whose first parts are gone is logged and skipped.
    pub(super) fn apply_all<E: Engine>(
        &mut self,
        now_ms: u64,
        log: &mut ReplicationLog,
        store: &mut Store<E>,
    ) -> Result<()> {
        let last = log.last_lsn();
        while !apply_through(&mut self.applied, last, log, store, now_ms, false, false)? {
            tracing::error!(
                "the first parts of the request after record {} are gone from this log: its later parts are not \
                 applied",
                self.applied
            );
            let after = log.read(self.applied, 1)?.and_then(|r| r.first().map(|r| r.lsn));
            match after {
                Some(lsn) => self.applied = lsn,
                None => self.applied = log.first_lsn() - 1,
            }
        }
        self.unconfirmed = 0;
        Ok(())
    }

    /// The leader's log end as this follower last heard it.
    pub(super) fn leader_lsn(&self) -> Lsn {
        self.leader_lsn
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
    pub(super) fn view(&self, now_ms: u64, log: &ReplicationLog, settings: &Settings) -> FollowerView {
        let applied = self.applied;
        FollowerView {
            leader: self.leader,
            leader_hint: self.leader.map(|l| settings.hint(l)).unwrap_or_default(),
            link_up: self.last_heard_ms.is_some_and(|at| now_ms.saturating_sub(at) < settings.link_timeout_ms),
            last_io_ms_ago: self.last_heard_ms.map(|at| now_ms.saturating_sub(at)),
            applied_lsn: applied,
            unconfirmed_lsn: self.unconfirmed,
            leader_lsn: self.leader_lsn,
            lag_records: self.leader_lsn.saturating_sub(applied),
            installing_snapshot: self.installing.is_some(),
            snapshots_installed: self.snapshots_installed,
            matched_lsn: self.matched.min(log.last_lsn()),
            rebuilds: self.rebuilds,
            tail_cuts: self.tail_cuts,
        }
    }
}

/// Before a snapshot taken at `lsn` replaces this follower's log: saves to the rollback log
/// every record of it that the leader's history, told by its epoch runs `epochs`, does not
/// hold (a record whose epoch differs from the leader's at its position, or past `lsn`, and
/// every one after the first such: logs that differ once differ from there on).
fn save_outside_history(
    now_ms: u64,
    lsn: Lsn,
    epochs: &[(Lsn, Epoch)],
    log: &mut ReplicationLog,
    rollback: &mut RollbackLog,
) -> Result<()> {
    let leader_epoch = |at: Lsn| epochs.iter().rev().find(|(start, _)| *start <= at).map(|(_, e)| *e);
    let mut after = log.first_lsn() - 1;
    let mut cutting = false;
    let mut saved = 0;
    while let Some(records) = log.read(after, CUT_READ_BYTES)? {
        let Some(end) = records.last().map(|r| r.lsn) else { break };
        after = end;
        let from =
            records.iter().position(|r| cutting || r.lsn > lsn || leader_epoch(r.lsn).is_some_and(|e| e != r.epoch));
        if let Some(from) = from {
            cutting = true;
            saved += rollback.save(&records[from..], now_ms)?;
        }
    }
    if saved > 0 {
        tracing::warn!(
            "a snapshot replaces records the leader's history does not hold: saved their {saved} changes to the \
             rollback log"
        );
    }
    Ok(())
}

/// Applies to `store` every whole request after `applied` whose last part is at most `bound`,
/// in log order, in one pass over the log, moving `applied` past it and past abandoned
/// requests (a record of another request follows their parts: their leader stopped shipping
/// them); it never stops inside a request. A one-record request is applied as it is read; a
/// request of several parts is read again from its start once its last part is seen. False
/// when a record continues a request whose first parts are gone from the log: what came before
/// it is applied, and `applied` stops just before it. With `out_of_order` (the canary) the
/// changes of each call are applied newest first; with `parts_apart` (the other canary) each
/// part of a request is applied as it is read, so that readers see half a transaction.
#[allow(clippy::too_many_arguments)]
fn apply_through<E: Engine>(
    applied: &mut Lsn,
    bound: Lsn,
    log: &mut ReplicationLog,
    store: &mut Store<E>,
    now_ms: u64,
    out_of_order: bool,
    parts_apart: bool,
) -> Result<bool> {
    let mut reversed = Vec::new();
    let mut apply = |change: Change, store: &mut Store<E>| -> Result<()> {
        if out_of_order {
            reversed.push(change);
            Ok(())
        } else {
            store.apply(change)
        }
    };
    // A record's body: its changes, or the leader's storage bytes they came from.
    let mut apply_record = |record: LogRecord, store: &mut Store<E>| -> Result<()> {
        match &record.physical {
            Some(physical) if !out_of_order => store.apply_physical(physical),
            _ => {
                // A physical follower sent changes instead of bytes (a leader's recovery logs
                // again what its log lost, in key order) stores them as its own writes.
                let following =
                    store.engine_mut().log_engine().is_some_and(|e| e.physical_role() == PhysicalRole::Follow);
                if following && record.physical.is_none() && !record.changes.is_empty() {
                    store.leave_physical(&format!("record {} holds changes, not the leader's bytes", record.lsn))?;
                }
                record.changes.into_iter().try_for_each(|change| apply(change, store))
            }
        }
    };
    // The first lsn of the request of several parts being read, if one is.
    let mut open: Option<Lsn> = None;
    let mut after = *applied;
    let mut whole = true;
    'scan: while after < bound {
        let Some(records) = log.read(after, APPLY_READ_BYTES)? else {
            whole = false; // before the log's base
            break;
        };
        if records.is_empty() {
            break;
        }
        for record in records {
            if record.lsn > bound {
                break 'scan;
            }
            after = record.lsn;
            let start = record.request_start();
            if let Some(first) = open.filter(|&first| first != start) {
                tracing::warn!(
                    "records {first}..={} hold part of a request that was never completed (its leader stopped \
                     shipping it): abandoned, never applied",
                    record.lsn - 1
                );
                open = None;
                *applied = record.lsn - 1;
            }
            match open {
                None if start != record.lsn => {
                    whole = false;
                    break 'scan;
                }
                None if record.continues() => {
                    open = Some(start);
                    if parts_apart {
                        apply_record(record, store)?;
                    }
                }
                None => {
                    let (lsn, statement) = (record.lsn, record.statement.clone());
                    apply_record(record, store)?;
                    if let Some(statement) = statement {
                        // Executed again here, at this replica's clock (a statement is whole).
                        super::statement::execute(store, now_ms, lsn, statement, false)?;
                    }
                    *applied = lsn;
                }
                Some(_) if record.continues() => {
                    if parts_apart {
                        apply_record(record, store)?;
                    }
                }
                Some(_) if parts_apart => {
                    let lsn = record.lsn;
                    apply_record(record, store)?;
                    open = None;
                    *applied = lsn;
                }
                Some(first) => {
                    let mut part_after = first - 1;
                    while part_after < record.lsn {
                        let parts = log.read(part_after, APPLY_READ_BYTES)?.expect("a request's parts are in the log");
                        for part in parts.into_iter().take_while(|r| r.lsn <= record.lsn) {
                            part_after = part.lsn;
                            apply_record(part, store)?;
                        }
                    }
                    open = None;
                    *applied = record.lsn;
                }
            }
        }
    }
    for change in reversed.into_iter().rev() {
        store.apply(change)?;
    }
    Ok(whole)
}

/// Deletes every key of `store` (a tombstone of the oldest version for each), in bounded
/// scans.
pub(super) fn wipe<E: Engine>(store: &mut Store<E>) -> Result<()> {
    if store.physical_log() {
        // Its own tombstones: its files are not the leader's from here on (said durably first).
        store.leave_physical("it empties itself with tombstones, to take the leader's history again")?;
    }
    let mut from: Option<Bytes> = None;
    loop {
        let bound = from.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let keys = store.engine().scan(bound, INSTALL_SCAN_KEYS);
        let Some((last, _)) = keys.last() else { return Ok(()) };
        from = Some(last.clone());
        for (key, meta) in keys {
            if !meta.tombstone {
                let record = Record { version: Version::default(), value: None, expire_at_ms: None };
                store.apply(Change { key, record })?;
            }
        }
    }
}

/// Installs one snapshot chunk: the leader's records for the keys in (`after`, `through`]
/// (to the end when `through` is `None`), and a tombstone for every key of this follower's in
/// that range that the leader does not have, but the keys it names `damaged` (this follower's
/// record of those stays).
fn install_chunk<E: Engine>(
    store: &mut Store<E>,
    after: Option<&Bytes>,
    through: Option<&Bytes>,
    entries: Vec<Change>,
    damaged: &[&Bytes],
) -> Result<()> {
    if store.physical_log() {
        store.leave_physical("it installs a snapshot of the leader's keys, not its files")?;
    }
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
            // A key the leader named damaged keeps this follower's record: it may be the only
            // whole copy left.
            if !meta.tombstone && !leader_has(&key) && !damaged.contains(&&key) {
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
