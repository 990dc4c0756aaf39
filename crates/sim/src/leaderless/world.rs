//! The leaderless world: `n` nodes running the real leaderless replicas
//! ([`replikv_core::leaderless`]) on the shared ground (`ground.rs`): its network,
//! faults, clocks and trace. The nodes, their disks, the oracle and the quiet phase are this
//! family's; the clients are in [`super::clients`].
//!
//! # A millisecond
//!
//! As in the single-leader world: faults may start (partitions, crashes, pauses), crashed
//! nodes whose time has come restart and paused ones resume, due packets reach their nodes'
//! inboxes, and each running node completes its due fsyncs (releasing their batches' held
//! outputs, and telling the node what is durable) and steps one batch: the durable notice, a
//! tick every [`TICK_MS`], and its inbox. Then the clients time out or issue.
//!
//! # Durability
//!
//! With `fsync = always` a batch that stored states is fsynced 1-4 ms later (the server's
//! pipelined group commit): its held outputs (acknowledgements, replies) leave then, and the
//! node is told its saves are durable, which is when a coordinator counts its own copy. With
//! `fsync = never` nothing is ever fsynced: held outputs leave at once and the node is told
//! at once that its saves are "durable" (as the server does: it has nothing more to wait
//! for), so its acknowledgements promise nothing; a crash keeps a torn prefix of everything
//! it wrote since it started.
//!
//! # The oracle
//!
//! When a node steps a client's write, the world reads the node's state of the key before
//! and after: the new dot, its version and the context it replaced are the write's
//! [`Stamp`]. A stamped write is marked as it leaves its coordinator in a message; one lost
//! with its coordinator's crash before it left is withdrawn when its dot goes to a later
//! write (nobody can hold it, so the two cannot clash). When a node restarts, the world compares its states with those it had when it
//! crashed: writes it had seen and no longer has are a [`Rollback`] (the lecture's "failing
//! node").
//!
//! # Sessions
//!
//! With [`Config::sessions`], every client runs in a session ([`super::session`]) whose
//! guarantee (none, read-your-writes or monotonic-reads) is drawn from the seed by an RNG of
//! its own: each request goes out as a `Request::KeySession` with the floor its guarantee
//! needs, to a node drawn at random as ever. The oracle looks through the wrapper.
//!
//! # The quiet phase
//!
//! Faults heal, crashed nodes restart, and the network stops losing messages (without
//! anti-entropy a lost repair would stay lost; it still duplicates, delays and reorders).
//! With anti-entropy on ([`Config::anti_entropy_ms`]) the clients read nothing: the phase
//! runs until every node holds the same state of every key, then on through a tombstone
//! grace period and two rounds, and until they agree again (`world/anti_entropy.rs`). Without
//! it, when everything has settled (no operation in
//! flight anywhere, no packet on its way, no fsync pending), the clients read each key once
//! through a node drawn at random; a read hears from all `n` replicas (there are no faults
//! left) and repairs the stale ones. When that has settled too, every node must have the same
//! Merkle root: read repair alone made the replicas converge.
//!
//! CAVEATS
//! - Every node replicates every key (`n` nodes): there is no placement ring and no
//!   forwarding in the simulated clusters.
//! - A node's counters restart with it; the world adds up those of the replicas that crashed.

use super::history::{LeaderlessHistory, Stamp};
use super::session::{KeySessions, GUARANTEES};
use crate::disk::{Disk, SimEngine};
use crate::faults::Faults;
use crate::ground::{FamilyWorld, Ground};
use crate::history::ClientId;
use crate::host::{Clock, Pending};
use crate::net::Packet;
use crate::run::{Judgement, Verdict};
use crate::session::Guarantee;
use bytes::Bytes;
use rand::Rng;
use replikv_core::causality::{Dot, Siblings, VersionVector};
use replikv_core::kv::Request;
use replikv_core::leaderless::{Canary, Conflicts, Counters, Leaderless, Message, ReadRepair, Settings};
use replikv_core::node::{Input, Outbox, Output, PeerMessage, Replica, RequestId};
use replikv_core::quorum::Nwr;
use replikv_core::version::NodeId;
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

