//! One leaderless seed, start to verdicts and figures, and the command that replays it.
//!
//! The verdicts: no failure (a step or a restart errored, a read returned what no client
//! wrote); (a) the replicas converge by read repair; (b) reads see the newest acknowledged
//! write (`w + r > n`); (c) acknowledged deletes stay deleted; (d) siblings stay within the
//! bound and every write is kept or merged. Where the configuration does not promise (b) and
//! (c) (`w + r <= n`, `fsync = never`), their misses are figures ([`Anomalies`]), never
//! failures, as are the writes `lww` lets an older one overwrite. With `sessions`, each
//! session keeps its guarantee (read-your-writes, monotonic reads; judged where acknowledged
//! writes are durable, `fsync = always`, whatever `w` and `r`); the sessions promised nothing
//! are counted, not judged: [`Report::sessions`].

use super::checks::{self, Writes};
use super::world::{Config, Fsync, Rollback, World};
use crate::check::sessions::Figures;
use crate::run::{session_checker, Judgement, Verdict};
use crate::session::Guarantee;
use replikv_core::leaderless::{Canary, Counters};
use std::collections::BTreeMap;

/// The lecture's anomalies, counted (issue 13 point 17): figures, not failures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Anomalies {
    /// Reads that missed the newest acknowledged write of their key ((b)'s misses).
    pub stale_reads: u64,
    /// Acknowledged writes a later read found overwritten by a write acknowledged before
    /// they began (`lww` with clock skew).
    pub older_overwrites: u64,
    /// Restarts, per key, that came back without an acknowledged write the node had seen
    /// before its crash.
    pub came_back_older: u64,
    /// Reads that missed a write a restart had lost before the read ended.
    pub stale_after_rollback: u64,
    /// Acknowledged deletes whose value came back ((c)'s findings).
    pub resurrections: u64,
    /// Acknowledged writes in no node's final state, and writes lost to a dot handed out
    /// twice ((d)'s findings beyond the bound).
    pub lost_writes: u64,
}

impl Anomalies {
    /// Adds `other`'s counts to these (a sweep's totals).
    pub fn add(&mut self, other: &Anomalies) {
        crate::add_fields!(
            self, other;
            stale_reads, older_overwrites, came_back_older, stale_after_rollback, resurrections, lost_writes
        );
    }
}

/// What a leaderless run did and what the checkers found.
#[derive(Clone, Debug)]
pub struct Report {
    /// The setup (the seed and faults included).
    pub config: Config,
    /// The nodes' counters, added up.
    pub counters: Counters,
    /// Writes the oracle saw stamped.
    pub stamped: u64,
    /// Writes acknowledged to their clients.
    pub written: u64,
    /// The lecture's anomalies.
    pub anomalies: Anomalies,
    /// What the sessions of each guarantee saw (empty without `sessions`).
    pub sessions: BTreeMap<Guarantee, Figures>,
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
        let anti_entropy = match c.anti_entropy_ms {
            0 => String::new(),
            ms => format!(" --anti-entropy-ms {ms}"),
        };
        let canary = match c.canary {
            Canary::None => String::new(),
            canary => format!(" --canary {}", canary_name(canary)),
        };
        format!(
            "replikv sim --mode leaderless --n {} --w {} --r {} --conflicts {} --read-repair {} --fsync {} --seed {} \
             --steps {} --quiet-ms {} --clients {} --keys {}{anti_entropy}{} --faults '{}'{canary}",
            c.nwr.n,
            c.nwr.w,
            c.nwr.r,
            c.conflicts.as_str(),
            c.read_repair.as_str(),
            c.fsync.as_str(),
            c.seed,
            c.safety_ms,
            c.quiet_ms,
            c.clients,
            c.keys,
            if c.sessions { " --sessions" } else { "" },
            c.faults.spec()
        )
    }
}

/// The `--canary` name of a leaderless canary.
pub fn canary_name(canary: Canary) -> &'static str {
    match canary {
        Canary::None => "none",
        Canary::CountAckTwice => "count-ack-twice",
        Canary::OlderOverwrites => "older-overwrites",
        Canary::RepairWithFirstReply => "repair-with-first-reply",
        Canary::ExchangeSkipsSubtree => "exchange-skips-subtree",
        Canary::TreeNotUpdatedOnRepair => "tree-not-updated-on-repair",
        Canary::SessionFloorIgnored => "session-floor-ignored",
        Canary::TokenForgetsRead => "token-forgets-read",
    }
}

/// The convergence checker's name: by read repair (the quiet phase reads every key) or, with
/// anti-entropy on, by anti-entropy alone (it reads nothing).
pub fn converge_checker(config: &Config) -> &'static str {
    match config.anti_entropy_ms {
        0 => "replicas converge by read repair",
        _ => "replicas converge by anti-entropy alone",
    }
}

/// The checker that every node's Merkle tree says what its store holds (anti-entropy on).
pub const TREES_CHECKER: &str = "every tree matches its store";

/// The checker that no tombstone is purged while a replica lacks it (anti-entropy on).
pub const PURGE_CHECKER: &str = "no tombstone purged while a replica lacks it";

/// What the checkers judge a finished run by.
struct Evidence<'a> {
    /// The setup.
    config: &'a Config,
    /// The world, after its quiet phase.
    world: &'a World,
    /// Its writes, with their stamps.
    writes: Writes<'a>,
    /// Each node's final states.
    states: Vec<checks::States>,
    /// A node merged siblings away past the bound.
    bound_dropped: bool,
}

