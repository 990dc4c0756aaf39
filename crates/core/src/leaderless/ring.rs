//! Placement for leaderless replication: which n nodes hold a key, and in what order
//! (DESIGN §7, issue 13 point 7).
//!
//! Every key has a *preference list*: n distinct nodes of the cluster, the key's replicas. A
//! write goes to all of them and a read asks them; the first is the key's *primary*, the
//! natural coordinator. Every node must compute the same list for the same key, today and after
//! an upgrade, or a write and the read after it ask different nodes. So placement is a pure
//! function of the node ids, n, the number of virtual nodes and the key, defined here to the
//! byte, and a golden test pins a few lists.
//!
//! # Consistent hashing with virtual nodes
//!
//! The ring is the space of u64 values, read clockwise and wrapping from `u64::MAX` to 0. Each
//! node places `vnodes_per_node` *tokens* on it (its virtual nodes); a key is hashed onto the
//! same ring and belongs to the tokens that follow it. What this buys, over `hash(key) % N`:
//!
//! - **Adding a node moves few keys.** The new node's tokens cut into the arcs of the others;
//!   a key's list changes only when the new node now comes among the first n on its walk, and
//!   then the new node takes one place and the old last replica drops out: every key keeps at
//!   least n - 1 of its replicas, in order. The (N+1)-th node becomes primary of about
//!   1/(N+1) of the keys and replica of about n/(N+1) (measured when n6 joins n1 to n5 with
//!   n = 3: 14.0 % of primaries move, all to n6, and 49.2 % of lists change). Under
//!   `hash(key) % N` nearly every key would move.
//! - **Even load.** One token per node would leave arcs of very different lengths; with V
//!   tokens per node a node's share is a sum of V small arcs, and strays from 1/N by about
//!   1/sqrt(V) (one standard deviation: 9 % at the default 128). Measured for nodes n1 to n5
//!   and n = 3: primary shares 0.179 to 0.222 (at most 11 % off 1/5), replica shares 0.537 to
//!   0.658 (at most 10.5 % off 3/5). And when a node leaves, its keys spread over all the
//!   others rather than falling on its one clockwise neighbour.
//! - **Room for unequal nodes.** A bigger node could get more tokens and so more keys. Today
//!   every node gets the same number (one `vnodes_per_node` for the ring).
//!
//! # Definitions (stable: changing any of them moves keys between nodes)
//!
//! - A node's id is [`NodeId`]: `xxh3_64` of its configured name (`crate::version`).
//! - **Token** `i` of node `x`, for `i` in `0..vnodes_per_node`: `xxh3_64` (seed 0) of 12
//!   bytes, `x.0` as 8 bytes little-endian followed by `i` as a `u32` 4 bytes little-endian.
//! - **Key position**: `xxh3_64` (seed 0) of the key's bytes.
//! - **Token order**: by token, then by node id. Two nodes whose tokens collide are thus
//!   ordered the same way everywhere; the order of the node list given to [`Ring::new`] plays
//!   no part.
//! - **The walk** ([`Ring::preference_list`]): start at the first token greater than or equal
//!   to the key's position, or at the first token of all when there is none (the wrap). Go
//!   clockwise, wrapping at the end, and take each token's node unless it was already taken,
//!   until n nodes are taken. The first node taken is the primary.
//!
//! The walk always ends: every node has at least one token and n is at most the number of
//! nodes, so one full turn meets n distinct nodes.
//!
//! # When the cluster has exactly n nodes
//!
//! Then every node holds every key: the walk takes nodes until it has all of them, so each
//! preference list is the whole cluster, in an order that depends on the key. The ring still
//! matters there: it names each key's primary, and it spreads the primaries evenly.
//!
//! # Cost
//!
//! [`Ring::new`] sorts `nodes × vnodes_per_node` tokens (16 bytes each; at most
//! [`RING_NODES_MAX`] × [`VNODES_PER_NODE_MAX`], 16 MiB). A lookup is a binary search and a
//! walk that usually visits little more than n tokens; it keeps the nodes already taken in a
//! bitset on the stack, so a list of any n costs one allocation (the list).
//!
//! CAVEATS
//! - The ring is fixed when it is built, from the cluster file. Nodes joining or leaving at
//!   runtime, and moving the keys a change of ring reassigns (handing them to their new
//!   replicas, dropping them from the old), are not done here.
//! - A preference list is exactly n nodes whether or not they are up; the stand-in a write
//!   takes with hinted handoff is the next node on the walk ([`Ring::stand_ins`]).
//! - Balance is statistical, not exact: the worst of a handful of nodes is typically 10 to 15 %
//!   over its fair share at 128 tokens, and can be over 20 %; 4 times the tokens halves that. Fixed
//!   equal partitions (Riak) or chosen tokens (Cassandra's allocator) would do better.
//! - Placement ignores racks and datacenters: two replicas of a key may share a failure domain.
//! - xxh3 is not a cryptographic hash. A client that knows the node names can pick keys that
//!   all land on one node and load it alone.

