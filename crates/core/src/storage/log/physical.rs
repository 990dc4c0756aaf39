//! The log engine's side of physical replication (`log_format = "physical"`, WAL shipping, as
//! PostgreSQL's streaming replication ships its write-ahead log): the leader's engine hands
//! over the bytes each put appended to its active segment, with where they went, and a
//! follower's engine writes those very bytes at the very same place in its own segments.
//!
//! Byte-identical segments need three things besides the bytes:
//!
//! - **The same seals.** A follower's engine never seals its active segment by size: it seals
//!   when the leader's bytes name the next segment (base + 1, offset 0), so its segments end
//!   where the leader's do; or when a logged compaction names a later active segment than its
//!   own (the leader sealed with no write after: a damaged active segment, a compaction out of
//!   output names).
//! - **The same compactions.** Compaction copies the records the keydir still points at, so
//!   its outputs depend on which puts came before it. Under physical replication no engine
//!   compacts in `maintain`: when one is due ([`LogEngine::compaction_inputs`]) the leader logs
//!   its inputs and its active segment as a record, makes the record durable, and runs it
//!   whole ([`LogEngine::compact_whole`]), and every follower runs it whole, on exactly those
//!   inputs, when it applies that record, after the same puts, so the outputs are the same
//!   bytes under the same names. Whole, and its commit waited for: a replica that crashes
//!   before the commit is durable has no put after the record in its engine either, so
//!   recovery, replaying the log, runs it again after the same puts; one whose commit is
//!   durable finds its inputs gone, and skips it. An engine that was compacting on its own
//!   finishes that compaction before it takes a part ([`LogEngine::set_physical`]).
//! - **Nothing of its own.** A follower's engine does not seal a damaged active segment, nor
//!   move the records of a damaged segment: both write records the leader never wrote.
//!
//! Every extent is checked before any of it is written: it must start where the follower's
//! active segment ends (or at 0 of the next one), and its records must decode whole, checksums
//! included. A follower whose files have left the leader's is marked so before its own
//! writes where it knows them (emptying itself with tombstones, a snapshot installed record by
//! record), or told so by [`LogEngine::append_extent`] where it does not (a repair, a record
//! of changes), and its caller writes the records through `put` instead:
//! the data stays the leader's, the files no longer are. Its engine then goes back to its
//! own seals and compactions ([`PhysicalRole::Off`]): the leader's compactions name segments
//! it does not have. That is for good, and durable: a `PHYSICAL_LEFT` file in its directory
//! ([`LogEngine::mark_physical_left`]) tells every later start, until the directory is
//! emptied.
//!
//! Recovery replays a physical record by place ([`LogEngine::replay_extent`]): a record the
//! engine holds at its place in its active segment, byte for byte, or in a sealed segment (or
//! in one compacted since), is there; the rest is written where the leader put it. Not by version: a failed script's undoing puts records back with their older versions,
//! which a replay by version would skip, leaving the undone write. An engine whose files left
//! the leader's is replayed by version, as a logical log is.
//!
//! CAVEATS
//! - A compaction runs whole, between two writes, on the thread that steps the replica: writes
//!   wait for it, and so do heartbeats and votes, so a compaction of gigabytes can outlast
//!   `election_timeout_ms` (a compaction of a logical log goes in small steps between batches).
//! - A build with another storage format must still read this one's records to read a log
//!   that holds physical records (its changes are decoded from the bytes).
//! - Files that have left the leader's never come back by themselves: a follower must start
//!   again on an empty directory, and then takes the leader's files only from the leader's log
//!   (a snapshot sends keys, not files).
//! - Compaction outputs are named after the greatest segment id removed since the engine
//!   opened, which differs between replicas only when a compaction removed every sealed segment
//!   and produced nothing; the outputs then differ in name, and the next compaction, whose
//!   inputs are not all here, counts as leaving the leader's files.
//! - The leader removes a damaged segment, once its records are moved, outside the log: its
//!   followers keep their copy, an extra file.
//! - A follower that finds damage in its own copy of a compaction input copies around it, as
//!   any compaction does: its outputs then differ from the leader's, uncounted, until repaired.

