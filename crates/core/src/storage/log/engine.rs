//! The log engine's state and its write and read paths: put, get, flush, sealing a segment.

use super::cache::CacheBudget;
use super::commit::{After, Committing, Executor, SealCommit, SealedFiles, SyncFile, SyncedChange, Work};
use super::compaction::Compaction;
use super::damage::{Damaged, Rewrite};
use super::format::{
    decode_header, encode_hint_entry, encode_hint_trailer, encode_record, record_bytes, HeaderError, SegmentId,
    HEADER_BYTES, HINT_EXT, SEGMENT_EXT,
};
use super::manifest::Manifest;
use super::options::LogOptions;
use super::physical::PhysicalRole;
use crate::error::{Error, Result};
use crate::storage::{
    Engine, EngineStats, Flushed, FsyncGate, Keydir, Meta, Record, Slot, SyncHandle, WrittenOut, KEY_BYTES_MAX,
    VALUE_BYTES_MAX,
};
use crate::version::Timestamp;
use bytes::Bytes;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A write buffer keeps at most this much capacity once written out, in bytes, so that one
/// large batch does not pin its memory for good.
const BUFFER_KEPT_BYTES: usize = 1024 * 1024;

/// The error number of EIO on Linux, which `fail_next_fsync` imitates.
const EIO: i32 = 5;

/// Once this many bytes of a segment are written and not yet handed to the kernel's
/// writeback, the engine starts their writeback (see "Write-behind" in the module docs), so
/// that the fsync which seals a segment waits for about this much, never for a whole segment.
pub(super) const WRITE_BEHIND_BYTES: u64 = 1024 * 1024;

/// Where a record lives: its segment and its byte offset there. Its length follows from the
/// key and the [`Meta`] beside it in the keydir.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Position {
    /// The segment holding the record.
    pub(super) segment: SegmentId,
    /// The record's first byte in that segment.
    pub(super) offset: u64,
}

/// Where the engine finds a key's newest record: always on disk, and in memory too if its
/// value is cached. The keydir's location type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Location {
    /// The record's segment and offset.
    pub(super) position: Position,
    /// The record's value, if the value cache holds it (never for a tombstone).
    pub(super) cached: Option<Bytes>,
}

/// One open segment file and its accounting.
#[derive(Debug)]
pub(super) struct Segment {
    /// The file's path (a compaction output's changes when it is published).
    pub(super) path: PathBuf,
    /// The open file, read with `pread`; shared with the sync handles `write_out` gives out.
    pub(super) file: Arc<File>,
    /// Bytes in the file; records appended after this are still in `buffer`.
    pub(super) written: u64,
    /// Bytes of the file whose writeback the engine has started (or found on disk at open).
    pub(super) writeback_from: u64,
    /// Encoded records appended but not yet written (writable segments only).
    pub(super) buffer: Vec<u8>,
    /// Hint entries of every record in the segment, while it is writable and hints are on.
    pub(super) hint: Option<Vec<u8>>,
    /// Bytes of records the keydir points at.
    pub(super) live_bytes: u64,
    /// Bytes of records newer records replaced (or compaction copied away).
    pub(super) dead_bytes: u64,
    /// True once a record in the segment failed a check (see "Damage" in the module docs): a
    /// `Cell` because `get`, which takes `&self` through the [`Engine`] trait, finds damage
    /// too, and must mark it without a `&mut` borrow of the whole engine.
    pub(super) damaged: Cell<bool>,
    /// The damaged records found in the segment and already reported, by offset, with their
    /// keys: reported once, and left where they are by the rewrite.
    pub(super) bad_records: BTreeMap<u64, Bytes>,
}

impl Segment {
    /// A segment over `file`, which holds `written` bytes; `hint` starts a hint buffer.
    pub(super) fn new(path: PathBuf, file: File, written: u64, hint: bool) -> Segment {
        let hint = hint.then(Vec::new);
        let file = Arc::new(file);
        Segment {
            path,
            file,
            written,
            writeback_from: written,
            buffer: Vec::new(),
            hint,
            live_bytes: 0,
            dead_bytes: 0,
            damaged: Cell::new(false),
            bad_records: BTreeMap::new(),
        }
    }

    /// The segment's length in bytes, buffered records included.
    pub(super) fn len(&self) -> u64 {
        self.written + self.buffer.len() as u64
    }

