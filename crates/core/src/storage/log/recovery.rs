//! Opening a log engine: checking the directory against its manifest (refusing a missing,
//! changed or unaccounted-for segment, finishing a committed compaction, removing recognised
//! leftovers), loading the keydir from hint files and segment scans, cutting a torn tail off
//! the newest segment. The rules are in "Recovery" in the module documentation.

use super::engine::{LogEngine, Position, Segment};
use super::format::{decode_hint, HintEntry, SegmentId, HINT_EXT, HINT_TRAILER_BYTES, PART_EXT, SEGMENT_EXT};
use super::manifest::{read_manifest, reconcile, Found, Manifest, MANIFEST_FILE, MANIFEST_TMP_FILE};
use super::options::LogOptions;
use super::reader::{Bad, Next, RawRecord, SegmentReader};
use crate::error::{Error, Result};
use crate::storage::{Engine, Meta};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

impl LogEngine {
    /// Opens the engine in `dir`, creating the directory if it is missing, and recovers its
    /// state from the files there. Fails with [`Error::Corrupt`] on damage it must not skip,
    /// and with [`Error::Inconsistent`] naming a segment the manifest lists that is missing or
    /// not of the length it recorded when the segment was sealed, or one there that it does
    /// not account for.
    pub fn open(dir: &Path, options: LogOptions) -> Result<LogEngine> {
        options.validate()?;
        fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        let mut engine = LogEngine::empty(dir, options);
        let found = engine.list_dir()?;
        let (ids, adopted) = match read_manifest(dir)? {
            Some(manifest) => (engine.tidy_by_manifest(manifest, &found)?, false),
            None => (engine.tidy_without_manifest(&found)?, true),
        };
        // How much of the newest segment was fsynced, if another log covers the rest.
        engine.synced_last = super::synced::read(dir)?;
        engine.synced_kept = engine.synced_last.is_some();
        if engine.synced_kept && engine.options.fsync == super::options::FsyncPolicy::Never {
            // Under `never` nothing fsynced vouches for the record: the old rules stand.
            engine.drop_synced_file()?;
        }
        engine.unsynced_from = engine.synced_last.filter(|s| ids.last() == Some(&s.id)).map(|s| s.len);
        engine.load(&ids)?;
        engine.unsynced_from = None;
        if adopted {
            // The lengths found now: from here on, a sealed segment that changes is refused.
            let active = engine.active;
            let listed = engine.segments.iter().map(|(&id, s)| (id, (id != active).then(|| s.len())));
            engine.manifest.segments = listed.collect();
            engine.write_manifest()?;
        }
        // What the active segment holds may never have been fsynced (the process that wrote it
        // died before it did, or a replicating node left it to its log): the first fsync
        // asked for covers it.
        engine.unsynced = engine.segments.get(&engine.active).is_some_and(|s| s.len() > 0);
        let stats = engine.stats();
        tracing::info!(dir = %dir.display(), keys = stats.keys, segments = stats.segments, "opened log engine");
        Ok(engine)
    }

    /// Lists the segment, hint and compaction output files in the directory by segment id,
    /// after removing a leftover `MANIFEST.tmp` (a manifest write that never finished).
    fn list_dir(&mut self) -> Result<BTreeMap<SegmentId, Found>> {
        let mut found: BTreeMap<SegmentId, Found> = BTreeMap::new();
        let list_error = |e| Error::io("list", &self.dir, e);
        for entry in fs::read_dir(&self.dir).map_err(list_error)? {
            let entry = entry.map_err(list_error)?;
            let name = entry.file_name();
            if name == MANIFEST_TMP_FILE {
                let path = entry.path();
                tracing::warn!(path = %path.display(), "removing a manifest whose write never finished");
                fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
                continue;
            }
            // Files the engine did not name are not its business: leave them alone.
            let Some((id, ext)) = name.to_str().and_then(SegmentId::parse) else { continue };
            let bytes = || entry.metadata().map(|m| Some(m.len())).map_err(|e| Error::io("stat", entry.path(), e));
            match ext {
                SEGMENT_EXT => found.entry(id).or_default().segment_bytes = bytes()?,
                HINT_EXT => found.entry(id).or_default().hint = true,
                PART_EXT => found.entry(id).or_default().part_bytes = bytes()?,
                _ => {}
            }
        }
        Ok(found)
    }

