//! `replikv bench`: one client that measures replikv and its peers alike.
//!
//! Users choose a replication strategy by what it costs, and we choose designs by measurement, so
//! the figures must compare: the same client, the same workloads, the same accounting, whether the
//! server is replikv or redis-server. This module is that client. It speaks plain RESP2 over TCP
//! (its own small client, [`client`]) to one or more endpoints, writes to the first and reads
//! round-robin from all (to measure follower reads), and reports throughput and latency
//! percentiles per operation kind from HDR histograms, with errors by kind.
//!
//! A run is a sequence of phases ([`run`]):
//!
//! 1. **load**: every record `key:000000000000` .. `key:<r-1>` stored once with `SET` (skipped
//!    with `--no-load`);
//! 2. one phase per `-t` test (`set`, `get`, `incr`, `mset`, as redis-benchmark runs them) or per
//!    `--workload` (YCSB's A, B, C, D, F, and `write-only`), in the order given.
//!
//! Each phase runs `-c` connections with up to `-P` operations in flight on each, for `-n`
//! operations or `--duration` seconds ([`run`]). The operation mix ([`workload`]) and the record
//! each operation touches ([`dist`]: uniform, zipfian with θ = 0.99, latest) come from generators
//! seeded by `--seed`, so two runs with the same flags draw the same operations and records in each
//! connection (inserts take the next record number from a counter all connections share).
//! Under `--rate` the offered load is fixed and latency counts from each operation's intended start
//! ([`schedule`]), so a stalled server cannot hide its queue (coordinated omission). Under
//! `--wait N,TIMEOUT_MS` every write is followed by `WAIT N TIMEOUT_MS`, the way Redis's
//! synchronous replication is measured; a `WAIT` answering fewer than `N` counts as a
//! `WAIT_SHORT` error.
//!
//! The report ([`report`]) counts commands by name as they are written, so a run against a server
//! can be checked against the server's own counters: against a replikv node, `set` and `get` equal
//! its `replikv_commands_total{command="set"}` and `{command="get"}`, load phase included.
//!
//! `replikv bench probe --dir D` ([`probe`]) measures the limits the figures sit under: fsync
//! latency and rate on D's disk, and the loopback round trip.
//!
//! Every loop is bounded: by an operation count, a duration, or both; every request by a timeout
//! (`--timeout-ms`, 5 s), after which that connection stops and its operations count as lost.
//!
//! CAVEATS
//! - One process drives the load: on a small machine the client competes with the server for the
//!   same cores, and both figures are lower than on separate machines. Compare runs made alike.
//! - Only strings: no workload uses other data types, scans (YCSB E) or transactions.
//! - replikv's own ways to ask for acknowledgements (its replication modes) do not exist yet;
//!   `--wait` is Redis's.

pub mod args;
pub mod client;
pub mod conn;
pub mod dist;
pub mod horizon;
pub mod probe;
pub mod report;
pub mod run;
pub mod schedule;
pub mod workload;

pub use args::BenchArgs;
pub use run::main;
