//! The keydir: the in-memory ordered index both engines keep, from key to where its newest
//! record lives, with the bookkeeping every engine needs (live and tombstone counts, an expiry
//! index, the newest timestamp). The location type `L` is the engine's own: a file position
//! for the log engine, the value itself for the memory engine.

use super::Meta;
use crate::version::Timestamp;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

/// A key's newest record as the index knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot<L> {
    /// The record's metadata.
    pub meta: Meta,
    /// Where the engine finds the record.
    pub at: L,
}

/// An ordered index of keys to [`Slot`]s.
#[derive(Debug)]
pub struct Keydir<L> {
    /// Every key's newest record.
    map: BTreeMap<Bytes, Slot<L>>,
    /// (deadline, key) for every key whose newest record is a value with a deadline.
    expiry: BTreeSet<(u64, Bytes)>,
    /// Keys whose newest record is a value.
    live: u64,
    /// The newest timestamp inserted.
    last_ts: Timestamp,
}

impl<L> Default for Keydir<L> {
    fn default() -> Self {
        Keydir { map: BTreeMap::new(), expiry: BTreeSet::new(), live: 0, last_ts: Timestamp::default() }
    }
}

impl<L> Keydir<L> {
    /// Sets `key`'s newest record, returning the slot it replaces.
    pub fn insert(&mut self, key: Bytes, meta: Meta, at: L) -> Option<Slot<L>> {
        self.last_ts = self.last_ts.max(meta.version.ts);
        let old = self.map.insert(key.clone(), Slot { meta, at });
        // Forget the old record before noting the new one: both may carry the same deadline,
        // and the expiry entry must survive the rewrite.
        if let Some(old) = &old {
            self.forget(&key, &old.meta);
        }
        if !meta.tombstone {
            self.live += 1;
        }
        if let (false, Some(deadline)) = (meta.tombstone, meta.expire_at_ms) {
            self.expiry.insert((deadline, key));
        }
        old
    }

    /// Removes `key` entirely (compaction of a dropped record), returning its slot.
    pub fn remove(&mut self, key: &[u8]) -> Option<Slot<L>> {
        let old = self.map.remove(key)?;
        self.forget(key, &old.meta);
        Some(old)
    }

    /// Undoes the bookkeeping of a record that is no longer the newest.
    fn forget(&mut self, key: &[u8], meta: &Meta) {
        if !meta.tombstone {
            self.live -= 1;
            if let Some(deadline) = meta.expire_at_ms {
                self.expiry.remove(&(deadline, Bytes::copy_from_slice(key)));
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
        self.map
            .range::<[u8], _>((from, Bound::Unbounded))
            .take(limit)
            .map(|(k, slot)| (k.clone(), slot.meta))
            .collect()
    }

    /// Up to `limit` keys with a deadline at or before `until_ms`, oldest deadline first.
    pub fn expiring(&self, until_ms: u64, limit: usize) -> Vec<Bytes> {
        self.expiry
            .iter()
            .take_while(|(deadline, _)| *deadline <= until_ms)
            .take(limit)
            .map(|(_, key)| key.clone())
            .collect()
    }

    /// Every key and slot in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &Slot<L>)> {
        self.map.iter()
    }

    /// Keys whose newest record is a value.
    pub fn live(&self) -> u64 {
        self.live
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
