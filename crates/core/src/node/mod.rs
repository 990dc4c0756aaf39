//! What every replication family shares: the shape of a node's state machine, and the one
//! concrete type the runtime and the simulator hold.
//!
//! A node is a state machine driven by `step(now, input, &mut outbox)`: the runtime hands it
//! one [`Input`] at a time with the current time (a client's request, a peer's message, a
//! tick, a durability notice), and the node pushes what must be sent into an [`Outbox`]: a
//! reply, or a message for a peer. The runtime releases each output when what it depends on
//! is durable ([`Outbox::after_flush`] after the batch's fsyncs, [`Outbox::now`] at once). A
//! node never blocks, sleeps, reads a clock or touches a socket, so the simulator runs the
//! same code on virtual time.
//!
//! # Families
//!
//! How a node replicates is its family, chosen per cluster ([`Mode`]); each is a folder of
//! its own with its messages, settings and essay, and implements [`Family`]:
//!
//! - [`crate::single_leader`]: one leader takes every write and ships its log to followers
//!   (`sync`, `semi-sync:K`, `async`), with elections, fencing and handovers. A lone node
//!   (standalone) is this family with no followers.
//! - [`crate::leaderless`]: every replica takes writes; a write waits for `w` of a key's `n`
//!   replicas, a read for `r`, and the newest version wins; stale replicas are read-repaired.
//! - [`crate::multi_leader`]: a leader per datacenter, each with followers (a single-leader
//!   cluster inside), exchanging changes asynchronously and resolving conflicts.
//!
//! [`Replica`] is the closed type over the families, as toyDB's `Node` enum is over its
//! roles: the runtime and the simulator hold one concrete type and never branch on a family;
//! roles (leader, follower, candidate) live inside their family. Peer messages travel as a
//! [`PeerMessage`], tagged by family, and the peer handshake carries the [`Mode`], so two
//! nodes of different families refuse each other before any message flows; a message of
//! another family that reaches a node anyway is logged, naming both, and dropped by
//! [`Replica::step`], never handed to the wrong family.
//!
//! What the families share stays outside them: this shape, the storage engines
//! ([`crate::storage`]), the commands ([`crate::kv`]), versions ([`crate::version`]), the
//! digest ([`crate::digest`]), quorum arithmetic ([`crate::quorum`]), and the replication
//! log ([`crate::replication`]) for a family that keeps one.
//!
//! CAVEATS
//! - [`Family`] has no "next deadline": the runtime ticks every family on a fixed period
//!   ([`Input::Tick`]) and each does its timed work then.

mod status;

pub use status::{DamagedRecord, ReplicationStatus, DAMAGED_SHOWN_MAX};

use crate::error::Result;
use crate::kv::{DbKeys, Reply, Request, Store};
use crate::leaderless::{self, Leaderless};
use crate::multi_leader::{self, MultiLeader};
use crate::replication::Lsn;
use crate::single_leader::{self, SingleLeader};
use crate::storage::{Engine, EngineStats, Flushed, SyncHandle};
use crate::version::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Identifies a request across the step boundary, so the runtime can route its reply.
pub type RequestId = u64;

/// What a replica is handed.
#[derive(Clone, Debug, PartialEq)]
pub enum Input<M = PeerMessage> {
    /// A client's request; its reply carries the same id.
    Request {
        /// Chosen by the runtime, unique among requests in flight.
        id: RequestId,
        /// What the client asked.
        request: Request,
    },
    /// Time passed: do timed work (expiry, heartbeats, timeouts).
    Tick,
    /// A message from another replica of the cluster.
    Message {
        /// The sender.
        from: NodeId,
        /// What it sent.
        message: M,
    },
    /// The replication log is durable through `lsn`: the runtime's fsync succeeded, or the
    /// batch owed none (an in-memory log is as durable as it gets once written out). A leader
    /// acknowledges no write, and its followers apply no record, it has not been told this
    /// of, so the runtime must say it after every batch that appended records, fsync or not.
    Durable {
        /// The newest durable record.
        lsn: Lsn,
        /// The log's reset count when the batch was written out ([`WrittenOutAll::resets`]):
        /// a notice from before a reset names records the reset discarded, and is ignored.
        resets: u64,
    },
}

