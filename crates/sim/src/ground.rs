//! What every family's world runs on: the seeded RNG, virtual time, the network, whether each
//! node runs, the trace, and the counts of operations and faults.
//!
//! A family's world (single-leader's [`crate::world`], [`crate::leaderless`]) owns its nodes
//! and clients and decides what a crash does to its replicas; the [`Ground`] decides when
//! faults strike, carries packets and keeps the trace, in one order of RNG draws, so that
//! both families meet the same faults the same way and a seed replays its run exactly.
//!
//! Each virtual millisecond a world calls, in this order: [`Ground::tick`], then (in the
//! safety phase) [`Ground::inject_faults`], its own wake-ups (with [`Health::maybe_resume`]
//! and [`Health::maybe_restart`]), [`Ground::deliver`], its nodes' batches and its clients.

use crate::faults::Faults;
use crate::host::{Health, NodeFault};
use crate::net::{Network, Packet};
use crate::run::RunCounts;
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
            trace: Trace::new(),
        }
    }

    /// Writes a trace line, stamped with virtual time.
    pub(crate) fn trace(&mut self, line: String) {
        self.trace.line(self.now, line);
    }

    /// The hash of the whole trace so far.
    pub(crate) fn trace_hash(&self) -> u64 {
        self.trace.hash()
    }

    /// The last lines of the trace.
    pub(crate) fn trace_tail(&self) -> Vec<String> {
        self.trace.tail()
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

    /// The faults that start now: a partition heals or forms, and each running node may
    /// crash or pause. `crash(ground, i)` takes node `i` down at once (its own draws follow in
    /// the RNG's stream); it must set `health[i].down_until` (see [`crate::host::down_until`]).
    pub(crate) fn inject_faults(&mut self, mut crash: impl FnMut(&mut Ground, usize)) {
        if self.network.maybe_heal(self.now) {
            self.trace("partition healed".into());
        }
        let nodes = self.health.len();
        if let Some(line) = self.network.maybe_partition(&mut self.rng, &self.faults, self.now, nodes) {
            self.counts.partitions += 1;
            self.trace(line);
        }
        for i in 0..nodes {
            match self.health[i].draw_fault(&mut self.rng, &self.faults, self.now) {
                Some(NodeFault::Crash) => {
                    crash(self, i);
                    assert!(self.health[i].down_until.is_some(), "n{} crashed but is not down", i + 1);
                    self.counts.crashes += 1;
                }
                Some(NodeFault::Pause { until }) => {
                    self.counts.pauses += 1;
                    self.trace(format!("n{} paused until t={until}", i + 1));
                }
                None => {}
            }
        }
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

    /// Resumes node `i` if its pause ends now (traced).
    pub(crate) fn maybe_resume(&mut self, i: usize) {
        if self.health[i].maybe_resume(self.now) {
            self.trace(format!("n{} resumed", i + 1));
        }
    }
}
