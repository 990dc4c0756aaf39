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
//! now applied the sender's log through, and acknowledges once a majority of its own
//! datacenter holds that; a change it received is never shipped on (each datacenter ships its
//! own: no change loops), and a change applied twice is harmless (the state merge is
//! idempotent). A position never moves back unless the sender's history went another way (a
//! failover in its datacenter cut records), and then the sender says so, naming the position
//! it corrects (a late correction of a position the receiver has left moves nothing). The
//! sender keeps its log from the oldest position another datacenter holds durably or has
//! applied, cut off or not, and its followers keep the same records, so that a failover does
//! not lose them; a sender whose view names a position its log no longer holds asks again
//! where the other stands, and a request abandoned in its log is never shipped. Lag is
//! shown per datacenter, in records and milliseconds, like a follower's. Nodes whose conflict
//! rules differ refuse each other at the peer handshake.
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
//! The simulator runs this family under its faults (`replikv sim --mode multi-leader`).
//!
//! CAVEATS
//! - While another datacenter is cut off, a leader keeps its log for it: the log grows past
//!   `log_retain_bytes` (warned about past twice that, naming "another datacenter"). There is
//!   no full exchange of states yet that would let it drop what a datacenter lacks and send
//!   its state instead.
//! - Followers keep what their leader keeps for other datacenters (its heartbeats say where
//!   from), but a follower brought up to date by a snapshot holds only the log after it: if
//!   it becomes leader, it may lack records a lagging datacenter needs, and the exchange to
//!   that datacenter then stops with an error (the full exchange of states would fix it).
//! - While a datacenter cannot make its answers durable (no majority of it is up), the
//!   answers it owes other datacenters are bounded ([`OWED_ACKS_MAX`]); their senders
//!   ask again, and each answer taken again stores the position once more.
//! - A single request bigger than [`SHIP_REQUEST_BYTES_MAX`] cannot be shipped (a peer frame
//!   holds 64 MiB): the exchange to every other datacenter stops there, with an error.
//! - A shipment with a change that does not decode is refused whole and comes again, for
//!   ever (logged and counted each time): a bug or a corrupted peer, not a state to skip.
//! - Keys do not expire, deleted keys keep their tombstone state (DBSIZE counts them), and
//!   read-modify-writes are refused ([`commands`]). MGET answers nil for a key with
//!   siblings under `app`.
//! - A datacenter under `async` that fails over loses what its old leader had not handed to
//!   a majority; that was never shipped, so the other datacenters never saw it either.
//! - The exchange's counters count resends and duplicates too.

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
    OWED_ACKS_MAX, POSITION_STORE_EVERY_RECORDS, SHIP_BYTES_MAX, SHIP_REQUEST_BYTES_MAX,
};

/// What a multi-leader node is handed: [`crate::node::Input`] with this family's messages.
pub type Input = crate::node::Input<Message>;
