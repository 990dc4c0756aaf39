//! Anti-entropy's figures (issue 14 point 3): the bytes and round trips two replicas spend to
//! repair 1, 100 and 10,000 differing keys among 1,000,000, against sending everything.
//!
//! Two leaderless nodes (n = 2, w = 1, r = 1) over memory engines, stepped by hand as the unit
//! tests step them: every batch is flushed and made durable before what it sent is routed.
//! Both load the same [`KEYS`] keys (SETs coordinated by node A, their writes delivered to
//! node B). Then, for each case, B is cut off while A takes `d` changed keys, B comes back, and
//! A alone starts rounds (B's interval is 0, it only answers) until the two trees' roots agree.
//!
//! Counted per case: rounds, anti-entropy messages, round trips (per round, the longest chain
//! of messages each caused by the one before, halved and rounded up; the most of any round and
//! the sum over the rounds), and bytes: each message's postcard encoding, both directions, as
//! the nodes' own `bytes_sent` counts it (the peer link adds a 1-byte family tag and a 4-byte
//! frame header per message). The full transfer is the postcard encoding of every `(key,
//! state)` of the store, what shipping the whole store would cost.
//!
//! Deterministic: fixed node seeds, a fixed clock, keys chosen by a seeded splitmix64.
//!
//! ```text
//! cargo run --release -p replikv-core --example anti_entropy_figures
//! ```

use bytes::Bytes;
use replikv_core::kv::{parse_command, Reply, Request};
use replikv_core::leaderless::{Input, Leaderless, Message, Settings};
use replikv_core::node::{Outbox, Output, PeerMessage};
use replikv_core::quorum::Nwr;
use replikv_core::storage::MemoryEngine;
use replikv_core::version::NodeId;
use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

/// Keys both replicas hold.
const KEYS: u64 = 1_000_000;

/// Differing keys of each case.
const CASES: [u64; 3] = [1, 100, 10_000];

/// SETs stepped per batch while loading (below the coordinator's in-flight bound).
const LOAD_BATCH_KEYS: u64 = 10_000;

/// Milliseconds between A's rounds; the clock moves by this much per round.
const INTERVAL_MS: u64 = 1_000;

/// Rounds a case may take before the run says it never converged.
const ROUNDS_MAX: u64 = 200;

/// Anti-entropy messages one round may cause before it is called runaway.
const MESSAGES_PER_ROUND_MAX: u64 = 10_000;

/// The issue's goal for one differing key, in bytes.
const GOAL_BYTES: u64 = 64 * 1024;

/// The seed of the choice of changed keys.
const SEED: u64 = 14;

/// The clock when the nodes open.
const START_MS: u64 = 1_000;

/// Node A (the initiator) and node B, and the clock.
struct Pair {
    nodes: [Leaderless<MemoryEngine>; 2],
    ids: [NodeId; 2],
    now: u64,
    next_request: u64,
}

/// A message between the two, with the length of the chain of messages that led to it.
struct InFlight {
    to: usize,
    message: Message,
    depth: u64,
}

/// What one case measured.
#[derive(Default)]
struct Figures {
    differing: u64,
    rounds: u64,
    messages: u64,
    round_trips_max: u64,
    round_trips_total: u64,
    bytes: u64,
    bytes_counted_by_nodes: u64,
    keys_repaired: u64,
    /// Times a bound cut a message short, on A and on B.
    truncated: [u64; 2],
    /// Bytes and messages by kind ("Nodes" split by level).
    by_kind: BTreeMap<String, (u64, u64)>,
    converged: bool,
    wall_ms: u128,
}

fn key(i: u64) -> String {
    format!("key:{i:07}")
}

fn request(line: &str) -> Request {
    let args: Vec<Bytes> = line.split(' ').map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
    parse_command(&args).expect("a known command").expect("valid arguments")
}

