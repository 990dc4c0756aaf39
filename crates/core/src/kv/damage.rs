//! Damaged records: what a node does when a read finds a record that fails its checksum.
//!
//! A flipped bit on disk is found when something reads the record: a client's read, a
//! digest, a snapshot for a follower, a compaction. Stopping the node then (what
//! `corruption = "stop"` does) turns one bad record into a node that is down, and, because
//! the record is still there after a restart, down again at the next read of that key: a
//! crash loop over one key.
//!
//! With `corruption = "repair"` (the default) the node stays up and says it is degraded:
//!
//! - The read that found the damage, and every later read of that key, fails with an error
//!   that names the key, the file and the offset ([`Damage::reply`]); a write that must read
//!   the old value first (INCR, APPEND, SET ... GET) fails the same way and changes nothing.
//!   Every other key is served as before.
//! - The key is listed in the store's [`DamagedKeys`], shown in the node's status, INFO and
//!   metrics, and logged once with its file and offset.
//! - A write that replaces the key's record (SET, DEL, a replicated change, a repair from
//!   another replica) makes the damaged record dead and takes the key off the list. The
//!   replica layer asks a healthy replica for the damaged keys' records (see
//!   `single_leader/repair.rs`); the engine then rewrites the segment that held them.
//!
//! An error of the disk itself (a failed write or fsync) still stops the node: that is a
//! different promise, and retrying it would lie about what is durable.
//!
//! CAVEATS
//! - The database map (which namespace each database uses) is read when the store opens: if
//!   its record is damaged the store does not open, naming the file and offset, since no key
//!   could be placed in its database. Restore the node from a replica.
//! - Damage is found only by reading: a record nobody reads stays damaged, unlisted, until a
//!   digest, a snapshot or a compaction reads it.
//! - The list keeps at most [`DAMAGED_KEYS_MAX`] keys; past it the node still refuses every
//!   damaged read, and counts the keys it could not list.

use crate::error::Error;
use crate::kv::Reply;
use bytes::Bytes;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Damaged keys a store lists at most (each with its file and offset); past it they are
/// counted only.
pub const DAMAGED_KEYS_MAX: usize = 10_000;

/// What a node does when a read finds a damaged record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Corruption {
    /// Stay up, refuse reads of the damaged keys, and repair them from a healthy replica.
    #[default]
    Repair,
    /// Stop the node, as an I/O error does (it stops again at the next read after a restart).
    Stop,
}

impl std::str::FromStr for Corruption {
    type Err = String;

    fn from_str(text: &str) -> Result<Corruption, String> {
        match text {
            "repair" => Ok(Corruption::Repair),
            "stop" => Ok(Corruption::Stop),
            other => Err(format!("corruption must be \"repair\" or \"stop\", not {other:?}")),
        }
    }
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Corruption::Repair => "repair",
            Corruption::Stop => "stop",
        })
    }
}

/// Where a damaged record is, and what check it failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Damage {
    /// The file that holds it.
    pub path: PathBuf,
    /// The record's byte offset in that file.
    pub offset: u64,
    /// The check it failed.
    pub reason: String,
}

impl Damage {
    /// The damage an [`Error::Corrupt`] or [`Error::Damaged`] reports; `None` for any other
    /// error.
    pub fn of(error: &Error) -> Option<Damage> {
        match error {
            Error::Corrupt { path, offset, reason } | Error::Damaged { path, offset, reason, .. } => {
                Some(Damage { path: path.clone(), offset: *offset, reason: reason.clone() })
            }
            _ => None,
        }
    }

    /// The error a read of `key` (as the client named it) gets.
    pub fn reply(&self, key: &[u8]) -> Reply {
        // Its own error code, as Redis's MOVED or READONLY: a client can tell it from a
        // request it got wrong, and read the key elsewhere.
        Reply::Error(format!(
            "DAMAGED the record of key '{}' is damaged on disk ({} at offset {}: {}); this node is degraded and \
             repairs it from a healthy replica where it has one; read it from another replica meanwhile",
            String::from_utf8_lossy(key).escape_debug(),
            self.path.display(),
            self.offset,
            self.reason
        ))
    }
}

