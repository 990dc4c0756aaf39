//! What every family's world runs on: the seeded RNG, virtual time, the network, whether each
//! node runs, the trace, and the counts of operations and faults.
//!
//! A family's world (single-leader's [`crate::world`], [`crate::leaderless`]) owns its nodes
//! and clients and decides what a crash does to its replicas; the [`Ground`] decides when
//! faults strike, carries packets and keeps the trace, in one order of RNG draws, so that
//! both families meet the same faults the same way and a seed replays its run exactly.
//!
//! Each virtual millisecond goes the same way for every family ([`FamilyWorld::step`]): time
//! moves on, faults may start, nodes resume and restart, packets arrive, each node takes its
//! turn, then the clients; the family's world says what each of these does to its nodes.

use crate::faults::Faults;
use crate::host::{Health, NodeFault};
use crate::net::{Network, Packet};
use crate::run::{Judgement, RunCounts, Verdict};
use crate::trace::Trace;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use replikv_core::node::Input;
use replikv_core::version::NodeId;

/// The shared ground of one run.
pub(crate) struct Ground {
    /// Every choice of the run comes from here.
    pub(crate) rng: ChaCha8Rng,
    /// Virtual milliseconds.
    pub(crate) now: u64,
    /// The run's fault rates.
    pub(crate) faults: Faults,
    /// Packets on their way, and the partition in force.
    pub(crate) network: Network,
    /// Each node's: down, paused, or running.
    pub(crate) health: Vec<Health>,
    /// Operations and faults so far.
    pub(crate) counts: RunCounts,
    /// Faults have healed and strike no more.
    pub(crate) quiet: bool,
    /// Set when a node failed a step or could not restart (or a client saw what no node can
    /// answer): the run's first failure.
    pub(crate) broken: Option<String>,
    /// The trace.
    trace: Trace,
}

impl Ground {
    /// The ground of a run of `nodes` nodes from `seed`, at virtual time 0.
    pub(crate) fn new(seed: u64, faults: Faults, nodes: usize) -> Ground {
        // Log lines of this run carry its own virtual time from its start, whatever ran before.
        crate::VIRTUAL_NOW_MS.with(|now| now.set(0));
        Ground {
            rng: ChaCha8Rng::seed_from_u64(seed),
            now: 0,
            faults,
            network: Network::default(),
            health: vec![Health::default(); nodes],
            counts: RunCounts::default(),
            quiet: false,
            broken: None,
            trace: Trace::new(),
        }
    }

    /// Writes a trace line, stamped with virtual time.
    pub(crate) fn trace(&mut self, line: String) {
        self.trace.line(self.now, line);
    }

    /// The run's judgement: its counts and trace so far, with the checkers' `verdicts`.
    pub(crate) fn judge(&self, verdicts: Vec<(String, Verdict)>) -> Judgement {
        Judgement { run: self.counts.clone(), verdicts, trace_hash: self.trace.hash(), trace_tail: self.trace.tail() }
    }

    /// Virtual time moves on one millisecond.
    pub(crate) fn tick(&mut self) {
        self.now += 1;
        crate::VIRTUAL_NOW_MS.with(|now| now.set(self.now));
    }

    /// Sends `packet` to node `to`, through the network's faults when it comes from a node.
    pub(crate) fn send(&mut self, from: Option<usize>, to: usize, packet: Packet) {
        let sent = self.network.send(&mut self.rng, &self.faults, self.now, from, to, packet);
        self.counts.sent(sent);
    }

    /// The packets due now, as inputs for their nodes (`ids` names each node by index); a
    /// down node hears nothing.
    pub(crate) fn deliver(&mut self, ids: &[NodeId]) -> Vec<(usize, Input)> {
        let health = &self.health;
        self.network.deliver(self.now, ids, |i| health[i].down_until.is_some())
    }

    /// Ends every fault: the quiet phase begins. Paused nodes resume and crashed ones restart
    /// on the next millisecond.
    pub(crate) fn heal_all(&mut self) {
        self.quiet = true;
        self.network.heal();
        for health in &mut self.health {
            health.heal(self.now);
        }
        self.trace("quiet: every fault healed".into());
    }

