//! The conflict log: every conflict a leader detects, kept durably in its datacenter, so that
//! nothing a resolution discards is lost in silence (DESIGN §7a: "a conflict log that loses
//! nothing is the minimum", as BDR's conflict history table).
//!
//! An entry names the key, the datacenter whose change met the conflict, the time, the rule
//! that resolved it, and the writes on each side with their versions and origins: what the
//! receiver held that the change had not seen (the lecture's "old value differs"), what
//! arrived, what the rule kept and what it lost. Entries live in the store, apart from the
//! clients' keys (namespace [`CONFLICTS_NAMESPACE`]), written in the same log record as the
//! change that caused them, so a datacenter's followers hold them too and a failover keeps
//! them. A key that follows DESIGN §3's `table.row.column` convention is shown as the
//! lecture's record ([`ConflictEntry::lecture`]).
//!
//! Retention: at most [`CONFLICTS_KEPT_MAX`] entries, kept in a ring of as many slots; past
//! it each new entry replaces the oldest, counted and warned about. A value longer than [`CONFLICT_VALUE_BYTES_MAX`] is kept cut to that
//! length, with its full length beside it.

use super::conflict::Conflict;
use crate::causality::Sibling;
use crate::error::{Error, Result};
use crate::kv::{physical, Reply, Store};
use crate::storage::{Engine, Record};
use crate::version::{NodeId, Version};
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use std::ops::Bound;

/// The engine namespace of the multi-leader family's own records (a multi-leader node keeps
/// its clients' keys in 0): the conflict log and each datacenter's applied position.
pub const CONFLICTS_NAMESPACE: u8 = 2;

/// Entries the conflict log keeps at most; past it the oldest go.
pub const CONFLICTS_KEPT_MAX: usize = 10_000;

/// Bytes of one value an entry keeps at most.
pub const CONFLICT_VALUE_BYTES_MAX: usize = 4096;

/// Entries one listing returns at most.
pub const CONFLICTS_LISTED_MAX: usize = 1_000;

/// True for a key (physical) of the family's own records, in [`CONFLICTS_NAMESPACE`]: the
/// conflict log and the applied positions, which each datacenter keeps for itself (never
/// shipped, and left out of digests).
pub fn is_own_record(key: &[u8]) -> bool {
    matches!(key, [0, ns, ..] if *ns == CONFLICTS_NAMESPACE)
}

/// The prefix of every entry's key (in [`CONFLICTS_NAMESPACE`]).
const ENTRY_PREFIX: &[u8] = b"conflict/";

/// One write as the conflict log keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedWrite {
    /// The node that made it (its origin).
    pub origin: NodeId,
    /// Its version.
    pub version: Version,
    /// Its value (cut to [`CONFLICT_VALUE_BYTES_MAX`]), or `None` for a delete.
    pub value: Option<Bytes>,
    /// The value's full length in bytes.
    pub bytes: u64,
}

impl LoggedWrite {
    fn of(sibling: &Sibling) -> LoggedWrite {
        let bytes = sibling.value.as_ref().map_or(0, |v| v.len() as u64);
        let value = sibling.value.as_ref().map(|v| v.slice(..v.len().min(CONFLICT_VALUE_BYTES_MAX)));
        LoggedWrite { origin: sibling.dot.node, version: sibling.version, value, bytes }
    }

    /// The value as text, for people: `(deleted)` for a delete, a cut value marked.
    pub fn shown(&self) -> String {
        match &self.value {
            None => "(deleted)".into(),
            Some(v) if (v.len() as u64) < self.bytes => {
                format!("{}... ({} bytes)", String::from_utf8_lossy(v).escape_debug(), self.bytes)
            }
            Some(v) => String::from_utf8_lossy(v).escape_debug().to_string(),
        }
    }
}

/// One conflict, as the log keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictEntry {
    /// Its number in its datacenter's log, from 0 (the order entries were written in).
    pub number: u64,
    /// When the receiving leader detected it (its clock, Unix milliseconds).
    pub at_ms: u64,
    /// The key (as the client named it).
    pub key: Bytes,
    /// The datacenter whose change met it.
    pub from_datacenter: String,
    /// The leader that detected it.
    pub detected_by: NodeId,
    /// The rule that resolved it: `lww`, `merge` or `app`.
    pub resolve: String,
    /// The receiver's writes the change had not seen.
    pub held: Vec<LoggedWrite>,
    /// The change's writes the receiver had not seen.
    pub arrived: Vec<LoggedWrite>,
    /// The writes that survive.
    pub kept: Vec<LoggedWrite>,
    /// The writes the resolution discarded (`lww`'s losers, siblings past the bound).
    pub lost: Vec<LoggedWrite>,
}

