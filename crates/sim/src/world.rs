//! The simulated world: nodes running the real core replicas, a network, clients, a virtual
//! clock, and one seeded RNG from which every choice is drawn.
//!
//! # A run
//!
//! Virtual time advances one millisecond at a time. Each millisecond, in this order:
//!
//! 1. Faults may start or end (partitions, crashes, pauses), drawn from the RNG at the run's
//!    rates.
//! 2. Messages due are delivered into their node's inbox (dropped if the node is down, held
//!    while it is paused).
//! 3. Each running node completes the fsyncs that are due, releasing their batches' held
//!    outputs, then steps one batch: the durable notice, a tick if one is due, and every input
//!    in its inbox. It writes the batch out and schedules its fsync 1-4 ms later, as the
//!    server's pipelined group commit does; a batch that owes nothing with nothing held is
//!    released at once. Outputs marked `now` leave at once.
//! 4. Clients time out, and idle ones issue their next operation to the node they believe
//!    leads (until the run has issued [`OPS_PER_KEY_MAX`] per key). A client follows the
//!    leader as a real one does: a `-READONLY` naming the leader sends it there, a refusal
//!    without a leader or a timeout sends it to another node. A plain client only reads from
//!    a leader: a GET that reaches a follower is answered with a redirect, never stepped, so
//!    every plain read in the history is a leader's (followers' reads are stale by design).
//!    With `follower_reads`, every client but the first is a session client
//!    ([`crate::session`], its guarantee drawn from the seed by an RNG of its own): it sends
//!    each read to a node drawn at random, followers included, and every request as a
//!    `Request::Session` with the floor its guarantee needs; its positions move only with
//!    replies that are not errors, and a `-TRYAGAIN` sends it to try again shortly. The
//!    history records each operation's node.
//!
//! With `failover` on (the default), node 0 leads a fresh cluster and elections decide after
//! that; the world records which node led each epoch, and a second leader in one epoch fails
//! the run.
//!
//! A run has two phases: a **safety** phase of `safety_ms` with faults and clients, then a
//! **quiet** phase in which faults heal (partitions close, crashed nodes restart, paused ones
//! resume), clients stop issuing, and the cluster must converge within `quiet_ms`.
//!
//! # Determinism
//!
//! Nothing here reads a clock, spawns a thread or iterates a hash map; every choice comes from
//! one ChaCha8 RNG seeded with the run's seed. Each node's clock is the virtual clock plus its
//! skew and drift. The trace (every delivery, crash, restart, partition and reply) is hashed as
//! it is written, so two runs of one seed can be compared by their hashes, and its last lines
//! are kept to print when a check fails.

use crate::disk::{Disk, SimEngine};
use crate::faults::Faults;
use crate::ground::{FamilyWorld, Ground};
use crate::history::{ClientId, Event, History, Op, Outcome};
use crate::host::{Clock, Pending};
use crate::net::Packet;
use crate::run::{Judgement, Verdict};
use crate::session::{Guarantee, Session};
use bytes::Bytes;
use rand::Rng;
use replikv_core::kv::{Reply, Request};
use replikv_core::node::{Input, Outbox, Output, Replica, RequestId};
use replikv_core::replication::{Epoch, Lsn, ReplicationLog, ReplogOptions};
use replikv_core::single_leader::{Canary, ReplicaFiles, Role, RollbackEntry, Settings, SingleLeader};
use replikv_core::version::NodeId;
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

pub use crate::trace::TRACE_TAIL_LINES;

/// Virtual milliseconds between a node's ticks.
const TICK_MS: u64 = 10;

/// Operations a run issues per key at most, so that the linearizability check (capped at
/// 1,000 operations per key) decides every key.
pub const OPS_PER_KEY_MAX: u64 = 900;

/// The replicas' election timeout (each wait drawn from this to twice this): seven of the
/// simulated heartbeats.
pub const ELECTION_TIMEOUT_MS: u64 = 150;

/// Virtual milliseconds a client waits for a reply before the operation is indeterminate.
const CLIENT_TIMEOUT_MS: u64 = 2_000;

