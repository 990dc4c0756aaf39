//! Damaged segments: noting a damaged record once, and rewriting a damaged segment, a budget
//! at a time, until it holds no live record and can be removed. The rules are in "Damage" in
//! the module documentation.

use super::engine::{LogEngine, Position, Segment};
use super::format::{record_bytes, SegmentId};
use crate::error::{Error, Result};
use crate::storage::{Meta, Record};
use bytes::Bytes;
use std::ops::Bound;

/// What visiting one key of the keydir costs a rewrite step, in bytes of its budget: the walk
/// over the keydir that finds a damaged segment's records is paid for, so that a step over
/// many keys and few records still ends (a step of 1 MiB visits 16,384 keys at most).
const REWRITE_KEY_VISIT_BYTES: u64 = 64;

/// A damaged record found by open, compaction or a rewrite, waiting for `take_damaged`.
#[derive(Debug)]
pub(super) struct Damaged {
    /// The record's key.
    pub(super) key: Bytes,
    /// Where the record is.
    pub(super) at: Position,
    /// The [`Error::Corrupt`] naming its file and offset and the check it failed.
    pub(super) error: Error,
}

/// The rewrite of a damaged segment under way: a walk over the keydir in key order.
#[derive(Debug)]
pub(super) struct Rewrite {
    /// The damaged segment whose live records move to the active segment.
    segment: SegmentId,
    /// The last key visited; the walk resumes after it.
    after: Option<Bytes>,
}

/// What one visit of the keydir found.
enum Visit {
    /// The next live record of the segment that is not known to be damaged.
    Record(Bytes, Meta, Position),
    /// No record of the segment among the keys visited, up to this one.
    Nothing(Bytes),
    /// The walk is over.
    End,
}

impl LogEngine {
    /// Marks segment `id` damaged: a record at `offset` failed `reason`, and the ones after
    /// it cannot be read in order. Its live records stay where they are, indexed.
    pub(super) fn mark_damaged(&mut self, id: SegmentId, offset: u64, reason: &str) {
        let segment = self.segment_mut(id);
        if !segment.damaged.replace(true) {
            tracing::warn!(path = %segment.path.display(), offset, reason, "damaged segment: its live records will be moved out");
        }
    }

    /// Notes that the record of `key` at `at` failed `reason`: marks its segment damaged and
    /// reports the record to `take_damaged`, once.
    pub(super) fn note_bad_record(&mut self, key: Bytes, at: Position, reason: String) {
        self.mark_damaged(at.segment, at.offset, &reason);
        let segment = self.segment_mut(at.segment);
        if segment.bad_records.insert(at.offset, key.clone()).is_some() {
            return;
        }
        tracing::warn!(path = %segment.path.display(), offset = at.offset, %reason, key = ?key, "damaged record");
        let error = Error::Corrupt { path: segment.path.clone(), offset: at.offset, reason };
        self.damage_found.push(Damaged { key, at, error });
    }

    /// Moves up to `budget_bytes` of a damaged segment's live records (and visits of the
    /// keydir) to the active segment, starting a rewrite if a segment needs one, and removes
    /// the segment when it holds no live record.
    pub(super) fn rewrite_step(&mut self, budget_bytes: u64) -> Result<()> {
        if budget_bytes == 0 {
            return Ok(());
        }
        let mut rewrite = match self.rewrite.take() {
            Some(rewrite) => rewrite,
            None => match self.next_rewrite() {
                Some(segment) => Rewrite { segment, after: None },
                None => return Ok(()),
            },
        };
        let mut spent = 0;
        while spent < budget_bytes {
            if self.movable_bytes(rewrite.segment) == 0 {
                return self.finish_rewrite(rewrite.segment);
            }
            let (visit, visited) = self.visit(&rewrite, budget_bytes - spent);
            spent += visited * REWRITE_KEY_VISIT_BYTES;
            match visit {
                Visit::Record(key, meta, at) => {
                    rewrite.after = Some(key.clone());
                    spent += self.move_record(key, meta, at)?;
                }
                Visit::Nothing(last) => rewrite.after = Some(last),
                Visit::End => return self.finish_rewrite(rewrite.segment),
            }
        }
        self.rewrite = Some(rewrite);
        Ok(())
    }