use crate::version::NodeId;
use crate::{Error, Result};
use xxhash_rust::xxh3::xxh3_64;

/// Tokens per node when the cluster file does not say.
pub const VNODES_PER_NODE_DEFAULT: usize = 128;

/// The most tokens a node may place on the ring.
pub const VNODES_PER_NODE_MAX: usize = 1024;

/// The most nodes a ring may hold.
pub const RING_NODES_MAX: usize = 1024;

/// Words of the bitset a walk keeps of the nodes it has taken, one bit per node.
const TAKEN_WORDS: usize = RING_NODES_MAX.div_ceil(64);

const _: () = assert!(VNODES_PER_NODE_DEFAULT <= VNODES_PER_NODE_MAX, "the default must be allowed");
const _: () = assert!(VNODES_PER_NODE_MAX <= u32::MAX as usize, "a token's index is hashed as a u32");
const _: () = assert!(RING_NODES_MAX <= u32::MAX as usize, "a token names its node by a u32 index");

/// A consistent-hash ring: the nodes of a cluster, their tokens, and n, the number of replicas
/// of each key. Immutable once built; cheap to share by reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    /// The nodes, sorted by id and distinct; a token's node is an index into this list.
    nodes: Vec<NodeId>,
    /// Every token with the index of its node in `nodes`, sorted by token and then by index
    /// (which is node id order, since `nodes` is sorted).
    tokens: Vec<(u64, u32)>,
    /// Replicas of each key: the length of every preference list.
    n: usize,
}

impl Ring {
    /// The ring of `nodes` (in any order) with `vnodes_per_node` tokens each and `n` replicas
    /// per key. Refuses an empty or oversized node list, a node listed twice, n out of
    /// `1..=nodes.len()`, and `vnodes_per_node` out of `1..=`[`VNODES_PER_NODE_MAX`], naming
    /// the setting.
    pub fn new(nodes: &[NodeId], n: usize, vnodes_per_node: usize) -> Result<Ring> {
        let invalid = |reason: String| Err(Error::InvalidInput(reason));
        if nodes.is_empty() {
            return invalid("a ring needs at least one node".into());
        }
        if nodes.len() > RING_NODES_MAX {
            return invalid(format!("{} nodes is over RING_NODES_MAX = {RING_NODES_MAX}", nodes.len()));
        }
        if n == 0 {
            return invalid("n = 0: every key needs at least one replica".into());
        }
        if n > nodes.len() {
            return invalid(format!("n = {n} replicas per key is more than the {} nodes of the cluster", nodes.len()));
        }
        if vnodes_per_node == 0 {
            return invalid("vnodes_per_node = 0: every node needs at least one token".into());
        }
        if vnodes_per_node > VNODES_PER_NODE_MAX {
            return invalid(format!(
                "vnodes_per_node = {vnodes_per_node} is over VNODES_PER_NODE_MAX = {VNODES_PER_NODE_MAX}"
            ));
        }
        let mut sorted = nodes.to_vec();
        sorted.sort_unstable();
        if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
            return invalid(format!(
                "node id {} is listed twice (two nodes with one name, or two names with one hash)",
                pair[0]
            ));
        }
        let tokens = sorted
            .iter()
            .enumerate()
            .flat_map(|(index, &node)| (0..vnodes_per_node as u32).map(move |i| (token(node, i), index as u32)))
            .collect();
        Ok(Ring::from_tokens(sorted, tokens, n))
    }

    /// The ring of sorted, distinct `nodes` holding exactly `tokens` (token, index into
    /// `nodes`), in any order. [`Ring::new`] checked the settings; tests place tokens by hand.
    fn from_tokens(nodes: Vec<NodeId>, mut tokens: Vec<(u64, u32)>, n: usize) -> Ring {
        assert!(nodes.windows(2).all(|pair| pair[0] < pair[1]), "ring nodes must be sorted and distinct: {nodes:?}");
        assert!((1..=nodes.len()).contains(&n), "n = {n} must be between 1 and {} nodes", nodes.len());
        tokens.sort_unstable();
        let mut has_token = vec![false; nodes.len()];
        for &(_, index) in &tokens {
            has_token[index as usize] = true;
        }
        assert!(has_token.iter().all(|&has| has), "every node needs a token: {has_token:?} for {nodes:?}");
        Ring { nodes, tokens, n }
    }

    /// Replicas of each key: the length of every preference list.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The ring's nodes, sorted by id.
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    /// The key's replicas, primary first: the first n distinct nodes on the walk clockwise from
    /// the key's position (see the module documentation).
    pub fn preference_list(&self, key: &[u8]) -> Vec<NodeId> {
        let list: Vec<NodeId> = self.walk_from(position(key)).take(self.n).collect();
        assert_eq!(list.len(), self.n, "a full turn of the ring meets every one of its {} nodes", self.nodes.len());
        list
    }

    /// The key's primary: the first node of its preference list, its natural coordinator.
    pub fn primary(&self, key: &[u8]) -> NodeId {
        self.walk_from(position(key)).next().expect("a ring has at least one token")
    }

    /// True when `node` is one of the key's n replicas.
    pub fn is_replica(&self, key: &[u8], node: NodeId) -> bool {
        self.walk_from(position(key)).take(self.n).any(|replica| replica == node)
    }

    /// The range `key` belongs to: the id of its replica set ([`range_id`] of its preference
    /// list). Keys with the same replicas, in any order, share a range; anti-entropy keeps one
    /// Merkle tree per range.
    pub fn range_of(&self, key: &[u8]) -> u64 {
        range_id(&self.preference_list(key))
    }

    /// Every range of the ring, by id, with its replicas sorted by id: the replica sets of
    /// walks that start at each token (every key's walk starts at one).
    pub fn ranges(&self) -> std::collections::BTreeMap<u64, Vec<NodeId>> {
        let mut ranges = std::collections::BTreeMap::new();
        for &(token, _) in &self.tokens {
            let mut set: Vec<NodeId> = self.walk_from(token).take(self.n).collect();
            set.sort_unstable();
            ranges.entry(range_id(&set)).or_insert(set);
        }
        ranges
    }

    /// The nodes after `key`'s preference list on its walk, in order: the stand-ins hinted
    /// handoff writes to when a replica is down (the lecture's and Dynamo's "next node on the
    /// ring").
    pub fn stand_ins(&self, key: &[u8]) -> Vec<NodeId> {
        self.walk_from(position(key)).skip(self.n).collect()
    }

    /// The distinct nodes met walking clockwise from ring position `at`, each once, until one
    /// full turn is done.
    fn walk_from(&self, at: u64) -> Walk<'_> {
        let first = self.tokens.partition_point(|&(token, _)| token < at);
        let next = if first == self.tokens.len() { 0 } else { first };
        Walk { ring: self, next, steps: 0, taken: [0; TAKEN_WORDS] }
    }
}