/// How a run is set up.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed every choice derives from.
    pub seed: u64,
    /// Nodes; node 0 leads first.
    pub nodes: usize,
    /// Automatic failover (elections, step-down); off, node 0 leads for good.
    pub failover: bool,
    /// Followers that must have a write before its reply (0: async).
    pub acks_needed: usize,
    /// The mode's name (`sync`, `semi-sync:1`, `async`).
    pub acks_label: String,
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
    /// Bytes of replication log each node keeps (small, so that snapshots happen).
    pub log_retain_bytes: u64,
    /// Leader reads under a lease (`read_lease`), with the default drift allowance, which
    /// the simulator's clock drift stays within.
    pub read_lease: bool,
    /// A bug planted in the replicas, to test the checkers.
    pub canary: Canary,
    /// Clients after the first read from any node in sessions, each with a guarantee drawn
    /// from the seed ([`crate::session`]); off, every client reads from the leader only.
    pub follower_reads: bool,
    /// Transactions: every few virtual milliseconds an MSET of [`TRANSACTION_KEYS`] keys, all
    /// to one new value, goes to the leader, and each record holds 2 changes at most, so that
    /// every such request spans several records; after every step no running replica may
    /// hold some of its keys and not the others (atomicity on every replica).
    pub transactions: bool,
    /// What the leaders log of a client's write (statement and mixed: see
    /// `replikv_core::single_leader::statement`).
    pub log_format: replikv_core::replication::LogFormat,
    /// Every client write sets a relative TTL of [`RELATIVE_TTL_MS`] (`SET k v PX ...`): a
    /// nondeterministic request, which a statement log leaves different on every replica.
    pub relative_ttls: bool,
}

/// The relative TTL of every client write with `relative_ttls`: longer than any run, so that
/// no key expires, yet each replica executing the write again sets its own deadline.
pub const RELATIVE_TTL_MS: i64 = 3_600_000;

/// Keys each simulated transaction writes: `t0`, `t1`, ... (apart from the clients' keys).
pub const TRANSACTION_KEYS: usize = 5;

/// Counters of what a single-leader run did, beside its operations and faults
/// ([`RunCounts`](crate::run::RunCounts)).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Counts {
    /// Epochs that had a leader (the first included).
    pub leaderships: u64,
    /// Changes the nodes cut from their logs and saved to their rollback logs.
    pub rolled_back: u64,
    /// Acknowledged writes lost at failover and found in a rollback log (modes that do not
    /// promise survival).
    pub acknowledged_rolled_back: u64,
    /// Virtual milliseconds from each leader's crash to the next acknowledged write on a new
    /// leader.
    pub failover_ms: Vec<u64>,
}

/// One simulated node.
struct Node {
    id: NodeId,
    settings: Settings,
    replica: Option<Replica<SimEngine>>,
    disk: Rc<RefCell<Disk>>,
    /// The log is durable through here.
    log_synced: Lsn,
    inbox: VecDeque<Input>,
    fsyncs: VecDeque<Pending>,
    /// The newest durable log position not yet told to the replica, with the log's reset
    /// count when it was written out.
    durable_notice: Option<(Lsn, u64)>,
    /// Its clock's skew and drift.
    clock: Clock,
    next_tick_at: u64,
    /// The log, vote and rollback log as the disk holds them while the node is down.
    stored_files: Option<ReplicaFiles>,
    /// The log's reset count when last looked at: a reset makes the log durable at its base.
    log_resets: u64,
}

impl Node {
    /// This node's clock at virtual time `t`.
    fn clock(&self, t: u64) -> u64 {
        self.clock.at_from(crate::host::CLOCK_BASE_MS, t)
    }
}

/// A client's operation in flight.
#[derive(Debug)]
struct Outstanding {
    id: RequestId,
    op: Op,
    invoke_ms: u64,
    /// The node it went to.
    node: usize,
}

/// One simulated client.
#[derive(Debug)]
struct Client {
    id: ClientId,
    outstanding: Option<Outstanding>,
    next_at: u64,
    /// The node it believes leads.
    target: usize,
    /// Its session, when it reads from followers (`follower_reads`).
    session: Option<Session>,
}

/// The world of one run.
pub struct World {
    /// The setup.
    pub config: SimConfig,
    /// The RNG, virtual time, network, nodes' health, trace and counts.
    ground: Ground,
    nodes: Vec<Node>,
    clients: Vec<Client>,
    /// Request id -> client.
    requests: BTreeMap<RequestId, ClientId>,
    next_request: RequestId,
    next_value: u64,
    /// What the clients did and saw.
    pub history: History,
    /// The guarantee of each client that reads in a session (`follower_reads`).
    pub sessions: BTreeMap<ClientId, Guarantee>,
    /// Counters.
    pub counts: Counts,
    /// Each write request a leader logged, until its reply: (node, log position, epoch).
    write_lsns: BTreeMap<RequestId, (usize, Lsn, Epoch)>,
    /// Which node led each epoch.
    leaders: BTreeMap<Epoch, usize>,
    /// The first epoch with two leaders.
    pub split_brain: Option<String>,
    /// When the last leader crashed, until a write is acknowledged again.
    leader_crashed_at: Option<u64>,
    /// The first write acknowledged on fewer durable copies than its mode promises.
    pub under_replicated: Option<String>,
    /// Ghost state: for each epoch, the newest of its records that some leader held durably
    /// (by log matching, every record before it in that leader's log was durable there too).
    led_durable: BTreeMap<Epoch, Lsn>,
    /// The first follower found serving a record no leader held durably.
    pub served_undurable: Option<String>,
    /// With `transactions`: the last value written, and when the next is due.
    transactions: (u64, u64),
    /// The first replica found holding some keys of a transaction and not the others.
    pub torn: Option<String>,
}

