//! The replication log's state and its public calls, shared by the file-backed log and the
//! in-memory one: lsn rules, segment accounting, the decoded tail, retention and reads.

use super::files::Files;
use super::format::{body_bytes, FRAME_BYTES, HEADER_BYTES, RECORD_BYTES_MAX};
use crate::error::{Error, Result};
use crate::replication::record::{Epoch, LogRecord, Lsn};
use crate::storage::WrittenOut;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::Path;

/// The default of [`ReplogOptions::segment_bytes_max`]: 16 MiB.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 16 * 1024 * 1024;

/// The default of [`ReplogOptions::retain_bytes_max`]: 256 MiB.
pub const RETAIN_BYTES_MAX_DEFAULT: u64 = 256 * 1024 * 1024;

/// The default of [`ReplogOptions::unreplicated_bytes_max`]: 1 GiB.
pub const UNREPLICATED_BYTES_MAX_DEFAULT: u64 = 1024 * 1024 * 1024;

/// The default of [`ReplogOptions::tail_bytes_max`]: 64 MiB.
pub const TAIL_BYTES_MAX_DEFAULT: usize = 64 * 1024 * 1024;

/// How a replication log sizes its segments, its retention and its in-memory tail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplogOptions {
    /// Segment files roll over past this size, in bytes (default 16 MiB).
    pub segment_bytes_max: u64,
    /// Oldest sealed segments are deleted while the log's total bytes exceed this (default
    /// 256 MiB); never the active segment.
    pub retain_bytes_max: u64,
    /// Records kept decoded in memory (the newest ones), by estimated size
    /// ([`LogRecord::size_hint`]) (default 64 MiB), so that shipping to followers that keep up
    /// never reads a file.
    pub tail_bytes_max: usize,
    /// A leader keeps the records no majority holds yet, past `retain_bytes_max`, while they
    /// fit in this many bytes (default 1 GiB): a failover that cuts them then finds them here
    /// to save to the rollback log. Past it the oldest of them go, with a warning.
    pub unreplicated_bytes_max: u64,
}

impl Default for ReplogOptions {
    fn default() -> ReplogOptions {
        ReplogOptions {
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
            retain_bytes_max: RETAIN_BYTES_MAX_DEFAULT,
            tail_bytes_max: TAIL_BYTES_MAX_DEFAULT,
            unreplicated_bytes_max: UNREPLICATED_BYTES_MAX_DEFAULT,
        }
    }
}

/// A replication log's counters, for `INFO replication`, `/metrics` and `replikv status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReplogStats {
    /// The oldest retained lsn; `last_lsn + 1` when the log holds no record.
    pub first_lsn: Lsn,
    /// The newest lsn (the base of the log when it holds no record).
    pub last_lsn: Lsn,
    /// The epoch of the newest record (or of the base).
    pub last_epoch: Epoch,
    /// The log's bytes: segment files, headers and unwritten records included (estimated
    /// sizes for the in-memory log).
    pub bytes: u64,
    /// Segments, the active one included (virtual ones for the in-memory log).
    pub segments: u64,
    /// Segments deleted by retention since the log opened.
    pub dropped_segments: u64,
    /// Resets since the log opened.
    pub resets: u64,
}

/// One segment's accounting, kept alike for files and for the in-memory log's virtual
/// segments. The map holding it is keyed by its first lsn, `base + 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Segment {
    /// The lsn just before its first record (its header's base).
    pub(super) base: Lsn,
    /// The epoch at `base` (its header's epoch).
    pub(super) base_epoch: Epoch,
    /// Its last record's lsn, or `base` while it holds none.
    pub(super) last_lsn: Lsn,
    /// Its bytes: the file's length with buffered records (header included), or the records'
    /// estimated sizes in memory.
    pub(super) bytes: u64,
}

/// Records taken by a read, within its budget.
#[derive(Debug)]
pub(super) struct Batch {
    /// The records taken, in lsn order.
    pub(super) records: Vec<LogRecord>,
    /// Their summed estimated sizes.
    bytes: usize,
    /// The budget: more records are taken only while the sum stays within it.
    bytes_max: usize,
    /// True once a record was refused: the read is over.
    pub(super) full: bool,
}

