//! `replikv sim`: run the deterministic simulator over one seed or a sweep, print what each
//! run did and what the checkers found, and on a failure the seed, the end of its trace and
//! the command that replays it exactly. Exits 1 if any checker failed.
//!
//! The command line and the printing of runs are shared; each family's sweep (its settings,
//! its totals) is a module of its own: [`single_leader`] (`--mode single-leader`, the
//! default), [`leaderless`] (`--mode leaderless`) and [`multi_leader`] (`--mode
//! multi-leader`); [`gossip`] (`--gossip`) is the lecture's gossip example over the real
//! anti-entropy exchange, with no faults and no checkers.

mod gossip;
mod leaderless;
mod multi_leader;
mod single_leader;

use crate::cluster::args::LeaderlessArgs;
use crate::output::outln;
use anyhow::{bail, Result};
use clap::Args;
use replikv_server::config::Acks;
use replikv_sim::faults::Faults;
use replikv_sim::run::{Judgement, Verdict};

/// Seeds one sweep runs at most.
pub const SEEDS_MAX: u64 = 1_000_000;

/// Run the deterministic simulator: the real replicas on a virtual network, disk and clock.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
replikv sim --acks sync --seed 7                    # one run; its own fault mix (swarm)\n  \
replikv sim --acks sync --seeds 0..500              # a sweep\n  \
replikv sim --acks sync --read-lease --seeds 0..500 # leader reads under a lease\n  \
replikv sim --acks async --no-failover --follower-reads --seeds 0..200 --faults delay=1..50,pause=0.001   # session anomalies at a lag\n  \
replikv sim --acks async --seed 7 --faults drop=0.05,crash=0.001   # these faults only\n  \
replikv sim --seed 7 --faults ''                    # no faults at all\n  \
replikv sim --mode leaderless --n 3 --w 2 --r 2 --seeds 0..500\n  \
replikv sim --mode leaderless --n 3 --w 1 --r 1 --conflicts siblings --fsync never --seeds 0..500\n  \
replikv sim --mode leaderless --n 3 --w 1 --r 1 --sessions --seeds 0..300   # session guarantees without a leader\n  \
replikv sim --mode multi-leader --datacenters 3 --dc-nodes 3 --resolve merge --seeds 0..500\n  \
replikv sim --mode multi-leader --datacenters 3 --dc-nodes 3 --acks semi-sync:1 --follower-reads --seeds 0..300   # sessions per datacenter\n  \
replikv sim --gossip --nodes 100000 --interval-ms 3000 --style push --runs 5   # the lecture's gossip\n\n\
Faults (rates per message, or per virtual millisecond): drop, dup, delay=MIN..MAX (ms), partition,\n\
crash, pause, skew (ms), drift (ppm). Without --faults each seed draws its own mix.")]
pub struct SimArgs {
    /// The replication strategy: single-leader, leaderless or multi-leader. A leaderless run
    /// checks that replicas and their Merkle trees converge, reads see the newest acknowledged
    /// write, deletes stay deleted, purges are safe and siblings stay bounded with every write
    /// accounted for. A multi-leader run checks that every node of every datacenter converges
    /// to one state, and the rule's promise: under lww every acknowledged write gone was
    /// overwritten by a write that had seen it or lost to a higher version and is in a
    /// conflict log; under merge every concurrent value is merged exactly once; under app every
    /// concurrent write is kept as a sibling.
    #[arg(long, value_enum, default_value_t = SimMode::SingleLeader)]
    pub mode: SimMode,
    /// Single-leader, and multi-leader inside each datacenter: when a write is acknowledged:
    /// sync (the default), semi-sync:K or async.
    #[arg(long, value_name = "sync|semi-sync:K|async")]
    pub acks: Option<Acks>,
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
    /// Single-leader: nodes, 2 to 7 (3 by default; node 1 leads first, elections decide after
    /// that). Leaderless runs n nodes.
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Single-leader: turn automatic failover off, node 1 leads for the whole run.
    #[arg(long)]
    pub no_failover: bool,
    /// Concurrent clients.
    #[arg(long, default_value_t = 5)]
    pub clients: usize,
    /// Keys the clients share.
    #[arg(long, default_value_t = 3)]
    pub keys: usize,
    /// Single-leader: bytes of replication log each node keeps (8192 by default: small, so
    /// that snapshots happen).
    #[arg(long, value_name = "BYTES")]
    pub log_retain_bytes: Option<u64>,
    /// Leaderless: n (the cluster's nodes), w, r, conflicts, read repair. The clients GET
    /// under lww and list siblings under siblings.
    #[command(flatten)]
    pub leaderless: LeaderlessArgs,
    /// Leaderless: whether nodes fsync their writes (always by default; never: their
    /// acknowledgements promise no durability, and a crash loses what they wrote).
    #[arg(long, value_enum, value_name = "always|never")]
    pub fsync: Option<FsyncArg>,
    /// Print every run's line, not only failures and the total.
    #[arg(long, short)]
    pub verbose: bool,
    /// Leaderless: virtual milliseconds between each node's anti-entropy rounds (0, the
    /// default: none, and the quiet phase converges the replicas by reading every key; else
    /// the quiet phase reads nothing and anti-entropy alone must converge them).
    #[arg(long, value_name = "MS")]
    pub anti_entropy_ms: Option<u64>,
    /// The lecture's gossip example instead of a checked run: `--nodes` replicas (100,000 by
    /// default), one changed key, rounds of the real anti-entropy exchange until every replica
    /// has it.
    #[arg(long)]
    pub gossip: bool,
    /// Gossip: virtual milliseconds per round (3000 by default).
    #[arg(long, value_name = "MS", requires = "gossip")]
    pub interval_ms: Option<u64>,
    /// Gossip: which side of an exchange sends its states (all three by default).
    #[arg(long, value_enum, requires = "gossip")]
    pub style: Option<gossip::StyleArg>,
    /// Gossip: runs per style, seeds --seed, --seed + 1, ... (1 by default); the rounds are
    /// averaged.
    #[arg(long, requires = "gossip")]
    pub runs: Option<u64>,
    /// Single-leader: leader reads under a lease (`read_lease`) instead of a read-index round
    /// trip each; the nodes' clocks drift within the lease's allowance.
    #[arg(long)]
    pub read_lease: bool,
    /// Single-leader: clients other than the first read from any node (followers included)
    /// in sessions, each with a guarantee drawn from the seed (none, read-your-writes,
    /// monotonic-reads or consistent-prefix), and write on the leader; the run checks each
    /// session's guarantee from the history and counts the anomalies the sessions without
    /// one saw. Multi-leader: every client does so inside its datacenter (reads from any of
    /// its nodes, positions of its log), under every --resolve.
    #[arg(long)]
    pub follower_reads: bool,
    /// Single-leader: every few milliseconds an MSET of 5 keys (t0..t4), all to one new value,
    /// goes to the leader, with log records of 2 changes at most so that each spans several;
    /// the run checks after every step that no replica holds some of a transaction's keys and
    /// not the others.
    #[arg(long)]
    pub transactions: bool,
    /// Single-leader: what the leaders log of a write (logical, statement or mixed; physical
    /// needs the log engine's files, which the simulator's disks do not have). With
    /// statement and --relative-ttls the run checks that replicas diverge, as the lecture's
    /// nondeterministic statements make them, instead of that they converge.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<replikv_core::replication::LogFormat>,
    /// Single-leader: every client write sets a relative TTL of an hour (`SET k v PX
    /// 3600000`), a nondeterministic request for a statement log.
    #[arg(long)]
    pub relative_ttls: bool,
    /// Leaderless: every client runs in a session through any node, its guarantee drawn from
    /// the seed (none, read-your-writes or monotonic-reads; consistent prefix is not offered
    /// without a leader), each request carrying the causal context of the key its guarantee
    /// needs as a floor; the run checks each session's guarantee from the history (with
    /// `--fsync always`) and counts the anomalies the sessions without one saw. Weak quorums
    /// (`--w 1 --r 1`) make them common.
    #[arg(long)]
    pub sessions: bool,
    /// Multi-leader: datacenters, 2 to 5 (2 by default).
    #[arg(long, value_name = "N")]
    pub datacenters: Option<usize>,
    /// Multi-leader: nodes in each datacenter, 1 to 5 (2 by default; the first leads it at the
    /// start, elections decide after that).
    #[arg(long, value_name = "N")]
    pub dc_nodes: Option<usize>,
    /// Multi-leader: how conflicting writes are resolved: lww (the default), merge or app.
    /// The clients GET under lww and merge, and list siblings under app.
    #[arg(long, value_name = "lww|merge|app")]
    pub resolve: Option<String>,
    /// Plant a bug in the replicas, to see the checkers catch it (for testing the simulator).
    #[arg(long, value_enum, default_value_t = CanaryArg::None, hide = true)]
    pub canary: CanaryArg,
}

