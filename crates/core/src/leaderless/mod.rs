//! Leaderless replication (Dynamo style; the lecture's "Leaderless Replication" to "Change
//! Propagation Protocols", DESIGN §7): every replica takes writes, and quorums decide.
//!
//! # Placement
//!
//! Each key has `n` replicas, its preference list ([`ring`]): with `n` nodes in the cluster,
//! every node holds every key; with more, a consistent-hash ring with virtual nodes picks `n`
//! of them.
//!
//! # Writes
//!
//! Any node coordinates a client's request. A write (SET, DEL) is coordinated by a replica of
//! its key (a node that is none forwards it to the key's first replica, once, never retried):
//! the coordinator reads its own state of the key, makes the new value with a fresh
//! [`Version`] (its hybrid logical clock) and a fresh dot in the
//! key's causal context ([`crate::causality`]), stores it, and, once its own copy is
//! durable, sends the whole state to the other `n - 1` replicas, which merge it into theirs.
//! (Sent sooner, a write whose coordinator crashed before its fsync could live on at the
//! others while the coordinator, back without it, handed its dot to its next write of the
//! key: the two would clash, and one be lost. Read repairs wait for durability too.) The client's OK waits until `w`
//! replicas hold it durably, the coordinator included (its own copy counts once its fsync
//! is done). Fewer than `w` within `request_timeout_ms`: an error that says how many
//! replicas took it and that it may still be there (the lecture's "apparently failed
//! write"), never a silent success and never a retry.
//!
//! A plain SET or DEL replaces every value the coordinator has seen; a write made
//! concurrently through another coordinator (neither saw the other) is kept beside it as a
//! sibling. `SET key value CONTEXT token` replaces exactly the values the token (from
//! REPLIKV.SIBLINGS) names. A delete is a tombstone with a version and a context, replicated
//! like a write, so a replica that missed it cannot bring the value back: merging keeps the
//! tombstone, whose context covers the deleted value.
//!
//! # Reads
//!
//! A read (GET, EXISTS, REPLIKV.SIBLINGS) asks all `n` replicas and answers after `r`
//! replies with the newest state: the merge of the replies, by version and causality, never
//! by majority (the lecture's "version 7 beats version 6"). Under `conflicts = "lww"` a GET
//! returns the value of the highest version; under `conflicts = "siblings"` a GET of a key
//! with concurrent values is an error naming how many, and REPLIKV.SIBLINGS lists them with
//! their causal context.
//!
//! # Read repair
//!
//! A replica whose reply is older than the merge is sent the merged state (a `Write` marked
//! as a repair). By default (`read_repair = "async"`) the client's answer does not wait; the
//! repairs go out when every replica answered or the timeout passed, from the merge of every
//! reply. With `read_repair = "blocking"` the answer waits until `w` replicas hold the state
//! it returns, so two quorum reads in sequence never go back in time (Cassandra's monotonic
//! quorum reads).
//!
//! # Anti-entropy
//!
//! Read repair heals only the keys someone reads. Every node also keeps one incremental
//! Merkle tree per range of the ring it replicates ([`tree`]), updated by every state it
//! stores, and every `anti_entropy_interval_ms` compares its trees with a random peer's,
//! descending only into subtrees that differ and exchanging only the keys of differing leaves
//! ([`anti_entropy`]): replicas converge whether or not anyone reads. A node opening over a
//! store rebuilds its trees a slice per tick, answering requests meanwhile.
//!
//! # Sessions
//!
//! A request of a session with a guarantee ([`crate::kv::Request::KeySession`]) carries the
//! causal context the session wrote or saw of its key; the coordinator answers a read only
//! from replies whose merge covers it, asking again until the session's wait passes
//! ([`session`]).
//!
//! # Tombstones and hints
//!
//! A tombstone is purged once every replica of its key is known to hold it and
//! `tombstone_grace_ms` has passed ([`tombstones`]): a replica down through the whole grace
//! period cannot bring the deleted value back. With `hinted_handoff`, a write whose replica
//! does not answer goes to a stand-in as a durable hint, delivered when the replica is back
//! ([`hints`]); with `sloppy_quorum` the hint counts toward w.
//!
//! # Commands
//!
//! GET, SET (with no option, or with CONTEXT alone), DEL and EXISTS of one key, and
//! REPLIKV.SIBLINGS. Read-modify-writes (INCR, APPEND, SET NX/XX/GET, SETRANGE...) are
//! refused with a clear error: without a leader two coordinators would each read the old
//! value and one increment would be lost (the lecture: leaderless stores take "only very
//! simple writes"). TTLs, transactions, WATCH, other databases, FLUSHALL, KEYS and SCAN are
//! refused too; DBSIZE counts this node's keys, tombstones included; REPLIKV.DIGEST answers
//! from this node's Merkle trees (so `replikv check` compares replicas without scanning).
//!
//! CAVEATS
//! - A coordinator sends a write to the other replicas only once it is durable on its own
//!   disk (a dot that reached a peer must never be lost by its coordinator in a crash, or it
//!   would hand the dot out again): one fsync slower per write than sending in parallel.
//! - A read is held until every replica answered or the timeout passed, for its repairs: with
//!   a replica down, a coordinator holds a timeout's worth of reads (at most
//!   [`OPS_IN_FLIGHT_MAX`] operations; past it requests are refused).
//! - Multi-key commands (MGET, MSET, DEL or EXISTS of several keys) are refused.
//! - Membership is fixed by the cluster file: no node joins or leaves at runtime, so no range
//!   ever moves between nodes.
//! - A coordinator's HLC bounds nothing: a node whose clock runs ahead stamps versions that
//!   win under `lww` until the others catch up (the lecture's "clock skew can cause older
//!   values to overwrite newer values").
//! - An operation in flight is forgotten if its coordinator restarts: its client's
//!   connection was lost with it.

