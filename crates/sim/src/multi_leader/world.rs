//! The multi-leader world: datacenters of nodes running the real multi-leader replicas
//! ([`replikv_core::multi_leader::MultiLeader`]: a single-leader cluster inside each
//! datacenter, and the exchange of changes between the datacenters' leaders) on the shared
//! ground (`ground.rs`): its network, faults, clocks and trace. The nodes, their disks and
//! logs, the oracle and the quiet phase are this family's; the clients are in
//! [`super::clients`].
//!
//! # A millisecond
//!
//! As in the single-leader world: faults may start (a partition, which here may cut a whole
//! datacenter off from the others, crashes, pauses), crashed nodes whose time has come
//! restart and paused ones resume, due packets reach their nodes' inboxes, and each running
//! node completes its due fsyncs (its replication log's: the write-ahead log) and steps one
//! batch: the durable notice, a tick every [`TICK_MS`], and its inbox. Then the clients time
//! out or issue.
//!
//! # Disks and crashes
//!
//! A node's engine journals its puts on its simulated disk; its replication log is durable
//! through its last completed fsync. A crash keeps the durable records and a torn prefix of
//! the rest, of the engine and of the log (`torn_log`, shared with the
//! single-leader world); the vote and the rollback log survive whole.
//!
//! # The oracle
//!
//! When a leader steps a client's write, the world reads the leader's state of the key before
//! and after: the new dot, its version and the context it replaced are the write's
//! [`Stamp`] (the leaderless simulator's vocabulary). The checkers use the stamps to tell
//! "overwritten by a write that had seen it" from "lost to a concurrent one".
//!
//! # The quiet phase
//!
//! Every fault heals (partitions close, crashed nodes restart, paused ones resume), the
//! clients stop, and the run goes on until every node of every datacenter holds the same
//! state of every client key (namespace 0; each datacenter's conflict log and applied
//! positions, namespace 2, legitimately differ), or `quiet_ms` runs out.
//!
//! CAVEATS
//! - The replication logs keep [`LOG_RETAIN_BYTES`] (more than a run writes): a datacenter
//!   cut off longer than the link timeout is never left behind the retained log (the core
//!   cannot bring such a datacenter up to date yet; see its caveats).
//! - A node's exchange counters restart with it; the world adds up those of the replicas
//!   that crashed.

use crate::disk::{Disk, SimEngine};
use crate::faults::Faults;
use crate::ground::{FamilyWorld, Ground};
use crate::history::ClientId;
use crate::host::{Clock, Pending};
use crate::leaderless::history::{LeaderlessHistory as MultiLeaderHistory, Stamp};
use crate::net::Packet;
use crate::run::{Judgement, Verdict};
use crate::session::{Guarantee, Session};
use crate::world::{log_options, torn_log};
use rand::Rng;
use replikv_core::causality::{Siblings, VersionVector};
use replikv_core::kv::Request;
use replikv_core::multi_leader::conflict_log::{self, CONFLICTS_LISTED_MAX};
use replikv_core::multi_leader::{Canary, ConflictEntry, Datacenter, ExchangeCounters, MultiLeader, Resolve, Rules};
use replikv_core::node::{Input, Outbox, Output, Replica, RequestId};
use replikv_core::replication::Lsn;
use replikv_core::single_leader::{self, ReplicaFiles, Role, SingleLeader};
use replikv_core::storage::Engine;
use replikv_core::version::NodeId;
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

/// Virtual milliseconds between a node's ticks.
pub const TICK_MS: u64 = 10;

/// Bytes of replication log each node keeps: more than a run writes (see the caveats).
pub const LOG_RETAIN_BYTES: u64 = 64 * 1024 * 1024;

/// The election timeout inside a datacenter (each wait drawn from this to twice this).
pub const ELECTION_TIMEOUT_MS: u64 = 150;

/// How far ahead of a leader's clock a change may be stamped before its shipment waits:
/// less than the skews the faults draw (up to 500 ms either way), so that runs with skew
/// hold shipments back and the wait is exercised.
pub const MAX_CLOCK_SKEW_MS: u64 = 200;