/// Virtual milliseconds between a node's ticks.
pub const TICK_MS: u64 = 10;

/// Milliseconds a coordinator waits for `w` (or `r`) replicas: less than a client waits, so
/// that a write that cannot reach `w` replicas is answered `NOQUORUM` before its client gives
/// up.
pub const REQUEST_TIMEOUT_MS: u64 = 1_000;

const _: () = assert!(REQUEST_TIMEOUT_MS < super::clients::CLIENT_TIMEOUT_MS);

/// Virtual milliseconds between checks that the quiet phase has settled.
const SETTLE_CHECK_MS: u64 = 10;

/// Whether nodes fsync their writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fsync {
    /// Every batch that stored states is fsynced before its outputs leave.
    #[default]
    Always,
    /// Never: a node's acknowledgements come without durability (the lecture's "failing
    /// node" comes back with older values after a crash).
    Never,
}

impl Fsync {
    /// The setting's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::Never => "never",
        }
    }
}

/// How a leaderless run is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// The seed every choice derives from.
    pub seed: u64,
    /// Replicas per key (the cluster's nodes), and the write and read quorums.
    pub nwr: Nwr,
    /// What a read of concurrent values returns: the clients GET under `lww` and list
    /// siblings under `siblings`.
    pub conflicts: Conflicts,
    /// Whether a read waits for its repairs.
    pub read_repair: ReadRepair,
    /// Whether nodes fsync.
    pub fsync: Fsync,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys the clients share (few, so that they collide).
    pub keys: usize,
    /// Virtual milliseconds of the safety phase.
    pub safety_ms: u64,
    /// Virtual milliseconds the quiet phase may take at most.
    pub quiet_ms: u64,
    /// The faults.
    pub faults: Faults,
    /// A bug planted in the replicas, to test the checkers.
    pub canary: Canary,
    /// Virtual milliseconds between the anti-entropy rounds each node starts; 0: none, and
    /// the quiet phase converges the replicas by reading every key (read repair). Otherwise
    /// the quiet phase reads nothing: anti-entropy alone must converge them.
    pub anti_entropy_ms: u64,
    /// Virtual milliseconds a tombstone is kept, at least, once every replica holds it.
    pub tombstone_grace_ms: u64,
    /// Every client runs in a session ([`super::session`]), its guarantee drawn from the seed
    /// by an RNG of its own.
    pub sessions: bool,
}

/// What a restart lost: a node came back with an older state of a key than it had when it
/// crashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollback {
    /// The node (by index).
    pub node: usize,
    /// The key.
    pub key: String,
    /// When it restarted.
    pub at_ms: u64,
    /// The key's context before the crash.
    pub before: VersionVector,
    /// And after the restart.
    pub after: VersionVector,
}

impl Rollback {
    /// True when the node had seen the write of `dot` before the crash and has not after.
    /// (Dots are sparse, drawn from each coordinator's clock, so a context is compared, not
    /// listed.)
    pub fn lost(&self, dot: Dot) -> bool {
        self.before.contains(dot) && !self.after.contains(dot)
    }
}

/// One simulated node.
pub(super) struct Node {
    /// How its replica is built.
    settings: Settings,
    /// Its replica; `None` while down.
    replica: Option<Replica<SimEngine>>,
    /// Its disk, shared with the replica's engine.
    disk: Rc<RefCell<Disk>>,
    /// Inputs delivered, for its next batch.
    inbox: VecDeque<Input>,
    /// Batches waiting for their fsync.
    fsyncs: VecDeque<Pending>,
    /// The newest stored state known durable, not yet told to the replica.
    durable_notice: Option<u64>,
    /// The newest stored state the replica was told is durable (`fsync = never`).
    told_durable: u64,
    /// Its clock's skew and drift.
    clock: Clock,
    /// When it ticks next.
    next_tick_at: u64,
    /// Its states when it crashed, to tell what its restart lost.
    before_crash: BTreeMap<String, Siblings>,
}

