//! Anti-entropy: two replicas compare their Merkle trees ([`super::tree`]) and exchange only the
//! keys that differ (the lecture's "Anti-Entropy", "Gossip Protocol" and "Merkle Trees"; issue
//! 14 point 2). Read repair heals the keys someone reads; this heals every key.
//!
//! # A round
//!
//! Every `anti_entropy_interval_ms` a node (the *initiator*) picks one peer at random among
//! those that share a range with it ([`pick_peer`]) and sends its roots. From there the two
//! sides take turns, each comparing what it was sent with its own tree and answering only for
//! what differs:
//!
//! 1. initiator → peer, [`Exchange::Roots`]: its root of every range the two share;
//! 2. the receiver of hashes of level `l` compares them with its own; for the nodes that
//!    differ it answers [`Exchange::Nodes`] with its hashes of their children (level `l + 1`),
//!    at most [`NODES_PER_MESSAGE_MAX`]; equal nodes end there (and tell it that the other
//!    side holds every entry beneath them, which tombstone collection uses);
//! 3. the receiver of leaf hashes answers, for the leaves that differ, [`Exchange::Leaves`]:
//!    its entries (key and entry hash) of each, at most [`KEYS_PER_EXCHANGE_MAX`] keys and
//!    [`KEY_BYTES_PER_MESSAGE_MAX`] bytes of keys;
//! 4. the receiver of entries compares them with its own leaves and answers
//!    [`Exchange::States`]: its states of the keys that differ or the other lacks, and the
//!    keys it wants the other's state of (at most [`BYTES_PER_EXCHANGE_MAX`] bytes of states,
//!    [`KEYS_PER_EXCHANGE_MAX`] keys);
//! 5. the receiver of states merges each into its own (as a replica merges a write: by
//!    causality, keeping siblings, [`crate::causality::Siblings::merge`]) and sends the
//!    states it was asked for.
//!
//! Which side sends states is the round's [`Style`]: *push* sends only the initiator's,
//! *pull* only the peer's, *push-pull* (the default) both. With [`super::tree::DEPTH`] = 4 a
//! round takes four to five round trips whatever the data set's size.
//!
//! What a bound leaves out (more differing nodes, keys or bytes than one message takes) waits
//! for a later round: the trees still differ there, so a later round finds it again. Each
//! round walks its lists from a point drawn from its number, so a difference that a bound
//! leaves out one round (or that cannot be repaired, such as a state refused for its clock)
//! does not shut the others out for good. A leaf with more keys than a listing takes is listed
//! in part (`cut`), and compared only up to its last listed key.
//!
//! # Safety
//!
//! Every message is checked: a range the receiver does not replicate with the sender, a
//! tree of another shape ([`Shape`]), a node index out of range or a key that is not in the
//! leaf it is listed under is refused and counted ([`AntiEntropyCounters::refused`]), never
//! fatal; a key is listed, asked for or taken only when both sides replicate it. States are merged like any write (their clock bound and sibling bounds apply), so
//! an exchange can add what a replica lacks but never take away what it has. The rounds are
//! stateless on both sides: a lost, duplicated or late message costs a round, nothing else.
//!
//! This module is the exchange alone, over any [`Side`]: the leaderless node is one, and the
//! simulator's gossip run (`replikv sim --gossip`) runs 100,000 lighter ones through the same
//! code.

use super::tree::{self, Hash, Tree, DEPTH, FANOUT};
use crate::causality::Siblings;
use crate::error::Result;
use crate::version::NodeId;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A range of the ring: the id of one set of replicas ([`super::ring::Ring::range_of`]).
pub type RangeId = u64;

/// Node hashes one [`Exchange::Nodes`] carries at most (36 bytes each: about 150 KiB).
pub const NODES_PER_MESSAGE_MAX: usize = 4096;

/// Keys one round lists ([`Exchange::Leaves`]) or asks for at most.
pub const KEYS_PER_EXCHANGE_MAX: usize = 10_000;

/// Bytes of keys one [`Exchange::Leaves`] lists, or one [`Exchange::States`] asks for, at most
/// (keys are up to 64 KiB each: ten thousand of them would pass a peer frame).
pub const KEY_BYTES_PER_MESSAGE_MAX: usize = 4 * 1024 * 1024;

/// Bytes of states one [`Exchange::States`] carries at most (one state is always sent, even
/// when it alone is bigger: a state fits in one peer frame, as a write does).
pub const BYTES_PER_EXCHANGE_MAX: usize = 8 * 1024 * 1024;