    /// Makes the directory match its manifest, per [`reconcile`]: publishes the outputs of a
    /// committed compaction, removes the leftovers it recognises, or refuses, touching
    /// nothing, if a file is missing, unaccounted for, or of another length than the manifest
    /// recorded. Returns the listed segments.
    fn tidy_by_manifest(
        &mut self,
        mut manifest: Manifest,
        found: &BTreeMap<SegmentId, Found>,
    ) -> Result<Vec<SegmentId>> {
        let plan = reconcile(&manifest, found).map_err(|refusal| refusal.into_error(&self.dir))?;
        fill_unrecorded_lengths(&self.dir, &mut manifest, found);
        for &id in &plan.publish {
            let (from, to) = (self.dir.join(id.file_name(PART_EXT)), self.dir.join(id.file_name(SEGMENT_EXT)));
            tracing::warn!(path = %to.display(), "publishing an output of a compaction the crash interrupted after it committed");
            fs::rename(&from, &to).map_err(|e| Error::io("rename", &from, e))?;
        }
        for &(id, ext, why) in &plan.remove {
            let path = self.dir.join(id.file_name(ext));
            tracing::warn!(path = %path.display(), "{why}");
            fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
        }
        if !plan.publish.is_empty() || !plan.remove.is_empty() {
            self.fsyncs.sync_dir(&self.dir)?;
        }
        let ids = manifest.segments.keys().copied().collect();
        self.removed_max = manifest.retired.last().copied();
        // The retired files are gone: the next manifest need not name them.
        self.manifest = Manifest { segments: manifest.segments, retired: BTreeSet::new() };
        Ok(ids)
    }

    /// Tidies a directory without a manifest: a new one (nothing to do), or one written
    /// before the engine kept a manifest, which is adopted as the old rules read it: the
    /// outputs of an unfinished compaction and hint files without a segment are removed, and
    /// the segments present are taken as the whole. Returns them, oldest first.
    fn tidy_without_manifest(&mut self, found: &BTreeMap<SegmentId, Found>) -> Result<Vec<SegmentId>> {
        if found.is_empty() {
            return Ok(Vec::new());
        }
        tracing::warn!(
            dir = %self.dir.display(),
            "adopting a data directory without a {MANIFEST_FILE} (written before the engine kept one, or by \
             a first open a crash interrupted): the segments present are taken as the whole"
        );
        let mut leftovers = Vec::new();
        for (&id, files) in found {
            if files.part_bytes.is_some() {
                leftovers.push((id, PART_EXT));
            }
            if files.hint && files.segment_bytes.is_none() {
                leftovers.push((id, HINT_EXT));
            }
        }
        for (id, ext) in &leftovers {
            let path = self.dir.join(id.file_name(ext));
            tracing::warn!(path = %path.display(), "removing a file of an unfinished compaction");
            fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
        }
        let mut segments: Vec<SegmentId> =
            found.iter().filter(|(_, files)| files.segment_bytes.is_some()).map(|(&id, _)| id).collect();
        // An empty newest segment after another holds nothing: a seal a crash interrupted
        // after it created the next segment and before the sealed one was fsynced, whose tail
        // may be torn, which only the newest segment's may be. It goes, so that one is newest.
        if let [.., _, last] = segments[..] {
            if last.gen == 0 && found[&last].segment_bytes == Some(0) {
                let path = self.dir.join(last.file_name(SEGMENT_EXT));
                tracing::warn!(path = %path.display(), "removing the empty segment of an interrupted seal");
                fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
                leftovers.push((last, SEGMENT_EXT));
                segments.pop();
            }
        }
        if !leftovers.is_empty() {
            self.fsyncs.sync_dir(&self.dir)?;
        }
        Ok(segments)
    }

    /// Loads every segment in order, so that later records override earlier ones, and makes
    /// the newest segment active (or starts one, if there is none or the newest is a
    /// compaction output).
    fn load(&mut self, ids: &[SegmentId]) -> Result<()> {
        let (sealed, last) = match ids.split_last() {
            Some((&last, rest)) if last.gen == 0 => (rest, Some(last)),
            _ => (ids, None),
        };
        for &id in sealed {
            self.load_sealed(id)?;
        }
        if let Some(id) = last {
            self.load_active(id)?;
            self.keep_live_damage();
            return Ok(());
        }
        self.keep_live_damage();
        let active = SegmentId { base: ids.last().map_or(0, |id| id.base + 1), gen: 0 };
        self.create_segment(active, SEGMENT_EXT)?;
        self.fsyncs.sync_dir(&self.dir)?;
        self.active = active;
        Ok(())
    }

