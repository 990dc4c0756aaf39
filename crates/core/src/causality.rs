//! Causality for leaderless replication: dotted version vectors keyed by server node, so a
//! replica can tell a newer version of a key from a concurrent one (DESIGN §3, §7, §7a).
//!
//! A [`Version`] (HLC timestamp and origin node) orders every write, but it cannot say
//! whether the writer of "version 7" had seen "version 6" or wrote beside it without knowing.
//! The lecture's rule "version 7 beats version 6" is only right in the first case; in the
//! second, both are concurrent writes and both must be kept (as *siblings*) or one of them
//! chosen on purpose (last-write-wins). This module keeps the history needed to tell the two
//! apart, per key, and nothing else: it does no I/O and reads no clock.
//!
//! # Dots and contexts
//!
//! - A **dot** ([`Dot`]) names one write: `(node, counter)`, the `counter`-th write of that
//!   key coordinated by `node`. Only `node` hands out its dots, one after the other, so the
//!   dots of one node are `1, 2, 3, ...` with no gaps.
//! - A **version vector** ([`VersionVector`]) maps each node to a counter and stands for every
//!   dot `(node, c)` with `c <= counter`: a *causal context*, "everything I have seen". It
//!   *covers* ([`VersionVector::contains`]) a dot when it stands for it.
//! - One key's state on one replica is a [`Siblings`]: its context plus the writes that
//!   survive in it, each a [`Sibling`] (dot, version, value or tombstone). Every surviving dot
//!   is covered by the context; a dot the context covers that is not among the survivors was
//!   overwritten by a write that had seen it.
//!
//! # A write (the coordinator)
//!
//! A client reads a key and gets the state's context back as an opaque token
//! ([`encode_context`]); its next write carries that token. The coordinating replica
//! ([`Siblings::write`]) makes the dot `(coordinator, context[coordinator] + 1)`, drops every
//! sibling the client's context covers (the client saw those and replaces them), keeps the
//! rest as concurrent siblings, adds the new one, and joins the client's context and the new
//! dot into its own. A write with an empty context (a plain SET) replaces nothing: existing
//! values stay beside it as siblings, as in Riak. Under `conflicts = "lww"` the caller reads
//! the [`Siblings::winner`] (the highest version) and may pass its own context so that a
//! plain SET replaces what the coordinator holds.
//!
//! # A merge (every other replica)
//!
//! A replica applies another's state of the key ([`Siblings::merge`]: the coordinator's state
//! after a write, read repair, anti-entropy): it keeps a sibling of either side when the other
//! side holds the same dot, or when the other side's context does not cover it (the other
//! side has not seen it, so it cannot have replaced it); the contexts join. This merge is
//! commutative, associative and idempotent, so replicas that have exchanged their states hold
//! the same state whatever order, delay or duplication the messages met, and a write replaced
//! by one that had seen it never comes back. [`Siblings::compare`] tells read repair which of
//! two replicas is stale.
//!
//! # Why server-side dots (Riak's lesson, DESIGN §7a)
//!
//! Riak first keyed its version vectors by client id: they grew with every client ever seen,
//! truncating them lost causality, and retries by clients that had not read first piled up
//! siblings. Here the entries are server nodes, so a vector has at most one entry per node
//! that ever coordinated a write of the key ([`VERSION_VECTOR_ENTRIES_MAX`] refuses more,
//! never truncates); the dot on each value (the "dotted" part, Preguiça et al.) is what lets
//! one coordinator accept two concurrent writes without making either look older than the
//! other.
//!
//! # The sibling bound
//!
//! A key never keeps more than [`SIBLINGS_MAX`] siblings. A write or merge that would keep
//! more drops the oldest by [`Version`] (last-write-wins among them) and reports how many in
//! [`WriteOutcome::dropped`] / [`MergeOutcome::dropped`]: the caller counts and logs it,
//! never silent. Their dots stay in the context, so they never come back from a replica that
//! still holds them.
//!
//! # Tombstones
//!
//! A delete is a write whose value is `None` (a tombstone), carrying the context of what it
//! deletes. It replicates and merges like any write: a replica that missed the delete learns
//! from the tombstone's context that its old value was replaced, so the value does not come
//! back, and a write concurrent with the delete survives beside the tombstone.
//!
//! # Encodings
//!
//! A context crosses to clients as hex text ([`encode_context`], byte layout there) bound to
//! its key; a whole state is stored as one engine value ([`Siblings::to_bytes`]). Both decode
//! with validation (limits, sorted entries, no duplicate dots, every dot covered) and refuse
//! bad input with [`Error::InvalidInput`] naming what is wrong. Over the peer protocol the
//! types are serde (postcard); deserializing a [`VersionVector`] or [`Siblings`] runs the
//! same validation, though postcard keeps only "custom error", not the reason.
//!
//! CAVEATS
//! - Tombstones are never purged here: a key's state only grows into its context. The
//!   leaderless family purges them (`leaderless::tombstones`), forgetting the key's context;
//!   so its coordinators draw every dot from their clock ([`dot_floor`], [`Siblings::write_from`])
//!   and never hand out a forgotten dot again, which replicas that cover it would drop.
//! - A node that loses its data must come back under a new node id, for the same reason.
//! - Entries of nodes that left the cluster stay in contexts; nothing prunes them.
//! - A client context cannot be checked beyond its coordinator's own entry (a context naming
//!   more of the coordinator's dots than it handed out, or than its floor, is refused); a forged context that
//!   claims other nodes' future dots makes those writes vanish on merge. The same holds of a
//!   leaderless session's floor, which its writes join into their context
//!   (`crate::leaderless::session`). Tokens are bound to
//!   their key by a hash, which stops the honest mistake of using one key's context on another,
//!   not forgery.
//! - Past [`SIBLINGS_MAX`], which oldest siblings are dropped can depend on the order states
//!   met, so merge is no longer associative there; it stays commutative and idempotent, and
//!   replicas still converge once they have exchanged states.
//! - A write stamped with an older version than [`SIBLINGS_MAX`] concurrent siblings is the
//!   oldest and is dropped at once. The caller should let its clock observe
//!   [`Siblings::newest_version`] before stamping, so a write that replaces siblings also wins
//!   last-write-wins against them.
//! - [`Siblings::to_bytes`] refuses a state over [`SIBLINGS_BYTES_MAX`]: with large values, a
//!   few siblings can make a key too large to store, and the caller must refuse that write.