/// The keys a store found damaged and has not yet seen rewritten.
#[derive(Debug, Default)]
pub struct DamagedKeys {
    /// Physical key -> its damage, at most [`DAMAGED_KEYS_MAX`].
    keys: BTreeMap<Bytes, Damage>,
    /// Damaged reads past the limit (keys not listed, so not repaired until listed; a key
    /// read twice counts twice). Back to 0 when the list empties: those keys are listed when
    /// read again.
    unlisted: u64,
}

impl DamagedKeys {
    /// Notes that `key`'s record is damaged; true the first time (to log it once; past the
    /// limit, for the first unlisted read only).
    pub fn insert(&mut self, key: &Bytes, damage: Damage) -> bool {
        if self.keys.contains_key(key) {
            return false;
        }
        if self.keys.len() >= DAMAGED_KEYS_MAX {
            self.unlisted += 1;
            // Logged the first time only: every read of an unlisted key comes here.
            return self.unlisted == 1;
        }
        self.keys.insert(key.clone(), damage);
        true
    }

    /// Notes that `key`'s record was replaced: it is no longer damaged.
    pub fn rewritten(&mut self, key: &[u8]) {
        if !self.keys.is_empty() && self.keys.remove(key).is_some() && self.keys.is_empty() {
            self.unlisted = 0;
        }
    }