/// Which side of a round sends its states.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Style {
    /// The initiator sends what it has that the peer lacks.
    Push,
    /// The peer sends what it has that the initiator lacks.
    Pull,
    /// Both.
    #[default]
    PushPull,
}

impl Style {
    /// The setting's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Style::Push => "push",
            Style::Pull => "pull",
            Style::PushPull => "push-pull",
        }
    }

    /// Parses a setting's value.
    pub fn parse(value: &str) -> std::result::Result<Style, String> {
        match value {
            "push" => Ok(Style::Push),
            "pull" => Ok(Style::Pull),
            "push-pull" => Ok(Style::PushPull),
            other => Err(format!("unknown anti-entropy style {other:?} (push, pull or push-pull)")),
        }
    }

    /// True when the side that is (or is not) the initiator sends its states.
    fn sends(self, initiator: bool) -> bool {
        match self {
            Style::Push => initiator,
            Style::Pull => !initiator,
            Style::PushPull => true,
        }
    }
}

/// The shape of the trees, checked at every round's start: two nodes built with different
/// shapes would compare nodes that mean different things.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    /// [`FANOUT`].
    pub fanout: u8,
    /// [`DEPTH`].
    pub depth: u8,
}

/// This build's tree shape.
pub const SHAPE: Shape = Shape { fanout: FANOUT as u8, depth: DEPTH };

/// One round of anti-entropy, as every message of it names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round {
    /// The node that started it.
    pub initiator: NodeId,
    /// Its number at the initiator.
    pub number: u64,
    /// Which side sends states.
    pub style: Style,
}

/// An anti-entropy message; the variant order is part of the peer protocol.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Exchange {
    /// Initiator to peer: my roots of the ranges we share.
    Roots {
        /// The round.
        round: Round,
        /// The sender's tree shape.
        shape: Shape,
        /// Each shared range and the sender's root of it.
        ranges: Vec<(RangeId, Hash)>,
    },
    /// My hashes of these nodes of `level` (children of nodes where we differ).
    Nodes {
        /// The round.
        round: Round,
        /// The range.
        range: RangeId,
        /// Their level, 1 to [`DEPTH`].
        level: u8,
        /// Index and hash of each.
        nodes: Vec<(u32, Hash)>,
    },
    /// My entries of these leaves (where our leaf hashes differ).
    Leaves {
        /// The round.
        round: Round,
        /// The range.
        range: RangeId,
        /// Each leaf with its entries, by key.
        leaves: Vec<(u32, Vec<(Bytes, Hash)>)>,
        /// True when a bound cut the last leaf's listing short: it covers only the keys up to
        /// its last listed key.
        cut: bool,
    },
    /// My states of keys where we differ; and the keys I want yours of.
    States {
        /// The round.
        round: Round,
        /// Keys and states to merge.
        states: Vec<(Bytes, Siblings)>,
        /// Keys whose state the receiver should send back.
        want: Vec<Bytes>,
    },
}

impl Exchange {
    /// The message's name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Exchange::Roots { .. } => "AntiEntropy::Roots",
            Exchange::Nodes { .. } => "AntiEntropy::Nodes",
            Exchange::Leaves { .. } => "AntiEntropy::Leaves",
            Exchange::States { .. } => "AntiEntropy::States",
        }
    }

    /// The round it belongs to.
    pub fn round(&self) -> Round {
        match self {
            Exchange::Roots { round, .. }
            | Exchange::Nodes { round, .. }
            | Exchange::Leaves { round, .. }
            | Exchange::States { round, .. } => *round,
        }
    }
}

/// What anti-entropy counts on a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AntiEntropyCounters {
    /// Rounds this node started.
    pub rounds: u64,
    /// Ranges compared (as either side) whose roots differed.
    pub ranges_differing: u64,
    /// Ranges compared whose roots matched.
    pub ranges_same: u64,
    /// Keys whose state this node sent in exchanges.
    pub keys_sent: u64,
    /// Keys whose state this node received in exchanges.
    pub keys_received: u64,
    /// Keys received that changed this node's state (repairs by anti-entropy).
    pub keys_repaired: u64,
    /// Messages refused (a range not shared, another tree shape, a malformed list).
    pub refused: u64,
    /// Times a bound cut a message short (the rest waits for a later round).
    pub truncated: u64,
}

