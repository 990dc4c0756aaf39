//! A leaderless node's side of anti-entropy: its Merkle trees, one per range it replicates
//! (`Trees`), kept up to date by every state it stores, rebuilt from the store when it opens,
//! and the rounds it starts every `anti_entropy_interval_ms` ([`super::anti_entropy`]).
//!
//! # Rebuild at open
//!
//! A node opens with empty trees and fills them from its store a slice at a time,
//! [`REBUILD_KEYS_PER_TICK`] keys per tick, answering requests between slices. Writes update
//! the trees meanwhile (a key the scan reaches later is read again as it then is). Until the
//! scan ends the node starts no rounds, answers none (a peer's round finds its trees not
//! ready and is refused, counted), and `REPLIKV.DIGEST` answers an error saying so; its status
//! says `trees: rebuilding` with the keys done so far.

use super::anti_entropy::{self, AntiEntropyCounters, Exchange, RangeId, Side};
use super::tree::{self, Tree};
use super::{Leaderless, Message};
use crate::causality::Siblings;
use crate::error::Result;
use crate::kv::Reply;
use crate::node::{Outbox, Output};
use crate::storage::Engine;
use crate::version::NodeId;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::ops::Bound;

/// Keys a rebuilding node reads from its store per tick.
pub const REBUILD_KEYS_PER_TICK: usize = 20_000;

/// A node's trees: one per range of the ring it replicates.
#[derive(Debug)]
pub(super) struct Trees {
    /// Each range this node replicates: its replicas (sorted) and its tree.
    ranges: BTreeMap<RangeId, (Vec<NodeId>, Tree)>,
    /// Where the rebuild scan is: `Some(after)` while it runs (`after` the last key read,
    /// `None` before the first), `None` once done.
    rebuild: Option<Option<Bytes>>,
    /// Keys the rebuild has read.
    rebuilt_keys: u64,
    /// Peers sharing at least one range with this node, sorted.
    peers: Vec<NodeId>,
    /// Keys a tree refused past [`tree::TREE_KEYS_MAX`].
    pub(super) refused_keys: u64,
    /// Ranges whose tree refused a key: they take no further part in anti-entropy (a key
    /// missing from the tree would read as absent, and its tombstones as safe to purge).
    full: std::collections::BTreeSet<RangeId>,
}

impl Trees {
    /// Empty trees for the ranges `me` replicates in `ranges`; `empty_store` skips the rebuild.
    pub(super) fn new(me: NodeId, ranges: BTreeMap<RangeId, Vec<NodeId>>, empty_store: bool) -> Trees {
        let ranges: BTreeMap<RangeId, (Vec<NodeId>, Tree)> = ranges
            .into_iter()
            .filter(|(_, members)| members.contains(&me))
            .map(|(id, members)| (id, (members, Tree::new())))
            .collect();
        let mut peers: Vec<NodeId> =
            ranges.values().flat_map(|(m, _)| m.iter().copied()).filter(|p| *p != me).collect();
        peers.sort_unstable();
        peers.dedup();
        Trees {
            ranges,
            rebuild: if empty_store { None } else { Some(None) },
            rebuilt_keys: 0,
            peers,
            refused_keys: 0,
            full: Default::default(),
        }
    }

    /// True while the rebuild scan runs.
    pub(super) fn rebuilding(&self) -> bool {
        self.rebuild.is_some()
    }

    /// Keys the rebuild has read so far.
    pub(super) fn rebuilt_keys(&self) -> u64 {
        self.rebuilt_keys
    }

    /// Sets `key`'s entry in range `range` (`None`: the key is gone).
    pub(super) fn set(&mut self, range: RangeId, key: &Bytes, hash: Option<tree::Hash>) {
        let Some((_, tree)) = self.ranges.get_mut(&range) else { return };
        if !tree.set(key, hash) {
            self.refused_keys += 1;
            self.full.insert(range);
            if self.refused_keys.is_power_of_two() {
                tracing::warn!(
                    "a Merkle tree holds TREE_KEYS_MAX = {} keys: {} keys refused: its range leaves anti-entropy",
                    tree::TREE_KEYS_MAX,
                    self.refused_keys
                );
            }
        }
    }

    /// The tree of `range` if this node replicates it with `peer` and the trees are ready.
    pub(super) fn shared(&self, range: RangeId, peer: NodeId) -> Option<&Tree> {
        if self.rebuilding() {
            return None;
        }
        if self.full.contains(&range) {
            return None;
        }
        self.ranges.get(&range).filter(|(m, _)| m.contains(&peer)).map(|(_, t)| t)
    }

    /// The ranges shared with `peer`.
    pub(super) fn shared_with(&self, peer: NodeId) -> Vec<RangeId> {
        self.ranges.iter().filter(|(_, (m, _))| m.contains(&peer)).map(|(id, _)| *id).collect()
    }

    /// The replicas of `range`, if this node replicates it.
    pub(super) fn members(&self, range: RangeId) -> Option<&[NodeId]> {
        self.ranges.get(&range).map(|(m, _)| m.as_slice())
    }

