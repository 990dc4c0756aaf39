//! Storage engines: where a node keeps its keys, durably.
//!
//! An [`Engine`] maps keys to [`Record`]s: a value or a tombstone, with the [`Version`] of the
//! write that made it and an optional expiry deadline. Two engines implement the trait:
//!
//! - [`LogEngine`]: log-structured, as Bitcask in Riak. Append-only segment files of
//!   CRC-checked records, an in-memory ordered index (the keydir), hint files so that a restart
//!   does not rescan every value, compaction in small steps between batches so that writes
//!   never stop, and a bounded cache of values so that hot reads make no system call. Its
//!   on-disk format is documented byte by byte in `log/mod.rs`.
//! - [`MemoryEngine`]: the same contract in memory, for tests and the simulator.
//!
//! The contract, which `contract_tests` checks against both engines:
//!
//! - `put` makes a record visible to `get`, `meta` and `scan` at once; `flush` makes every
//!   record put before it durable (per the fsync policy) and only then returns `Ok`.
//! - A delete is a `put` of a tombstone. Tombstones stay in the index, with their version, so
//!   that a later replication layer can tell "deleted" from "never seen".
//! - A failed flush stops the engine for good: every later `put` and `flush` returns
//!   [`Error::Stopped`](crate::error::Error::Stopped). A failed fsync is never retried, because the kernel may already have
//!   dropped the dirty pages it could not write and a retry that succeeds would lie.
//! - Expiry is data, not behaviour: an engine stores the deadline and lists keys past it
//!   (`expiring`); the key-value layer decides what an expired key means and deletes it with a
//!   tombstone write, so that replicas agree.
//!
//! Engines are synchronous and single-threaded: the node runtime owns one and calls it from
//! one thread. This is the one place in the core that touches files.
//!
//! CAVEATS
//! - The whole keydir is in memory: a node's key count is bounded by its RAM (about 200 bytes
//!   per key plus the key itself).
//! - Tombstones are never purged yet; purging them needs every replica to have them, which is
//!   the replication layer's knowledge.

mod keydir;
mod log;
mod memory;

#[cfg(test)]
mod contract_tests;

pub use keydir::{Keydir, Slot};
pub use log::{
    decode_extent, decode_records, Compacted, Executor, FsyncPolicy, LogEngine, LogOptions, PhysicalRole,
    VALUE_CACHE_BYTES_MAX_DEFAULT,
};
pub use memory::MemoryEngine;

use crate::error::Result;
use crate::version::{Timestamp, Version};
use bytes::Bytes;
use serde::Serialize;
use std::ops::Bound;

/// The version of the log engine's on-disk format (records, hint files, file names). Peers
/// compare it in their handshake: physical replication ships segment bytes, which only a
/// node with the same format can read. Raise it with any change to `log/format.rs`. The
/// log engine's `MANIFEST` (`log/manifest.rs`) is not covered: it never leaves its
/// directory, so peers need not agree on it, and it carries a version of its own.
pub const STORAGE_FORMAT_VERSION: u32 = 1;

/// The largest key an engine stores, in bytes (Redis allows 512 MiB; replikv keeps keys small
/// because the whole keydir is in memory).
pub const KEY_BYTES_MAX: usize = 64 * 1024;

/// The largest value an engine stores, in bytes, as Redis's `proto-max-bulk-len`.
pub const VALUE_BYTES_MAX: usize = 512 * 1024 * 1024;

/// One stored version of a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Record {
    /// The write that made this record.
    pub version: Version,
    /// The value, or `None` for a tombstone (the key was deleted).
    pub value: Option<Bytes>,
    /// When the value expires, in milliseconds since the Unix epoch; `None` never.
    pub expire_at_ms: Option<u64>,
}

/// What the index knows of a record without reading its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Meta {
    /// The write that made the record.
    pub version: Version,
    /// True for a tombstone.
    pub tombstone: bool,
    /// The expiry deadline in Unix milliseconds, if any.
    pub expire_at_ms: Option<u64>,
    /// The value's length in bytes (0 for a tombstone).
    pub value_len: u32,
}

impl Record {
    /// The record's [`Meta`].
    pub fn meta(&self) -> Meta {
        Meta {
            version: self.version,
            tombstone: self.value.is_none(),
            expire_at_ms: self.expire_at_ms,
            value_len: self.value.as_ref().map_or(0, |v| v.len() as u32),
        }
    }
}

/// What one `flush` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Bytes handed to the operating system by this flush.
    pub bytes: u64,
    /// True when this flush called fsync.
    pub synced: bool,
}