/// What a replica asks the runtime to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// The reply to a client's request.
    Reply {
        /// The id of the request this answers.
        id: RequestId,
        /// The answer.
        reply: Reply,
    },
    /// A message for another replica.
    Send {
        /// The receiver.
        to: NodeId,
        /// The message, tagged with its family.
        message: PeerMessage,
    },
}

/// Where a step puts its outputs, by what they wait for.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Released once this batch, and every batch before it, is durable.
    pub after_flush: Vec<Output>,
    /// Released at once: they depend on nothing unflushed.
    pub now: Vec<Output>,
}

impl Outbox {
    /// Every output, `after_flush` first (for callers that flush after each step).
    pub fn drain_all(&mut self) -> Vec<Output> {
        let mut all = std::mem::take(&mut self.after_flush);
        all.append(&mut self.now);
        all
    }

    /// True when neither list holds anything.
    pub fn is_empty(&self) -> bool {
        self.after_flush.is_empty() && self.now.is_empty()
    }
}

/// What [`Family::write_out`] did, and the fsyncs it leaves to run.
#[derive(Debug, Default)]
pub struct WrittenOutAll {
    /// Bytes handed to the operating system.
    pub bytes: u64,
    /// The fsyncs that make them durable (a replicating node's log's, a standalone or
    /// leaderless node's engine's), each through its file's gate; empty when nothing is owed.
    pub syncs: Vec<SyncHandle>,
    /// The newest log record written out: durable once `syncs` have run.
    pub last_lsn: Lsn,
    /// The log's reset count then, for [`Input::Durable`].
    pub resets: u64,
}

/// The settings every family's node has; each family adds its own beside them.
#[derive(Clone, Debug)]
pub struct Common {
    /// This node.
    pub node: NodeId,
    /// Every other node of the cluster (for single-leader: every other voter; empty there
    /// means the nodes its role names).
    pub peers: Vec<NodeId>,
    /// How a client reaches each node, for errors that send it elsewhere
    /// (`n2 at 127.0.0.1:7002`).
    pub hints: BTreeMap<NodeId, String>,
    /// Seeds the node's random draws: the runtime passes OS randomness, the simulator its
    /// seed.
    pub seed: u64,
    /// What a read that finds a record damaged on disk does, from the start (recovery at open
    /// included): see `kv::damage`.
    pub corruption: crate::kv::Corruption,
}

impl Common {
    /// Defaults for `node`: no peers, no hints, seed 0, damaged records repaired.
    pub fn new(node: NodeId) -> Common {
        Common { node, peers: Vec::new(), hints: BTreeMap::new(), seed: 0, corruption: crate::kv::Corruption::Repair }
    }
}

/// A replication family: one way of keeping replicas, behind the node's one shape.
pub trait Family {
    /// The family's own peer messages (one variant of [`PeerMessage`]).
    type Message;

    /// Handles one input at wall-clock `now_ms`, pushing outputs into `outbox`. An error is
    /// an engine or log failure: the node must stop and release nothing.
    fn step(&mut self, now_ms: u64, input: Input<Self::Message>, outbox: &mut Outbox) -> Result<()>;

    /// Hands every write stepped so far to the operating system and returns the fsyncs that
    /// make them durable; `after_flush` may be released once they have succeeded. It may push
    /// messages into `outbox.now` (a leader ships what the batch appended, while the fsync
    /// runs), which the runtime sends at once.
    fn write_out(&mut self, now_ms: u64, outbox: &mut Outbox) -> Result<WrittenOutAll>;

    /// What the replication status pages show, at `now_ms`.
    fn status(&self, now_ms: u64) -> ReplicationStatus;
}

/// The replication family of a cluster: the `mode` setting, also carried by the peer
/// handshake.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// One leader, followers, elections (DESIGN §7).
    #[default]
    SingleLeader,
    /// Every replica takes writes; quorums n, w, r (DESIGN §7).
    Leaderless,
    /// A leader per datacenter, exchanging changes asynchronously; conflicts resolved
    /// (DESIGN §7).
    MultiLeader,
}

