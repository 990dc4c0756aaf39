//! The memory engine: the [`Engine`] contract with nothing on disk, for tests and the
//! simulator. `flush` counts as an fsync; a test can make the next flush fail to check that a
//! failed fsync stops the engine, as it must stop the log engine.

use super::{Engine, EngineStats, Flushed, Keydir, Meta, Record};
use crate::error::{Error, Result};
use crate::version::Timestamp;
use bytes::Bytes;
use std::ops::Bound;

/// An [`Engine`] that keeps everything in memory.
#[derive(Debug, Default)]
pub struct MemoryEngine {
    /// Every key's newest record; the location is the value itself.
    keydir: Keydir<Option<Bytes>>,
    /// Bytes put since the last flush.
    unflushed_bytes: u64,
    /// Counters.
    stats: EngineStats,
    /// Set by a failed flush: the engine refuses everything after it.
    stopped: Option<String>,
    /// Test hook: the next flush fails as a failing fsync would.
    fail_next_flush: bool,
    /// Test hook: keys whose records read as damaged until they are put again.
    damaged: std::collections::BTreeSet<Bytes>,
}

impl MemoryEngine {
    /// An empty engine.
    pub fn new() -> MemoryEngine {
        MemoryEngine::default()
    }

    /// Makes the next `flush` fail, as a disk whose fsync returns EIO would.
    pub fn fail_next_flush(&mut self) {
        self.fail_next_flush = true;
    }

    /// Makes `key`'s record read as damaged on disk (an [`Error::Corrupt`]) until it is put
    /// again, as a flipped bit in the log engine's segment would.
    pub fn damage(&mut self, key: &[u8]) {
        self.damaged.insert(Bytes::copy_from_slice(key));
    }

    /// Refuses the call if an earlier flush failed.
    fn check_running(&self) -> Result<()> {
        match &self.stopped {
            Some(why) => Err(Error::Stopped(why.clone())),
            None => Ok(()),
        }
    }
}

impl Engine for MemoryEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Record>> {
        if self.damaged.contains(key) {
            let reason = "body checksum mismatch (damaged by a test)".to_string();
            return Err(Error::Corrupt { path: "memory".into(), offset: 0, reason });
        }
        Ok(self.keydir.get(key).map(|slot| Record {
            version: slot.meta.version,
            value: slot.at.clone(),
            expire_at_ms: slot.meta.expire_at_ms,
        }))
    }

    fn meta(&self, key: &[u8]) -> Option<Meta> {
        self.keydir.get(key).map(|slot| slot.meta)
    }

    fn put(&mut self, key: Bytes, record: Record) -> Result<()> {
        self.check_running()?;
        let size = key.len() as u64 + record.value.as_ref().map_or(0, |v| v.len() as u64);
        self.unflushed_bytes += size;
        self.stats.bytes_written += size;
        let meta = record.meta();
        if !self.damaged.is_empty() {
            self.damaged.remove(&key);
        }
        // A copy, for the reason the keydir copies keys: the value may share a larger buffer.
        let value = record.value.as_deref().map(Bytes::copy_from_slice);
        if let Some(old) = self.keydir.insert(key, meta, value) {
            self.stats.dead_bytes += old.meta.value_len as u64;
        }
        Ok(())
    }

    fn scan(&self, from: Bound<&[u8]>, limit: usize) -> Vec<(Bytes, Meta)> {
        self.keydir.scan(from, limit)
    }

    fn expiring(&self, until_ms: u64, limit: usize) -> Vec<Bytes> {
        self.keydir.expiring(until_ms, limit)
    }

    fn flush(&mut self, _now_ms: u64) -> Result<Flushed> {
        self.check_running()?;
        if std::mem::take(&mut self.fail_next_flush) {
            let why = "fsync failed: injected failure (memory engine)".to_string();
            self.stopped = Some(why.clone());
            return Err(Error::Stopped(why));
        }
        self.stats.fsyncs += 1;
        Ok(Flushed { bytes: std::mem::take(&mut self.unflushed_bytes), synced: true })
    }

    fn maintain(&mut self, _budget_bytes: u64) -> Result<()> {
        self.check_running()
    }

    fn stats(&self) -> EngineStats {
        EngineStats {
            keys: self.keydir.live(),
            tombstones: self.keydir.tombstones(),
            expires: self.keydir.expires(),
            segments: 1,
            ..self.stats
        }
    }

    fn last_timestamp(&self) -> Timestamp {
        self.keydir.last_timestamp()
    }
}