    /// Counts the record of `key` at `offset` as live and adds it to the hint.
    pub(super) fn count_live(&mut self, offset: u64, key: &[u8], meta: &Meta) {
        self.live_bytes += record_bytes(key.len(), meta.value_len);
        if let Some(hint) = &mut self.hint {
            encode_hint_entry(offset, key, meta, hint);
        }
    }

    /// Moves `size` bytes from live to dead.
    pub(super) fn mark_dead(&mut self, size: u64) {
        assert!(self.live_bytes >= size, "{}: {size} dead of {} live", self.path.display(), self.live_bytes);
        self.live_bytes -= size;
        self.dead_bytes += size;
    }

    /// Writes the buffer to the file (no fsync), returning the bytes written.
    pub(super) fn write_buffer(&mut self) -> Result<u64> {
        if self.buffer.is_empty() {
            return Ok(0);
        }
        self.file.write_all_at(&self.buffer, self.written).map_err(|e| Error::io("write", &self.path, e))?;
        let bytes = self.buffer.len() as u64;
        self.written += bytes;
        self.buffer.clear();
        self.buffer.shrink_to(BUFFER_KEPT_BYTES);
        if self.written.saturating_sub(self.writeback_from) >= WRITE_BEHIND_BYTES {
            start_writeback(&self.file, &self.path, self.writeback_from, self.written);
            self.writeback_from = self.written;
        }
        Ok(bytes)
    }

    /// The `size` bytes at `offset`, from the buffer or the file. Records never straddle the
    /// two, because the buffer is written whole.
    pub(super) fn read(&self, offset: u64, size: u64) -> Result<Vec<u8>> {
        assert!(offset + size <= self.len(), "record {offset}+{size} past {}", self.len());
        if offset >= self.written {
            let at = (offset - self.written) as usize;
            return Ok(self.buffer[at..at + size as usize].to_vec());
        }
        assert!(offset + size <= self.written, "record {offset}+{size} straddles the buffer");
        let mut bytes = vec![0; size as usize];
        self.file.read_exact_at(&mut bytes, offset).map_err(|e| Error::io("read", &self.path, e))?;
        Ok(bytes)
    }
}

/// Asks the kernel to start writing `file`'s bytes `from..to` to the disk, without waiting for
/// them (Linux `sync_file_range` with `SYNC_FILE_RANGE_WRITE`; it blocks only while the
/// device's request queue is full): write-behind, so that a later fsync
/// finds them written already. It promises nothing about durability, and reports nothing an
/// fsync would not: a failure is logged (the fsync that matters reports its own) and the
/// write goes on.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, path: &Path, from: u64, to: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(from), i64::try_from(to - from)) else {
        return;
    };
    // SAFETY: the descriptor is open for the call (`file` is borrowed), and the call reads no
    // memory of this process.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
    // Once per process: a file system that refuses the call refuses it every MiB.
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if rc != 0 && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        let error = io::Error::last_os_error();
        tracing::warn!(path = %path.display(), from, to, "could not start writeback (not logged again): {error}");
    }
}

/// Elsewhere write-behind is left to the kernel's own schedule.
#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _path: &Path, _from: u64, _to: u64) {}

/// A hint file being written between batches.
#[derive(Debug)]
pub(super) struct PendingHint {
    /// The sealed segment it describes.
    pub(super) id: SegmentId,
    /// The whole file, trailer included.
    pub(super) bytes: Vec<u8>,
    /// Bytes of it written so far.
    pub(super) written: usize,
}

/// Counts fsyncs, runs them through the engine's gate, and injects the test hook's failure.
#[derive(Debug, Default)]
pub(super) struct Fsyncs {
    /// fsync calls since the engine opened.
    pub(super) count: u64,
    /// The next fsync fails as EIO would.
    pub(super) fail_next: bool,
    /// Shared with every `SyncHandle` the engine hands out.
    pub(super) gate: Arc<FsyncGate>,
    /// Every path fsynced, in order, so that tests can check which files were.
    #[cfg(test)]
    pub(super) paths: Vec<PathBuf>,
}

impl Fsyncs {
    /// fdatasync on `file`: its data and the length needed to read it back.
    pub(super) fn sync_file(&mut self, file: &File, path: &Path) -> Result<()> {
        self.sync(path, || file.sync_data())
    }

    /// fsync on directory `dir`, so that files created, renamed or removed in it stay so.
    pub(super) fn sync_dir(&mut self, dir: &Path) -> Result<()> {
        let file = File::open(dir).map_err(|e| Error::io("open", dir, e))?;
        self.sync(dir, || file.sync_all())
    }

