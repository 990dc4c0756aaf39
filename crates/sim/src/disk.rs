//! A simulated disk: an engine whose writes are durable only once the simulator says their
//! fsync completed, and a crash that keeps what was durable plus a torn prefix of the rest.
//!
//! The replica writes through [`SimEngine`], a memory engine that also journals every put in
//! the node's [`Disk`]. The simulator models the pipelined runtime: after a batch it takes a
//! mark ([`Disk::mark`]) and, some virtual milliseconds later, completes that batch's fsync
//! ([`Disk::sync_to`]) — for a leaderless node, whose engine is its write-ahead log. A
//! single-leader node's batch fsync is its replication log's alone: its engine's journal is
//! synced only when the replica asks (`Engine::sync_written` and `flush`: before its log drops
//! records, before a reset). A crash ([`Disk::crash`]) keeps the durable records and a random
//! prefix of the journal since (the writes that happened to reach the platter before the
//! power went: a torn tail), and forgets the rest. The replication log is treated the same
//! way by the node (see `node.rs`): records through the last completed fsync survive, plus a
//! random prefix of the ones after.

use bytes::Bytes;
use rand::Rng;
use replikv_core::storage::{Engine, EngineStats, Flushed, MemoryEngine, Meta, Record};
use replikv_core::version::Timestamp;
use replikv_core::Result;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::rc::Rc;

/// A node's disk: what survives a crash, and what is still in flight.
#[derive(Debug, Default)]
pub struct Disk {
    /// Every key's newest durable record.
    durable: BTreeMap<Bytes, Record>,
    /// Puts since the durable state, oldest first, not yet known durable.
    pending: Vec<(Bytes, Record)>,
    /// Puts made durable since the disk was created (the journal's offset).
    synced: u64,
}

impl Disk {
    /// A position in the journal: every put so far.
    pub fn mark(&self) -> u64 {
        self.synced + self.pending.len() as u64
    }

    /// The fsync that covers every put up to `mark` completed.
    pub fn sync_to(&mut self, mark: u64) {
        let count = mark.saturating_sub(self.synced).min(self.pending.len() as u64) as usize;
        for (key, record) in self.pending.drain(..count) {
            self.durable.insert(key, record);
        }
        self.synced += count as u64;
    }

    /// The power went: keeps the durable records and a random prefix of the pending ones.
    /// Returns how many pending puts survived and how many were lost.
    pub fn crash(&mut self, rng: &mut impl Rng) -> (usize, usize) {
        let keep = rng.gen_range(0..=self.pending.len());
        let lost = self.pending.len() - keep;
        self.sync_to(self.synced + keep as u64);
        self.pending.clear();
        (keep, lost)
    }

    /// The durable records, in key order.
    pub fn durable(&self) -> &BTreeMap<Bytes, Record> {
        &self.durable
    }
}

/// A memory engine that journals its puts in a shared [`Disk`].
#[derive(Debug)]
pub struct SimEngine {
    /// What the replica reads: every put, durable or not.
    live: MemoryEngine,
    /// The node's disk, shared with the simulator.
    disk: Rc<RefCell<Disk>>,
}

impl SimEngine {
    /// An engine over `disk`, holding its durable records (a fresh node, or one restarting
    /// after a crash).
    pub fn open(disk: Rc<RefCell<Disk>>) -> Result<SimEngine> {
        let mut live = MemoryEngine::new();
        for (key, record) in disk.borrow().durable.iter() {
            live.put(key.clone(), record.clone())?;
        }
        Ok(SimEngine { live, disk })
    }
}

impl Engine for SimEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Record>> {
        self.live.get(key)
    }
    fn meta(&self, key: &[u8]) -> Option<Meta> {
        self.live.meta(key)
    }
    fn put(&mut self, key: Bytes, record: Record) -> Result<()> {
        self.disk.borrow_mut().pending.push((key.clone(), record.clone()));
        self.live.put(key, record)
    }
    fn scan(&self, from: Bound<&[u8]>, limit: usize) -> Vec<(Bytes, Meta)> {
        self.live.scan(from, limit)
    }
    fn expiring(&self, until_ms: u64, limit: usize) -> Vec<Bytes> {
        self.live.expiring(until_ms, limit)
    }
    /// A synchronous flush (a follower installing a snapshot calls it): durable at once.
    fn flush(&mut self, now_ms: u64) -> Result<Flushed> {
        let mut disk = self.disk.borrow_mut();
        let mark = disk.mark();
        disk.sync_to(mark);
        self.live.flush(now_ms)
    }
    /// The runtime's half-flush: nothing becomes durable until the simulator completes the
    /// batch's fsync.
    fn write_out(&mut self, _now_ms: u64) -> Result<replikv_core::storage::WrittenOut> {
        Ok(replikv_core::storage::WrittenOut::default())
    }
    /// The replication log is the write-ahead log: nothing becomes durable until
    /// `sync_written`.
    fn write_out_unsynced(&mut self, _now_ms: u64) -> Result<u64> {
        Ok(0)
    }
    /// Durable at once, as `flush`.
    fn sync_written(&mut self, now_ms: u64) -> Result<()> {
        self.flush(now_ms).map(|_| ())
    }
    fn maintain(&mut self, budget_bytes: u64) -> Result<()> {
        self.live.maintain(budget_bytes)
    }
    fn stats(&self) -> EngineStats {
        self.live.stats()
    }
    fn last_timestamp(&self) -> Timestamp {
        self.live.last_timestamp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use replikv_core::version::{NodeId, Version};

    fn record(ms: u64) -> Record {
        let version = Version { ts: Timestamp { millis: ms, logical: 0 }, node: NodeId(1) };
        Record { version, value: Some(Bytes::from(ms.to_string())), expire_at_ms: None }
    }

    #[test]
    fn only_synced_puts_and_a_torn_prefix_survive_a_crash() {
        let disk = Rc::new(RefCell::new(Disk::default()));
        let mut engine = SimEngine::open(disk.clone()).unwrap();
        engine.put(Bytes::from("a"), record(1)).unwrap();
        let mark = disk.borrow().mark();
        disk.borrow_mut().sync_to(mark);
        for ms in 2..12 {
            engine.put(Bytes::from(format!("k{ms}")), record(ms)).unwrap();
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let (kept, lost) = disk.borrow_mut().crash(&mut rng);
        assert_eq!(kept + lost, 10);
        let reopened = SimEngine::open(disk.clone()).unwrap();
        assert!(reopened.get(b"a").unwrap().is_some(), "synced survives");
        let survivors = (2..12).filter(|ms| reopened.get(format!("k{ms}").as_bytes()).unwrap().is_some()).count();
        assert_eq!(survivors, kept, "a prefix of the unsynced puts, no more");
        for ms in 2..2 + kept as u64 {
            assert!(reopened.get(format!("k{ms}").as_bytes()).unwrap().is_some(), "k{ms}: the prefix, in order");
        }
    }
}
