//! The leaderless checkers (issue 13 point 16) and the lecture's anomalies as figures (point
//! 17), as pure functions of a run's history, the oracle's stamps and the final states.
//!
//! # What "newer" means
//!
//! Real time cannot order leaderless writes: under `lww` a write stamped by a node whose clock
//! runs behind loses to an older one stamped ahead (the lecture's "clock skew can cause older
//! values to overwrite newer values"), and that is the protocol, not a bug. So the checkers
//! order writes as the protocol does, from the oracle's stamps:
//!
//! - under `lww`, by **version**: a read must return a write whose version is at least the
//!   highest version among the writes acknowledged before it began. A quorum that overlaps
//!   the write's holds it or a write that replaced it (whose coordinator had seen it, so its
//!   version is higher); merging keeps the highest version.
//! - under `siblings`, by **causality**: the context a read returns must cover the dot of every
//!   write acknowledged before the read began.
//!
//! Where version order and real time disagree (a write acknowledged before another began,
//! yet stamped higher), the later write is overwritten by an older one: that is counted
//! ([`older_overwrites`]), never failed. Without skew and drift the two orders agree (every
//! clock reads virtual time, and a stamp is taken between a write's invocation and its
//! acknowledgement), so the count is then 0.
//!
//! # The checkers
//!
//! - (b) [`stale_reads`]: with `w + r > n`, a read that begins after a write was
//!   acknowledged sees it or a newer one (above). A nil under `lww` needs a delete at least
//!   as new, invoked before the read ended (acknowledged or not: an indeterminate write may
//!   take effect at any time). With `w + r <= n` the same misses are the figure "reads that
//!   missed the newest acknowledged write".
//! - (c) [`resurrections`] and [`resurrected_in_final_states`]: a value whose dot an
//!   acknowledged delete replaced never comes back, in a read that began after the delete
//!   was acknowledged (`w + r > n`) or in any replica's final state. A write made after the
//!   delete, or concurrent with it, is a new dot and may live on.
//! - (d) [`unaccounted_writes`] and [`unaccounted_in_reads`]: no state holds more than
//!   [`SIBLINGS_MAX`] siblings, and every write a state has seen (its context covers the
//!   dot) is there as a sibling, or was replaced by a write that had seen it and is seen
//!   too, or was merged away by the sibling bound (the nodes count those). No two writes get
//!   one dot, and no acknowledged write is missing from every final state.
//! - (a), convergence, is judged by the world (every node's Merkle root after the quiet
//!   phase's reads).
//!
//! CAVEATS
//! - A write the oracle did not see stamped (none, in practice: only a write merged away by
//!   the bound the moment it was made) is left out of every check.
//! - A nil read under `lww` is excused by any delete at least as new: the checker cannot tell
//!   which tombstone the read saw.
//! - Writes merged away by the sibling bound are not named by the nodes; when any node
//!   counted such a merge, an unaccounted write is reported as merged, not failed.

use super::history::{LeaderlessHistory, Op, Outcome, Seen, Stamp};
use crate::history::Event;
use replikv_core::causality::{Dot, Siblings, VersionVector, SIBLINGS_MAX};
use replikv_core::version::{NodeId, Version};
use std::collections::{BTreeMap, BTreeSet};

/// One leaderless operation of a history.
type LeaderlessEvent = Event<Op, Outcome>;

/// The writes of a run: each write's event and the oracle's stamp, by the write's number, and
/// indexed by key.
pub struct Writes<'a> {
    /// Write number -> its event.
    events: BTreeMap<u64, &'a LeaderlessEvent>,
    /// Write number -> its stamp.
    stamps: &'a BTreeMap<u64, Stamp>,
    /// Key -> its writes' numbers and events.
    events_by_key: BTreeMap<&'a str, Vec<(u64, &'a LeaderlessEvent)>>,
    /// Key -> its stamped writes.
    stamps_by_key: BTreeMap<&'a str, Vec<(u64, &'a Stamp)>>,
    /// (key, dot) -> the writes stamped with it (more than one: a dot handed out twice).
    by_dot: BTreeMap<(&'a str, Dot), Vec<u64>>,
    /// Writes their coordinator lost in a crash before they were durable, so before it sent
    /// them anywhere ([`Writes::lost_unsent`]).
    unsent: BTreeSet<u64>,
}

