//! Compaction in steps: copy the live records of every sealed segment into new segments, a
//! budget of bytes per `maintain` call, then swap the files. The steps and why a crash at any
//! point is safe are in "Compaction" in the module documentation.

use super::commit::{remove_segment_files, After, AfterCommit, Commit, SyncFile, Work};
use super::engine::{LogEngine, Position};
use super::format::{SegmentId, GEN_MAX, PART_EXT, SEGMENT_EXT};
use super::reader::{Next, RawRecord, SegmentReader};
use crate::error::Result;
use bytes::Bytes;
use std::path::PathBuf;

/// A compaction output's buffer is written out once it holds this many bytes.
const COPY_BUFFER_BYTES_MAX: usize = 1024 * 1024;

/// A compaction under way.
#[derive(Debug)]
pub(super) struct Compaction {
    /// The sealed segments being compacted (the set S), oldest first.
    inputs: Vec<SegmentId>,
    /// How many inputs are read to the end.
    done: usize,
    /// The reader over `inputs[done]`, once opened.
    reader: Option<SegmentReader>,
    /// The output segments, oldest first; the last takes the copies.
    pub(super) outputs: Vec<SegmentId>,
}

impl Compaction {
    /// True when segment `id` is one of the compaction's inputs.
    pub(super) fn reads(&self, id: SegmentId) -> bool {
        self.inputs.contains(&id)
    }
}

impl LogEngine {
    /// Copies up to `budget_bytes` of records (at least one), starting a compaction if one
    /// is due and finishing it when every input is copied.
    pub(super) fn compact_step(&mut self, budget_bytes: u64) -> Result<()> {
        // One compaction at a time: the next starts once this one's commit is done.
        self.poll_commit(false)?;
        if budget_bytes == 0 || self.committing.is_some() {
            return Ok(());
        }
        let mut compaction = match self.compaction.take() {
            Some(compaction) => compaction,
            None if self.compaction_due() => self.start_compaction()?,
            None => return Ok(()),
        };
        let mut spent = 0;
        while spent < budget_bytes {
            match self.copy_next(&mut compaction)? {
                Some(bytes) => spent += bytes,
                None => return self.finish_compaction(compaction),
            }
        }
        let output = *compaction.outputs.last().expect("a compaction has an output");
        self.bytes_written += self.segment_mut(output).write_buffer()?;
        self.compaction = Some(compaction);
        Ok(())
    }

    /// True when the dead bytes of the sealed segments not known to be damaged exceed both
    /// thresholds. Damaged segments are left to their rewrite: counting their dead bytes
    /// would start compaction after compaction that cannot reclaim them.
    pub(super) fn compaction_due(&self) -> bool {
        let sealed = self.segments.iter().filter(|(&id, s)| id != self.active && !s.damaged.get());
        let (dead, total) = sealed.fold((0, 0), |(dead, total), (_, s)| (dead + s.dead_bytes, total + s.len()));
        dead > self.options.compaction_dead_bytes_min && dead as f64 > self.options.compaction_dead_ratio * total as f64
    }

    /// Starts a compaction of every sealed segment not known to be damaged, with its first
    /// output. The outputs are named after every sealed segment, damaged ones included (they
    /// hold only dead records of the keys the outputs take), and every id removed since open.
    pub(super) fn start_compaction(&mut self) -> Result<Compaction> {
        let sealed = self.segments.iter().filter(|(&id, _)| id != self.active);
        let inputs: Vec<SegmentId> = sealed.filter(|(_, s)| !s.damaged.get()).map(|(&id, _)| id).collect();
        self.start_compaction_of(inputs)
    }

