//! The replication log's records: what the leader ships and every follower appends.

use crate::storage::Record;
use crate::version::Version;
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

/// The largest old value a change carries in full (the lecture's `old_value`); a larger one
/// is logged as its version and length only ([`Old::Omitted`]), so that an overwrite of a big
/// value does not double its record (a replicated value is at most 32 MiB, and a record
/// must fit in one peer frame).
pub const OLD_VALUE_LOGGED_BYTES_MAX: usize = 1024 * 1024;

/// Bytes of old values one request logs in full at most; past them its changes' old values
/// are logged as [`Old::Omitted`], so that a FLUSHALL of a large keyspace neither reads every
/// value nor doubles its records.
pub const OLD_VALUES_LOGGED_BYTES_PER_REQUEST_MAX: usize = 16 * 1024 * 1024;

// One change (a replicated value of 32 MiB, its key and its old value) fits in a peer frame
// of 64 MiB with room to spare, past a record's soft bound of 16 MiB of earlier changes.
const _: () = assert!(
    crate::single_leader::REPLICATED_VALUE_BYTES_MAX
        + crate::kv::CLIENT_KEY_BYTES_MAX
        + OLD_VALUE_LOGGED_BYTES_MAX
        + crate::single_leader::RECORD_BYTES_SOFT_MAX
        < 64 * 1024 * 1024
);

/// What a key held just before a change: the lecture's `old_value`, with its version. A
/// replica never needs it to apply the change (the new record is whole); it is there for
/// whoever reads the log (`replikv log show`, change data capture).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Old {
    /// Not known: the change was logged before the log kept old values (log format 2 and
    /// older), or logged again by a leader's recovery after a crash lost its record.
    Unknown,
    /// The key held no record: never written, or its tombstone was purged.
    Absent,
    /// The record the key held: a value (perhaps past its expiry) or a tombstone.
    Held(Record),
    /// A value over [`OLD_VALUE_LOGGED_BYTES_MAX`]: its version, deadline and length only.
    Omitted {
        /// The old value's version.
        version: Version,
        /// Its expiry deadline, if any.
        expire_at_ms: Option<u64>,
        /// Its length in bytes.
        bytes: u64,
    },
}

impl Old {
    /// What `held` (a key's record before a write, if any) is logged as.
    pub fn of(held: Option<Record>) -> Old {
        match held {
            None => Old::Absent,
            Some(Record { version, value: Some(value), expire_at_ms }) if value.len() > OLD_VALUE_LOGGED_BYTES_MAX => {
                Old::Omitted { version, expire_at_ms, bytes: value.len() as u64 }
            }
            Some(record) => Old::Held(record),
        }
    }

    /// Its version, when it names one.
    pub fn version(&self) -> Option<Version> {
        match self {
            Old::Held(record) => Some(record.version),
            Old::Omitted { version, .. } => Some(*version),
            Old::Unknown | Old::Absent => None,
        }
    }

    /// Bytes it adds to a record, about.
    fn size_hint(&self) -> usize {
        match self {
            Old::Held(record) => 24 + record.value.as_ref().map_or(0, |v| v.len()),
            Old::Omitted { .. } => 32,
            Old::Unknown | Old::Absent => 1,
        }
    }
}

/// One entry of the replication log: the changes of one client request (an MSET's keys, a
/// transaction's writes), at one position. A request too big for one record (see
/// `replica::RECORD_BYTES_SOFT_MAX`) spans several consecutive records of one epoch, its
/// *parts*; a replica applies a request only once it holds every part, all in one step, so
/// that no reader sees half of it. A request whose later parts never come (its leader died
/// while shipping it, and the next leader's history goes on without them) is *abandoned*: it
/// stays in the log and is never applied.
///
/// Its request is the transaction of the lecture's logical log: its id is the position of
/// the request's first record ([`LogRecord::transaction`]), it begins at part 0 and ends at
/// its last part, and a replica applies it whole or not at all.
///
/// Encoded with postcard, fields in this order. A record written before `statement` existed
/// (log format 3) ends after `olds` and reads as changes; one written before `olds` existed (log
/// format 2) ends after `parts` and reads with no old values ([`Old::Unknown`]); one written
/// before `part` and `parts` existed (format 1) ends after `changes` and reads as a whole
/// request (0 of 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// What each change's key held before it, in the order of `changes`; empty when not
    /// known (a record of log format 2 or older). See [`LogRecord::old`].
    pub olds: Vec<Old>,
    /// The client's request itself, when the leader logged it as a statement instead of its
    /// effects (`changes` and `olds` then empty, and the record a whole request).
    pub statement: Option<Statement>,
}