/// The one door every fsync of an engine's files goes through, whichever thread runs it.
///
/// Linux reports a failed writeback once per open file: if two threads fsync the same file,
/// one may see the error and the other a success that is a lie. The gate runs one fsync at a
/// time and remembers the first failure; every fsync after it, from any thread, fails with
/// that reason instead of running, so a failure is never swallowed and never retried.
///
/// Asking whether an fsync failed ([`FsyncGate::failure`], which every write of the engine and
/// the replication log asks first) never waits for an fsync under way: the failure has a lock
/// of its own, held only to read or set it. (With one lock for both, each write of the next
/// batch waited for the syncer's fsync of the last one, which undid the pipelining.)
#[derive(Debug, Default)]
pub struct FsyncGate {
    /// The first failure, once there is one.
    failed: std::sync::Mutex<Option<String>>,
    /// Held through each fsync: one at a time.
    running: std::sync::Mutex<()>,
}

impl FsyncGate {
    /// Runs `call` (an fsync of `path`) unless an earlier fsync failed; records a failure.
    pub fn run(&self, path: &std::path::Path, call: impl FnOnce() -> std::io::Result<()>) -> Result<()> {
        let _one_at_a_time = self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(why) = self.failure() {
            return Err(crate::Error::Stopped(why));
        }
        call().map_err(|e| {
            let err = crate::Error::io("fsync", path, e);
            let mut failed = self.failed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            failed.get_or_insert_with(|| err.to_string());
            err
        })
    }

    /// The first failure, if an fsync has failed. Never waits for an fsync under way.
    pub fn failure(&self) -> Option<String> {
        self.failed.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

/// The fsync that makes records written out durable, to be run by the caller, possibly on
/// another thread, so that the next batch can be stepped while this one reaches the disk.
#[derive(Debug)]
pub struct SyncHandle {
    /// The file to fsync (a shared handle to the engine's open segment).
    file: std::sync::Arc<std::fs::File>,
    /// Its path, for the error message.
    path: std::path::PathBuf,
    /// The engine's gate, shared with its own fsyncs.
    gate: std::sync::Arc<FsyncGate>,
}

impl SyncHandle {
    /// A handle that fsyncs `file`, found at `path`, through the engine's `gate`.
    pub fn new(
        file: std::sync::Arc<std::fs::File>,
        path: std::path::PathBuf,
        gate: std::sync::Arc<FsyncGate>,
    ) -> SyncHandle {
        SyncHandle { file, path, gate }
    }

    /// True when `other` goes through the same gate (the same engine's or log's files): of two
    /// such handles, fsyncing the newer makes the older's records durable too.
    pub fn same_gate(&self, other: &SyncHandle) -> bool {
        std::sync::Arc::ptr_eq(&self.gate, &other.gate)
    }

    /// Runs the fsync (fdatasync). A failure is final: the caller must stop, never retry.
    pub fn sync(&self) -> Result<()> {
        self.gate.run(&self.path, || self.file.sync_data())
    }
}

/// What `write_out` did, and what it leaves to do.
#[derive(Debug, Default)]
pub struct WrittenOut {
    /// Bytes handed to the operating system.
    pub bytes: u64,
    /// The fsync that makes them durable, when the fsync policy calls for one now and
    /// something is unsynced; `None` when the records are as durable as the policy asks.
    pub sync: Option<SyncHandle>,
}

/// Counters an engine keeps, for `INFO`, `/metrics` and `replikv status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    /// Keys whose newest record is a value (expired ones included until they are deleted).
    pub keys: u64,
    /// Keys whose newest record is a tombstone.
    pub tombstones: u64,
    /// Keys holding a value with an expiry deadline (INFO keyspace's `expires`).
    pub expires: u64,
    /// Segment files (1 for the memory engine).
    pub segments: u64,
    /// Bytes written since the engine opened.
    pub bytes_written: u64,
    /// Bytes of records that newer records have replaced, which compaction would reclaim.
    pub dead_bytes: u64,
    /// Compactions finished since the engine opened.
    pub compactions: u64,
    /// fsync calls since the engine opened.
    pub fsyncs: u64,
    /// Bytes of values held in the log engine's value cache (their lengths); always 0 for the
    /// memory engine, which has no cache (every value is in memory).
    pub cached_bytes: u64,
    /// Segment files known to hold a damaged record, whose live records the log engine is
    /// moving out or which wait for their damaged records to be repaired; 0 when healthy, and
    /// always 0 for the memory engine.
    pub damaged_segments: u64,
}

/// A key-value storage engine. See the module documentation for the contract.
pub trait Engine {
    /// The newest record of `key`, tombstones included.
    fn get(&self, key: &[u8]) -> Result<Option<Record>>;

    /// The newest record's metadata, without reading the value.
    fn meta(&self, key: &[u8]) -> Option<Meta>;

    /// Stores `record` as the newest record of `key`. Visible at once, durable after `flush`.
    fn put(&mut self, key: Bytes, record: Record) -> Result<()>;

