//! Commits: the file work that ends a compaction or seals a segment, handed to the
//! [`Executor`] the engine's owner gave ([`LogEngine::set_executor`]), else run in place. See
//! "Commit off the caller's thread" in the module documentation.
//!
//! The work is the same, in the same order, either way: [`Commit::run`] does it through a
//! [`CommitIo`], which is the engine itself in place (its fsync counter, its failure hook and
//! its test hook on each step) and a [`ThreadIo`] on the executor's thread. The crash tests, which run in
//! place, so check every step of the order the thread follows too.

use super::engine::{LogEngine, Segment};
use super::format::{SegmentId, HINT_EXT};
use super::manifest::write_manifest_file;
use super::synced::{self, Synced};
use crate::error::{Error, Result};
use crate::storage::FsyncGate;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

/// What a commit's file work needs from whoever runs it.
pub(super) trait CommitIo {
    /// fdatasync on `file`, found at `path`.
    fn sync_file(&mut self, file: &File, path: &Path) -> Result<()>;
    /// fsync on directory `dir`.
    fn sync_dir(&mut self, dir: &Path) -> Result<()>;
    /// A step where a crash may stop the engine is done (the tests' hook).
    fn step_done(&mut self, step: &'static str);
}

impl CommitIo for LogEngine {
    fn sync_file(&mut self, file: &File, path: &Path) -> Result<()> {
        self.fsyncs.sync_file(file, path)
    }

    fn sync_dir(&mut self, dir: &Path) -> Result<()> {
        self.fsyncs.sync_dir(dir)
    }

    fn step_done(&mut self, step: &'static str) {
        LogEngine::step_done(self, step);
    }
}

/// Runs an engine's background file work off the caller's thread. The core never starts a
/// thread of its own (DESIGN §2): the owner that has threads (the server's node) gives the
/// engine one of these.
///
/// Each job should run once, soon: the engine waits for a commit's job at its next seal,
/// flush or drop (a close job it never waits for), so an executor must not hold a job behind
/// work that waits for the engine's thread. A job dropped unrun, or one that panics, stops
/// the engine (its commit's result never comes) and loses no data: the files are as a crash
/// at that point would leave them.
pub trait Executor: Send + Sync {
    /// Runs `job`, on another thread if it can.
    fn execute(&self, job: Box<dyn FnOnce() + Send>);
}

/// A commit's file work on the executor's thread: fsyncs through the engine's gate (so that a
/// failure there stops the engine, as its own would), counted for the engine's statistics.
pub(super) struct ThreadIo {
    gate: Arc<FsyncGate>,
    fsyncs: u64,
}

impl CommitIo for ThreadIo {
    fn sync_file(&mut self, file: &File, path: &Path) -> Result<()> {
        self.fsyncs += 1;
        self.gate.run(path, || file.sync_data())
    }

    fn sync_dir(&mut self, dir: &Path) -> Result<()> {
        self.fsyncs += 1;
        let file = File::open(dir).map_err(|e| Error::io("open", dir, e))?;
        self.gate.run(dir, || file.sync_all())
    }