/// A client's write request as its leader executed it, logged instead of its effects
/// (`log_format = "statement"`, or `"mixed"` for a request it judged deterministic): every
/// replica executes it again, at its own clock and with its own random draws, as MySQL's
/// statement-based replication and Redis's verbatim script replication did. The versions of
/// its writes are the leader's ([`Statement::first`] on, one step of the clock per write), so a
/// deterministic request leaves every replica the same; one that reads the clock (a relative
/// TTL, `TIME` in a script) or draws a random number leaves them different (the lecture's
/// "nondeterministic function").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// The request, its database named ([`crate::kv::Request::in_db`]); a script by its text
    /// (an `EVALSHA` is logged as the `EVAL` it ran, as Redis propagated it).
    pub request: crate::kv::Request,
    /// The version of its first write on the leader.
    pub first: Version,
    /// The timestamp of its last write on the leader.
    pub last: crate::version::Timestamp,
    /// The keys it wrote, in the order it wrote them (a key once per write).
    pub keys: Vec<Bytes>,
    /// Why the leader judged it nondeterministic, if it did (`log_format = "statement"` logs it
    /// anyway, and warns).
    pub nondeterministic: Option<String>,
    /// The request's encoded length in bytes, counted once by the leader: for the size
    /// estimates of batching and retention, which must not encode it again at each look.
    pub request_bytes: u64,
}

impl LogRecord {
    /// A record holding a whole request.
    pub fn whole(lsn: Lsn, epoch: Epoch, changes: Vec<Change>) -> LogRecord {
        LogRecord { lsn, epoch, changes, part: 0, parts: 1, olds: Vec::new(), statement: None }
    }

    /// What the key of its `index`th change held before it ([`Old::Unknown`] when the record
    /// does not say).
    pub fn old(&self, index: usize) -> &Old {
        self.olds.get(index).unwrap_or(&Old::Unknown)
    }

    /// The id of its request's transaction: the position of the request's first record,
    /// unique in the log's history (a position is reused only by a new leader's record after
    /// the old one was cut, and then the epoch tells them apart).
    pub fn transaction(&self) -> Lsn {
        self.request_start()
    }

    /// True for its request's first record: the transaction begins here.
    pub fn begins(&self) -> bool {
        self.part == 0
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
    /// Old values that are not one per change are refused with it too.
    pub fn parts_error(&self) -> Option<String> {
        if self.part >= self.parts || Lsn::from(self.part) >= self.lsn {
            return Some(format!(
                "record {} claims to be part {} of a request of {} records",
                self.lsn, self.part, self.parts
            ));
        }
        if self.statement.is_some() && (self.parts != 1 || !self.changes.is_empty() || !self.olds.is_empty()) {
            return Some(format!("record {} holds a statement and changes, or spans records", self.lsn));
        }
        (!self.olds.is_empty() && self.olds.len() != self.changes.len()).then(|| {
            format!("record {} has {} changes but {} old values", self.lsn, self.changes.len(), self.olds.len())
        })
    }

    /// An estimate of its encoded size in bytes, for batching and retention budgets.
    pub fn size_hint(&self) -> usize {
        self.changes_size_hint()
            + self.olds.iter().map(Old::size_hint).sum::<usize>()
            + self.statement.as_ref().map_or(0, Statement::size_hint)
    }

    /// An estimate of the encoded size of its position and changes, old values left out: what
    /// a family that ships the changes alone (multi-leader) sends of it.
    pub fn changes_size_hint(&self) -> usize {
        24 + self
            .changes
            .iter()
            .map(|c| c.key.len() + c.record.value.as_ref().map_or(0, |v| v.len()) + 40)
            .sum::<usize>()
    }
}

impl Statement {
    /// A statement of `request`, its encoded length counted.
    pub fn new(
        request: crate::kv::Request,
        first: Version,
        last: crate::version::Timestamp,
        keys: Vec<Bytes>,
        nondeterministic: Option<String>,
    ) -> Statement {
        let request_bytes = postcard::experimental::serialized_size(&request).unwrap_or(0) as u64;
        Statement { request, first, last, keys, nondeterministic, request_bytes }
    }

    /// An estimate of its encoded size in bytes.
    pub fn size_hint(&self) -> usize {
        // Saturating: the count comes from a disk or a peer.
        (self.request_bytes as usize).saturating_add(64 + self.keys.iter().map(|k| k.len() + 2).sum::<usize>())
    }
}
