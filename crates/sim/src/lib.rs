//! replikv-sim: the deterministic simulator. It runs the real core replicas (the same
//! `Replica::step` the server drives) on a virtual clock, a simulated network and simulated
//! disks, injects faults, drives concurrent clients, and judges what they saw.
//!
//! Each replication family has a world, checkers and a run of its own; what they share is
//! factored out, so both meet the same faults the same way.
//!
//! - [`world`], [`check`], [`run`]: single-leader. The nodes, network, clients and virtual
//!   time of one run, with a safety phase (faults) and a quiet phase (faults healed, the
//!   cluster must converge); the checkers (acknowledged writes survive; linearizability;
//!   convergence and under-replicated acknowledgements are judged by the world); one seed from
//!   start to verdicts, and the command that replays it. With `follower_reads`, clients read
//!   from any node in sessions ([`session`]: each with a guarantee drawn from the seed), and
//!   [`check::sessions`] judges read-your-writes, monotonic reads and consistent prefix from
//!   the history, and counts the anomalies the sessions promised nothing saw. With
//!   `transactions`, the world sends the leader MSETs that span several log records and
//!   judges that no replica holds part of one (the canary `FollowerAppliesParts` shows it).
//! - [`leaderless`]: the leaderless family's world (any node coordinates, `fsync = always` or
//!   `never`), its checkers (convergence by read repair, reads see the newest acknowledged
//!   write, deletes stay deleted, siblings bounded and accounted for) and the lecture's
//!   anomalies as figures. With `sessions`, every client runs in a session through any node
//!   (`leaderless::session`: its floor per key a causal context), and
//!   `leaderless::checks::sessions` judges read-your-writes and monotonic reads from the
//!   history by causality, and counts what the sessions promised nothing saw.
//! - [`multi_leader`]: datacenters of multi-leader nodes (a single-leader cluster inside each,
//!   the exchange of changes between their leaders), partitions that may cut a whole
//!   datacenter off, clients attached to one datacenter each, and checkers for convergence
//!   and for what the conflict rule promises (`lww` losers logged and outversioned, `merge`
//!   values merged once, `app` siblings kept); with `follower_reads`, sessions that read from
//!   any node of their datacenter, judged in that datacenter's log.
//! - [`gossip`]: the lecture's gossip example at scale, 100,000 light replicas running the real
//!   anti-entropy exchange, set against random-gossip theory (no faults, no checkers).
//! - Shared: [`disk`], an engine whose writes are durable only once their simulated fsync
//!   completes (a crash keeps those and a torn prefix of the rest); [`faults`], the fault
//!   rates, set by name or drawn per seed (swarm testing); [`history`], what clients did and
//!   saw, with indeterminate operations; and, factored out of [`world`], the ground every
//!   world runs on (RNG, virtual time, fault draws, trace: `ground.rs`), the network with its
//!   drops, duplicates, delays and partitions (`net.rs`), and each node's clock, health and
//!   pending fsyncs (`host.rs`).
//!
//! One seed reproduces a run exactly: every choice comes from one ChaCha8 RNG, nothing reads a
//! clock or iterates a hash map (`clippy.toml` enforces it), and the trace's hash is the proof
//! (`one_seed_replays_the_same_trace`, in each family's run).
//!
//! To test the tests, the core carries planted bugs behind a switch the server never sets
//! (`single_leader::Canary`, `leaderless::Canary`, `multi_leader::Canary`): acknowledging
//! before fsync, a follower applying out of order, semi-sync answering OK when its
//! acknowledgements time out, a snapshot that skips a key, a follower answering a session read
//! without waiting for its position, a simulated client's session forgetting its read
//! position; a leaderless coordinator counting
//! an acknowledgement twice, a replica letting an older state overwrite its own, a read repair
//! sending the first reply, a coordinator ignoring a session's floor, a simulated leaderless
//! session forgetting its reads' contexts; a multi-leader leader keeping the arriving state under `lww`,
//! leaving `lww` losers out of the conflict log, applying arriving values twice under
//! `merge`. Each must be caught within 500 seeds (`every_canary_is_caught_within_500_seeds`,
//! `every_leaderless_canary_is_caught_by_its_checker`,
//! `every_leaderless_session_canary_is_caught_within_500_seeds`,
//! `every_multi_leader_canary_is_caught_by_its_checker`).
//!
//! CAVEATS
//! - A crash keeps the engine's and the log's torn prefixes independently, as two files would;
//!   it does not model a file whose middle pages reached the disk while earlier ones did not.
//! - Single-leader clients talk to the leader only unless `follower_reads` is on; then every
//!   client but the first reads from any node in a session, and its reads are judged by the
//!   session checkers, not by linearizability (faults are between nodes, never between a
//!   client and its node).
//! - Operations are SET and GET (and, leaderless, DEL) on a few keys; values are unique per
//!   run.

pub mod check;
pub mod disk;

/// Adds each named field of `$from` to the same field of `$to` (counters' totals).
#[macro_export]
#[doc(hidden)]
macro_rules! add_fields {
    ($to:expr, $from:expr; $($field:ident),+ $(,)?) => {
        $( $to.$field += $from.$field; )+
    };
}

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
pub mod gossip;
mod ground;
pub mod history;
mod host;
pub mod leaderless;
pub mod multi_leader;
mod net;
pub mod run;
pub mod session;
mod trace;
pub mod world;