impl Batch {
    /// An empty batch with a budget of `bytes_max`.
    fn new(bytes_max: usize) -> Batch {
        Batch { records: Vec::new(), bytes: 0, bytes_max, full: false }
    }

    /// Takes `record` if it is the first or fits the budget; says whether it did.
    pub(super) fn offer(&mut self, record: LogRecord) -> bool {
        let hint = record.size_hint();
        if !self.records.is_empty() && self.bytes.saturating_add(hint) > self.bytes_max {
            self.full = true;
            return false;
        }
        self.bytes += hint;
        self.records.push(record);
        true
    }
}

/// The durable replication log: see the module documentation.
pub struct ReplicationLog {
    /// Segment sizes, retention and tail budget.
    pub(super) options: ReplogOptions,
    /// Every segment by first lsn, oldest first; never empty; the last is where appends go.
    pub(super) segments: BTreeMap<Lsn, Segment>,
    /// The segments' summed bytes.
    pub(super) bytes: u64,
    /// The newest records, decoded, contiguous and ending at `last_lsn`. On files it holds
    /// every record not yet written out, and older ones while they fit `tail_bytes_max`; in
    /// memory it holds every retained record.
    pub(super) tail: VecDeque<LogRecord>,
    /// The tail's summed estimated sizes.
    pub(super) tail_bytes: usize,
    /// The newest lsn, or the base when the log holds no record.
    pub(super) last_lsn: Lsn,
    /// The newest record's epoch, or the base's.
    pub(super) last_epoch: Epoch,
    /// Segments deleted by retention since the log opened.
    pub(super) dropped_segments: u64,
    /// Resets since the log opened.
    pub(super) resets: u64,
    /// The lsn of the last reset (0 if none since the log opened): the log is durable there,
    /// since a reset is durable when it returns.
    pub(super) reset_lsn: Lsn,
    /// Where each epoch's run of records starts: lsn -> epoch, the first entry at the base
    /// (the lsn before the first record, with the base's epoch). One entry per epoch change
    /// within the retained log, so it is bounded by the log's records.
    pub(super) epochs: BTreeMap<Lsn, Epoch>,
    /// The segment files; `None` for the in-memory log.
    pub(super) files: Option<Files>,
    /// The first lsn of the request the newest record is a part of, when that record is not
    /// the request's last part: the log ends inside a request.
    pub(super) open_request: Option<Lsn>,
}

impl fmt::Debug for ReplicationLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicationLog")
            .field("dir", &self.files.as_ref().map(|files| files.dir()))
            .field("first_lsn", &self.first_lsn())
            .field("last_lsn", &self.last_lsn)
            .field("last_epoch", &self.last_epoch)
            .field("segments", &self.segments.len())
            .field("tail", &self.tail.len())
            .finish_non_exhaustive()
    }
}

impl ReplicationLog {
    /// Opens (creating if absent) the log in directory `dir`, recovering it as "Recovery" in
    /// the module documentation says: a torn tail of the last segment is cut off, any other
    /// damage is [`Error::Corrupt`] naming the file and byte offset.
    pub fn open(dir: &Path, options: ReplogOptions) -> Result<ReplicationLog> {
        super::recovery::open(dir, options)
    }

    /// A log kept only in memory (for the memory engine, tests and the simulator): the same
    /// behaviour without files; `write_out` hands out no fsync and retention weighs records
    /// by their estimated sizes.
    pub fn in_memory(options: ReplogOptions) -> ReplicationLog {
        let mut log = ReplicationLog::blank(options);
        log.start_segment(Segment { base: 0, base_epoch: 0, last_lsn: 0, bytes: 0 });
        log
    }

    /// A log with no segment yet, which `in_memory` and recovery fill in.
    pub(super) fn blank(options: ReplogOptions) -> ReplicationLog {
        ReplicationLog {
            options,
            segments: BTreeMap::new(),
            bytes: 0,
            tail: VecDeque::new(),
            tail_bytes: 0,
            last_lsn: 0,
            last_epoch: 0,
            dropped_segments: 0,
            resets: 0,
            reset_lsn: 0,
            epochs: BTreeMap::new(),
            files: None,
            open_request: None,
        }
    }