impl<'a> Writes<'a> {
    /// The writes of `history`, with their `stamps`.
    pub fn new(history: &'a LeaderlessHistory, stamps: &'a BTreeMap<u64, Stamp>) -> Writes<'a> {
        let mut writes = Writes {
            events: BTreeMap::new(),
            stamps,
            events_by_key: BTreeMap::new(),
            stamps_by_key: BTreeMap::new(),
            by_dot: BTreeMap::new(),
            unsent: BTreeSet::new(),
        };
        for e in &history.events {
            if let Some(write) = e.op.write() {
                writes.events.insert(write, e);
                writes.events_by_key.entry(e.op.key()).or_default().push((write, e));
            }
        }
        for (write, stamp) in stamps {
            writes.stamps_by_key.entry(stamp.key.as_str()).or_default().push((*write, stamp));
            writes.by_dot.entry((stamp.key.as_str(), stamp.dot)).or_default().push(*write);
        }
        writes
    }

    /// Records that `coordinator`, restarted, no longer has the writes of `key` that `lost`
    /// says it had before its crash: those it stamped itself and nobody acknowledged were never
    /// sent (a coordinator sends a write once it is durable), so they are gone, not vanished.
    /// Dots are drawn from the coordinator's clock, so a later write's context covers a lost
    /// one's dot: without this, every state that saw the later write would seem to have seen
    /// the lost one.
    pub fn lost_unsent(&mut self, coordinator: NodeId, key: &str, lost: impl Fn(Dot) -> bool) {
        let lost: Vec<u64> = self
            .of_key(key)
            .filter(|(w, s)| s.version.node == coordinator && lost(s.dot) && !self.acknowledged(*w))
            .map(|(w, _)| w)
            .collect();
        self.unsent.extend(lost);
    }

    /// The stamp of write `write`.
    fn stamp(&self, write: u64) -> Option<&'a Stamp> {
        self.stamps.get(&write)
    }

    /// The acknowledged writes of `key` that completed before `before_ms`, with their stamps.
    fn acknowledged_before(&self, key: &str, before_ms: u64) -> impl Iterator<Item = (u64, &'a Stamp)> + '_ {
        let events = self.events_by_key.get(key).map_or(&[][..], Vec::as_slice);
        events.iter().filter_map(move |(write, e)| {
            let done = e.outcome.is_written() && e.complete_ms.is_some_and(|c| c < before_ms);
            done.then(|| self.stamp(*write).map(|s| (*write, s))).flatten()
        })
    }

    /// True when write `write` was acknowledged.
    fn acknowledged(&self, write: u64) -> bool {
        self.events.get(&write).is_some_and(|e| e.outcome.is_written())
    }

    /// The dots stamped on writes of `key`.
    pub fn dots_of<'k>(&'k self, key: &'k str) -> impl Iterator<Item = Dot> + 'k {
        let from = (key, Dot { node: replikv_core::version::NodeId(0), counter: 0 });
        self.by_dot.range(from..).take_while(move |((k, _), _)| *k == key).map(|((_, dot), _)| *dot)
    }

    /// True when an acknowledged write of `key` was stamped with `dot`.
    pub fn acknowledged_dot(&self, key: &str, dot: Dot) -> bool {
        self.by_dot.get(&(key, dot)).is_some_and(|writes| writes.iter().any(|w| self.acknowledged(*w)))
    }

    /// When write `write` was invoked.
    fn invoked_ms(&self, write: u64) -> Option<u64> {
        self.events.get(&write).map(|e| e.invoke_ms)
    }

    /// When write `write` was acknowledged (`None`: it was not).
    fn acknowledged_ms(&self, write: u64) -> Option<u64> {
        self.events.get(&write).filter(|e| e.outcome.is_written()).and_then(|e| e.complete_ms)
    }

    /// The stamped writes of `key`.
    fn of_key(&self, key: &str) -> impl Iterator<Item = (u64, &'a Stamp)> + '_ {
        self.stamps_by_key.get(key).map_or(&[][..], Vec::as_slice).iter().copied()
    }

    /// Everything the writes of `key` that `context` covers replaced: a dot it covers was
    /// overwritten or deleted on purpose by a write the state has seen. (Each write's
    /// replaced context is a version vector, so their join covers exactly the dots one of them
    /// covers.)
    fn replaced_within(&self, key: &str, context: &VersionVector) -> VersionVector {
        let mut replaced = VersionVector::new();
        for (_, s) in self.of_key(key).filter(|(_, s)| context.contains(s.dot)) {
            replaced.merge(&s.replaced).expect("a simulated cluster has a few nodes, far under the entry limit");
        }
        replaced
    }
}

/// A node's simulated name (`n2`), from its id.
fn node_name(id: NodeId) -> String {
    (1..=NODES_NAMED_MAX)
        .find(|i| NodeId::from_name(&format!("n{i}")) == id)
        .map_or_else(|| id.to_string(), |i| format!("n{i}"))
}

/// Simulated nodes are named `n1` to this at most, in messages.
const NODES_NAMED_MAX: usize = 64;

/// A dot, briefly: `n2:16`.
fn dot_name(dot: Dot) -> String {
    format!("{}:{}", node_name(dot.node), dot.counter)
}

/// A version, briefly: `506.0@n1`.
fn version_name(version: Version) -> String {
    format!("{}.{}@{}", version.ts.millis, version.ts.logical, node_name(version.node))
}

/// The completed reads of a history: (event, what it saw).
fn reads(history: &LeaderlessHistory) -> impl Iterator<Item = (&LeaderlessEvent, &Seen, u64)> {
    history.events.iter().filter_map(|e| match (&e.outcome, e.complete_ms) {
        (Outcome::Read(seen), Some(complete)) => Some((e, seen, complete)),
        _ => None,
    })
}

/// A read that missed the newest acknowledged write of its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Miss {
    /// The key.
    pub key: String,
    /// The write it missed.
    pub missed: u64,
    /// The missed write's dot.
    pub dot: Dot,
    /// When the read ended.
    pub read_complete_ms: u64,
    /// What shows it.
    pub why: String,
}

