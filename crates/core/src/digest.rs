//! A Merkle tree over a replica's keys, so that two replicas can tell whether they hold the
//! same data, and where they differ, by exchanging a few hashes instead of every key.
//!
//! # Shape
//!
//! Keys are spread over [`DIGEST_BUCKETS`] buckets by the first byte of the BLAKE3 hash of the
//! key (a key's bucket is the same on every replica, whatever else it holds). Each bucket's
//! leaf is the BLAKE3 hash of its live entries in key order, each entry being its key, value,
//! version and expiry deadline, length-prefixed. Leaves pair up into parents
//! (`BLAKE3(left || right)`) up to one root. Two replicas at the same log position with the
//! same root hold the same live keys with the same values and versions; otherwise, walking
//! both trees from the root down, only into children whose hashes differ
//! ([`differing_buckets`]), finds the buckets that differ; listing those buckets' entries
//! ([`bucket_entries`]) names the keys.
//!
//! Tombstones are left out: a deleted key and a key never written read the same to a client,
//! and a snapshot may turn a follower's stray key into a tombstone the leader never had.
//!
//! CAVEATS
//! - Computing a digest reads every live key's value: on a large data set that is a full scan,
//!   done on the node's stepper thread, which holds other requests meanwhile. It is meant for
//!   checks on demand, not for a hot path; [`DIGEST_KEYS_MAX`] bounds it.
//! - Two replicas compare meaningfully only at the same log position; `replikv check` waits
//!   for the positions to match (an idle cluster).

use crate::error::{Error, Result};
use crate::storage::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::ops::Bound;

/// Leaves of the tree: the first byte of a key's hash picks its bucket.
pub const DIGEST_BUCKETS: usize = 256;

/// Keys a digest covers at most; a bigger data set is refused with an error rather than
/// holding the node for minutes.
pub const DIGEST_KEYS_MAX: u64 = 50_000_000;

/// Keys read from the engine at a time.
const SCAN_KEYS: usize = 4096;

/// A replica's Merkle tree, leaves and root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// Live keys covered.
    pub keys: u64,
    /// The root hash.
    pub root: [u8; 32],
    /// The leaves, one per bucket.
    pub buckets: Vec<[u8; 32]>,
}

/// One live key as a digest sees it: its key and the hash of its entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The key.
    pub key: Bytes,
    /// BLAKE3 of its value, version and deadline.
    pub hash: [u8; 32],
}

/// The bucket `key` belongs to.
pub fn bucket_of(key: &[u8]) -> usize {
    blake3::hash(key).as_bytes()[0] as usize
}

/// Walks `engine`'s live keys that `keep` keeps, in order, calling `visit` with each key's
/// bucket, key and entry hash.
fn walk<E: Engine>(engine: &E, scope: Scope<'_>, mut visit: impl FnMut(usize, &Bytes, [u8; 32])) -> Result<u64> {
    let mut after: Option<Bytes> = None;
    let mut keys = 0u64;
    loop {
        let from = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let chunk = engine.scan(from, SCAN_KEYS);
        let Some((last, _)) = chunk.last() else { return Ok(keys) };
        after = Some(last.clone());
        for (key, meta) in chunk {
            if meta.tombstone || !(scope.keep)(&key) {
                continue;
            }
            let Some(record) = engine.get(&key).map_err(|e| e.reading(&key))? else { continue };
            let Some(value) = &record.value else { continue };
            keys += 1;
            if keys > DIGEST_KEYS_MAX {
                return Err(Error::InvalidInput(format!(
                    "a digest covers at most {DIGEST_KEYS_MAX} keys; this replica has more"
                )));
            }
            let mut h = blake3::Hasher::new();
            h.update(&(value.len() as u64).to_le_bytes());
            h.update(value);
            if scope.versions {
                h.update(&record.version.ts.millis.to_le_bytes());
                h.update(&record.version.ts.logical.to_le_bytes());
                h.update(&record.version.node.0.to_le_bytes());
            }
            h.update(&record.expire_at_ms.map_or(0, |at| at.saturating_add(1)).to_le_bytes());
            visit(bucket_of(&key), &key, *h.finalize().as_bytes());
        }
    }
}

/// What a digest covers: the keys it keeps, and whether a record's version is part of its
/// entry.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    /// Keys left out answer false (a family's own records: see
    /// [`crate::kv::Commands::own_record`]).
    pub keep: &'a dyn Fn(&[u8]) -> bool,
    /// Whether each record's version is hashed with its value (not where the value holds its
    /// own versions, and replicas stamp their records each their own way: see
    /// [`crate::kv::Commands::record_versions_differ`]).
    pub versions: bool,
}

impl Scope<'_> {
    /// Every key, versions included.
    pub const ALL: Scope<'static> = Scope { keep: &|_| true, versions: true };
}

/// The digest of `engine`'s live keys.
pub fn digest<E: Engine>(engine: &E) -> Result<Digest> {
    digest_of(engine, Scope::ALL)
}

