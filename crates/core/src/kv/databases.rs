//! Numbered databases (Redis's `SELECT`), as namespaces of one engine.
//!
//! The engine holds one ordered key space. Each database lives in a *namespace* of it, by a
//! prefix on the key the client named (its *physical* key):
//!
//! ```text
//! namespace 0, key not starting with 0x00   the key itself (so a one-database store is
//!                                           stored exactly as the client named its keys)
//! namespace 0, key starting with 0x00       00 00 key
//! namespace n in 1..=254                    00 n key
//! replikv's own records                     00 ff name   (never a client's key)
//! ```
//!
//! Which namespace a database number uses is the *database map*, itself a record of the
//! store (`00 ff "dbmap"`), so that `SWAPDB` is one write, replicated like any other, rather
//! than a rewrite of both databases. Without a map, database n uses namespace n. The map
//! lists only the databases that moved, as (database, namespace) byte pairs, so it is a
//! permutation of every number whatever the `databases` setting.
//!
//! A namespace's keys are contiguous in the engine's order and sorted as the client's keys
//! are, so `KEYS`, `SCAN` and `FLUSHDB` walk one range (two for namespace 0: the escaped
//! keys, then the rest). The store counts the keys of every escaped namespace as writes land
//! (from a walk of them when it opens: none in a store that uses database 0 only), and
//! namespace 0's as the engine's counts less those, so `DBSIZE` and `INFO keyspace` walk
//! nothing.
//!
//! CAVEATS
//! - A data directory written before databases existed that holds keys starting with a NUL
//!   byte reads them as keys of other databases (the encoding above had no escape then).
//! - Opening a store walks every key outside database 0's plain keys, to count them.
//! - `INFO keyspace` lists a database whose number is at or past `databases` when it still
//!   holds keys (the setting was lowered); they are reachable again by raising it.
//! - Keys longer than [`CLIENT_KEY_BYTES_MAX`] written before that limit existed (65,535 and
//!   65,536 bytes in database 0) are listed by KEYS and SCAN but refused by every command
//!   that names them; FLUSHDB removes them.
//! - The replication log, `REPLIKV.LOG`, digests and rollback files show physical keys.

use super::request::Reply;
use super::store::{Store, WALK_CHUNK_KEYS};
use crate::error::Result;
use crate::storage::{Engine, Meta};
use bytes::{BufMut, Bytes, BytesMut};
use std::ops::Bound;

/// The most databases a node can have (`databases`): namespaces 0..=254; 255 is replikv's.
pub const DATABASES_MAX: u32 = 255;

/// The longest key a client may name: the engine's limit less the two bytes of a namespace
/// prefix, so that a key fits in every database.
pub const CLIENT_KEY_BYTES_MAX: usize = crate::storage::KEY_BYTES_MAX - 2;

/// The default number of databases, as Redis.
pub const DATABASES_DEFAULT: u32 = 16;

/// The first byte of every physical key outside namespace 0's plain keys.
const ESCAPE: u8 = 0x00;

/// The namespace of replikv's own records.
const META_NAMESPACE: u8 = 0xff;

/// The physical key of the database map.
pub const DB_MAP_KEY: &[u8] = b"\x00\xffdbmap";

/// A namespace number (0..=254).
pub type Namespace = u8;

/// The physical key of `key` in namespace `ns`. No copy for namespace 0's plain keys.
pub fn physical(ns: Namespace, key: &Bytes) -> Bytes {
    debug_assert!(ns != META_NAMESPACE, "namespace {ns} is replikv's own");
    if ns == 0 && key.first() != Some(&ESCAPE) {
        return key.clone();
    }
    let mut out = BytesMut::with_capacity(key.len() + 2);
    out.put_u8(ESCAPE);
    out.put_u8(ns);
    out.extend_from_slice(key);
    out.freeze()
}

/// The namespace and client key of a physical key; `None` for replikv's own records.
pub fn logical(physical: &Bytes) -> Option<(Namespace, Bytes)> {
    match physical.first() {
        Some(&ESCAPE) => match physical.get(1) {
            Some(&META_NAMESPACE) | None => None,
            Some(&ns) => Some((ns, physical.slice(2..))),
        },
        _ => Some((0, physical.clone())),
    }
}

/// The physical key ranges of namespace `ns`, in engine order: `(from, to)`, `to` excluded,
/// `None` for no end.
pub fn ranges(ns: Namespace) -> Vec<(Bytes, Option<Bytes>)> {
    let end = Some(Bytes::from(vec![ESCAPE, ns + 1]));
    if ns == 0 {
        // From the empty key, the only one that sorts before the escaped ones.
        vec![(Bytes::new(), end), (Bytes::from_static(&[ESCAPE + 1]), None)]
    } else {
        vec![(Bytes::from(vec![ESCAPE, ns]), end)]
    }
}