use crate::error::{Error, Result};
use crate::version::{NodeId, Version};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Entries a version vector may hold: one per server node that ever coordinated a write of
/// the key. Four times the server's node limit (64), as nodes replaced over a cluster's life
/// keep their entries; a vector past it comes from a bug or a hostile peer and is refused.
pub const VERSION_VECTOR_ENTRIES_MAX: usize = 256;

/// Concurrent siblings one key keeps; past it the oldest are dropped by last-write-wins.
pub const SIBLINGS_MAX: usize = 16;

/// Bytes a stored state may take ([`Siblings::to_bytes`]): it is stored as one engine value
/// and travels whole in one peer message.
pub const SIBLINGS_BYTES_MAX: usize = 48 * 1024 * 1024;

// A state travels whole in one peer frame (64 MiB), with room for the message around it.
const _: () = assert!(SIBLINGS_BYTES_MAX < 64 * 1024 * 1024 && SIBLINGS_BYTES_MAX <= crate::storage::VALUE_BYTES_MAX);

/// The first byte of a stored state ([`Siblings::to_bytes`]); a new layout takes a new one.
pub const SIBLINGS_FORMAT: u8 = 1;

/// The first byte of a context token ([`encode_context`]); a new layout takes a new one.
pub const CONTEXT_TOKEN_FORMAT: u8 = 1;

/// The most bytes postcard's varint takes for a `u64`.
const VARINT_U64_BYTES_MAX: usize = 10;