pub mod anti_entropy;
pub mod message;
pub mod ring;
pub mod tree;

mod coordinator;
pub mod gossip;
pub mod hints;
pub mod session;
pub mod tombstones;

pub use gossip::REBUILD_KEYS_PER_TICK;
pub use hints::{HINTS_NAMESPACE, HINTS_PER_DELIVERY, HINTS_PER_TARGET_MAX, HINT_AFTER_MS, HINT_DELIVERY_INTERVAL_MS};
pub use tombstones::{PURGE_SCAN_PER_TICK, TOMBSTONES_TRACKED_MAX};

pub use message::Message;

use crate::causality::Siblings;
use crate::error::Result;
use crate::kv::{Reply, Request, Store};
use crate::node::{Common, Family, Outbox, Output, ReplicationStatus, RequestId, WrittenOutAll};
use crate::quorum::Nwr;
use crate::storage::{Engine, Flushed, Record};
use crate::version::{Hlc, NodeId, Version};
use bytes::Bytes;
use coordinator::Ops;
use ring::Ring;
use serde::{Deserialize, Serialize};

/// What a leaderless node is handed: [`crate::node::Input`] with this family's messages.
pub type Input = crate::node::Input<Message>;

/// What a GET returns when a key has concurrent values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Conflicts {
    /// The value of the highest version.
    #[default]
    Lww,
    /// An error naming how many; REPLIKV.SIBLINGS lists them.
    Siblings,
}

impl Conflicts {
    /// The setting's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Conflicts::Lww => "lww",
            Conflicts::Siblings => "siblings",
        }
    }
}

/// Whether a read waits for its repairs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadRepair {
    /// Repairs go out after the answer.
    #[default]
    Async,
    /// The answer waits until `w` replicas hold what it returns.
    Blocking,
}

impl ReadRepair {
    /// The setting's value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadRepair::Async => "async",
            ReadRepair::Blocking => "blocking",
        }
    }
}

/// Bugs planted on purpose, to test that checkers catch them (the unit tests, and a
/// simulator that runs this family); none is reachable from the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Canary {
    /// No planted bug.
    #[default]
    None,
    /// A coordinator counts each replica's write acknowledgement twice.
    CountAckTwice,
    /// A replica takes a state it is sent as it is, even when its own is newer.
    OlderOverwrites,
    /// A read repair sends the value the coordinator read first, not the newest.
    RepairWithFirstReply,
    /// An anti-entropy comparison skips the first differing child of every node it descends
    /// into.
    ExchangeSkipsSubtree,
    /// A state stored by a read repair leaves the Merkle tree as it was.
    TreeNotUpdatedOnRepair,
    /// A coordinator answers a session read ([`crate::kv::Request::KeySession`]) after its
    /// `r` replies whatever their context, as if the session had no floor.
    SessionFloorIgnored,
    /// The simulated client's session forgets the contexts its reads returned (its
    /// monotonic-reads floor never rises past its own writes): planted in the simulator's
    /// client, not in the replicas, which ignore it.
    TokenForgetsRead,
}