/// The world of one leaderless run.
pub struct World {
    /// The setup.
    pub config: Config,
    /// The RNG, virtual time, network, nodes' health, trace and counts.
    pub(super) ground: Ground,
    /// The nodes.
    pub(super) nodes: Vec<Node>,
    /// Each node's id, by index.
    ids: Vec<NodeId>,
    /// The clients.
    pub(super) clients: Vec<super::clients::Client>,
    /// The guarantee of each client's session (`sessions`; empty without).
    pub sessions: BTreeMap<ClientId, Guarantee>,
    /// Request id -> the client that sent it, until it is answered or given up.
    pub(super) requests: BTreeMap<RequestId, usize>,
    /// Request id -> the write (number, key) it carries, for good: a request still on its way
    /// when its client gave up may yet be stepped (and stamped).
    pub(super) writes_sent: BTreeMap<RequestId, (u64, String)>,
    /// The last request id handed out.
    pub(super) next_request: RequestId,
    /// The last write number handed out.
    pub(super) next_write: u64,
    /// Keys the quiet phase still reads.
    pub(super) sweep: VecDeque<String>,
    /// What the clients did and saw.
    pub history: LeaderlessHistory,
    /// What each write was stamped with, by its number.
    pub stamps: BTreeMap<u64, Stamp>,
    /// The write each (key, dot) was last handed to.
    dots: BTreeMap<(String, Dot), u64>,
    /// Writes a message carried away from their coordinator, by (dot, version).
    escaped: BTreeMap<(Dot, replikv_core::version::Version), bool>,
    /// Writes stamped and lost with their coordinator's crash before any message carried
    /// them: their dot went to a later write, harmlessly.
    pub withdrawn: u64,
    /// What restarts lost.
    pub rollbacks: Vec<Rollback>,
    /// The counters of the replicas that crashed, added up.
    retired: Counters,
    /// (node, key) of every tombstone purge seen, with the purged state.
    purged: BTreeMap<(usize, String), Siblings>,
    /// Purges made while another replica lacked the tombstone (anti-entropy on).
    pub purge_violations: Vec<String>,
}

impl World {
    /// A world for `config`, every node fresh.
    pub fn new(config: Config) -> World {
        let n = config.nwr.n;
        let mut ground = Ground::new(config.seed, config.faults.clone(), n);
        let ids: Vec<NodeId> = (1..=n).map(|i| NodeId::from_name(&format!("n{i}"))).collect();
        let mut nodes = Vec::new();
        for &id in &ids {
            let mut settings = Settings::new(id, config.nwr);
            settings.common.peers = ids.iter().copied().filter(|&other| other != id).collect();
            settings.common.seed = ground.rng.gen();
            settings.conflicts = config.conflicts;
            settings.read_repair = config.read_repair;
            settings.request_timeout_ms = REQUEST_TIMEOUT_MS;
            settings.canary = config.canary;
            settings.anti_entropy_interval_ms = config.anti_entropy_ms;
            settings.tombstone_grace_ms = config.tombstone_grace_ms;
            let clock = Clock::draw(&mut ground.rng, &config.faults);
            let disk = Rc::new(RefCell::new(Disk::default()));
            let replica = open(&disk, &settings, clock.at(0)).expect("a fresh replica opens");
            nodes.push(Node {
                settings,
                replica: Some(replica),
                disk,
                inbox: VecDeque::new(),
                fsyncs: VecDeque::new(),
                durable_notice: None,
                told_durable: 0,
                clock,
                next_tick_at: 0,
                before_crash: BTreeMap::new(),
            });
        }
        let sessions = draw_sessions(&config);
        let forgets_reads = config.canary == Canary::TokenForgetsRead;
        let clients = (0..config.clients)
            .map(|c| {
                let session = sessions.get(&(c as ClientId)).map(|&g| KeySessions::new(g, forgets_reads));
                super::clients::Client::new(c, session)
            })
            .collect();
        World {
            config,
            ground,
            nodes,
            ids,
            clients,
            sessions,
            requests: BTreeMap::new(),
            writes_sent: BTreeMap::new(),
            next_request: 0,
            next_write: 0,
            sweep: VecDeque::new(),
            history: LeaderlessHistory::default(),
            stamps: BTreeMap::new(),
            dots: BTreeMap::new(),
            escaped: BTreeMap::new(),
            withdrawn: 0,
            rollbacks: Vec::new(),
            retired: Counters::default(),
            purged: BTreeMap::new(),
            purge_violations: Vec::new(),
        }
    }