/// (b) Every read that missed the newest write acknowledged before it began: by version under
/// `lww` (a read without a context), by causal context under `siblings`.
pub fn stale_reads(history: &LeaderlessHistory, writes: &Writes) -> Vec<Miss> {
    let mut misses = Vec::new();
    for (e, seen, complete) in reads(history) {
        let key = e.op.key();
        let missed = match &seen.context {
            Some(context) => missed_by_context(writes, key, e.invoke_ms, context),
            None => missed_by_version(writes, key, e.invoke_ms, complete, &seen.values),
        };
        if let Some((write, stamp, why)) = missed {
            let why = format!("read of {key} by client {} at t={}..{complete} {why}", e.client, e.invoke_ms);
            misses.push(Miss { key: key.to_string(), missed: write, dot: stamp.dot, read_complete_ms: complete, why });
        }
    }
    misses
}

/// A write of `key` acknowledged before `invoke_ms` whose dot `context` (a siblings read's)
/// does not cover, with why.
fn missed_by_context<'a>(
    writes: &Writes<'a>,
    key: &str,
    invoke_ms: u64,
    context: &VersionVector,
) -> Option<(u64, &'a Stamp, String)> {
    let (write, stamp) = writes.acknowledged_before(key, invoke_ms).find(|(_, s)| !context.contains(s.dot))?;
    let why = format!(
        "returned a context without write #{write} (dot {}), acknowledged at t={}",
        dot_name(stamp.dot),
        writes.acknowledged_ms(write).unwrap_or_default()
    );
    Some((write, stamp, why))
}

