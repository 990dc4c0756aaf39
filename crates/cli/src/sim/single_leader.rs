//! `replikv sim --mode single-leader` (the default): a sweep of single-leader runs, and its
//! totals: operations, crashes, partitions, leaderships, rolled-back changes, failover times;
//! with `--follower-reads`, what the sessions of each guarantee saw (the anomalies of
//! replication lag as figures: how many reads could have shown each, and how many did).

use super::{fixed_faults, refuse_flags, sweep, SimArgs};
use crate::output::outln;
use anyhow::{bail, Result};
use replikv_core::single_leader::Canary;
use replikv_server::config::Acks;
use replikv_sim::check::sessions::Figures;
use replikv_sim::run::{run, swarm_faults};
use replikv_sim::session::Guarantee;
use replikv_sim::world::SimConfig;
use std::collections::BTreeMap;

/// Nodes when `--nodes` is not given.
const NODES_DEFAULT: usize = 3;

/// Bytes of replication log each node keeps when `--log-retain-bytes` is not given.
const LOG_RETAIN_BYTES_DEFAULT: u64 = 8192;

/// Runs `replikv sim --mode single-leader`.
pub fn main(args: &SimArgs) -> Result<()> {
    let fsync = ("--fsync", args.fsync.is_some());
    let anti_entropy = ("--anti-entropy-ms", args.anti_entropy_ms.is_some());
    let sessions = ("--sessions", args.sessions);
    refuse_flags(args.leaderless.flags().into_iter().chain([fsync, anti_entropy, sessions]), "leaderless")?;
    refuse_flags(super::multi_leader_flags(args), "multi-leader")?;
    let nodes = args.nodes.unwrap_or(NODES_DEFAULT);
    if !(2..=7).contains(&nodes) {
        bail!("--nodes must be 2 to 7");
    }
    if args.log_format == Some(replikv_core::replication::LogFormat::Physical) {
        bail!(
            "--log-format physical ships the log engine's segment bytes, and the simulator's disks are memory \
             engines, which have none: physical replication runs on real processes (`replikv cluster start \
             --log-format physical`; the end-to-end test crates/cli/tests/log_formats.rs compares their files)"
        );
    }
    let acks = args.acks.unwrap_or(Acks::Sync);
    let followers = nodes - 1;
    let acks_needed = match acks {
        Acks::Sync => followers,
        Acks::SemiSync(k) if (1..=followers).contains(&k) => k,
        Acks::SemiSync(k) => bail!("--acks semi-sync:{k}: K must be 1 to {followers} with {nodes} nodes"),
        Acks::Async => 0,
    };
    let fixed = fixed_faults(args)?;
    let (canary, _) = args.canary.planted();
    args.canary.announce(canary != Canary::None, args.mode)?;
    if canary == Canary::FollowerAppliesParts && !args.transactions {
        bail!("--canary follower-applies-parts tears transactions apart: use it with --transactions");
    }
    let (mut ops, mut crashes, mut partitions) = (0, 0, 0);
    let (mut leaderships, mut rolled_back, mut acked_rolled_back) = (0, 0, 0);
    let mut failover_ms: Vec<u64> = Vec::new();
    let mut sessions: BTreeMap<Guarantee, Figures> = BTreeMap::new();
    let (seeds, failed, gave_up) = sweep(args, |seed| {
        let config = SimConfig {
            seed,
            nodes,
            failover: !args.no_failover,
            acks_needed,
            acks_label: acks.to_string(),
            clients: args.clients,
            keys: args.keys,
            safety_ms: args.steps,
            quiet_ms: args.quiet_ms,
            faults: fixed.clone().unwrap_or_else(|| swarm_faults(seed)),
            log_retain_bytes: args.log_retain_bytes.unwrap_or(LOG_RETAIN_BYTES_DEFAULT),
            read_lease: args.read_lease,
            canary,
            follower_reads: args.follower_reads,
            transactions: args.transactions,
            log_format: args.log_format.unwrap_or_default(),
            relative_ttls: args.relative_ttls,
        };
        let report = run(config);
        let c = &report.judgement.run;
        (ops, crashes, partitions) = (ops + c.ops, crashes + c.crashes, partitions + c.partitions);
        leaderships += report.counts.leaderships;
        rolled_back += report.counts.rolled_back;
        acked_rolled_back += report.counts.acknowledged_rolled_back;
        failover_ms.extend(&report.counts.failover_ms);
        for (guarantee, figures) in &report.sessions {
            sessions.entry(*guarantee).or_default().add(figures);
        }
        let replay = report.replay();
        (report.judgement, replay)
    });
    outln!(
        "{seeds} seed(s), acks {acks}: {ops} operations, {crashes} crashes, {partitions} partitions; {} failed, {gave_up} verdict(s) gave up",
        failed.len()
    );
    outln!(
        "failover: {leaderships} leaderships; {rolled_back} changes cut to rollback logs ({acked_rolled_back} of them \
         acknowledged writes); {}",
        failover_summary(&mut failover_ms)
    );
    if args.follower_reads {
        let lag = match &fixed {
            Some(faults) => format!("faults '{}'", faults.spec()),
            None => "each seed's own faults".to_string(),
        };
        outln!("sessions reading from any node, at {lag} (judged sessions fail the run; the rest are counted):");
        for (guarantee, figures) in &sessions {
            outln!("  {}: {}", guarantee.name(), figures.summary());
        }
    }
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