/// Bytes (hex characters) a context token may take: the fullest vector, in hex.
pub const CONTEXT_TOKEN_BYTES_MAX: usize =
    2 * (1 + 8 + VARINT_U64_BYTES_MAX + VERSION_VECTOR_ENTRIES_MAX * 2 * VARINT_U64_BYTES_MAX);

// A token must fit the server's default inline command limit (64 KiB) with room to spare.
const _: () = assert!(CONTEXT_TOKEN_BYTES_MAX <= 32 * 1024);
// Siblings are looked up by a linear scan (`Siblings::holds`), cheap only for a small bound.
const _: () = assert!(SIBLINGS_MAX >= 2 && SIBLINGS_MAX <= 1024);

/// One write of one key: the `counter`-th write of it coordinated by `node` (from 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// The server node that coordinated the write and handed out this dot.
    pub node: NodeId,
    /// The write's number among that node's writes of the key, from 1, without gaps.
    pub counter: u64,
}

/// How two causal histories relate, read as "self is ... other".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Causality {
    /// Both have seen exactly the same writes.
    Equal,
    /// Self happened before other: other has seen everything self has, and more.
    Before,
    /// Self happened after other: self has seen everything other has, and more.
    After,
    /// Each has seen a write the other has not.
    Concurrent,
}

/// A causal context: for each server node, how many of its writes of a key have been seen.
///
/// Stands for every dot `(node, c)` with `1 <= c <= counter`. Nodes at 0 are not stored, so
/// two vectors that stand for the same dots are equal. Serialized as a sequence of
/// `(node, counter)` pairs, nodes strictly increasing, counters at least 1, at most
/// [`VERSION_VECTOR_ENTRIES_MAX`] of them; deserializing checks all three.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "Vec<(NodeId, u64)>")]
pub struct VersionVector {
    /// Node to counter; never holds a 0 counter.
    entries: BTreeMap<NodeId, u64>,
}

impl VersionVector {
    /// The empty context: has seen nothing.
    pub fn new() -> VersionVector {
        VersionVector::default()
    }

    /// A vector from `(node, counter)` pairs, checked as a peer's input is: nodes strictly
    /// increasing, counters at least 1, at most [`VERSION_VECTOR_ENTRIES_MAX`] entries.
    pub fn from_entries(entries: Vec<(NodeId, u64)>) -> Result<VersionVector> {
        VersionVector::try_from(entries).map_err(Error::InvalidInput)
    }

    /// How many of `node`'s writes this context has seen (0 if none).
    pub fn get(&self, node: NodeId) -> u64 {
        self.entries.get(&node).copied().unwrap_or(0)
    }

    /// The `(node, counter)` entries, by node.
    pub fn entries(&self) -> impl Iterator<Item = (NodeId, u64)> + '_ {
        self.entries.iter().map(|(node, counter)| (*node, *counter))
    }

    /// How many nodes have an entry.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when this context has seen nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True when this context covers `dot`: it has seen that write.
    pub fn contains(&self, dot: Dot) -> bool {
        dot.counter <= self.get(dot.node)
    }

    /// True when this context covers everything `other` covers (it descends from `other`).
    pub fn descends(&self, other: &VersionVector) -> bool {
        other.entries.iter().all(|(node, counter)| self.get(*node) >= *counter)
    }

    /// How this context relates to `other`.
    pub fn compare(&self, other: &VersionVector) -> Causality {
        match (self.descends(other), other.descends(self)) {
            (true, true) => Causality::Equal,
            (true, false) => Causality::After,
            (false, true) => Causality::Before,
            (false, false) => Causality::Concurrent,
        }
    }

    /// The least context covering both (entry-wise maximum); refused, naming the limit, when
    /// it would hold more than [`VERSION_VECTOR_ENTRIES_MAX`] entries.
    pub fn join(&self, other: &VersionVector) -> Result<VersionVector> {
        let mut joined = self.clone();
        joined.merge(other)?;
        Ok(joined)
    }

    /// Joins `other` into this context (see [`VersionVector::join`]); unchanged on error.
    pub fn merge(&mut self, other: &VersionVector) -> Result<()> {
        let new_nodes = other.entries.keys().filter(|node| !self.entries.contains_key(node)).count();
        let len = self.entries.len() + new_nodes;
        if len > VERSION_VECTOR_ENTRIES_MAX {
            return Err(Error::InvalidInput(format!(
                "joined version vector would have {len} entries, over VERSION_VECTOR_ENTRIES_MAX \
                 ({VERSION_VECTOR_ENTRIES_MAX})"
            )));
        }
        for (node, counter) in &other.entries {
            let mine = self.entries.entry(*node).or_insert(0);
            *mine = (*mine).max(*counter);
        }
        Ok(())
    }

    /// Hands out `node`'s next dot, at least `floor`, and records it; refused,
    /// unchanged, past [`VERSION_VECTOR_ENTRIES_MAX`] or when the counter (from a peer's
    /// context) is at its end.
    fn next_dot(&mut self, node: NodeId, floor: u64) -> Result<Dot> {
        let seen = self.get(node);
        if seen == 0 && self.entries.len() >= VERSION_VECTOR_ENTRIES_MAX {
            return Err(Error::InvalidInput(format!(
                "a new entry for node {node} would pass VERSION_VECTOR_ENTRIES_MAX ({VERSION_VECTOR_ENTRIES_MAX})"
            )));
        }
        let counter = seen
            .checked_add(1)
            .ok_or_else(|| Error::InvalidInput(format!("node {node} has no dot left after {seen}")))?;
        let counter = counter.max(floor);
        self.entries.insert(node, counter);
        Ok(Dot { node, counter })
    }
}

