//! Multi-leader replication (the lecture's "Multi-Leader Replication" to "Conflict
//! Resolution", DESIGN §7): a leader per datacenter, each taking its clients' writes and
//! shipping them to the other leaders asynchronously, each with followers of its own.
//!
//! # Inside a datacenter
//!
//! A datacenter is a single-leader cluster: its node ([`MultiLeader`]) runs a
//! [`crate::single_leader::SingleLeader`] whose peers are its datacenter's nodes, with the
//! same acknowledgements (`sync`, `semi-sync:K`, `async`), elections, fencing and failover.
//! The family gives it its own commands ([`commands::Causal`]): each key holds a causal state
//! (the writes that survive and everything seen of the key, [`crate::causality::Siblings`]),
//! so the single-leader machinery replicates those states without knowing what they hold. A
//! client writes to its datacenter's leader and is answered by the local rule.
//!
//! # Between datacenters
//!
//! Each datacenter's leader ships every other datacenter's leader the changes its own
//! clients made, in its log's order, whole requests at a time, once a majority of its
//! datacenter holds them (so that no failover there takes them back): [`message`]. The
//! receiver applies them in one request of its own log, together with the position it has
//! now applied the sender's log through, and acknowledges once that is durable; a change it
//! received is never shipped on (each datacenter ships its own: no change loops), and a
//! change applied twice is harmless (the state merge is idempotent). The sender keeps its log
//! from the oldest position a live datacenter still needs. Lag is shown per datacenter, in
//! records and milliseconds, like a follower's.
//!
//! # Conflicts
//!
//! Writes on two leaders can conflict: both already succeeded, so there is no chance to
//! reject one (the lecture), and the conflict must be detected and resolved after the fact,
//! the same way on every leader. [`conflict`] does that: a change between leaders carries
//! the versions it replaced, a leader that receives a change whose base is not its current
//! version has a conflict, and a rule (`lww`, `merge` or `app`, per key prefix) resolves it
//! deterministically, so every leader ends in the same state whatever order changes reach it
//! in. Every conflict is written to the [`conflict_log`] with what each side held and what
//! the rule discarded. A change stamped more than `max_clock_skew_ms` ahead of the
//! receiver's clock waits until the clock catches up.
//!
//! CAVEATS
//! - A datacenter that comes back after the sender's log dropped what it lacks cannot be
//!   brought up to date yet (a full exchange of states is not built): the sender logs an error.
//! - The server does not run this family yet: `mode = "multi-leader"` is refused by the
//!   cluster file, and REPLIKV.CONFLICTS and the end-to-end example are still to come (issue
//!   16 is under way). The simulator runs it (`replikv sim --mode multi-leader`).
//! - Keys do not expire, and read-modify-writes are refused ([`commands`]).
//! - A datacenter under `async` that fails over loses what its old leader had not handed to
//!   a majority; that was never shipped, so the other datacenters never saw it either.

pub mod canary;
pub mod commands;
pub mod conflict;
pub mod conflict_log;
pub mod message;
mod node;

pub use canary::Canary;
pub use commands::Causal;
pub use conflict::{Conflict, Read, Received, Resolve, Rules};
pub use conflict_log::{ConflictEntry, CONFLICTS_KEPT_MAX};
pub use message::{dc_id, DcId, Message, Position};
pub use node::{
    Datacenter, DatacenterLag, ExchangeCounters, MultiLeader, MultiLeaderStatus, Settings, LAG_SAMPLES_MAX,
    SHIP_BYTES_MAX,
};

/// What a multi-leader node is handed: [`crate::node::Input`] with this family's messages.
pub type Input = crate::node::Input<Message>;