/// Runs `config` and judges it.
pub fn run(config: Config) -> Report {
    let mut world = World::new(config.clone());
    let converged = world.run().and_then(|()| world.converged());
    let trees = match config.anti_entropy_ms {
        0 => Verdict::NotApplicable,
        _ => world.trees_match_stores().map_or_else(Verdict::Fail, |()| Verdict::Pass),
    };
    let states = world.final_states();
    let counters = world.counters();
    let bound_dropped = counters.siblings_dropped > 0;
    let mut writes = Writes::new(&world.history, &world.stamps);
    for r in &world.rollbacks {
        writes.lost_unsent(world.id(r.node), &r.key, |dot| r.lost(dot));
    }
    let e = Evidence { config: &config, world: &world, writes, states, bound_dropped };
    let mut anomalies = Anomalies::default();
    let verdicts = vec![
        crate::run::no_failure(world.broken()),
        (converge_checker(&config).to_string(), converged.map_or_else(Verdict::Fail, |()| Verdict::Pass)),
        (TREES_CHECKER.to_string(), trees),
        (
            PURGE_CHECKER.to_string(),
            match config.anti_entropy_ms {
                0 => Verdict::NotApplicable,
                _ => Verdict::from_failures(&world.purge_violations),
            },
        ),
        e.newest_write_read(&mut anomalies),
        e.deletes_stay_deleted(&mut anomalies),
        e.writes_accounted(&mut anomalies),
    ];
    if config.conflicts == replikv_core::leaderless::Conflicts::Lww {
        anomalies.older_overwrites = checks::older_overwrites(&world.history, &e.writes).len() as u64;
    }
    let lost_acknowledged =
        |r: &Rollback| e.writes.dots_of(&r.key).any(|dot| r.lost(dot) && e.writes.acknowledged_dot(&r.key, dot));
    anomalies.came_back_older = world.rollbacks.iter().filter(|r| lost_acknowledged(r)).count() as u64;
    let written = world.history.events.iter().filter(|e| e.outcome.is_written()).count() as u64;
    let mut verdicts = verdicts;
    let judged = checks::sessions::check(&world.history, &world.sessions);
    for anomaly in checks::sessions::ANOMALIES {
        let verdict = if !config.sessions || config.fsync == Fsync::Never {
            // Without durability a restart may take back what a session wrote or read.
            Verdict::NotApplicable
        } else {
            Verdict::from_failures(judged.violations.get(&anomaly).map_or(&[][..], Vec::as_slice))
        };
        verdicts.push((session_checker(anomaly).to_string(), verdict));
    }
    let judgement = world.judge(verdicts);
    let sessions = judged.figures;
    Report { stamped: world.stamps.len() as u64, written, counters, anomalies, sessions, judgement, config }
}

impl Evidence<'_> {
    /// (b): its misses fail where promised (`w + r > n`, durable writes) and are figures
    /// elsewhere; a miss of a write a restart had lost counts as the failing node's.
    fn newest_write_read(&self, anomalies: &mut Anomalies) -> (String, Verdict) {
        let misses = checks::stale_reads(&self.world.history, &self.writes);
        anomalies.stale_reads = misses.len() as u64;
        let lost_before =
            |m: &checks::Miss, r: &Rollback| r.key == m.key && r.at_ms <= m.read_complete_ms && r.lost(m.dot);
        anomalies.stale_after_rollback =
            misses.iter().filter(|m| self.world.rollbacks.iter().any(|r| lost_before(m, r))).count() as u64;
        let promised = self.config.nwr.overlaps() && self.config.fsync == Fsync::Always;
        let why: Vec<String> = misses.into_iter().map(|m| m.why).collect();
        let verdict = if promised { Verdict::from_failures(&why) } else { Verdict::NotApplicable };
        ("reads see the newest acknowledged write".to_string(), verdict)
    }

    /// (c): in reads where (b) is promised, and in the final states; a figure where writes
    /// are not durable.
    fn deletes_stay_deleted(&self, anomalies: &mut Anomalies) -> (String, Verdict) {
        let mut resurrected = match self.config.nwr.overlaps() {
            true => checks::resurrections(&self.world.history, &self.writes),
            false => Vec::new(),
        };
        resurrected.extend(checks::resurrected_in_final_states(&self.states, &self.writes));
        anomalies.resurrections = resurrected.len() as u64;
        let verdict = match self.config.fsync {
            Fsync::Always => Verdict::from_failures(&resurrected),
            Fsync::Never => Verdict::NotApplicable,
        };
        ("acknowledged deletes stay deleted".to_string(), verdict)
    }

    /// (d): the sibling bound always; the accounting of every write where writes are
    /// durable (elsewhere lost and clashing writes are a figure).
    fn writes_accounted(&self, anomalies: &mut Anomalies) -> (String, Verdict) {
        let mut found = checks::unaccounted_writes(&self.states, &self.writes, self.bound_dropped);
        let in_reads = checks::unaccounted_in_reads(&self.world.history, &self.writes, self.bound_dropped);
        found.over_bound.extend(in_reads.over_bound);
        found.vanished.extend(in_reads.vanished);
        anomalies.lost_writes = (found.lost.len() + found.clashes.len()) as u64;
        let mut failures = found.over_bound;
        if self.config.fsync == Fsync::Always {
            failures.extend(found.clashes.into_iter().chain(found.vanished).chain(found.lost));
        }
        ("siblings bounded, every write kept or merged".to_string(), Verdict::from_failures(&failures))
    }
}

#[cfg(test)]
mod tests;