    /// True when no damaged key is known.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.unlisted == 0
    }

    /// How many damaged keys are known: those listed, and the damaged reads past the list.
    pub fn count(&self) -> u64 {
        self.keys.len() as u64 + self.unlisted
    }

    /// The listed keys, in order, with their damage.
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &Damage)> {
        self.keys.iter()
    }

    /// The listed keys in `from`.., in order.
    pub fn range_from(&self, from: std::ops::Bound<Bytes>) -> impl Iterator<Item = &Bytes> {
        self.keys.range((from, std::ops::Bound::Unbounded)).map(|(key, _)| key)
    }

    /// The damage of `key`, if it is listed.
    pub fn get(&self, key: &[u8]) -> Option<&Damage> {
        self.keys.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{parse_command, Request, Store};
    use crate::storage::{Engine, FsyncPolicy, LogEngine, LogOptions};
    use crate::version::NodeId;

    fn damage(offset: u64) -> Damage {
        Damage { path: "/d/0.seg".into(), offset, reason: "body checksum mismatch".into() }
    }

    #[test]
    fn keys_are_listed_once_until_rewritten_and_counted_past_the_limit() {
        let mut keys = DamagedKeys::default();
        assert!(keys.is_empty());
        assert!(keys.insert(&Bytes::from("a"), damage(1)), "first time: log it");
        assert!(!keys.insert(&Bytes::from("a"), damage(1)), "known: do not log again");
        assert_eq!(keys.count(), 1);
        keys.rewritten(b"a");
        assert!(keys.is_empty());
        for i in 0..DAMAGED_KEYS_MAX + 3 {
            keys.insert(&Bytes::from(i.to_string()), damage(i as u64));
        }
        assert_eq!(keys.count(), DAMAGED_KEYS_MAX as u64 + 3);
        assert_eq!(keys.iter().count(), DAMAGED_KEYS_MAX);
        // Once every listed key is rewritten, the node is healthy again: the unlisted ones
        // are listed when read again.
        for i in 0..DAMAGED_KEYS_MAX {
            keys.rewritten(i.to_string().as_bytes());
        }
        assert!(keys.is_empty(), "{}", keys.count());
    }

    #[test]
    fn the_error_names_the_key_the_file_and_the_offset() {
        let Reply::Error(text) = damage(4096).reply(b"user:1") else { panic!("an error") };
        assert!(text.starts_with("DAMAGED "), "{text}");
        assert!(text.contains("'user:1'") && text.contains("/d/0.seg at offset 4096"), "{text}");
        assert_eq!("stop".parse::<Corruption>(), Ok(Corruption::Stop));
        assert!("halt".parse::<Corruption>().unwrap_err().contains("\"repair\" or \"stop\""));
    }

    /// A store over a log engine in `dir` with `ok`, `bad` and `n` written, whose records of
    /// `bad` and `n` then rot on disk (a flipped bit in each value) while it runs; values are
    /// not cached, so reads go to the disk.
    fn damaged_store(dir: &std::path::Path, corruption: Corruption) -> Store<LogEngine> {
        let options = LogOptions { fsync: FsyncPolicy::Never, value_cache_bytes_max: 0, ..LogOptions::default() };
        let mut store = Store::new(LogEngine::open(dir, options).unwrap(), NodeId(1));
        store.set_corruption(corruption);
        for (key, value) in [("ok", "fine"), ("bad", "0123456789"), ("n", "5")] {
            assert_eq!(store.execute(1, parse(&format!("SET {key} {value}"))).unwrap(), Reply::Ok);
        }
        store.engine_mut().flush(1).unwrap();
        let segment = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .unwrap();
        let mut bytes = std::fs::read(&segment).unwrap();
        let at = bytes.windows(10).position(|w| w == b"0123456789").unwrap();
        bytes[at + 3] ^= 0x20;
        let at = bytes.iter().rposition(|&b| b == b'5').unwrap();
        bytes[at] ^= 0x01;
        std::fs::write(&segment, bytes).unwrap();
        store
    }

    fn parse(line: &str) -> Request {
        let args: Vec<Bytes> = line.split(' ').map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
        parse_command(&args).unwrap().unwrap()
    }

    #[test]
    fn a_damaged_key_is_refused_naming_its_file_while_the_others_are_served_until_it_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = damaged_store(dir.path(), Corruption::Repair);
        let Reply::Error(text) = store.execute(2, parse("GET bad")).unwrap() else { panic!("refused") };
        assert!(text.starts_with("DAMAGED") && text.contains("'bad'") && text.contains(".seg at offset"), "{text}");
        assert_eq!(store.execute(2, parse("GET ok")).unwrap(), Reply::Bulk(Bytes::from("fine")));
        assert_eq!(store.damaged().count(), 1);
        // A write that reads the old value first fails whole: nothing is written.
        let Reply::Error(text) = store.execute(2, parse("INCR n")).unwrap() else { panic!("refused") };
        assert!(text.contains("'n'"), "{text}");
        assert_eq!(store.damaged().count(), 2);
        // In a transaction, only the request that read the damaged record fails.
        let exec =
            Request::Exec { requests: vec![parse("SET x 1"), parse("GET bad"), parse("GET x")], watched: vec![] };
        let Reply::Array(replies) = store.execute(2, exec).unwrap() else { panic!("an array") };
        assert_eq!(replies[0], Reply::Ok);
        assert!(matches!(&replies[1], Reply::Error(t) if t.starts_with("DAMAGED")), "{replies:?}");
        assert_eq!(replies[2], Reply::Bulk(Bytes::from("1")));
        // A write that replaces the record repairs the key.
        assert_eq!(store.execute(3, parse("SET bad new")).unwrap(), Reply::Ok);
        assert_eq!(store.execute(3, parse("GET bad")).unwrap(), Reply::Bulk(Bytes::from("new")));
        assert_eq!(store.damaged().count(), 1, "n is still damaged");
        assert!(store.damaged().get(b"n").is_some());
    }

    #[test]
    fn corruption_stop_stops_at_the_damaged_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = damaged_store(dir.path(), Corruption::Stop);
        let error = store.execute(2, parse("GET bad")).unwrap_err();
        assert!(matches!(error, Error::Corrupt { .. }) && error.is_fatal(), "{error}");
        assert!(store.damaged().is_empty());
    }

    #[test]
    fn a_damaged_database_map_refuses_to_open_the_store_naming_it_rather_than_panic() {
        use crate::storage::{MemoryEngine, Record};
        let mut engine = MemoryEngine::new();
        let map = Bytes::from_static(crate::kv::databases::DB_MAP_KEY);
        let record = Record { version: Default::default(), value: Some(Bytes::from("x")), expire_at_ms: None };
        engine.put(map.clone(), record).unwrap();
        engine.damage(&map);
        let Err(error) = Store::open(engine, NodeId(1)) else { panic!("opened over a damaged map") };
        assert!(matches!(&error, Error::Corrupt { reason, .. } if reason.contains("database map")), "{error}");
    }
}
