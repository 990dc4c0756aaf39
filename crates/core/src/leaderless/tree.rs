//! Incremental Merkle trees over a leaderless node's key states (the lecture's "Merkle Trees";
//! issue 14 point 1), for anti-entropy ([`super::anti_entropy`]) and for `REPLIKV.DIGEST`.
//!
//! # Shape
//!
//! A tree has [`DEPTH`] levels below its root, each node [`FANOUT`] children: `FANOUT^DEPTH`
//! = [`LEAVES`] leaves (65,536). Level 0 is the root, level [`DEPTH`] the leaves; node `i` of
//! level `l` has children `i * FANOUT .. i * FANOUT + FANOUT` at level `l + 1`. A key lives in
//! leaf [`leaf_of`]: the first two bytes of the BLAKE3 hash of its bytes, big-endian, so the
//! same key is in the same leaf on every replica whatever else each holds.
//!
//! - An **entry** is one key and the hash of its state: [`entry_hash`], BLAKE3 of the key's
//!   length (8 bytes little-endian), the key, and the state as stored
//!   ([`crate::causality::Siblings::to_bytes`], which is canonical: two replicas with the same
//!   state store the same bytes). Tombstones are entries: a replica that missed a delete
//!   must be found and repaired.
//! - A **leaf's hash** is BLAKE3 over its entries in key order (per entry: the key's length,
//!   the key, the entry hash); an empty leaf hashes to 32 zero bytes.
//! - An **inner node's hash** is BLAKE3 over its [`FANOUT`] children's hashes in order, or 32
//!   zero bytes when every child is empty.
//!
//! Two trees with the same root hold the same entries (short of a BLAKE3 collision); walking
//! down from the root only into children whose hashes differ finds the leaves that differ in
//! [`DEPTH`] steps, reading [`FANOUT`] hashes per differing node.
//!
//! # Why this shape
//!
//! At a million keys a leaf holds about 15: finding one differing key costs the root, four
//! levels of 16 hashes and one leaf's keys: 3,176 bytes in all, measured by
//! `cargo run --release -p replikv-core --example anti_entropy_figures` (`docs/anti-entropy.md`). A wider fan-out would cut round trips but send more hashes per
//! differing node; a deeper tree would cost more round trips for small data sets.
//!
//! # Incremental
//!
//! [`Tree::set`] changes one entry and rehashes its leaf (the leaf's entries, about
//! `keys / 65,536`) and the [`DEPTH`] nodes above it (16 hashes each): the node calls it on
//! every state it stores, whether a client's write, a delete, a read repair or an exchange,
//! so a tree is never rebuilt by a scan except when a node opens ([`super::Leaderless`]
//! rebuilds its trees from the store a slice per tick, answering requests meanwhile).
//!
//! Only non-empty nodes are kept (ordered maps), so a tree costs memory in proportion to its
//! keys: about 100 bytes per key plus the key itself. The simulator's lighter nodes use the
//! same tree with a handful of keys each.

use bytes::Bytes;
use std::collections::BTreeMap;

/// Children of each inner node.
pub const FANOUT: usize = 16;

/// Levels below the root; the leaves are level `DEPTH`.
pub const DEPTH: u8 = 4;

/// Leaves of a tree: `FANOUT^DEPTH`.
pub const LEAVES: u32 = (FANOUT as u32).pow(DEPTH as u32);

/// The hash of an empty leaf or subtree.
pub const EMPTY: Hash = [0; 32];

/// Entries one tree holds at most: past it, [`Tree::set`] refuses a new key (the node then
/// takes that range out of anti-entropy, and logs it). About 100 bytes of memory per entry.
pub const TREE_KEYS_MAX: u64 = 50_000_000;

const _: () = assert!(LEAVES <= 1 << 16, "leaf_of takes two bytes of the key's hash");
const _: () = assert!(LEAVES == 1 << 16, "leaf_of takes exactly two bytes");

/// A BLAKE3 hash.
pub type Hash = [u8; 32];

/// The leaf `key` lives in.
pub fn leaf_of(key: &[u8]) -> u32 {
    let h = blake3::hash(key);
    u32::from(u16::from_be_bytes([h.as_bytes()[0], h.as_bytes()[1]]))
}