/// What the exchange needs of a replica: its trees, and reading and merging states.
pub trait Side {
    /// This node.
    fn me(&self) -> NodeId;
    /// This node's tree of `range`, when it replicates the range together with `peer` and the
    /// tree is ready (not being rebuilt).
    fn tree(&self, range: RangeId, peer: NodeId) -> Option<&Tree>;
    /// This node's state of `key` (`None` when it holds none or cannot read it).
    fn state(&mut self, key: &Bytes) -> Result<Option<Siblings>>;
    /// Merges `state`, received from `from`, into this node's state of `key`; true when it
    /// changed this node's state.
    fn take(&mut self, from: NodeId, key: &Bytes, state: &Siblings) -> Result<bool>;
    /// `peer`'s node `index` of `level` in `range` hashed the same as this node's, now: the
    /// peer holds every entry beneath it as this node does.
    fn same(&mut self, _peer: NodeId, _range: RangeId, _level: u8, _index: u32) {}
    /// `peer`'s entry of `key` equals this node's, in a leaf where others differ.
    fn same_key(&mut self, _peer: NodeId, _key: &Bytes) {}
    /// The counters to add to.
    fn counters(&mut self) -> &mut AntiEntropyCounters;
    /// A planted bug (the canary [`super::Canary::ExchangeSkipsSubtree`]): every comparison
    /// skips the first node that differs. False in every real node.
    fn skips_subtree(&self) -> bool {
        false
    }
    /// True when this node and `peer` both replicate `key`: only such keys are listed,
    /// asked for or sent.
    fn shares(&self, _key: &Bytes, _peer: NodeId) -> bool {
        true
    }
}

/// A peer to start a round with, chosen uniformly among `candidates` (the peers that share a
/// range with this node) by `draw`, a random number; `None` when there are none.
pub fn pick_peer(candidates: &[NodeId], draw: u64) -> Option<NodeId> {
    if candidates.is_empty() {
        None
    } else {
        Some(candidates[(draw % candidates.len() as u64) as usize])
    }
}

/// The first message of round `number` with `peer`: this side's roots of `ranges` (the
/// ranges it shares with `peer` and whose trees are ready). `None` when there are none.
pub fn start<S: Side>(side: &mut S, peer: NodeId, ranges: &[RangeId], number: u64, style: Style) -> Option<Exchange> {
    let roots: Vec<(RangeId, Hash)> =
        ranges.iter().filter_map(|r| side.tree(*r, peer).map(|t| (*r, t.root()))).collect();
    if roots.is_empty() {
        return None;
    }
    side.counters().rounds += 1;
    let round = Round { initiator: side.me(), number, style };
    Some(Exchange::Roots { round, shape: SHAPE, ranges: roots })
}

