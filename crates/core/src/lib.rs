//! replikv-core: the deterministic heart of replikv.
//!
//! Everything here is a pure function of its inputs: time arrives as a `now_ms` argument,
//! randomness as a seed, and no code here opens a socket, spawns a thread or reads a clock
//! (`clippy.toml` enforces it). The one exception is the storage engine, which reads and
//! writes files synchronously through `std::fs`. The server crate drives this code with real
//! time, sockets and disks; the simulator (the `replikv-sim` crate) drives the same code with
//! virtual ones.
//!
//! - [`digest`]: a Merkle tree over a replica's keys, to compare replicas.
//! - [`quorum`]: majority, k-of-n and n/w/r arithmetic, pure and table-tested; every family
//!   counts its quorums with it.
//! - [`version`]: hybrid logical clock timestamps and versions, which order every write.
//! - [`causality`]: dotted version vectors and siblings, which tell a newer write of a key
//!   from a concurrent one in leaderless replication.
//! - [`storage`]: the storage engines (log-structured and memory) behind one trait.
//! - [`kv`]: the key-value commands (Redis's string commands) as requests and replies.
//! - [`replica`]: a node's state machine, driven by `step(now, input, &mut outbox)`.
//! - [`replication`]: what replicas share: log records, the replication log, elections,
//!   votes, rollback files and the peer messages.

pub mod causality;
pub mod digest;
pub mod error;
pub mod kv;
pub mod quorum;
pub mod replica;
pub mod replication;
pub mod storage;
pub mod version;

pub use error::{Error, Result};
