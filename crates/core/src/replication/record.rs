//! The replication log's records: what the leader ships and every follower appends.

use crate::storage::Record;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A log sequence number: the position of a record in the leader's log, from 1, contiguous.
/// 0 means "before the first record".
pub type Lsn = u64;

/// A leader's term. Every record carries the epoch of the leader that wrote it.
pub type Epoch = u64;

/// One key's change: its key and the record that is now its newest (a value or a tombstone,
/// with its version and expiry deadline). Logical format (DESIGN §6): the new value in full,
/// so that applying a change twice, or over a newer snapshot, is harmless.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The key written.
    pub key: Bytes,
    /// What the key now holds.
    pub record: Record,
}

/// One entry of the replication log: the changes of one client request (an MSET's keys, a
/// transaction's writes), at one position. A request too big for one record (see
/// `replica::RECORD_BYTES_SOFT_MAX`) spans several consecutive records of one epoch, its
/// *parts*; a replica applies a request only once it holds every part, all in one step, so
/// that no reader sees half of it. A request whose later parts never come (its leader died
/// while shipping it, and the next leader's history goes on without them) is *abandoned*: it
/// stays in the log and is never applied.
///
/// Encoded with postcard, fields in this order. A record written before `part` and `parts`
/// existed (log format 1) ends after `changes` and reads as a whole request (0 of 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Its position: the previous record's plus one.
    pub lsn: Lsn,
    /// The epoch of the leader that wrote it.
    pub epoch: Epoch,
    /// The keys it changed, in the order the request wrote them.
    pub changes: Vec<Change>,
    /// Its index among its request's records, from 0: the request's first record is at
    /// `lsn - part`.
    pub part: u32,
    /// How many records its request spans (1 for all but the largest requests).
    pub parts: u32,
}

impl LogRecord {
    /// A record holding a whole request.
    pub fn whole(lsn: Lsn, epoch: Epoch, changes: Vec<Change>) -> LogRecord {
        LogRecord { lsn, epoch, changes, part: 0, parts: 1 }
    }

    /// True when its request continues in the next record.
    pub fn continues(&self) -> bool {
        u64::from(self.part) + 1 < u64::from(self.parts)
    }

    /// The lsn of its request's first record.
    pub fn request_start(&self) -> Lsn {
        self.lsn.saturating_sub(Lsn::from(self.part))
    }

    /// Why its `part` and `parts` cannot be, if they cannot: a part past its request's count,
    /// or a request starting before lsn 1. Records from a disk or a peer are checked with it.
    pub fn parts_error(&self) -> Option<String> {
        (self.part >= self.parts || Lsn::from(self.part) >= self.lsn).then(|| {
            format!("record {} claims to be part {} of a request of {} records", self.lsn, self.part, self.parts)
        })
    }

    /// An estimate of its encoded size in bytes, for batching and retention budgets.
    pub fn size_hint(&self) -> usize {
        24 + self
            .changes
            .iter()
            .map(|c| c.key.len() + c.record.value.as_ref().map_or(0, |v| v.len()) + 40)
            .sum::<usize>()
    }
}