/// Virtual milliseconds between checks that the quiet phase has converged.
const SETTLE_CHECK_MS: u64 = 50;

/// Datacenters a run has at most (and nodes in each).
pub const DATACENTERS_MAX: usize = 5;

/// Nodes a datacenter has at most.
pub const DC_NODES_MAX: usize = 5;

/// How a multi-leader run is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// The seed every choice derives from.
    pub seed: u64,
    /// Datacenters, `dc1`...
    pub datacenters: usize,
    /// Nodes in each datacenter; the first leads it at the start.
    pub dc_nodes: usize,
    /// Followers inside a datacenter that must hold a write before its reply (0: async).
    pub acks_needed: usize,
    /// The acknowledgement mode's name (`sync`, `semi-sync:1`, `async`).
    pub acks_label: String,
    /// How every key's conflicts are resolved.
    pub resolve: Resolve,
    /// Concurrent clients; client `c` is attached to datacenter `c % datacenters`.
    pub clients: usize,
    /// Keys the clients share (few, so that they collide).
    pub keys: usize,
    /// Virtual milliseconds of the safety phase.
    pub safety_ms: u64,
    /// Virtual milliseconds the quiet phase may take at most.
    pub quiet_ms: u64,
    /// The faults.
    pub faults: Faults,
    /// A bug planted in the nodes, to test the checkers.
    pub canary: Canary,
    /// Every client keeps a session and reads from any node of its datacenter
    /// ([`super::clients`]); off, every operation goes to the datacenter's leader.
    pub follower_reads: bool,
    /// A session bug planted in the replica inside each datacenter (`SessionNoWait`) or in
    /// the clients' sessions (`TokenForgetsRead`), to test the session checkers.
    pub session_canary: single_leader::Canary,
}

impl Config {
    /// True when an acknowledged write survives a failover inside its datacenter: the leader
    /// and the followers it waits for make a majority of the datacenter (DESIGN §7).
    pub fn acks_survive_failover(&self) -> bool {
        self.acks_needed + 1 >= replikv_core::quorum::majority(self.dc_nodes)
    }
}

/// One simulated node.
pub(super) struct Node {
    /// Its settings, to reopen it after a crash.
    settings: replikv_core::multi_leader::Settings,
    /// Its replica; `None` while down.
    pub(super) replica: Option<Replica<SimEngine>>,
    /// Its engine's disk.
    disk: Rc<RefCell<Disk>>,
    /// The log is durable through here.
    log_synced: Lsn,
    /// Inputs waiting for its next batch.
    inbox: VecDeque<Input>,
    /// Batches written out, waiting for their fsync.
    fsyncs: VecDeque<Pending>,
    /// The newest durable log position not yet told to the replica, with the log's reset
    /// count when it was written out.
    durable_notice: Option<(Lsn, u64)>,
    /// Its clock's skew and drift.
    clock: Clock,
    /// When it ticks next.
    next_tick_at: u64,
    /// The log, vote and rollback log as the disk holds them while the node is down.
    stored_files: Option<ReplicaFiles>,
    /// The log's reset count when last looked at.
    log_resets: u64,
}

impl Node {
    /// This node's clock at virtual time `t`.
    fn clock(&self, t: u64) -> u64 {
        self.clock.at_from(crate::host::CLOCK_BASE_MS, t)
    }
}

/// The world of one multi-leader run.
pub struct World {
    /// The setup.
    pub config: Config,
    /// The RNG, virtual time, network, nodes' health, trace and counts.
    pub(super) ground: Ground,
    /// The nodes, datacenter by datacenter.
    pub(super) nodes: Vec<Node>,
    /// Each node's id, by index.
    ids: Vec<NodeId>,
    /// Each node's datacenter, by index.
    pub(super) dc_of: Vec<usize>,
    /// The clients.
    pub(super) clients: Vec<super::clients::Client>,
    /// Request id -> client.
    pub(super) requests: BTreeMap<RequestId, usize>,
    /// The last request id handed out.
    pub(super) next_request: RequestId,
    /// The last write number handed out.
    pub(super) next_write: u64,
    /// Request id -> (write number, key) of the writes in flight, for the oracle.
    pub(super) writes_sent: BTreeMap<RequestId, (u64, String)>,
    /// What the clients did and saw.
    pub history: MultiLeaderHistory,
    /// What each write was stamped with, by write number.
    pub stamps: BTreeMap<u64, Stamp>,
    /// The exchange counters of replicas that crashed.
    retired: ExchangeCounters,
    /// The guarantee of each client's session (`follower_reads`).
    pub sessions: BTreeMap<ClientId, Guarantee>,
    /// Session reads answered `-TRYAGAIN` (a follower behind the session, after its wait).
    pub tryagain: u64,
}

