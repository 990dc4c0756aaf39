//! The keydir: the in-memory index both engines keep, from key to where its newest record
//! lives, with the bookkeeping every engine needs (live and tombstone counts, an expiry index,
//! the newest timestamp). The location type `L` is the engine's own: a file position for the
//! log engine, the value itself for the memory engine.
//!
//! Point lookups (every GET and SET) go through a hash map; ordered walks (SCAN, KEYS,
//! compaction, hint files) go through a sorted set of the same keys. A profile of GET-heavy
//! load showed the B-tree's key comparisons as the runtime thread's largest cost: one hash
//! and one comparison replace about forty comparisons on 100,000 keys. The price is a second
//! reference to each key (the bytes themselves are shared). The hash map is never iterated,
//! so its order cannot leak into anything a replica does, and its hasher is seeded, not drawn
//! from the OS, so a run is reproducible.
//!
//! CAVEATS
//! - The hash seed is a constant: a client that knows it could choose keys that collide and
//!   slow lookups down (hash flooding). A per-node secret seed belongs here once the server
//!   hands one in.

use super::Meta;
use crate::version::Timestamp;
use bytes::Bytes;
use std::collections::BTreeSet;
#[allow(clippy::disallowed_types)] // never iterated: see the module docs
use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;
use xxhash_rust::xxh3::Xxh3Builder;

/// A key as the index keeps it.
type Key = Arc<[u8]>;

/// The keydir's hash seed (see CAVEATS).
const HASH_SEED: u64 = 0x7265_706c_696b_7631;

/// A key's newest record as the index knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot<L> {
    /// The record's metadata.
    pub meta: Meta,
    /// Where the engine finds the record.
    pub at: L,
}

/// An index of keys to [`Slot`]s, with point lookups by hash and walks in key order.
#[derive(Debug)]
pub struct Keydir<L> {
    /// Every key's newest record. Never iterated.
    #[allow(clippy::disallowed_types)] // never iterated: see the module docs
    map: HashMap<Key, Slot<L>, Xxh3Builder>,
    /// The same keys, in order.
    order: BTreeSet<Key>,
    /// (deadline, key) for every key whose newest record is a value with a deadline.
    expiry: BTreeSet<(u64, Key)>,
    /// Keys whose newest record is a value.
    live: u64,
    /// The newest timestamp inserted.
    last_ts: Timestamp,
}

impl<L> Default for Keydir<L> {
    fn default() -> Self {
        Keydir {
            #[allow(clippy::disallowed_types)] // never iterated: see the module docs
            map: HashMap::with_hasher(Xxh3Builder::new().with_seed(HASH_SEED)),
            order: BTreeSet::new(),
            expiry: BTreeSet::new(),
            live: 0,
            last_ts: Timestamp::default(),
        }
    }
}

impl<L> Keydir<L> {
    /// Sets `key`'s newest record, returning the slot it replaces. A new key is copied.
    pub fn insert(&mut self, key: Bytes, meta: Meta, at: L) -> Option<Slot<L>> {
        self.last_ts = self.last_ts.max(meta.version.ts);
        let (stored, old) = match self.map.get_key_value(&key[..]) {
            Some((stored, _)) => {
                let stored = stored.clone();
                let slot = self.map.get_mut(&key[..]).expect("found above");
                (stored, Some(std::mem::replace(slot, Slot { meta, at })))
            }
            None => {
                let stored: Key = Arc::from(&key[..]);
                self.order.insert(stored.clone());
                self.map.insert(stored.clone(), Slot { meta, at });
                (stored, None)
            }
        };
        // Forget the old record before noting the new one: both may carry the same deadline,
        // and the expiry entry must survive the rewrite.
        if let Some(old) = &old {
            self.forget(&stored, &old.meta);
        }
        if !meta.tombstone {
            self.live += 1;
        }
        if let (false, Some(deadline)) = (meta.tombstone, meta.expire_at_ms) {
            self.expiry.insert((deadline, stored));
        }
        old
    }

    /// Removes `key` entirely (compaction of a dropped record), returning its slot.
    pub fn remove(&mut self, key: &[u8]) -> Option<Slot<L>> {
        let (stored, old) = self.map.remove_entry(key)?;
        self.order.remove(key);
        self.forget(&stored, &old.meta);
        Some(old)
    }

    /// Undoes the bookkeeping of a record that is no longer the newest.
    fn forget(&mut self, key: &Key, meta: &Meta) {
        if !meta.tombstone {
            self.live -= 1;
            if let Some(deadline) = meta.expire_at_ms {
                self.expiry.remove(&(deadline, key.clone()));
            }
        }
    }

    /// `key`'s slot.
    pub fn get(&self, key: &[u8]) -> Option<&Slot<L>> {
        self.map.get(key)
    }

    /// `key`'s slot, to update its location in place (compaction moving a record).
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut Slot<L>> {
        self.map.get_mut(key)
    }

    /// Up to `limit` keys from `from` on, with their metadata.
    pub fn scan(&self, from: Bound<&[u8]>, limit: usize) -> Vec<(Bytes, Meta)> {
        self.order
            .range::<[u8], _>((from, Bound::Unbounded))
            .take(limit)
            .map(|k| (Bytes::copy_from_slice(k), self.slot(k).meta))
            .collect()
    }

    /// Up to `limit` keys with a deadline at or before `until_ms`, oldest deadline first.
    pub fn expiring(&self, until_ms: u64, limit: usize) -> Vec<Bytes> {
        self.expiry
            .iter()
            .take_while(|(deadline, _)| *deadline <= until_ms)
            .take(limit)
            .map(|(_, key)| Bytes::copy_from_slice(key))
            .collect()
    }

    /// Every key and slot in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Slot<L>)> {
        self.order.iter().map(|k| (&k[..], self.slot(k)))
    }

    /// Every key from `from` on and its slot, in key order (the log engine's walk over the
    /// records of a damaged segment, resumed where the last step stopped).
    pub fn iter_from(&self, from: Bound<&[u8]>) -> impl Iterator<Item = (&[u8], &Slot<L>)> {
        self.order.range::<[u8], _>((from, Bound::Unbounded)).map(|k| (&k[..], self.slot(k)))
    }

    /// The slot of a key the ordered set holds, which the map must hold too.
    fn slot(&self, key: &[u8]) -> &Slot<L> {
        self.map.get(key).unwrap_or_else(|| panic!("keydir: key {:?} ordered but not mapped", key.escape_ascii()))
    }

    /// Keys whose newest record is a value.
    pub fn live(&self) -> u64 {
        self.live
    }

    /// Keys holding a value with a deadline.
    pub fn expires(&self) -> u64 {
        self.expiry.len() as u64
    }

    /// Keys whose newest record is a tombstone.
    pub fn tombstones(&self) -> u64 {
        self.map.len() as u64 - self.live
    }

    /// The newest timestamp of any record inserted.
    pub fn last_timestamp(&self) -> Timestamp {
        self.last_ts
    }
}