    /// The keys the clients use.
    pub fn keys(&self) -> Vec<String> {
        (0..self.config.keys).map(|k| format!("k{k}")).collect()
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

    /// Runs the safety phase, then the quiet phase: faults heal, everything settles, the
    /// clients read every key once, and everything settles again. `Err` says why the quiet
    /// phase did not finish in `quiet_ms`; convergence is judged after ([`World::converged`]).
    pub fn run(&mut self) -> Result<(), String> {
        while self.ground.now < self.config.safety_ms && self.ground.broken.is_none() {
            self.step();
        }
        self.ground.heal_all();
        self.ground.stop_drops();
        let deadline = self.ground.now + self.config.quiet_ms;
        if !self.run_until(deadline, World::settled) {
            return Err(format!("the cluster did not settle within {} ms of the faults healing", self.config.quiet_ms));
        }
        if self.config.anti_entropy_ms > 0 {
            self.trace("quiet: no reads; anti-entropy alone must converge the replicas".to_string());
            let converged = |w: &World| w.settled() && w.states_agree();
            let quiet_ms = self.config.quiet_ms;
            let failed =
                || format!("the replicas did not converge by anti-entropy within {quiet_ms} ms of the faults healing");
            if !self.run_until(deadline, converged) {
                return Err(failed());
            }
            // On through a grace period and two rounds, so that tombstones are purged (and
            // judged), then converged again: a purge must not leave a replica behind.
            let purge_by = self.ground.now + self.config.tombstone_grace_ms + 2 * self.config.anti_entropy_ms;
            if purge_by < deadline {
                self.run_until(purge_by, |_| false);
                if !self.run_until(deadline, converged) {
                    return Err(failed());
                }
            }
            return Ok(());
        }
        self.sweep = self.keys().into();
        self.trace(format!("quiet: the clients read each of the {} keys once", self.config.keys));
        if !self.run_until(deadline, |w| w.sweep.is_empty() && w.settled()) {
            return Err(format!("the quiet phase's reads did not finish within {} ms", self.config.quiet_ms));
        }
        Ok(())
    }

    /// Steps until `done` (checked every [`SETTLE_CHECK_MS`]) or `deadline`; true if done.
    fn run_until(&mut self, deadline: u64, done: impl Fn(&World) -> bool) -> bool {
        while self.ground.now < deadline && self.ground.broken.is_none() {
            self.step();
            if self.ground.now.is_multiple_of(SETTLE_CHECK_MS) && done(self) {
                return true;
            }
        }
        false
    }

    /// True when nothing is left to happen: every node runs with nothing queued, pending or
    /// in flight, every client is idle, and no packet is on its way.
    fn settled(&self) -> bool {
        let nodes_idle = self.nodes.iter().enumerate().all(|(i, n)| {
            self.ground.health[i].is_running()
                && n.inbox.is_empty()
                && n.fsyncs.is_empty()
                && n.durable_notice.is_none()
                && n.replica.as_ref().is_some_and(|r| r.status(0).leaderless.is_some_and(|s| s.in_flight == 0))
        });
        nodes_idle && self.ground.network.is_empty() && self.clients.iter().all(|c| c.is_idle())
    }

    /// Node `i`'s id.
    pub fn id(&self, i: usize) -> NodeId {
        self.ids[i]
    }

    /// Compares restarted node `i`'s states with those it had when it crashed; records and
    /// returns how many keys lost writes.
    fn note_rollbacks(&mut self, i: usize) -> usize {
        let before = std::mem::take(&mut self.nodes[i].before_crash);
        let mut keys = 0;
        for (key, was) in before {
            let now = self.state_of(i, &key).unwrap_or_default();
            let (before, after) = (was.context(), now.context());
            if before.entries().any(|(node, counter)| after.get(node) < counter) {
                keys += 1;
                let (before, after) = (before.clone(), after.clone());
                self.rollbacks.push(Rollback { node: i, key, at_ms: self.ground.now, before, after });
            }
        }
        keys
    }

    /// Node `i`'s state of `key`, or when it holds none, the tombstone it purged of it and
    /// still remembers.
    pub(super) fn state_or_purged(&mut self, i: usize, key: &str) -> Option<Siblings> {
        self.state_of(i, key).or_else(|| {
            let replica = self.nodes[i].replica.as_ref().and_then(|r| r.leaderless());
            replica.and_then(|l| l.purged_state(key.as_bytes()).cloned())
        })
    }

    /// Node `i`'s state of `key` (`None`: none, or the node is down; a read error breaks the
    /// run).
    pub(super) fn state_of(&mut self, i: usize, key: &str) -> Option<Siblings> {
        let replica = self.nodes[i].replica.as_ref()?.leaderless().expect("a leaderless world runs leaderless nodes");
        match replica.state_of(key.as_bytes()) {
            Ok(state) => state,
            Err(e) => {
                self.ground.broken.get_or_insert(format!("n{}'s state of {key} cannot be read: {e}", i + 1));
                None
            }
        }
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
        let mut inputs: Vec<Input> = notice.map(|lsn| Input::Durable { lsn, resets: 0 }).into_iter().collect();
        if tick {
            node.next_tick_at = self.ground.now + TICK_MS;
            inputs.push(Input::Tick);
        }
        inputs.extend(node.inbox.drain(..));
        let clock = node.clock.at(self.ground.now);
        let before = node.disk.borrow().mark();
        let mut outbox = Outbox::default();
        let mut now_outputs = Vec::new();
        for input in inputs {
            if let Err(e) = self.step_node(i, clock, input, &mut outbox) {
                self.ground.broken.get_or_insert(format!("n{} failed a step: {e}", i + 1));
                return;
            }
            now_outputs.append(&mut outbox.now);
        }
        let replica = self.nodes[i].replica.as_mut().expect("checked above");
        if let Err(e) = replica.write_out(clock, &mut outbox) {
            self.ground.broken.get_or_insert(format!("n{} failed to write out: {e}", i + 1));
            return;
        }
        self.dispatch(i, now_outputs);
        self.hold_for_fsync(i, before, std::mem::take(&mut outbox.after_flush));
    }

    /// Node `i`'s fsyncs due now complete: their held outputs leave, in order, and the node
    /// will be told what is durable.
    fn complete_fsyncs(&mut self, i: usize) {
        while self.nodes[i].fsyncs.front().is_some_and(|p| p.done_at <= self.ground.now) {
            let done = self.nodes[i].fsyncs.pop_front().expect("front exists");
            self.nodes[i].disk.borrow_mut().sync_to(done.disk_mark);
            self.nodes[i].durable_notice = Some(done.lsn);
            self.dispatch(i, done.outputs);
        }
    }

    /// The outputs of node `i`'s batch that wait for its fsync (`before`: the disk's mark
    /// before the batch): queued behind an fsync, or released at once when the batch wrote
    /// nothing and nothing is queued, or when the node never fsyncs (and is then told its
    /// saves are durable).
    fn hold_for_fsync(&mut self, i: usize, before: u64, held: Vec<Output>) {
        let mark = self.nodes[i].disk.borrow().mark();
        let lsn = self.nodes[i].replica.as_ref().expect("running").last_lsn();
        let queued = !self.nodes[i].fsyncs.is_empty();
        match self.config.fsync {
            Fsync::Always if mark != before || queued => {
                let done_at = crate::host::fsync_done_at(&mut self.ground.rng, &self.nodes[i].fsyncs, self.ground.now);
                self.nodes[i].fsyncs.push_back(Pending { done_at, disk_mark: mark, lsn, resets: 0, outputs: held });
            }
            Fsync::Always => self.dispatch(i, held),
            Fsync::Never => {
                self.dispatch(i, held);
                self.tell_durable(i, lsn);
            }
        }
    }

    /// Tells node `i`, which never fsyncs, that its saves through `lsn` are as durable as they
    /// get, and sends what that releases.
    fn tell_durable(&mut self, i: usize, lsn: u64) {
        if lsn <= self.nodes[i].told_durable {
            return;
        }
        self.nodes[i].told_durable = lsn;
        let clock = self.nodes[i].clock.at(self.ground.now);
        let mut outbox = Outbox::default();
        if let Err(e) = self.step_node(i, clock, Input::Durable { lsn, resets: 0 }, &mut outbox) {
            self.ground.broken.get_or_insert(format!("n{} failed a step: {e}", i + 1));
            return;
        }
        self.dispatch(i, outbox.drain_all());
    }

    /// Steps node `i` with one input, and stamps the client's write it carries (the oracle).
    fn step_node(&mut self, i: usize, clock: u64, input: Input, outbox: &mut Outbox) -> replikv_core::Result<()> {
        let watched = self.watched_write(&input);
        // What the coordinator writes over: its stored state, or the tombstone it purged
        // and still remembers.
        let before = watched.as_ref().map(|(_, key, _)| self.state_or_purged(i, key).unwrap_or_default());
        self.nodes[i].replica.as_mut().expect("running").step(clock, input, outbox)?;
        if let (Some((write, key, token)), Some(before)) = (watched, before) {
            self.stamp(i, write, key, before, token);
        }
        Ok(())
    }

    /// The client's write `input` carries, if any: its number, key and the context it
    /// replaces besides the coordinator's (`SET ... CONTEXT`: the context its token names,
    /// instead; in a session: the session's floor, too).
    fn watched_write(&self, input: &Input) -> Option<(u64, String, Option<Replaces>)> {
        let Input::Request { id, request } = input else { return None };
        let (floor, request) = match request {
            Request::KeySession { request, seen, .. } => (Some(seen), request.as_ref()),
            request => (None, request),
        };
        let token = match request {
            Request::Set { .. } | Request::Del { .. } => floor.cloned().map(Replaces::AlsoFloor),
            Request::SetContext { key, context, .. } => {
                replikv_core::causality::decode_context(key, context).ok().map(Replaces::Token)
            }
            _ => return None,
        };
        let (write, key) = self.writes_sent.get(id)?;
        Some((*write, key.clone(), token))
    }

    /// Records what node `i` stamped write `write` of `key` with, from its state `before` the
    /// write and after; `token` is what it replaces besides (or instead of) `before`.
    fn stamp(&mut self, i: usize, write: u64, key: String, before: Siblings, token: Option<Replaces>) {
        let me = self.ids[i];
        let after = self.state_of(i, &key).unwrap_or_default();
        let counter = after.context().get(me);
        if counter <= before.context().get(me) {
            return; // refused, or stored nowhere
        }
        let dot = Dot { node: me, counter };
        let Some(sibling) = after.values().iter().find(|s| s.dot == dot) else {
            return; // merged away by the sibling bound at once
        };
        let stamp = Stamp {
            key,
            dot,
            version: sibling.version,
            replaced: match token {
                None => before.context().clone(),
                Some(Replaces::Token(context)) => context,
                Some(Replaces::AlsoFloor(floor)) => {
                    before.context().join(&floor).unwrap_or_else(|_| before.context().clone())
                }
            },
            delete: sibling.is_tombstone(),
        };
        self.trace(format!(
            "n{} stamps write #{write} of {} with dot {} version {}",
            i + 1,
            stamp.key,
            dot.counter,
            stamp.version
        ));
        if let Some(earlier) = self.dots.insert((stamp.key.clone(), dot), write) {
            let carried = self.stamps.get(&earlier).is_some_and(|e| self.escaped.get(&(dot, e.version)) == Some(&true));
            if !carried {
                // Lost with its coordinator before any message carried it: nobody can hold it.
                self.stamps.remove(&earlier);
                self.withdrawn += 1;
                self.trace(format!(
                    "write #{earlier} was lost with n{} before it left; its dot goes to #{write}",
                    i + 1
                ));
            }
        }
        self.escaped.insert((dot, stamp.version), false);
        self.stamps.insert(write, stamp);
    }

    /// Sends node `i`'s outputs: messages to peers, replies to clients.
    fn dispatch(&mut self, i: usize, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Send { to, message } => {
                    let Some(to) = self.ids.iter().position(|&id| id == to) else { continue };
                    self.note_escapes(i, &message);
                    if !self.ground.network.is_blocked(i, to) {
                        self.ground.send(Some(i), to, Packet::Peer { from: i, message });
                    }
                }
                Output::Reply { id, reply } => self.reply(id, reply),
            }
        }
    }

    /// Marks the writes node `i` stamped that `message` carries away as escaped: from now on
    /// another node may hold them.
    fn note_escapes(&mut self, i: usize, message: &PeerMessage) {
        let state = match message {
            PeerMessage::Leaderless(Message::Write { state, .. }) => state,
            PeerMessage::Leaderless(Message::ReadReply { state: Some(state), .. }) => state,
            _ => return,
        };
        for sibling in state.values().iter().filter(|s| s.dot.node == self.ids[i]) {
            if let Some(carried) = self.escaped.get_mut(&(sibling.dot, sibling.version)) {
                *carried = true;
            }
        }
    }

    /// What failed (a step, a write-out, a restart, a reply no client can make sense of), if
    /// anything did: the run's first failure.
    pub fn broken(&self) -> Option<&String> {
        self.ground.broken.as_ref()
    }

    /// Every node's Merkle root is the same: `Err` names the keys whose states differ.
    pub fn converged(&mut self) -> Result<(), String> {
        let mut roots = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let replica = node.replica.as_ref().ok_or_else(|| format!("n{} is down", i + 1))?;
            let digest = replikv_core::digest::digest(replica.store().engine()).map_err(|e| e.to_string())?;
            roots.push(digest.root);
        }
        if roots.windows(2).all(|w| w[0] == w[1]) {
            return Ok(());
        }
        let mut differ = Vec::new();
        for key in self.keys() {
            let states: Vec<Option<Siblings>> = (0..self.nodes.len()).map(|i| self.state_of(i, &key)).collect();
            if states.windows(2).any(|w| w[0] != w[1]) {
                let shown: Vec<String> =
                    states.iter().enumerate().map(|(i, s)| format!("n{}: {}", i + 1, describe(s.as_ref()))).collect();
                differ.push(format!("{key} ({})", shown.join("; ")));
            }
        }
        Err(format!("Merkle roots differ after the quiet phase's reads: {}", differ.join(", ")))
    }

    /// Each node's final states, by key (a down node has none).
    /// A node's tombstones it purged count as held: the writes a purged delete replaced are
    /// accounted for by it (checker (d)), not lost.
    pub fn final_states(&mut self) -> Vec<super::checks::States> {
        let keys = self.keys();
        (0..self.nodes.len())
            .map(|i| {
                keys.iter()
                    .filter_map(|k| {
                        let state = self.state_of(i, k);
                        self.with_purged(i, k, state).map(|s| (k.clone(), s))
                    })
                    .collect()
            })
            .collect()
    }

    /// The nodes' counters, those of crashed replicas included.
    pub fn counters(&self) -> Counters {
        let mut sum = self.retired.clone();
        for node in &self.nodes {
            if let Some(replica) = &node.replica {
                add_counters(&mut sum, replica.leaderless().expect("leaderless").counters());
            }
        }
        sum
    }
}