impl Serialize for VersionVector {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_seq(self.entries.iter())
    }
}

impl TryFrom<Vec<(NodeId, u64)>> for VersionVector {
    type Error = String;

    /// Checks a peer's or a client's entries: see [`VersionVector`].
    fn try_from(pairs: Vec<(NodeId, u64)>) -> std::result::Result<VersionVector, String> {
        if pairs.len() > VERSION_VECTOR_ENTRIES_MAX {
            return Err(format!(
                "version vector has {} entries, over VERSION_VECTOR_ENTRIES_MAX ({VERSION_VECTOR_ENTRIES_MAX})",
                pairs.len()
            ));
        }
        let mut entries = BTreeMap::new();
        let mut previous: Option<NodeId> = None;
        for (node, counter) in pairs {
            if previous.is_some_and(|p| p >= node) {
                return Err(format!("version vector entries not in strictly increasing node order at node {node}"));
            }
            if counter == 0 {
                return Err(format!("version vector entry of node {node} has counter 0"));
            }
            previous = Some(node);
            entries.insert(node, counter);
        }
        Ok(VersionVector { entries })
    }
}

/// Bits of a dot floor below the milliseconds ([`dot_floor`]).
pub const DOT_FLOOR_LOGICAL_BITS: u32 = 22;

/// A dot counter above every dot a coordinator handed out at earlier hybrid-logical-clock
/// times: the time's milliseconds shifted left by [`DOT_FLOOR_LOGICAL_BITS`], plus its
/// logical count (at most 2^22 - 1). Each write a coordinator makes ticks its clock, so the
/// floor of a later write is above the floor of an earlier one plus the writes between them,
/// and a node's clock never goes back, across restarts included (it starts after the
/// newest version in its store). Milliseconds fit until the year 2109.
pub fn dot_floor(ts: crate::version::Timestamp) -> u64 {
    let logical = u64::from(ts.logical).min((1 << DOT_FLOOR_LOGICAL_BITS) - 1);
    ts.millis.min(u64::MAX >> DOT_FLOOR_LOGICAL_BITS) << DOT_FLOOR_LOGICAL_BITS | logical
}

/// One surviving write of a key: its dot, its version, and its value or a tombstone.
///
/// Ordered by dot first (then version, value) only so that a clash of one dot on two replicas
/// resolves the same way on both; a [`Siblings`] lists them by version.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Sibling {
    /// Which write this is.
    pub dot: Dot,
    /// When and where it was made; orders siblings for last-write-wins.
    pub version: Version,
    /// The value written, or `None` for a delete (a tombstone).
    pub value: Option<Bytes>,
}