/// `--mode`: the replication strategy a run simulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SimMode {
    /// One leader, followers.
    SingleLeader,
    /// Every replica takes writes; quorums.
    Leaderless,
    /// A leader per datacenter, each with followers; conflicts resolved by a rule.
    MultiLeader,
}

impl std::fmt::Display for SimMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SimMode::SingleLeader => "single-leader",
            SimMode::Leaderless => "leaderless",
            SimMode::MultiLeader => "multi-leader",
        })
    }
}

/// `--fsync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FsyncArg {
    /// Every batch that stored states is fsynced before its outputs leave.
    Always,
    /// Never fsync.
    Never,
}

/// `--canary`: a planted bug; single-leader's first, then leaderless's, then multi-leader's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
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
    /// Leaders reading under a lease do not wait for the commit (use with --read-lease).
    LeaseSkipsCommit,
    /// Followers apply what they matched without waiting for their leader to hold it durably.
    FollowerAppliesUndurable,
    /// Followers apply each part of a request as it arrives, not the request whole (use with
    /// --transactions).
    FollowerAppliesParts,
    /// Followers answer session reads at once, without waiting for the session's position
    /// (use with --follower-reads; single-leader, or multi-leader inside each datacenter).
    SessionNoWait,
    /// The simulated clients' sessions forget their read positions, or leaderless their reads'
    /// contexts (use with --follower-reads: single-leader or multi-leader; or --sessions).
    TokenForgetsRead,
    /// Leaderless: a coordinator counts each replica's acknowledgement twice.
    CountAckTwice,
    /// Leaderless: a replica takes a state it is sent as it is, even when its own is newer.
    OlderOverwrites,
    /// Leaderless: a read repair sends the value the coordinator read first, not the newest.
    RepairWithFirstReply,
    /// Leaderless: an anti-entropy comparison skips the first differing child it descends to.
    ExchangeSkipsSubtree,
    /// Leaderless: a state stored by a read repair leaves the Merkle tree as it was.
    TreeNotUpdatedOnRepair,
    /// Leaderless: a coordinator answers a session read after r replies whatever their
    /// context (use with --sessions).
    SessionFloorIgnored,
    /// Multi-leader, lww: a leader keeps the arriving state instead of the highest version.
    KeepArriving,
    /// Multi-leader, lww: conflict losers are not written to the conflict log.
    LoserNotLogged,
    /// Multi-leader, merge: a leader applies the arriving values a second time.
    AppliedTwice,
}