    /// From now on the network loses no message (it still duplicates, delays and reorders):
    /// for a family whose replicas converge only through the quiet phase's reads, a lost
    /// repair would stay lost.
    pub(crate) fn stop_drops(&mut self) {
        self.faults.drop = 0.0;
    }
}

/// A family's world, as the ground drives it through a virtual millisecond
/// ([`FamilyWorld::step`]): the family says what a crash, a restart and a delivery do to its
/// nodes, and how its nodes and clients take their turns; the order of the turns and of the
/// fault draws is the same for every family.
pub(crate) trait FamilyWorld {
    /// The ground it runs on.
    fn ground(&mut self) -> &mut Ground;

    /// Each node's id, by index.
    fn node_ids(&self) -> Vec<NodeId>;

    /// Node `i` crashes now: its disk keeps what was durable and a torn prefix of the rest;
    /// it must set `health[i].down_until` ([`crate::host::down_until`]), after its own draws.
    fn crash(&mut self, i: usize);

    /// Crashed node `i`'s time to restart has come: the trace line that says how it came
    /// back, or why it could not (which breaks the run).
    fn restart(&mut self, i: usize) -> replikv_core::Result<String>;

    /// `input` reaches node `to`, for its next batch.
    fn deliver(&mut self, to: usize, input: Input);

    /// Node `i`'s turn: its completed fsyncs, then one batch.
    fn run_node(&mut self, i: usize);

    /// The clients' turn: they time out or issue.
    fn run_clients(&mut self);

    /// A partition that forms now, at the run's rate, when none is in force: the trace line
    /// saying so. By default one node is cut off from the others; a family whose nodes sit in
    /// groups (datacenters) may cut a group off too.
    fn draw_partition(&mut self) -> Option<String> {
        let ground = self.ground();
        let nodes = ground.health.len();
        ground.network.maybe_partition(&mut ground.rng, &ground.faults, ground.now, nodes)
    }

    /// One virtual millisecond: time moves on; in the safety phase faults may start;
    /// paused nodes whose time has come resume and crashed ones restart; due packets reach
    /// their nodes; each node takes its turn, then the clients.
    fn step(&mut self) {
        self.ground().tick();
        if !self.ground().quiet {
            self.inject_faults();
        }
        let nodes = self.ground().health.len();
        for i in 0..nodes {
            let ground = self.ground();
            if ground.health[i].maybe_resume(ground.now) {
                ground.trace(format!("n{} resumed", i + 1));
            }
            if ground.health[i].maybe_restart(ground.now) {
                let restarted = self.restart(i);
                let ground = self.ground();
                match restarted {
                    Ok(line) => ground.trace(line),
                    Err(e) => {
                        let why = format!("n{} could not restart: {e}", i + 1);
                        ground.trace(why.clone());
                        ground.broken = Some(why);
                    }
                }
            }
        }
        let ids = self.node_ids();
        for (to, input) in self.ground().deliver(&ids) {
            self.deliver(to, input);
        }
        for i in 0..nodes {
            self.run_node(i);
        }
        self.run_clients();
    }

    /// The faults that start now: a partition heals or forms, and each running node may
    /// crash (its own draws follow in the RNG's stream) or pause.
    fn inject_faults(&mut self) {
        let ground = self.ground();
        if ground.network.maybe_heal(ground.now) {
            ground.trace("partition healed".into());
        }
        let nodes = ground.health.len();
        if let Some(line) = self.draw_partition() {
            let ground = self.ground();
            ground.counts.partitions += 1;
            ground.trace(line);
        }
        for i in 0..nodes {
            let ground = self.ground();
            match ground.health[i].draw_fault(&mut ground.rng, &ground.faults, ground.now) {
                Some(NodeFault::Crash) => {
                    self.crash(i);
                    let ground = self.ground();
                    assert!(ground.health[i].down_until.is_some(), "n{} crashed but is not down", i + 1);
                    ground.counts.crashes += 1;
                }
                Some(NodeFault::Pause { until }) => {
                    ground.counts.pauses += 1;
                    ground.trace(format!("n{} paused until t={until}", i + 1));
                }
                None => {}
            }
        }
    }
}
