//! The command line of `replikv bench` and the plan it resolves to.
//!
//! Flags follow redis-benchmark where it has them (`-h`, `-p`, `-c`, `-n`, `-d`, `-r`, `-P`, `-t`),
//! so `-h` is the host, not help: help is `--help` only. [`Plan::from_args`] checks every number
//! against its limit and turns the flags into what a run needs: the endpoints, the phases in
//! order, and how each phase is bounded.
//!
//! CAVEATS
//! - Endpoints are `host:port` strings resolved when connecting; nothing checks them here.

use super::dist::{Distribution, RECORDS_MAX};
use super::probe::ProbeArgs;
use super::report::Settings;
use super::workload::{Mix, Test, Workload};
use clap::{Args, Subcommand};

/// The most connections a run may open (per endpoint); each keeps its own histograms.
pub const CONNECTIONS_MAX: usize = 4096;
/// The deepest pipeline.
pub const PIPELINE_MAX: usize = 4096;
/// The largest value, in bytes.
pub const VALUE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// The longest `--duration` accepted, in seconds (a year), so that every time sum stays in range.
const DURATION_SECS_MAX: f64 = 365.0 * 24.0 * 3600.0;

/// Operations per phase when neither `-n` nor `--duration` is given.
pub const OPS_DEFAULT: u64 = 100_000;

/// Measure a RESP server (replikv or redis-server): throughput and latency percentiles.
#[derive(Args, Debug)]
#[command(disable_help_flag = true, args_conflicts_with_subcommands = true)]
#[command(after_help = "Examples:\n  \
replikv bench -p 6380 --workload a,b,c\n  \
replikv bench -t set,get -n 1000000 -P 16\n  \
replikv bench --workload a --rate 20000 --duration 30\n  \
replikv bench --endpoints 127.0.0.1:6379,127.0.0.1:6389 --workload b   # follower reads\n  \
replikv bench probe --dir ./data")]
pub struct BenchArgs {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Another bench job instead of a run.
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    /// Server host.
    #[arg(short = 'h', long, default_value = "127.0.0.1")]
    pub host: String,
    /// Server port.
    #[arg(short = 'p', long, default_value_t = 6380)]
    pub port: u16,
    /// Several servers, host:port,...: writes go to the first, reads round-robin over all.
    #[arg(long, value_delimiter = ',', value_name = "HOST:PORT,...")]
    pub endpoints: Vec<String>,
    /// Writes round-robin over every endpoint too, not the first only (a leaderless cluster,
    /// where every node coordinates writes).
    #[arg(long)]
    pub spread_writes: bool,
    /// YCSB workloads to run, one after the other (a is the default when no -t is given).
    #[arg(long, value_enum, value_delimiter = ',', conflicts_with = "tests")]
    pub workload: Vec<Workload>,
    /// redis-benchmark-like tests to run, one after the other.
    #[arg(short = 't', long = "tests", value_enum, value_delimiter = ',')]
    pub tests: Vec<Test>,
    /// Key distribution [default: zipfian for workloads, latest for d, uniform for tests].
    #[arg(long, value_enum)]
    pub distribution: Option<Distribution>,
    /// Records loaded before the run and drawn from.
    #[arg(short = 'r', long = "records", default_value_t = 100_000)]
    pub records: u64,
    /// Value size in bytes.
    #[arg(short = 'd', long = "value-size", default_value_t = 100)]
    pub value_bytes: usize,
    /// Connections.
    #[arg(short = 'c', long = "connections", default_value_t = 50)]
    pub connections: usize,
    /// Pipeline depth: operations sent per connection before reading their replies.
    #[arg(short = 'P', long = "pipeline", default_value_t = 1)]
    pub pipeline: usize,
    /// Operations per phase [default: 100000, or unbounded with --duration].
    #[arg(short = 'n', long = "requests")]
    pub ops: Option<u64>,
    /// Seconds per phase (with -n: whichever ends first).
    #[arg(long = "duration", value_name = "SECS")]
    pub duration_s: Option<f64>,
    /// Fixed offered load in operations per second; latency counts from intended start times.
    #[arg(long = "rate", value_name = "OPS")]
    pub rate_ops_s: Option<f64>,
    /// Send WAIT N TIMEOUT_MS after every write; a reply under N counts as a WAIT_SHORT error.
    #[arg(long, value_name = "N,TIMEOUT_MS", value_parser = parse_wait)]
    pub wait: Option<WaitSpec>,
    /// Seed of every random draw (keys, operation mix, values).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Record a history instead of measuring: a few clients read and write a few keys across
    /// the endpoints, each a session moving between nodes, and every operation (invoke and
    /// completion times, node, value) goes to FILE as JSON lines, for `replikv verify`. -n
    /// operations in all (2000 by default).
    #[arg(long, value_name = "FILE")]
    pub history: Option<std::path::PathBuf>,
    /// With --history: clients (sessions), 1 to 64.
    #[arg(long, default_value_t = 4)]
    pub history_clients: usize,
    /// With --history: keys the clients read and write.
    #[arg(long, default_value_t = 3)]
    pub history_keys: usize,
    /// With --history: every session's guarantee (REPLIKV.GUARANTEE): none, read-your-writes,
    /// monotonic-reads, consistent-prefix or all.
    #[arg(long, default_value = "none")]
    pub guarantee: String,
    /// Print one JSON document instead of the table (and no progress bar).
    #[arg(long)]
    pub json: bool,
    /// Skip the load phase (the records are already there).
    #[arg(long)]
    pub no_load: bool,
    /// Timeout per round (up to -P pipelined requests) in milliseconds: a connection that
    /// waits longer for a round's replies stops.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
}

