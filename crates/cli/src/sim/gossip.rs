//! `replikv sim --gossip`: the lecture's gossip example (issue 14 point 6) over the real
//! anti-entropy exchange ([`replikv_sim::gossip`]): `--nodes` replicas, one key changed at
//! one, an exchange per replica every `--interval-ms`, and the rounds and virtual time until
//! every replica has the change, per `--style`, next to `log2 n`, `log2 n + ln n` and the
//! mean-field theory of that style.

use super::{refuse_flags, SimArgs};
use crate::output::outln;
use anyhow::{bail, Result};
use replikv_core::leaderless::anti_entropy::Style;
use replikv_sim::gossip::{self, Config, NODES_MAX, ROUNDS_MAX};

/// Replicas when `--nodes` is not given: the lecture's example.
const NODES_DEFAULT: usize = 100_000;

/// Virtual milliseconds per round when `--interval-ms` is not given: the lecture's example.
const INTERVAL_MS_DEFAULT: u64 = 3_000;

/// Runs per style at most (`--runs`).
const RUNS_MAX: u64 = 1_000;

/// `--style`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StyleArg {
    /// The initiator sends what the peer lacks.
    Push,
    /// The peer sends what the initiator lacks.
    Pull,
    /// Both.
    PushPull,
}

impl From<StyleArg> for Style {
    fn from(s: StyleArg) -> Style {
        match s {
            StyleArg::Push => Style::Push,
            StyleArg::Pull => Style::Pull,
            StyleArg::PushPull => Style::PushPull,
        }
    }
}

/// Runs `replikv sim --gossip`.
pub fn main(args: &SimArgs) -> Result<()> {
    let other = [
        ("--acks", args.acks.is_some()),
        ("--seeds", args.seeds.is_some()),
        ("--faults", args.faults.is_some()),
        ("--no-failover", args.no_failover),
        ("--read-lease", args.read_lease),
        ("--transactions", args.transactions),
        ("--log-format", args.log_format.is_some()),
        ("--relative-ttls", args.relative_ttls),
        ("--follower-reads", args.follower_reads),
        ("--log-retain-bytes", args.log_retain_bytes.is_some()),
        ("--fsync", args.fsync.is_some()),
        ("--anti-entropy-ms", args.anti_entropy_ms.is_some()),
        ("--sessions", args.sessions),
        ("--canary", args.canary != super::CanaryArg::None),
    ];
    refuse_flags(other.into_iter().chain(args.leaderless.flags()), "single-leader or leaderless, not --gossip")?;
    let nodes = args.nodes.unwrap_or(NODES_DEFAULT);
    if !(2..=NODES_MAX).contains(&nodes) {
        bail!("--nodes must be 2 to {NODES_MAX} with --gossip");
    }
    let interval_ms = args.interval_ms.unwrap_or(INTERVAL_MS_DEFAULT);
    let runs = args.runs.unwrap_or(1);
    if !(1..=RUNS_MAX).contains(&runs) {
        bail!("--runs must be 1 to {RUNS_MAX}");
    }
    let seed = args.seed.unwrap_or(0);
    let styles: Vec<Style> = match args.style {
        Some(s) => vec![s.into()],
        None => vec![Style::Push, Style::Pull, Style::PushPull],
    };
    let secs = |rounds: f64| rounds * interval_ms as f64 / 1000.0;
    let (log2, push) = (gossip::log2_rounds(nodes), gossip::push_rounds(nodes));
    outln!(
        "gossip: {nodes} replicas, one key changed at one, an exchange per replica every {interval_ms} ms (virtual), \
         {runs} run(s) from seed {seed}"
    );
    outln!(
        "  the lecture: log2 n = {log2:.1} rounds ({:.1} s); log2 n + ln n = {push:.1} rounds ({:.1} s)",
        secs(log2),
        secs(push)
    );
    let mut gave_up = false;
    for style in styles {
        let mut rounds = Vec::new();
        let mut messages = 0u64;
        for s in seed..seed + runs {
            let outcome = gossip::run(Config { seed: s, nodes, interval_ms, style })?;
            messages += outcome.messages;
            match outcome.rounds {
                Some(r) => rounds.push(r),
                None => {
                    outln!("  {}: seed {s}: not every replica after {ROUNDS_MAX} rounds", style.as_str());
                    gave_up = true;
                }
            }
        }
        if rounds.is_empty() {
            continue;
        }
        let measured = rounds.iter().sum::<u64>() as f64 / rounds.len() as f64;
        let theory = gossip::theory_rounds(style, nodes) as f64;
        let each: Vec<String> = rounds.iter().map(u64::to_string).collect();
        outln!(
            "  {:<9} every replica after {measured:.1} rounds ({:.1} s virtual; runs: {}); mean-field theory {theory} \
             rounds ({:.1} s); measured/theory {:.2}; {:.1} messages per replica per run",
            format!("{}:", style.as_str()),
            secs(measured),
            each.join(" "),
            secs(theory),
            measured / theory,
            messages as f64 / (nodes as f64 * runs as f64)
        );
    }
    if gave_up {
        bail!("some runs did not reach every replica");
    }
    Ok(())
}