/// The hash of `key`'s entry when its stored state is `state`.
pub fn entry_hash(key: &[u8], state: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&(key.len() as u64).to_le_bytes());
    h.update(key);
    h.update(state);
    *h.finalize().as_bytes()
}

/// Nodes at `level`: `FANOUT^level`.
pub fn width(level: u8) -> u32 {
    (FANOUT as u32).pow(u32::from(level))
}

/// A Merkle tree of key entries; see the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    /// Non-empty leaves: their entries by key, and their hash.
    leaves: BTreeMap<u32, Leaf>,
    /// Non-empty inner nodes' hashes, by (level, index); level 0 is the root.
    inner: BTreeMap<(u8, u32), Hash>,
    /// Entries held.
    keys: u64,
}

/// One leaf's entries and hash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Leaf {
    entries: BTreeMap<Bytes, Hash>,
    hash: Hash,
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Tree {
        Tree::default()
    }

    /// Entries held.
    pub fn keys(&self) -> u64 {
        self.keys
    }

    /// The root's hash ([`EMPTY`] for an empty tree).
    pub fn root(&self) -> Hash {
        self.node(0, 0)
    }

    /// The hash of node `index` of `level` ([`EMPTY`] when it is empty or out of range).
    pub fn node(&self, level: u8, index: u32) -> Hash {
        if level == DEPTH {
            self.leaves.get(&index).map_or(EMPTY, |l| l.hash)
        } else {
            self.inner.get(&(level, index)).copied().unwrap_or(EMPTY)
        }
    }

    /// The indexes and hashes of node `index`'s children (`level` is the node's; it must be
    /// above the leaves).
    pub fn children(&self, level: u8, index: u32) -> impl Iterator<Item = (u32, Hash)> + '_ {
        debug_assert!(level < DEPTH, "a leaf has no children");
        let first = index * FANOUT as u32;
        (first..first + FANOUT as u32).map(move |c| (c, self.node(level + 1, c)))
    }

    /// Leaf `leaf`'s entries, by key.
    pub fn leaf(&self, leaf: u32) -> impl Iterator<Item = (&Bytes, &Hash)> + '_ {
        self.leaves.get(&leaf).into_iter().flat_map(|l| l.entries.iter())
    }

    /// The entry hash of `key`, if the tree holds it.
    pub fn get(&self, key: &[u8]) -> Option<Hash> {
        self.leaves.get(&leaf_of(key)).and_then(|l| l.entries.get(key).copied())
    }

    /// Sets `key`'s entry hash (`None` removes it) and rehashes the path to the root. False,
    /// changing nothing, when a new key would pass [`TREE_KEYS_MAX`].
    pub fn set(&mut self, key: &Bytes, hash: Option<Hash>) -> bool {
        let index = leaf_of(key);
        let leaf = self.leaves.entry(index).or_default();
        match hash {
            Some(hash) => match leaf.entries.get_mut(key) {
                Some(old) if *old == hash => return true,
                Some(old) => *old = hash,
                None => {
                    if self.keys >= TREE_KEYS_MAX {
                        if leaf.entries.is_empty() {
                            self.leaves.remove(&index);
                        }
                        return false;
                    }
                    leaf.entries.insert(key.clone(), hash);
                    self.keys += 1;
                }
            },
            None => {
                if leaf.entries.remove(key).is_none() {
                    if leaf.entries.is_empty() {
                        self.leaves.remove(&index);
                    }
                    return true;
                }
                self.keys -= 1;
            }
        }
        if leaf.entries.is_empty() {
            self.leaves.remove(&index);
        } else {
            let mut h = blake3::Hasher::new();
            for (key, entry) in &leaf.entries {
                h.update(&(key.len() as u64).to_le_bytes());
                h.update(key);
                h.update(entry);
            }
            leaf.hash = *h.finalize().as_bytes();
        }
        self.rehash_above(index);
        true
    }

    /// Rehashes the inner nodes above leaf `index`, bottom up.
    fn rehash_above(&mut self, mut index: u32) {
        for level in (0..DEPTH).rev() {
            index /= FANOUT as u32;
            let mut h = blake3::Hasher::new();
            let mut any = false;
            for (_, child) in self.children(level, index) {
                any |= child != EMPTY;
                h.update(&child);
            }
            if any {
                self.inner.insert((level, index), *h.finalize().as_bytes());
            } else {
                self.inner.remove(&(level, index));
            }
        }
    }

    /// Every entry, by leaf then key (tests, and the simulator's oracle).
    pub fn entries(&self) -> impl Iterator<Item = (&Bytes, &Hash)> + '_ {
        self.leaves.values().flat_map(|l| l.entries.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> Bytes {
        Bytes::from(format!("key-{i}"))
    }

    /// The tree a scan would build: every entry set in one go, in another order.
    fn built(entries: &[(Bytes, Hash)]) -> Tree {
        let mut t = Tree::new();
        for (k, h) in entries.iter().rev() {
            t.set(k, Some(*h));
        }
        t
    }

    #[test]
    fn an_empty_tree_has_the_empty_root_and_one_entry_changes_it() {
        let mut t = Tree::new();
        assert_eq!(t.root(), EMPTY);
        t.set(&key(1), Some(entry_hash(b"key-1", b"v")));
        assert_ne!(t.root(), EMPTY);
        assert_eq!(t.keys(), 1);
        t.set(&key(1), None);
        assert_eq!(t.root(), EMPTY, "removing the only entry empties every node");
        assert_eq!(t, Tree::new(), "and leaves nothing behind");
    }

    #[test]
    fn updates_in_any_order_give_the_tree_a_fresh_build_gives() {
        let mut t = Tree::new();
        let mut truth = BTreeMap::new();
        for i in 0..3000u32 {
            // Sets, overwrites and removals interleaved.
            let k = key(i % 1000);
            if i % 7 == 3 {
                t.set(&k, None);
                truth.remove(&k);
            } else {
                let h = entry_hash(&k, &i.to_le_bytes());
                t.set(&k, Some(h));
                truth.insert(k, h);
            }
        }
        let fresh = built(&truth.into_iter().collect::<Vec<_>>());
        assert_eq!(t.root(), fresh.root());
        assert_eq!(t, fresh);
    }

    #[test]
    fn one_differing_entry_differs_on_exactly_one_path() {
        let entries: Vec<(Bytes, Hash)> = (0..5000).map(|i| (key(i), entry_hash(&key(i), b"same"))).collect();
        let a = built(&entries);
        let mut b = a.clone();
        b.set(&key(77), Some(entry_hash(&key(77), b"other")));
        assert_ne!(a.root(), b.root());
        let leaf = leaf_of(&key(77));
        for level in 0..=DEPTH {
            let on_path = leaf / width(DEPTH - level);
            for i in 0..width(level).min(4096) {
                assert_eq!(a.node(level, i) != b.node(level, i), i == on_path, "level {level} node {i}");
            }
        }
    }

    #[test]
    fn the_same_entry_is_in_the_same_leaf_everywhere_and_leaves_spread() {
        assert_eq!(leaf_of(b"user:1"), leaf_of(b"user:1"));
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..10_000 {
            seen.insert(leaf_of(&key(i)));
        }
        // 10,000 keys into 65,536 leaves: about 9,300 distinct expected.
        assert!(seen.len() > 9_000, "{} leaves", seen.len());
        assert!(seen.iter().all(|l| *l < LEAVES));
    }

    #[test]
    fn a_tree_refuses_keys_past_its_bound_but_still_updates_and_removes() {
        let mut t = Tree::new();
        t.keys = TREE_KEYS_MAX - 1;
        assert!(t.set(&key(1), Some([1; 32])));
        assert!(!t.set(&key(2), Some([2; 32])), "one past the bound");
        assert_eq!(t.get(&key(2)), None);
        assert!(t.set(&key(1), Some([3; 32])), "an update of a held key");
        assert!(t.set(&key(1), None));
        assert_eq!(t.keys, TREE_KEYS_MAX - 1);
    }
}
