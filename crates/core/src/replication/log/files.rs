//! The file-backed log's segment files: buffering frames, writing them out with rollovers,
//! deleting segments, resetting, and reading records back. The rules are in "Writes",
//! "Retention", "Reset" and "Reads" in the module documentation.

use super::format::{
    decode_body, decode_frame, encode_frame, encode_header, file_name, Frame, SegmentHeader, FRAME_BYTES, HEADER_BYTES,
    NEW_EXT, RESET_EXT, SEGMENT_EXT,
};
use super::replog::{Batch, Segment};
use crate::error::{Error, Result};
use crate::replication::record::{Epoch, LogRecord, Lsn};
use crate::storage::{FsyncGate, SyncHandle, WrittenOut};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The read-ahead of a reader over a segment file, in bytes.
const READ_AHEAD_BYTES: usize = 256 * 1024;

/// Read positions remembered between reads, at most, so that a follower reading the files in
/// batches continues where its last batch ended instead of skipping from its segment's start.
pub const READ_CURSORS_MAX: usize = 16;

/// The segment file appends go to.
#[derive(Debug)]
pub(super) struct ActiveFile {
    /// The lsn of its first record (its base + 1): its name.
    pub(super) first_lsn: Lsn,
    /// Its path.
    pub(super) path: PathBuf,
    /// The open file, shared with the sync handles `write_out` gives out.
    pub(super) file: Arc<File>,
    /// Bytes in the file, header included; frames after this are still pending.
    pub(super) written: u64,
}

impl ActiveFile {
    /// Opens the existing segment file at `path`, whose first lsn is `first_lsn`, holding
    /// `written` bytes, for appends.
    pub(super) fn open(path: PathBuf, first_lsn: Lsn, written: u64) -> Result<ActiveFile> {
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(|e| Error::io("open", &path, e))?;
        Ok(ActiveFile { first_lsn, path, file: Arc::new(file), written })
    }
}

/// Frames appended since the last `write_out`, all bound for one segment.
#[derive(Debug)]
struct Pending {
    /// The first lsn of the segment they go to.
    segment: Lsn,
    /// The epoch at that segment's base, for its header if `write_out` must create it.
    base_epoch: Epoch,
    /// The lsn of the last frame in `bytes`.
    last_lsn: Lsn,
    /// The encoded frames.
    bytes: Vec<u8>,
}

/// Where a read stopped in a segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cursor {
    /// The first lsn of the segment.
    segment: Lsn,
    /// The offset of the frame of the lsn the cursor is filed under.
    offset: u64,
}

/// The segment files of a log and what is still to be written to them.
#[derive(Debug)]
pub(super) struct Files {
    /// The log's directory.
    dir: PathBuf,
    /// The one door for every fsync of the log's files, shared with its sync handles.
    gate: Arc<FsyncGate>,
    /// The segment file appends go to.
    active: ActiveFile,
    /// Frames appended since the last `write_out`, in order, by segment.
    pending: Vec<Pending>,
    /// The lsn of the last record handed to the operating system.
    written_lsn: Lsn,
    /// True when bytes were written to the active file since its last fsync was handed out.
    unsynced: bool,
    /// Why the log stopped, after a failed write, fsync or file operation.
    stopped: Option<String>,
    /// Where recent reads stopped, by the next lsn to read.
    cursors: BTreeMap<Lsn, Cursor>,
}

impl Files {
    /// The files of a log in `dir`, recovered up to `written_lsn`, appending to `active`.
    pub(super) fn new(dir: &Path, gate: Arc<FsyncGate>, active: ActiveFile, written_lsn: Lsn) -> Files {
        Files {
            dir: dir.to_path_buf(),
            gate,
            active,
            pending: Vec::new(),
            written_lsn,
            // What open read back may be in the page cache only (the process that wrote it
            // died before its fsync): the first write-out owes an fsync of it.
            unsynced: true,
            stopped: None,
            cursors: BTreeMap::new(),
        }
    }

    /// The log's directory.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The lsn of the last record handed to the operating system.
    pub(super) fn written_lsn(&self) -> Lsn {
        self.written_lsn
    }

    /// The first lsn of the active segment file: it and later segments are never deleted.
    pub(super) fn active_first_lsn(&self) -> Lsn {
        self.active.first_lsn
    }

    /// Refuses the call if an earlier write, fsync or file operation failed.
    pub(super) fn check_running(&self) -> Result<()> {
        match self.stopped.clone().or_else(|| self.gate.failure()) {
            Some(why) => Err(Error::Stopped(why)),
            None => Ok(()),
        }
    }

