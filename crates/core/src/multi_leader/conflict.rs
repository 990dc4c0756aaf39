//! Conflicts between leaders, detected the lecture's way and resolved by a rule every leader
//! shares (slides "Conflict", "Conflict Detection", "Conflict Resolution"; DESIGN §7).
//!
//! # Detection
//!
//! The lecture: "a change carries both new and old value; a conflict occurred if the old
//! value differs". Here a key's state is a [`Siblings`] (dotted version vector): its context
//! is everything the writer had seen, so a change shipped between leaders (the key's state
//! after the write, [`receive`]) carries the versions it replaced (its context without its own
//! dot: the lecture's old value) and its new version (its dot). The receiving leader compares:
//!
//! - the change has seen everything the receiver holds: it replaces the receiver's state
//!   (no conflict; "the old value" matches);
//! - the receiver has seen everything in the change: nothing to do (a duplicate, or a change
//!   the receiver already has, through another leader);
//! - each holds a write the other had not seen: **a conflict**. Version vectors, not
//!   timestamps, tell this apart from "one saw the other", so a late but causally newer write
//!   is never mistaken for a conflict, and a concurrent one never for an overwrite.
//!
//! # Resolution
//!
//! A [`Rules`] names one [`Resolve`] per key (a default, and overrides by the longest
//! matching key prefix), and every leader must hold the same rules ([`Rules::fingerprint`]):
//!
//! - **`lww`** (last write wins): only the sibling of the highest [`Version`] (HLC time, ties
//!   by node id) survives ([`Siblings::keep_winner`]); every other is lost to the key and
//!   listed in [`Conflict::lost`], which the node writes to its conflict log (nothing lost in
//!   silence). Where versions follow causality (every leader's clock observes what it
//!   receives), pruning on arrival ends where merging everything first and then pruning
//!   would, so leaders converge whatever order changes reach them in.
//! - **`merge`** (the lecture's "order the values alphabetically and store both
//!   concatenated"): every concurrent value survives as a sibling, and a read renders them
//!   ([`read`]): the distinct live values sorted bytewise and joined by the separator. The
//!   rendering is a function of the merged state, never stored as a new write (two leaders
//!   storing their own merge would conflict again, for ever), so it is deterministic,
//!   commutative, associative and idempotent: any arrival order, with duplicates, renders the
//!   same value, holding each concurrent value once. A delete concurrent with a write loses
//!   to it; a client that writes after reading the merged value replaces all of it.
//! - **`app`** (application-managed): every concurrent version is kept as a sibling; a read
//!   of a key with more than one is an error that names how many, REPLIKV.SIBLINGS lists
//!   them with their context, and a write with that context resolves them (the leaderless
//!   family's shape).
//!
//! A key never keeps more than [`crate::causality::SIBLINGS_MAX`] siblings: past it the
//! oldest are dropped, and [`receive`] lists them in [`Conflict::lost`] too.
//!
//! CAVEATS
//! - Leaders whose rules differ do not converge: the peer handshake must compare
//!   [`Rules::fingerprint`]s and refuse a mismatch.
//! - `lww` is only as good as the clocks: a leader whose clock runs ahead wins every
//!   conflict until the others catch up (the lecture's warning); the node holds back a change
//!   stamped too far ahead of its own clock ([`ahead_by`]).
//! - Past the sibling bound (`merge`, `app`), which siblings are dropped can depend on arrival
//!   order (see [`crate::causality`]'s caveats): two leaders that merged in different orders
//!   may keep different siblings for good. Each lists what it dropped in its conflict log.

use super::canary::Canary;
use crate::causality::{Dot, Sibling, Siblings};
use crate::error::{Error, Result};
use crate::version::Version;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Prefix overrides a [`Rules`] holds at most.
pub const PREFIX_RULES_MAX: usize = 256;

/// Bytes a rule's key prefix may take.
pub const PREFIX_BYTES_MAX: usize = 1024;

/// Bytes the merge separator may take.
pub const SEPARATOR_BYTES_MAX: usize = 64;

/// The merge separator by default: the lecture's values joined as `me-new.jpg,me-old2.jpg`.
pub const SEPARATOR_DEFAULT: &str = ",";

/// How concurrent writes of a key are resolved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Resolve {
    /// The highest version wins; the losers go to the conflict log.
    #[default]
    Lww,
    /// The concurrent values, sorted and joined by the separator.
    Merge,
    /// Every concurrent value kept as a sibling, for the application to resolve.
    App,
}

impl Resolve {
    /// Every resolution, for messages listing the valid values.
    pub const ALL: [Resolve; 3] = [Resolve::Lww, Resolve::Merge, Resolve::App];