impl World {
    /// A world for `config`, every node fresh.
    pub fn new(config: Config) -> World {
        let count = config.datacenters * config.dc_nodes;
        let mut ground = Ground::new(config.seed, config.faults.clone(), count);
        let ids: Vec<NodeId> = (1..=count).map(|i| NodeId::from_name(&format!("n{i}"))).collect();
        let dc_of: Vec<usize> = (0..count).map(|i| i / config.dc_nodes).collect();
        let datacenters: Vec<Datacenter> = (0..config.datacenters)
            .map(|d| Datacenter {
                name: format!("dc{}", d + 1),
                nodes: ids[d * config.dc_nodes..(d + 1) * config.dc_nodes].to_vec(),
            })
            .collect();
        let hints: BTreeMap<NodeId, String> =
            ids.iter().enumerate().map(|(j, &id)| (id, format!("n{}", j + 1))).collect();
        let mut nodes = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let mine = &datacenters[dc_of[i]].nodes;
            let role = match mine[0] == id {
                true => Role::Leader { followers: mine[1..].to_vec() },
                false => Role::Follower { leader: Some(mine[0]), leader_hint: hints[&mine[0]].clone() },
            };
            let mut local = single_leader::Settings::new(id, role);
            local.common.peers = mine.iter().copied().filter(|&other| other != id).collect();
            local.common.hints = hints.clone();
            local.common.seed = ground.rng.gen();
            local.auto_failover = true;
            local.election_timeout_ms = ELECTION_TIMEOUT_MS;
            local.acks_needed = config.acks_needed.min(mine.len() - 1);
            local.acks_label = config.acks_label.clone();
            local.ack_timeout_ms = 1_000;
            local.heartbeat_ms = 20;
            local.resend_ms = 200;
            local.link_timeout_ms = 200;
            local.ship_bytes_max = 4 * 1024;
            local.window_bytes_max = 32 * 1024;
            local.snapshot_chunk_bytes_max = 512;
            local.canary = config.session_canary;
            let settings = replikv_core::multi_leader::Settings {
                local,
                datacenters: datacenters.clone(),
                rules: Rules::new(config.resolve),
                max_clock_skew_ms: MAX_CLOCK_SKEW_MS,
                resend_ms: 300,
                link_timeout_ms: 1_000,
                store_position_every: replikv_core::multi_leader::POSITION_STORE_EVERY_RECORDS,
                conflicts_kept_max: replikv_core::multi_leader::CONFLICTS_KEPT_MAX,
                canary: config.canary,
            };
            let mut node = Node {
                settings,
                replica: None,
                disk: Rc::new(RefCell::new(Disk::default())),
                log_synced: 0,
                inbox: VecDeque::new(),
                fsyncs: VecDeque::new(),
                durable_notice: None,
                clock: Clock::draw(&mut ground.rng, &config.faults),
                next_tick_at: 0,
                stored_files: None,
                log_resets: 0,
            };
            let files = ReplicaFiles::in_memory(log_options(LOG_RETAIN_BYTES));
            node.replica = Some(open(&node, files, 0).expect("a fresh replica opens"));
            nodes.push(node);
        }
        let sessions = match config.follower_reads {
            true => crate::session::draw_guarantees(config.seed, 0..config.clients as ClientId),
            false => BTreeMap::new(),
        };
        let forgets = config.session_canary == single_leader::Canary::TokenForgetsRead;
        let clients = (0..config.clients)
            .map(|c| {
                let session = sessions.get(&(c as ClientId)).map(|&g| Session::new(g, forgets));
                super::clients::Client::new(c, c % config.datacenters, session)
            })
            .collect();
        World {
            config,
            ground,
            nodes,
            ids,
            dc_of,
            clients,
            requests: BTreeMap::new(),
            next_request: 0,
            next_write: 0,
            writes_sent: BTreeMap::new(),
            history: MultiLeaderHistory::default(),
            stamps: BTreeMap::new(),
            retired: ExchangeCounters::default(),
            sessions,
            tryagain: 0,
        }
    }

    /// Every client's datacenter.
    pub fn client_datacenters(&self) -> BTreeMap<ClientId, usize> {
        (0..self.config.clients).map(|c| (c as ClientId, c % self.config.datacenters)).collect()
    }

    /// Writes a trace line.
    pub(super) fn trace(&mut self, line: String) {
        self.ground.trace(line);
    }

    /// The run's judgement: its operations, faults and trace so far, with the checkers'
    /// `verdicts`.
    pub fn judge(&self, verdicts: Vec<(String, Verdict)>) -> Judgement {
        self.ground.judge(verdicts)
    }

    /// What failed (a step, a write-out, a restart, a reply no client can make sense of), if
    /// anything did: the run's first failure.
    pub fn broken(&self) -> Option<&String> {
        self.ground.broken.as_ref()
    }

    /// The nodes of datacenter `dc`, by index.
    pub(super) fn dc_nodes(&self, dc: usize) -> std::ops::Range<usize> {
        dc * self.config.dc_nodes..(dc + 1) * self.config.dc_nodes
    }

    /// Runs the safety phase, then the quiet phase until every node holds the same state of
    /// every client key. `Err` says what still differs when `quiet_ms` ran out.
    pub fn run(&mut self) -> Result<(), String> {
        while self.ground.now < self.config.safety_ms && self.ground.broken.is_none() {
            self.step();
        }
        self.ground.heal_all();
        let deadline = self.ground.now + self.config.quiet_ms;
        while self.ground.now < deadline && self.ground.broken.is_none() {
            self.step();
            let idle = self.clients.iter().all(|c| c.is_idle());
            if self.ground.now.is_multiple_of(SETTLE_CHECK_MS) && idle && self.converged().is_ok() {
                self.trace("quiet: every node holds the same state of every key".into());
                return Ok(());
            }
        }
        self.converged()
            .map_err(|why| format!("not converged {} ms after the faults healed: {why}", self.config.quiet_ms))
    }

    /// Every node is up and holds the same state of every client key: `Err` names what
    /// differs.
    pub fn converged(&mut self) -> Result<(), String> {
        if let Some(i) = (0..self.nodes.len()).find(|&i| self.nodes[i].replica.is_none()) {
            return Err(format!("n{} is down", i + 1));
        }
        let states = self.final_states();
        match super::checks::divergence(&states).as_slice() {
            [] => Ok(()),
            differ => Err(differ.join("; ")),
        }
    }

    /// The client keys.
    pub(super) fn keys(&self) -> Vec<String> {
        (0..self.config.keys).map(|k| format!("k{k}")).collect()
    }

    /// Each node's state of every client key it holds (a node down holds none).
    pub fn final_states(&mut self) -> Vec<super::checks::States> {
        let keys = self.keys();
        (0..self.nodes.len())
            .map(|i| keys.iter().filter_map(|k| self.state_of(i, k).map(|s| (k.clone(), s))).collect())
            .collect()
    }

    /// Node `i`'s state of `key` (`None`: none, or the node is down; one that cannot be read
    /// breaks the run).
    pub(super) fn state_of(&mut self, i: usize, key: &str) -> Option<Siblings> {
        let replica = self.nodes[i].replica.as_ref()?;
        // A client key of namespace 0 that does not start with a zero byte is stored under
        // its own bytes (the store's physical keys).
        let record = match replica.store().engine().get(key.as_bytes()) {
            Ok(record) => record?,
            Err(e) => {
                self.ground.broken.get_or_insert(format!("n{}'s state of {key} cannot be read: {e}", i + 1));
                return None;
            }
        };
        match Siblings::from_bytes(record.value.as_ref()?) {
            Ok(state) => Some(state),
            Err(e) => {
                self.ground.broken.get_or_insert(format!("n{}'s record of {key} holds no causal state: {e}", i + 1));
                None
            }
        }
    }

    /// Every conflict log entry any node holds of the client keys (each datacenter's leader
    /// writes its own; its followers hold copies), in no particular order, duplicates
    /// included.
    pub fn conflict_logs(&mut self) -> Vec<ConflictEntry> {
        let mut all = Vec::new();
        for i in 0..self.nodes.len() {
            let Some(replica) = self.nodes[i].replica.as_ref() else { continue };
            for key in self.keys() {
                match conflict_log::list(replica.store(), key.as_bytes(), CONFLICTS_LISTED_MAX) {
                    Ok(entries) => all.extend(entries.into_iter().filter(|e| e.key.as_ref() == key.as_bytes())),
                    Err(e) => {
                        self.ground.broken.get_or_insert(format!("n{}'s conflict log cannot be read: {e}", i + 1));
                    }
                }
            }
        }
        all
    }

    /// Every state of a client key any node cut from its log at a failover inside its
    /// datacenter and saved to its rollback log: (key, the state the cut record held).
    pub fn rolled_back(&self) -> Vec<(String, Siblings)> {
        let mut all = Vec::new();
        for n in &self.nodes {
            let rollback = match (&n.replica, &n.stored_files) {
                (Some(Replica::MultiLeader(r)), _) => r.local().rollback(),
                (_, Some(files)) => &files.rollback,
                _ => continue,
            };
            for entry in rollback.memory_entries() {
                // Namespace 0's client keys are their own physical keys; others start with 0.
                if entry.key.first().is_none_or(|b| *b == 0) {
                    continue;
                }
                let key = &entry.key;
                let Some(state) = entry.value.as_ref().and_then(|v| Siblings::from_bytes(v).ok()) else { continue };
                all.push((String::from_utf8_lossy(key).into_owned(), state));
            }
        }
        all
    }

    /// The nodes' exchange counters, those of crashed replicas included.
    pub fn counters(&self) -> ExchangeCounters {
        let mut sum = self.retired.clone();
        for node in &self.nodes {
            if let Some(Replica::MultiLeader(r)) = &node.replica {
                add_counters(&mut sum, &r.status(0).multi_leader.unwrap_or_default().counters);
            }
        }
        sum
    }

    /// Node `i`'s work this millisecond: completed fsyncs, then one batch.
    fn run_node(&mut self, i: usize) {
        if self.nodes[i].replica.is_none() || self.ground.health[i].paused_until.is_some() {
            return;
        }
        self.complete_fsyncs(i);
        let node = &mut self.nodes[i];
        let tick = node.next_tick_at <= self.ground.now;
        let notice = node.durable_notice.take();
        if !tick && notice.is_none() && node.inbox.is_empty() {
            return;
        }
        let mut inputs: Vec<Input> = notice.map(|(lsn, resets)| Input::Durable { lsn, resets }).into_iter().collect();
        if tick {
            node.next_tick_at = self.ground.now + TICK_MS;
            inputs.push(Input::Tick);
        }
        inputs.extend(node.inbox.drain(..));
        let clock = node.clock(self.ground.now);
        let before = node.disk.borrow().mark();
        let lsn_before = node.replica.as_ref().expect("checked above").last_lsn();
        let mut outbox = Outbox::default();
        let mut now_outputs = Vec::new();
        for input in inputs {
            if let Err(e) = self.step_node(i, clock, input, &mut outbox) {
                self.ground.broken.get_or_insert(format!("n{} failed a step: {e}", i + 1));
                return;
            }
            now_outputs.append(&mut outbox.now);
        }
        let node = &mut self.nodes[i];
        let replica = node.replica.as_mut().expect("checked above");
        if replica.log_resets() != node.log_resets {
            // A reset (or a cut of the log's tail) is durable when it returns.
            node.log_resets = replica.log_resets();
            node.log_synced = ml(replica).local().log_reset_lsn();
        }
        let resets = match replica.write_out(clock, &mut outbox) {
            Ok(written) => written.resets,
            Err(e) => {
                self.ground.broken.get_or_insert(format!("n{} failed to write out: {e}", i + 1));
                return;
            }
        };
        let lsn = replica.last_lsn();
        let mark = node.disk.borrow().mark();
        now_outputs.append(&mut outbox.now);
        self.dispatch(i, now_outputs);
        let held = std::mem::take(&mut outbox.after_flush);
        let wrote = mark != before || lsn != lsn_before;
        if !wrote && self.nodes[i].fsyncs.is_empty() {
            self.dispatch(i, held);
        } else {
            let done_at = crate::host::fsync_done_at(&mut self.ground.rng, &self.nodes[i].fsyncs, self.ground.now);
            self.nodes[i].fsyncs.push_back(Pending { done_at, disk_mark: mark, lsn, resets, outputs: held });
        }
    }

    /// Node `i`'s fsyncs due now complete: the log is durable through their batches, and
    /// their held outputs leave, in order.
    fn complete_fsyncs(&mut self, i: usize) {
        while self.nodes[i].fsyncs.front().is_some_and(|p| p.done_at <= self.ground.now) {
            let done = self.nodes[i].fsyncs.pop_front().expect("front exists");
            // A batch written out before a reset names records the reset discarded.
            let node = &mut self.nodes[i];
            if done.resets == node.log_resets {
                node.log_synced = node.log_synced.max(done.lsn);
                node.durable_notice = Some((node.log_synced, done.resets));
            }
            self.dispatch(i, done.outputs);
        }
    }

    /// Steps node `i` with one input, and stamps the client's write it carries (the oracle).
    fn step_node(&mut self, i: usize, clock: u64, input: Input, outbox: &mut Outbox) -> replikv_core::Result<()> {
        let watched = self.watched_write(&input);
        let before = watched.as_ref().map(|(_, key, _)| self.state_of(i, key).unwrap_or_default());
        self.nodes[i].replica.as_mut().expect("running").step(clock, input, outbox)?;
        if let (Some((write, key, token)), Some(before)) = (watched, before) {
            self.stamp(i, write, key, before, token);
        }
        Ok(())
    }

    /// The client's write `input` carries, if any: its number, key and (`SET ... CONTEXT`) the
    /// context its token names.
    fn watched_write(&self, input: &Input) -> Option<(u64, String, Option<VersionVector>)> {
        let Input::Request { id, request } = input else { return None };
        // A session's write is the same write, positioned.
        let request = match request {
            Request::Session { request, .. } => request.as_ref(),
            request => request,
        };
        let token = match request {
            Request::Set { .. } | Request::Del { .. } => None,
            Request::SetContext { key, context, .. } => replikv_core::causality::decode_context(key, context).ok(),
            _ => return None,
        };
        let (write, key) = self.writes_sent.get(id)?;
        Some((*write, key.clone(), token))
    }

    /// Records what node `i` stamped write `write` of `key` with, from its state `before` the
    /// write and after; `token` is the context a `SET ... CONTEXT` named.
    fn stamp(&mut self, i: usize, write: u64, key: String, before: Siblings, token: Option<VersionVector>) {
        let me = self.ids[i];
        let after = self.state_of(i, &key).unwrap_or_default();
        let counter = after.context().get(me);
        if counter <= before.context().get(me) {
            return; // refused (a follower, a bad context), or stored nowhere
        }
        let dot = replikv_core::causality::Dot { node: me, counter };
        let Some(sibling) = after.values().iter().find(|s| s.dot == dot) else { return };
        let stamp = Stamp {
            key,
            dot,
            version: sibling.version,
            replaced: token.unwrap_or_else(|| before.context().clone()),
            delete: sibling.is_tombstone(),
        };
        self.trace(format!(
            "n{} stamps write #{write} of {} with dot {counter} version {}",
            i + 1,
            stamp.key,
            stamp.version
        ));
        self.stamps.insert(write, stamp);
    }

    /// Sends node `i`'s outputs: messages to peers, replies to clients.
    fn dispatch(&mut self, i: usize, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Send { to, message } => {
                    let Some(to) = self.ids.iter().position(|&id| id == to) else { continue };
                    if !self.ground.network.is_blocked(i, to) {
                        self.ground.send(Some(i), to, Packet::Peer { from: i, message });
                    }
                }
                Output::Reply { id, reply } => self.reply(id, reply),
            }
        }
    }
}

