//! The lecture's gossip example at scale (issue 14 point 6): `n` replicas, one key changed at
//! one of them, and synchronous rounds of anti-entropy until every replica has the change,
//! run through the real exchange code ([`anti_entropy::start`], [`anti_entropy::receive`],
//! [`anti_entropy::pick_peer`], each [`Style`]) rather than a formula.
//!
//! # The replicas
//!
//! Each replica is a light node (`Replica`): a real Merkle [`Tree`] and a small map from key
//! to [`Siblings`], which is all [`Side`] asks for. There is no store, no network, no clock
//! and no ring: one range (id 0) that every replica shares with every other (a complete
//! graph), so the only thing that differs from a cluster of real nodes is what the exchange
//! does not see anyway. Replica `i` is [`NodeId`]`(i)`. Replicas whose trees are equal share
//! one, copied on write (`Trees`): the exchange reads a tree through `&Tree` and cannot
//! tell, and a hundred thousand replicas then cost a few megabytes and stay in cache.
//!
//! # A round
//!
//! Every replica starts one exchange per round (in index order) with a peer that
//! [`replikv_core::leaderless::anti_entropy::pick_peer`] draws from all the others. The exchange runs to its end at once: its messages are handed
//! back and forth through [`anti_entropy::receive`] until a side answers nothing (at most
//! [`TURNS_PER_EXCHANGE_MAX`] turns). States a replica takes ([`Side::take`]) are held back
//! until every exchange of the round has ended, so every exchange of round `t` sees the
//! states as round `t` began: a replica informed in round `t` spreads the change from round
//! `t + 1` on, as random-gossip theory assumes. Two replicas with the same tree stop after
//! the roots (one message); an uninformed pair, the common case early on, costs the same.
//!
//! One round is `interval_ms` of virtual time: the figure is rounds × interval.
//!
//! # The theory it is set against
//!
//! The mean-field recurrence for the fraction `s` of replicas still uninformed, from
//! `s = 1 - 1/n` until `n·s < 1/2` ([`theory_rounds`]): an uninformed replica stays so under
//! *push* if no informed replica picks it, `s' = s·e^-(1-s)`; under *pull* if the one it
//! picks is uninformed, `s' = s²`; under *push-pull* both, `s' = s²·e^-(1-s)`. Push needs
//! about `log2 n + ln n` rounds (Pittel 1987): the last few uninformed replicas are found only
//! by chance, which is where the `ln n` comes from; pull and push-pull finish doubly
//! exponentially once half know.
//!
//! Deterministic: one ChaCha8 RNG seeded from [`Config::seed`] draws every peer.
//!
//! CAVEATS
//! - Rounds are synchronous and exchanges never fail: no drops, delays or crashes (the
//!   leaderless world meets those, with the real node).
//! - One range over every replica; the ring's placement is not exercised.
//! - The pick of peers is uniform over all the others, as in the theory; a real node picks
//!   among the replicas of its ranges only.

use bytes::Bytes;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use replikv_core::causality::{Siblings, VersionVector};
use replikv_core::error::Result;
use replikv_core::leaderless::anti_entropy::{self, AntiEntropyCounters, Exchange, RangeId, Side, Style};
use replikv_core::leaderless::tree::{self, Tree};
use replikv_core::version::{NodeId, Timestamp, Version};
use std::collections::BTreeMap;
use std::rc::Rc;

/// Replicas one run takes at most (about 1 KiB each once informed).
pub const NODES_MAX: usize = 1_000_000;

/// Rounds one run takes at most before it gives up (push over a million replicas needs
/// about 34).
pub const ROUNDS_MAX: u64 = 1_000;

/// Turns (messages one way, then the answers the other way) one exchange takes at most: the
/// roots, [`tree::DEPTH`] levels of nodes, the leaves, and two of states. More is a loop in
/// the protocol, and a bug.
pub const TURNS_PER_EXCHANGE_MAX: usize = 2 * (tree::DEPTH as usize + 3);

/// The only range: every replica shares it with every other.
const RANGE: RangeId = 0;

/// The changed key.
const KEY: &[u8] = b"the-changed-key";

/// One gossip run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The seed of the peers' draws.
    pub seed: u64,
    /// Replicas, 2 to [`NODES_MAX`].
    pub nodes: usize,
    /// Virtual milliseconds per round.
    pub interval_ms: u64,
    /// Which side of an exchange sends its states.
    pub style: Style,
}