impl ConflictEntry {
    /// The entry for `conflict` on `key`.
    pub fn new(
        at_ms: u64,
        key: Bytes,
        from_datacenter: &str,
        detected_by: NodeId,
        conflict: &Conflict,
    ) -> ConflictEntry {
        let logged = |s: &[Sibling]| s.iter().map(LoggedWrite::of).collect();
        ConflictEntry {
            number: 0,
            at_ms,
            key,
            from_datacenter: from_datacenter.to_string(),
            detected_by,
            resolve: conflict.resolve.as_str().to_string(),
            held: logged(&conflict.held),
            arrived: logged(&conflict.arrived),
            kept: logged(&conflict.kept),
            lost: logged(&conflict.lost),
        }
    }

    /// The lecture's record, for a key of the form `table.row.column`: `table`, `key` (the
    /// row), `column`, `old_value` (what this leader held), `new_value` (what arrived), and
    /// `transaction` (the arriving write's version); `None` for other keys.
    pub fn lecture(&self) -> Option<Vec<(&'static str, String)>> {
        let (table, row, column) = crate::replication::show::table_row_column(&self.key)?;
        let values = |writes: &[LoggedWrite]| writes.iter().map(LoggedWrite::shown).collect::<Vec<_>>().join(", ");
        let transaction = self.arrived.iter().map(|w| w.version.to_string()).collect::<Vec<_>>().join(", ");
        Some(vec![
            ("table", table.to_string()),
            ("key", row.to_string()),
            ("column", column.to_string()),
            ("old_value", values(&self.held)),
            ("new_value", values(&self.arrived)),
            ("transaction", transaction),
        ])
    }
}

impl ConflictEntry {
    /// The entry as REPLIKV.CONFLICTS answers it: field and value pairs, as Redis's XINFO:
    /// `time_ms`, `key`, `datacenter` (whose change met it), `detected_by`, `resolve`, then
    /// `held`, `arrived`, `kept` and `lost`, each a list of writes `[origin, version, value or
    /// nil, bytes]`, and `lecture`: the lecture's record as pairs, or nil for a key that is not
    /// `table.row.column`.
    pub fn reply(&self) -> Reply {
        let text = |s: String| Reply::Bulk(Bytes::from(s));
        let writes = |w: &[LoggedWrite]| {
            Reply::Array(
                w.iter()
                    .map(|w| {
                        Reply::Array(vec![
                            text(w.origin.to_string()),
                            text(w.version.to_string()),
                            w.value.clone().map_or(Reply::Nil, Reply::Bulk),
                            Reply::Int(w.bytes as i64),
                        ])
                    })
                    .collect(),
            )
        };
        let lecture = match self.lecture() {
            Some(fields) => Reply::Array(
                fields.into_iter().flat_map(|(name, value)| [text(name.to_string()), text(value)]).collect(),
            ),
            None => Reply::Nil,
        };
        Reply::Array(vec![
            text("time_ms".into()),
            Reply::Int(self.at_ms as i64),
            text("key".into()),
            Reply::Bulk(self.key.clone()),
            text("datacenter".into()),
            text(self.from_datacenter.clone()),
            text("detected_by".into()),
            text(self.detected_by.to_string()),
            text("resolve".into()),
            text(self.resolve.clone()),
            text("held".into()),
            writes(&self.held),
            text("arrived".into()),
            writes(&self.arrived),
            text("kept".into()),
            writes(&self.kept),
            text("lost".into()),
            writes(&self.lost),
            text("lecture".into()),
            lecture,
        ])
    }
}

/// The physical key of slot `slot` of the ring of entries.
pub(super) fn slot_key(slot: u64) -> Bytes {
    let mut raw = BytesMut::with_capacity(ENTRY_PREFIX.len() + 8);
    raw.extend_from_slice(ENTRY_PREFIX);
    raw.put_u64(slot);
    physical(CONFLICTS_NAMESPACE, &raw.freeze())
}

/// Every stored entry that decodes, in slot order, and an error naming each one that does not.
fn scan<E: Engine>(store: &Store<E>) -> Result<(Vec<ConflictEntry>, Vec<Error>)> {
    let start = physical(CONFLICTS_NAMESPACE, &Bytes::from_static(ENTRY_PREFIX));
    let (mut out, mut undecodable) = (Vec::new(), Vec::new());
    let mut from = start.clone();
    let mut first = true;
    loop {
        let bound = if first { Bound::Included(&from[..]) } else { Bound::Excluded(&from[..]) };
        let batch = store.engine().scan(bound, 1024);
        first = false;
        let Some((last, _)) = batch.last() else { return Ok((out, undecodable)) };
        let last = last.clone();
        for (key, meta) in batch {
            if !key.starts_with(&start) {
                return Ok((out, undecodable));
            }
            if meta.tombstone {
                continue;
            }
            let Some(value) = store.engine().get(&key)?.and_then(|r| r.value) else { continue };
            match postcard::from_bytes::<ConflictEntry>(&value) {
                Ok(entry) => out.push(entry),
                Err(e) => undecodable.push(Error::InvalidInput(format!(
                    "conflict log entry {:?} does not decode: {e}",
                    String::from_utf8_lossy(&key)
                ))),
            }
        }
        from = last;
    }
}