/// Bench jobs other than a run.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Measure the physical limits: fsync latency on a directory's disk, loopback round trip.
    Probe(ProbeArgs),
}

/// `--wait N,TIMEOUT_MS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitSpec {
    /// Replicas each write must reach.
    pub replicas: u64,
    /// How long `WAIT` may block, in milliseconds; under the request timeout (so not 0, which
    /// Redis reads as forever).
    pub timeout_ms: u64,
}

/// Parses `N,TIMEOUT_MS`.
pub fn parse_wait(s: &str) -> Result<WaitSpec, String> {
    let (n, ms) = s.split_once(',').ok_or("expected N,TIMEOUT_MS")?;
    let replicas = n.trim().parse().map_err(|_| format!("replicas {n:?} is not a number"))?;
    let timeout_ms = ms.trim().parse().map_err(|_| format!("timeout {ms:?} is not a number of milliseconds"))?;
    if timeout_ms == 0 {
        return Err("a WAIT timeout of 0 blocks forever; give milliseconds".into());
    }
    Ok(WaitSpec { replicas, timeout_ms })
}

/// One phase of a run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PhaseSpec {
    /// Operations drawn; `None` for the load phase, which stores every record once.
    pub mix: Option<Mix>,
    /// The key distribution.
    pub distribution: Distribution,
    /// `workload a`, `test set`, or `load`.
    pub label: (&'static str, &'static str),
}

/// Everything a run needs, checked.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Endpoints, the writer first.
    pub endpoints: Vec<String>,
    /// Writes go round-robin over every endpoint, not to the first.
    pub spread_writes: bool,
    /// Phases in order, the load phase first unless skipped.
    pub phases: Vec<PhaseSpec>,
    /// Records.
    pub records: u64,
    /// Bytes per value.
    pub value_bytes: usize,
    /// Connections.
    pub connections: usize,
    /// Pipeline depth.
    pub pipeline: usize,
    /// Operations per phase (`u64::MAX` when only a duration bounds it).
    pub ops: u64,
    /// Seconds per phase, if bounded by time.
    pub duration_s: Option<f64>,
    /// Offered load, if fixed.
    pub rate_ops_s: Option<f64>,
    /// `WAIT` after writes.
    pub wait: Option<WaitSpec>,
    /// Seed.
    pub seed: u64,
    /// Per-request timeout in milliseconds.
    pub timeout_ms: u64,
    /// JSON output.
    pub json: bool,
}