impl World {
    /// A world for `config`, every node fresh.
    pub fn new(config: SimConfig) -> World {
        let mut ground = Ground::new(config.seed, config.faults.clone(), config.nodes);
        let rng = &mut ground.rng;
        let ids: Vec<NodeId> = (1..=config.nodes).map(|i| NodeId::from_name(&format!("n{i}"))).collect();
        let mut nodes = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let role = match i {
                0 => Role::Leader { followers: ids[1..].to_vec() },
                _ => Role::Follower { leader: Some(ids[0]), leader_hint: "n1".into() },
            };
            let mut settings = Settings::new(id, role);
            settings.common.peers = ids.iter().copied().filter(|&other| other != id).collect();
            settings.common.hints = ids.iter().enumerate().map(|(j, &other)| (other, format!("n{}", j + 1))).collect();
            settings.auto_failover = config.failover;
            settings.election_timeout_ms = ELECTION_TIMEOUT_MS;
            settings.common.seed = rng.gen();
            settings.acks_needed = config.acks_needed;
            if config.transactions {
                settings.record_changes_max = 2;
            }
            settings.acks_label = config.acks_label.clone();
            settings.ack_timeout_ms = 1_000;
            settings.heartbeat_ms = 20;
            settings.resend_ms = 200;
            settings.link_timeout_ms = 200;
            settings.ship_bytes_max = 4 * 1024;
            settings.window_bytes_max = 32 * 1024;
            settings.snapshot_chunk_bytes_max = 512;
            settings.read_lease = config.read_lease;
            settings.canary = config.canary;
            settings.log_format = config.log_format;
            let disk = Rc::new(RefCell::new(Disk::default()));
            let mut node = Node {
                id,
                settings,
                replica: None,
                disk,
                log_synced: 0,
                inbox: VecDeque::new(),
                fsyncs: VecDeque::new(),
                durable_notice: None,
                clock: Clock::draw(rng, &config.faults),
                next_tick_at: 0,
                stored_files: None,
                log_resets: 0,
            };
            let files = ReplicaFiles::in_memory(log_options(config.log_retain_bytes));
            node.replica = Some(open(&node, files, 0).expect("a fresh replica opens"));
            nodes.push(node);
        }
        let sessions = draw_sessions(&config);
        let clients = (0..config.clients as ClientId)
            .map(|id| {
                let session = sessions.get(&id).map(|&g| Session::new(g, config.canary == Canary::TokenForgetsRead));
                Client { id, outstanding: None, next_at: 0, target: 0, session }
            })
            .collect();
        World {
            config,
            ground,
            nodes,
            clients,
            requests: BTreeMap::new(),
            next_request: 0,
            next_value: 0,
            history: History::default(),
            sessions,
            counts: Counts::default(),
            write_lsns: BTreeMap::new(),
            leaders: BTreeMap::new(),
            split_brain: None,
            leader_crashed_at: None,
            under_replicated: None,
            led_durable: BTreeMap::new(),
            served_undurable: None,
            transactions: (0, 0),
            torn: None,
        }
    }

    /// Writes a trace line.
    fn trace(&mut self, line: String) {
        self.ground.trace(line);
    }

    /// The run's judgement: its operations, faults and trace so far, with the checkers'
    /// `verdicts`.
    pub fn judge(&self, verdicts: Vec<(String, Verdict)>) -> Judgement {
        self.ground.judge(verdicts)
    }

    /// Runs the safety phase, then the quiet phase until the cluster converges (or time runs
    /// out). Returns true if it converged.
    pub fn run(&mut self) -> bool {
        while self.ground.now < self.config.safety_ms && self.ground.broken.is_none() {
            self.step();
        }
        self.ground.heal_all();
        let deadline = self.ground.now + self.config.quiet_ms;
        while self.ground.now < deadline && self.ground.broken.is_none() {
            self.step();
            if self.ground.now.is_multiple_of(100)
                && self.clients.iter().all(|c| c.outstanding.is_none())
                && self.converged()
            {
                return true;
            }
        }
        false
    }

    /// Node `i`'s work this millisecond: completed fsyncs, then one batch.
    fn run_node(&mut self, i: usize) {
        if self.nodes[i].replica.is_none() || self.ground.health[i].paused_until.is_some() {
            return;
        }
        // Fsyncs due: their batches' held outputs leave, in order.
        while self.nodes[i].fsyncs.front().is_some_and(|p| p.done_at <= self.ground.now) {
            let done = self.nodes[i].fsyncs.pop_front().expect("front exists");
            // The batch's fsync is the log's alone: the replication log is the write-ahead
            // log, and the engine's writes become durable only when the replica syncs them
            // (`Engine::sync_written`, before the log drops records) or a crash keeps them.
            // A batch written out before a reset names records the reset discarded.
            if done.resets == self.nodes[i].log_resets {
                self.nodes[i].log_synced = self.nodes[i].log_synced.max(done.lsn);
                self.nodes[i].durable_notice = Some((self.nodes[i].log_synced, done.resets));
                self.note_led_durable(i);
            }
            self.dispatch(i, done.outputs);
        }
        let tick = self.nodes[i].next_tick_at <= self.ground.now;
        let notice = self.nodes[i].durable_notice.take();
        if !tick && notice.is_none() && self.nodes[i].inbox.is_empty() {
            return;
        }
        let mut inputs: Vec<Input> = notice.map(|(lsn, resets)| Input::Durable { lsn, resets }).into_iter().collect();
        if tick {
            self.nodes[i].next_tick_at = self.ground.now + TICK_MS;
            inputs.push(Input::Tick);
        }
        inputs.extend(self.nodes[i].inbox.drain(..));
        let clock = self.nodes[i].clock(self.ground.now);
        let mut outbox = Outbox::default();
        let mut now_outputs = Vec::new();
        let disk = self.nodes[i].disk.clone();
        let before = disk.borrow().mark();
        let replica = self.nodes[i].replica.as_mut().expect("checked above");
        let lsn_before = replica.last_lsn();
        let mut led = None;
        for input in inputs {
            let (request, lsn_at) = match &input {
                Input::Request { id, .. } if replica.is_leader() => (Some(*id), replica.last_lsn()),
                Input::Request { id, request: Request::Get { .. } } => {
                    // A client reads only from a leader: a follower's answer is a redirect.
                    let reply = Reply::Error(match sl(replica).leader() {
                        Some(leader) => format!("READONLY reads go to the leader. The leader is {}.", leader.1),
                        None => "READONLY no leader is known right now".into(),
                    });
                    now_outputs.push(Output::Reply { id: *id, reply });
                    continue;
                }
                _ => (None, 0),
            };
            if let Err(e) = replica.step(clock, input, &mut outbox) {
                self.ground.broken = Some(format!("n{} failed a step: {e}", i + 1));
                return;
            }
            if let Some(id) = request.filter(|_| replica.last_lsn() > lsn_at) {
                self.write_lsns.insert(id, (i, replica.last_lsn(), sl(replica).settings().epoch));
            }
            now_outputs.append(&mut outbox.now);
            if replica.is_leader() {
                let epoch = sl(replica).settings().epoch;
                match self.leaders.get(&epoch) {
                    Some(&other) if other != i && self.split_brain.is_none() => {
                        let why = format!("two leaders in epoch {epoch}: n{} and n{}", other + 1, i + 1);
                        self.split_brain = Some(why);
                    }
                    Some(_) => {}
                    None => {
                        self.leaders.insert(epoch, i);
                        self.counts.leaderships += 1;
                        led = Some(epoch);
                    }
                }
            }
        }
        if let Some(epoch) = led {
            self.trace(format!("n{} leads epoch {epoch}", i + 1));
        }
        let node = &mut self.nodes[i];
        let replica = node.replica.as_mut().expect("checked above");
        if replica.log_resets() != node.log_resets {
            // A reset (or a cut of the log's tail) is durable when it returns: the log is
            // durable where it left it.
            node.log_resets = replica.log_resets();
            node.log_synced = sl(replica).log_reset_lsn();
        }
        let resets = match replica.write_out(clock, &mut outbox) {
            Ok(written) => written.resets,
            Err(e) => {
                self.ground.broken = Some(format!("n{} failed to write out: {e}", i + 1));
                return;
            }
        };
        let lsn = replica.last_lsn();
        let mark = disk.borrow().mark();
        // What a leader shipped as the batch was written out, before its fsync.
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

    /// Ghost: node `i`'s log is durable through its `log_synced`; if it leads, every record
    /// through there was durable on a leader.
    fn note_led_durable(&mut self, i: usize) {
        let node = &self.nodes[i];
        let Some(replica) = node.replica.as_ref().filter(|r| r.is_leader()) else { return };
        let synced = node.log_synced.min(replica.last_lsn());
        let runs = sl(replica).log_epoch_runs();
        for (k, &(start, epoch)) in runs.iter().enumerate() {
            if start > synced {
                break;
            }
            let end = runs.get(k + 1).map_or(synced, |&(next, _)| (next - 1).min(synced));
            let newest = self.led_durable.entry(epoch).or_insert(0);
            *newest = (*newest).max(end);
        }
    }

    /// Checks that follower `i` serves (applies to the store its readers see) only records
    /// some leader held durably: a record a leader lost in a crash may be cut from the
    /// history, and a reader must never have seen it (DESIGN §12).
    fn check_served(&mut self, i: usize) {
        if self.served_undurable.is_some() {
            return;
        }
        let Some(replica) = self.nodes[i].replica.as_ref() else { return };
        let Some(applied) = sl(replica).follower_serves_through() else { return };
        if applied == 0 || applied < sl(replica).first_lsn().saturating_sub(1) {
            return;
        }
        let Some(epoch) = sl(replica).log_epoch_at(applied) else { return };
        let held = self.led_durable.get(&epoch).copied().unwrap_or(0);
        if held < applied {
            self.served_undurable = Some(format!(
                "n{} serves its log through record {applied} (epoch {epoch}), but leaders held records of epoch \
                 {epoch} durably only through {held}",
                i + 1
            ));
        }
    }

    /// Sends node `i`'s outputs: messages to peers, replies to clients.
    fn dispatch(&mut self, i: usize, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Send { to, message } => {
                    let Some(to) = self.nodes.iter().position(|n| n.id == to) else { continue };
                    if self.ground.network.is_blocked(i, to) {
                        continue;
                    }
                    self.ground.send(Some(i), to, Packet::Peer { from: i, message });
                }
                Output::Reply { id, reply } => self.reply(id, reply),
            }
        }
    }

    /// A reply reaches its client (1 ms later, which the client does not notice).
    fn reply(&mut self, id: RequestId, reply: Reply) {
        // A session's reply moves its positions and is then what the client sees.
        let reply = match (reply, self.requests.get(&id)) {
            (answer @ Reply::InSession { .. }, Some(&client)) => {
                let c = &mut self.clients[client as usize];
                let write = c.outstanding.as_ref().is_some_and(|o| o.id == id && matches!(o.op, Op::Write { .. }));
                match (c.session.as_mut(), answer) {
                    (Some(session), answer) => session.observe(answer, write),
                    (None, Reply::InSession { reply, .. }) => *reply,
                    (None, other) => other,
                }
            }
            (Reply::InSession { reply, .. }, None) => *reply,
            (reply, _) => reply,
        };
        if let (Some((node, lsn, epoch)), Reply::Ok) = (self.write_lsns.remove(&id), &reply) {
            self.check_copies(id, node, lsn, epoch);
            // A client's write: the world's own transactions go to the leader directly, sooner
            // than a client finds it.
            if self.requests.contains_key(&id) {
                if let Some(crashed) = self.leader_crashed_at.take() {
                    self.counts.failover_ms.push(self.ground.now - crashed);
                }
            }
        }
        let Some(client) = self.requests.remove(&id) else { return };
        let Some(outstanding) = self.clients[client as usize].outstanding.take_if(|o| o.id == id) else {
            return; // it timed out already
        };
        let outcome = match (&outstanding.op, &reply) {
            (Op::Write { .. }, Reply::Ok) => Some(Outcome::Ok(None)),
            (Op::Read { .. }, Reply::Nil) => Some(Outcome::Ok(None)),
            (Op::Read { .. }, Reply::Bulk(b)) => match std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()) {
                Some(v) => Some(Outcome::Ok(Some(v))),
                None => {
                    self.ground.broken = Some(format!("a read returned {b:?}, which no client wrote"));
                    None
                }
            },
            (_, Reply::Error(e)) if e.starts_with("NOREPLICAS") => Some(Outcome::Indeterminate),
            (Op::Write { .. }, Reply::Error(e)) if e.contains("may or may not") => Some(Outcome::Indeterminate),
            (_, Reply::Error(e)) if e.starts_with("READONLY") => {
                // Not executed: go where the leader is, or anywhere when none is known.
                let c = client as usize;
                self.clients[c].target = match e.rsplit_once("The leader is n") {
                    Some((_, rest)) => rest.trim_end_matches('.').parse::<usize>().map_or(0, |n| n - 1),
                    None => self.ground.rng.gen_range(0..self.nodes.len()),
                };
                self.clients[c].next_at = self.ground.now + 1 + self.ground.rng.gen_range(0..20);
                None
            }
            (_, Reply::Error(_)) if self.clients[client as usize].session.is_some() => {
                // Not executed (`-TRYAGAIN` from a follower behind the session, or a history a
                // failover cut): a session client tries again shortly, anywhere.
                let c = client as usize;
                self.clients[c].next_at = self.ground.now + 1 + self.ground.rng.gen_range(0..20);
                None
            }
            _ => None,
        };
        self.trace(format!("client {client} {:?} on n{} -> {reply:?}", outstanding.op, outstanding.node + 1));
        match outcome {
            Some(outcome) => {
                if outcome == Outcome::Indeterminate {
                    self.ground.counts.indeterminate += 1;
                } else {
                    self.ground.counts.ok += 1;
                }
                let complete_ms = (outcome != Outcome::Indeterminate).then_some(self.ground.now + 1);
                self.history.events.push(Event {
                    client,
                    node: Some(outstanding.node),
                    op: outstanding.op,
                    invoke_ms: outstanding.invoke_ms,
                    complete_ms,
                    outcome,
                });
            }
            None => {
                self.ground.counts.refused += 1;
                return;
            }
        }
        self.clients[client as usize].next_at = self.ground.now + 1 + self.ground.rng.gen_range(0..5);
    }

    /// A write logged at `lsn` is being acknowledged: it must be durable on the leader and on
    /// as many followers as the mode needs, now.
    fn check_copies(&mut self, id: RequestId, node: usize, lsn: Lsn, epoch: Epoch) {
        if self.under_replicated.is_some() {
            return;
        }
        // A copy is this very record: durable at `lsn`, and of the epoch the leader wrote it in
        // (or already behind the node's log start, dropped by its retention).
        let holds = |n: &Node| {
            let (at, first) = match (&n.replica, &n.stored_files) {
                (Some(r), _) => (sl(r).log_epoch_at(lsn), sl(r).first_lsn()),
                (None, Some(files)) => (files.log.epoch_at(lsn), files.log.first_lsn()),
                (None, None) => return false,
            };
            n.log_synced >= lsn
                && match at {
                    Some(e) => e == epoch,
                    None => lsn < first,
                }
        };
        let leader = holds(&self.nodes[node]);
        let followers = self.nodes.iter().enumerate().filter(|(j, n)| *j != node && holds(n)).count();
        if !leader || followers < self.config.acks_needed {
            let why = format!(
                "request {id} (log position {lsn}) acknowledged with the leader's copy {} and {followers} of the {} \
                 follower copies acks = {} needs durable",
                if leader { "durable" } else { "NOT durable" },
                self.config.acks_needed,
                self.config.acks_label
            );
            let nodes: Vec<String> = self
                .nodes
                .iter()
                .enumerate()
                .map(|(j, n)| match &n.replica {
                    Some(r) => format!(
                        "n{}: synced {} log {}..={} epoch at {lsn} {:?}",
                        j + 1,
                        n.log_synced,
                        sl(r).first_lsn(),
                        r.last_lsn(),
                        sl(r).log_epoch_at(lsn)
                    ),
                    None => format!("n{}: down", j + 1),
                })
                .collect();
            let why = format!("{why} (epoch {epoch}, by n{}; {})", node + 1, nodes.join("; "));
            self.trace(why.clone());
            self.under_replicated = Some(why);
        }
    }

    /// With `transactions`: checks that no running replica holds part of one, then sends the
    /// next when it is due (to the node that leads; none is sent while none does).
    fn run_transactions(&mut self) {
        if !self.config.transactions {
            return;
        }
        if self.torn.is_none() {
            for (i, node) in self.nodes.iter().enumerate() {
                let Some(replica) = node.replica.as_ref() else { continue };
                let values: Vec<Option<bytes::Bytes>> = (0..TRANSACTION_KEYS)
                    .map(|k| {
                        let key = format!("t{k}");
                        replikv_core::storage::Engine::get(replica.store().engine(), key.as_bytes())
                            .ok()
                            .flatten()
                            .and_then(|r| r.value)
                    })
                    .collect();
                if values.iter().any(|v| *v != values[0]) {
                    let shown: Vec<String> = values
                        .iter()
                        .map(|v| v.as_ref().map_or("-".into(), |v| String::from_utf8_lossy(v).into()))
                        .collect();
                    let why = format!(
                        "n{} holds part of a transaction at {} ms: t0..t{} = {}",
                        i + 1,
                        self.ground.now,
                        TRANSACTION_KEYS - 1,
                        shown.join(" ")
                    );
                    self.trace(why.clone());
                    self.torn = Some(why);
                    break;
                }
            }
        }
        let (last, due) = self.transactions;
        if self.ground.quiet || self.ground.now < due {
            return;
        }
        let Some(leader) = self.leader() else { return };
        let value = last + 1;
        self.transactions = (value, self.ground.now + 5 + self.ground.rng.gen_range(0..20));
        let pairs = (0..TRANSACTION_KEYS)
            .map(|k| (bytes::Bytes::from(format!("t{k}")), bytes::Bytes::from(value.to_string())))
            .collect();
        self.next_request += 1;
        let id = self.next_request;
        self.ground.send(None, leader, Packet::Request { id, request: Request::MSet { pairs, if_none_exist: false } });
    }

    /// Clients time out and issue operations.
    fn run_clients(&mut self) {
        self.run_transactions();
        for c in 0..self.clients.len() {
            if let Some(o) = &self.clients[c].outstanding {
                // A client whose node is down sees its connection reset at once (a crashed
                // process's sockets close); otherwise it waits for its timeout.
                let reset = self.ground.health[o.node].down_until.is_some();
                if reset || o.invoke_ms + CLIENT_TIMEOUT_MS <= self.ground.now {
                    self.give_up(c, if reset { "lost its connection" } else { "timed out" });
                }
                continue;
            }
            let budget_spent = self.ground.counts.ops >= OPS_PER_KEY_MAX * self.config.keys as u64;
            if self.ground.quiet || budget_spent || self.clients[c].next_at > self.ground.now {
                continue;
            }
            let key = format!("k{}", self.ground.rng.gen_range(0..self.config.keys));
            let op = if self.ground.rng.gen_bool(0.5) {
                self.next_value += 1;
                Op::Write { key, value: self.next_value }
            } else {
                Op::Read { key }
            };
            let mut request = match &op {
                Op::Read { key } => Request::Get { key: Bytes::from(key.clone()) },
                Op::Write { key, value } => Request::Set {
                    key: Bytes::from(key.clone()),
                    value: Bytes::from(value.to_string()),
                    condition: Default::default(),
                    get: false,
                    expiry: match self.config.relative_ttls {
                        true => replikv_core::kv::Expiry::InMs(RELATIVE_TTL_MS),
                        false => Default::default(),
                    },
                },
            };
            let mut target = self.clients[c].target;
            if let Some(session) = &self.clients[c].session {
                // A session reads from any node, and writes where it believes the leader is.
                if matches!(op, Op::Read { .. }) {
                    target = self.ground.rng.gen_range(0..self.nodes.len());
                }
                request = session.wrap(request);
            }
            self.next_request += 1;
            let id = self.next_request;
            self.requests.insert(id, self.clients[c].id);
            self.ground.counts.ops += 1;
            self.clients[c].outstanding = Some(Outstanding { id, op, invoke_ms: self.ground.now, node: target });
            self.ground.send(None, target, Packet::Request { id, request });
        }
    }

    /// What failed (a step, a write-out, a restart), if anything did: the run's first failure.
    pub fn broken(&self) -> Option<&String> {
        self.ground.broken.as_ref()
    }

    /// The node that leads now, if exactly one running node says it does.
    pub fn leader(&self) -> Option<usize> {
        let leaders: Vec<usize> =
            (0..self.nodes.len()).filter(|&i| self.nodes[i].replica.as_ref().is_some_and(|r| r.is_leader())).collect();
        (leaders.len() == 1).then(|| leaders[0])
    }

    /// Client `c`'s operation ends indeterminate (`why`); it will try another node.
    fn give_up(&mut self, c: usize, why: &str) {
        let Some(o) = self.clients[c].outstanding.take() else { return };
        self.requests.remove(&o.id);
        self.ground.counts.indeterminate += 1;
        let client = self.clients[c].id;
        self.clients[c].target = self.ground.rng.gen_range(0..self.nodes.len());
        self.clients[c].next_at = self.ground.now + 1 + self.ground.rng.gen_range(0..20);
        self.trace(format!("client {client} {:?} {why}", o.op));
        self.history.events.push(Event {
            client,
            node: Some(o.node),
            op: o.op,
            invoke_ms: o.invoke_ms,
            complete_ms: None,
            outcome: Outcome::Indeterminate,
        });
    }

    /// True when every node is up and holds the leader's log end, with the same digest.
    pub fn converged(&self) -> bool {
        let Some(i) = self.leader() else { return false };
        let Some(leader) = self.nodes[i].replica.as_ref() else { return false };
        let Ok(digest) = replikv_core::digest::digest(leader.store().engine()) else { return false };
        self.nodes.iter().all(|n| {
            n.replica.as_ref().is_some_and(|r| {
                r.last_lsn() == leader.last_lsn()
                    && replikv_core::digest::digest(r.store().engine()).is_ok_and(|d| d.root == digest.root)
            })
        })
    }

    /// True when every follower is up and has applied the leader's whole log, and some holds
    /// other records than the leader's (digests differ): replicas that diverged, not ones
    /// still catching up.
    pub fn diverged(&self) -> bool {
        let Some(i) = self.leader() else { return false };
        let Some(leader) = self.nodes[i].replica.as_ref() else { return false };
        let Ok(digest) = replikv_core::digest::digest(leader.store().engine()) else { return false };
        let replicas: Vec<_> =
            self.nodes.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, n)| n.replica.as_ref()).collect();
        replicas.iter().all(|r| r.is_some_and(|r| sl(r).follower_serves_through() == Some(leader.last_lsn())))
            && replicas
                .iter()
                .flatten()
                .any(|r| replikv_core::digest::digest(r.store().engine()).is_ok_and(|d| d.root != digest.root))
    }

    /// Each node's live keys and values now (`None` for a node that is down).
    pub fn states(&self) -> Vec<Option<BTreeMap<String, u64>>> {
        self.nodes
            .iter()
            .map(|n| {
                let replica = n.replica.as_ref()?;
                let engine = replica.store().engine();
                let mut state = BTreeMap::new();
                for (key, meta) in replikv_core::storage::Engine::scan(engine, std::ops::Bound::Unbounded, usize::MAX) {
                    if meta.tombstone {
                        continue;
                    }
                    let record = replikv_core::storage::Engine::get(engine, &key).ok()??;
                    let value = std::str::from_utf8(record.value.as_ref()?).ok()?.parse().ok()?;
                    state.insert(String::from_utf8_lossy(&key).into_owned(), value);
                }
                Some(state)
            })
            .collect()
    }

    /// Each node's replication status now, as JSON lines (for debugging a seed).
    pub fn statuses(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| match &n.replica {
                Some(r) => format!("{:?}", r.status(n.clock(self.ground.now))),
                None => "down".to_string(),
            })
            .collect()
    }

    /// Every change any node cut from its log and saved to its rollback log.
    pub fn rolled_back(&self) -> Vec<RollbackEntry> {
        let mut all = Vec::new();
        for n in &self.nodes {
            let rollback = match (&n.replica, &n.stored_files) {
                (Some(r), _) => sl(r).rollback(),
                (None, Some(files)) => &files.rollback,
                (None, None) => continue,
            };
            all.extend(rollback.memory_entries().iter().cloned());
        }
        all
    }

    /// Each node's log end (`None` when down).
    pub fn log_ends(&self) -> Vec<Option<Lsn>> {
        self.nodes.iter().map(|n| n.replica.as_ref().map(|r| r.last_lsn())).collect()
    }
}