/// What one run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Rounds until every replica had the change (`None`: not within [`ROUNDS_MAX`]).
    pub rounds: Option<u64>,
    /// Replicas informed after each round (the first entry is before round 1: one).
    pub informed: Vec<usize>,
    /// Exchanges started, over every round.
    pub exchanges: u64,
    /// Exchanges whose roots differed (the others ended after one message).
    pub exchanges_differing: u64,
    /// Messages delivered, over every exchange.
    pub messages: u64,
    /// States sent, over every exchange.
    pub states_sent: u64,
    /// Messages the replicas refused (always zero unless the exchange has a bug).
    pub refused: u64,
}

impl Outcome {
    /// Virtual milliseconds until every replica had the change.
    pub fn virtual_ms(&self, interval_ms: u64) -> Option<u64> {
        self.rounds.map(|r| r * interval_ms)
    }
}

/// A light replica: a tree and its states, all [`Side`] needs.
#[derive(Debug, Default)]
struct Replica {
    /// Its tree of the one range, shared with every replica whose tree is the same (see
    /// [`Trees`]).
    tree: Rc<Tree>,
    /// Its states, by key.
    states: BTreeMap<Bytes, Siblings>,
}

/// A state taken during a round, merged at its end: (replica, key, state).
type Pending = (usize, Bytes, Siblings);

/// Replica `index` as the exchange sees it during a round.
struct At<'a> {
    index: usize,
    replica: &'a mut Replica,
    pending: &'a mut Vec<Pending>,
    /// What the exchange counts, over every replica (kept out of [`Replica`] to keep it
    /// small: the rounds visit replicas at random).
    counters: &'a mut AntiEntropyCounters,
}

impl Side for At<'_> {
    fn me(&self) -> NodeId {
        NodeId(self.index as u64)
    }

    fn tree(&self, range: RangeId, _peer: NodeId) -> Option<&Tree> {
        (range == RANGE).then_some(&*self.replica.tree)
    }

    fn state(&mut self, key: &Bytes) -> Result<Option<Siblings>> {
        Ok(self.replica.states.get(key).cloned())
    }

    /// Holds the state back until the round ends; true when it would change this replica's
    /// state as the round began.
    fn take(&mut self, _from: NodeId, key: &Bytes, state: &Siblings) -> Result<bool> {
        let mut merged = self.replica.states.get(key).cloned().unwrap_or_default();
        let changed = merged.merge(state)?.changed;
        if changed {
            self.pending.push((self.index, key.clone(), state.clone()));
        }
        Ok(changed)
    }

    fn counters(&mut self) -> &mut AntiEntropyCounters {
        self.counters
    }
}

impl Replica {
    /// Merges `state` into its state of `key` and updates the tree, as a node stores a state;
    /// true when it changed.
    fn store(&mut self, key: &Bytes, state: &Siblings, trees: &mut Trees) -> Result<bool> {
        let mine = self.states.entry(key.clone()).or_default();
        if !mine.merge(state)?.changed {
            return Ok(false);
        }
        let hash = tree::entry_hash(key, &mine.to_bytes()?);
        self.tree = trees.set(&self.tree, key, hash);
        Ok(true)
    }
}

/// The trees the replicas hold, shared: a replica's tree is copied on write, and the tree one
/// update makes of another is made once. A hundred thousand replicas then hold two trees
/// (before and after the change) instead of a hundred thousand, which keeps the exchange's
/// reads of them in cache; the exchange sees each replica's tree as its own (`&Tree`).
#[derive(Debug, Default)]
struct Trees {
    /// (root before, key, entry hash) to the tree the update makes.
    made: BTreeMap<(tree::Hash, Bytes, tree::Hash), Rc<Tree>>,
}

impl Trees {
    /// `before` with `key`'s entry set to `hash`.
    fn set(&mut self, before: &Rc<Tree>, key: &Bytes, hash: tree::Hash) -> Rc<Tree> {
        let made = self.made.entry((before.root(), key.clone(), hash)).or_insert_with(|| {
            let mut after = Tree::clone(before);
            assert!(after.set(key, Some(hash)), "a light replica holds a few keys, far below TREE_KEYS_MAX");
            Rc::new(after)
        });
        Rc::clone(made)
    }
}

/// The world of one run: the replicas, the peers' draws, and what the round holds back.
struct World {
    replicas: Vec<Replica>,
    /// Every replica's id, in order; swapped in place so that `ids[..n - 1]` is "all the
    /// others" of the replica picking.
    ids: Vec<NodeId>,
    pending: Vec<Pending>,
    trees: Trees,
    counters: AntiEntropyCounters,
    rng: ChaCha8Rng,
    style: Style,
    /// Reused message buffers.
    inbox: Vec<Exchange>,
    outbox: Vec<Exchange>,
}