impl Mode {
    /// The setting's value: `single-leader`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::SingleLeader => "single-leader",
            Mode::Leaderless => "leaderless",
            Mode::MultiLeader => "multi-leader",
        }
    }

    /// Every mode, for messages listing the valid values.
    pub const ALL: [Mode; 3] = [Mode::SingleLeader, Mode::Leaderless, Mode::MultiLeader];

    /// The mode a setting names, or an error listing the valid values.
    pub fn parse(value: &str) -> std::result::Result<Mode, String> {
        Mode::ALL.into_iter().find(|m| m.as_str() == value).ok_or_else(|| {
            let valid: Vec<&str> = Mode::ALL.iter().map(|m| m.as_str()).collect();
            format!("unknown replication mode {value:?}: valid modes are {}", valid.join(", "))
        })
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message between nodes, tagged by the family that speaks it. The variant order is part of
/// the peer protocol.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// A single-leader message.
    SingleLeader(single_leader::Message),
    /// A leaderless message.
    Leaderless(leaderless::Message),
    /// A multi-leader message.
    MultiLeader(multi_leader::Message),
}

impl PeerMessage {
    /// The family that speaks this message.
    pub fn mode(&self) -> Mode {
        match self {
            PeerMessage::SingleLeader(_) => Mode::SingleLeader,
            PeerMessage::Leaderless(_) => Mode::Leaderless,
            PeerMessage::MultiLeader(_) => Mode::MultiLeader,
        }
    }

    /// The message's name, for logs (`Append`).
    pub fn kind(&self) -> &'static str {
        match self {
            PeerMessage::SingleLeader(message) => message.kind(),
            PeerMessage::Leaderless(message) => message.kind(),
            PeerMessage::MultiLeader(message) => message.kind(),
        }
    }
}

impl From<single_leader::Message> for PeerMessage {
    fn from(message: single_leader::Message) -> PeerMessage {
        PeerMessage::SingleLeader(message)
    }
}

impl From<multi_leader::Message> for PeerMessage {
    fn from(message: multi_leader::Message) -> PeerMessage {
        PeerMessage::MultiLeader(message)
    }
}

impl From<leaderless::Message> for PeerMessage {
    fn from(message: leaderless::Message) -> PeerMessage {
        PeerMessage::Leaderless(message)
    }
}

/// A node's replica: one family's node. The runtime and the simulator hold this one type.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per node, built once and never moved on a hot path
pub enum Replica<E> {
    /// A single-leader node (or a lone one).
    SingleLeader(SingleLeader<E>),
    /// A leaderless node.
    Leaderless(Leaderless<E>),
    /// A multi-leader node.
    MultiLeader(MultiLeader<E>),
}

impl<E: Engine> Replica<E> {
    /// A lone node's replica over `engine`; fails with [`crate::Error::Corrupt`] when the
    /// engine's database map is damaged.
    pub fn standalone(engine: E, node: NodeId) -> Result<Replica<E>> {
        SingleLeader::standalone(engine, node).map(Replica::SingleLeader)
    }

    /// A lone node's replica over `engine`, for tests (panics where [`Replica::standalone`]
    /// fails).
    pub fn new(engine: E, node: NodeId) -> Replica<E> {
        Replica::SingleLeader(SingleLeader::new(engine, node))
    }

    /// The family this node replicates by.
    pub fn mode(&self) -> Mode {
        match self {
            Replica::SingleLeader(_) => Mode::SingleLeader,
            Replica::Leaderless(_) => Mode::Leaderless,
            Replica::MultiLeader(_) => Mode::MultiLeader,
        }
    }