impl FamilyWorld for World {
    fn ground(&mut self) -> &mut Ground {
        &mut self.ground
    }

    fn node_ids(&self) -> Vec<NodeId> {
        self.ids.clone()
    }

    /// Its states and counters are kept aside first, to tell what it lost.
    fn crash(&mut self, i: usize) {
        let (ground, node) = (&mut self.ground, &mut self.nodes[i]);
        let Some(replica) = node.replica.take() else { return };
        let leaderless = replica.leaderless().expect("a leaderless world runs leaderless nodes");
        add_counters(&mut self.retired, leaderless.counters());
        node.before_crash = (0..self.config.keys)
            .filter_map(|k| {
                let key = format!("k{k}");
                leaderless.state_of(key.as_bytes()).ok().flatten().map(|s| (key, s))
            })
            .collect();
        let (kept, lost) = node.disk.borrow_mut().crash(&mut ground.rng);
        node.inbox.clear();
        node.fsyncs.clear();
        node.durable_notice = None;
        let until = crate::host::down_until(&mut ground.rng, ground.now);
        ground.health[i].down_until = Some(until);
        ground.trace(format!(
            "n{} crashed: its disk kept {kept} unsynced puts and lost {lost}; down until t={until}",
            i + 1
        ));
    }

    fn restart(&mut self, i: usize) -> replikv_core::Result<String> {
        let node = &mut self.nodes[i];
        node.replica = Some(open(&node.disk, &node.settings, node.clock.at(self.ground.now))?);
        (node.next_tick_at, node.told_durable) = (self.ground.now, 0);
        let lost = self.note_rollbacks(i);
        Ok(format!("n{} restarted; it lost writes of {lost} key(s) it had seen", i + 1))
    }