    /// Appends `record`, buffered in user space until `write_out`. Its lsn must be
    /// `last_lsn() + 1` and its encoding at most [`RECORD_BYTES_MAX`] bytes, else
    /// [`Error::InvalidInput`] and nothing changes.
    pub fn append(&mut self, record: LogRecord) -> Result<()> {
        if let Some(files) = &self.files {
            files.check_running()?;
        }
        let Some(next) = self.last_lsn.checked_add(1).filter(|&next| next == record.lsn) else {
            let (lsn, last) = (record.lsn, self.last_lsn);
            return Err(Error::InvalidInput(format!(
                "record lsn {lsn} does not follow the log's last lsn {last} (expected {})",
                last.wrapping_add(1)
            )));
        };
        let body = body_bytes(&record).map_err(Error::InvalidInput)?;
        if body > RECORD_BYTES_MAX {
            let lsn = record.lsn;
            return Err(Error::InvalidInput(format!(
                "record {lsn} encodes to {body} bytes, more than RECORD_BYTES_MAX ({RECORD_BYTES_MAX})"
            )));
        }
        let hint = record.size_hint();
        let weight = match self.files {
            Some(_) => (FRAME_BYTES + body) as u64,
            None => hint as u64,
        };
        let roll = self.needs_roll(weight);
        if let Some(files) = &mut self.files {
            let (&first, active) = self.segments.last_key_value().expect("a log always has a segment");
            let (segment, base_epoch) = if roll { (next, self.last_epoch) } else { (first, active.base_epoch) };
            files.append(segment, base_epoch, &record).map_err(Error::InvalidInput)?;
        }
        if roll {
            let header = if self.files.is_some() { HEADER_BYTES as u64 } else { 0 };
            let (base, base_epoch) = (self.last_lsn, self.last_epoch);
            self.start_segment(Segment { base, base_epoch, last_lsn: base, bytes: header });
        }
        let active = self.segments.values_mut().next_back().expect("a log always has a segment");
        active.last_lsn = next;
        active.bytes += weight;
        self.bytes += weight;
        self.last_lsn = next;
        self.note_epoch(next, record.epoch);
        self.open_request = record.continues().then(|| record.request_start());
        self.tail_bytes += hint;
        self.tail.push_back(record);
        self.trim_tail();
        Ok(())
    }

    /// True when a record of `weight` bytes starts a new segment: it would take the active
    /// one, which holds a record already, past `segment_bytes_max`. The file is created by
    /// the next `write_out`.
    fn needs_roll(&self, weight: u64) -> bool {
        let active = self.segments.values().next_back().expect("a log always has a segment");
        active.last_lsn > active.base && active.bytes.saturating_add(weight) > self.options.segment_bytes_max
    }

    /// Adds `segment` as the newest.
    pub(super) fn start_segment(&mut self, segment: Segment) {
        if self.segments.is_empty() {
            // The first segment (at open, before or after its records were read, or after a
            // reset): its base is where the log's epochs start. At open its records were read
            // first; a run they started in the base's epoch is the base's own.
            self.epochs.insert(segment.base, segment.base_epoch);
            let next = self.epochs.range(segment.base + 1..).next().map(|(&lsn, &epoch)| (lsn, epoch));
            if let Some((lsn, _)) = next.filter(|&(_, epoch)| epoch == segment.base_epoch) {
                self.epochs.remove(&lsn);
            }
        }
        self.bytes += segment.bytes;
        self.segments.insert(segment.base + 1, segment);
    }

    /// Hands every appended record to the operating system, rolling over to new segment
    /// files as `append` decided (each sealed segment fsynced before the next is written).
    /// Returns the bytes written and, when something written is not yet fsynced, the fsync
    /// of the active segment for the caller to run. The in-memory log returns nothing to do.
    pub fn write_out(&mut self) -> Result<WrittenOut> {
        let Some(files) = &mut self.files else {
            return Ok(WrittenOut::default());
        };
        let written = files.write_out()?;
        self.trim_tail();
        Ok(written)
    }

    /// `write_out`, then its fsync if any: every record appended so far is durable after it.
    pub fn flush(&mut self) -> Result<()> {
        match self.write_out()?.sync {
            Some(sync) => sync.sync(),
            None => Ok(()),
        }
    }

    /// The oldest retained lsn; `last_lsn() + 1` when the log holds no record.
    pub fn first_lsn(&self) -> Lsn {
        *self.segments.keys().next().expect("a log always has a segment")
    }