    fn step_done(&mut self, _step: &'static str) {}
}

/// A file that the commit makes durable: a sealed output, or the active segment.
pub(super) struct SyncFile {
    pub(super) file: Arc<File>,
    pub(super) path: PathBuf,
}

impl SyncFile {
    /// `segment`'s file, shared.
    pub(super) fn of(segment: &Segment) -> SyncFile {
        SyncFile { file: segment.file.clone(), path: segment.path.clone() }
    }
}

/// A segment written out whole, to be sealed: its file fsynced, then its hint file (if it
/// keeps one) written and fsynced.
pub(super) struct SealedFiles {
    pub(super) segment: SyncFile,
    /// The hint file's path and bytes.
    pub(super) hint: Option<(PathBuf, Vec<u8>)>,
}

impl SealedFiles {
    /// Does it; returns the bytes written.
    pub(super) fn run(&self, io: &mut impl CommitIo) -> Result<u64> {
        io.sync_file(&self.segment.file, &self.segment.path)?;
        let Some((path, hint)) = &self.hint else {
            return Ok(0);
        };
        let mut file = File::create(path).map_err(|e| Error::io("create", path, e))?;
        file.write_all(hint).map_err(|e| Error::io("write", path, e))?;
        io.sync_file(&file, path)?;
        Ok(hint.len() as u64)
    }
}

/// What the `SYNCED` file becomes at the commit (see [`super::synced`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SyncedChange {
    /// Left as it is.
    Keep,
    /// Records this length of the active segment as fsynced.
    Write(Synced),
    /// Removed: under `fsync = never` nothing vouches for a length.
    Drop,
}

/// A compaction's commit, planned by the engine: every file it touches and what it writes.
pub(super) struct Commit {
    pub(super) dir: PathBuf,
    /// The last output, written out, sealed here.
    pub(super) last: SealedFiles,
    /// The active segment, written out: fsynced here, since records the compaction skipped
    /// were replaced by records there, which must be durable before the old ones go.
    pub(super) active: SyncFile,
    pub(super) synced: SyncedChange,
    /// The manifest that commits the compaction, encoded.
    pub(super) manifest: Vec<u8>,
    /// Outputs to rename to their segment names: from, to.
    pub(super) publish: Vec<(PathBuf, PathBuf)>,
    /// Outputs that received no record, and their ids.
    pub(super) empty: Vec<(SegmentId, PathBuf)>,
    /// Retired inputs, and their ids.
    pub(super) retired: Vec<(SegmentId, PathBuf)>,
}

impl Commit {
    /// Does the commit's file work in order; returns the bytes written.
    pub(super) fn run(&self, io: &mut impl CommitIo) -> Result<u64> {
        let mut bytes = self.last.run(io)?;
        io.sync_file(&self.active.file, &self.active.path)?;
        apply_synced(&self.dir, self.synced, io)?;
        // The outputs' names must be durable before a manifest lists them.
        io.sync_dir(&self.dir)?;
        io.step_done("outputs sealed");
        // The commit: from here on, open finishes the compaction instead of forgetting it.
        write_manifest_file(&self.dir, &self.manifest, io)?;
        bytes += self.manifest.len() as u64;
        for (from, to) in &self.publish {
            fs::rename(from, to).map_err(|e| Error::io("rename", from, e))?;
            io.step_done("output renamed");
        }
        for (id, path) in &self.empty {
            fs::remove_file(path).map_err(|e| Error::io("remove", path, e))?;
            remove_if_exists(&self.dir.join(id.file_name(HINT_EXT)))?;
            io.step_done("empty output removed");
        }
        for (id, path) in &self.retired {
            remove_segment_files(&self.dir, *id, path, io)?;
        }
        io.sync_dir(&self.dir)?;
        Ok(bytes)
    }
}

/// Removes a retired segment's file and its hint file. The caller fsyncs the directory.
pub(super) fn remove_segment_files(dir: &Path, id: SegmentId, path: &Path, io: &mut impl CommitIo) -> Result<()> {
    fs::remove_file(path).map_err(|e| Error::io("remove", path, e))?;
    io.step_done("input segment removed");
    remove_if_exists(&dir.join(id.file_name(HINT_EXT)))?;
    io.step_done("input hint removed");
    Ok(())
}

/// Removes the file at `path` if there is one.
pub(super) fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io("remove", path, e)),
        _ => Ok(()),
    }
}

/// A seal's file work, planned by `rotate` once the sealed segment's last records are
/// written out and the next segment's file exists (empty, unlisted): see "Writes".
pub(super) struct SealCommit {
    pub(super) dir: PathBuf,
    /// The sealed segment: fsynced here, before a manifest records its length.
    pub(super) sealed: SyncFile,
    /// The manifest listing the sealed segment with its length and the next as active.
    pub(super) manifest: Vec<u8>,
    /// The `SYNCED` record of the next segment (empty).
    pub(super) synced: SyncedChange,
}