impl Plan {
    /// Checks `args` and resolves them into a plan.
    pub fn from_args(args: &BenchArgs) -> Result<Plan, String> {
        check("-c", args.connections as u64, 1, CONNECTIONS_MAX as u64)?;
        check("-P", args.pipeline as u64, 1, PIPELINE_MAX as u64)?;
        check("-r", args.records, 1, RECORDS_MAX)?;
        check("-d", args.value_bytes as u64, 0, VALUE_BYTES_MAX as u64)?;
        check("--timeout-ms", args.timeout_ms, 1, u64::MAX)?;
        if args.duration_s.is_some_and(|d| !(d > 0.0 && d <= DURATION_SECS_MAX)) {
            return Err(format!("--duration must be a positive number of seconds, at most {DURATION_SECS_MAX}"));
        }
        if args.rate_ops_s.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return Err("--rate must be a positive number of operations per second".into());
        }
        if let Some(wait) = args.wait.filter(|w| w.timeout_ms >= args.timeout_ms) {
            return Err(format!(
                "--timeout-ms {} must exceed the WAIT timeout {}: a WAIT may block that long",
                args.timeout_ms, wait.timeout_ms
            ));
        }
        let ops = match (args.ops, args.duration_s) {
            (Some(n), _) => n,
            (None, Some(_)) => u64::MAX,
            (None, None) => OPS_DEFAULT,
        };
        Ok(Plan {
            endpoints: endpoints(args),
            spread_writes: args.spread_writes,
            phases: phases(args),
            records: args.records,
            value_bytes: args.value_bytes,
            connections: args.connections,
            pipeline: args.pipeline,
            ops,
            duration_s: args.duration_s,
            rate_ops_s: args.rate_ops_s,
            wait: args.wait,
            seed: args.seed,
            timeout_ms: args.timeout_ms,
            json: args.json,
        })
    }

    /// The settings echoed in the report.
    pub fn settings(&self) -> Settings {
        Settings {
            endpoints: self.endpoints.clone(),
            connections: self.connections,
            pipeline: self.pipeline,
            records: self.records,
            value_bytes: self.value_bytes,
            ops_per_phase: (self.ops != u64::MAX).then_some(self.ops),
            duration_s: self.duration_s,
            rate_ops_s: self.rate_ops_s,
            wait: self.wait.map(|w| format!("{},{}", w.replicas, w.timeout_ms)),
            seed: self.seed,
            timeout_ms: self.timeout_ms,
            load: self.phases.first().is_some_and(|p| p.mix.is_none()),
        }
    }
}

/// An error unless `min <= value <= max`.
fn check(flag: &str, value: u64, min: u64, max: u64) -> Result<(), String> {
    if value < min || value > max {
        return Err(format!("{flag} {value} is outside {min}..={max}"));
    }
    Ok(())
}

/// `--endpoints`, or `-h:-p`.
fn endpoints(args: &BenchArgs) -> Vec<String> {
    if args.endpoints.is_empty() {
        vec![format!("{}:{}", args.host, args.port)]
    } else {
        args.endpoints.iter().map(|e| e.trim().to_string()).collect()
    }
}

