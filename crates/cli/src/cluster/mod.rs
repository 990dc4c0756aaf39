//! `replikv cluster`: a local cluster of real `replikv node` processes on 127.0.0.1.
//!
//! A user who wants to see replication at work should need one command, and tests should run
//! the same processes a user runs. `replikv cluster start` writes a cluster file, starts one
//! `replikv node --config <file> --id nI` process per node from the running executable, waits
//! until each answers `PING`, prints how to connect, and then shows the nodes' logs as one
//! stream, each line prefixed with its node's id. Ctrl-C or SIGTERM stops every node with
//! SIGTERM (SIGKILL for any still running after [`process::STOP_TIMEOUT_SECS`], or at once on a
//! second Ctrl-C). `--detach` leaves the nodes running instead, their logs in files, and
//! `replikv cluster status|stop|clean` find them again from the cluster's directory
//! (`replikv status` is `replikv cluster status` by a shorter name).
//!
//! The nodes replicate, single-leader: the first node listed (n1) leads a new cluster (and an
//! election replaces it if it dies or is cut off; `replikv failover` moves it), the others follow it,
//! serve reads from their own copy and refuse writes with `-READONLY` naming the leader.
//! `--acks` picks when the leader acknowledges a write: `sync` (once every follower has it
//! durable), `semi-sync:K` (once K followers do) or `async` (once the leader does). The nodes
//! log at start what part they play and what the acks setting does not promise.
//!
//! With `--mode leaderless` (and `--n`, `--w`, `--r`, `--conflicts`, `--read-repair`) every node
//! takes reads and writes instead: a write waits for w of a key's n replicas, a read for r, and
//! the nodes log at start whether w + r > n (a read sees the newest acknowledged write).
//! `--anti-entropy-ms`, `--tombstone-grace-ms`, `--hinted-handoff` and `--sloppy-quorum` write
//! the anti-entropy and handoff settings; a sloppy quorum is logged as a warning at start.
//!
//! Everything a cluster owns lives in one directory, `<data>/<name>/` ([`layout`]):
//!
//! ```text
//! cluster.toml      the cluster file every node reads (ids, addresses, replication settings)
//! pids              "<id> <pid>" per line, while the cluster runs
//! n1.log, n2.log    each node's standard error, appended run after run
//! n1/, n2/          each node's data directory
//! ```
//!
//! Node i of N (1-based) serves RESP on base+i, HTTP on base+100+i, and will take its peers on
//! base+200+i; the base port is 7000 by default, so `redis-cli -p 7001` reaches n1.
//!
//! The modules: [`args`] (the command line), [`layout`] (the directory, the ports, the pid file),
//! [`start`] (spawning, readiness, supervision), [`logs`] (the merged log stream), [`status`]
//! (the table), [`stop`] (stop and clean), [`process`] (signals, liveness, bounded stopping) and
//! [`net`] (a PING probe and a tiny HTTP/1.1 GET client over `std::net`).
//!
//! Every wait is bounded: readiness by [`start::READY_TIMEOUT_SECS`], stopping by
//! [`process::STOP_TIMEOUT_SECS`] then [`process::KILL_TIMEOUT_SECS`], each HTTP request and
//! PING by [`net`]'s timeouts.
//!
//! CAVEATS
//! - n1 leads a new cluster; after that, elections decide: `replikv status` names who leads
//!   now. `start` has no flag for `auto_failover = false` (edit the cluster file for it).
//! - `--nodes 1` starts one node that has no one to replicate to.
//! - The pid file is trusted only as far as Linux's `/proc/<pid>/cmdline` confirms that a pid is
//!   still a `replikv node` with that id; elsewhere a live pid is taken at its word, so a pid
//!   reused by another process after a crash could be signalled by `stop`.
//! - Ports are checked free just before the nodes start; another program can still take one in
//!   between, and then that node fails at start with its log shown.
//! - Unix only: process groups and signals.

pub mod args;
pub mod layout;
pub mod logs;
pub mod net;
pub mod process;
pub mod start;
pub mod status;
pub mod stop;

pub use args::{ClusterArgs, ClusterCommand};

/// Runs a `replikv cluster` subcommand.
pub fn main(args: ClusterArgs) -> anyhow::Result<()> {
    match args.command {
        ClusterCommand::Start(start) => start::main(&start),
        ClusterCommand::Status(status) => status::main(&status),
        ClusterCommand::Stop(which) => stop::stop(&which),
        ClusterCommand::Clean(which) => stop::clean(&which),
    }
}