/// Handles `message` from `from`; pushes the answers (to `from`) onto `out`.
pub fn receive<S: Side>(side: &mut S, from: NodeId, message: Exchange, out: &mut Vec<Exchange>) -> Result<()> {
    let me = side.me();
    let round = message.round();
    // The round's initiator must be one of its two sides.
    let initiator_is_sender = round.initiator == from;
    if !initiator_is_sender && round.initiator != me {
        return refuse(side, from, "a round neither side started");
    }
    let i_am_initiator = round.initiator == me;
    match message {
        Exchange::Roots { shape, ranges, .. } => {
            if shape != SHAPE {
                return refuse(side, from, &format!("trees of another shape ({shape:?}; this node's is {SHAPE:?})"));
            }
            if !initiator_is_sender {
                return refuse(side, from, "roots from a side that is not the round's initiator");
            }
            if ranges.len() > NODES_PER_MESSAGE_MAX {
                return refuse(side, from, &format!("{} ranges", ranges.len()));
            }
            let mut seen = std::collections::BTreeSet::new();
            for (range, root) in ranges {
                if !seen.insert(range) {
                    return refuse(side, from, &format!("range {range:x} listed twice"));
                }
                let Some(tree) = side.tree(range, from) else {
                    side.counters().refused += 1;
                    tracing::debug!("anti-entropy: {from} sent range {range:x}, not shared or not ready here");
                    continue;
                };
                let answer = compare(tree, 0, &[(0, root)], side.skips_subtree(), 0);
                note(side, from, range, 0, &answer);
                if let Some(message) = answer.reply(round, range) {
                    out.push(message);
                }
            }
            Ok(())
        }
        Exchange::Nodes { range, level, nodes, .. } => {
            if level == 0 || level > DEPTH || nodes.len() > NODES_PER_MESSAGE_MAX {
                return refuse(side, from, &format!("{} nodes of level {level}", nodes.len()));
            }
            if nodes.iter().any(|(i, _)| *i >= tree::width(level)) {
                return refuse(side, from, &format!("a node index past level {level}'s width"));
            }
            let Some(tree) = side.tree(range, from) else {
                return refuse(side, from, &format!("range {range:x}, not shared or not ready here"));
            };
            let answer = compare(tree, level, &nodes, side.skips_subtree(), offset(round, nodes.len()));
            note(side, from, range, level, &answer);
            if let Some(message) = answer.reply(round, range) {
                out.push(message);
            }
            Ok(())
        }
        Exchange::Leaves { range, leaves, cut, .. } => {
            let listed: usize = leaves.iter().map(|(_, e)| e.len()).sum();
            let key_bytes: usize = leaves.iter().flat_map(|(_, e)| e.iter().map(|(k, _)| k.len())).sum();
            if listed > KEYS_PER_EXCHANGE_MAX
                || leaves.len() > NODES_PER_MESSAGE_MAX
                || key_bytes > KEY_BYTES_PER_MESSAGE_MAX
            {
                return refuse(side, from, &format!("{listed} keys ({key_bytes} bytes) in {} leaves", leaves.len()));
            }
            if leaves.iter().any(|(_, entries)| entries.iter().any(|(k, _)| !side.shares(k, from))) {
                return refuse(side, from, "a key the two sides do not both replicate");
            }
            if leaves
                .iter()
                .any(|(l, entries)| *l >= tree::LEAVES || entries.iter().any(|(k, _)| tree::leaf_of(k) != *l))
            {
                return refuse(side, from, "a key listed under a leaf it is not in");
            }
            let Some(tree) = side.tree(range, from) else {
                return refuse(side, from, &format!("range {range:x}, not shared or not ready here"));
            };
            // Keys where the two sides differ: the sender lacks it, this side lacks it, or
            // the hashes differ.
            let mut differ: Vec<Bytes> = Vec::new();
            // Keys with the same entry on both sides, in leaves that differ elsewhere.
            let mut equal: Vec<Bytes> = Vec::new();
            let last = leaves.len().saturating_sub(1);
            for (i, (leaf, theirs)) in leaves.iter().enumerate() {
                // A cut listing covers only the keys up to its last one.
                let upto = if cut && i == last { theirs.last().map(|(k, _)| k) } else { None };
                let mine: Vec<(&Bytes, &Hash)> =
                    tree.leaf(*leaf).filter(|(k, _)| upto.is_none_or(|last| *k <= last)).collect();
                let mut a = mine.iter().peekable();
                let mut b = theirs.iter().peekable();
                loop {
                    match (a.peek(), b.peek()) {
                        (None, None) => break,
                        (Some((k, _)), None) => {
                            differ.push((*k).clone());
                            a.next();
                        }
                        (None, Some((k, _))) => {
                            differ.push(k.clone());
                            b.next();
                        }
                        (Some((ka, ha)), Some((kb, hb))) => match (*ka).cmp(kb) {
                            std::cmp::Ordering::Less => {
                                differ.push((*ka).clone());
                                a.next();
                            }
                            std::cmp::Ordering::Greater => {
                                differ.push(kb.clone());
                                b.next();
                            }
                            std::cmp::Ordering::Equal => {
                                if *ha != hb {
                                    differ.push(kb.clone());
                                } else {
                                    equal.push(kb.clone());
                                }
                                a.next();
                                b.next();
                            }
                        },
                    }
                }
            }
            for key in &equal {
                side.same_key(from, key);
            }
            let at = offset(round, differ.len());
            let truncated = bound_keys(&mut differ, at);
            if truncated {
                side.counters().truncated += 1;
            }
            // Every differing key both ways. A side without a state of a key sends nothing of
            // it (a purged tombstone it remembers goes back only to a peer that sent a state
            // it covers, see `super::tombstones`).
            let want: Vec<Bytes> = if round.style.sends(!i_am_initiator) { differ.clone() } else { Vec::new() };
            let states = if round.style.sends(i_am_initiator) { collect_states(side, &differ)? } else { Vec::new() };
            if !states.is_empty() || !want.is_empty() {
                out.push(Exchange::States { round, states, want });
            }
            Ok(())
        }
        Exchange::States { states, want, .. } => {
            if states.len() > KEYS_PER_EXCHANGE_MAX || want.len() > KEYS_PER_EXCHANGE_MAX {
                return refuse(side, from, &format!("{} states and {} keys wanted", states.len(), want.len()));
            }
            // States may come only from a side the style lets send, and be asked for only
            // by one that may receive.
            if !states.is_empty() && !round.style.sends(!i_am_initiator) {
                return refuse(
                    side,
                    from,
                    &format!("states from a side a {} round does not let send", round.style.as_str()),
                );
            }
            for (key, state) in &states {
                side.counters().keys_received += 1;
                if side.take(from, key, state)? {
                    side.counters().keys_repaired += 1;
                }
            }
            let want_bytes: usize = want.iter().map(Bytes::len).sum();
            if want_bytes > KEY_BYTES_PER_MESSAGE_MAX {
                return refuse(side, from, &format!("{want_bytes} bytes of keys wanted"));
            }
            if !want.is_empty() && round.style.sends(i_am_initiator) {
                let want: Vec<Bytes> = want.into_iter().filter(|k| side.shares(k, from)).collect();
                let states = collect_states(side, &want)?;
                if !states.is_empty() {
                    out.push(Exchange::States { round, states, want: Vec::new() });
                }
            }
            Ok(())
        }
    }
}