impl Sibling {
    /// True when this write was a delete.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// The key siblings are listed by: version, then dot (only a bug makes two versions equal).
    fn order(&self) -> (Version, Dot) {
        (self.version, self.dot)
    }
}

/// What [`Siblings::write`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The dot handed to the new write.
    pub dot: Dot,
    /// Siblings the client's context covered and the write replaced.
    pub superseded: usize,
    /// Siblings dropped by last-write-wins past [`SIBLINGS_MAX`] (possibly the new write
    /// itself, if it is the oldest): count and log them.
    pub dropped: usize,
}

/// What [`Siblings::merge`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// True when the state changed (it must be stored again).
    pub changed: bool,
    /// Siblings dropped by last-write-wins past [`SIBLINGS_MAX`]: count and log them.
    pub dropped: usize,
    /// Dots both sides held with different versions or values. Only a node that handed out a
    /// dot twice (it lost its data and kept its id) makes one; the greater sibling is kept on
    /// every replica alike. Log it loudly: a write was lost.
    pub clashes: usize,
}

/// One key's causal state on one replica: what it has seen, and the concurrent writes that
/// survive. Empty ([`Siblings::new`]) for a key never written.
///
/// Invariants, checked when decoding: at most [`SIBLINGS_MAX`] siblings, listed by (version,
/// dot) strictly increasing, no dot twice, every dot covered by the context and counting
/// from 1. Serialized as its context, then its siblings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SiblingsWire")]
pub struct Siblings {
    /// Every write this state has seen, surviving or replaced.
    context: VersionVector,
    /// The surviving writes, by (version, dot); mutually concurrent as far as this state knows.
    values: Vec<Sibling>,
}

/// A [`Siblings`] as it comes off the wire, before its invariants are checked.
#[derive(Deserialize)]
struct SiblingsWire {
    /// The context's entries, checked by [`VersionVector::try_from`].
    context: Vec<(NodeId, u64)>,
    /// The siblings, checked by [`Siblings::try_from`].
    values: Vec<Sibling>,
}

impl Siblings {
    /// The state of a key never written: empty context, no siblings.
    pub fn new() -> Siblings {
        Siblings::default()
    }

    /// Everything this state has seen: the causal context a client's next write carries.
    pub fn context(&self) -> &VersionVector {
        &self.context
    }

    /// The surviving writes, oldest version first; tombstones included.
    pub fn values(&self) -> &[Sibling] {
        &self.values
    }

    /// True when no write survives: nothing of this key has reached this replica.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The last-write-wins winner: the sibling with the highest version, if any.
    pub fn winner(&self) -> Option<&Sibling> {
        self.values.last()
    }

    /// True when the winner is a tombstone: under last-write-wins the key reads as deleted.
    pub fn is_tombstone(&self) -> bool {
        self.winner().is_some_and(Sibling::is_tombstone)
    }