impl FamilyWorld for World {
    fn ground(&mut self) -> &mut Ground {
        &mut self.ground
    }

    fn node_ids(&self) -> Vec<NodeId> {
        self.ids.clone()
    }

    /// The vote and the rollback log survive whole (they are saved durably as they change);
    /// the engine and the log keep what was fsynced and a torn prefix of the rest.
    fn crash(&mut self, i: usize) {
        let (ground, node) = (&mut self.ground, &mut self.nodes[i]);
        let Some(replica) = node.replica.take() else { return };
        let Replica::MultiLeader(replica) = replica else {
            unreachable!("a multi-leader world runs multi-leader nodes")
        };
        add_counters(&mut self.retired, &replica.status(0).multi_leader.unwrap_or_default().counters);
        let was_leader = replica.local().is_leader();
        let (_, files) = replica.into_local().into_parts();
        let (kept, lost) = node.disk.borrow_mut().crash(&mut ground.rng);
        let log = torn_log(&mut ground.rng, node.log_synced, files.log);
        node.inbox.clear();
        node.fsyncs.clear();
        node.durable_notice = None;
        let until = crate::host::down_until(&mut ground.rng, ground.now);
        ground.health[i].down_until = Some(until);
        let survivors = log.last_lsn();
        node.log_synced = survivors;
        node.stored_files = Some(ReplicaFiles { log, ..files });
        ground.trace(format!(
            "n{}{} of dc{} crashed: engine kept {kept} unsynced puts and lost {lost}; log keeps through {survivors}; \
             down until t={until}",
            i + 1,
            if was_leader { " (leader)" } else { "" },
            self.dc_of[i] + 1
        ));
    }