    /// The setting's value: `lww`, `merge` or `app`.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolve::Lww => "lww",
            Resolve::Merge => "merge",
            Resolve::App => "app",
        }
    }

    /// The resolution a setting names, or an error listing the valid values.
    pub fn parse(value: &str) -> std::result::Result<Resolve, String> {
        Resolve::ALL.into_iter().find(|r| r.as_str() == value).ok_or_else(|| {
            let valid: Vec<&str> = Resolve::ALL.iter().map(|r| r.as_str()).collect();
            format!("unknown conflict resolution {value:?}: valid values are {}", valid.join(", "))
        })
    }
}

impl fmt::Display for Resolve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which resolution each key gets: a default, overridden by the longest matching key prefix,
/// and the separator `merge` joins values with. Every leader of a cluster must hold the same.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// For keys no prefix matches.
    default: Resolve,
    /// Prefix overrides, sorted by prefix, no prefix twice.
    prefixes: BTreeMap<Bytes, Resolve>,
    /// What `merge` puts between two values.
    separator: Bytes,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules::new(Resolve::default())
    }
}

impl Rules {
    /// `default` for every key, values merged with [`SEPARATOR_DEFAULT`].
    pub fn new(default: Resolve) -> Rules {
        Rules { default, prefixes: BTreeMap::new(), separator: Bytes::from_static(SEPARATOR_DEFAULT.as_bytes()) }
    }

    /// Sets the separator `merge` joins values with: 1 to [`SEPARATOR_BYTES_MAX`] bytes.
    pub fn set_separator(&mut self, separator: &[u8]) -> Result<()> {
        if separator.is_empty() || separator.len() > SEPARATOR_BYTES_MAX {
            return Err(Error::InvalidInput(format!(
                "merge separator of {} bytes: it must take 1 to {SEPARATOR_BYTES_MAX}",
                separator.len()
            )));
        }
        self.separator = Bytes::copy_from_slice(separator);
        Ok(())
    }

    /// Resolves keys starting with `prefix` by `resolve` (the longest matching prefix wins).
    /// Refused: an empty prefix (that is the default), one over [`PREFIX_BYTES_MAX`], one
    /// given twice, or more than [`PREFIX_RULES_MAX`].
    pub fn add_prefix(&mut self, prefix: &[u8], resolve: Resolve) -> Result<()> {
        let bad = |why: String| Err(Error::InvalidInput(why));
        if prefix.is_empty() {
            return bad("an empty conflict prefix matches every key: set the default resolution instead".into());
        }
        if prefix.len() > PREFIX_BYTES_MAX {
            return bad(format!(
                "conflict prefix of {} bytes, over PREFIX_BYTES_MAX ({PREFIX_BYTES_MAX})",
                prefix.len()
            ));
        }
        if let Some(given) = self.prefixes.get(prefix) {
            let shown = String::from_utf8_lossy(prefix);
            return bad(format!("conflict prefix {shown:?} is given twice ({given} and {resolve})"));
        }
        if self.prefixes.len() >= PREFIX_RULES_MAX {
            return bad(format!("more than PREFIX_RULES_MAX ({PREFIX_RULES_MAX}) conflict prefixes"));
        }
        self.prefixes.insert(Bytes::copy_from_slice(prefix), resolve);
        Ok(())
    }

    /// How `key`'s conflicts are resolved.
    pub fn for_key(&self, key: &[u8]) -> Resolve {
        // A matching prefix sorts at or before the key; of those, the longest match is the
        // last one that is a prefix (a longer match sorts after a shorter one).
        self.prefixes
            .range(..=Bytes::copy_from_slice(key))
            .rev()
            .find(|(p, _)| key.starts_with(p))
            .map_or(self.default, |(_, r)| *r)
    }

    /// The default resolution.
    pub fn default_resolve(&self) -> Resolve {
        self.default
    }

    /// The prefix overrides, by prefix.
    pub fn prefixes(&self) -> impl Iterator<Item = (&Bytes, Resolve)> + '_ {
        self.prefixes.iter().map(|(p, r)| (p, *r))
    }

    /// What `merge` joins values with.
    pub fn separator(&self) -> &[u8] {
        &self.separator
    }

    /// A hash of the whole rule set: leaders compare it at the handshake, as leaders with
    /// different rules would never converge.
    pub fn fingerprint(&self) -> u64 {
        let bytes = postcard::to_allocvec(self).expect("postcard encodes rules");
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }
}

/// A conflict one leader detected on receiving a change: what it held, what arrived, and
/// what the resolution kept and lost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// The rule that resolved it.
    pub resolve: Resolve,
    /// The receiver's writes the change had not seen: the lecture's "old value differs".
    pub held: Vec<Sibling>,
    /// The change's writes the receiver had not seen.
    pub arrived: Vec<Sibling>,
    /// The writes that survive: `lww`'s winner, or every concurrent one.
    pub kept: Vec<Sibling>,
    /// The writes that no longer survive without a later write having seen them: `lww`'s
    /// losers, and the oldest siblings dropped past the bound. The conflict log keeps them.
    pub lost: Vec<Sibling>,
}