impl FamilyWorld for World {
    fn ground(&mut self) -> &mut Ground {
        &mut self.ground
    }

    fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// The vote and the rollback log survive whole (they are saved durably as they change);
    /// the engine and the log keep what was fsynced and a torn prefix of the rest.
    fn crash(&mut self, i: usize) {
        let (ground, node) = (&mut self.ground, &mut self.nodes[i]);
        let Some(replica) = node.replica.take() else { return };
        if replica.is_leader() && self.leader_crashed_at.is_none() {
            self.leader_crashed_at = Some(ground.now);
        }
        let (_, files) = sl_owned(replica).into_parts();
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
            "n{} crashed: engine kept {kept} unsynced puts and lost {lost}; log keeps through {survivors}; down until t={until}",
            i + 1
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
        // A node elected leads with the log it had durable as a follower.
        self.note_led_durable(i);
        self.check_served(i);
    }

    fn run_clients(&mut self) {
        World::run_clients(self);
    }
}

/// The log a node's disk holds after a crash: every record through its last completed fsync
/// (`synced`), and a random prefix of the ones after (a torn tail).
pub(crate) fn torn_log(rng: &mut impl Rng, synced: Lsn, mut log: ReplicationLog) -> ReplicationLog {
    let base = log.first_lsn() - 1;
    let epoch = log.epoch_at(base).expect("the base is in the log");
    let mut records = Vec::new();
    let mut after = base;
    while let Ok(Some(batch)) = log.read(after, usize::MAX) {
        let Some(last) = batch.last() else { break };
        after = last.lsn;
        records.extend(batch);
    }
    let unsynced = records.iter().filter(|r| r.lsn > synced).count();
    let keep_unsynced = rng.gen_range(0..=unsynced);
    let keep = records.len() - unsynced + keep_unsynced;
    let mut torn = ReplicationLog::in_memory(log.options().clone());
    if base > 0 {
        torn.reset(base, epoch).expect("an in-memory reset");
    }
    for record in records.into_iter().take(keep) {
        torn.append(record).expect("records in order");
    }
    torn
}

