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

/// One entry of the replication log: the changes of one client request (a transaction: an
/// MSET's keys travel, and apply, together), at one position. A request too big for one
/// record (see `replica::RECORD_BYTES_SOFT_MAX`) spans several, which followers apply one at
/// a time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Its position: the previous record's plus one.
    pub lsn: Lsn,
    /// The epoch of the leader that wrote it.
    pub epoch: Epoch,
    /// The keys it changed, in the order the request wrote them.
    pub changes: Vec<Change>,
}

impl LogRecord {
    /// An estimate of its encoded size in bytes, for batching and retention budgets.
    pub fn size_hint(&self) -> usize {
        24 + self
            .changes
            .iter()
            .map(|c| c.key.len() + c.record.value.as_ref().map_or(0, |v| v.len()) + 40)
            .sum::<usize>()
    }
}
