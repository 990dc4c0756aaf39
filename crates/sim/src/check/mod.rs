//! Checkers: each judges a run's history or final state against one promise of DESIGN §7, and
//! each is itself tested with a hand-made history that breaks its property.
//!
//! - [`durability`]: no acknowledged write is lost.
//! - [`linearizability`]: the leader's reads and writes are linearizable (sync mode), by a
//!   memoized Wing-Gong-Lowe search per key, with an explicit "gave up".
//! - [`sessions`]: read-your-writes, monotonic reads and consistent prefix per session
//!   (clients reading from followers), from the values in the history alone; and how often
//!   each anomaly happened to the sessions promised nothing.
//! - Convergence (every replica at the leader's log end with the leader's digest, after the
//!   faults heal) is checked by the world itself (`World::converged`).

pub mod durability;
pub mod linearizability;
pub mod sessions;