/// The guarantee of each session client (`follower_reads`: every client but the first), drawn
/// from an RNG of its own so that the world's stream of choices does not depend on it.
fn draw_sessions(config: &SimConfig) -> BTreeMap<ClientId, Guarantee> {
    if !config.follower_reads {
        return BTreeMap::new();
    }
    crate::session::draw_guarantees(config.seed, 1..config.clients as ClientId)
}

/// The options of every simulated log.
pub(crate) fn log_options(retain_bytes: u64) -> ReplogOptions {
    ReplogOptions { retain_bytes_max: retain_bytes, segment_bytes_max: (retain_bytes / 4).max(1), ..Default::default() }
}

/// Opens `node`'s replica over its disk and `files`, at virtual time `t`.
fn open(node: &Node, files: ReplicaFiles, t: u64) -> replikv_core::Result<Replica<SimEngine>> {
    let engine = SimEngine::open(node.disk.clone())?;
    SingleLeader::replicated(engine, files, node.settings.clone(), node.clock(t)).map(Replica::from)
}

/// The single-leader node inside `replica`: the simulator runs that family only.
fn sl<E: replikv_core::storage::Engine>(replica: &Replica<E>) -> &SingleLeader<E> {
    replica.single_leader().expect("the simulator runs single-leader nodes only")
}

/// [`sl`], taking the replica apart.
fn sl_owned<E: replikv_core::storage::Engine>(replica: Replica<E>) -> SingleLeader<E> {
    replica.into_single_leader().expect("the simulator runs single-leader nodes only")
}