/// The database map: which namespace each database number uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbMap {
    /// (database, namespace) for each database not in its own namespace, sorted.
    moved: Vec<(u8, u8)>,
}

impl DbMap {
    /// The map a record's value holds; `Err` names what is wrong with it.
    pub fn decode(value: &[u8]) -> Result<DbMap, String> {
        if !value.len().is_multiple_of(2) {
            return Err(format!("a database map of {} bytes (pairs of bytes expected)", value.len()));
        }
        let mut moved: Vec<(u8, u8)> = value.chunks(2).map(|p| (p[0], p[1])).collect();
        moved.sort_unstable();
        let mut targets: Vec<u8> = moved.iter().map(|p| p.1).collect();
        targets.sort_unstable();
        let mut sources: Vec<u8> = moved.iter().map(|p| p.0).collect();
        sources.dedup();
        targets.dedup();
        // A permutation moves a set of databases among the same set of namespaces.
        if sources.len() != moved.len() || sources != targets || moved.iter().any(|p| p.1 == META_NAMESPACE) {
            return Err("a database map that is not a permutation".into());
        }
        Ok(DbMap { moved })
    }

    /// The record value that holds this map.
    pub fn encode(&self) -> Bytes {
        Bytes::from(self.moved.iter().flat_map(|(db, ns)| [*db, *ns]).collect::<Vec<u8>>())
    }

    /// The namespace database `db` uses.
    pub fn namespace(&self, db: u8) -> Namespace {
        self.moved.iter().find(|p| p.0 == db).map_or(db, |p| p.1)
    }

    /// The database in namespace `ns`.
    pub fn database(&self, ns: Namespace) -> u8 {
        self.moved.iter().find(|p| p.1 == ns).map_or(ns, |p| p.0)
    }

    /// The map with databases `a` and `b` swapped.
    pub fn swapped(&self, a: u8, b: u8) -> DbMap {
        if a == b {
            return self.clone();
        }
        let (na, nb) = (self.namespace(a), self.namespace(b));
        let mut moved: Vec<(u8, u8)> = self.moved.iter().copied().filter(|p| p.0 != a && p.0 != b).collect();
        moved.extend([(a, nb), (b, na)].into_iter().filter(|(db, ns)| db != ns));
        moved.sort_unstable();
        DbMap { moved }
    }

    /// True when every database is in its own namespace.
    pub fn is_identity(&self) -> bool {
        self.moved.is_empty()
    }
}

impl<E: Engine> Store<E> {
    /// Up to `limit` keys of the current namespace after physical key `after` (from its
    /// start when `None`), in order, with their metadata.
    pub(super) fn scan_ns(&self, after: Option<&[u8]>, limit: usize) -> Vec<(Bytes, Meta)> {
        let mut out = Vec::new();
        for (from, to) in ranges(self.ns) {
            let before_end = |key: &[u8]| to.as_ref().is_none_or(|to| key < &to[..]);
            if out.len() >= limit || after.is_some_and(|a| !before_end(a)) {
                continue;
            }
            let start = match after {
                Some(a) if a >= &from[..] => Bound::Excluded(a),
                _ => Bound::Included(&from[..]),
            };
            let chunk = self.engine().scan(start, limit - out.len());
            out.extend(chunk.into_iter().take_while(|(key, _)| before_end(key)));
        }
        out
    }

    /// DBSIZE: keys of the current namespace holding a value (expired ones included until
    /// they are deleted, as the engine counts them).
    pub(super) fn db_size(&self) -> u64 {
        self.namespace_keys(self.ns).keys
    }

    /// The keys of namespace `ns`: counted for the escaped namespaces, and for namespace 0
    /// the engine's counts less theirs.
    fn namespace_keys(&self, ns: Namespace) -> Keys {
        if ns != 0 {
            return self.ns_keys.get(&ns).copied().unwrap_or_default();
        }
        let all = self.engine().stats();
        let others = self
            .ns_keys
            .values()
            .fold(Keys::default(), |sum, k| Keys { keys: sum.keys + k.keys, expires: sum.expires + k.expires });
        assert!(
            others.keys <= all.keys && others.expires <= all.expires,
            "{others:?} outside namespace 0, of {} keys and {} expires in all",
            all.keys,
            all.expires
        );
        Keys { keys: all.keys - others.keys, expires: all.expires - others.expires }
    }