    /// A damaged segment with work to do: live records not known to be damaged to move out,
    /// or none at all (to remove). The active segment waits until it is sealed, and an input
    /// of the compaction under way until the compaction is over.
    fn next_rewrite(&self) -> Option<SegmentId> {
        let due = |(&id, segment): (&SegmentId, &Segment)| {
            let candidate = segment.damaged.get()
                && id != self.active
                && self.manifest.segments.contains_key(&id)
                && self.compaction.as_ref().is_none_or(|c| !c.reads(id));
            (candidate && (segment.live_bytes == 0 || self.movable_bytes(id) > 0)).then_some(id)
        };
        self.segments.iter().find_map(due)
    }

    /// Live bytes of segment `id` that are not known to be damaged: what a rewrite can move.
    fn movable_bytes(&self, id: SegmentId) -> u64 {
        let segment = &self.segments[&id];
        let damaged_live: u64 = (segment.bad_records.iter())
            .filter_map(|(&offset, key)| {
                let slot = self.keydir.get(key)?;
                (slot.at.position == Position { segment: id, offset })
                    .then(|| record_bytes(key.len(), slot.meta.value_len))
            })
            .sum();
        segment.live_bytes - damaged_live
    }

    /// Walks the keydir after the rewrite's last key to the next record to move, visiting
    /// keys worth `budget_bytes` at most (one at least). Returns what it found and how many
    /// keys it visited.
    fn visit(&self, rewrite: &Rewrite, budget_bytes: u64) -> (Visit, u64) {
        let from = rewrite.after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let visits_max = (budget_bytes / REWRITE_KEY_VISIT_BYTES).max(1);
        let bad = &self.segments[&rewrite.segment].bad_records;
        let mut visited = 0;
        let mut last = None;
        for (key, slot) in self.keydir.iter_from(from).take(usize::try_from(visits_max).unwrap_or(usize::MAX)) {
            visited += 1;
            let at = slot.at.position;
            if at.segment == rewrite.segment && !bad.contains_key(&at.offset) {
                return (Visit::Record(Bytes::copy_from_slice(key), slot.meta, at), visited);
            }
            last = Some(key);
        }
        match last {
            Some(key) => (Visit::Nothing(Bytes::copy_from_slice(key)), visited),
            None => (Visit::End, visited),
        }
    }

    /// Moves the record of `key` at `at` to the active segment (the same version, value and
    /// deadline: a put of the record it is), or notes it damaged if it fails its check.
    /// Returns the bytes it cost.
    fn move_record(&mut self, key: Bytes, meta: Meta, at: Position) -> Result<u64> {
        let slot = self.keydir.get(&key).expect("a visited key is indexed");
        let size = record_bytes(key.len(), meta.value_len);
        match self.read_value(&key, slot) {
            Ok(value) => {
                let value = (!meta.tombstone).then_some(value);
                self.append(key, Record { version: meta.version, value, expire_at_ms: meta.expire_at_ms })?;
            }
            Err(Error::Corrupt { reason, .. }) => self.note_bad_record(key, at, reason),
            Err(err) => return Err(err),
        }
        Ok(size)
    }

    /// Ends a rewrite's walk: removes the segment if it holds no live record, else leaves it
    /// with only its damaged records, until they are repaired (overwritten).
    fn finish_rewrite(&mut self, id: SegmentId) -> Result<()> {
        let segment = &self.segments[&id];
        if segment.live_bytes > 0 {
            let path = segment.path.display();
            tracing::warn!(path = %path, records = segment.bad_records.len(), "damaged segment keeps only its damaged records until they are repaired");
            return Ok(());
        }
        // The moved records may be only in the active segment's buffer, or written out with
        // their fsync handed to the caller: durable before the originals go.
        self.write_active()?;
        self.sync_active_now()?;
        self.record_synced()?;
        assert!(self.manifest.segments.remove(&id).is_some(), "damaged segment {id} is not in the manifest");
        self.manifest.retired.insert(id);
        // The commit: from here on, open removes the segment instead of loading it.
        self.write_manifest()?;
        self.remove_input(id)?;
        self.fsyncs.sync_dir(&self.dir)?;
        self.manifest.retired.clear();
        tracing::info!(dir = %self.dir.display(), segment = %id, "removed a rewritten damaged segment");
        Ok(())
    }
}
