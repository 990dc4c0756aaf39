//! `replikv sim`: run the deterministic simulator over one seed or a sweep, print what each
//! run did and what the checkers found, and on a failure the seed, the end of its trace and
//! the command that replays it exactly. Exits 1 if any checker failed.

use crate::output::outln;
use anyhow::{bail, Result};
use clap::Args;
use replikv_core::single_leader::Canary;
use replikv_server::config::{Acks, ReplicationMode};
use replikv_sim::faults::Faults;
use replikv_sim::run::{run, swarm_faults, Report, Verdict};
use replikv_sim::world::SimConfig;

/// Seeds one sweep runs at most.
pub const SEEDS_MAX: u64 = 1_000_000;

/// Run the deterministic simulator: the real replicas on a virtual network, disk and clock.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
replikv sim --acks sync --seed 7                    # one run; its own fault mix (swarm)\n  \
replikv sim --acks sync --seeds 0..500              # a sweep\n  \
replikv sim --acks async --seed 7 --faults drop=0.05,crash=0.001   # these faults only\n  \
replikv sim --seed 7 --faults ''                    # no faults at all\n\n\
Faults (rates per message, or per virtual millisecond): drop, dup, delay=MIN..MAX (ms), partition,\n\
crash, pause, skew (ms), drift (ppm). Without --faults each seed draws its own mix.")]
pub struct SimArgs {
    /// The replication strategy (only single-leader so far).
    #[arg(long, default_value = "single-leader")]
    pub mode: ReplicationMode,
    /// When a write is acknowledged: sync, semi-sync:K or async.
    #[arg(long, default_value = "sync", value_name = "sync|semi-sync:K|async")]
    pub acks: Acks,
    /// One seed.
    #[arg(long, conflicts_with = "seeds")]
    pub seed: Option<u64>,
    /// A sweep: seeds A..B (B excluded).
    #[arg(long, value_name = "A..B", value_parser = parse_seeds)]
    pub seeds: Option<(u64, u64)>,
    /// Virtual milliseconds of the safety phase (faults and clients).
    #[arg(long, default_value_t = 5_000, value_name = "MS")]
    pub steps: u64,
    /// Virtual milliseconds the quiet phase may take to converge.
    #[arg(long, default_value_t = 20_000, value_name = "MS")]
    pub quiet_ms: u64,
    /// The faults, as name=value,... (see below); omitted: each seed draws its own.
    #[arg(long)]
    pub faults: Option<String>,
    /// Nodes (node 1 leads first; elections decide after that).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Turn automatic failover off: node 1 leads for the whole run.
    #[arg(long)]
    pub no_failover: bool,
    /// Concurrent clients.
    #[arg(long, default_value_t = 5)]
    pub clients: usize,
    /// Keys the clients share.
    #[arg(long, default_value_t = 3)]
    pub keys: usize,
    /// Bytes of replication log each node keeps (small, so that snapshots happen).
    #[arg(long, default_value_t = 8192)]
    pub log_retain_bytes: u64,
    /// Print every run's line, not only failures and the total.
    #[arg(long, short)]
    pub verbose: bool,
    /// Plant a bug in the replicas, to see the checkers catch it (for testing the simulator).
    #[arg(long, value_enum, default_value_t = CanaryArg::None, hide = true)]
    pub canary: CanaryArg,
}

/// `--canary`: a planted bug.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum CanaryArg {
    /// None.
    None,
    /// The leader answers writes before their fsync.
    AckBeforeFsync,
    /// Followers apply each batch of records in reverse.
    FollowerOutOfOrder,
    /// Timed-out acknowledgements are answered OK.
    SilentAsync,
    /// Snapshots leave out a key per chunk.
    SnapshotSkipsKey,
    /// Leaders answer reads without confirming they still lead.
    UnconfirmedReads,
    /// No fencing by epoch, no step-down.
    NoFencing,
}

impl From<CanaryArg> for Canary {
    fn from(c: CanaryArg) -> Canary {
        match c {
            CanaryArg::None => Canary::None,
            CanaryArg::AckBeforeFsync => Canary::AckBeforeFsync,
            CanaryArg::FollowerOutOfOrder => Canary::FollowerOutOfOrder,
            CanaryArg::SilentAsync => Canary::SilentAsync,
            CanaryArg::SnapshotSkipsKey => Canary::SnapshotSkipsKey,
            CanaryArg::UnconfirmedReads => Canary::UnconfirmedReads,
            CanaryArg::NoFencing => Canary::NoFencing,
        }
    }
}

/// `A..B` into (A, B).
fn parse_seeds(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once("..").ok_or_else(|| format!("{s:?}: expected A..B"))?;
    let (a, b): (u64, u64) = match (a.parse(), b.parse()) {
        (Ok(a), Ok(b)) if a < b => (a, b),
        _ => return Err(format!("{s:?}: expected A..B with A < B")),
    };
    if b - a > SEEDS_MAX {
        return Err(format!("{s:?}: at most {SEEDS_MAX} seeds per sweep"));
    }
    Ok((a, b))
}