    fn restart(&mut self, i: usize) -> replikv_core::Result<String> {
        let files = self.nodes[i].stored_files.take().expect("a down node's files are stored");
        let replica = open(&self.nodes[i], files, self.ground.now)?;
        let lsn = replica.last_lsn();
        let node = &mut self.nodes[i];
        (node.log_synced, node.log_resets) = (lsn, replica.log_resets());
        node.replica = Some(replica);
        node.next_tick_at = self.ground.now;
        Ok(format!("n{} restarted at lsn {lsn}", i + 1))
    }

    fn deliver(&mut self, to: usize, input: Input) {
        self.nodes[to].inbox.push_back(input);
    }

    fn run_node(&mut self, i: usize) {
        World::run_node(self, i);
    }

    fn run_clients(&mut self) {
        World::run_clients(self);
    }

    /// A partition cuts one node, or one whole datacenter, off from the others.
    fn draw_partition(&mut self) -> Option<String> {
        let ground = &mut self.ground;
        ground.network.maybe_partition_groups(&mut ground.rng, &ground.faults, ground.now, &self.dc_of)
    }
}

/// Opens `node`'s replica over its disk and `files`, at virtual time `t`.
fn open(node: &Node, files: ReplicaFiles, t: u64) -> replikv_core::Result<Replica<SimEngine>> {
    let engine = SimEngine::open(node.disk.clone())?;
    let inner = SingleLeader::replicated(engine, files, node.settings.local.clone(), node.clock(t))?;
    MultiLeader::new(inner, node.settings.clone()).map(Replica::from)
}

/// The multi-leader node inside `replica`.
fn ml<E: Engine>(replica: &Replica<E>) -> &MultiLeader<E> {
    replica.multi_leader().expect("a multi-leader world runs multi-leader nodes")
}

/// Adds `more` to `sum`, counter by counter.
fn add_counters(sum: &mut ExchangeCounters, more: &ExchangeCounters) {
    crate::add_fields!(sum, more; shipped, received, conflicts, held_back, refused);
}