    /// Starts a compaction of `inputs` (sealed segments, ascending; physical replication's
    /// followers take the leader's), named as [`LogEngine::start_compaction`] names its outputs.
    pub(super) fn start_compaction_of(&mut self, inputs: Vec<SegmentId>) -> Result<Compaction> {
        assert!(!inputs.is_empty(), "compaction is due only with undamaged sealed segments");
        let greatest_sealed = self.segments.keys().copied().rfind(|&id| id != self.active);
        let last = greatest_sealed.max(self.removed_max).expect("there are inputs");
        assert!(last.base < self.active.base, "sealed segment {last} after active {}", self.active);
        if last.gen == GEN_MAX {
            // Names of base `last.base` are used up: seal the active segment to get a new one.
            self.rotate()?;
            return self.start_compaction_of(inputs);
        }
        let output = SegmentId { base: last.base, gen: last.gen + 1 };
        self.create_segment(output, PART_EXT)?;
        tracing::info!(dir = %self.dir.display(), inputs = inputs.len(), %output, "starting compaction");
        Ok(Compaction { inputs, done: 0, reader: None, outputs: vec![output] })
    }

    /// Reads the next input record and copies it if the keydir still points at it. Returns
    /// the bytes it cost (read: a dead record's header and key, a live record whole), or
    /// `None` when every input is read.
    pub(super) fn copy_next(&mut self, compaction: &mut Compaction) -> Result<Option<u64>> {
        loop {
            let Some(&input) = compaction.inputs.get(compaction.done) else {
                return Ok(None);
            };
            if compaction.reader.is_none() {
                compaction.reader = Some(SegmentReader::open(&self.segments[&input].path)?);
            }
            let reader = compaction.reader.as_mut().expect("opened above");
            let from = Position { segment: input, offset: reader.offset() };
            let mut record = match reader.next()? {
                Next::End => {
                    compaction.reader = None;
                    compaction.done += 1;
                    continue;
                }
                Next::Bad(bad) => {
                    // The rest of this input cannot be read in order: its live records stay
                    // where they are, indexed, and the input is kept (see "Damage").
                    self.mark_damaged(input, from.offset, &bad.reason);
                    compaction.reader = None;
                    compaction.done += 1;
                    continue;
                }
                Next::Record(record) => record,
            };
            if self.keydir.get(record.key()).is_none_or(|slot| slot.at.position != from) {
                reader.skip_value(&record)?;
                return Ok(Some(record.bytes.len() as u64));
            }
            // The whole record, value included: it is read, and copied.
            let size = record.header.record_bytes();
            if let Some(bad) = reader.read_value(&mut record)? {
                // Left where it is, still indexed, so that a get reports it until a repair
                // overwrites it; the input is kept while it is live.
                self.note_bad_record(Bytes::copy_from_slice(record.key()), from, bad.reason);
                return Ok(Some(size));
            }
            self.copy(compaction, from, record)?;
            return Ok(Some(size));
        }
    }

    /// Appends `record`, read at `from`, to the current output and points the keydir at it.
    /// A cached value stays cached: the same value, at a new position.
    fn copy(&mut self, compaction: &mut Compaction, from: Position, record: RawRecord) -> Result<()> {
        let size = record.bytes.len() as u64;
        let mut output = *compaction.outputs.last().expect("a compaction has an output");
        let output_len = self.segments[&output].len();
        // Past GEN_MAX the last output just grows beyond segment_bytes_max.
        if output_len > 0 && output_len + size > self.options.segment_bytes_max && output.gen < GEN_MAX {
            self.seal(output)?;
            output.gen += 1;
            self.create_segment(output, PART_EXT)?;
            compaction.outputs.push(output);
        }
        let segment = self.segment_mut(output);
        let to = Position { segment: output, offset: segment.len() };
        segment.buffer.extend_from_slice(&record.bytes);
        segment.count_live(to.offset, record.key(), &record.header.meta);
        if segment.buffer.len() >= COPY_BUFFER_BYTES_MAX {
            self.bytes_written += segment.write_buffer()?;
        }
        self.segment_mut(from.segment).mark_dead(size);
        let slot = self.keydir.get_mut(record.key()).expect("a copied record is indexed");
        assert_eq!(slot.at.position, from, "copied a record the keydir does not point at");
        slot.at.position = to;
        Ok(())
    }

