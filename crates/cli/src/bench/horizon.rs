//! The insert horizon: which record an insert creates next, and up to where reads may look.
//!
//! Workload D inserts new records past the newest and reads the latest ones. Two numbers do that,
//! as YCSB's `AcknowledgedCounterGenerator` does: inserts claim the next record number at once
//! ([`Horizon::claim`]), but reads look only below the *acknowledged* horizon
//! ([`Horizon::readable`]), one past the newest record such that it and every record before it
//! were answered. Inserts finish out of order across connections; a record answered early waits in
//! a set until the gap below it closes. So a read never asks for a record whose insert is still in
//! flight, and a miss means a lost write, not a race in the client.
//!
//! An insert lost with its connection is released as if answered (the run loop does it), so that
//! the horizon keeps moving and the set of early records stays small; a read of such a record
//! may then miss, which is what a lost write is, and the report counts it.
//!
//! CAVEATS
//! - Records answered early wait in a set under one lock: a run whose inserts finish far out of
//!   order holds more of them.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The insert horizon shared by every connection of a run.
#[derive(Debug)]
pub struct Horizon {
    /// The record the next insert creates.
    next: AtomicU64,
    /// One past the newest record answered with every record before it.
    readable: AtomicU64,
    /// Records answered above `readable`, waiting for the gap below them to close.
    early: Mutex<BTreeSet<u64>>,
}

impl Horizon {
    /// A horizon after `records` loaded records.
    pub fn new(records: u64) -> Horizon {
        Horizon { next: AtomicU64::new(records), readable: AtomicU64::new(records), early: Mutex::default() }
    }

    /// Claims the record the next insert creates.
    pub fn claim(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Marks `record`'s insert answered.
    pub fn acknowledge(&self, record: u64) {
        let mut early = self.early.lock().expect("no panic holds this lock");
        early.insert(record);
        let mut readable = self.readable.load(Ordering::Relaxed);
        while early.remove(&readable) {
            readable += 1;
        }
        self.readable.store(readable, Ordering::Relaxed);
    }

    /// One past the newest record reads may ask for.
    pub fn readable(&self) -> u64 {
        self.readable.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_see_only_records_acknowledged_without_gaps() {
        let h = Horizon::new(10);
        let claimed: Vec<u64> = (0..4).map(|_| h.claim()).collect();
        assert_eq!(claimed, [10, 11, 12, 13]);
        // (acknowledged, readable after it)
        let table = [(12, 10), (10, 11), (13, 11), (11, 14)];
        for (record, readable) in table {
            h.acknowledge(record);
            assert_eq!(h.readable(), readable, "after acknowledging {record}");
        }
        assert_eq!(h.claim(), 14);
    }
}