/// What a leader keeps of its conflict log in memory: the next entry's number. Entries live
/// in a ring of `kept_max` slots (entry number modulo the size), so the log never holds more
/// than that, and a new entry past it replaces the oldest in place (no key is deleted, so no
/// tombstone piles up).
#[derive(Debug)]
pub struct ConflictLog {
    /// Slots in the ring.
    kept_max: usize,
    /// The next entry's number, once read from the store (at the first append of each
    /// leadership: another leader of this datacenter may have written since).
    next: Option<u64>,
    /// Entries held, as counted then and kept since.
    held: Option<usize>,
    /// Entries replaced by newer ones since start.
    pub dropped: u64,
    /// Entries written since start.
    pub written: u64,
}

impl ConflictLog {
    /// A log of at most `kept_max` entries (at least 1).
    pub fn new(kept_max: usize) -> ConflictLog {
        ConflictLog { kept_max: kept_max.max(1), next: None, held: None, dropped: 0, written: 0 }
    }

    /// Forgets the next entry's number: read it again from the store at the next append (the
    /// node no longer leads, and another leader may write the log meanwhile).
    pub fn forget(&mut self) {
        self.next = None;
    }

    /// Writes `entry` (in the caller's request, so it is logged with the change that caused
    /// it), replacing the oldest past the ring's size.
    pub fn append<E: Engine>(&mut self, store: &mut Store<E>, now_ms: u64, entry: &ConflictEntry) -> Result<()> {
        let next = match self.next {
            Some(next) => next,
            None => {
                // An entry that does not decode does not stop the datacenter taking changes:
                // it is reported, and its slot is written again when the ring comes round.
                let (stored, undecodable) = scan(store)?;
                for why in &undecodable {
                    tracing::error!("{why}: numbering the conflict log's next entries without it");
                }
                self.held = Some(stored.len() + undecodable.len());
                stored.iter().map(|e| e.number + 1).max().unwrap_or(0)
            }
        };
        let slot = next % self.kept_max as u64;
        let replaces = store.engine().meta(&slot_key(slot)).is_some_and(|m| !m.tombstone);
        let mut entry = entry.clone();
        entry.number = next;
        let version = store.stamp(now_ms, None);
        let value = postcard::to_allocvec(&entry).map_err(|e| Error::InvalidInput(format!("conflict entry: {e}")))?;
        store.put_record(slot_key(slot), Record { version, value: Some(Bytes::from(value)), expire_at_ms: None })?;
        self.next = Some(next + 1);
        self.written += 1;
        if replaces {
            self.dropped += 1;
            if self.dropped == 1 || self.dropped.is_multiple_of(1000) {
                tracing::warn!(
                    "the conflict log holds its {} entries (CONFLICTS_KEPT_MAX): each new one replaces the oldest \
                     ({} replaced so far); read them with REPLIKV.CONFLICTS before they go",
                    self.kept_max,
                    self.dropped
                );
            }
        } else {
            self.held = Some(self.held.unwrap_or(0) + 1);
        }
        Ok(())
    }

    /// Entries held, once counted.
    pub fn held(&self) -> Option<usize> {
        self.held
    }
}

/// The newest `count` entries (at most [`CONFLICTS_LISTED_MAX`]) whose key starts with
/// `prefix`, oldest first. A stored entry that does not decode is left out of the list and
/// named in the node's log (one bad entry must not hide the others).
pub fn list<E: Engine>(store: &Store<E>, prefix: &[u8], count: usize) -> Result<Vec<ConflictEntry>> {
    let count = count.min(CONFLICTS_LISTED_MAX);
    let (entries, undecodable) = scan(store)?;
    for why in &undecodable {
        tracing::error!("{why}: left out of the conflict log's listing");
    }
    let mut all: Vec<ConflictEntry> = entries.into_iter().filter(|e| e.key.starts_with(prefix)).collect();
    all.sort_by_key(|e| e.number);
    let skip = all.len().saturating_sub(count);
    Ok(all.split_off(skip))
}