    /// The surviving values that are not tombstones, oldest version first: what a siblings
    /// read returns.
    pub fn live(&self) -> impl Iterator<Item = &Sibling> + '_ {
        self.values.iter().filter(|s| !s.is_tombstone())
    }

    /// The highest version among the survivors, for digests and for the caller's clock.
    pub fn newest_version(&self) -> Option<Version> {
        self.winner().map(|s| s.version)
    }

    /// How this state relates to `other`, by contexts: `Before` means `other` has seen every
    /// write this one has and more, so this replica is stale. Equal contexts with different
    /// siblings (only past [`SIBLINGS_MAX`] or after a clash) are `Concurrent`. Repair by
    /// [`Siblings::merge`], never by replacing one state with the other.
    pub fn compare(&self, other: &Siblings) -> Causality {
        match self.context.compare(&other.context) {
            Causality::Equal if self.values != other.values => Causality::Concurrent,
            order => order,
        }
    }

    /// The coordinator's write: `coordinator` hands out its next dot to a write of `value`
    /// (`None` deletes) at `version`, made by a client that had seen `client_context`.
    ///
    /// Every sibling the client's context covers is replaced; the others stay as concurrent
    /// siblings (an empty context replaces nothing). Refused, leaving the state unchanged,
    /// when the client's context names more of `coordinator`'s writes than this state has
    /// seen (a context from another key, or from the future), or when the joined context
    /// would pass [`VERSION_VECTOR_ENTRIES_MAX`]. The coordinator must be a replica of the
    /// key, writing on its own state of it: its dots count from that state's context.
    pub fn write(
        &mut self,
        coordinator: NodeId,
        client_context: &VersionVector,
        version: Version,
        value: Option<Bytes>,
    ) -> Result<WriteOutcome> {
        self.write_from(coordinator, client_context, version, value, 0)
    }

    /// [`Siblings::write`], where the coordinator's dot is at least `floor`, and a client
    /// context may name the coordinator's dots up to `floor`. A coordinator that may have
    /// forgotten some of its writes of the key (a purged tombstone took the context with it,
    /// and an older state may have come back since) passes a floor above every dot it handed
    /// out before ([`dot_floor`]), so no replica that still remembers them mistakes the new
    /// write for one it has seen.
    pub fn write_from(
        &mut self,
        coordinator: NodeId,
        client_context: &VersionVector,
        version: Version,
        value: Option<Bytes>,
        floor: u64,
    ) -> Result<WriteOutcome> {
        let (claimed, seen) = (client_context.get(coordinator), self.context.get(coordinator));
        // A context may name dots this state forgot (a purged tombstone took its context), but
        // never one past the floor: the coordinator has not handed that out yet.
        if claimed > seen.max(floor) {
            return Err(Error::InvalidInput(format!(
                "causal context names {claimed} writes by node {coordinator}, which has made only {seen} \
                 of this key: a context of another key, or from the future"
            )));
        }
        let mut context = self.context.join(client_context)?;
        let dot = context.next_dot(coordinator, floor)?;
        let before = self.values.len();
        self.values.retain(|s| !client_context.contains(s.dot));
        let superseded = before - self.values.len();
        self.values.push(Sibling { dot, version, value });
        self.context = context;
        self.values.sort_by_key(Sibling::order);
        let dropped = self.bound();
        Ok(WriteOutcome { dot, superseded, dropped })
    }

    /// Applies another replica's state of the same key: keeps each side's sibling when the
    /// other side holds the same dot or has not seen it, and joins the contexts.
    ///
    /// Commutative, associative (below [`SIBLINGS_MAX`]) and idempotent. Refused, leaving the
    /// state unchanged, when the joined context would pass [`VERSION_VECTOR_ENTRIES_MAX`].
    pub fn merge(&mut self, other: &Siblings) -> Result<MergeOutcome> {
        let context = self.context.join(&other.context)?;
        let mut kept: BTreeMap<Dot, Sibling> = BTreeMap::new();
        for s in &self.values {
            if other.holds(s.dot) || !other.context.contains(s.dot) {
                kept.insert(s.dot, s.clone());
            }
        }
        let mut clashes = 0;
        for s in &other.values {
            if let Some(mine) = kept.get_mut(&s.dot) {
                if mine != s {
                    clashes += 1;
                    if s > mine {
                        *mine = s.clone();
                    }
                }
            } else if !self.context.contains(s.dot) {
                kept.insert(s.dot, s.clone());
            }
        }
        let mut values: Vec<Sibling> = kept.into_values().collect();
        values.sort_by_key(Sibling::order);
        let changed = context != self.context || values != self.values;
        self.context = context;
        self.values = values;
        let dropped = self.bound();
        Ok(MergeOutcome { changed, dropped, clashes })
    }

    /// Keeps only the last-write-wins winner (the highest version) and returns the others,
    /// oldest first; their dots stay in the context, so a replica that still holds one drops
    /// it on merge. Order-independent where versions follow causality (a write that had seen
    /// another has the higher version, as an HLC that observes what it merges makes it): a
    /// state pruned early and merged later ends where merging everything and then pruning
    /// would.
    pub fn keep_winner(&mut self) -> Vec<Sibling> {
        let losers = self.values.len().saturating_sub(1);
        self.values.drain(..losers).collect()
    }

    /// True when a surviving sibling has `dot`.
    pub fn holds(&self, dot: Dot) -> bool {
        self.values.iter().any(|s| s.dot == dot)
    }

    /// Drops the oldest siblings past [`SIBLINGS_MAX`] (their dots stay in the context, so
    /// they never come back); returns how many.
    fn bound(&mut self) -> usize {
        let extra = self.values.len().saturating_sub(SIBLINGS_MAX);
        self.values.drain(..extra);
        extra
    }

    /// This state as one engine value.
    ///
    /// Layout: byte 0 is [`SIBLINGS_FORMAT`], then postcard (varints for integers): the
    /// context (entry count, then `node, counter` per entry, by node), the sibling count,
    /// then per sibling `dot.node, dot.counter, version.ts.millis, version.ts.logical,
    /// version.node`, and the value (`0` for a tombstone, or `1`, a length and the bytes).
    /// Refused over [`SIBLINGS_BYTES_MAX`].
    pub fn to_bytes(&self) -> Result<Bytes> {
        let out = postcard::to_extend(self, vec![SIBLINGS_FORMAT])
            .expect("postcard encodes a Siblings: every part has a known length");
        if out.len() > SIBLINGS_BYTES_MAX {
            return Err(Error::InvalidInput(format!(
                "key state of {} bytes ({} siblings) over SIBLINGS_BYTES_MAX ({SIBLINGS_BYTES_MAX})",
                out.len(),
                self.values.len()
            )));
        }
        Ok(Bytes::from(out))
    }

    /// Decodes [`Siblings::to_bytes`], checking every invariant. A stored state that fails is
    /// corrupt: a caller reading its own disk reports it as [`Error::Corrupt`] with the file
    /// and offset it knows.
    pub fn from_bytes(bytes: &[u8]) -> Result<Siblings> {
        let bad = |reason: String| Error::InvalidInput(format!("bad key state: {reason}"));
        if bytes.len() > SIBLINGS_BYTES_MAX {
            return Err(bad(format!("{} bytes, over SIBLINGS_BYTES_MAX ({SIBLINGS_BYTES_MAX})", bytes.len())));
        }
        let (format, body) = bytes.split_first().ok_or_else(|| bad("empty".into()))?;
        if *format != SIBLINGS_FORMAT {
            return Err(bad(format!("format byte {format}, expected {SIBLINGS_FORMAT}")));
        }
        let (wire, rest) = postcard::take_from_bytes::<SiblingsWire>(body).map_err(|e| bad(e.to_string()))?;
        if !rest.is_empty() {
            return Err(bad(format!("{} trailing bytes", rest.len())));
        }
        Siblings::try_from(wire).map_err(bad)
    }
}

