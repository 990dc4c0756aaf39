//! The multi-leader checkers: pure functions of a run's history, the oracle's stamps, the
//! final states every node holds, every node's conflict log and rollback log.
//!
//! # "Concurrent" and "overwritten"
//!
//! A write's stamp names the context it replaced (everything its leader had seen of the key,
//! or the token a `SET ... CONTEXT` carried). A write X is **overwritten** when some other
//! write's replaced context covers X's dot: that writer had seen X and chose to replace it.
//! A write no other write had seen is **concurrent** (with whatever else survives): the rule
//! must resolve it, and may not silently drop it.
//!
//! # The checkers
//!
//! - [`divergence`]: after the quiet phase every node of every datacenter holds the same
//!   state of every client key.
//! - [`lww_losers`] (`lww`): an acknowledged write that a node's final state no longer holds
//!   was overwritten, or lost a conflict: then some conflict log lists it as lost, and the
//!   write that conflict kept has a higher version (a rule that keeps the lower version, or
//!   whichever arrived, fails here or in convergence).
//! - [`merged_once`] (`merge`): every acknowledged concurrent SET's value is among the live
//!   values the final state renders, exactly once.
//! - [`siblings_kept`] (`app`): every acknowledged concurrent write (deletes included) is a
//!   sibling of the final state.
//!
//! An acknowledged write that a failover inside its datacenter cut (found in a rollback log)
//! is excused where the datacenter's acknowledgements do not survive failover, and counted.
//! A write dropped past the sibling bound is listed in the conflict log as lost, which
//! excuses it under `merge` and `app` too.
//!
//! CAVEATS
//! - A write the oracle did not see stamped is left out: in practice only a DEL of a key
//!   its leader holds no value of, which writes nothing (a few percent of acknowledged
//!   writes in a sweep).
//! - The conflict logs are read [`CONFLICTS_LISTED_MAX`] entries per key and node: a run
//!   with more conflicts than that on one key could report a logged loser as missing.
//!
//! [`CONFLICTS_LISTED_MAX`]: replikv_core::multi_leader::conflict_log::CONFLICTS_LISTED_MAX

use crate::leaderless::history::{LeaderlessHistory, Stamp};
use replikv_core::causality::Siblings;
use replikv_core::multi_leader::ConflictEntry;
use std::collections::BTreeMap;

/// One node's final states: key -> state.
pub type States = BTreeMap<String, Siblings>;

/// What the write checkers are handed: the run's evidence.
pub struct Evidence<'a> {
    /// What the clients did and saw.
    pub history: &'a LeaderlessHistory,
    /// The oracle's stamps, by write number.
    pub stamps: &'a BTreeMap<u64, Stamp>,
    /// Each node's final states.
    pub states: &'a [States],
    /// Every conflict log entry of every node.
    pub conflicts: &'a [ConflictEntry],
    /// Every state cut at a failover inside a datacenter: (key, state).
    pub rolled_back: &'a [(String, Siblings)],
    /// Writes in a rollback log are excused (the datacenters' acknowledgements do not
    /// survive failover).
    pub excuse_rolled_back: bool,
}

/// What the write checkers counted beside their failures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    /// Acknowledged writes the oracle saw stamped.
    pub acknowledged: u64,
    /// Of them, writes no other write had seen (concurrent).
    pub concurrent: u64,
    /// Acknowledged writes lost to a higher version under `lww`, each listed as lost.
    pub lost_to_lww: u64,
    /// Acknowledged writes a failover inside their datacenter cut (excused).
    pub rolled_back: u64,
}

impl Figures {
    /// Adds `other`'s counts to these (a sweep's totals).
    pub fn add(&mut self, other: &Figures) {
        crate::add_fields!(self, other; acknowledged, concurrent, lost_to_lww, rolled_back);
    }
}

/// The client keys whose states differ between nodes, each with every node's state.
pub fn divergence(states: &[States]) -> Vec<String> {
    let mut keys: Vec<&String> = states.iter().flat_map(|s| s.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut differ = Vec::new();
    for key in keys {
        let each: Vec<Option<&Siblings>> = states.iter().map(|s| s.get(key)).collect();
        if each.windows(2).any(|w| w[0] != w[1]) {
            let shown: Vec<String> =
                each.iter().enumerate().map(|(i, s)| format!("n{}: {}", i + 1, describe(*s))).collect();
            differ.push(format!("{key} differs ({})", shown.join("; ")));
        }
    }
    differ
}

/// A state, briefly: its values (write numbers, `-` for a tombstone) and how many writes it
/// has seen.
pub fn describe(state: Option<&Siblings>) -> String {
    let Some(state) = state else { return "none".into() };
    let values: Vec<String> = state
        .values()
        .iter()
        .map(|s| s.value.as_ref().map_or("-".into(), |v| String::from_utf8_lossy(v).into_owned()))
        .collect();
    let seen: u64 = state.context().entries().map(|(_, c)| c).sum();
    format!("[{}] after {seen} writes", values.join(" "))
}

/// An acknowledged write and its stamp.
struct Acked<'a> {
    /// Its number.
    write: u64,
    /// Its stamp.
    stamp: &'a Stamp,
    /// Some other write had seen it.
    overwritten: bool,
}