/// Runs `replikv sim`.
pub fn main(args: &SimArgs) -> Result<()> {
    if !(2..=7).contains(&args.nodes) || args.clients == 0 || args.keys == 0 {
        bail!("--nodes must be 2 to 7, --clients and --keys at least 1");
    }
    let followers = args.nodes - 1;
    let acks_needed = match args.acks {
        Acks::Sync => followers,
        Acks::SemiSync(k) if (1..=followers).contains(&k) => k,
        Acks::SemiSync(k) => bail!("--acks semi-sync:{k}: K must be 1 to {followers} with {} nodes", args.nodes),
        Acks::Async => 0,
    };
    let fixed = match &args.faults {
        Some(spec) => Some(Faults::parse(spec).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let (first, end) = args.seeds.unwrap_or_else(|| {
        let seed = args.seed.unwrap_or(0);
        (seed, seed + 1)
    });
    if Canary::from(args.canary) != Canary::None {
        eprintln!("replikv sim: canary {:?} planted: failures are expected", args.canary);
    }
    let mut failed = Vec::new();
    let mut gave_up = 0;
    let (mut ops, mut crashes, mut partitions) = (0, 0, 0);
    let (mut leaderships, mut rolled_back, mut acked_rolled_back) = (0, 0, 0);
    let mut failover_ms: Vec<u64> = Vec::new();
    for seed in first..end {
        let config = SimConfig {
            seed,
            nodes: args.nodes,
            failover: !args.no_failover,
            acks_needed,
            acks_label: args.acks.to_string(),
            clients: args.clients,
            keys: args.keys,
            safety_ms: args.steps,
            quiet_ms: args.quiet_ms,
            faults: fixed.clone().unwrap_or_else(|| swarm_faults(seed)),
            log_retain_bytes: args.log_retain_bytes,
            canary: args.canary.into(),
        };
        let report = run(config);
        ops += report.judgement.run.ops;
        crashes += report.judgement.run.crashes;
        partitions += report.judgement.run.partitions;
        leaderships += report.counts.leaderships;
        rolled_back += report.counts.rolled_back;
        acked_rolled_back += report.counts.acknowledged_rolled_back;
        failover_ms.extend(&report.counts.failover_ms);
        gave_up += report.judgement.verdicts.iter().filter(|(_, v)| matches!(v, Verdict::GaveUp(_))).count();
        if report.failed() {
            print_failure(&report);
            failed.push(seed);
        } else if args.verbose || end - first == 1 {
            outln!("{}", line(&report));
            for (name, v) in &report.judgement.verdicts {
                if let Verdict::GaveUp(why) = v {
                    outln!("  {name} gave up: {why}");
                }
            }
        }
    }
    let seeds = end - first;
    outln!(
        "{seeds} seed(s), acks {}: {ops} operations, {crashes} crashes, {partitions} partitions; {} failed, {gave_up} verdict(s) gave up",
        args.acks,
        failed.len()
    );
    outln!(
        "failover: {leaderships} leaderships; {rolled_back} changes cut to rollback logs ({acked_rolled_back} of them \
         acknowledged writes); {}",
        failover_summary(&mut failover_ms)
    );
    if !failed.is_empty() {
        bail!("checks failed for seed(s) {failed:?}");
    }
    Ok(())
}

/// The times from a leader's crash to the next acknowledged write, as median and p99.
fn failover_summary(ms: &mut [u64]) -> String {
    if ms.is_empty() {
        return "no leader crash was followed by an acknowledged write".into();
    }
    ms.sort_unstable();
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    format!(
        "leader crash to next acknowledged write over {} crashes: median {} ms, p99 {} ms, max {} ms (virtual; election \
         timeout {}..={} ms)",
        ms.len(),
        at(0.5),
        at(0.99),
        ms[ms.len() - 1],
        replikv_sim::world::ELECTION_TIMEOUT_MS,
        2 * replikv_sim::world::ELECTION_TIMEOUT_MS
    )
}

/// One run as a line.
fn line(r: &Report) -> String {
    let c = &r.judgement.run;
    let verdicts: Vec<String> = r
        .judgement
        .verdicts
        .iter()
        .map(|(name, v)| match v {
            Verdict::Pass => format!("{name}: ok"),
            Verdict::Fail(_) => format!("{name}: FAILED"),
            Verdict::GaveUp(_) => format!("{name}: gave up"),
            Verdict::NotApplicable => format!("{name}: n/a"),
        })
        .collect();
    format!(
        "seed {}: {} ops ({} ok, {} indeterminate, {} refused); {} msgs ({} dropped, {} duplicated), {} partitions, \
         {} crashes, {} pauses; {}",
        r.seed,
        c.ops,
        c.ok,
        c.indeterminate,
        c.refused,
        c.messages,
        c.dropped,
        c.duplicated,
        c.partitions,
        c.crashes,
        c.pauses,
        verdicts.join(", ")
    )
}

/// A failed run: its line, why each failing checker failed, the trace's end, the replay.
fn print_failure(r: &Report) {
    outln!("{}", line(r));
    for (name, v) in &r.judgement.verdicts {
        if let Verdict::Fail(why) = v {
            outln!("  {name}: {why}");
        }
    }
    outln!("  last {} trace lines:", r.judgement.trace_tail.len());
    for l in &r.judgement.trace_tail {
        outln!("    {l}");
    }
    outln!("  replay: {}", r.replay());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_seeds("3..10"), Ok((3, 10)));
        assert!(parse_seeds("10..3").is_err());
        assert!(parse_seeds("7").is_err());
        assert!(parse_seeds("0..2000000").unwrap_err().contains("at most"));
    }
}