impl SealCommit {
    /// Does the seal's file work in order; returns the bytes written.
    fn run(&self, io: &mut impl CommitIo) -> Result<u64> {
        io.sync_file(&self.sealed.file, &self.sealed.path)?;
        io.step_done("segment sealed");
        // The new segment exists before a manifest names it: open removes an empty unlisted
        // one, but refuses a listed one that is missing.
        io.sync_dir(&self.dir)?;
        io.step_done("next segment created");
        write_manifest_file(&self.dir, &self.manifest, io)?;
        apply_synced(&self.dir, self.synced, io)?;
        Ok(self.manifest.len() as u64)
    }
}

/// Writes or removes the `SYNCED` file as `change` says, fsyncing the directory if the file
/// was created or removed.
fn apply_synced(dir: &Path, change: SyncedChange, io: &mut impl CommitIo) -> Result<()> {
    let changed = match change {
        SyncedChange::Keep => false,
        SyncedChange::Write(record) => synced::write(dir, record, |file, path| io.sync_file(file, path))?,
        SyncedChange::Drop => synced::remove(dir)?,
    };
    if changed {
        io.sync_dir(dir)?;
    }
    Ok(())
}

/// The file work of a commit, of either kind.
pub(super) enum Work {
    Compaction(Commit),
    Seal(SealCommit),
}

impl Work {
    /// Does the work; returns the bytes written.
    fn run(&self, io: &mut impl CommitIo) -> Result<u64> {
        match self {
            Work::Compaction(commit) => commit.run(io),
            Work::Seal(seal) => seal.run(io),
        }
    }
}

/// The engine's in-memory side of a commit of either kind, applied once its work is done.
#[derive(Debug)]
pub(super) enum After {
    Compaction(AfterCommit),
    /// A seal: only the `SYNCED` record changes (the manifest in memory changed at the plan).
    Seal(SyncedChange),
}

/// A commit under way on the executor's thread, and what the engine does once it is done.
pub(super) struct Committing {
    /// Where the job leaves the bytes written and the fsyncs run, or the failure. Closed
    /// without a value if the job was dropped unrun or panicked.
    pub(super) result: mpsc::Receiver<(Result<u64>, u64)>,
    /// The engine's side, applied when the thread is done.
    pub(super) after: After,
}

impl std::fmt::Debug for Committing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committing").field("after", &self.after).finish_non_exhaustive()
    }
}

/// The engine's in-memory side of a commit, applied once its file work is done.
#[derive(Debug)]
pub(super) struct AfterCommit {
    pub(super) synced: SyncedChange,
    /// Outputs renamed: id, new path.
    pub(super) published: Vec<(SegmentId, PathBuf)>,
    pub(super) empty: Vec<SegmentId>,
    pub(super) retired: Vec<SegmentId>,
    pub(super) inputs: usize,
    pub(super) kept: usize,
    pub(super) outputs: usize,
}

impl LogEngine {
    /// Runs `work`: on the executor if `background` (its in-memory side `after` then waits
    /// until [`LogEngine::poll_commit`] finds it done), else here and now. A commit under way
    /// is finished first: one at a time.
    pub(super) fn start_commit(&mut self, work: Work, after: After, background: bool) -> Result<()> {
        self.wait_commit()?;
        let executor = match (&self.executor, background) {
            (Some(executor), true) => executor.clone(),
            _ => {
                let bytes = work.run(self)?;
                self.bytes_written += bytes;
                self.commit_done(after);
                return Ok(());
            }
        };
        let mut io = ThreadIo { gate: self.fsyncs.gate.clone(), fsyncs: 0 };
        let (tx, result) = mpsc::channel();
        executor.execute(Box::new(move || {
            let done = work.run(&mut io);
            // The engine keeps the receiver until it has the result (even its drop waits).
            let _ = tx.send((done, io.fsyncs));
        }));
        self.committing = Some(Committing { result, after });
        Ok(())
    }