use super::engine::{LogEngine, Position, Segment};
use super::format::{decode_header, SegmentId, HEADER_BYTES};
use crate::error::{Error, Result};
use crate::replication::Extent;
use crate::storage::Record;
use bytes::Bytes;

/// A log engine's part in physical replication.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PhysicalRole {
    /// No physical replication: the engine seals, compacts and moves damaged records on its own.
    #[default]
    Off,
    /// A leader's engine: it captures every record it appends, for [`LogEngine::take_extents`],
    /// and compacts only when told ([`LogEngine::compact_whole`]).
    Lead,
    /// A follower's engine: it writes the leader's bytes ([`LogEngine::append_extent`]),
    /// compacts only when told, and writes nothing of its own in `maintain`.
    Follow,
}

/// What [`LogEngine::compact_whole`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compacted {
    /// It compacted the leader's inputs: the outputs are the leader's.
    Same,
    /// Some of the inputs are not here, and it did nothing: it compacted them already (its
    /// record replayed at recovery), or its files have left the leader's.
    Gone,
}

/// The file whose presence says that an engine's files have left the leader's for good.
pub const LEFT_FILE: &str = "PHYSICAL_LEFT";

/// Records captured beyond this many bytes are a bug of the caller (a leader that never takes
/// them): the engine stops capturing and says so, rather than grow without bound.
const CAPTURED_BYTES_MAX: usize = 256 * 1024 * 1024;

/// The engine's physical replication state.
#[derive(Debug, Default)]
pub(super) struct PhysicalState {
    /// Its part.
    pub(super) role: PhysicalRole,
    /// Records appended since the last `take_extents`, one extent each (a leader's only).
    captured: Vec<Extent>,
    /// Their bytes.
    captured_bytes: usize,
}

impl PhysicalState {
    /// Notes the record `bytes` just appended at `offset` of segment `base`, if capturing.
    pub(super) fn capture(&mut self, base: u64, offset: u64, bytes: &[u8]) {
        if self.role != PhysicalRole::Lead {
            return;
        }
        if self.captured_bytes + bytes.len() > CAPTURED_BYTES_MAX {
            tracing::error!(
                "physical replication: {} bytes of records captured and never shipped (CAPTURED_BYTES_MAX): \
                 capture stops; followers' files will leave the leader's",
                self.captured_bytes
            );
            self.role = PhysicalRole::Off;
            self.captured.clear();
            return;
        }
        self.captured_bytes += bytes.len();
        self.captured.push(Extent { segment: base, offset, bytes: Bytes::copy_from_slice(bytes) });
    }
}

impl LogEngine {
    /// Sets the engine's part in physical replication. Changing it drops what was captured.
    ///
    /// A compaction the engine started on its own ([`PhysicalRole::Off`]) is finished first:
    /// in another role only the leader's log starts and runs compactions.
    pub fn set_physical(&mut self, role: PhysicalRole) -> Result<()> {
        if role != PhysicalRole::Off {
            if let Some(mut compaction) = self.compaction.take() {
                self.check_running()?;
                let result = (|| {
                    while self.copy_next(&mut compaction)?.is_some() {}
                    self.finish_compaction(compaction)?;
                    self.wait_commit()
                })();
                self.stop_on_error(result)?;
            }
        }
        self.physical = PhysicalState { role, ..PhysicalState::default() };
        Ok(())
    }

    /// The base of the active segment.
    pub fn active_base(&self) -> u64 {
        self.active.base
    }

    /// The engine's part in physical replication.
    pub fn physical_role(&self) -> PhysicalRole {
        self.physical.role
    }

    /// The records appended since the last call, one extent per record, in order (a leading
    /// engine's; empty otherwise).
    pub fn take_extents(&mut self) -> Vec<Extent> {
        self.physical.captured_bytes = 0;
        std::mem::take(&mut self.physical.captured)
    }