    /// Handles one input at wall-clock `now_ms`, pushing outputs into `outbox`. A peer
    /// message of another family is logged and dropped (the handshake keeps such peers out).
    /// An error is an engine or log failure: the node must stop and release nothing.
    pub fn step(&mut self, now_ms: u64, input: Input, outbox: &mut Outbox) -> Result<()> {
        match self {
            Replica::SingleLeader(node) => {
                let input = match input {
                    Input::Request { id, request } => Input::Request { id, request },
                    Input::Tick => Input::Tick,
                    Input::Durable { lsn, resets } => Input::Durable { lsn, resets },
                    Input::Message { from, message: PeerMessage::SingleLeader(message) } => {
                        Input::Message { from, message }
                    }
                    Input::Message { from, message } => {
                        wrong_family(Mode::SingleLeader, from, &message);
                        return Ok(());
                    }
                };
                node.step(now_ms, input, outbox)
            }
            Replica::Leaderless(node) => {
                let input = match input {
                    Input::Request { id, request } => Input::Request { id, request },
                    Input::Tick => Input::Tick,
                    Input::Durable { lsn, resets } => Input::Durable { lsn, resets },
                    Input::Message { from, message: PeerMessage::Leaderless(message) } => {
                        Input::Message { from, message }
                    }
                    Input::Message { from, message } => {
                        wrong_family(Mode::Leaderless, from, &message);
                        return Ok(());
                    }
                };
                node.step(now_ms, input, outbox)
            }
            Replica::MultiLeader(node) => {
                let input = match input {
                    Input::Request { id, request } => Input::Request { id, request },
                    Input::Tick => Input::Tick,
                    Input::Durable { lsn, resets } => Input::Durable { lsn, resets },
                    Input::Message { from, message: PeerMessage::MultiLeader(message) } => {
                        Input::Message { from, message }
                    }
                    Input::Message { from, message } => {
                        wrong_family(Mode::MultiLeader, from, &message);
                        return Ok(());
                    }
                };
                node.step(now_ms, input, outbox)
            }
        }
    }

    /// Hands every write stepped so far to the operating system (see [`Family::write_out`]).
    pub fn write_out(&mut self, now_ms: u64, outbox: &mut Outbox) -> Result<WrittenOutAll> {
        match self {
            Replica::SingleLeader(node) => node.write_out(now_ms, outbox),
            Replica::Leaderless(node) => Family::write_out(node, now_ms, outbox),
            Replica::MultiLeader(node) => node.write_out(now_ms, outbox),
        }
    }

    /// Makes every write stepped so far durable; only then may `after_flush` be released.
    pub fn flush(&mut self, now_ms: u64) -> Result<Flushed> {
        match self {
            Replica::SingleLeader(node) => node.flush(now_ms),
            Replica::Leaderless(node) => node.flush(now_ms),
            Replica::MultiLeader(node) => node.flush(now_ms),
        }
    }

    /// What the replication status pages show, at `now_ms`.
    pub fn status(&self, now_ms: u64) -> ReplicationStatus {
        match self {
            Replica::SingleLeader(node) => node.status(now_ms),
            Replica::Leaderless(node) => node.status(now_ms),
            Replica::MultiLeader(node) => node.status(now_ms),
        }
    }

    /// Background work between batches (compaction), bounded by `budget_bytes`.
    pub fn maintain(&mut self, budget_bytes: u64) -> Result<()> {
        match self {
            Replica::SingleLeader(node) => node.maintain(budget_bytes),
            Replica::Leaderless(node) => node.maintain(budget_bytes),
            Replica::MultiLeader(node) => node.local_mut().maintain(budget_bytes),
        }
    }

    /// The store, for reading keys (digests, tests).
    pub fn store(&self) -> &Store<E> {
        match self {
            Replica::SingleLeader(node) => node.store(),
            Replica::Leaderless(node) => node.store(),
            Replica::MultiLeader(node) => node.store(),
        }
    }

    /// The storage engine's counters.
    pub fn stats(&self) -> EngineStats {
        self.store().engine().stats()
    }

    /// Every database holding keys, with its counts (INFO keyspace).
    pub fn keyspace(&self) -> Vec<DbKeys> {
        self.store().keyspace()
    }