/// The digest of `engine`'s live keys in `scope`.
pub fn digest_of<E: Engine>(engine: &E, scope: Scope<'_>) -> Result<Digest> {
    let mut hashers: Vec<blake3::Hasher> = (0..DIGEST_BUCKETS).map(|_| blake3::Hasher::new()).collect();
    let keys = walk(engine, scope, |bucket, key, entry| {
        let h = &mut hashers[bucket];
        h.update(&(key.len() as u64).to_le_bytes());
        h.update(key);
        h.update(&entry);
    })?;
    let buckets: Vec<[u8; 32]> = hashers.iter().map(|h| *h.finalize().as_bytes()).collect();
    let root = tree(&buckets)[0][0];
    Ok(Digest { keys, root, buckets })
}

/// The live keys of one bucket in `scope`, in key order, with their entry hashes.
pub fn bucket_entries<E: Engine>(engine: &E, bucket: usize, limit: usize, scope: Scope<'_>) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    walk(engine, scope, |b, key, hash| {
        if b == bucket && entries.len() < limit {
            entries.push(Entry { key: key.clone(), hash });
        }
    })?;
    Ok(entries)
}

/// The tree's levels, root level first; the last level is the leaves.
fn tree(leaves: &[[u8; 32]]) -> Vec<Vec<[u8; 32]>> {
    let mut levels = vec![leaves.to_vec()];
    while levels[0].len() > 1 {
        let parents = levels[0]
            .chunks(2)
            .map(|pair| {
                let mut h = blake3::Hasher::new();
                h.update(&pair[0]);
                h.update(pair.get(1).unwrap_or(&pair[0]));
                *h.finalize().as_bytes()
            })
            .collect();
        levels.insert(0, parents);
    }
    levels
}

/// The buckets where `a` and `b` differ, found top-down: from the root, only into children
/// whose hashes differ. Empty when the roots match.
pub fn differing_buckets(a: &Digest, b: &Digest) -> Vec<usize> {
    if a.root == b.root {
        return Vec::new();
    }
    if a.buckets.len() != b.buckets.len() {
        return (0..a.buckets.len().max(b.buckets.len())).collect();
    }
    let (ta, tb) = (tree(&a.buckets), tree(&b.buckets));
    let mut frontier = vec![0usize];
    for level in 1..ta.len() {
        frontier = frontier
            .into_iter()
            .flat_map(|i| [2 * i, 2 * i + 1])
            .filter(|&i| i < ta[level].len() && ta[level][i] != tb[level][i])
            .collect();
    }
    frontier
}

/// Hex of a hash, for people.
pub fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MemoryEngine, Record};
    use crate::version::{NodeId, Timestamp, Version};

    fn put(engine: &mut MemoryEngine, key: &str, value: Option<&str>, ms: u64) {
        let version = Version { ts: Timestamp { millis: ms, logical: 0 }, node: NodeId(1) };
        let record = Record { version, value: value.map(|v| Bytes::from(v.to_string())), expire_at_ms: None };
        engine.put(Bytes::from(key.to_string()), record).unwrap();
    }

    #[test]
    fn equal_data_gives_equal_roots_and_one_change_names_its_bucket() {
        let (mut a, mut b) = (MemoryEngine::new(), MemoryEngine::new());
        for i in 0..1000 {
            put(&mut a, &format!("k{i}"), Some("v"), i);
            put(&mut b, &format!("k{i}"), Some("v"), i);
        }
        let (da, db) = (digest(&a).unwrap(), digest(&b).unwrap());
        assert_eq!(da, db);
        assert_eq!(da.keys, 1000);
        assert!(differing_buckets(&da, &db).is_empty());

        put(&mut b, "k7", Some("other"), 7);
        let db = digest(&b).unwrap();
        assert_ne!(da.root, db.root);
        assert_eq!(differing_buckets(&da, &db), vec![bucket_of(b"k7")]);
        let (ea, eb) = (
            bucket_entries(&a, bucket_of(b"k7"), 100, Scope::ALL).unwrap(),
            bucket_entries(&b, bucket_of(b"k7"), 100, Scope::ALL).unwrap(),
        );
        let differ: Vec<_> = ea.iter().zip(&eb).filter(|(x, y)| x != y).map(|(x, _)| x.key.clone()).collect();
        assert_eq!(differ, vec![Bytes::from("k7")]);
    }

    #[test]
    fn a_different_version_or_a_missing_key_differs_and_tombstones_do_not_count() {
        let (mut a, mut b) = (MemoryEngine::new(), MemoryEngine::new());
        put(&mut a, "x", Some("v"), 1);
        put(&mut b, "x", Some("v"), 2);
        assert_ne!(digest(&a).unwrap().root, digest(&b).unwrap().root, "same value, another version");
        let (mut c, mut d) = (MemoryEngine::new(), MemoryEngine::new());
        put(&mut c, "x", Some("v"), 1);
        put(&mut d, "x", Some("v"), 1);
        put(&mut d, "gone", None, 5);
        assert_eq!(digest(&c).unwrap(), digest(&d).unwrap(), "a tombstone is not data");
        put(&mut d, "y", Some("v"), 6);
        let diff = differing_buckets(&digest(&c).unwrap(), &digest(&d).unwrap());
        assert_eq!(diff, vec![bucket_of(b"y")]);
    }
}