/// How a leaderless node behaves; the server builds it from the cluster file.
#[derive(Clone, Debug)]
pub struct Settings {
    /// What every family's node has: `common.peers` are every other node of the cluster.
    pub common: Common,
    /// Replicas per key, and how many a write and a read wait for.
    pub nwr: Nwr,
    /// What a GET of a key with concurrent values returns.
    pub conflicts: Conflicts,
    /// Whether a read waits for its repairs.
    pub read_repair: ReadRepair,
    /// Milliseconds a coordinator waits for `w` (or `r`) replicas before the client gets an
    /// error.
    pub request_timeout_ms: u64,
    /// Positions each node takes on the placement ring.
    pub vnodes_per_node: usize,
    /// The id this node's writes take in version vectors (their dots). It must change
    /// whenever the node may have lost writes it made (a memory engine restarted, a data
    /// directory wiped), or it would hand a dot out again and replicas would drop the new
    /// write as one they have seen: the server keeps one per data directory.
    pub dot_id: NodeId,
    /// Milliseconds between the anti-entropy rounds this node starts; 0 starts none (it
    /// still answers its peers' rounds).
    pub anti_entropy_interval_ms: u64,
    /// Which side of a round this node starts sends its states.
    pub anti_entropy_style: anti_entropy::Style,
    /// Milliseconds a tombstone is kept, at least, after its delete, once every replica of
    /// its key holds it ([`tombstones`]).
    pub tombstone_grace_ms: u64,
    /// Hinted handoff: a write whose replica is down goes to the next node on the ring as a
    /// durable hint naming the replica, delivered when it is back ([`hints`]).
    pub hinted_handoff: bool,
    /// Whether a hint counts toward `w` (a sloppy quorum: then w + r > n no longer
    /// guarantees that a read sees the write, as Dynamo says). Only with `hinted_handoff`.
    pub sloppy_quorum: bool,
    /// A bug planted on purpose (the simulator's canaries); `Canary::None` in every real node.
    pub canary: Canary,
}

/// Anti-entropy's interval when the cluster file does not say, in milliseconds.
pub const ANTI_ENTROPY_INTERVAL_MS_DEFAULT: u64 = 5_000;

/// The tombstone grace period when the cluster file does not say: Cassandra's
/// `gc_grace_seconds` default, 10 days, in milliseconds.
pub const TOMBSTONE_GRACE_MS_DEFAULT: u64 = 10 * 24 * 3600 * 1000;

impl Settings {
    /// Defaults for `node` with `nwr`: `lww`, asynchronous read repair, a 5 s timeout.
    pub fn new(node: NodeId, nwr: Nwr) -> Settings {
        Settings {
            common: Common::new(node),
            nwr,
            conflicts: Conflicts::Lww,
            read_repair: ReadRepair::Async,
            request_timeout_ms: 5_000,
            vnodes_per_node: ring::VNODES_PER_NODE_DEFAULT,
            dot_id: node,
            anti_entropy_interval_ms: ANTI_ENTROPY_INTERVAL_MS_DEFAULT,
            anti_entropy_style: anti_entropy::Style::PushPull,
            tombstone_grace_ms: TOMBSTONE_GRACE_MS_DEFAULT,
            hinted_handoff: false,
            sloppy_quorum: false,
            canary: Canary::None,
        }
    }
}