/// The highest-versioned write of `key` acknowledged before `invoke_ms`, if a GET that ended
/// at `complete_ms` returned `values` of a lower version, with why. A nil stands for the
/// newest delete invoked before the read ended.
fn missed_by_version<'a>(
    writes: &Writes<'a>,
    key: &str,
    invoke_ms: u64,
    complete_ms: u64,
    values: &[u64],
) -> Option<(u64, &'a Stamp, String)> {
    let (newest, stamp) = writes.acknowledged_before(key, invoke_ms).max_by_key(|(_, s)| s.version)?;
    let returned = match values.first() {
        Some(value) => writes.stamp(*value).map(|s| (s.version, format!("#{value}"))),
        None => writes
            .of_key(key)
            .filter(|(w, s)| s.delete && writes.invoked_ms(*w).is_some_and(|at| at < complete_ms))
            .max_by_key(|(_, s)| s.version)
            .map(|(w, s)| (s.version, format!("nil (delete #{w} at best)"))),
    };
    if returned.as_ref().is_some_and(|(version, _)| *version >= stamp.version) {
        return None;
    }
    let returned = match returned {
        Some((version, what)) => format!("{what} (version {})", version_name(version)),
        None => format!("{values:?}, which no write explains"),
    };
    let why = format!(
        "returned {returned} but write #{newest} (version {}) was acknowledged at t={}",
        version_name(stamp.version),
        writes.acknowledged_ms(newest).unwrap_or_default()
    );
    Some((newest, stamp, why))
}

/// (17) The acknowledged writes that a later read found overwritten by an older one: the
/// read returned a write acknowledged before this one began, whose version is higher (only a
/// clock ahead stamps that). Under `lww` only; reads that [`stale_reads`] fails are left out.
pub fn older_overwrites(history: &LeaderlessHistory, writes: &Writes) -> BTreeSet<u64> {
    let mut overwritten = BTreeSet::new();
    for (e, seen, _) in reads(history) {
        let (None, [value]) = (&seen.context, seen.values.as_slice()) else { continue };
        let (Some(stamp), Some(acked_ms)) = (writes.stamp(*value), writes.acknowledged_ms(*value)) else { continue };
        for (write, newer) in writes.acknowledged_before(e.op.key(), e.invoke_ms) {
            let began_after = writes.invoked_ms(write).is_some_and(|at| acked_ms < at);
            if write != *value && began_after && stamp.version > newer.version {
                overwritten.insert(write);
            }
        }
    }
    overwritten
}

/// (c) Reads that returned a value an acknowledged delete had replaced before the read began.
pub fn resurrections(history: &LeaderlessHistory, writes: &Writes) -> Vec<String> {
    let mut found = Vec::new();
    for (e, seen, complete) in reads(history) {
        let key = e.op.key();
        let deletes: Vec<(u64, &Stamp)> =
            writes.acknowledged_before(key, e.invoke_ms).filter(|(_, s)| s.delete).collect();
        for value in &seen.values {
            let Some(stamp) = writes.stamp(*value) else { continue };
            if let Some((delete, _)) = deletes.iter().find(|(_, d)| d.replaced.contains(stamp.dot)) {
                found.push(format!(
                    "read of {key} by client {} at t={}..{complete} returned #{value}, which delete #{delete} \
                     (acknowledged at t={}) had replaced",
                    e.client,
                    e.invoke_ms,
                    writes.acknowledged_ms(*delete).unwrap_or_default()
                ));
            }
        }
    }
    found
}

/// One node's final states, by key.
pub type States = BTreeMap<String, Siblings>;

/// The write numbers a state's live values name (values that are not write numbers are
/// left out: the world reports those).
fn live_writes(state: &Siblings) -> impl Iterator<Item = (u64, Dot)> + '_ {
    state.live().filter_map(|s| {
        let value = std::str::from_utf8(s.value.as_ref()?).ok()?.parse().ok()?;
        Some((value, s.dot))
    })
}

/// (c) Live values in any node's final state that an acknowledged delete had replaced.
pub fn resurrected_in_final_states(states: &[States], writes: &Writes) -> Vec<String> {
    let mut found = Vec::new();
    for (node, keys) in states.iter().enumerate() {
        for (key, state) in keys {
            for (value, dot) in live_writes(state) {
                let delete =
                    writes.of_key(key).find(|(w, d)| d.delete && writes.acknowledged(*w) && d.replaced.contains(dot));
                if let Some((delete, _)) = delete {
                    found.push(format!(
                        "n{} ends with #{value} in {key}, which acknowledged delete #{delete} had replaced",
                        node + 1
                    ));
                }
            }
        }
    }
    found
}

