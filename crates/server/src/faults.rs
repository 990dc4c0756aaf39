//! Faults a test can switch on in a real node process, off unless asked for.
//!
//! [`FailingEngine`] wraps a real engine and makes its n-th flush (or write-out) fail as a disk whose fsync
//! returns EIO would, so that an end-to-end test can check what a failed fsync does to a
//! running node: the write in flight is not acknowledged, nothing after it is, and the node
//! exits. It is switched on by the hidden flag `--test-fail-fsync-after N`.

use bytes::Bytes;
use replikv_core::storage::{Engine, EngineStats, Flushed, Meta, Record, WrittenOut};
use replikv_core::version::Timestamp;
use replikv_core::{Error, Result};
use std::ops::Bound;

/// An engine whose flush number `fail_at` (counting from 1) fails, and every call after it.
pub struct FailingEngine<E> {
    /// The real engine.
    inner: E,
    /// Flushes so far.
    flushes: u64,
    /// The flush that fails.
    fail_at: u64,
}

impl<E> FailingEngine<E> {
    /// Wraps `inner` so that its flush number `fail_at` fails.
    pub fn new(inner: E, fail_at: u64) -> FailingEngine<E> {
        FailingEngine { inner, flushes: 0, fail_at }
    }

    /// The error every call returns once the injected failure happened.
    fn failed(&self) -> Result<()> {
        if self.flushes >= self.fail_at {
            return Err(Error::Stopped("fsync failed: injected by --test-fail-fsync-after".into()));
        }
        Ok(())
    }
}

impl<E: Engine> Engine for FailingEngine<E> {
    fn get(&self, key: &[u8]) -> Result<Option<Record>> {
        self.inner.get(key)
    }
    fn meta(&self, key: &[u8]) -> Option<Meta> {
        self.inner.meta(key)
    }
    fn put(&mut self, key: Bytes, record: Record) -> Result<()> {
        self.failed()?;
        self.inner.put(key, record)
    }
    fn scan(&self, from: Bound<&[u8]>, limit: usize) -> Vec<(Bytes, Meta)> {
        self.inner.scan(from, limit)
    }
    fn expiring(&self, until_ms: u64, limit: usize) -> Vec<Bytes> {
        self.inner.expiring(until_ms, limit)
    }
    fn flush(&mut self, now_ms: u64) -> Result<Flushed> {
        self.failed()?;
        self.flushes += 1;
        self.failed()?;
        self.inner.flush(now_ms)
    }
    fn write_out(&mut self, now_ms: u64) -> Result<WrittenOut> {
        self.failed()?;
        self.flushes += 1;
        self.failed()?;
        self.inner.write_out(now_ms)
    }
    fn maintain(&mut self, budget_bytes: u64) -> Result<()> {
        self.failed()?;
        self.inner.maintain(budget_bytes)
    }
    fn stats(&self) -> EngineStats {
        self.inner.stats()
    }
    fn last_timestamp(&self) -> Timestamp {
        self.inner.last_timestamp()
    }
}