    fn run_clients(&mut self) {
        World::run_clients(self);
    }

    fn deliver(&mut self, to: usize, input: Input) {
        self.nodes[to].inbox.push_back(input);
    }

    /// With anti-entropy on, the tombstones it held before and after are compared: one gone
    /// was purged, and every other replica must have held it.
    fn run_node(&mut self, i: usize) {
        if self.config.anti_entropy_ms == 0 {
            return World::run_node(self, i);
        }
        let tombstones = self.tombstones_held(i);
        World::run_node(self, i);
        self.check_purges(i, tombstones);
    }
}

/// The guarantee of each client's session (`sessions`: every client), drawn from an RNG of
/// its own so that the world's stream of choices does not depend on it.
fn draw_sessions(config: &Config) -> BTreeMap<ClientId, Guarantee> {
    if !config.sessions {
        return BTreeMap::new();
    }
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(config.seed ^ 0x4c53_5345_5353_494f);
    (0..config.clients as ClientId).map(|id| (id, GUARANTEES[rng.gen_range(0..GUARANTEES.len())])).collect()
}

/// Opens a leaderless replica over `disk` with `settings`, at clock reading `clock_ms`.
fn open(disk: &Rc<RefCell<Disk>>, settings: &Settings, clock_ms: u64) -> replikv_core::Result<Replica<SimEngine>> {
    let engine = SimEngine::open(disk.clone())?;
    Leaderless::open(engine, settings.clone(), clock_ms).map(Replica::from)
}

