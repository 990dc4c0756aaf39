//! `replikv sim --mode leaderless`: a sweep of leaderless runs with `--n`, `--w`, `--r`,
//! `--conflicts`, `--read-repair` and `--fsync`, and its totals: operations and faults, what
//! the nodes counted (partial writes, read repairs, sibling reads), and the lecture's
//! anomalies as figures (issue 13 point 17); with `--sessions`, what the sessions of each
//! guarantee saw (how many reads could have shown each anomaly, and how many did).

use super::{fixed_faults, refuse_flags, sweep, FsyncArg, SimArgs};
use crate::cluster::args::{Conflicts, ReadRepair};
use crate::output::outln;
use anyhow::{bail, Result};
use replikv_core::leaderless::{self, Canary};
use replikv_core::quorum::Nwr;
use replikv_sim::check::sessions::Figures;
use replikv_sim::leaderless::checks::sessions::ANOMALIES;
use replikv_sim::leaderless::run::{run, Anomalies, Report};
use replikv_sim::leaderless::world::{Config, Fsync};
use replikv_sim::run::{swarm_faults, RunCounts};
use replikv_sim::session::Guarantee;
use std::collections::BTreeMap;

/// The tombstone grace period in simulated runs with anti-entropy, virtual milliseconds:
/// short, so that tombstones are purged within a run and the purge is exercised (without
/// anti-entropy the default, 10 days: nothing is purged).
const ANTI_ENTROPY_TOMBSTONE_GRACE_MS: u64 = 2_000;

/// Replicas per key when `--n` is not given.
const N_DEFAULT: usize = 3;

/// Replicas per key at most (every node holds every key in the simulator).
const N_MAX: usize = 7;

/// The quorums `--n`, `--w`, `--r` name (a majority of n for each one missing).
fn nwr(args: &SimArgs) -> Result<Nwr> {
    let n = args.leaderless.n.unwrap_or(N_DEFAULT);
    if !(1..=N_MAX).contains(&n) {
        bail!("--n must be 1 to {N_MAX}");
    }
    let majority = replikv_core::quorum::majority(n);
    Nwr::new(n, args.leaderless.w.unwrap_or(majority), args.leaderless.r.unwrap_or(majority))
        .map_err(|e| anyhow::anyhow!("--n, --w, --r: {e}"))
}

