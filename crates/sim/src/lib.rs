//! replikv-sim: the deterministic simulator. It runs the real core replicas (the same
//! `Replica::step` the server drives) on a virtual clock, a simulated network and simulated
//! disks, injects faults, drives concurrent clients, and judges what they saw.
//!
//! - [`world`]: the nodes, network, clients and virtual time of one run; the safety phase (with
//!   faults) and the quiet phase (faults healed, the cluster must converge).
//! - [`disk`]: an engine whose writes are durable only once their simulated fsync completes; a
//!   crash keeps those and a torn prefix of the rest.
//! - [`faults`]: the fault rates, set by name or drawn per seed (swarm testing).
//! - [`history`]: what clients did and saw, with indeterminate operations.
//! - [`check`]: the checkers (acknowledged writes survive; linearizability; convergence and
//!   under-replicated acknowledgements are judged by the world).
//! - [`run`]: one seed from start to verdicts, and the command that replays it.
//! - What every family's world shares, factored out of [`world`]: the ground it runs on (RNG,
//!   virtual time, fault draws, trace: `ground.rs`), the network with its drops, duplicates,
//!   delays and partitions (`net.rs`), and each node's clock, health and pending fsyncs
//!   (`host.rs`).
//!
//! One seed reproduces a run exactly: every choice comes from one ChaCha8 RNG, nothing reads a
//! clock or iterates a hash map (`clippy.toml` enforces it), and the trace's hash is the proof
//! (`one_seed_replays_the_same_trace`).
//!
//! To test the tests, the core carries planted bugs behind a switch the server never sets
//! (`replica::Canary`): acknowledging before fsync, a follower applying out of order, semi-sync
//! answering OK when its acknowledgements time out, a snapshot that skips a key. Each must be
//! caught within 500 seeds (`every_canary_is_caught_within_500_seeds`).
//!
//! CAVEATS
//! - Single-leader only: the multi-leader and leaderless families do not exist yet.
//! - A crash keeps the engine's and the log's torn prefixes independently, as two files would;
//!   it does not model a file whose middle pages reached the disk while earlier ones did not.
//! - Clients talk to the leader only, over a 1 ms link that never fails (the faults are between
//!   nodes); stale follower reads are not checked yet (session guarantees come later).
//! - Operations are SET and GET on a few keys; values are unique per run.

pub mod check;
pub mod disk;

use std::cell::Cell;

thread_local! {
    /// The virtual clock of the run in progress on this thread.
    static VIRTUAL_NOW_MS: Cell<u64> = const { Cell::new(0) };
}

/// The virtual time of the run in progress on this thread, in milliseconds: what `replikv
/// sim` stamps log lines with, so that one seed prints the same text every time.
pub fn virtual_now_ms() -> u64 {
    VIRTUAL_NOW_MS.with(Cell::get)
}
pub mod faults;
mod ground;
pub mod history;
mod host;
mod net;
pub mod run;
mod trace;
pub mod world;