/// A state, briefly: its values (write numbers, `-` for a tombstone) and its context's size.
fn describe(state: Option<&Siblings>) -> String {
    let Some(state) = state else { return "none".into() };
    let values: Vec<String> = state
        .values()
        .iter()
        .map(|s| s.value.as_ref().map_or("-".into(), |v| String::from_utf8_lossy(v).into_owned()))
        .collect();
    let seen: u64 = state.context().entries().map(|(_, c)| c).sum();
    format!("[{}] after {seen} writes", values.join(" "))
}

/// Adds `more` to `sum`, counter by counter.
fn add_counters(sum: &mut Counters, more: &Counters) {
    crate::add_fields!(
        sum, more;
        writes_coordinated, reads_coordinated, partial_writes, failed_reads, read_repairs_sent,
        read_repairs_received, sibling_reads, siblings_dropped, forwarded, tombstones_purged
    );
}

/// Bytes of a client's value: its write number in decimal.
pub(super) fn value_bytes(write: u64) -> Bytes {
    Bytes::from(write.to_string())
}

mod anti_entropy;

/// What a client's write replaces besides the coordinator's state of the key.
#[derive(Clone, Debug)]
enum Replaces {
    /// `SET ... CONTEXT`: the token's context, instead of the coordinator's.
    Token(VersionVector),
    /// A write in session: the session's floor, as well as the coordinator's.
    AlsoFloor(VersionVector),
}