/// A walk clockwise around a ring, yielding each node the first time one of its tokens is met.
struct Walk<'a> {
    /// The ring walked.
    ring: &'a Ring,
    /// The index in `ring.tokens` of the next token to visit.
    next: usize,
    /// Tokens visited so far; the walk ends after one full turn.
    steps: usize,
    /// Bit i is set once node `ring.nodes[i]` was yielded.
    taken: [u64; TAKEN_WORDS],
}

impl Iterator for Walk<'_> {
    type Item = NodeId;

    fn next(&mut self) -> Option<NodeId> {
        let tokens = &self.ring.tokens;
        while self.steps < tokens.len() {
            let (_, index) = tokens[self.next];
            self.next = if self.next + 1 == tokens.len() { 0 } else { self.next + 1 };
            self.steps += 1;
            let (word, bit) = (index as usize / 64, 1u64 << (index % 64));
            if self.taken[word] & bit == 0 {
                self.taken[word] |= bit;
                return Some(self.ring.nodes[index as usize]);
            }
        }
        None
    }
}

/// The id of a replica set, whatever its order: `xxh3_64` (seed 0) of the node ids sorted, each
/// 8 bytes little-endian.
pub fn range_id(replicas: &[NodeId]) -> u64 {
    let mut sorted = replicas.to_vec();
    sorted.sort_unstable();
    let bytes: Vec<u8> = sorted.iter().flat_map(|n| n.0.to_le_bytes()).collect();
    xxh3_64(&bytes)
}

/// Token `i` of `node`: xxh3_64 of the node id (8 bytes little-endian) followed by `i` (4 bytes
/// little-endian).
fn token(node: NodeId, i: u32) -> u64 {
    let mut bytes = [0u8; 12];
    bytes[..8].copy_from_slice(&node.0.to_le_bytes());
    bytes[8..].copy_from_slice(&i.to_le_bytes());
    xxh3_64(&bytes)
}

/// A key's position on the ring: xxh3_64 of its bytes.
fn position(key: &[u8]) -> u64 {
    xxh3_64(key)
}

#[cfg(test)]
mod tests;