    /// The segments a compaction would take now, as (base, generation), if one is due: the
    /// leader logs them, and every replica compacts them at that place in the log.
    pub fn compaction_inputs(&self) -> Option<Vec<(u64, u32)>> {
        (self.compaction.is_none() && self.compaction_due()).then(|| self.compactable().collect())
    }

    /// The sealed segments not known to be damaged, as (base, generation): a compaction's inputs.
    fn compactable(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        let sealed = self.segments.iter().filter(|(&id, s)| id != self.active && !s.damaged.get());
        sealed.map(|(id, _)| (id.base, id.gen))
    }

    /// Runs a whole compaction of the leader's `inputs` now, in one call, and waits for its
    /// commit: the leader's logged compaction, at its place in the log. `active` is the
    /// leader's active segment then: one with a lower base here was sealed by the leader with no
    /// write after it (a damaged active segment's seal, or a compaction that ran out of output
    /// names), and is sealed here first. Every replica at the same place then holds the same
    /// segments and records, so the outputs are the same bytes, under the same names.
    pub fn compact_whole(&mut self, inputs: &[(u64, u32)], active: u64) -> Result<Compacted> {
        self.check_running()?;
        let result = self.compact_whole_now(inputs, active);
        self.stop_on_error(result)
    }

    fn compact_whole_now(&mut self, inputs: &[(u64, u32)], active: u64) -> Result<Compacted> {
        self.wait_commit()?;
        while self.active.base < active && self.segments[&self.active].len() > 0 {
            self.rotate()?;
            self.wait_commit()?;
        }
        let here = |&(base, gen): &(u64, u32)| {
            let id = SegmentId { base, gen };
            id != self.active && self.segments.contains_key(&id)
        };
        let ascending = inputs.windows(2).all(|pair| pair[0] < pair[1]);
        if inputs.is_empty() || !ascending || !inputs.iter().all(here) || self.compaction.is_some() {
            return Ok(Compacted::Gone);
        }
        let inputs = inputs.iter().map(|&(base, gen)| SegmentId { base, gen }).collect();
        let mut compaction = self.start_compaction_of(inputs)?;
        while self.copy_next(&mut compaction)?.is_some() {}
        self.finish_compaction(compaction)?;
        self.wait_commit()?;
        Ok(Compacted::Same)
    }

    /// Writes `extent`, the leader's records, at its place: the end of the active segment, or
    /// the start of the next one (the active segment sealed first, where the leader's was).
    /// `Ok(Some(why))`, writing nothing, when that place is not this engine's next (its files
    /// have left the leader's); an error when the write fails.
    /// `records` are the extent's, decoded ([`decode_extent`]).
    pub fn append_extent(&mut self, extent: &Extent, records: Vec<(Bytes, Record)>) -> Result<Option<String>> {
        self.check_running()?;
        let active = self.active;
        let len = self.segments[&active].len();
        let place = match (extent.segment, extent.offset) {
            (base, offset) if base == active.base && offset == len => None,
            (base, 0) if base == active.base + 1 && len > 0 => Some(()),
            (base, offset) => {
                return Ok(Some(format!(
                    "the leader wrote at offset {offset} of segment {base}; this node's active segment is {} at {len} bytes",
                    active.base
                )))
            }
        };
        let result = self.write_extent(place.is_some(), &extent.bytes, records);
        self.stop_on_error(result).map(|()| None)
    }