    /// Stops the log for good if `result` is a failure: what reached the disk is unknown.
    fn stop_on_error<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(err) = &result {
            if err.is_fatal() && self.stopped.is_none() {
                tracing::error!(dir = %self.dir.display(), %err, "replication log stopped");
                self.stopped = Some(err.to_string());
            }
        }
        result
    }

    /// Encodes `record`'s frame, bound for the segment whose first lsn is `segment` (at
    /// whose base the epoch is `base_epoch`). On failure nothing changes.
    pub(super) fn append(&mut self, segment: Lsn, base_epoch: Epoch, record: &LogRecord) -> Result<(), String> {
        match self.pending.last_mut() {
            Some(pending) if pending.segment == segment => {
                encode_frame(record, &mut pending.bytes)?;
                pending.last_lsn = record.lsn;
            }
            _ => {
                let mut bytes = Vec::new();
                encode_frame(record, &mut bytes)?;
                self.pending.push(Pending { segment, base_epoch, last_lsn: record.lsn, bytes });
            }
        }
        Ok(())
    }

    /// Writes every pending frame, rolling over to new segment files on the way, and hands
    /// out the active file's fsync if anything written is unsynced.
    pub(super) fn write_out(&mut self) -> Result<WrittenOut> {
        self.check_running()?;
        let result = self.write_pending();
        let bytes = self.stop_on_error(result)?;
        // The caller runs the fsync; if it fails, the gate remembers and every later call
        // is refused, so the bytes may count as synced now.
        let sync = std::mem::take(&mut self.unsynced)
            .then(|| SyncHandle::new(self.active.file.clone(), self.active.path.clone(), self.gate.clone()));
        Ok(WrittenOut { bytes, sync })
    }

    /// Writes every pending frame; returns the bytes written.
    fn write_pending(&mut self) -> Result<u64> {
        let mut bytes = 0;
        for pending in std::mem::take(&mut self.pending) {
            if pending.segment != self.active.first_lsn {
                self.roll(pending.segment, pending.base_epoch)?;
            }
            let active = &mut self.active;
            active
                .file
                .write_all_at(&pending.bytes, active.written)
                .map_err(|e| Error::io("write", &active.path, e))?;
            active.written += pending.bytes.len() as u64;
            bytes += pending.bytes.len() as u64;
            self.written_lsn = pending.last_lsn;
            self.unsynced = true;
        }
        Ok(bytes)
    }

    /// Seals the active segment (fsynced through the gate, so that an fsync of any later
    /// file makes every record in it durable too) and starts the segment whose first lsn is
    /// `first_lsn`.
    fn roll(&mut self, first_lsn: Lsn, base_epoch: Epoch) -> Result<()> {
        let active = &self.active;
        self.gate.run(&active.path, || active.file.sync_data())?;
        let header = SegmentHeader { base: first_lsn - 1, epoch: base_epoch };
        self.active = create_segment(&self.dir, &self.gate, header)?;
        self.unsynced = false;
        Ok(())
    }

    /// Writes out what is pending, then drops every record after `lsn` from the active
    /// segment file, durably: the file is cut where the frame of `lsn + 1` starts and fsynced.
    /// The caller has checked that `lsn + 1` is in the active segment once pending frames are
    /// written (see [`super::ReplicationLog::truncate_after`]). Returns the file's new length.
    pub(super) fn truncate_after(&mut self, lsn: Lsn) -> Result<u64> {
        self.check_running()?;
        let result = self.write_pending();
        self.stop_on_error(result)?;
        assert!(lsn + 1 >= self.active.first_lsn, "truncating after {lsn}, before the active segment");
        let active = &self.active;
        let result = (|| {
            let mut reader = FrameReader::open(active.path.clone(), HEADER_BYTES as u64, active.written)?;
            for _ in active.first_lsn..=lsn {
                reader.skip()?;
            }
            let offset = reader.offset;
            active.file.set_len(offset).map_err(|e| Error::io("truncate", &active.path, e))?;
            // sync_all: the new length is metadata, which fdatasync need not persist.
            self.gate.run(&active.path, || active.file.sync_all())?;
            Ok(offset)
        })();
        let offset = self.stop_on_error(result)?;
        self.active.written = offset;
        self.written_lsn = lsn;
        self.unsynced = false;
        self.cursors.retain(|&next, _| next <= lsn);
        Ok(offset)
    }

    /// Deletes the sealed segment whose first lsn is `first`, durably.
    pub(super) fn delete_segment(&mut self, first: Lsn) -> Result<()> {
        assert!(first < self.active.first_lsn, "deleting segment {first}, not older than the active one");
        self.check_running()?;
        let path = self.dir.join(file_name(first, SEGMENT_EXT));
        // One directory fsync per file: a crash must not leave a later segment deleted and an
        // earlier one not, which would read as a missing segment.
        let result = fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e)).and_then(|()| self.sync_dir());
        self.stop_on_error(result)?;
        self.cursors.retain(|_, cursor| cursor.segment != first);
        Ok(())
    }

    /// Deletes every segment file (those of `segments` that exist) and starts an empty one
    /// after `lsn`, in `epoch`, durably: see "Reset" in the module documentation.
    pub(super) fn reset(&mut self, segments: impl Iterator<Item = Lsn>, lsn: Lsn, epoch: Epoch) -> Result<()> {
        self.check_running()?;
        let active_first = self.active.first_lsn;
        let old: Vec<PathBuf> = segments
            .filter(|&first| first <= active_first)
            .map(|first| self.dir.join(file_name(first, SEGMENT_EXT)))
            .collect();
        let result = (|| {
            let header = SegmentHeader { base: lsn, epoch };
            let (intent, file) = write_header_file(&self.dir, &self.gate, header, RESET_EXT)?;
            sync_dir(&self.dir, &self.gate)?;
            let path = finish_reset(&self.dir, &self.gate, &old, &intent, lsn + 1)?;
            Ok(ActiveFile { first_lsn: lsn + 1, path, file: Arc::new(file), written: HEADER_BYTES as u64 })
        })();
        self.active = self.stop_on_error(result)?;
        self.pending.clear();
        self.written_lsn = lsn;
        self.unsynced = false;
        self.cursors.clear();
        Ok(())
    }

    /// fsyncs the log's directory.
    fn sync_dir(&self) -> Result<()> {
        sync_dir(&self.dir, &self.gate)
    }

    /// Reads records `from` on, up to `until` (written out, in `segments`), into `batch`
    /// while it takes them.
    pub(super) fn read(
        &mut self,
        segments: &BTreeMap<Lsn, Segment>,
        from: Lsn,
        until: Lsn,
        batch: &mut Batch,
    ) -> Result<()> {
        assert!(until <= self.written_lsn, "reading lsn {until} from files, written up to {}", self.written_lsn);
        let mut next = from;
        while next <= until && !batch.full {
            let (&first, segment) = segments.range(..=next).next_back().expect("a read starts at or after first_lsn");
            let len = if first == self.active.first_lsn { self.active.written } else { segment.bytes };
            let (start, mut at) = match self.cursors.remove(&next) {
                Some(cursor) if cursor.segment == first => (cursor.offset, next),
                _ => (HEADER_BYTES as u64, first),
            };
            let mut reader = FrameReader::open(self.dir.join(file_name(first, SEGMENT_EXT)), start, len)?;
            while at < next {
                reader.skip()?;
                at += 1;
            }
            while next <= until.min(segment.last_lsn) {
                let offset = reader.offset;
                let record = reader.record()?;
                if record.lsn != next {
                    return Err(reader.corrupt_at(offset, format!("holds lsn {} where lsn {next} belongs", record.lsn)));
                }
                if !batch.offer(record) {
                    self.remember(next, Cursor { segment: first, offset });
                    return Ok(());
                }
                next += 1;
            }
            if next <= segment.last_lsn {
                self.remember(next, Cursor { segment: first, offset: reader.offset });
            }
        }
        Ok(())
    }

    /// Files `cursor` as where lsn `next` starts, forgetting the oldest beyond the limit.
    fn remember(&mut self, next: Lsn, cursor: Cursor) {
        self.cursors.insert(next, cursor);
        while self.cursors.len() > READ_CURSORS_MAX {
            self.cursors.pop_first();
        }
    }
}