/// What a leaderless node counts since it started, for its status (read back from it by
/// `replikv status` and `replikv check`, hence `Deserialize`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Client writes this node coordinated.
    pub writes_coordinated: u64,
    /// Client reads this node coordinated.
    pub reads_coordinated: u64,
    /// Writes that reached fewer than `w` replicas in time (they may still be there).
    pub partial_writes: u64,
    /// Reads that heard from fewer than `r` replicas in time.
    pub failed_reads: u64,
    /// Read repairs this node sent, as a coordinator.
    pub read_repairs_sent: u64,
    /// Read repairs this node received (and merged), as a replica.
    pub read_repairs_received: u64,
    /// Reads that found concurrent values.
    pub sibling_reads: u64,
    /// Siblings merged away past [`crate::causality::SIBLINGS_MAX`] (the oldest, by version).
    pub siblings_dropped: u64,
    /// Writes forwarded to a replica of their key.
    pub forwarded: u64,
    /// States from peers refused for a clock too far ahead ([`CLOCK_AHEAD_MAX_MS`]).
    #[serde(default)]
    pub refused_states: u64,
    /// Remembered tombstones this node sent back to a peer that sent it a state they cover.
    #[serde(default)]
    pub tombstones_sent_back: u64,
    /// Tombstones this node purged.
    #[serde(default)]
    pub tombstones_purged: u64,
}

/// Anti-entropy on a node, inside [`LeaderlessStatus`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AntiEntropyStatus {
    /// `ready`, or `rebuilding` while the trees are filled from the store at open.
    pub trees: String,
    /// Keys the trees hold (while rebuilding: the keys read so far).
    pub tree_keys: u64,
    /// Ranges of the ring this node replicates (one tree each).
    pub ranges: usize,
    /// Milliseconds between rounds; 0 when this node starts none.
    pub interval_ms: u64,
    /// `push`, `pull` or `push-pull`.
    pub style: String,
    /// Bytes of anti-entropy messages sent.
    pub bytes_sent: u64,
    /// Per peer, how many milliseconds ago its last anti-entropy message came.
    pub last_exchange_ms_ago: std::collections::BTreeMap<String, u64>,
    /// Tombstones kept until every replica is known to hold them and the grace period passed.
    pub tombstones_pending: usize,
    /// Purged tombstones still remembered (their tree entries and states), for a grace
    /// period after their purge.
    #[serde(default)]
    pub tombstones_remembered: usize,
    /// Tombstones past [`TOMBSTONES_TRACKED_MAX`], never purged.
    pub tombstones_untracked: u64,
    /// Hints this node holds for other nodes, by the node they are for (hinted handoff).
    pub hint_backlog: std::collections::BTreeMap<String, u64>,
    /// Hints stored here (as a stand-in, or as a coordinator with no stand-in).
    pub hints_stored: u64,
    /// Hints delivered to their node and deleted.
    pub hints_delivered: u64,
    /// Hints dropped: older than the tombstone grace period, or past the backlog bound.
    pub hints_dropped: u64,
    /// Its counters.
    #[serde(flatten)]
    pub counters: anti_entropy::AntiEntropyCounters,
}

/// A leaderless node's status, inside [`ReplicationStatus`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LeaderlessStatus {
    /// Replicas per key.
    pub n: usize,
    /// Replicas a write waits for.
    pub w: usize,
    /// Replicas a read waits for.
    pub r: usize,
    /// `lww` or `siblings`.
    pub conflicts: &'static str,
    /// `async` or `blocking`.
    pub read_repair: &'static str,
    /// Operations this node coordinates now, and writes it answered whose last replicas have
    /// not acknowledged yet (until their timeout).
    pub in_flight: usize,
    /// Its counters.
    #[serde(flatten)]
    pub counters: Counters,
    /// Anti-entropy: trees, rounds, tombstones.
    pub anti_entropy: AntiEntropyStatus,
}

/// Operations one coordinator holds at most; beyond, a request is refused with an error.
pub const OPS_IN_FLIGHT_MAX: usize = 100_000;

/// How much longer than the request timeout a node that forwarded a write waits for the
/// coordinator's answer, in milliseconds: the coordinator's own wait, plus two hops, so that
/// the client hears how many replicas took a partial write.
pub const FORWARD_SLACK_MS: u64 = 2_000;

/// A state stamped further ahead of a replica's clock than this, in milliseconds, is refused
/// (not merged, not acknowledged, counted and logged): a node whose clock runs that far ahead
/// would otherwise win every last-write-wins comparison for as long.
pub const CLOCK_AHEAD_MAX_MS: u64 = 60_000;

/// The largest value a leaderless write stores: a state travels whole in one peer frame.
pub const VALUE_BYTES_MAX: usize = crate::single_leader::REPLICATED_VALUE_BYTES_MAX;

