//! replikv-core: the deterministic heart of replikv.
//!
//! Everything here is a pure function of its inputs: time arrives as a `now_ms` argument,
//! randomness as a seed, and no code here opens a socket, spawns a thread or reads a clock
//! (`clippy.toml` enforces it). The one exception is the storage engine, which reads and
//! writes files synchronously through `std::fs`. The server crate drives this code with real
//! time, sockets and disks; the simulator (the `replikv-sim` crate) drives the same code with
//! virtual ones.
//!
//! What every family shares:
//!
//! - [`node`]: the shape of a node's state machine (`step(now, input, &mut outbox)`, inputs,
//!   outputs, status) and [`node::Replica`], the one concrete type over the replication
//!   families that the runtime and the simulator hold.
//! - [`digest`]: a Merkle tree over a replica's keys, to compare replicas.
//! - [`quorum`]: majority, k-of-n and n/w/r arithmetic, pure and table-tested; every family
//!   counts its quorums with it. It also answers the lecture's quorum exercise (which
//!   unavailable replicas a read of the newest write survives) for `replikv quorum`.
//! - [`version`]: hybrid logical clock timestamps and versions, which order every write.
//! - [`causality`]: dotted version vectors and siblings, which tell a newer write of a key
//!   from a concurrent one in leaderless replication.
//! - [`storage`]: the storage engines (log-structured and memory) behind one trait.
//! - [`kv`]: the key-value commands (Redis's string commands) as requests and replies.
//! - [`replication`]: the replication log and its records, for a family that ships a log.
//!
//! The families, one folder each with its own messages, settings and essay (DESIGN §2);
//! one family's behaviour never becomes a branch in another's files:
//!
//! - [`single_leader`]: one leader, followers acknowledging `sync`, `semi-sync:K` or
//!   `async`; elections with fencing, handovers, rollback files, repair of damaged records.
//!   A lone node is this family without followers.
//! - [`leaderless`]: Dynamo-style quorums (n, w, r) over dotted version vectors, siblings,
//!   read repair; any node coordinates.
//! - [`multi_leader`]: a leader per datacenter (each a single-leader cluster inside),
//!   exchanging changes asynchronously; conflicts detected from the versions each change
//!   replaced, resolved by `lww`, `merge` or `app`, and logged.

pub mod causality;
pub mod digest;
pub mod error;
pub mod kv;
pub mod leaderless;
pub mod multi_leader;
pub mod node;
pub mod quorum;
pub mod replication;
pub mod single_leader;
pub mod storage;
pub mod version;

pub use error::{Error, Result};
