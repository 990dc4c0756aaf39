//! `replikv`: one binary for every replikv job.
//!
//! - `replikv node`: run one node (`--config cluster.toml --id n2` for one node of a cluster).
//! - `replikv cluster start|status|stop|clean`: a local cluster of real node processes on
//!   127.0.0.1, one merged log stream, Ctrl-C stops it. Replication is not implemented yet
//!   (issue 4): each node runs standalone.
//! - `replikv bench`: measure a RESP server (replikv or redis-server) with YCSB workloads or
//!   redis-benchmark-like tests: throughput, latency percentiles, errors by kind.
//! - `replikv bench probe`: the physical limits beside the figures: fsync on a directory's disk,
//!   the loopback round trip.
//!
//! Logs go to standard error through `tracing`; `RUST_LOG` chooses what is shown
//! (`RUST_LOG=debug replikv node`), `info` by default; they are coloured only when standard
//! error is a terminal and `NO_COLOR` is unset.

mod bench;
mod cluster;

use clap::{Parser, Subcommand};
use replikv_server::config::{NodeArgs, NodeConfig};
use std::process::ExitCode;

/// A replicated key-value store whose replication algorithm is a setting. It speaks the Redis
/// protocol (redis-cli, redis-benchmark and Redis client libraries work unmodified) and
/// HTTP/JSON.
#[derive(Parser)]
#[command(name = "replikv", version, about, long_about = None)]
#[command(after_help = "Logs: set RUST_LOG (error, warn, info, debug, trace); info by default.\n\
Settings: flags > REPLIKV_* environment variables > --config file > defaults.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node: a durable key-value store that Redis clients and HTTP can use.
    ///
    /// Ctrl-C or SIGTERM stops it cleanly: it stops accepting, finishes requests in flight,
    /// flushes and exits 0. If the disk fails (an fsync error, a damaged file) it stops at
    /// once, acknowledges nothing more, and exits 1.
    Node(NodeArgs),
    /// Measure a RESP server (replikv or redis-server): throughput and latency percentiles.
    ///
    /// A load phase stores the records, then each workload or test runs in turn. Flags follow
    /// redis-benchmark where it has them (-h is the host; help is --help).
    Bench(bench::BenchArgs),
    /// Run a local cluster of real node processes: start, status, stop, clean.
    ///
    /// Replication is not implemented yet (issue 4): the nodes share one cluster file and know
    /// their peers, but each runs standalone.
    Cluster(cluster::ClusterArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file or a cluster's merged stream stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none())
        .init();
    let result = match cli.command {
        Command::Node(args) => run_node(args),
        Command::Bench(args) => bench::main(args),
        Command::Cluster(args) => cluster::main(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("replikv: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_node(args: NodeArgs) -> anyhow::Result<()> {
    let config = NodeConfig::resolve(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(replikv_server::node::run(config, replikv_server::node::shutdown_signal()))?;
    Ok(())
}