    /// The newest record in the node's log (0 for a family that keeps none): the runtime
    /// tells the node when it is durable ([`Input::Durable`]).
    pub fn last_lsn(&self) -> Lsn {
        match self {
            Replica::SingleLeader(node) => node.last_lsn(),
            Replica::Leaderless(node) => node.last_lsn(),
            Replica::MultiLeader(node) => node.local().last_lsn(),
        }
    }

    /// How many times the node's log was reset since it opened, for [`Input::Durable`].
    pub fn log_resets(&self) -> u64 {
        match self {
            Replica::SingleLeader(node) => node.log_resets(),
            Replica::Leaderless(_) => 0,
            Replica::MultiLeader(node) => node.local().log_resets(),
        }
    }

    /// True while this node leads (a family without leaders never does).
    pub fn is_leader(&self) -> bool {
        match self {
            Replica::SingleLeader(node) => node.is_leader(),
            Replica::Leaderless(_) => false,
            Replica::MultiLeader(node) => node.local().is_leader(),
        }
    }

    /// Sets what a read that finds a damaged record does (see [`Store::set_corruption`]).
    pub fn set_corruption(&mut self, corruption: crate::kv::Corruption) {
        match self {
            Replica::SingleLeader(node) => node.set_corruption(corruption),
            Replica::Leaderless(node) => node.set_corruption(corruption),
            Replica::MultiLeader(node) => node.local_mut().set_corruption(corruption),
        }
    }

    /// Sets how many databases requests may name (see [`Store::set_databases`]).
    pub fn set_databases(&mut self, databases: u32) {
        match self {
            Replica::SingleLeader(node) => node.set_databases(databases),
            Replica::Leaderless(node) => node.set_databases(databases),
            Replica::MultiLeader(node) => node.local_mut().set_databases(databases),
        }
    }

    /// Changes the timeouts of a running node (the server's `CONFIG SET ack_timeout_ms`): how
    /// long a write waits for its acknowledgements, and a forwarded request for its reply.
    pub fn set_timeouts(&mut self, ack_timeout_ms: u64, forward_timeout_ms: u64) {
        match self {
            Replica::SingleLeader(node) => node.set_timeouts(ack_timeout_ms, forward_timeout_ms),
            Replica::Leaderless(node) => node.set_timeout(ack_timeout_ms),
            Replica::MultiLeader(node) => node.local_mut().set_timeouts(ack_timeout_ms, forward_timeout_ms),
        }
    }

    /// The single-leader node, if this is one (the simulator's single-leader checks).
    pub fn single_leader(&self) -> Option<&SingleLeader<E>> {
        match self {
            Replica::SingleLeader(node) => Some(node),
            Replica::Leaderless(_) | Replica::MultiLeader(_) => None,
        }
    }

    /// The leaderless node, if this is one.
    pub fn leaderless(&self) -> Option<&Leaderless<E>> {
        match self {
            Replica::Leaderless(node) => Some(node),
            Replica::SingleLeader(_) | Replica::MultiLeader(_) => None,
        }
    }

    /// The single-leader node, if this is one, to take it apart.
    pub fn into_single_leader(self) -> Option<SingleLeader<E>> {
        match self {
            Replica::SingleLeader(node) => Some(node),
            Replica::Leaderless(_) | Replica::MultiLeader(_) => None,
        }
    }

    /// The multi-leader node, if this is one.
    pub fn multi_leader(&self) -> Option<&MultiLeader<E>> {
        match self {
            Replica::MultiLeader(node) => Some(node),
            Replica::SingleLeader(_) | Replica::Leaderless(_) => None,
        }
    }
}

/// Logs and drops a peer message of another family than the node's (the handshake keeps such
/// peers out, so this is a bug or a peer that lies about its mode; it must not stop the node).
fn wrong_family(mine: Mode, from: NodeId, message: &PeerMessage) {
    tracing::error!(
        "a {} message ({}) from node {from} reached a {mine} node: dropped (the two run different replication modes)",
        message.mode(),
        message.kind()
    );
}

impl<E> From<Leaderless<E>> for Replica<E> {
    fn from(node: Leaderless<E>) -> Replica<E> {
        Replica::Leaderless(node)
    }
}