/// What (d) found wrong: each kind apart, as a run with `fsync = never` expects some of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unaccounted {
    /// States or reads with more than [`SIBLINGS_MAX`] siblings.
    pub over_bound: Vec<String>,
    /// Dots handed out to two writes.
    pub clashes: Vec<String>,
    /// Writes a state has seen that are neither there nor replaced (nor merged by the bound).
    pub vanished: Vec<String>,
    /// Acknowledged writes no final state has seen.
    pub lost: Vec<String>,
    /// Writes missing but excused because some node merged siblings away past the bound.
    pub merged_by_bound: u64,
}

impl Unaccounted {
    /// Records `write` as missing from a state: vanished, or merged when the bound dropped any.
    fn missing(&mut self, bound_dropped: bool, why: String) {
        if bound_dropped {
            self.merged_by_bound += 1;
        } else {
            self.vanished.push(why);
        }
    }
}

/// (d) over the final states: siblings within the bound; every write a state has seen there,
/// replaced, or merged by the bound; no dot handed out twice; no acknowledged write unseen by
/// every node. `bound_dropped`: some node counted siblings merged away past the bound.
pub fn unaccounted_writes(states: &[States], writes: &Writes, bound_dropped: bool) -> Unaccounted {
    let mut found = Unaccounted::default();
    for ((key, dot), numbers) in &writes.by_dot {
        if numbers.len() > 1 {
            found.clashes.push(format!("writes {numbers:?} of {key} were all given dot {}", dot_name(*dot)));
        }
    }
    let mut seen_anywhere: BTreeSet<u64> = BTreeSet::new();
    for (node, keys) in states.iter().enumerate() {
        for (key, state) in keys {
            if state.values().len() > SIBLINGS_MAX {
                found.over_bound.push(format!("n{} holds {} siblings of {key}", node + 1, state.values().len()));
            }
            let replaced = writes.replaced_within(key, state.context());
            for (write, stamp) in writes.of_key(key) {
                if !state.context().contains(stamp.dot) || writes.unsent.contains(&write) {
                    continue;
                }
                seen_anywhere.insert(write);
                let held = state.values().iter().any(|s| s.dot == stamp.dot && s.version == stamp.version);
                if !held && !replaced.contains(stamp.dot) {
                    let why = format!(
                        "n{} has seen write #{write} of {key} (dot {}) but holds it nowhere, and no write it has seen \
                         replaced it",
                        node + 1,
                        dot_name(stamp.dot)
                    );
                    found.missing(bound_dropped, why);
                }
            }
        }
    }
    for (write, stamp) in writes.stamps {
        if writes.acknowledged(*write) && !seen_anywhere.contains(write) {
            found.lost.push(format!(
                "acknowledged write #{write} of {} (dot {}) is in no node's final state",
                stamp.key,
                dot_name(stamp.dot)
            ));
        }
    }
    found
}

/// (d) over the siblings reads: at most [`SIBLINGS_MAX`] values, and every write a read's
/// context covers among its values or replaced by a write it covers. Deletes are left out (a
/// read lists live values only).
pub fn unaccounted_in_reads(history: &LeaderlessHistory, writes: &Writes, bound_dropped: bool) -> Unaccounted {
    let mut found = Unaccounted::default();
    for (e, seen, complete) in reads(history) {
        let Some(context) = &seen.context else { continue };
        let key = e.op.key();
        let at = format!("read of {key} by client {} at t={}..{complete}", e.client, e.invoke_ms);
        if seen.values.len() > SIBLINGS_MAX {
            found.over_bound.push(format!("{at} returned {} siblings", seen.values.len()));
        }
        let replaced = writes.replaced_within(key, context);
        for (write, stamp) in writes.of_key(key) {
            let covered = context.contains(stamp.dot) && !writes.unsent.contains(&write);
            if stamp.delete || !covered || seen.values.contains(&write) {
                continue;
            }
            if !replaced.contains(stamp.dot) {
                let why = format!(
                    "{at} has seen write #{write} (dot {}) but returned neither it nor a write that replaced it",
                    dot_name(stamp.dot)
                );
                found.missing(bound_dropped, why);
            }
        }
    }
    found
}

pub mod sessions;

#[cfg(test)]
mod tests;