    /// The newest lsn: the last record's, or the base's when the log holds none.
    pub fn last_lsn(&self) -> Lsn {
        self.last_lsn
    }

    /// The epoch of the last record (or the epoch given to `reset`; 0 for a fresh log).
    pub fn last_epoch(&self) -> Epoch {
        self.last_epoch
    }

    /// The epoch of the record at `lsn` (of the base, for `first_lsn() - 1`); `None` outside
    /// the retained log.
    pub fn epoch_at(&self, lsn: Lsn) -> Option<Epoch> {
        if lsn.saturating_add(1) < self.first_lsn() || lsn > self.last_lsn {
            return None;
        }
        self.epochs.range(..=lsn).next_back().map(|(_, &epoch)| epoch)
    }

    /// The first lsn of the run of records of one epoch that holds `lsn` (the base,
    /// `first_lsn() - 1`, when the run reaches back to it); `None` outside the retained log.
    pub fn epoch_run_start(&self, lsn: Lsn) -> Option<Lsn> {
        self.epoch_at(lsn)?;
        let base = self.first_lsn() - 1;
        self.epochs.range(..=lsn).next_back().map(|(&start, _)| start.max(base))
    }

    /// The first lsn of the oldest segment from which the log's newest segments hold at most
    /// `bytes` (the active segment's first lsn if it alone holds more): retention keeping
    /// records from there on keeps at most `bytes` of them beyond its bound.
    pub fn newest_bytes_start(&self, bytes: u64) -> Lsn {
        let mut start = self.last_lsn() + 1;
        let mut sum = 0u64;
        for (&first, segment) in self.segments.iter().rev() {
            sum = sum.saturating_add(segment.bytes);
            if sum > bytes && start <= self.last_lsn() {
                break;
            }
            start = first;
        }
        start
    }

    /// Where retention keeps records from when those after `confirmed` are not known to be in
    /// every later leader's history: after `confirmed`, but no more than
    /// `unreplicated_bytes_max` of them.
    pub fn unconfirmed_from(&self, confirmed: Lsn) -> Lsn {
        (confirmed + 1).max(self.newest_bytes_start(self.options.unreplicated_bytes_max)).min(self.last_lsn() + 1)
    }

    /// Where each epoch's run of records starts, oldest first, from the base on: (lsn, epoch).
    pub fn epoch_runs(&self) -> Vec<(Lsn, Epoch)> {
        let base = self.first_lsn() - 1;
        self.epochs.iter().map(|(&lsn, &epoch)| (lsn.max(base), epoch)).collect()
    }

    /// Records from `after + 1` on, in order: at least one if any exists, then more while
    /// their summed [`LogRecord::size_hint`] stays within `bytes_max`. `Ok(None)` when
    /// `after + 1 < first_lsn()` (dropped by retention or a reset: the caller needs a
    /// snapshot); an empty batch when `after >= last_lsn()`. Records not yet written out are
    /// included. The decoded tail serves what it covers; older records are read from the
    /// segment files, where a bad record is [`Error::Corrupt`] naming its file and offset.
    pub fn read(&mut self, after: Lsn, bytes_max: usize) -> Result<Option<Vec<LogRecord>>> {
        if after >= self.last_lsn {
            return Ok(Some(Vec::new()));
        }
        let from = after + 1;
        if from < self.first_lsn() {
            return Ok(None);
        }
        let mut batch = Batch::new(bytes_max);
        let tail_first = self.tail.front().map_or(self.last_lsn.saturating_add(1), |record| record.lsn);
        if from < tail_first {
            let files = self.files.as_mut().expect("the in-memory log's tail holds every record");
            files.read(&self.segments, from, tail_first - 1, &mut batch)?;
        }
        let next = from + batch.records.len() as u64;
        if !batch.full && next >= tail_first {
            let skip = (next - tail_first) as usize;
            for record in self.tail.iter().skip(skip) {
                if !batch.offer(record.clone()) {
                    break;
                }
            }
        }
        Ok(Some(batch.records))
    }

    /// True when the log holds more than `retain_bytes_max`: the next [`Self::retain`] may
    /// delete segments.
    pub fn over_retention(&self) -> bool {
        self.bytes > self.options.retain_bytes_max
    }

