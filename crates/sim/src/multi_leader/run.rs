//! One multi-leader seed, start to verdicts and figures, and the command that replays it.
//!
//! The verdicts: no failure (a step or a restart errored, a read returned what no client
//! wrote); every node of every datacenter converges to the same state of every key; and the
//! rule's own promise ([`super::checks`]): under `lww` every acknowledged write gone was
//! overwritten or lost to a higher version and logged, under `merge` every concurrent value
//! is merged exactly once, under `app` every concurrent write is kept as a sibling. The other
//! rules' checkers say "n/a". With `follower_reads`, each session keeps its guarantee in its
//! datacenter's log ([`super::sessions`], under every rule), judged where acknowledged writes
//! survive a failover inside a datacenter ("n/a" elsewhere, and without `follower_reads`); the
//! sessions promised nothing are counted, not judged: [`Report::sessions`].

use super::checks::{self, Evidence, Figures};
use super::world::{Config, World};
use crate::check::sessions::{self, Anomaly};
use crate::run::{session_checker, Judgement, Verdict};
use crate::session::Guarantee;
use replikv_core::multi_leader::{Canary, ExchangeCounters, Resolve};
use replikv_core::single_leader::Canary as SessionCanary;
use std::collections::BTreeMap;

/// The convergence checker's name.
pub const CONVERGE_CHECKER: &str = "every datacenter converges to one state";

/// The `lww` checker's name.
pub const LWW_CHECKER: &str = "lww: every lost write lost to a higher version and logged";

/// The `merge` checker's name.
pub const MERGE_CHECKER: &str = "merge: every concurrent value merged exactly once";

/// The `app` checker's name.
pub const APP_CHECKER: &str = "app: every concurrent write kept as a sibling";

/// What a multi-leader run did and what the checkers found.
#[derive(Clone, Debug)]
pub struct Report {
    /// The setup (the seed and faults included).
    pub config: Config,
    /// The exchange's counters, added up over every node.
    pub counters: ExchangeCounters,
    /// Writes acknowledged to their clients.
    pub written: u64,
    /// What the write checkers counted.
    pub figures: Figures,
    /// Conflict log entries read at the end, over every node (a datacenter's followers hold
    /// copies of its leader's).
    pub conflicts_logged: u64,
    /// What the sessions of each guarantee saw (empty without `follower_reads`).
    pub sessions: BTreeMap<Guarantee, sessions::Figures>,
    /// Session reads answered `-TRYAGAIN` (a follower behind the session).
    pub tryagain: u64,
    /// Operations, faults, verdicts, trace.
    pub judgement: Judgement,
}

impl Report {
    /// True when a checker failed.
    pub fn failed(&self) -> bool {
        self.judgement.failed()
    }

    /// The command that replays this run exactly.
    pub fn replay(&self) -> String {
        let c = &self.config;
        let canary = match (c.canary, c.session_canary) {
            (Canary::None, SessionCanary::SessionNoWait) => " --canary session-no-wait".to_string(),
            (Canary::None, SessionCanary::TokenForgetsRead) => " --canary token-forgets-read".to_string(),
            (Canary::None, _) => String::new(),
            (canary, _) => format!(" --canary {}", canary.as_str()),
        };
        let follower_reads = if c.follower_reads { " --follower-reads" } else { "" };
        format!(
            "replikv sim --mode multi-leader --datacenters {} --dc-nodes {} --acks {} --resolve {} --seed {} --steps {} \
             --quiet-ms {} --clients {} --keys {} --faults '{}'{follower_reads}{canary}",
            c.datacenters,
            c.dc_nodes,
            c.acks_label,
            c.resolve,
            c.seed,
            c.safety_ms,
            c.quiet_ms,
            c.clients,
            c.keys,
            c.faults.spec()
        )
    }
}

/// Runs `config` and judges it.
pub fn run(config: Config) -> Report {
    let mut world = World::new(config.clone());
    let converged = world.run();
    let states = world.final_states();
    let conflicts = world.conflict_logs();
    let rolled_back = world.rolled_back();
    let e = Evidence {
        history: &world.history,
        stamps: &world.stamps,
        states: &states,
        conflicts: &conflicts,
        rolled_back: &rolled_back,
        excuse_rolled_back: !config.acks_survive_failover(),
    };
    let mut figures = e.figures();
    let only = |rule: Resolve, failures: Vec<String>| match config.resolve == rule {
        true => Verdict::from_failures(&failures),
        false => Verdict::NotApplicable,
    };
    let (lww_failures, lost) = checks::lww_losers(&e);
    figures.lost_to_lww = if config.resolve == Resolve::Lww { lost } else { 0 };
    let mut verdicts = vec![
        crate::run::no_failure(world.broken()),
        (CONVERGE_CHECKER.to_string(), converged.map_or_else(Verdict::Fail, |()| Verdict::Pass)),
        (LWW_CHECKER.to_string(), only(Resolve::Lww, lww_failures)),
        (MERGE_CHECKER.to_string(), only(Resolve::Merge, checks::merged_once(&e))),
        (APP_CHECKER.to_string(), only(Resolve::App, checks::siblings_kept(&e))),
    ];
    let judged = super::sessions::check(&world.history, &world.sessions, &world.client_datacenters());
    for anomaly in Anomaly::ALL {
        let verdict = match config.follower_reads && config.acks_survive_failover() {
            true => Verdict::from_failures(judged.violations.get(&anomaly).map_or(&[][..], Vec::as_slice)),
            // Without sessions nothing to judge; where a failover may cut acknowledged
            // writes, it takes back what a session saw (DESIGN §7): no promise.
            false => Verdict::NotApplicable,
        };
        verdicts.push((session_checker(anomaly).to_string(), verdict));
    }
    let written = world.history.events.iter().filter(|e| e.outcome.is_written()).count() as u64;
    let judgement = world.judge(verdicts);
    Report {
        counters: world.counters(),
        written,
        figures,
        conflicts_logged: conflicts.len() as u64,
        sessions: judged.figures,
        tryagain: world.tryagain,
        judgement,
        config,
    }
}

#[cfg(test)]
mod tests;