/// A leaderless node.
#[derive(Debug)]
pub struct Leaderless<E> {
    /// The node's states, one record per key (see [`Leaderless::load`]).
    store: Store<E>,
    /// How it behaves.
    settings: Settings,
    /// Where each key lives.
    ring: Ring,
    /// Stamps the versions of the writes it coordinates.
    clock: Hlc,
    /// States stored since open: a write is durable here once [`Input::Durable`] names its
    /// number.
    stored: u64,
    /// The newest stored state known durable.
    durable: u64,
    /// What it coordinates.
    ops: Ops,
    /// Its counters.
    counters: Counters,
    /// Its Merkle trees, one per range.
    trees: gossip::Trees,
    /// Its anti-entropy rounds.
    rounds: gossip::Rounds,
    /// Its tombstones and who holds them.
    tombstones: tombstones::Tombstones,
    /// Its hints for other nodes, and whom it suspects down.
    hints: hints::Hints,
}

/// Where a state a node merges comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    /// A coordinator's write.
    Write(NodeId),
    /// A read repair (from a peer, or the coordinator's own).
    Repair,
    /// An anti-entropy exchange with the peer.
    AntiEntropy(NodeId),
    /// A hint delivered by the node that held it.
    Handoff,
}

impl<E: Engine> Leaderless<E> {
    /// A leaderless node over `engine`; fails when the engine's database map is damaged or
    /// the settings cannot place keys (n greater than the cluster).
    pub fn open(engine: E, settings: Settings, now_ms: u64) -> Result<Leaderless<E>> {
        let mut store = Store::open(engine, settings.common.node)?;
        store.set_corruption(settings.common.corruption);
        store.limit_values(crate::single_leader::REPLICATED_VALUE_BYTES_MAX);
        let mut members = vec![settings.common.node];
        members.extend(settings.common.peers.iter().copied().filter(|p| *p != settings.common.node));
        let ring = Ring::new(&members, settings.nwr.n, settings.vnodes_per_node)?;
        let clock = Hlc::new(store.last_timestamp());
        let ops = Ops::new(settings.common.seed ^ now_ms);
        let empty = store.engine().scan(std::ops::Bound::Unbounded, 1).is_empty();
        let trees = gossip::Trees::new(settings.common.node, ring.ranges(), empty);
        let rng = settings.common.seed ^ settings.common.node.0.rotate_left(17) ^ now_ms;
        let rounds = gossip::Rounds { next_at_ms: now_ms, rng, ..gossip::Rounds::default() };
        Ok(Leaderless {
            store,
            settings,
            ring,
            clock,
            stored: 0,
            durable: 0,
            ops,
            counters: Counters::default(),
            trees,
            rounds,
            tombstones: tombstones::Tombstones::default(),
            hints: hints::Hints::default(),
        })
        .and_then(|mut node: Leaderless<E>| {
            node.load_hints()?;
            Ok(node)
        })
    }