    /// Writes what this engine lacks of `extent` (its `records`, decoded), as recovery replays
    /// the log over an engine that lost the tail of its active segment: records this engine
    /// holds at their place, byte for byte, are there already; the rest goes at its place, as
    /// [`LogEngine::append_extent`] puts it. A record of a segment this engine no longer has
    /// (compacted since) counts as there. `Ok(Some(why))`, writing nothing, when the extent
    /// does not meet this engine's segments: other bytes at a record's place, or the active
    /// segment ending inside a record.
    pub fn replay_extent(&mut self, extent: &Extent, records: Vec<(Bytes, Record)>) -> Result<Option<String>> {
        self.check_running()?;
        let active = self.active;
        let len = self.segments[&active].len();
        let id = SegmentId { base: extent.segment, gen: 0 };
        if extent.segment > active.base || (extent.segment == active.base && extent.offset >= len) {
            return self.append_extent(extent, records);
        }
        let mut at = extent.offset;
        let mut rest = Vec::new();
        let mut skip = 0;
        for (key, record) in records {
            let size = (HEADER_BYTES + key.len() + record.meta().value_len as usize) as u64;
            let segment = self.segments.get(&id);
            let held = segment.map_or(0, Segment::len);
            if id == active && at >= len {
                rest.push((key, record));
            } else if at.saturating_add(size) <= held {
                // Its bytes are checked in the active segment, where a crash may have cut or
                // torn them; a sealed segment was fsynced whole before it was listed.
                if let Some(segment) = segment.filter(|_| id == active) {
                    if at < segment.written && at + size > segment.written {
                        return Ok(Some(format!("segment {id}'s records do not start where the leader's do, at {at}")));
                    }
                    let theirs = &extent.bytes[(at - extent.offset) as usize..(at - extent.offset + size) as usize];
                    if segment.read(at, size)? != theirs {
                        return Ok(Some(format!("segment {id} holds other bytes than the leader's at {at}")));
                    }
                }
                skip += size as usize;
            } else if segment.is_some() {
                return Ok(Some(format!("segment {id} ends at {held}, inside the leader's record at {at}")));
            } else {
                skip += size as usize; // compacted away since
            }
            at += size;
        }
        if rest.is_empty() {
            return Ok(None);
        }
        let result = self.write_extent(false, &extent.bytes[skip..], rest);
        self.stop_on_error(result).map(|()| None)
    }

    /// True when this engine's files have left the leader's for good (the `PHYSICAL_LEFT` file
    /// is in its directory): recovery then replays the leader's records as changes.
    pub fn physical_left(&self) -> bool {
        self.dir.join(LEFT_FILE).exists()
    }

    /// Records, durably, that this engine's files have left the leader's
    /// ([`LogEngine::physical_left`]). Its directory must be emptied to take the leader's
    /// files again, which removes the file with the rest.
    pub fn mark_physical_left(&mut self) -> Result<()> {
        let path = self.dir.join(LEFT_FILE);
        let file = std::fs::File::create(&path).map_err(|e| Error::io("create", &path, e))?;
        self.fsyncs.sync_file(&file, &path)?;
        self.fsyncs.sync_dir(&self.dir)
    }

    /// Seals the active segment if `seal`, then appends `bytes` (the records `records`, checked)
    /// and indexes them as `put` would.
    fn write_extent(&mut self, seal: bool, bytes: &[u8], records: Vec<(Bytes, Record)>) -> Result<()> {
        if seal {
            self.rotate()?;
        }
        let mut at = 0;
        for (key, record) in records {
            let meta = record.meta();
            let size = HEADER_BYTES + key.len() + meta.value_len as usize;
            debug_assert!(decode_header(&bytes[at..at + HEADER_BYTES]).is_ok(), "checked by decode_records");
            let position = Position { segment: self.active, offset: self.segments[&self.active].len() };
            let segment = self.segment_mut(position.segment);
            segment.buffer.extend_from_slice(&bytes[at..at + size]);
            segment.count_live(position.offset, &key, &meta);
            self.index(key, meta, position, record.value, false);
            at += size;
        }
        Ok(())
    }
}

/// The records of `extent`, decoded and checked; an error names the leader's segment and the
/// offset of the record that failed.
pub fn decode_extent(extent: &Extent) -> Result<Vec<(Bytes, Record)>> {
    crate::storage::decode_records(&extent.bytes).map_err(|(at, why)| {
        let segment = SegmentId { base: extent.segment, gen: 0 };
        let offset = extent.offset.saturating_add(at as u64);
        Error::InvalidInput(format!(
            "physical replication: the leader's record at segment {segment} offset {offset}: {why}"
        ))
    })
}