    /// True when [`ReplicationLog::retain`] with `keep_from` would delete a segment now.
    pub fn would_retain_drop(&self, keep_from: Lsn) -> bool {
        let Some((&first, segment)) = self.segments.first_key_value() else { return false };
        let writable = match &self.files {
            Some(files) => first >= files.active_first_lsn(),
            None => self.segments.len() == 1,
        };
        self.over_retention() && !writable && segment.last_lsn < keep_from
    }

    /// Deletes the oldest sealed segments while the log's bytes exceed `retain_bytes_max`,
    /// but never the active segment nor one whose last lsn is `keep_from` or later (records
    /// a follower or a snapshot still needs). Returns how many it deleted. The in-memory log
    /// drops the records of its virtual segments by the same rule.
    pub fn retain(&mut self, keep_from: Lsn) -> Result<u64> {
        let mut dropped = 0;
        while self.bytes > self.options.retain_bytes_max {
            let (&first, &segment) = self.segments.first_key_value().expect("a log always has a segment");
            let writable = match &self.files {
                Some(files) => first >= files.active_first_lsn(),
                None => self.segments.len() == 1,
            };
            if writable || segment.last_lsn >= keep_from {
                break;
            }
            if let Some(files) = &mut self.files {
                files.delete_segment(first)?;
            }
            self.segments.remove(&first);
            self.bytes -= segment.bytes;
            self.dropped_segments += 1;
            dropped += 1;
        }
        let first_lsn = self.first_lsn();
        let base = first_lsn - 1;
        if let Some(base_epoch) = self.epoch_at(base) {
            self.epochs = self.epochs.split_off(&base);
            self.epochs.insert(base, base_epoch);
        }
        while self.tail.front().is_some_and(|record| record.lsn < first_lsn) {
            let record = self.tail.pop_front().expect("a front record");
            self.tail_bytes -= record.size_hint();
        }
        Ok(dropped)
    }

    /// Discards every record (deleting every segment) and makes the log continue after `lsn`
    /// in `epoch`: afterwards `first_lsn() == last_lsn() + 1 == lsn + 1`, durably before it
    /// returns. A follower calls it when it installs a snapshot taken at `lsn`.
    pub fn reset(&mut self, lsn: Lsn, epoch: Epoch) -> Result<()> {
        if lsn == Lsn::MAX {
            return Err(Error::InvalidInput(format!("cannot reset the log to lsn {lsn}: no lsn follows it")));
        }
        let base = Segment { base: lsn, base_epoch: epoch, last_lsn: lsn, bytes: 0 };
        let base = match &mut self.files {
            Some(files) => {
                files.reset(self.segments.keys().copied(), lsn, epoch)?;
                Segment { bytes: HEADER_BYTES as u64, ..base }
            }
            None => base,
        };
        self.segments.clear();
        self.epochs.clear();
        self.resets += 1;
        self.reset_lsn = lsn;
        self.bytes = 0;
        self.start_segment(base);
        self.tail.clear();
        self.tail_bytes = 0;
        self.last_lsn = lsn;
        self.last_epoch = epoch;
        self.open_request = None;
        Ok(())
    }

    /// True when [`Self::truncate_after`] can drop every record after `lsn`: they are all in
    /// the active segment, and `lsn` is not before the log's base.
    pub fn can_truncate_after(&self, lsn: Lsn) -> bool {
        let active_first = *self.segments.keys().next_back().expect("a log always has a segment");
        lsn >= self.first_lsn() - 1 && lsn + 1 >= active_first
    }