    /// The engine, closing the node (tests reopen a node over it, as after a restart).
    pub fn into_engine(self) -> E {
        self.store.into_engine()
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The store, for reading keys (digests, tests).
    pub fn store(&self) -> &Store<E> {
        &self.store
    }

    /// Sets how many databases requests may name; leaderless mode keeps database 0 only, so
    /// this changes nothing but the store's bound.
    pub fn set_databases(&mut self, databases: u32) {
        self.store.set_databases(databases);
    }

    /// Sets what a read that finds a damaged record does.
    pub fn set_corruption(&mut self, corruption: crate::kv::Corruption) {
        self.store.set_corruption(corruption);
    }

    /// Changes how long a coordinator waits for its replicas, for what starts afterwards.
    pub fn set_timeout(&mut self, request_timeout_ms: u64) {
        assert!(request_timeout_ms > 0, "the request timeout must be positive");
        self.settings.request_timeout_ms = request_timeout_ms;
    }

    /// States stored since open (the runtime's durability notices count these).
    pub fn last_lsn(&self) -> u64 {
        self.stored
    }

    /// Makes every write stepped so far durable.
    pub fn flush(&mut self, now_ms: u64) -> Result<Flushed> {
        self.store.engine_mut().flush(now_ms)
    }

    /// Background work between batches (compaction), bounded by `budget_bytes`.
    pub fn maintain(&mut self, budget_bytes: u64) -> Result<()> {
        self.store.engine_mut().maintain(budget_bytes)?;
        for (key, error) in self.store.engine_mut().take_damaged() {
            self.store.note_damage(&key, error)?;
        }
        Ok(())
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// This node's state of `key`: `None` when it holds none. A damaged record is listed
    /// (the read repair that follows brings the key back) and read as none; a record that
    /// is no leaderless state (a data directory written in another mode) is an
    /// [`crate::Error::InvalidInput`] naming the key.
    fn load(&mut self, key: &Bytes) -> Result<Option<Siblings>> {
        let physical = crate::kv::physical(0, key);
        let record = match self.store.engine().get(&physical).map_err(|e| e.reading(&physical)) {
            Ok(record) => record,
            Err(e @ crate::Error::Damaged { .. }) => {
                self.store.note_damage(&physical, e)?;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        match record.and_then(|r| r.value) {
            None => Ok(None),
            Some(bytes) => Siblings::from_bytes(&bytes).map(Some).map_err(|e| {
                crate::Error::InvalidInput(format!(
                    "key {:?} holds no leaderless state (was this data directory written in another mode?): {e}",
                    String::from_utf8_lossy(key)
                ))
            }),
        }
    }

    /// [`Self::load`], or when the store holds nothing of `key`, the tombstone this node purged
    /// of it while remembered ([`tombstones`]): what a write, a read and a peer's state meet,
    /// so that a purge changes no answer and a value the delete covered stays deleted.
    /// A key whose record is damaged reads as the empty state, not as none: a read repairs it
    /// (none would be taken for a replica that purged the key and forgot it, see
    /// `coordinator::repair`).
    fn load_or_purged(&mut self, key: &Bytes) -> Result<Option<Siblings>> {
        if let Some(state) = self.load(key)? {
            return Ok(Some(state));
        }
        if self.damaged(key) {
            return Ok(Some(Siblings::new()));
        }
        Ok(self.tombstones.remembered(key).cloned())
    }

    /// True when `key`'s record is listed as damaged.
    fn damaged(&self, key: &Bytes) -> bool {
        self.store.damaged().get(&crate::kv::physical(0, key)).is_some()
    }

    /// The tombstone this node purged of `key`, while it remembers it (its tree entry stays
    /// until then, [`tombstones`]), for checks from outside.
    pub fn purged_state(&self, key: &[u8]) -> Option<&Siblings> {
        self.tombstones.remembered(key)
    }

    /// This node's state of `key` as its store holds it, for checks from outside (the
    /// simulator's oracle): `None` when it holds none. Unlike the node's own reads it notes
    /// no damage: a damaged or undecodable record is an error.
    pub fn state_of(&self, key: &[u8]) -> Result<Option<Siblings>> {
        let physical = crate::kv::physical(0, &Bytes::copy_from_slice(key));
        match self.store.engine().get(&physical)?.and_then(|r| r.value) {
            None => Ok(None),
            Some(bytes) => Siblings::from_bytes(&bytes).map(Some),
        }
    }

    /// Stores `state` as this node's state of `key` and records it in the key's tree;
    /// returns its number for durability. `from` is the peer that sent exactly this state,
    /// `repair` whether a read repair brought it.
    fn save(&mut self, key: &Bytes, state: &Siblings, from: Option<NodeId>, repair: bool) -> Result<u64> {
        let value = state.to_bytes()?;
        let version = state.newest_version().unwrap_or_default();
        let record = Record { version, value: Some(value.clone()), expire_at_ms: None };
        self.store.apply(crate::replication::Change { key: crate::kv::physical(0, key), record })?;
        self.stored += 1;
        if !(repair && self.settings.canary == Canary::TreeNotUpdatedOnRepair) {
            self.track(key, state, &value, from);
        }
        Ok(self.stored)
    }

    /// Purges the tombstones that may go now ([`tombstones`]).
    fn purge_tombstones(&mut self, now_ms: u64) -> Result<()> {
        if self.trees.rebuilding() {
            return Ok(());
        }
        for (range, key) in self.tombstones.forget_due(now_ms) {
            self.trees.set(range, &key, None);
        }
        let trees = &self.trees;
        let due = self.tombstones.scan(now_ms, self.settings.tombstone_grace_ms, |range| trees.members(range));
        for (range, key) in due {
            let state = match self.load(&key) {
                Ok(state) => state,
                Err(crate::Error::InvalidInput(_)) => None,
                Err(e) => return Err(e),
            };
            let state = match state {
                Some(state) if !state.is_empty() && state.live().next().is_none() => state,
                _ => {
                    self.tombstones.forget(&key);
                    continue;
                }
            };
            let version = state.newest_version().unwrap_or_default();
            let record = Record { version, value: None, expire_at_ms: None };
            self.store.apply(crate::replication::Change { key: crate::kv::physical(0, &key), record })?;
            self.stored += 1;
            // The tree entry stays while the tombstone is remembered.
            self.tombstones.purged(&key, range, state, now_ms, self.settings.tombstone_grace_ms);
            self.counters.tombstones_purged += 1;
        }
        Ok(())
    }

    /// A fresh version for a write over `state`, after everything the state holds.
    fn stamp(&mut self, now_ms: u64, state: &Siblings) -> Version {
        if let Some(newest) = state.newest_version() {
            self.clock.observe(newest.ts);
        }
        Version { ts: self.clock.tick(now_ms), node: self.settings.common.node }
    }

    /// Handles one input at wall-clock `now_ms`.
    pub fn step(&mut self, now_ms: u64, input: Input, outbox: &mut Outbox) -> Result<()> {
        self.step_input(now_ms, input, outbox)?;
        for (to, key, state) in self.tombstones.take_send_backs() {
            self.counters.tombstones_sent_back += 1;
            let message = Message::Write { op: tombstones::SEND_BACK_OP, key, state, repair: true };
            outbox.after_flush.push(Output::Send { to, message: message.into() });
        }
        Ok(())
    }

    /// [`Self::step`] but for the tombstones it sends back.
    fn step_input(&mut self, now_ms: u64, input: Input, outbox: &mut Outbox) -> Result<()> {
        match input {
            Input::Request { id, request } => self.request(now_ms, id, request, outbox),
            Input::Tick => {
                self.tick(now_ms, outbox)?;
                self.gossip_tick(now_ms, outbox)?;
                self.deliver_hints(now_ms, outbox)?;
                self.purge_tombstones(now_ms)
            }
            Input::Message { from, message } => {
                // Any message shows its sender is up.
                self.hints.suspected.remove(&from);
                self.message(now_ms, from, message, outbox)
            }
            Input::Durable { lsn, .. } => {
                self.durable = self.durable.max(lsn.min(self.stored));
                self.durable_now(now_ms, outbox)
            }
        }
    }

    /// Requests this family answers without a quorum, or refuses; `None` for the ones it
    /// coordinates.
    fn local_reply(&mut self, request: &Request) -> Result<Option<Reply>> {
        let refuse =
            |what: &str, why: &str| Some(Reply::err(format!("{what} is not available in leaderless mode: {why}")));
        let rmw = "a read-modify-write needs one node to order it, and a leaderless cluster has none (use GET, then SET with the CONTEXT REPLIKV.SIBLINGS gives)";
        Ok(match request {
            Request::Get { .. } | Request::Siblings { .. } | Request::SetContext { .. } => None,
            Request::Set { condition, get, expiry, .. } => {
                let plain =
                    *condition == crate::kv::SetCondition::Always && !*get && *expiry == crate::kv::Expiry::Clear;
                if plain {
                    None
                } else {
                    refuse("SET with NX, XX, GET or an expiry", rmw)
                }
            }
            Request::Del { keys } | Request::Exists { keys } if keys.len() == 1 => None,
            Request::Del { .. } | Request::Exists { .. } | Request::MGet { .. } | Request::MSet { .. } => {
                refuse("a command over several keys", "send one request per key")
            }
            Request::DbSize => Some(Reply::Int(self.store.keyspace().first().map_or(0, |db| db.keys as i64))),
            Request::Digest { bucket } => Some(self.digest(*bucket)),
            Request::InDb { .. } => refuse("a database other than 0", "this mode keeps database 0 only"),
            Request::Wait { .. } | Request::Failover { .. } | Request::Log { .. } => refuse(
                "this command",
                "there is no leader and no replication log; writes wait for w replicas themselves",
            ),
            Request::Exec { .. } | Request::Watch { .. } => {
                refuse("MULTI/EXEC and WATCH", "a transaction needs one node to order it")
            }
            Request::Conflicts { .. } => refuse(
                "REPLIKV.CONFLICTS",
                "concurrent writes are kept as siblings here (REPLIKV.SIBLINGS); only a multi-leader cluster keeps a conflict log",
            ),
            Request::Keys { .. } | Request::Scan { .. } | Request::RandomKey => {
                refuse("this command", "a node holds tombstones and stale values that only a quorum read resolves")
            }
            Request::FlushAll | Request::FlushDb | Request::SwapDb { .. } | Request::Move { .. } => {
                refuse("this command", "it would need a quorum write of every key")
            }
            Request::Ttl { .. }
            | Request::Persist { .. }
            | Request::Expire { .. }
            | Request::ExpireIf { .. }
            | Request::ExpireTime { .. }
            | Request::GetEx { .. }
            | Request::SetEx { .. } => refuse("expiry", "keys in a leaderless cluster do not expire yet"),
            _ => refuse("this command", rmw),
        })
    }

    /// What the replication status pages show.
    pub fn status(&self, now_ms: u64) -> ReplicationStatus {
        let damaged = self.store.damaged();
        ReplicationStatus {
            role: "leaderless",
            mode: "leaderless",
            leaderless: Some(LeaderlessStatus {
                n: self.settings.nwr.n,
                w: self.settings.nwr.w,
                r: self.settings.nwr.r,
                conflicts: self.settings.conflicts.as_str(),
                read_repair: self.settings.read_repair.as_str(),
                in_flight: self.ops.unsettled(),
                counters: self.counters.clone(),
                anti_entropy: AntiEntropyStatus {
                    trees: if self.trees.rebuilding() { "rebuilding" } else { "ready" }.into(),
                    tree_keys: if self.trees.rebuilding() { self.trees.rebuilt_keys() } else { self.trees.keys() },
                    ranges: self.trees.all().count(),
                    interval_ms: self.settings.anti_entropy_interval_ms,
                    style: self.settings.anti_entropy_style.as_str().into(),
                    bytes_sent: self.rounds.bytes_sent,
                    last_exchange_ms_ago: self
                        .rounds
                        .last_exchange
                        .iter()
                        .map(|(peer, at)| (peer.to_string(), now_ms.saturating_sub(*at)))
                        .collect(),
                    tombstones_pending: self.tombstones.len(),
                    tombstones_remembered: self.tombstones.remembered_len(),
                    tombstones_untracked: self.tombstones.untracked,
                    hint_backlog: self.hints.backlog(),
                    hints_stored: self.hints.stored,
                    hints_delivered: self.hints.delivered,
                    hints_dropped: self.hints.dropped,
                    counters: self.rounds.counters.clone(),
                },
            }),
            last_lsn: self.stored,
            durable_lsn: self.durable,
            damaged_keys: damaged.count(),
            damaged: crate::node::damaged_records(damaged),
            ..ReplicationStatus::default()
        }
    }
}

impl<E: Engine> Family for Leaderless<E> {
    type Message = Message;

    fn step(&mut self, now_ms: u64, input: Input, outbox: &mut Outbox) -> Result<()> {
        Leaderless::step(self, now_ms, input, outbox)
    }

    fn write_out(&mut self, now_ms: u64, _outbox: &mut Outbox) -> Result<WrittenOutAll> {
        let engine = self.store.engine_mut().write_out(now_ms)?;
        Ok(WrittenOutAll {
            bytes: engine.bytes,
            syncs: engine.sync.into_iter().collect(),
            last_lsn: self.stored,
            resets: 0,
        })
    }

    fn status(&self, now_ms: u64) -> ReplicationStatus {
        Leaderless::status(self, now_ms)
    }
}

/// The id of a client request, as the coordinator answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    /// A client of this node.
    Local(RequestId),
    /// A write another node forwarded (its number for it).
    Forwarded(NodeId, u64),
}

#[cfg(test)]
mod tests;