/// This side's states of `keys`, up to [`BYTES_PER_EXCHANGE_MAX`] (at least one).
fn collect_states<S: Side>(side: &mut S, keys: &[Bytes]) -> Result<Vec<(Bytes, Siblings)>> {
    let mut states = Vec::new();
    let mut bytes = 0usize;
    for key in keys {
        let Some(state) = side.state(key)? else { continue };
        let size =
            key.len() + state.values().iter().map(|s| s.value.as_ref().map_or(0, Bytes::len) + 48).sum::<usize>();
        if !states.is_empty() && bytes + size > BYTES_PER_EXCHANGE_MAX {
            side.counters().truncated += 1;
            break;
        }
        bytes += size;
        states.push((key.clone(), state));
    }
    side.counters().keys_sent += states.len() as u64;
    Ok(states)
}

/// What comparing the other side's node hashes with this side's found.
struct Compared {
    /// Their level.
    level: u8,
    /// Indexes of the nodes that matched.
    same: Vec<u32>,
    /// Indexes of the nodes that differ.
    differ: Vec<u32>,
    /// The answer: this side's children of differing nodes, or its entries of differing
    /// leaves.
    children: Vec<(u32, Hash)>,
    leaves: Vec<(u32, Vec<(Bytes, Hash)>)>,
    /// The last leaf's listing is cut short.
    cut: bool,
    /// A bound cut the answer short.
    truncated: bool,
}

impl Compared {
    fn reply(self, round: Round, range: RangeId) -> Option<Exchange> {
        if self.differ.is_empty() {
            None
        } else if self.level < DEPTH {
            Some(Exchange::Nodes { round, range, level: self.level + 1, nodes: self.children })
        } else {
            Some(Exchange::Leaves { round, range, leaves: self.leaves, cut: self.cut })
        }
    }
}

/// Compares `theirs` (nodes of `level`) with `tree`, and makes the answer; `skip_first`
/// plants the canary's bug.
fn compare(tree: &Tree, level: u8, theirs: &[(u32, Hash)], mut skip_first: bool, offset: usize) -> Compared {
    let mut c = Compared {
        level,
        same: Vec::new(),
        differ: Vec::new(),
        children: Vec::new(),
        leaves: Vec::new(),
        cut: false,
        truncated: false,
    };
    let (mut keys, mut key_bytes) = (0usize, 0usize);
    // From a point that moves with the round, so that what a bound leaves out one round is
    // taken another, whatever the first nodes hold.
    let (first, rest) = theirs.split_at(offset.min(theirs.len()));
    for &(index, hash) in rest.iter().chain(first) {
        if tree.node(level, index) == hash {
            c.same.push(index);
            continue;
        }
        if skip_first && level > 0 {
            skip_first = false;
            continue;
        }
        if level < DEPTH {
            if c.children.len() + FANOUT > NODES_PER_MESSAGE_MAX {
                c.truncated = true;
                continue;
            }
            c.children.extend(tree.children(level, index));
        } else {
            if c.cut || keys >= KEYS_PER_EXCHANGE_MAX || key_bytes >= KEY_BYTES_PER_MESSAGE_MAX {
                c.truncated = true;
                continue;
            }
            if tree.leaf(index).next().is_none() {
                // This side holds nothing there: an empty listing says so.
                c.leaves.push((index, Vec::new()));
                c.differ.push(index);
                continue;
            }
            let mut entries = Vec::new();
            for (k, h) in tree.leaf(index) {
                if keys + 1 > KEYS_PER_EXCHANGE_MAX || key_bytes + k.len() > KEY_BYTES_PER_MESSAGE_MAX {
                    if entries.is_empty() && !c.leaves.is_empty() {
                        // Not one key of this leaf fits: it waits for a later round.
                        break;
                    }
                    c.cut = true;
                    break;
                }
                keys += 1;
                key_bytes += k.len();
                entries.push((k.clone(), *h));
            }
            if c.cut && entries.is_empty() {
                // A single key past the byte bound: list it alone (it fits in a frame, as a
                // write of it does).
                if let Some((k, h)) = tree.leaf(index).next() {
                    entries.push((k.clone(), *h));
                    keys += 1;
                    key_bytes += k.len();
                }
            }
            if entries.is_empty() && !c.leaves.is_empty() {
                c.truncated = true;
                continue;
            }
            c.truncated |= c.cut;
            c.leaves.push((index, entries));
        }
        c.differ.push(index);
    }
    c
}