/// What [`receive`] did to a key's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// True when the state changed and must be stored.
    pub changed: bool,
    /// The conflict it found, if the change and the state were concurrent (or a write was
    /// lost to the sibling bound).
    pub conflict: Option<Conflict>,
    /// Dots both sides held with different writes: only a node that handed a dot out twice
    /// makes one (see [`crate::causality::MergeOutcome::clashes`]); log it loudly.
    pub clashes: usize,
}

/// Applies `change`, another leader's state of a key after its write, to this leader's
/// `state` of it, detecting and resolving a conflict by `resolve`. Deterministic; applying a
/// change twice, or changes in any order, ends in the same state. Refused, leaving the state
/// unchanged, when the joined context would pass the version vector's bound.
pub fn receive(state: &mut Siblings, change: &Siblings, resolve: Resolve) -> Result<Received> {
    receive_planted(state, change, resolve, Canary::None)
}

/// [`receive`], with a bug planted when `canary` says so (the simulator's canaries; a real
/// node passes [`Canary::None`]).
pub fn receive_planted(state: &mut Siblings, change: &Siblings, resolve: Resolve, canary: Canary) -> Result<Received> {
    let held: Vec<Sibling> = state.values().iter().filter(|s| !change.context().contains(s.dot)).cloned().collect();
    let arrived: Vec<Sibling> = change.values().iter().filter(|s| !state.context().contains(s.dot)).cloned().collect();
    // What the merge keeps before its bound: a write either side holds that the other has not
    // replaced (held by both, or not seen by the other).
    let mut candidates: BTreeMap<Dot, Sibling> = BTreeMap::new();
    for s in state.values().iter().filter(|s| change.holds(s.dot) || !change.context().contains(s.dot)) {
        candidates.insert(s.dot, s.clone());
    }
    for s in change.values().iter().filter(|s| !state.context().contains(s.dot)) {
        candidates.insert(s.dot, s.clone());
    }
    let mut merged = state.clone();
    let outcome = merged.merge(change)?;
    let concurrent = !held.is_empty() && !arrived.is_empty();
    let pruned = match resolve {
        // The planted bug: the arriving state replaces this one, whichever is newer.
        Resolve::Lww if concurrent && canary == Canary::KeepArriving => {
            merged = change.clone();
            1
        }
        Resolve::Lww => merged.keep_winner().len(),
        _ => 0,
    };
    let lost: Vec<Sibling> = candidates.into_values().filter(|s| !merged.holds(s.dot)).collect();
    let conflict = (concurrent || !lost.is_empty()).then(|| Conflict {
        resolve,
        held,
        arrived,
        kept: merged.values().to_vec(),
        lost: sorted(lost),
    });
    let changed = outcome.changed || pruned > 0;
    *state = merged;
    Ok(Received { changed, conflict, clashes: outcome.clashes })
}

/// Siblings by version, oldest first.
fn sorted(mut siblings: Vec<Sibling>) -> Vec<Sibling> {
    siblings.sort_by_key(|s| (s.version, s.dot));
    siblings
}

/// What a read of a key finds under its resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    /// No value: never written, deleted, or (under `merge`) only deletes survive.
    Nil,
    /// One value: `lww`'s winner, `merge`'s joined values, or `app`'s only sibling.
    Value(Bytes),
    /// Under `app`, concurrent siblings for the application to resolve.
    Siblings {
        /// How many survive.
        count: usize,
        /// How many of them are deletes.
        deletes: usize,
    },
}

/// What a read of `state` returns under `resolve`, merging with `separator`.
pub fn read(state: &Siblings, resolve: Resolve, separator: &[u8]) -> Read {
    let live = state.live().count();
    match resolve {
        Resolve::Lww => match state.winner().and_then(|w| w.value.clone()) {
            Some(value) => Read::Value(value),
            None => Read::Nil,
        },
        Resolve::Merge => {
            let mut values: Vec<&Bytes> = state.live().filter_map(|s| s.value.as_ref()).collect();
            values.sort();
            values.dedup();
            match values.as_slice() {
                [] => Read::Nil,
                [one] => Read::Value((*one).clone()),
                many => Read::Value(Bytes::from(many.iter().map(|v| v.as_ref()).collect::<Vec<_>>().join(separator))),
            }
        }
        Resolve::App if live == 0 => Read::Nil,
        Resolve::App if state.values().len() == 1 => {
            Read::Value(state.values()[0].value.clone().expect("one sibling, and it is live"))
        }
        Resolve::App => Read::Siblings { count: state.values().len(), deletes: state.values().len() - live },
    }
}

/// How many milliseconds `version` is stamped ahead of `now_ms` past `allowance_ms`, if it
/// is: a change stamped that far ahead of the receiver's clock is held back until the clock
/// catches up, so that no leader's fast clock wins `lww` by more than the allowance.
pub fn ahead_by(version: Version, now_ms: u64, allowance_ms: u64) -> Option<u64> {
    let limit = now_ms.saturating_add(allowance_ms);
    (version.ts.millis > limit).then(|| version.ts.millis - limit)
}

#[cfg(test)]
mod tests;