    /// Peers that share a range with this node.
    pub(super) fn peers(&self) -> &[NodeId] {
        &self.peers
    }

    /// Every range's tree (digests, tests).
    pub(super) fn all(&self) -> impl Iterator<Item = (RangeId, &Tree)> + '_ {
        self.ranges.iter().map(|(id, (_, t))| (*id, t))
    }

    /// Entries over every tree.
    pub(super) fn keys(&self) -> u64 {
        self.ranges.values().map(|(_, t)| t.keys()).sum()
    }
}

/// Anti-entropy's state on a node, besides its trees.
#[derive(Debug, Default)]
pub(super) struct Rounds {
    /// When this node starts its next round.
    pub(super) next_at_ms: u64,
    /// Rounds started.
    pub(super) number: u64,
    /// The last time a message of a round came from each peer (wall-clock ms).
    pub(super) last_exchange: BTreeMap<NodeId, u64>,
    /// Bytes of anti-entropy messages this node sent (encoded as on the wire).
    pub(super) bytes_sent: u64,
    /// Its counters.
    pub(super) counters: AntiEntropyCounters,
    /// The state of its random numbers (splitmix64), seeded from the node's seed.
    pub(super) rng: u64,
}

impl Rounds {
    /// A random number (splitmix64).
    pub(super) fn draw(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The node as [`anti_entropy`] sees it, during one step.
struct NodeSide<'a, E> {
    node: &'a mut Leaderless<E>,
    now_ms: u64,
}

impl<E: Engine> Side for NodeSide<'_, E> {
    fn me(&self) -> NodeId {
        self.node.settings.common.node
    }

    fn tree(&self, range: RangeId, peer: NodeId) -> Option<&Tree> {
        self.node.trees.shared(range, peer)
    }