/// Runs `config`: one key changed at replica 0, rounds until every replica has it.
pub fn run(config: Config) -> Result<Outcome> {
    assert!((2..=NODES_MAX).contains(&config.nodes), "{} replicas: 2 to {NODES_MAX}", config.nodes);
    let n = config.nodes;
    let mut world = World {
        replicas: (0..n).map(|_| Replica::default()).collect(),
        ids: (0..n as u64).map(NodeId).collect(),
        pending: Vec::new(),
        trees: Trees::default(),
        counters: AntiEntropyCounters::default(),
        rng: ChaCha8Rng::seed_from_u64(config.seed),
        style: config.style,
        inbox: Vec::new(),
        outbox: Vec::new(),
    };
    let key = Bytes::from_static(KEY);
    let origin = NodeId(0);
    let mut change = Siblings::new();
    let version = Version { ts: Timestamp { millis: 1, logical: 0 }, node: origin };
    change.write(origin, &VersionVector::new(), version, Some(Bytes::from_static(b"new")))?;
    world.replicas[0].store(&key, &change, &mut world.trees)?;

    let mut outcome = Outcome {
        rounds: None,
        informed: vec![1],
        exchanges: 0,
        exchanges_differing: 0,
        messages: 0,
        states_sent: 0,
        refused: 0,
    };
    let mut informed = 1;
    for round in 1..=ROUNDS_MAX {
        for i in 0..n {
            world.exchange(i, round, &mut outcome)?;
        }
        for (i, key, state) in std::mem::take(&mut world.pending) {
            let had = !world.replicas[i].states.is_empty();
            world.replicas[i].store(&key, &state, &mut world.trees)?;
            informed += usize::from(!had);
        }
        outcome.informed.push(informed);
        if informed == n {
            outcome.rounds = Some(round);
            break;
        }
    }
    outcome.states_sent = world.counters.keys_sent;
    outcome.refused = world.counters.refused;
    Ok(outcome)
}

impl World {
    /// Replica `i` starts round `number`'s exchange with a random other replica and the two
    /// take turns until one answers nothing.
    fn exchange(&mut self, i: usize, number: u64, outcome: &mut Outcome) -> Result<()> {
        let last = self.ids.len() - 1;
        self.ids.swap(i, last);
        let peer = anti_entropy::pick_peer(&self.ids[..last], self.rng.next_u64());
        self.ids.swap(i, last);
        let peer = peer.expect("at least two replicas").0 as usize;
        let style = self.style;
        let Some(roots) = anti_entropy::start(&mut self.at(i), NodeId(peer as u64), &[RANGE], number, style) else {
            return Ok(());
        };
        outcome.exchanges += 1;
        let (mut from, mut to) = (i, peer);
        self.inbox.clear();
        self.inbox.push(roots);
        for turn in 0.. {
            if self.inbox.is_empty() {
                return Ok(());
            }
            assert!(turn < TURNS_PER_EXCHANGE_MAX, "an exchange past {TURNS_PER_EXCHANGE_MAX} turns: {:?}", self.inbox);
            if turn == 1 {
                outcome.exchanges_differing += 1;
            }
            outcome.messages += self.inbox.len() as u64;
            let mut inbox = std::mem::take(&mut self.inbox);
            let mut out = std::mem::take(&mut self.outbox);
            for message in inbox.drain(..) {
                anti_entropy::receive(&mut self.at(to), NodeId(from as u64), message, &mut out)?;
            }
            self.inbox = out;
            self.outbox = inbox;
            std::mem::swap(&mut from, &mut to);
        }
        unreachable!("the loop returns or asserts")
    }

    /// Replica `index` as a [`Side`].
    fn at(&mut self, index: usize) -> At<'_> {
        At { index, replica: &mut self.replicas[index], pending: &mut self.pending, counters: &mut self.counters }
    }
}

/// The mean-field theory's rounds for `style` over `nodes` replicas: the recurrences of the
/// module documentation, from one informed replica until fewer than half a replica is
/// expected uninformed.
pub fn theory_rounds(style: Style, nodes: usize) -> u64 {
    let n = nodes as f64;
    let mut s = 1.0 - 1.0 / n;
    let mut rounds = 0;
    while n * s >= 0.5 && rounds < ROUNDS_MAX {
        let stays_unpushed = (-(1.0 - s)).exp();
        s = match style {
            Style::Push => s * stays_unpushed,
            Style::Pull => s * s,
            Style::PushPull => s * s * stays_unpushed,
        };
        rounds += 1;
    }
    rounds
}

/// `log2 n`: the lecture's figure, the rounds for the informed to double up to `n`.
pub fn log2_rounds(nodes: usize) -> f64 {
    (nodes as f64).log2()
}

/// `log2 n + ln n`: push's rounds to full coverage.
pub fn push_rounds(nodes: usize) -> f64 {
    (nodes as f64).log2() + (nodes as f64).ln()
}

#[cfg(test)]
mod tests;