impl CanaryArg {
    /// The bug as each family's replicas know it: (single-leader's, leaderless's); the other
    /// family's is `None`.
    fn planted(self) -> (replikv_core::single_leader::Canary, replikv_core::leaderless::Canary) {
        use replikv_core::leaderless::Canary as L;
        use replikv_core::single_leader::Canary as S;
        match self {
            CanaryArg::None => (S::None, L::None),
            CanaryArg::AckBeforeFsync => (S::AckBeforeFsync, L::None),
            CanaryArg::FollowerOutOfOrder => (S::FollowerOutOfOrder, L::None),
            CanaryArg::SilentAsync => (S::SilentAsync, L::None),
            CanaryArg::SnapshotSkipsKey => (S::SnapshotSkipsKey, L::None),
            CanaryArg::UnconfirmedReads => (S::UnconfirmedReads, L::None),
            CanaryArg::NoFencing => (S::NoFencing, L::None),
            CanaryArg::LeaseSkipsCommit => (S::LeaseSkipsCommit, L::None),
            CanaryArg::FollowerAppliesUndurable => (S::FollowerAppliesUndurable, L::None),
            CanaryArg::FollowerAppliesParts => (S::FollowerAppliesParts, L::None),
            CanaryArg::SessionNoWait => (S::SessionNoWait, L::None),
            CanaryArg::TokenForgetsRead => (S::TokenForgetsRead, L::TokenForgetsRead),
            CanaryArg::CountAckTwice => (S::None, L::CountAckTwice),
            CanaryArg::OlderOverwrites => (S::None, L::OlderOverwrites),
            CanaryArg::RepairWithFirstReply => (S::None, L::RepairWithFirstReply),
            CanaryArg::ExchangeSkipsSubtree => (S::None, L::ExchangeSkipsSubtree),
            CanaryArg::TreeNotUpdatedOnRepair => (S::None, L::TreeNotUpdatedOnRepair),
            CanaryArg::SessionFloorIgnored => (S::None, L::SessionFloorIgnored),
            CanaryArg::KeepArriving | CanaryArg::LoserNotLogged | CanaryArg::AppliedTwice => (S::None, L::None),
        }
    }

    /// The bug as the multi-leader family's nodes know it (`None` for another family's).
    fn planted_multi_leader(self) -> replikv_core::multi_leader::Canary {
        use replikv_core::multi_leader::Canary as M;
        match self {
            CanaryArg::KeepArriving => M::KeepArriving,
            CanaryArg::LoserNotLogged => M::LoserNotLogged,
            CanaryArg::AppliedTwice => M::AppliedTwice,
            _ => M::None,
        }
    }