    /// Every database holding keys, with its counts, by database number (INFO keyspace).
    pub fn keyspace(&self) -> Vec<DbKeys> {
        let mut out: Vec<DbKeys> = (0..META_NAMESPACE)
            .filter(|&ns| ns == 0 || self.ns_keys.contains_key(&ns))
            .map(|ns| (ns, self.namespace_keys(ns)))
            .filter(|(_, k)| k.keys > 0)
            .map(|(ns, k)| DbKeys { db: u32::from(self.db_map.database(ns)), keys: k.keys, expires: k.expires })
            .collect();
        out.sort_by_key(|d| d.db);
        out
    }

    /// FLUSHDB (`Some(namespace)`) or FLUSHALL (`None`): a tombstone for every key holding a
    /// value, replikv's own records (the database map) aside.
    pub(super) fn flush(&mut self, now_ms: u64, ns: Option<Namespace>) -> Result<Reply> {
        let saved = self.ns;
        let namespaces: Vec<Namespace> = match ns {
            Some(ns) => vec![ns],
            None => (0..META_NAMESPACE).collect(),
        };
        for ns in namespaces {
            self.ns = ns;
            let mut after: Option<Bytes> = None;
            loop {
                let chunk = self.scan_ns(after.as_deref(), WALK_CHUNK_KEYS);
                let Some((last, _)) = chunk.last() else { break };
                after = Some(last.clone());
                for (key, meta) in chunk {
                    if !meta.tombstone {
                        self.delete(now_ms, key)?;
                    }
                }
            }
        }
        self.ns = saved;
        Ok(Reply::Ok)
    }

    /// MOVE: `key` (physical, in the current namespace) to database `db`, if it holds a value
    /// here and none there.
    pub(super) fn move_key(&mut self, now_ms: u64, key: Bytes, db: i64) -> Result<Reply> {
        let Some(db) = u32::try_from(db).ok().filter(|db| *db < self.databases) else {
            return Ok(Reply::err("DB index is out of range"));
        };
        let target_ns = self.db_map.namespace(db as u8);
        if target_ns == self.ns {
            return Ok(Reply::err("source and destination objects are the same"));
        }
        let Some(source) = self.live(&key, now_ms)? else { return Ok(Reply::Int(0)) };
        let (_, client_key) = logical(&key).expect("a client's key");
        let target = physical(target_ns, &client_key);
        if self.live_meta(&target, now_ms).is_some() {
            return Ok(Reply::Int(0));
        }
        self.write(now_ms, target, source.value, source.expire_at_ms)?;
        self.delete(now_ms, key)?;
        Ok(Reply::Int(1))
    }

    /// SWAPDB: one write of the database map.
    pub(super) fn swap_db(&mut self, now_ms: u64, a: i64, b: i64) -> Result<Reply> {
        let index = |db: i64| u32::try_from(db).ok().filter(|db| *db < self.databases);
        let (Some(a), Some(b)) = (index(a), index(b)) else {
            return Ok(Reply::err("DB index is out of range"));
        };
        let map = self.db_map.swapped(a as u8, b as u8);
        if map != self.db_map {
            let key = Bytes::from_static(DB_MAP_KEY);
            if map.is_identity() {
                self.delete(now_ms, key)?;
            } else {
                self.write(now_ms, key, map.encode(), None)?;
            }
            self.db_map = map;
        }
        Ok(Reply::Ok)
    }
}

/// A namespace's keys holding a value, and how many of those have a deadline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Keys {
    /// Keys holding a value (expired ones included until deleted).
    pub keys: u64,
    /// Of those, keys with a deadline.
    pub expires: u64,
}

/// One database's line of INFO keyspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DbKeys {
    /// The database number.
    pub db: u32,
    /// Keys holding a value.
    pub keys: u64,
    /// Of those, keys with a deadline.
    pub expires: u64,
}

/// The escaped namespace (1..=255, replikv's own included) a physical key is in, if any: the
/// keys whose counts the store keeps itself.
pub(super) fn counted_namespace(key: &[u8]) -> Option<Namespace> {
    match key {
        [ESCAPE, ns, ..] if *ns != 0 => Some(*ns),
        _ => None,
    }
}