impl TryFrom<SiblingsWire> for Siblings {
    type Error = String;

    /// Checks a decoded state's invariants: see [`Siblings`].
    fn try_from(wire: SiblingsWire) -> std::result::Result<Siblings, String> {
        let context = VersionVector::try_from(wire.context)?;
        let values = wire.values;
        if values.len() > SIBLINGS_MAX {
            return Err(format!("{} siblings, over SIBLINGS_MAX ({SIBLINGS_MAX})", values.len()));
        }
        let mut dots = BTreeSet::new();
        for s in &values {
            if s.dot.counter == 0 {
                return Err(format!("sibling at version {} has dot counter 0", s.version));
            }
            if !context.contains(s.dot) {
                return Err(format!("sibling dot {}:{} not covered by the context", s.dot.node, s.dot.counter));
            }
            if !dots.insert(s.dot) {
                return Err(format!("sibling dot {}:{} appears twice", s.dot.node, s.dot.counter));
            }
        }
        if let Some(pair) = values.windows(2).find(|pair| pair[0].order() >= pair[1].order()) {
            return Err(format!("siblings not in version order: {} then {}", pair[0].version, pair[1].version));
        }
        Ok(Siblings { context, values })
    }
}

/// A context as an opaque token for clients, bound to `key`: lowercase hex of byte 0
/// [`CONTEXT_TOKEN_FORMAT`], bytes 1..9 the xxh3-64 hash of the key (little-endian), then the
/// vector in postcard (entry count, then `node, counter` per entry, by node, as varints).
/// At most [`CONTEXT_TOKEN_BYTES_MAX`] characters.
pub fn encode_context(key: &[u8], context: &VersionVector) -> String {
    let mut raw = vec![CONTEXT_TOKEN_FORMAT];
    raw.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(key).to_le_bytes());
    let raw = postcard::to_extend(context, raw).expect("postcard encodes a version vector");
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    assert!(token.len() <= CONTEXT_TOKEN_BYTES_MAX, "context token of {} bytes over the limit", token.len());
    token
}

