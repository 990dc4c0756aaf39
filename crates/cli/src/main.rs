//! `replikv`: one binary for every replikv job.
//!
//! - `replikv node`: run one node (`--config cluster.toml --id n2` for one node of a cluster).
//! - `replikv cluster start|status|stop|clean`: a local cluster of real node processes on
//!   127.0.0.1, one merged log stream, Ctrl-C stops it. The first node listed leads a new
//!   cluster (elections replace it); the others follow the leader and refuse writes with `-READONLY` naming the leader; `--acks` picks when a write
//!   is acknowledged: `sync`, `semi-sync:K` or `async`.
//! - `replikv status`: `replikv cluster status` by a shorter name: each node's role, epoch,
//!   applied LSN, lag in records and seconds, up or down, as a table or JSON (`-o json`); in a
//!   leaderless cluster, n, w, r and each node's coordinated writes, reads and read repairs.
//! - `replikv check`: compare every replica's Merkle digest with the leader's (the node that
//!   leads now) and name the replicas, key ranges and keys that differ, and the nodes down; in a
//!   leaderless cluster (n equal to the nodes), every replica with every other, naming the pairs.
//! - `replikv failover [--to nI] [--dry-run]`: a planned handover of the leadership (FAILOVER),
//!   or what an election would choose if the leader died now.
//! - `replikv fault partition|heal|delay|drop|status`: partitions, delays and drops between the
//!   nodes of a local cluster started with `REPLIKV_TEST_FAULTS=1`, through each node's own
//!   peer links.
//! - `replikv quorum [--n 3 --w W --r R --written 1,2 --down 3]`: the lecture's quorum
//!   exercise, arithmetic only: every (w, r) with w + r > n, and with `--written`, which of them
//!   could have accepted a write on those replicas and which unavailable replicas still let the
//!   next read see it.
//! - `replikv sim`: the deterministic simulator, one seed or a sweep, with faults and checkers.
//! - `replikv bench`: measure a RESP server (replikv or redis-server) with YCSB workloads or
//!   redis-benchmark-like tests: throughput, latency percentiles, errors by kind.
//! - `replikv bench probe`: the physical limits beside the figures: fsync on a directory's disk,
//!   the loopback round trip.
//!
//! Logs go to standard error through `tracing`; `RUST_LOG` chooses what is shown
//! (`RUST_LOG=debug replikv node`), `info` by default (`warn` for `sim`); they are coloured only when standard
//! error is a terminal and `NO_COLOR` is unset. A running node's `CONFIG SET loglevel`
//! replaces that filter with one level (`replikv_server::logging`).

mod bench;
mod check;
mod cluster;
mod conflicts;
mod failover;
mod fault;
mod history;
mod log;
mod output;
mod quorum;
mod sim;

use clap::{Parser, Subcommand};
use replikv_server::config::{NodeArgs, NodeConfig};
use std::process::ExitCode;