/// Creates the segment `header` describes (first lsn `base + 1`): written as a `.rlog.new`
/// file, its header fsynced, then renamed and the directory fsynced, so that a segment file
/// under its own name always has a whole header.
pub(super) fn create_segment(dir: &Path, gate: &FsyncGate, header: SegmentHeader) -> Result<ActiveFile> {
    let first_lsn = header.base + 1;
    let (new, file) = write_header_file(dir, gate, header, NEW_EXT)?;
    let path = dir.join(file_name(first_lsn, SEGMENT_EXT));
    fs::rename(&new, &path).map_err(|e| Error::io("rename", &new, e))?;
    sync_dir(dir, gate)?;
    Ok(ActiveFile { first_lsn, path, file: Arc::new(file), written: HEADER_BYTES as u64 })
}

/// Writes a file holding only `header`, named for its first lsn with extension `ext`
/// (replacing any such file), and fsyncs it. The caller makes its name durable.
fn write_header_file(dir: &Path, gate: &FsyncGate, header: SegmentHeader, ext: &str) -> Result<(PathBuf, File)> {
    let path = dir.join(file_name(header.base + 1, ext));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| Error::io("create", &path, e))?;
    file.write_all_at(&encode_header(header), 0).map_err(|e| Error::io("write", &path, e))?;
    gate.run(&path, || file.sync_data())?;
    Ok((path, file))
}