/// Where a round starts walking a list of `len`: a point drawn from the round's number.
fn offset(round: Round, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    let mixed = round.number.wrapping_add(round.initiator.0).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 17;
    (mixed % len as u64) as usize
}

/// Keeps at most [`KEYS_PER_EXCHANGE_MAX`] of `keys` and [`KEY_BYTES_PER_MESSAGE_MAX`] of
/// their bytes, taken from `offset` on (wrapping); true when some were left out.
fn bound_keys(keys: &mut Vec<Bytes>, offset: usize) -> bool {
    let total: usize = keys.iter().map(Bytes::len).sum();
    if keys.len() <= KEYS_PER_EXCHANGE_MAX && total <= KEY_BYTES_PER_MESSAGE_MAX {
        return false;
    }
    let at = offset.min(keys.len());
    keys.rotate_left(at);
    let mut bytes = 0;
    let mut kept = 0;
    for k in keys.iter() {
        if kept >= KEYS_PER_EXCHANGE_MAX || (kept > 0 && bytes + k.len() > KEY_BYTES_PER_MESSAGE_MAX) {
            break;
        }
        bytes += k.len();
        kept += 1;
    }
    keys.truncate(kept);
    true
}

/// Tells `side` what matched, and counts.
fn note<S: Side>(side: &mut S, from: NodeId, range: RangeId, level: u8, compared: &Compared) {
    for &index in &compared.same {
        side.same(from, range, level, index);
    }
    let counters = side.counters();
    if level == 0 {
        if compared.same.is_empty() {
            counters.ranges_differing += 1;
        } else {
            counters.ranges_same += 1;
        }
    }
    if compared.truncated {
        counters.truncated += 1;
    }
}

/// Counts and logs a refused message.
fn refuse<S: Side>(side: &mut S, from: NodeId, what: &str) -> Result<()> {
    side.counters().refused += 1;
    tracing::warn!("anti-entropy: refused a message of {from}: {what}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_keeps_keys_from_the_rounds_point_and_at_most_the_bounds() {
        let mut keys: Vec<Bytes> = (0..KEYS_PER_EXCHANGE_MAX + 5).map(|i| Bytes::from(format!("{i:06}"))).collect();
        assert!(bound_keys(&mut keys, 7));
        assert_eq!(keys.len(), KEYS_PER_EXCHANGE_MAX);
        assert_eq!(keys[0], Bytes::from("000007"), "from the offset on");
        let big = Bytes::from(vec![b'k'; 64 * 1024]);
        let mut keys = vec![big; 100];
        assert!(bound_keys(&mut keys, 0));
        assert_eq!(keys.len(), KEY_BYTES_PER_MESSAGE_MAX / (64 * 1024), "by bytes");
        let mut few = vec![Bytes::from("a"), Bytes::from("b")];
        assert!(!bound_keys(&mut few, 1));
        assert_eq!(few, [Bytes::from("a"), Bytes::from("b")], "untouched under the bounds");
    }

    #[test]
    fn the_point_a_round_starts_from_moves_with_the_round() {
        let round = |number| Round { initiator: NodeId(3), number, style: Style::PushPull };
        let points: std::collections::BTreeSet<usize> = (0..50).map(|n| offset(round(n), 16)).collect();
        assert!(points.len() > 8, "{points:?}");
        assert!(points.iter().all(|p| *p < 16));
        assert_eq!(offset(round(1), 0), 0);
    }
}