/// Decodes a client's token of [`encode_context`] for `key`, refusing garbage, a token over
/// [`CONTEXT_TOKEN_BYTES_MAX`], or one made for another key, with an error that says which.
pub fn decode_context(key: &[u8], token: &[u8]) -> Result<VersionVector> {
    let bad = |reason: String| Error::InvalidInput(format!("bad causal context: {reason}"));
    if token.len() > CONTEXT_TOKEN_BYTES_MAX {
        return Err(bad(format!("{} bytes, over CONTEXT_TOKEN_BYTES_MAX ({CONTEXT_TOKEN_BYTES_MAX})", token.len())));
    }
    let raw = from_hex(token).map_err(bad)?;
    if raw.len() < 9 {
        return Err(bad(format!("{} bytes, shorter than its 9-byte header", raw.len())));
    }
    if raw[0] != CONTEXT_TOKEN_FORMAT {
        return Err(bad(format!("format byte {}, expected {CONTEXT_TOKEN_FORMAT}", raw[0])));
    }
    let hash = u64::from_le_bytes(raw[1..9].try_into().expect("8 bytes"));
    if hash != xxhash_rust::xxh3::xxh3_64(key) {
        return Err(bad("it was made for another key".into()));
    }
    let (pairs, rest) = postcard::take_from_bytes::<Vec<(NodeId, u64)>>(&raw[9..]).map_err(|e| bad(e.to_string()))?;
    if !rest.is_empty() {
        return Err(bad(format!("{} trailing bytes", rest.len())));
    }
    VersionVector::try_from(pairs).map_err(bad)
}

/// REPLIKV.SIBLINGS's answer for `key` (a client's key) in `state`: `[context token, [value
/// or nil per sibling, oldest version first]]`, a delete as a nil. The families that keep
/// siblings (leaderless, multi-leader) answer alike.
pub fn siblings_reply(key: &[u8], state: &Siblings) -> crate::kv::Reply {
    use crate::kv::Reply;
    let token = encode_context(key, state.context());
    let values = state.values().iter().map(|s| s.value.clone().map_or(Reply::Nil, Reply::Bulk)).collect();
    Reply::Array(vec![Reply::Bulk(Bytes::from(token)), Reply::Array(values)])
}

/// The error a GET of a key with `count` concurrent siblings (`deletes` of them deletes)
/// answers where siblings are kept for the application.
pub fn siblings_error(count: usize, deletes: usize) -> crate::kv::Reply {
    crate::kv::Reply::Error(format!(
        "SIBLINGS the key has {count} concurrent values ({deletes} of them deletes): read them with REPLIKV.SIBLINGS \
         and write the one to keep with SET key value CONTEXT token"
    ))
}

/// Bytes from lowercase or uppercase hex, with the reason when the text is not hex.
fn from_hex(text: &[u8]) -> std::result::Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits ({})", text.len()));
    }
    let digit = |c: u8| -> std::result::Result<u8, String> {
        (c as char).to_digit(16).map(|d| d as u8).ok_or_else(|| format!("{:?} is not a hex digit", c as char))
    };
    text.chunks_exact(2).map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?)).collect()
}

#[cfg(test)]
pub(crate) mod tests;