    /// Up to `limit` keys from `from` on, in key order, tombstones included.
    fn scan(&self, from: Bound<&[u8]>, limit: usize) -> Vec<(Bytes, Meta)>;

    /// Up to `limit` keys holding a value whose deadline is at or before `until_ms`, oldest
    /// deadline first.
    fn expiring(&self, until_ms: u64, limit: usize) -> Vec<Bytes>;

    /// Makes every record put so far durable, per the fsync policy, at wall-clock `now_ms`.
    fn flush(&mut self, now_ms: u64) -> Result<Flushed>;

    /// The first half of `flush`: hands every record put so far to the operating system and
    /// returns the fsync still needed, for the caller to run. Until that fsync succeeds the
    /// records are not durable. If it fails, the caller must stop using the engine: the
    /// engine itself does not learn of the failure. The default flushes in full.
    fn write_out(&mut self, now_ms: u64) -> Result<WrittenOut> {
        let flushed = self.flush(now_ms)?;
        Ok(WrittenOut { bytes: flushed.bytes, sync: None })
    }

    /// `write_out` for an engine whose durability another log provides (a replicating
    /// node's replication log is its write-ahead log): hands every record put so far to the
    /// operating system (an engine may keep some in memory a while longer, as the log engine
    /// does while a seal commits) and hands out no fsync, leaving them unsynced until
    /// [`Engine::sync_written`]. Returns the bytes written. The default flushes in full.
    fn write_out_unsynced(&mut self, now_ms: u64) -> Result<u64> {
        Ok(self.flush(now_ms)?.bytes)
    }

    /// Makes every record handed out so far durable now, per the fsync policy (none under
    /// `never`), whatever `write_out_unsynced` left: called before the write-ahead log drops
    /// records the engine may not hold durably. The default flushes in full.
    fn sync_written(&mut self, now_ms: u64) -> Result<()> {
        self.flush(now_ms).map(|_| ())
    }

    /// Does up to `budget_bytes` of background work (compaction). Called between batches.
    fn maintain(&mut self, budget_bytes: u64) -> Result<()>;

    /// The damaged records the engine found on its own since the last call (by compaction,
    /// by moving the records out of a damaged segment, or at open), each as its key and the [`Error::Corrupt`](crate::Error::Corrupt) naming
    /// where; a `get` reports its own. The key-value layer lists them for repair (see
    /// `kv::damage`). The default finds none.
    fn take_damaged(&mut self) -> Vec<(Bytes, crate::Error)> {
        Vec::new()
    }

    /// The engine's counters.
    fn stats(&self) -> EngineStats;

    /// The newest timestamp of any record, so that a restarted node's clock resumes after it.
    fn last_timestamp(&self) -> Timestamp;

    /// The log engine, if this is one: what physical replication (`log_format = "physical"`)
    /// needs, since it ships the log engine's own bytes. The default is none.
    fn log_engine(&mut self) -> Option<&mut LogEngine> {
        None
    }
}

/// A boxed engine is an engine, so that a node can choose its engine at start.
impl<E: Engine + ?Sized> Engine for Box<E> {
    fn get(&self, key: &[u8]) -> Result<Option<Record>> {
        (**self).get(key)
    }
    fn meta(&self, key: &[u8]) -> Option<Meta> {
        (**self).meta(key)
    }
    fn put(&mut self, key: Bytes, record: Record) -> Result<()> {
        (**self).put(key, record)
    }
    fn scan(&self, from: Bound<&[u8]>, limit: usize) -> Vec<(Bytes, Meta)> {
        (**self).scan(from, limit)
    }
    fn expiring(&self, until_ms: u64, limit: usize) -> Vec<Bytes> {
        (**self).expiring(until_ms, limit)
    }
    fn flush(&mut self, now_ms: u64) -> Result<Flushed> {
        (**self).flush(now_ms)
    }
    fn write_out(&mut self, now_ms: u64) -> Result<WrittenOut> {
        (**self).write_out(now_ms)
    }
    fn write_out_unsynced(&mut self, now_ms: u64) -> Result<u64> {
        (**self).write_out_unsynced(now_ms)
    }
    fn sync_written(&mut self, now_ms: u64) -> Result<()> {
        (**self).sync_written(now_ms)
    }
    fn maintain(&mut self, budget_bytes: u64) -> Result<()> {
        (**self).maintain(budget_bytes)
    }
    fn take_damaged(&mut self) -> Vec<(Bytes, crate::Error)> {
        (**self).take_damaged()
    }
    fn stats(&self) -> EngineStats {
        (**self).stats()
    }
    fn last_timestamp(&self) -> Timestamp {
        (**self).last_timestamp()
    }
    fn log_engine(&mut self) -> Option<&mut LogEngine> {
        (**self).log_engine()
    }
}
