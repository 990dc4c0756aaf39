//! Multi-leader replication (the lecture's "Multi-Leader Replication" to "Conflict
//! Resolution", DESIGN §7): several leaders, typically one per datacenter, each taking
//! writes and shipping them to the others asynchronously, each with followers of its own.
//!
//! Writes on two leaders can conflict: both already succeeded, so there is no chance to
//! reject one (the lecture), and the conflict must be detected and resolved after the fact,
//! the same way on every leader. [`conflict`] does that: a key's state is a set of
//! concurrent writes with a causal context ([`crate::causality::Siblings`]), a change
//! between leaders carries the versions it replaced, a leader that receives a change whose
//! base is not its current version has a conflict, and a rule (`lww`, `merge` or `app`,
//! per key prefix) resolves it deterministically, recording what lost.
//!
//! CAVEATS
//! - Only conflict detection and resolution are built so far (issue 16 is under way): there
//!   is no multi-leader node, no exchange between leaders and no conflict log yet, and
//!   `mode = "multi-leader"` is not accepted by the server.

pub mod commands;
pub mod conflict;

pub use commands::Causal;
pub use conflict::{Conflict, Read, Received, Resolve, Rules};
