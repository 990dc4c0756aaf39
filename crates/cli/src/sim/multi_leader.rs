//! `replikv sim --mode multi-leader`: a sweep of multi-leader runs with `--datacenters`,
//! `--dc-nodes`, `--acks` (inside each datacenter) and `--resolve`, and its totals:
//! operations and faults, what the exchange counted (changes shipped and received, conflicts,
//! shipments held back by the clock-skew allowance), and what the write checkers counted
//! (acknowledged writes, those no other write had seen, `lww` losers logged, writes rolled
//! back inside a datacenter); with `--follower-reads`, what the sessions of each guarantee
//! saw reading from any node of their datacenter.

use super::{fixed_faults, refuse_flags, sweep, SimArgs};
use crate::output::outln;
use anyhow::{bail, Result};
use replikv_core::multi_leader::{Canary, Resolve};
use replikv_core::single_leader::Canary as SessionCanary;
use replikv_server::config::Acks;
use replikv_sim::check::sessions::Figures as SessionFigures;
use replikv_sim::multi_leader::checks::Figures;
use replikv_sim::multi_leader::run::{run, Report};
use replikv_sim::multi_leader::world::{Config, DATACENTERS_MAX, DC_NODES_MAX};
use replikv_sim::run::{swarm_faults, RunCounts};
use replikv_sim::session::Guarantee;
use std::collections::BTreeMap;

/// Datacenters when `--datacenters` is not given.
const DATACENTERS_DEFAULT: usize = 2;

/// Nodes per datacenter when `--dc-nodes` is not given.
const DC_NODES_DEFAULT: usize = 2;

/// Runs `replikv sim --mode multi-leader`.
pub fn main(args: &SimArgs) -> Result<()> {
    let leaderless = [
        ("--fsync", args.fsync.is_some()),
        ("--anti-entropy-ms", args.anti_entropy_ms.is_some()),
        ("--sessions", args.sessions),
    ];
    refuse_flags(args.leaderless.flags().into_iter().chain(leaderless), "leaderless")?;
    let single_leader = [
        ("--nodes", args.nodes.is_some()),
        ("--no-failover", args.no_failover),
        ("--read-lease", args.read_lease),
        ("--transactions", args.transactions),
        ("--log-format", args.log_format.is_some()),
        ("--relative-ttls", args.relative_ttls),
        ("--log-retain-bytes", args.log_retain_bytes.is_some()),
    ];
    refuse_flags(single_leader, "single-leader")?;
    let datacenters = args.datacenters.unwrap_or(DATACENTERS_DEFAULT);
    if !(2..=DATACENTERS_MAX).contains(&datacenters) {
        bail!("--datacenters must be 2 to {DATACENTERS_MAX}");
    }
    let dc_nodes = args.dc_nodes.unwrap_or(DC_NODES_DEFAULT);
    if !(1..=DC_NODES_MAX).contains(&dc_nodes) {
        bail!("--dc-nodes must be 1 to {DC_NODES_MAX}");
    }
    let acks = args.acks.unwrap_or(Acks::Sync);
    let followers = dc_nodes - 1;
    let acks_needed = match acks {
        Acks::Sync => followers,
        Acks::SemiSync(k) if (1..=followers).contains(&k) => k,
        Acks::SemiSync(k) => {
            bail!("--acks semi-sync:{k}: K must be 1 to {followers} with {dc_nodes} nodes per datacenter")
        }
        Acks::Async => 0,
    };
    let resolve = Resolve::parse(args.resolve.as_deref().unwrap_or("lww")).map_err(anyhow::Error::msg)?;
    let fixed = fixed_faults(args)?;
    let canary = args.canary.planted_multi_leader();
    let session_canary = match args.canary.planted().0 {
        c @ (SessionCanary::SessionNoWait | SessionCanary::TokenForgetsRead) => c,
        _ => SessionCanary::None,
    };
    args.canary.announce(canary != Canary::None || session_canary != SessionCanary::None, args.mode)?;
    if session_canary != SessionCanary::None && !args.follower_reads {
        bail!("--canary {:?} plants a bug in sessions: use it with --follower-reads", args.canary);
    }
    let mut totals = Totals::default();
    let mut survive = true;
    let mut sessions = BTreeMap::<Guarantee, SessionFigures>::new();
    let (seeds, failed, gave_up) = sweep(args, |seed| {
        let config = Config {
            seed,
            datacenters,
            dc_nodes,
            acks_needed,
            acks_label: acks.to_string(),
            resolve,
            clients: args.clients,
            keys: args.keys,
            safety_ms: args.steps,
            quiet_ms: args.quiet_ms,
            faults: fixed.clone().unwrap_or_else(|| swarm_faults(seed)),
            canary,
            follower_reads: args.follower_reads,
            session_canary,
        };
        survive = config.acks_survive_failover();
        let report = run(config);
        totals.add(&report);
        for (guarantee, figures) in &report.sessions {
            sessions.entry(*guarantee).or_default().add(figures);
        }
        let replay = report.replay();
        (report.judgement, replay)
    });
    outln!(
        "{seeds} seed(s), multi-leader {datacenters} datacenters of {dc_nodes} node(s), acks {acks} inside each, \
         {resolve}: {}; {} failed, {gave_up} verdict(s) gave up",
        totals.summary(),
        failed.len()
    );
    let f = &totals.figures;
    outln!(
        "writes: {} acknowledged, {} of them seen by no other write, {} lost to a higher version under lww (each \
         logged), {} rolled back inside a datacenter{}",
        f.acknowledged,
        f.concurrent,
        f.lost_to_lww,
        f.rolled_back,
        if survive { "" } else { " (excused: these acks do not survive failover)" }
    );
    if args.follower_reads {
        let judged = match survive {
            true => "judged sessions fail the run; the rest are counted",
            false => "not judged: these acks do not survive failover; counted",
        };
        outln!(
            "sessions reading from any node of their datacenter ({judged}); {} reads answered TRYAGAIN:",
            totals.tryagain
        );
        for (guarantee, figures) in &sessions {
            outln!("  {}: {}", guarantee.name(), figures.summary());
        }
    }
    if !failed.is_empty() {
        bail!("checks failed for seed(s) {failed:?}");
    }
    Ok(())
}