    /// Loads a sealed segment from its hint file if it has a good one, else by a strict scan.
    fn load_sealed(&mut self, id: SegmentId) -> Result<()> {
        let path = self.dir.join(id.file_name(SEGMENT_EXT));
        let file = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        let len = file.metadata().map_err(|e| Error::io("stat", &path, e))?.len();
        self.segments.insert(id, Segment::new(path, file, len, false));
        if self.options.hint_files && self.load_hint(id, len) {
            return Ok(());
        }
        self.scan(id, false)
    }

    /// Loads sealed segment `id`, of `len` bytes, from its hint file if it has a good one.
    /// Returns false, having loaded nothing, if it has none or a bad one.
    fn load_hint(&mut self, id: SegmentId, len: u64) -> bool {
        let path = self.dir.join(id.file_name(HINT_EXT));
        let bytes = read_hint(&path, len);
        let entries = match &bytes {
            Ok(None) => return false,
            Ok(Some(bytes)) => decode_hint(bytes, len),
            Err(reason) => Err(reason.clone()),
        };
        let entries = match entries {
            Ok(entries) => entries,
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "ignoring a bad hint file; scanning its segment");
                return false;
            }
        };
        for entry in entries {
            let HintEntry { offset, key, meta } = entry.expect("decode_hint checked every entry");
            // Values are not read: they are cached only when put again.
            self.load_record(id, offset, Bytes::copy_from_slice(key), meta, None);
        }
        true
    }

    /// Loads the newest segment by a scan that cuts a torn tail, and makes it active.
    fn load_active(&mut self, id: SegmentId) -> Result<()> {
        let path = self.dir.join(id.file_name(SEGMENT_EXT));
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(|e| Error::io("open", &path, e))?;
        let len = file.metadata().map_err(|e| Error::io("stat", &path, e))?.len();
        if let Some(synced) = self.unsynced_from.filter(|&synced| len < synced) {
            let reason = format!("the segment is {len} bytes, shorter than the {synced} bytes fsynced (SYNCED)");
            return Err(Error::Corrupt { path, offset: len, reason });
        }
        self.segments.insert(id, Segment::new(path, file, len, self.options.hint_files));
        self.active = id;
        // A crash between sealing this segment and starting the next leaves a hint that the
        // first append would make stale.
        let hint_path = self.dir.join(id.file_name(HINT_EXT));
        match fs::remove_file(&hint_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(Error::io("remove", &hint_path, e)),
            _ => {}
        }
        self.scan(id, true)
    }

    /// Of the damaged records found while loading, keeps for `take_damaged` those the keydir
    /// still points at: a damaged record that a later one replaced is not needed, though its
    /// segment stays marked damaged (and is rewritten).
    fn keep_live_damage(&mut self) {
        let keydir = &self.keydir;
        self.damage_found.retain(|found| keydir.get(&found.key).is_some_and(|slot| slot.at.position == found.at));
    }

    /// Indexes every record of segment `id`, caching the values that fit. `tolerant` (the
    /// newest segment only) cuts a torn tail; any other bad record is [`Error::Corrupt`].
    fn scan(&mut self, id: SegmentId, tolerant: bool) -> Result<()> {
        let mut reader = SegmentReader::open(&self.segments[&id].path)?;
        loop {
            let offset = reader.offset();
            let bad = match reader.next()? {
                Next::End => return Ok(()),
                Next::Bad(bad) => bad,
                Next::Record(record) => match self.check_and_maybe_cache(&mut reader, &record)? {
                    // Not indexed, even in a sealed segment whose header vouches for the
                    // length: the key is covered by the body's checksum only, so a record
                    // that fails it may name another key (and hide or kill a good record).
                    (_, Some(bad)) => bad,
                    (value, None) => {
                        let key = Bytes::copy_from_slice(record.key());
                        self.load_record(id, offset, key, record.header.meta, value);
                        continue;
                    }
                },
            };
            // Past the length the SYNCED file records, the newest segment was never fsynced:
            // whatever follows a bad record there, another log holds it. Before it, a torn
            // tail is fsynced data lost.
            match self.unsynced_from.filter(|_| tolerant) {
                Some(from) if offset >= from => {
                    let reason = format!("{}, past the {from} bytes fsynced (SYNCED)", bad.reason);
                    return self.cut_torn_tail(id, offset, &reason);
                }
                Some(_) => {}
                None if tolerant && bad.torn => return self.cut_torn_tail(id, offset, &bad.reason),
                None => {}
            }
            let path = reader.path().to_path_buf();
            return Err(Error::Corrupt { path, offset, reason: bad.reason });
        }
    }

    /// Reads `record`'s value through its checksum, and keeps it, to cache, if it is a value
    /// that fits the cache now. Returns the value kept and what is bad about the record.
    fn check_and_maybe_cache(
        &self,
        reader: &mut SegmentReader,
        record: &RawRecord,
    ) -> Result<(Option<Bytes>, Option<Bad>)> {
        let meta = &record.header.meta;
        if meta.tombstone || !self.cache.fits(meta.value_len as usize) {
            return Ok((None, reader.check_value(record)?));
        }
        let (value, bad) = reader.take_value(record)?;
        Ok((Some(Bytes::from(value)), bad))
    }

    /// Indexes the record of `key` found at `offset` in segment `id` while loading, caching
    /// its `value` if one was read and it fits.
    fn load_record(&mut self, id: SegmentId, offset: u64, key: Bytes, meta: Meta, value: Option<Bytes>) {
        self.segment_mut(id).count_live(offset, &key, &meta);
        self.index(key, meta, Position { segment: id, offset }, value, true);
    }

    /// Truncates the active segment at `offset`, where an interrupted append begins.
    fn cut_torn_tail(&mut self, id: SegmentId, offset: u64, reason: &str) -> Result<()> {
        let segment = self.segments.get_mut(&id).expect("cutting an open segment");
        tracing::warn!(
            path = %segment.path.display(), offset, reason,
            "cutting a torn tail: an append the crash interrupted"
        );
        segment.file.set_len(offset).map_err(|e| Error::io("truncate", &segment.path, e))?;
        self.fsyncs.sync_file(&segment.file, &segment.path)?;
        segment.written = offset;
        segment.writeback_from = segment.writeback_from.min(offset);
        Ok(())
    }
}