/// The load phase (unless skipped), then the tests or the workloads.
fn phases(args: &BenchArgs) -> Vec<PhaseSpec> {
    let mut phases = Vec::new();
    if !args.no_load {
        phases.push(PhaseSpec { mix: None, distribution: Distribution::Uniform, label: ("load", "") });
    }
    for &test in &args.tests {
        let distribution = args.distribution.unwrap_or(Distribution::Uniform);
        phases.push(PhaseSpec { mix: Some(test.mix()), distribution, label: ("test", test.name()) });
    }
    let workloads = if args.workload.is_empty() && args.tests.is_empty() { &[Workload::A][..] } else { &args.workload };
    for &workload in workloads {
        let distribution = args.distribution.unwrap_or(workload.default_distribution());
        phases.push(PhaseSpec { mix: Some(workload.mix()), distribution, label: ("workload", workload.name()) });
    }
    phases
}

impl PhaseSpec {
    /// The phase's name in reports: `load`, `workload a`, `test set`.
    pub fn name(&self) -> String {
        match self.label {
            (kind, "") => kind.to_string(),
            (kind, name) => format!("{kind} {name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Subcommand)]
    enum Top {
        Bench(BenchArgs),
    }

    fn plan(line: &str) -> Result<Plan, String> {
        let argv = std::iter::once("replikv").chain(line.split_whitespace());
        let Top::Bench(args) = Cli::try_parse_from(argv).map_err(|e| e.to_string())?.command;
        Plan::from_args(&args)
    }

    #[test]
    fn defaults_follow_redis_benchmark_and_ycsb() {
        let p = plan("bench").unwrap();
        assert_eq!(p.endpoints, vec!["127.0.0.1:6380"]);
        assert_eq!((p.records, p.value_bytes, p.connections, p.pipeline, p.ops), (100_000, 100, 50, 1, 100_000));
        let names: Vec<String> = p.phases.iter().map(PhaseSpec::name).collect();
        assert_eq!(names, ["load", "workload a"]);
        assert_eq!(p.phases[1].distribution, Distribution::Zipfian);
    }

    #[test]
    fn dash_h_is_the_host_and_tests_run_in_order() {
        let p = plan("bench -h 10.0.0.2 -p 7000 -t set,get --no-load -n 5").unwrap();
        assert_eq!(p.endpoints, vec!["10.0.0.2:7000"]);
        let names: Vec<String> = p.phases.iter().map(PhaseSpec::name).collect();
        assert_eq!(names, ["test set", "test get"]);
        assert!(p.phases.iter().all(|ph| ph.distribution == Distribution::Uniform));
        assert_eq!(p.ops, 5);
    }

    #[test]
    fn workload_d_reads_latest_unless_told_otherwise() {
        let p = plan("bench --workload d,a --no-load").unwrap();
        assert_eq!(p.phases[0].distribution, Distribution::Latest);
        assert_eq!(p.phases[1].distribution, Distribution::Zipfian);
        let p = plan("bench --workload d --distribution uniform").unwrap();
        assert_eq!(p.phases[1].distribution, Distribution::Uniform);
    }

    #[test]
    fn duration_alone_leaves_the_count_unbounded() {
        assert_eq!(plan("bench --duration 2").unwrap().ops, u64::MAX);
        assert_eq!(plan("bench --duration 2 -n 10").unwrap().ops, 10);
    }

    #[test]
    fn bad_values_are_refused() {
        for line in [
            "bench -c 0",
            "bench -P 0",
            "bench -r 0",
            "bench --rate 0",
            "bench --duration -1",
            "bench --wait 1",
            "bench --wait x,10",
            "bench --wait 1,5000",
            "bench --wait 1,0",
            "bench -c 5000",
            "bench --workload a -t set",
            "bench --workload e",
        ] {
            assert!(plan(line).is_err(), "{line} accepted");
        }
    }

    #[test]
    fn wait_and_endpoints_parse() {
        let p = plan("bench --wait 2,100 --endpoints 127.0.0.1:1,127.0.0.1:2").unwrap();
        assert_eq!(p.wait, Some(WaitSpec { replicas: 2, timeout_ms: 100 }));
        assert_eq!(p.endpoints, vec!["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!(p.settings().wait.as_deref(), Some("2,100"));
    }
}
