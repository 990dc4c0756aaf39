//! A compaction's commit: the file work that ends a compaction, run on a thread of its own
//! when the engine's owner asks for it ([`LogOptions::background_commit`](super::LogOptions::background_commit)),
//! else in place. See "Commit off the caller's thread" in the module documentation.
//!
//! The work is the same, in the same order, either way: [`Commit::run`] does it through a
//! [`CommitIo`], which is the engine itself in place (its fsync counter, its failure hook and
//! its test hook on each step) and a [`ThreadIo`] on the thread. The crash tests, which run in
//! place, so check every step of the order the thread follows too.

use super::engine::LogEngine;
use super::format::{SegmentId, HINT_EXT};
use super::manifest::write_manifest_file;
use super::synced::{self, Synced};
use crate::error::{Error, Result};
use crate::storage::FsyncGate;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

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

/// A commit's file work on its own thread: fsyncs through the engine's gate (so that a
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
    /// The last output, written out: fsynced here, then its hint file written and fsynced.
    pub(super) last: SyncFile,
    /// The last output's hint file and bytes, if it keeps one.
    pub(super) last_hint: Option<(PathBuf, Vec<u8>)>,
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
        let mut bytes = 0;
        io.sync_file(&self.last.file, &self.last.path)?;
        if let Some((path, hint)) = &self.last_hint {
            let mut file = File::create(path).map_err(|e| Error::io("create", path, e))?;
            file.write_all(hint).map_err(|e| Error::io("write", path, e))?;
            io.sync_file(&file, path)?;
            bytes += hint.len() as u64;
        }
        io.sync_file(&self.active.file, &self.active.path)?;
        match self.synced {
            SyncedChange::Keep => {}
            SyncedChange::Write(record) => {
                if synced::write(&self.dir, record, |file, path| io.sync_file(file, path))? {
                    io.sync_dir(&self.dir)?;
                }
            }
            SyncedChange::Drop => {
                if synced::remove(&self.dir)? {
                    io.sync_dir(&self.dir)?;
                }
            }
        }
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

/// A commit under way on its own thread, and what the engine does once it is done.
pub(super) struct Committing {
    /// The thread: the bytes written and the fsyncs run, or the failure.
    pub(super) thread: JoinHandle<(Result<u64>, u64)>,
    /// The engine's side, applied when the thread is done.
    pub(super) after: AfterCommit,
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
    /// Runs `commit`: on a thread of its own if the options ask for it (its in-memory side
    /// then waits until [`LogEngine::poll_commit`] finds it done), else here and now.
    pub(super) fn start_commit(&mut self, commit: Commit, after: AfterCommit) -> Result<()> {
        assert!(self.committing.is_none(), "a commit is under way already");
        if !self.options.background_commit {
            let bytes = commit.run(self)?;
            self.bytes_written += bytes;
            self.commit_done(after);
            return Ok(());
        }
        let mut io = ThreadIo { gate: self.fsyncs.gate.clone(), fsyncs: 0 };
        let thread = std::thread::Builder::new()
            .name("replikv-commit".into())
            .spawn(move || {
                let result = commit.run(&mut io);
                (result, io.fsyncs)
            })
            .map_err(|e| Error::io("spawn a thread for", &self.dir, e))?;
        self.committing = Some(Committing { thread, after });
        Ok(())
    }

    /// Finishes the commit under way if its thread is done, or, with `wait`, once it is. A
    /// failed commit stops the engine: the error is returned, and every later call refused.
    pub(super) fn poll_commit(&mut self, wait: bool) -> Result<()> {
        let done = self.committing.as_ref().is_some_and(|c| wait || c.thread.is_finished());
        if !done {
            return Ok(());
        }
        let committing = self.committing.take().expect("checked above");
        let (result, fsyncs) = committing.thread.join().unwrap_or_else(|panic| {
            let why = panic.downcast_ref::<&str>().copied().unwrap_or("a panic");
            (Err(Error::Stopped(format!("the commit thread of {} failed: {why}", self.dir.display()))), 0)
        });
        self.fsyncs.count += fsyncs;
        match result {
            Ok(bytes) => {
                self.bytes_written += bytes;
                self.commit_done(committing.after);
                Ok(())
            }
            Err(error) => {
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
    fn commit_done(&mut self, after: AfterCommit) {
        match after.synced {
            SyncedChange::Keep => {}
            SyncedChange::Write(record) => self.synced_last = Some(record),
            SyncedChange::Drop => {
                self.synced_kept = false;
                self.synced_last = None;
            }
        }
        for (id, path) in after.published {
            self.segment_mut(id).path = path;
        }
        for id in after.empty {
            self.segments.remove(&id);
        }
        for id in after.retired {
            self.forget_removed(id);
        }
        // Gone for good: the next manifest need not name them.
        self.manifest.retired.clear();
        self.compactions += 1;
        tracing::info!(
            dir = %self.dir.display(), inputs = after.inputs, kept = after.kept,
            outputs = after.outputs, "finished compaction"
        );
    }

    /// Forgets segment `id`, whose files are removed, and closes its file on a short-lived
    /// thread of its own: closing the last descriptor of an unlinked file frees its blocks,
    /// which for a full segment took tens of milliseconds in a benchmark, time the thread
    /// stepping the replica need not wait. If the thread cannot start, it closes here.
    pub(super) fn forget_removed(&mut self, id: SegmentId) {
        let segment = self.segments.remove(&id).expect("forgetting an open segment");
        assert_eq!(segment.live_bytes, 0, "segment {id} still holds live records");
        self.removed_max = self.removed_max.max(Some(id));
        let file = segment.file;
        let _ = std::thread::Builder::new().name("replikv-close".into()).spawn(move || drop(file));
    }
}
