//! replikv-server: the parts of a node that touch the world.
//!
//! The core decides; this crate drives it. It owns the tokio runtime, the sockets, the clock
//! and the threads: a node's stepper thread steps the core's replica with batches of inputs
//! while its syncer thread fsyncs the batch before, one fsync per group ([`runtime`]); the
//! Redis protocol front end ([`resp`]) and the HTTP/JSON front end ([`http`]) turn clients'
//! bytes into core requests and replies back into bytes; [`config`] merges flags,
//! environment and file, and [`live`] changes what may change while the node runs (`CONFIG
//! SET`), the log level through [`logging`]; [`metrics`] keeps a Prometheus registry per
//! node; [`state`] is what the front ends share, [`clients`] the open RESP connections;
//! [`http_serve`] is the HTTP accept loop and its limits, [`query_buffers`] the node's bytes
//! of incomplete requests and its bound on them;
//! [`faults`] holds the test-only fault switches; [`peer`] is the transport between nodes
//! (frames, handshake, links, listener) and [`peers`] opens a node's links to the rest of its
//! cluster and carries the replication messages between them and the runtime;
//! [`replication`] shows the replica's replication state as `INFO replication`, `ROLE` and
//! JSON; [`changes`] streams the log to clients (change data capture); [`error`] sorts what goes wrong by how the operator must react; [`node`] starts and
//! stops it all.
//!
//! If a driver here needs an `if` about replication, that logic belongs in the core.

pub mod changes;
pub mod clients;
pub mod clock;
pub mod config;
pub mod error;
pub mod faults;
pub mod http;
pub mod http_serve;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod peers;
pub mod query_buffers;
pub mod replication;
pub mod resp;
pub mod runtime;
pub mod sessions;
pub mod state;