/// Counts the escaped namespaces' keys (a walk of the keys starting with `00 01` to `00 ff`:
/// none in a store that uses database 0 only).
pub(super) fn count_namespaces<E: Engine>(engine: &E) -> std::collections::BTreeMap<Namespace, Keys> {
    let mut counts: std::collections::BTreeMap<Namespace, Keys> = std::collections::BTreeMap::new();
    let end: &[u8] = &[ESCAPE + 1];
    let mut after: Option<Bytes> = None;
    loop {
        let start = after.as_deref().map_or(Bound::Included(&[ESCAPE, 1][..]), Bound::Excluded);
        let chunk = engine.scan(start, WALK_CHUNK_KEYS);
        let Some((last, _)) = chunk.last() else { return counts };
        after = Some(last.clone());
        for (key, meta) in &chunk {
            if &key[..] >= end {
                return counts;
            }
            let ns = counted_namespace(key).expect("keys from 00 01 to 01 are escaped");
            let entry = counts.entry(ns).or_default();
            entry.keys += u64::from(!meta.tombstone);
            entry.expires += u64::from(!meta.tombstone && meta.expire_at_ms.is_some());
        }
    }
}

/// Moves `counts` from what `key` held (`old`) to what it holds now (`new`), if `key` is in
/// a counted namespace.
pub(super) fn recount(
    counts: &mut std::collections::BTreeMap<Namespace, Keys>,
    key: &[u8],
    old: Option<Meta>,
    new: &crate::storage::Record,
) {
    let Some(ns) = counted_namespace(key) else { return };
    let entry = counts.entry(ns).or_default();
    let (was, was_expiring) = old.map_or((false, false), |m| (!m.tombstone, !m.tombstone && m.expire_at_ms.is_some()));
    let (is, is_expiring) = (new.value.is_some(), new.value.is_some() && new.expire_at_ms.is_some());
    entry.keys = entry.keys + u64::from(is) - u64::from(was);
    entry.expires = entry.expires + u64::from(is_expiring) - u64::from(was_expiring);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn physical_keys_round_trip_and_keep_namespaces_apart() {
        let cases: &[(u8, &[u8], &[u8])] = &[
            (0, b"users.1", b"users.1"),
            (0, b"\x00x", b"\x00\x00\x00x"),
            (0, b"", b""),
            (1, b"users.1", b"\x00\x01users.1"),
            (254, b"\x00", b"\x00\xfe\x00"),
        ];
        for &(ns, key, want) in cases {
            let key = Bytes::copy_from_slice(key);
            let p = physical(ns, &key);
            assert_eq!(&p[..], want, "namespace {ns}, key {key:?}");
            assert_eq!(logical(&p), Some((ns, key.clone())), "{p:?}");
            let inside = ranges(ns).iter().any(|(from, to)| p >= *from && to.as_ref().is_none_or(|to| p < *to));
            assert!(inside, "{p:?} outside namespace {ns}'s ranges");
            for other in (0..=254u8).filter(|o| *o != ns) {
                let elsewhere =
                    ranges(other).iter().any(|(from, to)| p >= *from && to.as_ref().is_none_or(|to| p < *to));
                assert!(!elsewhere, "{p:?} of namespace {ns} is inside namespace {other}'s ranges");
            }
        }
        assert_eq!(logical(&Bytes::from_static(DB_MAP_KEY)), None);
    }

    #[test]
    fn swaps_compose_into_a_permutation() {
        let map = DbMap::default().swapped(0, 1);
        assert_eq!((map.namespace(0), map.namespace(1), map.namespace(2)), (1, 0, 2));
        let map = map.swapped(1, 2); // db1 (in ns 0) <-> db2 (in ns 2)
        assert_eq!((map.namespace(0), map.namespace(1), map.namespace(2)), (1, 2, 0));
        assert_eq!(DbMap::decode(&map.encode()), Ok(map.clone()));
        let back = map.swapped(1, 2).swapped(0, 1);
        assert!(back.is_identity(), "{back:?}");
        assert_eq!(DbMap::default().swapped(3, 3), DbMap::default());
        // A database swapped with itself after it moved: nothing changes (it once listed the
        // moved database twice, a map no replica could read).
        let moved = DbMap::default().swapped(0, 1);
        assert_eq!(moved.swapped(0, 0), moved);
        assert_eq!(DbMap::decode(&moved.swapped(1, 1).encode()), Ok(moved));
    }

    #[test]
    fn a_map_that_is_not_a_permutation_is_refused() {
        for bad in [&b"\x00"[..], b"\x00\x01", b"\x00\x01\x01\x01", b"\x00\xff\xff\x00"] {
            assert!(DbMap::decode(bad).is_err(), "{bad:?}");
        }
        assert!(DbMap::decode(b"").is_ok());
    }
}