/// Gives each sealed segment a version-1 manifest listed without its length the length found
/// on disk (`reconcile` made sure each has its `.seg` or `.compacting` file), with one warning:
/// those are not checked at this open, and the next manifest written records them.
fn fill_unrecorded_lengths(dir: &Path, manifest: &mut Manifest, found: &BTreeMap<SegmentId, Found>) {
    let active = manifest.active();
    let mut filled = 0;
    for (&id, length) in manifest.segments.iter_mut() {
        if id == active || length.is_some() {
            continue;
        }
        let files = found.get(&id).copied().unwrap_or_default();
        *length = Some(files.segment_bytes.or(files.part_bytes).expect("reconcile found every listed segment"));
        filled += 1;
    }
    if filled > 0 {
        tracing::warn!(
            path = %dir.join(MANIFEST_FILE).display(), segments = filled,
            "the manifest is version 1, which records no segment lengths: the sealed segments' lengths are \
             taken as found, unchecked this once; the next manifest written (at the next seal or compaction) \
             records them"
        );
    }
}

/// The bytes of the hint file at `path` for a segment of `segment_bytes` bytes: `None` if
/// there is none, an error saying why if it cannot be read.
fn read_hint(path: &Path, segment_bytes: u64) -> Result<Option<Vec<u8>>, String> {
    let hint_bytes = match fs::metadata(path) {
        Ok(metadata) => metadata.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("stat: {e}")),
    };
    // An entry is never longer than its record, so a good hint is never much longer than its
    // segment: do not read a damaged length's worth of memory.
    if hint_bytes > segment_bytes + HINT_TRAILER_BYTES as u64 {
        return Err(format!("{hint_bytes} bytes is longer than its {segment_bytes}-byte segment"));
    }
    fs::read(path).map(Some).map_err(|e| format!("read: {e}"))
}