    /// Runs one fsync `call`, or fails it if the test hook asked.
    fn sync(&mut self, path: &Path, call: impl FnOnce() -> io::Result<()>) -> Result<()> {
        self.count += 1;
        #[cfg(test)]
        self.paths.push(path.to_path_buf());
        let fail = std::mem::take(&mut self.fail_next);
        self.gate.run(path, || if fail { Err(io::Error::from_raw_os_error(EIO)) } else { call() })
    }
}

/// The log-structured [`Engine`]: see the module documentation. Dropping it writes nothing:
/// records put since the last `flush` are lost, as in a crash.
pub struct LogEngine {
    /// The directory holding the segment and hint files.
    pub(super) dir: PathBuf,
    /// How the engine writes, syncs and compacts.
    pub(super) options: LogOptions,
    /// Every key's newest record.
    pub(super) keydir: Keydir<Location>,
    /// The bytes of the values cached in the keydir.
    pub(super) cache: CacheBudget,
    /// Every segment file, oldest first.
    pub(super) segments: BTreeMap<SegmentId, Segment>,
    /// The segment puts append to: the greatest base, generation 0.
    pub(super) active: SegmentId,
    /// The segments the manifest on disk lists (the published ones: not the outputs of a
    /// compaction under way), and the inputs of a finished compaction not yet removed. While
    /// a commit is under way on the executor, what its manifest will list once written.
    pub(super) manifest: Manifest,
    /// The compaction under way, if any.
    pub(super) compaction: Option<Compaction>,
    /// The rewrite of a damaged segment under way, if any.
    pub(super) rewrite: Option<Rewrite>,
    /// Damaged records found by open, compaction or a rewrite, not yet taken by
    /// `take_damaged`.
    pub(super) damage_found: Vec<Damaged>,
    /// The greatest segment id removed since the engine opened (or retired by the manifest it
    /// opened): new compaction outputs are named above it, so that no id is reused.
    pub(super) removed_max: Option<SegmentId>,
    /// Hint files of segments sealed by `rotate`, written by `maintain` between batches so
    /// that a rotation never waits for one.
    pub(super) pending_hints: Vec<PendingHint>,
    /// fsync calls and the test hook.
    pub(super) fsyncs: Fsyncs,
    /// A commit (a compaction's or a seal's) under way on the executor.
    pub(super) committing: Option<Committing>,
    /// Runs commits and closes removed files off the caller's thread, if the owner gave one.
    pub(super) executor: Option<Arc<dyn Executor>>,
    /// Bytes written to files since the engine opened.
    pub(super) bytes_written: u64,
    /// Compactions finished since the engine opened.
    pub(super) compactions: u64,
    /// `now_ms` of the last fsync `flush` made.
    pub(super) last_sync_ms: u64,
    /// True when the active segment has bytes written since its last fsync.
    pub(super) unsynced: bool,
    /// The `SYNCED` file is kept ([`super::synced`]): another log makes this engine's writes
    /// durable, and the active segment's fsynced length is recorded at each fsync asked for.
    pub(super) synced_kept: bool,
    /// The last record written to the `SYNCED` file (or read from it at open).
    pub(super) synced_last: Option<super::synced::Synced>,
    /// While opening: where the newest segment's unsynced part begins, per the `SYNCED` file.
    pub(super) unsynced_from: Option<u64>,
    /// Why the engine stopped, after a failed write or fsync.
    pub(super) stopped: Option<String>,
    /// Its part in physical replication, and the records it captured for the leader to ship.
    pub(super) physical: super::physical::PhysicalState,
    /// A temporary directory the engine lives in, removed after the files close (tests only).
    #[cfg(test)]
    pub(super) temp_dir: Option<tempfile::TempDir>,
    /// Called with the directory and the step's name at each step of a seal or a compaction's
    /// publish where a crash may stop the engine, so that tests can copy the disk it leaves.
    #[cfg(test)]
    pub(super) at_step: Option<StepHook>,
}