/// splitmix64.
fn draw(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Pair {
    fn open() -> Pair {
        let ids = [NodeId::from_name("a"), NodeId::from_name("b")];
        let nwr = Nwr::new(2, 1, 1).expect("n2 w1 r1");
        let nodes = [0, 1].map(|i| {
            let mut settings = Settings::new(ids[i], nwr);
            settings.common.peers = vec![ids[1 - i]];
            settings.common.seed = 1 + i as u64;
            // A starts rounds only when it is ticked, and it is ticked only once the load is
            // done; B never starts one.
            settings.anti_entropy_interval_ms = if i == 0 { INTERVAL_MS } else { 0 };
            Leaderless::open(MemoryEngine::new(), settings, START_MS).expect("open")
        });
        Pair { nodes, ids, now: START_MS, next_request: 0 }
    }

    /// Steps node `i` with `inputs` as one batch, makes it durable, and returns its outputs.
    fn batch(&mut self, i: usize, inputs: Vec<Input>) -> Vec<Output> {
        let mut outbox = Outbox::default();
        for input in inputs {
            self.nodes[i].step(self.now, input, &mut outbox).expect("step");
        }
        self.nodes[i].flush(self.now).expect("flush");
        let lsn = self.nodes[i].last_lsn();
        self.nodes[i].step(self.now, Input::Durable { lsn, resets: 0 }, &mut outbox).expect("durable");
        outbox.drain_all()
    }

    /// SETs `keys` to `value(key)` on A; B hears of them only when `connected`. Returns
    /// the OKs.
    fn set_on_a(&mut self, keys: &[u64], value: impl Fn(u64) -> String, connected: bool) -> u64 {
        let inputs = keys
            .iter()
            .map(|&k| {
                self.next_request += 1;
                Input::Request { id: self.next_request, request: request(&format!("SET {} {}", key(k), value(k))) }
            })
            .collect();
        let mut oks = 0;
        let mut to_b = Vec::new();
        for output in self.batch(0, inputs) {
            match output {
                Output::Reply { reply, .. } => oks += u64::from(reply == Reply::Ok),
                Output::Send { message: PeerMessage::Leaderless(message), .. } => {
                    to_b.push(Input::Message { from: self.ids[0], message })
                }
                Output::Send { message, .. } => panic!("a leaderless node sent {message:?}"),
            }
        }
        if connected {
            let acks: Vec<Input> = self
                .batch(1, to_b)
                .into_iter()
                .filter_map(|o| match o {
                    Output::Send { message: PeerMessage::Leaderless(message), .. } => {
                        Some(Input::Message { from: self.ids[1], message })
                    }
                    _ => None,
                })
                .collect();
            self.batch(0, acks);
        }
        oks
    }

    /// Node `i`'s REPLIKV.DIGEST: its keys and root.
    fn digest(&mut self, i: usize) -> (i64, Bytes) {
        self.next_request += 1;
        let id = self.next_request;
        let outputs = self.batch(i, vec![Input::Request { id, request: Request::Digest { bucket: None } }]);
        for output in outputs {
            if let Output::Reply { reply: Reply::Array(items), .. } = output {
                if let [Reply::Int(0), Reply::Int(keys), Reply::Bulk(root), ..] = items.as_slice() {
                    return (*keys, root.clone());
                }
            }
        }
        panic!("node {i} gave no digest");
    }

    fn agree(&mut self) -> bool {
        self.digest(0) == self.digest(1)
    }

    /// Bytes both nodes counted as sent, keys they repaired, and each node's truncations.
    fn node_counts(&self) -> (u64, u64, [u64; 2]) {
        let mut sums = (0, 0, [0, 0]);
        for (i, node) in self.nodes.iter().enumerate() {
            let ae = node.status(self.now).leaderless.expect("a leaderless status").anti_entropy;
            sums.0 += ae.bytes_sent;
            sums.1 += ae.counters.keys_repaired;
            sums.2[i] = ae.counters.truncated;
        }
        sums
    }

    /// One round started by A: ticks A and delivers every message until none is left.
    fn round(&mut self, figures: &mut Figures) {
        self.now += INTERVAL_MS;
        let mut net: VecDeque<InFlight> = VecDeque::new();
        let outputs = self.batch(0, vec![Input::Tick]);
        self.route(0, outputs, 1, &mut net);
        let (mut depth_max, mut messages) = (0, 0);
        while let Some(m) = net.pop_front() {
            messages += 1;
            assert!(messages <= MESSAGES_PER_ROUND_MAX, "a round that never ends");
            let wire = postcard::to_allocvec(&m.message).expect("encodes").len() as u64;
            let kind = match &m.message {
                Message::AntiEntropy(replikv_core::leaderless::anti_entropy::Exchange::Nodes { level, .. }) => {
                    format!("Nodes (level {level})")
                }
                Message::AntiEntropy(e) => e.kind().trim_start_matches("AntiEntropy::").to_string(),
                other => panic!("a message other than anti-entropy during a round: {}", other.kind()),
            };
            let entry = figures.by_kind.entry(kind).or_default();
            entry.0 += 1;
            entry.1 += wire;
            figures.bytes += wire;
            depth_max = depth_max.max(m.depth);
            let from = self.ids[1 - m.to];
            let outputs = self.batch(m.to, vec![Input::Message { from, message: m.message }]);
            self.route(m.to, outputs, m.depth + 1, &mut net);
        }
        figures.rounds += 1;
        figures.messages += messages;
        figures.round_trips_max = figures.round_trips_max.max(depth_max.div_ceil(2));
        figures.round_trips_total += depth_max.div_ceil(2);
    }

    fn route(&self, from: usize, outputs: Vec<Output>, depth: u64, net: &mut VecDeque<InFlight>) {
        for output in outputs {
            if let Output::Send { to, message: PeerMessage::Leaderless(message) } = output {
                assert_eq!(to, self.ids[1 - from], "two nodes");
                net.push_back(InFlight { to: 1 - from, message, depth });
            }
        }
    }

    /// The postcard size of every `(key, state)` A holds.
    fn full_transfer_bytes(&self) -> u64 {
        (0..KEYS)
            .map(|i| {
                let k = Bytes::from(key(i));
                let state = self.nodes[0].state_of(&k).expect("readable").expect("held");
                postcard::to_allocvec(&(k, state)).expect("encodes").len() as u64
            })
            .sum()
    }
}

/// The real clock, for the run's own wall time only: the nodes are handed the simulated
/// clock (`Pair::now`), as the core's rule against reading the clock wants.
#[allow(clippy::disallowed_methods)]
fn wall_clock() -> Instant {
    Instant::now()
}

/// `d` distinct keys among [`KEYS`], drawn from `rng`.
fn choose(d: u64, rng: &mut u64) -> Vec<u64> {
    let mut chosen = std::collections::BTreeSet::new();
    while (chosen.len() as u64) < d {
        chosen.insert(draw(rng) % KEYS);
    }
    chosen.into_iter().collect()
}

fn case(pair: &mut Pair, d: u64, rng: &mut u64) -> Figures {
    let started = wall_clock();
    let mut figures = Figures { differing: d, ..Figures::default() };
    let changed = choose(d, rng);
    let oks = pair.set_on_a(&changed, |k| format!("changed-{d}-{k:07}-xxxxxx"), false);
    assert_eq!(oks, d, "w = 1: A alone acknowledges");
    assert!(!pair.agree(), "B missed the changes");
    let (bytes_before, repaired_before, truncated_before) = pair.node_counts();
    while figures.rounds < ROUNDS_MAX {
        pair.round(&mut figures);
        if pair.agree() {
            figures.converged = true;
            break;
        }
    }
    let (bytes_after, repaired_after, truncated_after) = pair.node_counts();
    figures.bytes_counted_by_nodes = bytes_after - bytes_before;
    figures.keys_repaired = repaired_after - repaired_before;
    figures.truncated = [0, 1].map(|i| truncated_after[i] - truncated_before[i]);
    figures.wall_ms = started.elapsed().as_millis();
    figures
}

fn main() {
    let started = wall_clock();
    let mut pair = Pair::open();
    let all: Vec<u64> = (0..KEYS).collect();
    let mut oks = 0;
    for chunk in all.chunks(LOAD_BATCH_KEYS as usize) {
        oks += pair.set_on_a(chunk, |k| format!("value-{k:07}-abcdefghijk"), true);
    }
    assert_eq!(oks, KEYS);
    assert!(pair.agree(), "both replicas hold the same keys after the load");
    let load_ms = started.elapsed().as_millis();
    let full = pair.full_transfer_bytes();
    let (keys, _) = pair.digest(0);
    println!("replicas: 2 (n = 2, w = 1, r = 1); keys on each: {keys}; loaded in {load_ms} ms");
    println!("full transfer (postcard of every (key, state)): {full} bytes ({:.1} MiB)", full as f64 / 1048576.0);
    println!();

    let mut rng = SEED;
    let results: Vec<Figures> = CASES.iter().map(|&d| case(&mut pair, d, &mut rng)).collect();

    println!(
        "| differing keys | rounds | messages | round trips (max per round / total) | bytes exchanged | bytes / full transfer | converged |"
    );
    println!("|---:|---:|---:|---:|---:|---:|:---|");
    for f in &results {
        println!(
            "| {} | {} | {} | {} / {} | {} | {:.2e} | {} |",
            f.differing,
            f.rounds,
            f.messages,
            f.round_trips_max,
            f.round_trips_total,
            f.bytes,
            f.bytes as f64 / full as f64,
            if f.converged { "yes" } else { "NO" },
        );
    }
    println!();
    for f in &results {
        println!(
            "d = {}: {} keys repaired, truncations by a bound {} on A and {} on B, {} ms; nodes' bytes_sent {} (mine {})",
            f.differing,
            f.keys_repaired,
            f.truncated[0],
            f.truncated[1],
            f.wall_ms,
            f.bytes_counted_by_nodes,
            f.bytes
        );
        for (kind, (count, bytes)) in &f.by_kind {
            println!("    {kind:<16} {count:>5} messages {bytes:>10} bytes");
        }
    }
    let one = &results[0];
    println!();
    println!(
        "goal, 1 differing key under {GOAL_BYTES} bytes (64 KiB): {} ({} bytes)",
        if one.converged && one.bytes < GOAL_BYTES { "met" } else { "NOT met" },
        one.bytes
    );
    println!("wall time: {} ms (before the nodes are dropped)", started.elapsed().as_millis());
}