    /// Drops every record after `lsn`, durably (a follower's records that its leader's
    /// history does not hold); afterwards `last_lsn() == lsn`. It counts as a reset at `lsn`
    /// ([`Self::resets`]): a durability notice from before it names records it dropped. Only
    /// the active segment's records can be dropped ([`Self::can_truncate_after`]; else
    /// [`Error::InvalidInput`] and nothing changes): a caller that needs more resets the log.
    pub fn truncate_after(&mut self, lsn: Lsn) -> Result<()> {
        if lsn >= self.last_lsn {
            return Ok(());
        }
        if !self.can_truncate_after(lsn) {
            return Err(Error::InvalidInput(format!(
                "cannot truncate the log after lsn {lsn}: its records from {} on are not all in the active segment",
                lsn + 1
            )));
        }
        let last_epoch = self.epoch_at(lsn).expect("lsn is within the log");
        let open_request = match lsn >= self.first_lsn() {
            true => {
                let record = self.read(lsn - 1, 1)?.and_then(|r| r.into_iter().next()).expect("lsn is in the log");
                record.continues().then(|| record.request_start())
            }
            false => None,
        };
        let file_len = match &mut self.files {
            Some(files) => Some(files.truncate_after(lsn)?),
            None => None,
        };
        let mut dropped_hints = 0;
        while self.tail.back().is_some_and(|record| record.lsn > lsn) {
            let record = self.tail.pop_back().expect("a back record");
            self.tail_bytes -= record.size_hint();
            dropped_hints += record.size_hint() as u64;
        }
        let active = self.segments.values_mut().next_back().expect("a log always has a segment");
        let new_bytes = file_len.unwrap_or(active.bytes.saturating_sub(dropped_hints));
        self.bytes = self.bytes - active.bytes + new_bytes;
        active.bytes = new_bytes;
        active.last_lsn = lsn;
        self.last_lsn = lsn;
        self.last_epoch = last_epoch;
        self.epochs.retain(|&start, _| start <= lsn);
        self.open_request = open_request;
        self.resets += 1;
        self.reset_lsn = lsn;
        Ok(())
    }

    /// The first lsn of the request whose parts the log holds only some of, when it ends
    /// inside one (its later parts are still to come, or never will: see [`LogRecord`]).
    pub fn open_request(&self) -> Option<Lsn> {
        self.open_request
    }

    /// The last lsn of the newest request the log holds whole: `last_lsn()`, or just before
    /// the open request. A replica's store holds exactly the requests up to here.
    pub fn complete_lsn(&self) -> Lsn {
        self.open_request.map_or(self.last_lsn, |start| start - 1)
    }

    /// The options it was opened with.
    pub fn options(&self) -> &ReplogOptions {
        &self.options
    }

    /// How many times the log was reset since it opened, and the lsn of the last reset (0 if
    /// none): a position reported before a reset names records the reset discarded.
    pub fn resets(&self) -> (u64, Lsn) {
        (self.resets, self.reset_lsn)
    }

    /// The log's counters.
    pub fn stats(&self) -> ReplogStats {
        ReplogStats {
            first_lsn: self.first_lsn(),
            last_lsn: self.last_lsn,
            last_epoch: self.last_epoch,
            bytes: self.bytes,
            segments: self.segments.len() as u64,
            dropped_segments: self.dropped_segments,
            resets: self.resets,
        }
    }

    /// Adds a record read at open to the tail, keeping within `tail_bytes_max`.
    pub(super) fn push_recovered(&mut self, record: LogRecord) {
        self.last_lsn = record.lsn;
        self.note_epoch(record.lsn, record.epoch);
        self.open_request = record.continues().then(|| record.request_start());
        self.tail_bytes += record.size_hint();
        self.tail.push_back(record);
        self.trim_tail_to(self.last_lsn);
    }

    /// Records that the record at `lsn`, the newest, is of `epoch`.
    fn note_epoch(&mut self, lsn: Lsn, epoch: Epoch) {
        if self.epochs.last_key_value().is_none_or(|(_, &last)| last != epoch) {
            self.epochs.insert(lsn, epoch);
        }
        self.last_epoch = epoch;
    }

    /// Drops the tail's oldest written-out records while it exceeds `tail_bytes_max`; the
    /// in-memory log keeps every record.
    fn trim_tail(&mut self) {
        if let Some(written_lsn) = self.files.as_ref().map(Files::written_lsn) {
            self.trim_tail_to(written_lsn);
        }
    }

    /// Drops the tail's oldest records, up to `written_lsn` at most, while it exceeds
    /// `tail_bytes_max`.
    fn trim_tail_to(&mut self, written_lsn: Lsn) {
        while self.tail_bytes > self.options.tail_bytes_max {
            match self.tail.front() {
                Some(record) if record.lsn <= written_lsn => {
                    let record = self.tail.pop_front().expect("a front record");
                    self.tail_bytes -= record.size_hint();
                }
                _ => break,
            }
        }
    }
}
