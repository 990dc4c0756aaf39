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
///
/// A physical record (log format 5, `log_format = "physical"`) is encoded with its `changes`
/// empty: they are the records its [`Physical::extents`] hold, decoded from them when it is
/// read from a disk or a peer, so the bytes are shipped once and every reader of the log
/// (rollback files, `log show`, change streams) still sees its changes.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "RecordWire")]
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
    /// The storage engine's bytes, when the leader logged the request physically
    /// (`log_format = "physical"`): `changes` are then the records they hold, and `olds` empty.
    pub physical: Option<Physical>,
}

/// What a physical record holds (`log_format = "physical"`, WAL shipping): the bytes the
/// leader's log engine appended to its active segment for one request and where it put them,
/// or a compaction that every replica runs at the same place in the log, so that its outputs
/// are the same bytes on every replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Physical {
    /// The bytes, in the order the engine wrote them; empty for a record of compaction alone.
    pub extents: Vec<Extent>,
    /// The segments, as (base, generation), of a compaction every replica runs whole after
    /// writing the extents, at this place in the log; empty for none.
    pub compact: Vec<(u64, u32)>,
    /// The base of the leader's active segment when it logged the compaction: a replica whose
    /// active segment is older seals it first, as the leader did (0 without a compaction).
    pub active: u64,
}

/// A run of whole storage records as the leader's log engine wrote them: `bytes` at `offset`
/// of the segment of base `segment` (generation 0, written by puts). See `storage/log/mod.rs`
/// for the record format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    /// The segment's base (its file is `{segment:020}-00000.seg`).
    pub segment: u64,
    /// Where in the segment the bytes start.
    pub offset: u64,
    /// The records, back to back.
    pub bytes: Bytes,
}

impl Serialize for LogRecord {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        // A physical record's changes are its extents' records: shipped once, as bytes.
        let changes: &[Change] = if self.physical.is_some() { &[] } else { &self.changes };
        let mut s = serializer.serialize_struct("LogRecord", 8)?;
        s.serialize_field("lsn", &self.lsn)?;
        s.serialize_field("epoch", &self.epoch)?;
        s.serialize_field("changes", changes)?;
        s.serialize_field("part", &self.part)?;
        s.serialize_field("parts", &self.parts)?;
        s.serialize_field("olds", &self.olds)?;
        s.serialize_field("statement", &self.statement)?;
        s.serialize_field("physical", &self.physical)?;
        s.end()
    }
}

/// A [`LogRecord`] as encoded: a physical one without its changes.
#[derive(Deserialize)]
struct RecordWire {
    lsn: Lsn,
    epoch: Epoch,
    changes: Vec<Change>,
    part: u32,
    parts: u32,
    olds: Vec<Old>,
    statement: Option<Statement>,
    physical: Option<Physical>,
}

impl TryFrom<RecordWire> for LogRecord {
    type Error = String;

    fn try_from(w: RecordWire) -> Result<LogRecord, String> {
        let mut changes = w.changes;
        if let Some(physical) = &w.physical {
            if !changes.is_empty() || !w.olds.is_empty() || w.statement.is_some() {
                return Err(format!("physical record {} also holds changes, old values or a statement", w.lsn));
            }
            changes = physical.changes().map_err(|e| format!("physical record {}: {e}", w.lsn))?;
        }
        Ok(LogRecord {
            lsn: w.lsn,
            epoch: w.epoch,
            changes,
            part: w.part,
            parts: w.parts,
            olds: w.olds,
            statement: w.statement,
            physical: w.physical,
        })
    }
}

impl Physical {
    /// The changes its extents make, in order, each storage record checked whole (checksums,
    /// fields, lengths): an error names the extent and the offset in its segment. A write the
    /// request undid is left out with its undoing: a failed script's writes are followed in
    /// the engine by the records they replaced, put back with their older versions (or a
    /// version-0 tombstone for a key that had none), which readers of the log must not take
    /// for changes (the bytes still ship: the follower's files hold them too).
    pub fn changes(&self) -> Result<Vec<Change>, String> {
        let mut changes = Vec::new();
        for extent in &self.extents {
            let offset = |at: usize| extent.offset.saturating_add(at as u64);
            let records = crate::storage::decode_records(&extent.bytes)
                .map_err(|(at, e)| format!("segment {} offset {}: {e}", extent.segment, offset(at)))?;
            changes.extend(records.into_iter().map(|(key, record)| Change { key, record }));
        }
        // Per key, the kept writes, their versions rising: an older version after them undoes
        // those above it.
        let mut kept = vec![true; changes.len()];
        let mut by_key: std::collections::BTreeMap<&[u8], Vec<usize>> = std::collections::BTreeMap::new();
        for (j, change) in changes.iter().enumerate() {
            let stack = by_key.entry(&change.key[..]).or_default();
            while let Some(&i) = stack.last().filter(|&&i| changes[i].record.version > change.record.version) {
                stack.pop();
                (kept[i], kept[j]) = (false, false);
            }
            if kept[j] {
                stack.push(j);
            }
        }
        let mut kept = kept.into_iter();
        changes.retain(|_| kept.next().unwrap_or(true));
        Ok(changes)
    }

    /// Bytes its extents hold.
    pub fn bytes(&self) -> usize {
        self.extents.iter().map(|e| e.bytes.len()).sum()
    }
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
        LogRecord { lsn, epoch, changes, part: 0, parts: 1, olds: Vec::new(), statement: None, physical: None }
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
        if let Some(physical) = &self.physical {
            // Shipped as its extents alone.
            return 40 + physical.bytes() + 24 * physical.extents.len() + 12 * physical.compact.len();
        }
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