/// A test's hook on the steps of sealing and publishing.
#[cfg(test)]
pub(super) type StepHook = Box<dyn FnMut(&Path, &'static str) + Send>;

impl Drop for LogEngine {
    /// Waits for a commit under way: its job must not change the files after the engine is
    /// gone (a node reopening the directory, a test removing it).
    fn drop(&mut self) {
        if let Some(committing) = self.committing.take() {
            let _ = committing.result.recv();
        }
    }
}

impl fmt::Debug for LogEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogEngine")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .field("active", &self.active)
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

impl LogEngine {
    /// An engine over `dir` with nothing loaded yet.
    pub(super) fn empty(dir: &Path, options: LogOptions) -> LogEngine {
        LogEngine {
            dir: dir.to_path_buf(),
            options,
            keydir: Keydir::default(),
            cache: CacheBudget::new(options.value_cache_bytes_max),
            segments: BTreeMap::new(),
            active: SegmentId { base: 0, gen: 0 },
            manifest: Manifest::default(),
            compaction: None,
            rewrite: None,
            damage_found: Vec::new(),
            removed_max: None,
            pending_hints: Vec::new(),
            fsyncs: Fsyncs::default(),
            committing: None,
            executor: None,
            bytes_written: 0,
            compactions: 0,
            last_sync_ms: 0,
            unsynced: false,
            synced_kept: false,
            synced_last: None,
            unsynced_from: None,
            stopped: None,
            physical: super::physical::PhysicalState::default(),
            #[cfg(test)]
            temp_dir: None,
            #[cfg(test)]
            at_step: None,
        }
    }

    /// Gives the engine an executor for its commits (a compaction's, and a seal's where
    /// another log makes the writes durable) and for closing removed files, so that the
    /// caller's thread goes on with puts and gets meanwhile: see "Commit off the caller's
    /// thread" in the module docs. Without one they run inside the call (`maintain`, `put`).
    pub fn set_executor(&mut self, executor: Arc<dyn Executor>) {
        self.executor = Some(executor);
    }

    /// An engine in a fresh temporary directory that is removed when the engine drops.
    #[cfg(test)]
    pub(crate) fn temporary(options: LogOptions) -> LogEngine {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut engine = LogEngine::open(dir.path(), options).expect("open in temporary directory");
        engine.temp_dir = Some(dir);
        engine
    }

    /// Test hook: makes the next fsync fail as a disk returning EIO would, which stops the
    /// engine for good.
    pub fn fail_next_fsync(&mut self) {
        self.fsyncs.fail_next = true;
    }

    /// The directory holding the engine's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Marks the end of a step of a seal or a publish, where a crash may stop the engine:
    /// tests copy the directory here. Does nothing outside tests.
    pub(super) fn step_done(&mut self, step: &'static str) {
        #[cfg(test)]
        if let Some(hook) = &mut self.at_step {
            hook(&self.dir, step);
        }
        #[cfg(not(test))]
        let _ = step;
    }

    /// Refuses the call if an earlier write or fsync failed.
    pub(super) fn check_running(&self) -> Result<()> {
        match self.stopped.clone().or_else(|| self.fsyncs.gate.failure()) {
            Some(why) => Err(Error::Stopped(why)),
            None => Ok(()),
        }
    }

    /// Stops the engine for good if `result` is a failure other than bad input: the disk's
    /// state is unknown after it.
    pub(super) fn stop_on_error<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(err) = &result {
            if err.is_fatal() && self.stopped.is_none() {
                tracing::error!(dir = %self.dir.display(), %err, "log engine stopped");
                self.stopped = Some(err.to_string());
            }
        }
        result
    }

    /// Points `key` at its newest record, at `position` and already counted live in its
    /// segment, and caches the record's `value` if it fits. The record it replaces becomes
    /// dead, and its cached value leaves the cache. A key and value from a client are copied
    /// before they are kept: they may be slices of a larger buffer (a connection's read
    /// buffer) that a long-lived reference would keep alive whole; `owned` ones, read from a
    /// file into buffers of their own, are kept as they are.
    pub(super) fn index(&mut self, key: Bytes, meta: Meta, position: Position, value: Option<Bytes>, owned: bool) {
        let keep = |value: Bytes| if owned { value } else { Bytes::copy_from_slice(&value) };
        let (cached, refused) = match value {
            Some(value) if self.cache.admit(value.len()) => (Some(keep(value)), None),
            value => (None, value),
        };
        let Some(old) = self.keydir.insert(key.clone(), meta, Location { position, cached }) else {
            return;
        };
        let size = record_bytes(key.len(), old.meta.value_len);
        self.segment_mut(old.at.position.segment).mark_dead(size);
        let Some(freed) = old.at.cached else {
            return;
        };
        self.cache.release(freed.len());
        // A value that fits only once the one it replaces has left (a full cache rewriting a
        // cached key) is cached now, at the cost of a second lookup.
        if let Some(value) = refused.filter(|value| self.cache.admit(value.len())) {
            self.keydir.get_mut(&key).expect("indexed above").at.cached = Some(keep(value));
        }
    }

    /// The open segment `id`, which the caller knows exists.
    pub(super) fn segment_mut(&mut self, id: SegmentId) -> &mut Segment {
        self.segments.get_mut(&id).unwrap_or_else(|| panic!("segment {id} is not open"))
    }

    /// Appends a record to the active segment's buffer, sealing it first if it is full.
    pub(super) fn append(&mut self, key: Bytes, record: Record) -> Result<()> {
        let meta = record.meta();
        let size = record_bytes(key.len(), meta.value_len);
        let active_len = self.segment_mut(self.active).len();
        if active_len > 0 && active_len + size > self.options.segment_bytes_max {
            self.rotate()?;
        }
        let at = Position { segment: self.active, offset: self.segment_mut(self.active).len() };
        let segment = self.segments.get_mut(&at.segment).expect("the active segment is open");
        let start = segment.buffer.len();
        encode_record(&key, &meta, record.value.as_deref().unwrap_or_default(), &mut segment.buffer);
        self.physical.capture(at.segment.base, at.offset, &segment.buffer[start..]);
        segment.count_live(at.offset, &key, &meta);
        self.index(key, meta, at, record.value, false);
        Ok(())
    }

    /// Seals the active segment if a read found damage in it: sealed, it is rewritten like any
    /// damaged segment, whereas left active, the next open's scan of the newest segment would
    /// refuse it (a bad record with more after it is no torn tail), however quiet the node.
    fn seal_damaged_active(&mut self) -> Result<()> {
        let active = &self.segments[&self.active];
        if active.damaged.get() && active.len() > 0 {
            tracing::warn!(path = %active.path.display(), "sealing the active segment: a read found damage in it");
            self.rotate()?;
        }
        Ok(())
    }

    /// Reads and checks the value of `key`'s record at `slot`.
    pub(super) fn read_value(&self, key: &[u8], slot: &Slot<Location>) -> Result<Bytes> {
        let at = slot.at.position;
        let segment = &self.segments[&at.segment];
        let bytes = segment.read(at.offset, record_bytes(key.len(), slot.meta.value_len))?;
        let corrupt =
            |reason: &str| Error::Corrupt { path: segment.path.clone(), offset: at.offset, reason: reason.to_string() };
        let header = match decode_header(&bytes[..HEADER_BYTES]) {
            Ok(header) => header,
            Err(HeaderError::Checksum) => return Err(corrupt("header checksum mismatch")),
            Err(HeaderError::Invalid(reason)) => return Err(corrupt(&reason)),
        };
        let body = &bytes[HEADER_BYTES..];
        if header.meta != slot.meta || header.key_len as usize != key.len() || &body[..key.len()] != key {
            return Err(corrupt("record does not match the index"));
        }
        if crc32c::crc32c(body) != header.body_crc {
            return Err(corrupt("body checksum mismatch"));
        }
        Ok(Bytes::from(bytes).slice(HEADER_BYTES + key.len()..))
    }

    /// Writes and fsyncs the active segment (not under `fsync = never`), then records its
    /// length in the `SYNCED` file if this engine keeps one.
    fn sync_and_record(&mut self, now_ms: u64) -> Result<()> {
        self.write_active()?;
        if self.options.fsync == super::options::FsyncPolicy::Never {
            return Ok(());
        }
        if self.sync_active()? {
            self.last_sync_ms = now_ms;
        }
        self.record_synced()
    }

    /// Records the active segment's length as fsynced, in the `SYNCED` file, if this engine
    /// keeps one and the record changed. The caller has fsynced the segment.
    pub(super) fn record_synced(&mut self) -> Result<()> {
        self.wait_commit()?;
        let synced = match self.synced_change() {
            SyncedChange::Keep => return Ok(()),
            SyncedChange::Drop => return self.drop_synced_file(),
            SyncedChange::Write(synced) => synced,
        };
        let fsyncs = &mut self.fsyncs;
        let created = super::synced::write(&self.dir, synced, |file, path| fsyncs.sync_file(file, path))?;
        if created {
            self.fsyncs.sync_dir(&self.dir)?;
        }
        self.synced_last = Some(synced);
        Ok(())
    }

    /// What recording the active segment's length as fsynced changes in the `SYNCED` file.
    pub(super) fn synced_change(&self) -> SyncedChange {
        if !self.synced_kept {
            return SyncedChange::Keep;
        }
        if self.options.fsync == super::options::FsyncPolicy::Never {
            // Nothing is fsynced when asked: no length can be vouched for.
            return SyncedChange::Drop;
        }
        let synced = super::synced::Synced { id: self.active, len: self.segments[&self.active].len() };
        match self.synced_last == Some(synced) {
            true => SyncedChange::Keep,
            false => SyncedChange::Write(synced),
        }
    }

    /// Stops keeping the `SYNCED` file, removing it.
    pub(super) fn drop_synced_file(&mut self) -> Result<()> {
        self.wait_commit()?;
        self.synced_kept = false;
        self.synced_last = None;
        if super::synced::remove(&self.dir)? {
            self.fsyncs.sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Seals the active segment and starts the next: see "Writes" in the module docs.
    pub(super) fn rotate(&mut self) -> Result<()> {
        // A commit under way fsyncs the active segment and records its length.
        self.wait_commit()?;
        let sealed = self.active;
        // Written out here; fsynced by the seal's commit.
        self.bytes_written += self.segment_mut(sealed).write_buffer()?;
        if let Some(hint) = self.take_hint(sealed) {
            self.pending_hints.push(PendingHint { id: sealed, bytes: hint, written: 0 });
        }
        let next = SegmentId { base: sealed.base + 1, gen: 0 };
        self.create_segment(next, SEGMENT_EXT)?;
        self.active = next;
        self.unsynced = false;
        // Whole once the commit's fsync ran: its length is final, and the manifest records it.
        let sealed_bytes = self.segments[&sealed].len();
        let was = self.manifest.segments.insert(sealed, Some(sealed_bytes));
        assert_eq!(was, Some(None), "sealed segment {sealed} was not listed as the active one");
        self.manifest.segments.insert(next, None);
        debug_assert!(self.committing.is_none(), "a seal planned while a commit is under way");
        let seal = SealCommit {
            dir: self.dir.clone(),
            sealed: SyncFile::of(&self.segments[&sealed]),
            manifest: self.encode_manifest()?,
            // The new active segment is empty, and its name durable once the commit is done.
            synced: self.synced_change(),
        };
        // On a thread only where another log makes the writes durable: an engine that is its
        // own write-ahead log must fsync the next batch's records, in the next segment, which
        // it may not write before the manifest lists it, so it would wait for the seal anyway.
        let background = self.synced_kept;
        let synced = seal.synced;
        self.start_commit(Work::Seal(seal), After::Seal(synced), background)
    }

    /// Writes and fsyncs segment `id`, then writes and fsyncs its hint file. The caller
    /// fsyncs the directory.
    pub(super) fn seal(&mut self, id: SegmentId) -> Result<()> {
        let sealed = self.write_for_seal(id)?;
        self.bytes_written += sealed.run(self)?;
        Ok(())
    }

    /// Writes segment `id`'s last records out and takes its hint: what sealing it fsyncs and
    /// writes.
    pub(super) fn write_for_seal(&mut self, id: SegmentId) -> Result<SealedFiles> {
        self.bytes_written += self.segment_mut(id).write_buffer()?;
        let hint = self.take_hint(id).map(|hint| (self.dir.join(id.file_name(HINT_EXT)), hint));
        Ok(SealedFiles { segment: SyncFile::of(&self.segments[&id]), hint })
    }

    /// Segment `id`'s finished hint file (trailer included), if it keeps one.
    pub(super) fn take_hint(&mut self, id: SegmentId) -> Option<Vec<u8>> {
        let segment = self.segments.get_mut(&id).expect("an open segment");
        let mut hint = segment.hint.take()?;
        encode_hint_trailer(segment.written, &mut hint);
        Some(hint)
    }

    /// Writes up to `budget_bytes` of the pending hint files, oldest first; returns the bytes
    /// written. A hint is not fsynced: open trusts a hint only whole and checked, and scans
    /// the segment otherwise, so a hint a crash cut short costs time, never data. A hint whose
    /// segment compaction has removed meanwhile is dropped.
    pub(super) fn write_pending_hints(&mut self, budget_bytes: u64) -> Result<u64> {
        self.poll_commit(false)?;
        if self.committing.is_some() {
            // A commit removes hints, or lists the segment a hint describes: wait for it.
            return Ok(0);
        }
        let mut spent = 0;
        while spent < budget_bytes {
            let Some(pending) = self.pending_hints.first_mut() else { break };
            if !self.segments.contains_key(&pending.id) {
                self.pending_hints.remove(0);
                continue;
            }
            let path = self.dir.join(pending.id.file_name(HINT_EXT));
            let mut file = match pending.written {
                0 => File::create(&path).map_err(|e| Error::io("create", &path, e))?,
                _ => OpenOptions::new().append(true).open(&path).map_err(|e| Error::io("open", &path, e))?,
            };
            let room = usize::try_from(budget_bytes - spent).unwrap_or(usize::MAX);
            let end = pending.bytes.len().min(pending.written.saturating_add(room));
            file.write_all(&pending.bytes[pending.written..end]).map_err(|e| Error::io("write", &path, e))?;
            spent += (end - pending.written) as u64;
            self.bytes_written += (end - pending.written) as u64;
            pending.written = end;
            if pending.written == pending.bytes.len() {
                self.pending_hints.remove(0);
            }
        }
        Ok(spent)
    }

    /// Creates the empty segment file `id` with extension `ext`, open for appends.
    pub(super) fn create_segment(&mut self, id: SegmentId, ext: &str) -> Result<()> {
        assert!(!self.segments.contains_key(&id), "segment {id} exists already");
        let path = self.dir.join(id.file_name(ext));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io("create", &path, e))?;
        self.segments.insert(id, Segment::new(path, file, 0, self.options.hint_files));
        Ok(())
    }

    /// Writes the active segment's buffer (no fsync), returning the bytes written.
    pub(super) fn write_active(&mut self) -> Result<u64> {
        // The active segment may not be written before the manifest lists it.
        if self.sealing() {
            self.wait_commit()?;
        }
        let bytes = self.segment_mut(self.active).write_buffer()?;
        self.bytes_written += bytes;
        self.unsynced |= bytes > 0;
        Ok(bytes)
    }

    /// fsyncs the active segment whatever `unsynced` says: `write_out` clears it when it hands
    /// the fsync to the caller, who may not have run it yet.
    pub(super) fn sync_active_now(&mut self) -> Result<()> {
        let segment = &self.segments[&self.active];
        self.fsyncs.sync_file(&segment.file, &segment.path)?;
        self.unsynced = false;
        Ok(())
    }

    /// fsyncs the active segment if it has bytes written since its last fsync.
    pub(super) fn sync_active(&mut self) -> Result<bool> {
        if !self.unsynced {
            return Ok(false);
        }
        let segment = &self.segments[&self.active];
        self.fsyncs.sync_file(&segment.file, &segment.path)?;
        self.unsynced = false;
        Ok(true)
    }
}

/// Refuses a key or record that breaks a limit or that the format cannot hold.
fn check_limits(key: &[u8], record: &Record) -> Result<()> {
    let value_len = record.value.as_ref().map_or(0, |v| v.len());
    if key.len() > KEY_BYTES_MAX {
        let len = key.len();
        return Err(Error::InvalidInput(format!("key of {len} bytes exceeds {KEY_BYTES_MAX}")));
    }
    if value_len > VALUE_BYTES_MAX {
        return Err(Error::InvalidInput(format!("value of {value_len} bytes exceeds {VALUE_BYTES_MAX}")));
    }
    if record.expire_at_ms == Some(0) {
        return Err(Error::InvalidInput("expiry deadline 0 is reserved to mean none".into()));
    }
    Ok(())
}

impl Engine for LogEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Record>> {
        let Some(slot) = self.keydir.get(key) else {
            return Ok(None);
        };
        let value = match (slot.meta.tombstone, &slot.at.cached) {
            // A tombstone's index entry says everything its record does.
            (true, _) => None,
            // No checksum: these are the bytes the record's checksum was computed from when
            // it was put, or checked against when it was read at open.
            (false, Some(value)) => Some(value.clone()),
            (false, None) => Some(self.read_value(key, slot).inspect_err(|err| {
                if matches!(err, Error::Corrupt { .. }) {
                    self.segments[&slot.at.position.segment].damaged.set(true);
                }
            })?),
        };
        Ok(Some(Record { version: slot.meta.version, value, expire_at_ms: slot.meta.expire_at_ms }))
    }

    fn meta(&self, key: &[u8]) -> Option<Meta> {
        self.keydir.get(key).map(|slot| slot.meta)
    }

    fn put(&mut self, key: Bytes, record: Record) -> Result<()> {
        self.check_running()?;
        check_limits(&key, &record)?;
        let result = self.append(key, record);
        self.stop_on_error(result)
    }

    fn scan(&self, from: Bound<&[u8]>, limit: usize) -> Vec<(Bytes, Meta)> {
        self.keydir.scan(from, limit)
    }

    fn expiring(&self, until_ms: u64, limit: usize) -> Vec<Bytes> {
        self.keydir.expiring(until_ms, limit)
    }

    fn flush(&mut self, now_ms: u64) -> Result<Flushed> {
        self.check_running()?;
        // Flushed, the engine has no file work under way.
        self.wait_commit()?;
        let result = self.write_active().and_then(|bytes| {
            let due = self.options.fsync.is_due(now_ms, self.last_sync_ms);
            let synced = due && self.sync_active()?;
            if synced {
                self.last_sync_ms = now_ms;
            }
            Ok(Flushed { bytes, synced })
        });
        self.stop_on_error(result)
    }

    fn write_out(&mut self, now_ms: u64) -> Result<WrittenOut> {
        self.check_running()?;
        self.poll_commit(false)?;
        if self.synced_kept {
            // This engine is its own write-ahead log now: an unsynced tail is no longer
            // covered by another log, so it is fsynced before the record goes.
            let result = self.write_active().and_then(|_| self.sync_active_now()).and_then(|_| self.drop_synced_file());
            self.stop_on_error(result)?;
        }
        let result = self.write_active().map(|bytes| {
            let due = self.unsynced && self.options.fsync.is_due(now_ms, self.last_sync_ms);
            // The caller runs the fsync; if it fails the caller stops the node, so the engine
            // may count the bytes as synced now.
            let sync = due.then(|| {
                self.unsynced = false;
                self.last_sync_ms = now_ms;
                self.fsyncs.count += 1;
                let segment = &self.segments[&self.active];
                SyncHandle::new(segment.file.clone(), segment.path.clone(), self.fsyncs.gate.clone())
            });
            WrittenOut { bytes, sync }
        });
        self.stop_on_error(result)
    }

    fn write_out_unsynced(&mut self, now_ms: u64) -> Result<u64> {
        self.check_running()?;
        self.poll_commit(false)?;
        if self.sealing() {
            // The records stay in the active segment's buffer (readable there) until the seal's
            // commit lists the segment; the log holds them meanwhile.
            return Ok(0);
        }
        let result = (|| {
            let bytes = self.write_active()?;
            if !self.synced_kept && self.options.fsync != super::options::FsyncPolicy::Never {
                // From here on the active segment's fsynced length is recorded, once: first
                // make what it holds durable, so that the record is true.
                self.synced_kept = true;
                self.sync_and_record(now_ms)?;
            }
            Ok(bytes)
        })();
        self.stop_on_error(result)
    }

    fn sync_written(&mut self, now_ms: u64) -> Result<()> {
        self.check_running()?;
        let result = self.sync_and_record(now_ms);
        self.stop_on_error(result)
    }

    fn maintain(&mut self, budget_bytes: u64) -> Result<()> {
        self.check_running()?;
        // Up to the budget of each: hints are small beside the segments compaction copies.
        // Under physical replication compaction runs where the leader's log says
        // (`compact_whole`), and a follower moves no record of its own: its segments are
        // the leader's bytes.
        let own = self.physical.role != PhysicalRole::Follow;
        let compact = self.physical.role == PhysicalRole::Off;
        let result = (if own { self.seal_damaged_active() } else { Ok(()) })
            .and_then(|_| self.write_pending_hints(budget_bytes))
            .and_then(|_| if compact { self.compact_step(budget_bytes) } else { Ok(()) })
            .and_then(|_| if own { self.rewrite_step(budget_bytes) } else { Ok(()) });
        self.stop_on_error(result)
    }

    fn take_damaged(&mut self) -> Vec<(Bytes, Error)> {
        self.damage_found.drain(..).map(|found| (found.key, found.error)).collect()
    }

    fn stats(&self) -> EngineStats {
        EngineStats {
            keys: self.keydir.live(),
            tombstones: self.keydir.tombstones(),
            expires: self.keydir.expires(),
            segments: self.segments.len() as u64,
            bytes_written: self.bytes_written,
            dead_bytes: self.segments.values().map(|s| s.dead_bytes).sum(),
            compactions: self.compactions,
            fsyncs: self.fsyncs.count,
            cached_bytes: self.cache.bytes(),
            damaged_segments: self.segments.values().filter(|s| s.damaged.get()).count() as u64,
        }
    }

    fn log_engine(&mut self) -> Option<&mut LogEngine> {
        Some(self)
    }

    fn last_timestamp(&self) -> Timestamp {
        self.keydir.last_timestamp()
    }
}