impl<E> From<MultiLeader<E>> for Replica<E> {
    fn from(node: MultiLeader<E>) -> Replica<E> {
        Replica::MultiLeader(node)
    }
}

impl<E> From<SingleLeader<E>> for Replica<E> {
    fn from(node: SingleLeader<E>) -> Replica<E> {
        Replica::SingleLeader(node)
    }
}

/// The damaged keys a status lists (the first [`DAMAGED_SHOWN_MAX`]), with where each record is.
pub(crate) fn damaged_records(damaged: &crate::kv::DamagedKeys) -> Vec<DamagedRecord> {
    damaged
        .iter()
        .take(DAMAGED_SHOWN_MAX)
        .map(|(key, d)| DamagedRecord {
            key: String::from_utf8_lossy(key).escape_debug().to_string(),
            path: d.path.display().to_string(),
            offset: d.offset,
            reason: d.reason.clone(),
        })
        .collect()
}

/// REPLIKV.DIGEST over `store`: `[lsn, keys, root, [bucket...]]` in hex, or one bucket's
/// `[lsn, [[key, hash]...]]` (at most [`DIGEST_BUCKET_KEYS_MAX`] keys). `lsn` is how far the
/// node's log is applied (0 for a family without one). A damaged record is listed and
/// answered with a `DAMAGED` error.
pub(crate) fn digest_reply<E: Engine>(
    store: &mut Store<E>,
    lsn: Lsn,
    bucket: Option<usize>,
    scope: crate::digest::Scope<'_>,
) -> Result<Reply> {
    let lsn = Reply::Int(lsn as i64);
    let hex = |h: &[u8; 32]| Reply::Bulk(bytes::Bytes::from(crate::digest::hex(h)));
    let result = match bucket {
        None => crate::digest::digest_of(store.engine(), scope).map(|d| {
            let buckets = d.buckets.iter().map(hex).collect();
            Reply::Array(vec![lsn, Reply::Int(d.keys as i64), hex(&d.root), Reply::Array(buckets)])
        }),
        Some(b) => crate::digest::bucket_entries(store.engine(), b, DIGEST_BUCKET_KEYS_MAX, scope).map(|entries| {
            let entries = entries.into_iter().map(|e| Reply::Array(vec![Reply::Bulk(e.key), hex(&e.hash)])).collect();
            Reply::Array(vec![lsn, Reply::Array(entries)])
        }),
    };
    match result {
        Ok(reply) => Ok(reply),
        Err(crate::Error::InvalidInput(why)) => Ok(Reply::err(why)),
        Err(e @ crate::Error::Damaged { .. }) => {
            let crate::Error::Damaged { key, .. } = &e else { unreachable!("matched above") };
            let (key, reply) = (key.clone(), Reply::Error(format!("DAMAGED no digest: {e}")));
            store.note_damage(&key, e)?;
            Ok(reply)
        }
        Err(e) => Err(e),
    }
}

/// Keys one REPLIKV.DIGEST BUCKET lists at most.
pub const DIGEST_BUCKET_KEYS_MAX: usize = 100_000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryEngine;

    #[test]
    fn a_message_of_another_family_is_dropped_without_stopping_the_node() {
        let me = NodeId::from_name("n1");
        let settings = crate::leaderless::Settings::new(me, crate::quorum::Nwr::new(1, 1, 1).unwrap());
        let mut node: Replica<MemoryEngine> = Leaderless::open(MemoryEngine::new(), settings, 0).unwrap().into();
        let message = PeerMessage::SingleLeader(single_leader::Message::TimeoutNow { epoch: 3 });
        let mut outbox = Outbox::default();
        let from = NodeId::from_name("n2");
        assert!(node.step(0, Input::Message { from, message }, &mut outbox).is_ok());
        assert!(outbox.is_empty());
        let mut lone: Replica<MemoryEngine> = Replica::new(MemoryEngine::new(), me);
        let message = PeerMessage::Leaderless(leaderless::Message::WriteAck { op: 1 });
        assert!(lone.step(0, Input::Message { from, message }, &mut outbox).is_ok());
        assert!(outbox.is_empty());
    }
}