    /// Ends a compaction: seals the last output, makes the active segment durable, commits
    /// the outputs in place of the inputs in the manifest, then renames the outputs and
    /// removes the inputs: see "Compaction" in the module documentation. The file work is a
    /// [`Commit`], which may run on the engine's executor ("Commit off the caller's thread").
    pub(super) fn finish_compaction(&mut self, compaction: Compaction) -> Result<()> {
        let last = *compaction.outputs.last().expect("a compaction has an output");
        // Written out here; fsynced by the commit.
        let last = self.write_for_seal(last)?;
        // Records the compaction skipped were replaced by newer ones, some perhaps only in the
        // active segment's buffer, or written out with their fsync handed to the caller and
        // not yet run: those must be durable before the old ones go, so the commit fsyncs the
        // active segment, always.
        // `unsynced` stays as it is: on the executor the commit's fsync comes later, so
        // a `write_out` meanwhile must still hand out the fsync of what was written here.
        self.write_active()?;
        // No commit under way (compact_step starts none while one is, and write_active waited
        // for a seal's): the plan below is of the files as they are.
        debug_assert!(self.committing.is_none(), "a compaction's commit planned while a commit is under way");
        let synced = self.synced_change();
        let (outputs, empty): (Vec<SegmentId>, Vec<SegmentId>) =
            compaction.outputs.iter().partition(|&id| self.segments[id].len() > 0);
        // An input still holding live records is damaged (those records failed their check,
        // or follow a header that did): it stays listed, and its rewrite moves them later.
        let (retired, kept): (Vec<SegmentId>, Vec<SegmentId>) =
            compaction.inputs.iter().partition(|&id| self.segments[id].live_bytes == 0);
        for input in &kept {
            // Also one whose damage no read saw: a record whose key was damaged reads as
            // another key's, dead, so its own key still points at it. The rewrite reads it
            // through the keydir and reports it under its real key.
            let segment = &self.segments[input];
            if !segment.damaged.get() {
                tracing::warn!(path = %segment.path.display(), "a compacted segment keeps live records: damaged");
                segment.damaged.set(true);
            }
        }
        for input in &retired {
            assert!(self.manifest.segments.remove(input).is_some(), "input {input} is not in the manifest");
            self.manifest.retired.insert(*input);
        }
        // Each output is sealed by the commit before the manifest: its length is final.
        let sealed_bytes = outputs.iter().map(|&output| (output, Some(self.segments[&output].len())));
        self.manifest.segments.extend(sealed_bytes);
        let manifest = self.encode_manifest()?;
        // A retired input's or empty output's hint must not be written while the commit
        // removes the files (nor after: the segment is gone).
        self.pending_hints.retain(|pending| !retired.contains(&pending.id) && !empty.contains(&pending.id));
        let published: Vec<(SegmentId, PathBuf)> =
            outputs.iter().map(|&id| (id, self.dir.join(id.file_name(SEGMENT_EXT)))).collect();
        let commit = Commit {
            dir: self.dir.clone(),
            last,
            active: SyncFile::of(&self.segments[&self.active]),
            synced,
            manifest,
            publish: published.iter().map(|(id, to)| (self.segments[id].path.clone(), to.clone())).collect(),
            empty: empty.iter().map(|&id| (id, self.segments[&id].path.clone())).collect(),
            retired: retired.iter().map(|&id| (id, self.segments[&id].path.clone())).collect(),
        };
        let after = After::Compaction(AfterCommit {
            synced,
            published,
            empty,
            retired,
            inputs: compaction.inputs.len(),
            kept: kept.len(),
            outputs: outputs.len(),
        });
        self.start_commit(Work::Compaction(commit), after, true)?;
        if self.committing.is_none() {
            // Run in place: the active segment is fsynced through everything written.
            self.unsynced = false;
        }
        Ok(())
    }

    /// Removes a retired segment and its hint file, once a rewrite moved every live record
    /// out of it. The caller fsyncs the directory.
    pub(super) fn remove_input(&mut self, input: SegmentId) -> Result<()> {
        let path = self.segments[&input].path.clone();
        let dir = self.dir.clone();
        remove_segment_files(&dir, input, &path, self)?;
        let file = self.forget_removed(input);
        self.close_removed(vec![file]);
        Ok(())
    }
}