    /// Says on stderr that a bug is planted, or refuses one of another family than `mode`'s
    /// (`planted`: whether `mode`'s replicas know it).
    fn announce(self, planted: bool, mode: SimMode) -> Result<()> {
        match (self, planted) {
            (CanaryArg::None, _) => Ok(()),
            (_, true) => {
                eprintln!("replikv sim: canary {self:?} planted: failures are expected");
                Ok(())
            }
            (_, false) => bail!("--canary {self:?} is not a canary of --mode {mode}"),
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
    if args.gossip {
        return gossip::main(args);
    }
    if args.clients == 0 || args.keys == 0 {
        bail!("--clients and --keys must be at least 1");
    }
    match args.mode {
        SimMode::SingleLeader => single_leader::main(args),
        SimMode::Leaderless => leaderless::main(args),
        SimMode::MultiLeader => multi_leader::main(args),
    }
}

/// Refuses the `flags` (name, given) that were given: they belong to mode `owner`.
fn refuse_flags(flags: impl IntoIterator<Item = (&'static str, bool)>, owner: &str) -> Result<()> {
    let given: Vec<&str> = flags.into_iter().filter(|(_, given)| *given).map(|(flag, _)| flag).collect();
    if !given.is_empty() {
        bail!("{} only with --mode {owner}", given.join(", "));
    }
    Ok(())
}

/// The multi-leader flags, by name, and whether each was given: for refusing them in another
/// mode.
fn multi_leader_flags(args: &SimArgs) -> [(&'static str, bool); 3] {
    [
        ("--datacenters", args.datacenters.is_some()),
        ("--dc-nodes", args.dc_nodes.is_some()),
        ("--resolve", args.resolve.is_some()),
    ]
}

/// The fixed faults `--faults` names, if any.
fn fixed_faults(args: &SimArgs) -> Result<Option<Faults>> {
    args.faults.as_deref().map(|spec| Faults::parse(spec).map_err(anyhow::Error::msg)).transpose()
}

/// Runs `run` over the seeds `args` names (one, or a sweep): it returns each run's judgement
/// and the command that replays it. Prints a failed run whole, the others' lines when
/// `--verbose` or a single seed; returns how many seeds ran, the failed seeds and how many
/// verdicts gave up.
fn sweep(args: &SimArgs, mut run: impl FnMut(u64) -> (Judgement, String)) -> (u64, Vec<u64>, usize) {
    let (first, end) = args.seeds.unwrap_or_else(|| {
        let seed = args.seed.unwrap_or(0);
        (seed, seed + 1)
    });
    let (mut failed, mut gave_up) = (Vec::new(), 0);
    for seed in first..end {
        let (judgement, replay) = run(seed);
        gave_up += judgement.verdicts.iter().filter(|(_, v)| matches!(v, Verdict::GaveUp(_))).count();
        if judgement.failed() {
            print_failure(seed, &judgement, &replay);
            failed.push(seed);
        } else if args.verbose || end - first == 1 {
            outln!("{}", line(seed, &judgement));
            for (name, v) in &judgement.verdicts {
                if let Verdict::GaveUp(why) = v {
                    outln!("  {name} gave up: {why}");
                }
            }
        }
    }
    (end - first, failed, gave_up)
}

/// One run as a line.
fn line(seed: u64, j: &Judgement) -> String {
    let c = &j.run;
    let verdicts: Vec<String> = j
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
        "seed {seed}: {} ops ({} ok, {} indeterminate, {} refused); {} msgs ({} dropped, {} duplicated), {} partitions, \
         {} crashes, {} pauses; {}",
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
fn print_failure(seed: u64, j: &Judgement, replay: &str) {
    outln!("{}", line(seed, j));
    for (name, v) in &j.verdicts {
        if let Verdict::Fail(why) = v {
            outln!("  {name}: {why}");
        }
    }
    outln!("  last {} trace lines:", j.trace_tail.len());
    for l in &j.trace_tail {
        outln!("    {l}");
    }
    outln!("  replay: {replay}");
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

    #[test]
    fn a_flag_of_the_other_family_is_refused_by_name() {
        assert!(refuse_flags(LeaderlessArgs::default().flags(), "leaderless").is_ok());
        let given = LeaderlessArgs { n: Some(3), r: Some(1), ..LeaderlessArgs::default() };
        let e = refuse_flags(given.flags(), "leaderless").unwrap_err();
        assert_eq!(e.to_string(), "--n, --r only with --mode leaderless");
    }
}