/// A sweep's totals.
#[derive(Debug, Default)]
struct Totals {
    /// Operations and faults.
    run: RunCounts,
    /// Acknowledged writes.
    written: u64,
    /// Changes shipped between datacenters.
    shipped: u64,
    /// Changes received.
    received: u64,
    /// Conflicts detected.
    conflicts: u64,
    /// Shipments held back by the clock-skew allowance.
    held_back: u64,
    /// What the write checkers counted.
    figures: Figures,
    /// Session reads answered `-TRYAGAIN`.
    tryagain: u64,
}

impl Totals {
    /// Adds one run.
    fn add(&mut self, report: &Report) {
        self.run.add(&report.judgement.run);
        self.written += report.written;
        self.shipped += report.counters.shipped;
        self.received += report.counters.received;
        self.conflicts += report.counters.conflicts;
        self.held_back += report.counters.held_back;
        self.figures.add(&report.figures);
        self.tryagain += report.tryagain;
    }

    /// The operations, the exchange and the faults, as a phrase.
    fn summary(&self) -> String {
        let r = &self.run;
        format!(
            "{} operations ({} ok, {} writes acknowledged, {} indeterminate, {} refused), {} changes shipped, {} \
             received, {} conflicts, {} shipments held back (clock skew); {} messages ({} dropped, {} duplicated), {} \
             partitions, {} crashes, {} pauses",
            r.ops,
            r.ok,
            self.written,
            r.indeterminate,
            r.refused,
            self.shipped,
            self.received,
            self.conflicts,
            self.held_back,
            r.messages,
            r.dropped,
            r.duplicated,
            r.partitions,
            r.crashes,
            r.pauses
        )
    }
}