/// Runs `replikv sim --mode leaderless`.
pub fn main(args: &SimArgs) -> Result<()> {
    let single_leader = [
        ("--acks", args.acks.is_some()),
        ("--nodes", args.nodes.is_some()),
        ("--no-failover", args.no_failover),
        ("--read-lease", args.read_lease),
        ("--transactions", args.transactions),
        ("--log-format", args.log_format.is_some()),
        ("--relative-ttls", args.relative_ttls),
        ("--follower-reads", args.follower_reads),
        ("--log-retain-bytes", args.log_retain_bytes.is_some()),
    ];
    refuse_flags(single_leader, "single-leader")?;
    refuse_flags(super::multi_leader_flags(args), "multi-leader")?;
    let nwr = nwr(args)?;
    let conflicts = match args.leaderless.conflicts {
        None | Some(Conflicts::Lww) => leaderless::Conflicts::Lww,
        Some(Conflicts::Siblings) => leaderless::Conflicts::Siblings,
    };
    let read_repair = match args.leaderless.read_repair {
        None | Some(ReadRepair::Async) => leaderless::ReadRepair::Async,
        Some(ReadRepair::Blocking) => leaderless::ReadRepair::Blocking,
    };
    let fsync = match args.fsync {
        None | Some(FsyncArg::Always) => Fsync::Always,
        Some(FsyncArg::Never) => Fsync::Never,
    };
    let fixed = fixed_faults(args)?;
    let (_, canary) = args.canary.planted();
    args.canary.announce(canary != Canary::None, args.mode)?;
    let mut totals = Totals::default();
    let (seeds, failed, gave_up) = sweep(args, |seed| {
        let config = Config {
            seed,
            nwr,
            conflicts,
            read_repair,
            fsync,
            clients: args.clients,
            keys: args.keys,
            safety_ms: args.steps,
            quiet_ms: args.quiet_ms,
            faults: fixed.clone().unwrap_or_else(|| swarm_faults(seed)),
            canary,
            anti_entropy_ms: args.anti_entropy_ms.unwrap_or(0),
            tombstone_grace_ms: match args.anti_entropy_ms {
                None | Some(0) => leaderless::TOMBSTONE_GRACE_MS_DEFAULT,
                Some(_) => ANTI_ENTROPY_TOMBSTONE_GRACE_MS,
            },
            sessions: args.sessions,
        };
        let report = run(config);
        totals.add(&report);
        let replay = report.replay();
        (report.judgement, replay)
    });
    let setting = format!(
        "n = {}, w = {}, r = {}, {}, read repair {}, fsync {}",
        nwr.n,
        nwr.w,
        nwr.r,
        conflicts.as_str(),
        read_repair.as_str(),
        fsync.as_str()
    );
    outln!(
        "{seeds} seed(s), leaderless {setting}: {}; {} failed, {gave_up} verdict(s) gave up",
        totals.summary(),
        failed.len()
    );
    outln!("anomalies (figures, not failures): {}", anomalies(&totals.anomalies, nwr, conflicts, fsync));
    if args.sessions {
        let judged = match fsync {
            Fsync::Always => "judged sessions fail the run; the rest are counted",
            Fsync::Never => "fsync = never: counted, not judged",
        };
        outln!("sessions through any node ({judged}):");
        for (guarantee, figures) in &totals.sessions {
            outln!("  {}: {}", guarantee.name(), figures.summary_of(&ANOMALIES));
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
    /// Writes that reached fewer than w replicas in time.
    partial_writes: u64,
    /// Read repairs sent.
    read_repairs: u64,
    /// Reads that found siblings.
    sibling_reads: u64,
    /// The anomalies.
    anomalies: Anomalies,
    /// What the sessions of each guarantee saw.
    sessions: BTreeMap<Guarantee, Figures>,
}

impl Totals {
    /// Adds one run.
    fn add(&mut self, report: &Report) {
        self.run.add(&report.judgement.run);
        self.written += report.written;
        self.partial_writes += report.counters.partial_writes;
        self.read_repairs += report.counters.read_repairs_sent;
        self.sibling_reads += report.counters.sibling_reads;
        self.anomalies.add(&report.anomalies);
        for (guarantee, figures) in &report.sessions {
            self.sessions.entry(*guarantee).or_default().add(figures);
        }
    }

    /// The operations and faults, as a phrase.
    fn summary(&self) -> String {
        let r = &self.run;
        format!(
            "{} operations ({} ok, {} writes acknowledged, {} indeterminate, {} refused), {} partial writes, {} read \
             repairs, {} sibling reads; {} messages ({} dropped, {} duplicated), {} partitions, {} crashes, {} pauses",
            r.ops,
            r.ok,
            self.written,
            r.indeterminate,
            r.refused,
            self.partial_writes,
            self.read_repairs,
            self.sibling_reads,
            r.messages,
            r.dropped,
            r.duplicated,
            r.partitions,
            r.crashes,
            r.pauses
        )
    }
}

/// The lecture's anomalies, as a phrase, each with what it means for this configuration.
fn anomalies(a: &Anomalies, nwr: Nwr, conflicts: leaderless::Conflicts, fsync: Fsync) -> String {
    let mut parts = vec![format!(
        "{} read(s) missed the newest acknowledged write{}",
        a.stale_reads,
        if nwr.overlaps() { "" } else { " (w + r <= n)" }
    )];
    if conflicts == leaderless::Conflicts::Lww {
        parts.push(format!(
            "{} acknowledged write(s) overwritten by an older one (lww, clock skew)",
            a.older_overwrites
        ));
    }
    parts.push(format!(
        "{} restart(s) came back without an acknowledged write they held, and {} quorum read(s) then missed it{}",
        a.came_back_older,
        a.stale_after_rollback,
        if fsync == Fsync::Never { " (fsync = never: the failing node)" } else { "" }
    ));
    if fsync == Fsync::Never {
        parts.push(format!(
            "{} deleted value(s) came back, {} write(s) lost or clashed",
            a.resurrections, a.lost_writes
        ));
    }
    parts.join("; ")
}