    /// True while a seal's commit is under way on the executor: the active segment is not yet
    /// listed in the manifest on disk, so its records stay in its buffer (see "Writes").
    pub(super) fn sealing(&self) -> bool {
        self.committing.as_ref().is_some_and(|c| matches!(c.after, After::Seal(_)))
    }

    /// Finishes the commit under way if its job is done, or, with `wait`, once it is. A
    /// failed commit stops the engine: the error is returned, and every later call refused.
    pub(super) fn poll_commit(&mut self, wait: bool) -> Result<()> {
        let Some(committing) = &self.committing else {
            return Ok(());
        };
        let received = match wait {
            true => committing.result.recv().map_err(|_| ()),
            false => match committing.result.try_recv() {
                Ok(done) => Ok(done),
                Err(mpsc::TryRecvError::Empty) => return Ok(()),
                Err(mpsc::TryRecvError::Disconnected) => Err(()),
            },
        };
        let committing = self.committing.take().expect("checked above");
        let (result, fsyncs) = received.unwrap_or_else(|()| {
            let why =
                format!("a commit's job in {} ended without a result (dropped unrun, or panicked)", self.dir.display());
            (Err(Error::Stopped(why)), 0)
        });
        self.fsyncs.count += fsyncs;
        match result {
            Ok(bytes) => {
                self.bytes_written += bytes;
                self.commit_done(committing.after);
                Ok(())
            }
            Err(error) => {
                tracing::error!(dir = %self.dir.display(), "log engine stopped: a commit failed: {error}");
                self.stopped = Some(error.to_string());
                Err(error)
            }
        }
    }

    /// Waits for the commit under way, if any: before any other change to the engine's
    /// files that the commit's could race with (a manifest, the `SYNCED` file, a seal).
    pub(super) fn wait_commit(&mut self) -> Result<()> {
        self.poll_commit(true)
    }

    /// The in-memory side of a finished commit.
    fn commit_done(&mut self, after: After) {
        let after = match after {
            After::Compaction(after) => after,
            After::Seal(synced) => return self.synced_done(synced),
        };
        self.synced_done(after.synced);
        for (id, path) in after.published {
            self.segment_mut(id).path = path;
        }
        for id in after.empty {
            self.segments.remove(&id);
        }
        let files = after.retired.into_iter().map(|id| self.forget_removed(id)).collect();
        self.close_removed(files);
        // Gone for good: the next manifest need not name them.
        self.manifest.retired.clear();
        self.compactions += 1;
        tracing::info!(
            dir = %self.dir.display(), inputs = after.inputs, kept = after.kept,
            outputs = after.outputs, "finished compaction"
        );
    }

    /// The `SYNCED` file changed as `change` says.
    fn synced_done(&mut self, change: SyncedChange) {
        match change {
            SyncedChange::Keep => {}
            SyncedChange::Write(record) => self.synced_last = Some(record),
            SyncedChange::Drop => {
                self.synced_kept = false;
                self.synced_last = None;
            }
        }
    }

    /// Forgets segment `id`, whose files are removed; returns its open file, for
    /// [`LogEngine::close_removed`].
    pub(super) fn forget_removed(&mut self, id: SegmentId) -> Arc<File> {
        let segment = self.segments.remove(&id).expect("forgetting an open segment");
        assert_eq!(segment.live_bytes, 0, "segment {id} still holds live records");
        self.removed_max = self.removed_max.max(Some(id));
        segment.file
    }

    /// Closes removed segments' files, on the executor if there is one: closing the last
    /// descriptor of an unlinked file frees its blocks, which for a full segment took 20 ms in
    /// a benchmark, time the thread stepping the replica need not wait.
    pub(super) fn close_removed(&self, files: Vec<Arc<File>>) {
        if let (Some(executor), false) = (&self.executor, files.is_empty()) {
            executor.execute(Box::new(move || drop(files)));
        }
    }
}