/// A replicated key-value store whose replication algorithm is a setting. It speaks the Redis
/// protocol (redis-cli, redis-benchmark and Redis client libraries work unmodified) and
/// HTTP/JSON.
#[derive(Parser)]
#[command(name = "replikv", version, about, long_about = None)]
#[command(after_help = "Logs: set RUST_LOG (error, warn, info, debug, trace); info by default, warn for sim.\n\
Settings: flags > REPLIKV_* environment variables > --config file > defaults.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `replikv verify`'s arguments.
#[derive(clap::Args, Debug)]
struct VerifyArgs {
    /// The history file (JSON lines, from `replikv bench --history`).
    file: std::path::PathBuf,
    /// linearizable, read-your-writes, monotonic-reads or consistent-prefix.
    #[arg(long, default_value = "linearizable")]
    model: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node: a durable key-value store that Redis clients and HTTP can use.
    ///
    /// Ctrl-C or SIGTERM stops it cleanly: it stops accepting, finishes requests in flight,
    /// flushes and exits 0. If the disk fails (an fsync error, a damaged file) it stops at
    /// once, acknowledges nothing more, and exits 1.
    ///
    /// Keys are binary safe and at most 65,534 bytes; values at most 512 MiB (32 MiB in a
    /// cluster, where one change must fit a peer frame).
    Node(NodeArgs),
    /// Measure a RESP server (replikv or redis-server): throughput and latency percentiles.
    ///
    /// A load phase stores the records, then each workload or test runs in turn. Flags follow
    /// redis-benchmark where it has them (-h is the host; help is --help).
    Bench(bench::BenchArgs),
    /// Run a local cluster of real node processes: start, status, stop, clean.
    ///
    /// The first node listed (n1) leads a new cluster; the others follow it and refuse writes
    /// with READONLY naming the leader. When the leader dies or is cut off, the others elect a
    /// new one. --acks picks when a write is acknowledged: sync, semi-sync:K or async.
    Cluster(cluster::ClusterArgs),
    /// Show a local cluster's nodes: role, epoch, applied LSN, lag, up or down.
    ///
    /// The same as `replikv cluster status`. Asks every node of the cluster in DATA/NAME for its
    /// /api/v1/status at once and prints one row per node: id, RESP address, role, epoch,
    /// applied LSN, lag in records and in seconds (a follower's as its leader sees it; "-" when
    /// unknown), up or down, keys, peer links, pid. -o json prints the same as one JSON object.
    /// In a leaderless cluster no node leads: the heading names n, w and r, and each row shows
    /// the node's counters (writes and reads it coordinated, partial writes, read repairs sent
    /// and received) where epoch, applied LSN and lag would be.
    Status(cluster::args::StatusArgs),
    /// Check that every replica of a local cluster holds the same data as the leader (leaderless: as every other).
    ///
    /// The leader is the node that leads now (as replikv status finds it), n1 or another.
    /// Each node's Merkle digest (GET /api/v1/digest: BLAKE3 over 256 key ranges) is compared
    /// with the leader's once all are at the same log position (waits up to --timeout-secs).
    /// Prints each replica's verdict, and for one that differs the key ranges and keys that
    /// differ; a node that is down is named and the others are still compared. Exit status:
    /// 0 when every replica that answered holds the same data as the leader (nodes down or
    /// not), 1 when one differs, 2 when the check could not be made (no leader answered, a
    /// replica that is up stayed at another log position or gave no digest within
    /// --timeout-secs, no cluster file).
    ///
    /// In a leaderless cluster (mode = "leaderless" in the cluster file) no node leads: every
    /// replica is compared with every other, and every pair that differs is named with its key
    /// ranges and keys. That needs every node to hold every key, so check refuses (exit 2) a
    /// leaderless cluster whose n is fewer than its nodes: their whole-node digests differ by
    /// design. It waits (up to --timeout-secs) until no node has a write in flight, and exits 2
    /// if one still has. Without anti-entropy, replicas that missed a write converge only when
    /// a read of the key repairs them: check exiting 1 after a write that reached w of n
    /// replicas is the expected answer until then.
    ///
    /// In a multi-leader cluster every node of every datacenter is compared with every other,
    /// once no datacenter's leader has records on their way (to another datacenter or to a
    /// follower) and the digests agree, or --timeout-secs passed; a digest there covers the
    /// clients' keys, not each datacenter's own conflict log.
    Check(check::CheckArgs),
    /// Move a local cluster's leadership to a follower (a planned handover), or --dry-run.
    ///
    /// Asks the leader to FAILOVER: it holds writes (clients pause), lets the target (--to, or
    /// the most up-to-date follower) catch up, hands over and follows it; no acknowledged write
    /// is lost. --dry-run changes nothing and says which follower an election would choose if
    /// the leader died now, and which records it lacks (acknowledged writes, in async mode).
    Failover(failover::FailoverArgs),
    /// Partition, delay or drop messages between a local cluster's nodes, for tests.
    ///
    /// The nodes must run with REPLIKV_TEST_FAULTS=1 (`REPLIKV_TEST_FAULTS=1 replikv cluster
    /// start` passes it to each): their peer links then obey a fault table that this command
    /// sets on every node through PUT /api/v1/test/faults. `partition n1` blocks n1's messages
    /// and everyone's to n1 (--one-way: only n1's); `delay n2 50ms` and `drop n3 0.3` act on
    /// messages to and from the node; `heal` clears every fault; `status` prints each table.
    /// `partition dc2` cuts a multi-leader cluster's datacenter dc2 from the others.
    Fault(fault::FaultArgs),
    /// Print a multi-leader cluster's conflict log, as one node holds it.
    ///
    /// Every conflict a datacenter's leader detected (a change from another datacenter that had
    /// not seen this one's current version of the key): when, the key, the datacenter whose
    /// change met it, the rule that resolved it (lww, merge or app), and the writes on each
    /// side with their origins and versions, including what the rule discarded. A key of the
    /// form table.row.column is also printed as the lecture's record (table, key, column,
    /// old_value, new_value, transaction). The same as REPLIKV.CONFLICTS \[prefix\] \[COUNT n\] and
    /// GET /api/v1/conflicts.
    Conflicts(conflicts::ConflictsArgs),
    /// Read a node's replication log as the lecture's logical log (replikv log show).
    ///
    /// Each record with its position, epoch and transaction (the id of the client request it
    /// belongs to, where the transaction begins and ends), and each change with its key's old
    /// and new value and version. A key of the form table.row.column is printed as the
    /// lecture's record (table, key, column, old_value, new_value, transaction).
    Log {
        /// What to do with the log.
        #[command(subcommand)]
        command: log::LogCommand,
    },
    /// The lecture's quorum arithmetic: which (w, r) read the newest write, with which replicas
    /// down.
    ///
    /// For --n replicas (3 by default) it lists every (w, r) with w + r > n, and how many
    /// replicas down writes and reads tolerate. With --written 1,2 (the replicas that hold the last accepted
    /// write) it says which configurations could have accepted that write (w <= 2), and for each
    /// the sets of unavailable replicas with which the next read still succeeds: at least r
    /// replicas up, and any r of them include one that holds the write (the read keeps the
    /// newest version among its answers, but does not choose who answers). --down 3 asks about
    /// one set; --w and --r keep one configuration, and say what goes wrong if w + r <= n.
    /// Talks to no node. -o json prints the same as one JSON object.
    Quorum(quorum::QuorumArgs),
    /// Judge a history `replikv bench --history FILE` recorded, with the simulator's checkers.
    ///
    /// --model linearizable: every key's operations can be ordered consistently with real
    /// time. read-your-writes, monotonic-reads, consistent-prefix: every client judged as a
    /// session with that guarantee, from the history alone. Prints the verdict and, when the
    /// model fails, the first violating operations. Exit status: 0 passes, 1 fails, 2 could not
    /// be judged (a malformed file, a check that gave up).
    Verify(VerifyArgs),
    /// Run the deterministic simulator: the real replicas on a virtual network, disk and clock,
    /// with faults, concurrent clients and checkers.
    ///
    /// One seed reproduces a run exactly. Prints each run's operations, faults and verdicts; on
    /// a failure, the seed, the end of its trace and the command that replays it. Exits 1 if
    /// any check failed. A single-leader run checks: no step or restart failed and no read
    /// returned a value no client wrote; no acknowledged write lost in silence (where the mode
    /// does not promise failover, a lost write must be in a rollback file); replicas converge;
    /// at most one leader per epoch; acknowledged writes durable on enough copies; followers
    /// serve only what a leader held durably; leader operations linearizable in sync mode;
    /// with --transactions, no replica holds part of a transaction. A
    /// leaderless or multi-leader run checks its own (see --mode).
    Sim(sim::SimArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Sim(_)) {
        init_sim_logs();
    } else {
        init_logs("info");
    }
    let checking = matches!(cli.command, Command::Check(_));
    if checking {
        // A report that could not be written is a check that could not be made.
        output::fail_with(check::exit_status(&anyhow::anyhow!("standard output failed")));
    }
    let result = match cli.command {
        Command::Node(args) => run_node(args),
        Command::Bench(args) => bench::main(args),
        Command::Cluster(args) => cluster::main(args),
        Command::Status(args) => cluster::status::main(&args),
        Command::Check(args) => check::main(&args),
        Command::Fault(args) => fault::main(&args),
        Command::Conflicts(args) => conflicts::main(&args),
        Command::Log { command } => log::main(&command),
        Command::Failover(args) => failover::main(&args),
        Command::Quorum(args) => quorum::main(&args),
        Command::Verify(args) => match history::verify(&args.file, &args.model) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => {
                eprintln!("replikv: {e:#}");
                return ExitCode::from(2); // could not judge, as `check` says
            }
        },
        Command::Sim(args) => sim::main(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("replikv: {e:#}");
            // `check` says "differs" (1) apart from "could not check" (2), as diff does.
            ExitCode::from(if checking { check::exit_status(&e) } else { 1 })
        }
    }
}