    fn state(&mut self, key: &Bytes) -> Result<Option<Siblings>> {
        match self.node.load(key) {
            Ok(state) => Ok(state),
            Err(crate::Error::InvalidInput(why)) => {
                tracing::warn!("anti-entropy skips a key: {why}");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn take(&mut self, from: NodeId, key: &Bytes, state: &Siblings) -> Result<bool> {
        if !self.node.ring.is_replica(key, self.node.settings.common.node) || !self.node.ring.is_replica(key, from) {
            self.node.rounds.counters.refused += 1;
            tracing::warn!(
                "anti-entropy: {from} sent key {:?}, which the two do not both replicate: refused",
                String::from_utf8_lossy(key)
            );
            return Ok(false);
        }
        Ok(self.node.take_state(self.now_ms, key, state, super::Taken::AntiEntropy(from))? == Some(true))
    }

    fn same(&mut self, peer: NodeId, range: RangeId, level: u8, index: u32) {
        self.node.tombstones.held_beneath(peer, range, level, index);
    }

    fn same_key(&mut self, peer: NodeId, key: &Bytes) {
        self.node.tombstones.held_by(key, peer);
    }

    fn counters(&mut self) -> &mut AntiEntropyCounters {
        &mut self.node.rounds.counters
    }

    fn skips_subtree(&self) -> bool {
        self.node.settings.canary == super::Canary::ExchangeSkipsSubtree
    }

    fn shares(&self, key: &Bytes, peer: NodeId) -> bool {
        let ring = &self.node.ring;
        ring.is_replica(key, self.node.settings.common.node) && ring.is_replica(key, peer)
    }
}

impl<E: Engine> Leaderless<E> {
    /// Fills the trees from the store, one slice; ends the rebuild when the scan is done.
    pub(super) fn rebuild_slice(&mut self) -> Result<()> {
        let Some(after) = self.trees.rebuild.clone() else { return Ok(()) };
        let from = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let chunk = self.store.engine().scan(from, REBUILD_KEYS_PER_TICK);
        let Some((last, _)) = chunk.last() else {
            self.trees.rebuild = None;
            tracing::info!("Merkle trees rebuilt: {} keys", self.trees.keys());
            return Ok(());
        };
        self.trees.rebuild = Some(Some(last.clone()));
        for (physical, meta) in chunk {
            if meta.tombstone {
                continue;
            }
            let Some((0, key)) = crate::kv::logical(&physical) else { continue };
            self.trees.rebuilt_keys += 1;
            match self.load(&key) {
                Ok(Some(state)) => {
                    let bytes = state.to_bytes()?;
                    self.track(&key, &state, &bytes, None);
                }
                Ok(None) => {}
                Err(crate::Error::InvalidInput(why)) => tracing::warn!("the tree rebuild skips a key: {why}"),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Records `key`'s new `state` (stored as `bytes`) in its range's tree and in tombstone
    /// collection; `from` is the peer that sent exactly this state, if one did.
    pub(super) fn track(&mut self, key: &Bytes, state: &Siblings, bytes: &[u8], from: Option<NodeId>) {
        let range = self.ring.range_of(key);
        let hash = tree::entry_hash(key, bytes);
        self.trees.set(range, key, Some(hash));
        self.tombstones.stored(key, range, state, self.settings.common.node, from);
    }

    /// Starts a round when one is due.
    pub(super) fn gossip_tick(&mut self, now_ms: u64, outbox: &mut Outbox) -> Result<()> {
        self.rebuild_slice()?;
        let interval = self.settings.anti_entropy_interval_ms;
        if interval == 0 || self.trees.rebuilding() || now_ms < self.rounds.next_at_ms {
            return Ok(());
        }
        // The next round at a random point of the next interval's second half, so that
        // nodes started together drift apart rather than all exchanging at once.
        let jitter = self.rounds.draw() % (interval / 2).max(1);
        self.rounds.next_at_ms = now_ms + interval / 2 + jitter;
        let draw = self.rounds.draw();
        let Some(peer) = anti_entropy::pick_peer(self.trees.peers(), draw) else { return Ok(()) };
        let ranges = self.trees.shared_with(peer);
        self.rounds.number += 1;
        let (number, style) = (self.rounds.number, self.settings.anti_entropy_style);
        let mut side = NodeSide { node: self, now_ms };
        if let Some(message) = anti_entropy::start(&mut side, peer, &ranges, number, style) {
            self.send_exchange(peer, message, outbox);
        }
        Ok(())
    }

    /// A peer's anti-entropy message.
    pub(super) fn exchange(&mut self, now_ms: u64, from: NodeId, message: Exchange, outbox: &mut Outbox) -> Result<()> {
        self.rounds.last_exchange.insert(from, now_ms);
        let mut answers = Vec::new();
        let mut side = NodeSide { node: self, now_ms };
        anti_entropy::receive(&mut side, from, message, &mut answers)?;
        for answer in answers {
            self.send_exchange(from, answer, outbox);
        }
        Ok(())
    }

    /// Sends an anti-entropy message after this batch's fsync (it may carry a state this
    /// node just stored), counting its bytes.
    fn send_exchange(&mut self, to: NodeId, message: Exchange, outbox: &mut Outbox) {
        let message = Message::AntiEntropy(message);
        self.rounds.bytes_sent += postcard::to_allocvec(&message).map_or(0, |b| b.len() as u64);
        outbox.after_flush.push(Output::Send { to, message: message.into() });
    }

    /// REPLIKV.DIGEST from the trees: `[0, keys, root, [bucket...]]` with the [`DIGEST_BUCKETS`]
    /// buckets being the trees' level-2 nodes (256 of them), or one bucket's `[0, [[key,
    /// hash]...]]` by key. With several ranges a bucket's hash joins the ranges' (by range id).
    pub(super) fn digest(&self, bucket: Option<usize>) -> Reply {
        if self.trees.rebuilding() {
            return Reply::Error(format!(
                "BUSY this node is rebuilding its Merkle trees ({} keys read so far); try again shortly",
                self.trees.rebuilt_keys()
            ));
        }
        let hex = |h: &[u8; 32]| Reply::Bulk(Bytes::from(crate::digest::hex(h)));
        let trees: Vec<&Tree> = self.trees.all().map(|(_, t)| t).collect();
        let joined = |hashes: &mut dyn Iterator<Item = tree::Hash>| -> tree::Hash {
            let hashes: Vec<tree::Hash> = hashes.collect();
            if hashes.len() == 1 {
                return hashes[0];
            }
            let mut h = blake3::Hasher::new();
            for x in &hashes {
                h.update(x);
            }
            *h.finalize().as_bytes()
        };
        match bucket {
            None => {
                let keys = trees.iter().map(|t| t.keys()).sum::<u64>();
                let root = joined(&mut trees.iter().map(|t| t.root()));
                let buckets: Vec<Reply> =
                    (0..DIGEST_BUCKETS as u32).map(|b| hex(&joined(&mut trees.iter().map(|t| t.node(2, b))))).collect();
                Reply::Array(vec![Reply::Int(0), Reply::Int(keys as i64), hex(&root), Reply::Array(buckets)])
            }
            Some(b) if b >= DIGEST_BUCKETS => {
                Reply::err(format!("a digest has {DIGEST_BUCKETS} buckets; {b} is past them"))
            }
            Some(b) => {
                let per_bucket = tree::LEAVES / DIGEST_BUCKETS as u32;
                let mut entries: Vec<(&Bytes, &tree::Hash)> = trees
                    .iter()
                    .flat_map(|t| (b as u32 * per_bucket..(b as u32 + 1) * per_bucket).flat_map(move |l| t.leaf(l)))
                    .collect();
                entries.sort();
                entries.truncate(crate::node::DIGEST_BUCKET_KEYS_MAX);
                let list =
                    entries.into_iter().map(|(k, h)| Reply::Array(vec![Reply::Bulk(k.clone()), hex(h)])).collect();
                Reply::Array(vec![Reply::Int(0), Reply::Array(list)])
            }
        }
    }
}

/// Buckets a digest lists: the trees' level-2 nodes.
pub const DIGEST_BUCKETS: usize = crate::digest::DIGEST_BUCKETS;
const _: () = assert!(tree::FANOUT * tree::FANOUT == DIGEST_BUCKETS, "a digest's buckets are level 2 of a tree");