/// Finishes a reset whose durable `intent` (a `.rlog.reset` file) names `first_lsn`: deletes
/// the segment files `old` (those already gone are fine), renames the intent to the new
/// segment's name and fsyncs the directory. Returns the new segment's path.
pub(super) fn finish_reset(
    dir: &Path,
    gate: &FsyncGate,
    old: &[PathBuf],
    intent: &Path,
    first_lsn: Lsn,
) -> Result<PathBuf> {
    for path in old {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(Error::io("remove", path, e)),
            _ => {}
        }
    }
    let path = dir.join(file_name(first_lsn, SEGMENT_EXT));
    fs::rename(intent, &path).map_err(|e| Error::io("rename", intent, e))?;
    sync_dir(dir, gate)?;
    Ok(path)
}

/// fsyncs directory `dir` through `gate`, so that files created, renamed or removed in it
/// stay so.
pub(super) fn sync_dir(dir: &Path, gate: &FsyncGate) -> Result<()> {
    let file = File::open(dir).map_err(|e| Error::io("open", dir, e))?;
    gate.run(dir, || file.sync_all())
}

/// A sequential reader over the frames of one segment file, trusting nothing it reads.
#[derive(Debug)]
struct FrameReader {
    /// The file's path, for errors.
    path: PathBuf,
    /// The file, read ahead.
    reader: BufReader<File>,
    /// The start of the next frame.
    offset: u64,
    /// The segment's length as the log counts it: no frame may end past it.
    len: u64,
}

impl FrameReader {
    /// A reader at `offset` of the segment file at `path`, `len` bytes long.
    fn open(path: PathBuf, offset: u64, len: u64) -> Result<FrameReader> {
        let file = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        let mut reader = BufReader::with_capacity(READ_AHEAD_BYTES, file);
        reader.seek(SeekFrom::Start(offset)).map_err(|e| Error::io("seek", &path, e))?;
        Ok(FrameReader { path, reader, offset, len })
    }

    /// Reads the frame at `offset` up to its body, checking its length.
    fn frame(&mut self) -> Result<Frame> {
        if self.offset + FRAME_BYTES as u64 > self.len {
            return Err(self.corrupt_at(self.offset, "the segment ends inside a record frame".into()));
        }
        let mut head = [0; FRAME_BYTES];
        self.read_exact(&mut head)?;
        let frame = decode_frame(&head).map_err(|reason| self.corrupt_at(self.offset, reason))?;
        if self.offset + frame.frame_bytes() as u64 > self.len {
            let reason = format!("record of {} bytes extends past the segment's end", frame.body_len);
            return Err(self.corrupt_at(self.offset, reason));
        }
        Ok(frame)
    }

    /// Moves past the next record without reading its body.
    fn skip(&mut self) -> Result<()> {
        let frame = self.frame()?;
        let body = i64::try_from(frame.body_len).expect("a body length is at most RECORD_BYTES_MAX");
        self.reader.seek_relative(body).map_err(|e| Error::io("seek", &self.path, e))?;
        self.offset += frame.frame_bytes() as u64;
        Ok(())
    }

    /// Reads, checks and decodes the next record.
    fn record(&mut self) -> Result<LogRecord> {
        let frame = self.frame()?;
        let mut body = vec![0; frame.body_len];
        self.read_exact(&mut body)?;
        let record = decode_body(frame, &body).map_err(|reason| self.corrupt_at(self.offset, reason))?;
        self.offset += frame.frame_bytes() as u64;
        Ok(record)
    }

    /// Fills `buf` from the file; a file shorter than the log counts is corrupt.
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        self.reader.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => self.corrupt_at(self.offset, "the file ends inside a record".into()),
            _ => Error::io("read", &self.path, e),
        })
    }

    /// An [`Error::Corrupt`] for the record at `offset` of this file.
    fn corrupt_at(&self, offset: u64, reason: String) -> Error {
        Error::Corrupt { path: self.path.clone(), offset, reason }
    }
}