impl<'a> Evidence<'a> {
    /// The acknowledged writes the oracle stamped, oldest number first.
    fn acknowledged(&self) -> Vec<Acked<'a>> {
        let mut acked: Vec<Acked<'a>> = self
            .history
            .events
            .iter()
            .filter(|e| e.outcome.is_written())
            .filter_map(|e| e.op.write())
            .filter_map(|write| self.stamps.get(&write).map(|stamp| (write, stamp)))
            .map(|(write, stamp)| Acked { write, stamp, overwritten: self.overwritten(write, stamp) })
            .collect();
        acked.sort_by_key(|a| a.write);
        acked
    }

    /// True when a write other than `write` had seen it (its replaced context covers its dot).
    fn overwritten(&self, write: u64, stamp: &Stamp) -> bool {
        self.stamps
            .iter()
            .any(|(w, s)| *w != write && s.key == stamp.key && s.dot != stamp.dot && s.replaced.contains(stamp.dot))
    }

    /// True when `stamp`'s write is in a rollback log and that is excused.
    fn excused_rollback(&self, stamp: &Stamp) -> bool {
        self.excuse_rolled_back && self.rolled_back.iter().any(|(key, s)| *key == stamp.key && s.holds(stamp.dot))
    }

    /// The conflict log entries of `stamp`'s key that list its write as lost.
    fn logged_lost(&self, stamp: &Stamp) -> Vec<&'a ConflictEntry> {
        self.conflicts
            .iter()
            .filter(|e| e.key.as_ref() == stamp.key.as_bytes())
            .filter(|e| e.lost.iter().any(|l| l.origin == stamp.dot.node && l.version == stamp.version))
            .collect()
    }

    /// The counts every write checker shares: acknowledged, concurrent, rolled back.
    pub fn figures(&self) -> Figures {
        let acked = self.acknowledged();
        let missing = |a: &Acked| self.states.iter().any(|s| s.get(&a.stamp.key).is_none_or(|s| !s.holds(a.stamp.dot)));
        Figures {
            acknowledged: acked.len() as u64,
            concurrent: acked.iter().filter(|a| !a.overwritten).count() as u64,
            lost_to_lww: 0,
            rolled_back: acked.iter().filter(|a| !a.overwritten && missing(a) && self.excused_rollback(a.stamp)).count()
                as u64,
        }
    }

    /// For each node, the acknowledged writes that must still be there (concurrent, not
    /// excused) and are not: (node, write).
    fn missing_concurrent(&self) -> Vec<(usize, Acked<'a>)> {
        let mut missing = Vec::new();
        for a in self.acknowledged().into_iter().filter(|a| !a.overwritten && !self.excused_rollback(a.stamp)) {
            if let Some(i) = self.states.iter().position(|s| s.get(&a.stamp.key).is_none_or(|s| !s.holds(a.stamp.dot)))
            {
                missing.push((i, a));
            }
        }
        missing
    }
}

/// `lww`: every acknowledged write no longer held was overwritten, or lost a conflict to a
/// higher version and is listed as lost in a conflict log. Returns the failures and how many
/// writes were lost (and logged).
pub fn lww_losers(e: &Evidence) -> (Vec<String>, u64) {
    let (mut failures, mut lost) = (Vec::new(), 0);
    for (i, a) in e.missing_concurrent() {
        let s = a.stamp;
        let entries = e.logged_lost(s);
        let name =
            format!("write #{} of {} (dot {}:{}, version {})", a.write, s.key, s.dot.node, s.dot.counter, s.version);
        if entries.is_empty() {
            failures.push(format!(
                "{name} is gone from n{}'s final state ({}), no write had seen it, and no conflict log lists it as lost",
                i + 1,
                describe(e.states[i].get(&s.key))
            ));
            continue;
        }
        let older =
            entries.iter().find(|entry| entry.kept.iter().map(|k| k.version).max().is_none_or(|v| v < s.version));
        match older {
            Some(entry) => failures.push(format!(
                "{name} lost a conflict at datacenter {}'s leader to a lower version: kept {:?}",
                entry.from_datacenter,
                entry.kept.iter().map(|k| k.version.to_string()).collect::<Vec<_>>()
            )),
            None => lost += 1,
        }
    }
    (failures, lost)
}

/// `merge`: every acknowledged concurrent SET's value is a live value of every node's final
/// state exactly once (what a read renders, joined).
pub fn merged_once(e: &Evidence) -> Vec<String> {
    let mut failures = Vec::new();
    for a in e.acknowledged().into_iter().filter(|a| !a.overwritten && !a.stamp.delete) {
        if e.excused_rollback(a.stamp) || !e.logged_lost(a.stamp).is_empty() {
            continue; // cut by a failover that does not promise it, or dropped past the bound (logged)
        }
        let value = a.write.to_string();
        for (i, states) in e.states.iter().enumerate() {
            let state = states.get(&a.stamp.key);
            let times = state.map_or(0, |s| s.live().filter(|l| l.value.as_deref() == Some(value.as_bytes())).count());
            if times != 1 {
                failures.push(format!(
                    "write #{} of {}, which no other write had seen, is {times} times in n{}'s merged value ({})",
                    a.write,
                    a.stamp.key,
                    i + 1,
                    describe(state)
                ));
                break;
            }
        }
    }
    failures
}

/// `app`: every acknowledged concurrent write is a sibling of every node's final state.
pub fn siblings_kept(e: &Evidence) -> Vec<String> {
    e.missing_concurrent()
        .into_iter()
        .filter(|(_, a)| e.logged_lost(a.stamp).is_empty())
        .map(|(i, a)| {
            format!(
                "write #{} of {}, which no other write had seen, is not among n{}'s siblings ({})",
                a.write,
                a.stamp.key,
                i + 1,
                describe(e.states[i].get(&a.stamp.key))
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;