/// Sends logs to standard error, filtered by `RUST_LOG` or else `default_level`, and lets a
/// node's `CONFIG SET loglevel` replace that filter (see `replikv_server::logging`).
fn init_logs(default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // No hint means the filter may let anything through.
    let current = filter.max_level_hint().unwrap_or(tracing::level_filters::LevelFilter::TRACE);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file or a cluster's merged stream stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none())
        .with_filter_reloading();
    let reload = builder.reload_handle();
    builder.init();
    replikv_server::logging::install(
        current,
        Box::new(move |level| {
            reload.reload(EnvFilter::default().add_directive(level.into())).map_err(|e| format!("the log filter: {e}"))
        }),
    );
}

/// The simulator's logs: warnings only (its replicas log as real ones do, thousands of times a
/// second), stamped with the run's virtual time rather than the wall clock, so that one seed
/// prints the same text every time.
fn init_sim_logs() {
    use tracing_subscriber::EnvFilter;
    struct VirtualTime;
    impl tracing_subscriber::fmt::time::FormatTime for VirtualTime {
        fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
            write!(w, "t={}ms", replikv_sim::virtual_now_ms())
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_timer(VirtualTime)
        .init();
}

fn run_node(args: NodeArgs) -> anyhow::Result<()> {
    let config = NodeConfig::resolve(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(replikv_server::node::run(config, replikv_server::node::shutdown_signal()))?;
    Ok(())
}
