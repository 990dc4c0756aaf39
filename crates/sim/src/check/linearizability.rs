//! Linearizability of reads and writes, key by key: could every operation have taken effect
//! at one instant between its invocation and its reply, in an order a single register allows?
//!
//! # Model
//!
//! Each key is a register that starts absent. A write sets it to its value; a read returns
//! what it holds. Keys are independent registers, so a history is linearizable when each
//! key's operations are (linearizability is local, Herlihy and Wing), and [`check`] checks
//! them one key at a time, in key order. Written values are unique and nothing deletes, so a
//! value, absent included, once overwritten never comes back.
//!
//! # The search
//!
//! This is the Wing-Gong-Lowe search with Lowe's memoization, as Porcupine does it (Lowe,
//! "Testing for linearizability", 2017). Each operation becomes two entries, its *call* at
//! `invoke_ms` and its *return* at its reply, and the entries are sorted by time into a doubly
//! linked list. The search walks the list from the front:
//!
//! - At a call, it tries to linearize that operation next: if the register allows it and the
//!   pair (set of operations linearized so far, register state afterwards) was never reached
//!   before, it pushes the operation and the old state on an undo stack, lifts the call and
//!   its return out of the list, and starts again from the front. The calls met before the
//!   first return are exactly the operations that may come next: none of them was invoked
//!   after something still unplaced had returned.
//! - At a return, the operation it belongs to should have been linearized before it, and was
//!   not: the current prefix is a dead end. The search pops the last linearized operation,
//!   puts its entries back (dancing links: a lifted entry still points at its old
//!   neighbours, and entries come back in the reverse order they left), restores the state,
//!   and goes on from the entry after that operation's call.
//!
//! The list empties when every operation is linearized: the history passes. The undo stack
//! empties at a return: no order works, the history fails. The cache of (linearized set,
//! state) pairs, the set as a bitset of operation indices, keeps the search from exploring
//! the same situation twice: two prefixes with the same operations that leave the same state
//! have the same futures.
//!
//! # Pruning for unique values
//!
//! Plain, that search drowns in the orders of concurrent writes (twenty clients on one key
//! exhaust millions of steps). Three rules, each exact for a register whose values never
//! repeat, cut it down:
//!
//! 1. *A write only over a spent value.* A write may come next only when no read still to be
//!    placed saw the register's current value: overwritten, that value never returns, and
//!    those reads could never be placed.
//! 2. *A read that can come next does, with no alternative.* If a read may come next and saw
//!    the current value, some valid order (if any exists) places it right now: moving it
//!    earlier changes no value anyone sees, and breaks no real-time order because nothing
//!    still unplaced returned before it was invoked. So when everything after it fails, the
//!    prefix before it fails too, and the search backtracks past it without trying the
//!    operations after it in the list.
//! 3. *Spent values are one state.* The cache records the register's value only while reads
//!    of it remain to be placed, else "spent": prefixes that differ only in the order of
//!    writes no remaining read cares about count as one.
//!
//! By rule 1 a level of the search offers reads of the current value or writes, never both.
//!
//! # Equal timestamps
//!
//! The simulator's clock counts whole milliseconds, so a reply at `t` and another client's
//! invocation at `t` may have happened in either order. Calls sort before returns at equal
//! times: the two operations count as concurrent. That can only allow more orders, so it
//! never turns a linearizable history into a failure; the price is that a violation between
//! two operations less than a millisecond apart goes unseen. It also keeps an operation that
//! completes in the millisecond it was invoked well-formed (its call before its return).
//!
//! # Indeterminate operations
//!
//! An operation with [`Outcome::Indeterminate`] may or may not have taken effect, at any time
//! after its invocation; its return counts as +infinity whether or not a reply came (a reply
//! that does not say, like `-NOREPLICAS`, does not bound when the write lands). A read of
//! that kind constrains nothing and is dropped. A write whose value no read saw is dropped
//! too: linearizing it after everything else, which its endless interval allows, is the same
//! as it never happening, and with no reader of its value nothing needs it earlier. A write
//! whose value a read saw took effect before that read returned, so its return counts as the
//! earliest such read's: exact, and it keeps a write lost in a crash from being concurrent
//! with everything after it (which otherwise exhausts the budget).
//!
//! # Before the search
//!
//! Some failures need no search: a read that saw a value no write on its key wrote, a read
//! that returned before the write of its value was invoked, and a stale read (its value, or
//! absent, was overwritten by a write that both started after the value's write returned and
//! returned before the read was invoked). These are checked first, in O(n log n), with the
//! same strict comparisons as the search: they name the culprits plainly, and a stale read
//! among many busy writers would otherwise cost the search its whole budget.
//!
//! # Limits
//!
//! Deciding linearizability is NP-complete, so each key has a budget: at most
//! [`Limits::ops_per_key_max`] operations and [`Limits::steps_max`] search steps (an entry
//! visited or an operation undone). Past either, the verdict is [`Verdict::GaveUp`], which is
//! never a pass. The cache gains at most one bitset per step, so the step budget bounds
//! memory too: about `ops / 8 + 64` bytes per step.
//!
//! CAVEATS
//! - Only single-key reads and writes with unique values: no multi-key operations, deletes,
//!   or expiry. A repeated value on a key is a broken history and panics.
//! - Operations closer than a millisecond count as concurrent (see above).
//! - Many concurrent writes, or indeterminate writes that were read (concurrent with
//!   everything after them), can exhaust the budget; the verdict then says so.
//! - A failure's explanation shows where the search got furthest. The violation may lie
//!   earlier in that prefix: it is the first order the search tried, not the only one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::history::{Event, History, Op, Outcome};

/// Default for [`Limits::ops_per_key_max`]: operations on one key that one check will search.
pub const OPS_PER_KEY_MAX: usize = 1000;

/// Default for [`Limits::steps_max`]: search steps per key before giving up. A step costs
/// 0.1 to 0.25 µs in a release build on a small machine, so a key that exhausts the budget
/// takes 0.2 to 0.5 s; the cache it bounds measured about 10 bytes a step, and can never pass
/// about `ops / 8 + 64` bytes a step (under 400 MB at [`OPS_PER_KEY_MAX`] operations).
pub const STEPS_MAX: u64 = 2_000_000;

/// Operations of the longest linearizable prefix shown in a failure's explanation (its end).
pub const EXPLANATION_PREFIX_OPS_MAX: usize = 8;

/// Operations that could not come next shown in a failure's explanation.
pub const EXPLANATION_BLOCKED_OPS_MAX: usize = 16;

/// The return time of an operation that may take effect at any time after its invocation.
const NEVER_MS: u64 = u64::MAX;

/// Limits of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Operations on one key (after dropping those that constrain nothing) beyond which the
    /// check gives up on that key.
    pub ops_per_key_max: usize,
    /// Search steps per key before giving up.
    pub steps_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { ops_per_key_max: OPS_PER_KEY_MAX, steps_max: STEPS_MAX }
    }
}

/// The verdict for a whole history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's operations are linearizable.
    Linearizable,
    /// A key's operations are not.
    NotLinearizable {
        /// The key.
        key: String,
        /// Which operations could not be ordered: the end of the longest linearizable prefix
        /// found, the value after it, and the operations that could not come next.
        explanation: String,
    },
    /// The check could not decide for `key` (too many operations, or the step budget ran
    /// out): never a pass.
    GaveUp {
        /// The key.
        key: String,
        /// Which limit was hit.
        reason: String,
    },
}

/// Checks every key of `history` separately (registers are independent), in key order;
/// returns the first [`Verdict::NotLinearizable`], else the first [`Verdict::GaveUp`], else
/// [`Verdict::Linearizable`].
pub fn check(history: &History, limits: &Limits) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for event in &history.events {
        by_key.entry(event.op.key()).or_default().push(event);
    }
    let mut gave_up = None;
    for (key, events) in &by_key {
        match check_key(key, events, limits) {
            Verdict::Linearizable => {}
            failed @ Verdict::NotLinearizable { .. } => return failed,
            undecided @ Verdict::GaveUp { .. } => {
                gave_up.get_or_insert(undecided);
            }
        }
    }
    gave_up.unwrap_or(Verdict::Linearizable)
}

/// Checks one key's events (all on the same key).
///
/// # Panics
///
/// If an event is on another key, completes before it was invoked, or writes a value another
/// write on the key wrote: the caller built a broken history.
pub fn check_key(key: &str, events: &[&Event], limits: &Limits) -> Verdict {
    let ops = operations(key, events);
    if let Some(explanation) = obvious_violation(&ops) {
        return Verdict::NotLinearizable { key: key.to_string(), explanation };
    }
    if ops.len() > limits.ops_per_key_max {
        let reason =
            format!("{} operations on the key, more than ops_per_key_max = {}", ops.len(), limits.ops_per_key_max);
        return Verdict::GaveUp { key: key.to_string(), reason };
    }
    let mut search = Search::new(&ops);
    match search.run(limits.steps_max) {
        End::Linearizable => Verdict::Linearizable,
        End::NotLinearizable => Verdict::NotLinearizable { key: key.to_string(), explanation: search.explain() },
        End::OutOfSteps => {
            let reason = format!(
                "the search took more than steps_max = {} steps over {} operations; its longest \
                 linearizable prefix covered {} of them",
                limits.steps_max,
                ops.len(),
                search.best.len()
            );
            Verdict::GaveUp { key: key.to_string(), reason }
        }
    }
}

/// What an operation does to the register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// A read that saw this value (`None`: absent).
    Read {
        /// The value seen.
        saw: Option<u64>,
    },
    /// A write of this value.
    Write {
        /// The value written.
        value: u64,
    },
}

/// One operation of the key, ready for the search.
#[derive(Clone, Debug)]
struct Operation<'a> {
    /// The recorded event, for explanations.
    event: &'a Event,
    /// What it does to the register.
    action: Action,
    /// When it was invoked.
    invoke_ms: u64,
    /// When it returned; [`NEVER_MS`] when it may take effect at any time after `invoke_ms`.
    return_ms: u64,
}

impl Operation<'_> {
    /// The value it reads or writes.
    fn value(&self) -> Option<u64> {
        match self.action {
            Action::Read { saw } => saw,
            Action::Write { value } => Some(value),
        }
    }
}

/// The operations of one key the search must order: every event, less indeterminate reads
/// and indeterminate writes whose value no read saw (see the module doc).
fn operations<'a>(key: &str, events: &[&'a Event]) -> Vec<Operation<'a>> {
    // For each value some read saw, the earliest return among those reads.
    let mut first_seen_return: BTreeMap<u64, u64> = BTreeMap::new();
    for event in events {
        if let (Op::Read { .. }, Outcome::Ok(Some(value)), Some(done)) = (&event.op, &event.outcome, event.complete_ms)
        {
            let first = first_seen_return.entry(*value).or_insert(done);
            *first = (*first).min(done);
        }
    }
    let read_values: BTreeSet<u64> = first_seen_return.keys().copied().collect();
    let mut written = BTreeSet::new();
    let mut ops = Vec::with_capacity(events.len());
    for &event in events {
        assert_eq!(event.op.key(), key, "check_key({key:?}) was given an event on another key: {event:?}");
        if let Some(complete_ms) = event.complete_ms {
            assert!(complete_ms >= event.invoke_ms, "an event completes before it was invoked: {event:?}");
        }
        if let Op::Write { value, .. } = event.op {
            assert!(written.insert(value), "two writes of {value} to {key:?}: values must be unique; {event:?}");
        }
        let determinate = event.outcome != Outcome::Indeterminate;
        let action = match (&event.op, &event.outcome) {
            (Op::Read { .. }, Outcome::Ok(saw)) => Action::Read { saw: *saw },
            (Op::Read { .. }, Outcome::Indeterminate) => continue,
            (Op::Write { value, .. }, _) if !determinate && !read_values.contains(value) => continue,
            (Op::Write { value, .. }, _) => Action::Write { value: *value },
        };
        let return_ms = match (event.complete_ms, &event.op) {
            (Some(complete_ms), _) if determinate => complete_ms,
            // An indeterminate write that a read saw took effect before that read returned.
            (_, Op::Write { value, .. }) => {
                first_seen_return.get(value).map_or(NEVER_MS, |&seen| seen.max(event.invoke_ms))
            }
            _ => NEVER_MS,
        };
        ops.push(Operation { event, action, invoke_ms: event.invoke_ms, return_ms });
    }
    ops
}

/// An explanation if some read contradicts the writes on its own, before any search: it saw
/// a value no write on the key wrote, or saw a value before its write was invoked, or saw a
/// value (absent included) that a later write had overwritten before the read was invoked.
/// Each is a proof that no order works; checking them first names the culprits plainly and
/// spares the search the commonest failure, a stale read among busy writers.
fn obvious_violation(ops: &[Operation]) -> Option<String> {
    let mut writes = BTreeMap::new();
    let mut by_invoke: Vec<(u64, usize)> = Vec::new();
    for (index, op) in ops.iter().enumerate() {
        if let Action::Write { value } = op.action {
            writes.insert(value, op);
            by_invoke.push((op.invoke_ms, index));
        }
    }
    by_invoke.sort_unstable();
    // For each position in `by_invoke`, the write returning first among it and those after.
    let mut first_return_from: Vec<Option<usize>> = vec![None; by_invoke.len() + 1];
    for position in (0..by_invoke.len()).rev() {
        let (here, later) = (by_invoke[position].1, first_return_from[position + 1]);
        first_return_from[position] = match later {
            Some(later) if ops[later].return_ms <= ops[here].return_ms => Some(later),
            _ => Some(here),
        };
    }
    // The write returning first among those invoked strictly after `after_ms`.
    let overwriter =
        |after_ms: u64| first_return_from[by_invoke.partition_point(|&(invoke_ms, _)| invoke_ms <= after_ms)];
    for read in ops {
        let Action::Read { saw } = read.action else { continue };
        let (overwrite, written) = match saw {
            None => (first_return_from[0], None),
            Some(value) => {
                let Some(write) = writes.get(&value) else {
                    return Some(format!("{}: no write on this key wrote that value", describe(read)));
                };
                if read.return_ms < write.invoke_ms {
                    return Some(format!("{}: it returned before {} was invoked", describe(read), describe(write)));
                }
                (overwriter(write.return_ms), Some(write))
            }
        };
        let Some(overwrite) = overwrite.map(|index| &ops[index]) else { continue };
        if overwrite.return_ms < read.invoke_ms {
            let after =
                written.map_or_else(String::new, |write| format!(" (invoked after {} returned)", describe(write)));
            return Some(format!(
                "{}: its value was overwritten before it was invoked, by {}{after}",
                describe(read),
                describe(overwrite)
            ));
        }
    }
    None
}

/// One line about an operation: who, what, when.
fn describe(op: &Operation) -> String {
    let action = match op.action {
        Action::Read { saw } => format!("read saw {}", value_name(saw)),
        Action::Write { value } => format!("write {value}"),
    };
    let returned = match op.return_ms {
        NEVER_MS => "indeterminate".to_string(),
        return_ms => format!("{return_ms} ms"),
    };
    format!("client {}: {action}, {} ms..{returned}", op.event.client, op.invoke_ms)
}

/// A register value in words.
fn value_name(value: Option<u64>) -> String {
    value.map_or_else(|| "absent".to_string(), |value| value.to_string())
}

/// A set of operation indices, one bit each.
#[derive(Clone, Debug)]
struct Bitset {
    /// The bits, 64 to a word, lowest index in the lowest bit.
    words: Vec<u64>,
}

impl Bitset {
    /// An empty set able to hold indices below `len`.
    fn new(len: usize) -> Self {
        Bitset { words: vec![0; len.div_ceil(64)] }
    }

    /// Adds `index`.
    fn insert(&mut self, index: usize) {
        self.words[index / 64] |= 1 << (index % 64);
    }

    /// Removes `index`.
    fn remove(&mut self, index: usize) {
        self.words[index / 64] &= !(1 << (index % 64));
    }

    /// Whether `index` is in the set.
    fn contains(&self, index: usize) -> bool {
        self.words[index / 64] & (1 << (index % 64)) != 0
    }
}

/// The doubly linked list of calls and returns, in time order, with a head and a tail
/// sentinel. Entry `0` is the head, entries `1..=2n` the calls and returns, the last the tail.
#[derive(Debug)]
struct Entries {
    /// The operation an entry belongs to (meaningless for the sentinels).
    op: Vec<usize>,
    /// Whether an entry is a call (else a return or a sentinel).
    is_call: Vec<bool>,
    /// The next entry in the list.
    next: Vec<usize>,
    /// The previous entry in the list.
    prev: Vec<usize>,
    /// Each operation's call entry.
    call_of: Vec<usize>,
    /// Each operation's return entry.
    return_of: Vec<usize>,
}

/// The head sentinel of [`Entries`].
const HEAD: usize = 0;

impl Entries {
    /// The list of `ops`' calls and returns, sorted by time, calls before returns at equal
    /// times (see the module doc), then by operation index so the order is deterministic.
    fn new(ops: &[Operation]) -> Self {
        let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (index, op) in ops.iter().enumerate() {
            order.push((op.invoke_ms, false, index));
            order.push((op.return_ms, true, index));
        }
        order.sort_unstable();
        let len = order.len() + 2;
        let mut entries = Entries {
            op: vec![usize::MAX; len],
            is_call: vec![false; len],
            next: (1..=len).collect(),
            prev: (0..len).map(|entry| entry.wrapping_sub(1)).collect(),
            call_of: vec![usize::MAX; ops.len()],
            return_of: vec![usize::MAX; ops.len()],
        };
        for (position, &(_, is_return, index)) in order.iter().enumerate() {
            let entry = position + 1;
            entries.op[entry] = index;
            entries.is_call[entry] = !is_return;
            if is_return {
                entries.return_of[index] = entry;
            } else {
                entries.call_of[index] = entry;
            }
        }
        entries
    }

    /// The tail sentinel.
    fn tail(&self) -> usize {
        self.next.len() - 1
    }

    /// The first entry still in the list (the tail when it is empty).
    fn first(&self) -> usize {
        self.next[HEAD]
    }

    /// Takes `call` and its return out of the list; they keep pointing at their neighbours.
    fn lift(&mut self, call: usize) {
        for entry in [call, self.return_of[self.op[call]]] {
            let (prev, next) = (self.prev[entry], self.next[entry]);
            self.next[prev] = next;
            self.prev[next] = prev;
        }
    }

    /// Puts `call` and its return back where they were; undoes the last [`Entries::lift`].
    fn unlift(&mut self, call: usize) {
        for entry in [self.return_of[self.op[call]], call] {
            let (prev, next) = (self.prev[entry], self.next[entry]);
            self.next[prev] = entry;
            self.prev[next] = entry;
        }
    }
}

/// How a search ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Every operation was linearized.
    Linearizable,
    /// No order works.
    NotLinearizable,
    /// The step budget ran out first.
    OutOfSteps,
}

/// What became of one try to linearize an operation next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Try {
    /// It was linearized.
    Taken,
    /// The register does not allow it now.
    Refused,
    /// It was allowed, but leads where the search has already been.
    Seen,
}

/// The cache's name for the register's state when no read still to be placed saw its value.
const SPENT: usize = usize::MAX;

/// The state of one key's search. Register values are numbered: `values[i]` is value `i`,
/// absent first.
struct Search<'o, 'a> {
    /// The operations.
    ops: &'o [Operation<'a>],
    /// Each operation's value, numbered.
    value_of: Vec<usize>,
    /// The values, sorted, absent first.
    values: Vec<Option<u64>>,
    /// For each value, the reads of it not yet linearized.
    reads_pending: Vec<usize>,
    /// Calls and returns of the operations not yet linearized.
    entries: Entries,
    /// The operations linearized so far.
    linearized: Bitset,
    /// The register's value after them.
    state: usize,
    /// The linearized operations' calls, in order, each with the value before it.
    undo: Vec<(usize, usize)>,
    /// Every (linearized set, state) pair reached, as state (a value or [`SPENT`]) to sets.
    seen: BTreeMap<usize, BTreeSet<Box<[u64]>>>,
    /// The longest linearized prefix reached: the operations, in order.
    best: Vec<usize>,
    /// The register's value after `best`.
    best_state: usize,
}

impl<'o, 'a> Search<'o, 'a> {
    /// A search over `ops`, nothing linearized yet.
    fn new(ops: &'o [Operation<'a>]) -> Self {
        let mut values: Vec<Option<u64>> = ops.iter().map(Operation::value).chain([None]).collect();
        values.sort_unstable();
        values.dedup();
        let value_of: Vec<usize> =
            ops.iter().map(|op| values.binary_search(&op.value()).expect("every value is listed")).collect();
        let mut reads_pending = vec![0; values.len()];
        for (op, &value) in ops.iter().zip(&value_of) {
            if let Action::Read { .. } = op.action {
                reads_pending[value] += 1;
            }
        }
        Search {
            ops,
            value_of,
            values,
            reads_pending,
            entries: Entries::new(ops),
            linearized: Bitset::new(ops.len()),
            state: 0,
            undo: Vec::new(),
            seen: BTreeMap::new(),
            best: Vec::new(),
            best_state: 0,
        }
    }

    /// Searches for a linearization in at most `steps_max` steps.
    fn run(&mut self, steps_max: u64) -> End {
        let mut entry = self.entries.first();
        let mut steps: u64 = 0;
        while self.entries.first() != self.entries.tail() {
            // A non-empty list ends with a return, and the walk stops at the first return.
            debug_assert_ne!(entry, self.entries.tail());
            steps += 1;
            if steps > steps_max {
                return End::OutOfSteps;
            }
            let dead_end = if self.entries.is_call[entry] {
                match self.maybe_linearize(entry) {
                    Try::Taken => {
                        self.maybe_record_best();
                        entry = self.entries.first();
                        continue;
                    }
                    Try::Refused => false,
                    // A read that leads where the search failed before fails here too (rule 2).
                    Try::Seen => !self.is_write(entry),
                }
            } else {
                // This return's operation should have been placed before it.
                true
            };
            if !dead_end {
                entry = self.entries.next[entry];
                continue;
            }
            match self.backtrack(&mut steps) {
                Some(next) => entry = next,
                None => return End::NotLinearizable,
            }
        }
        End::Linearizable
    }

    /// Whether `entry` belongs to a write.
    fn is_write(&self, entry: usize) -> bool {
        matches!(self.ops[self.entries.op[entry]].action, Action::Write { .. })
    }

    /// Linearizes `call`'s operation next if the register allows it (rule 1 for a write) and
    /// the resulting (set, state) pair is new.
    fn maybe_linearize(&mut self, call: usize) -> Try {
        let op = self.entries.op[call];
        let value = self.value_of[op];
        let is_read = matches!(self.ops[op].action, Action::Read { .. });
        if (is_read && value != self.state) || (!is_read && self.reads_pending[self.state] > 0) {
            return Try::Refused;
        }
        if is_read {
            self.reads_pending[value] -= 1;
        }
        let cached_state = if self.reads_pending[value] > 0 { value } else { SPENT };
        self.linearized.insert(op);
        let sets = self.seen.entry(cached_state).or_default();
        if sets.contains(self.linearized.words.as_slice()) {
            self.linearized.remove(op);
            if is_read {
                self.reads_pending[value] += 1;
            }
            return Try::Seen;
        }
        sets.insert(self.linearized.words.clone().into_boxed_slice());
        self.undo.push((call, self.state));
        self.state = value;
        self.entries.lift(call);
        Try::Taken
    }

    /// Undoes linearized operations back to the last write (reads are never the wrong choice:
    /// rule 2), counting each undo as a step, and returns the entry to try next: the one after
    /// that write's call. `None` when there is nothing left to undo.
    fn backtrack(&mut self, steps: &mut u64) -> Option<usize> {
        loop {
            let (call, state) = self.undo.pop()?;
            *steps += 1;
            let op = self.entries.op[call];
            self.state = state;
            self.linearized.remove(op);
            self.entries.unlift(call);
            if let Action::Read { .. } = self.ops[op].action {
                self.reads_pending[self.value_of[op]] += 1;
            } else {
                return Some(self.entries.next[call]);
            }
        }
    }

    /// Keeps the current prefix if it is the longest yet, for explanations.
    fn maybe_record_best(&mut self) {
        if self.undo.len() > self.best.len() {
            self.best = self.undo.iter().map(|&(call, _)| self.entries.op[call]).collect();
            self.best_state = self.state;
        }
    }

    /// Why the search failed: the end of the longest prefix found, the value after it, and
    /// the operations that were due next (invoked before any remaining operation returned).
    fn explain(&self) -> String {
        let mut placed = Bitset::new(self.ops.len());
        for &op in &self.best {
            placed.insert(op);
        }
        let unplaced = (0..self.ops.len()).filter(|&op| !placed.contains(op));
        let first_return = unplaced.clone().map(|op| self.entries.return_of[op]).min().unwrap_or(usize::MAX);
        let due: Vec<usize> = unplaced.clone().filter(|&op| self.entries.call_of[op] < first_return).collect();
        let state_readers = unplaced
            .filter(|&op| matches!(self.ops[op].action, Action::Read { .. }) && self.value_of[op] == self.best_state)
            .count();
        let state_name = value_name(self.values[self.best_state]);

        let mut text = format!("{} of {} operations linearize", self.best.len(), self.ops.len());
        if !self.best.is_empty() {
            let shown = self.best.len().saturating_sub(EXPLANATION_PREFIX_OPS_MAX);
            let prefix: Vec<String> = self.best[shown..].iter().map(|&op| describe(&self.ops[op])).collect();
            let _ = write!(text, "; the longest prefix found ends: {}", prefix.join("; "));
        }
        let _ = write!(text, "; after it the key holds {state_name}. None of these can come next: ");
        let blocked: Vec<String> = due
            .iter()
            .take(EXPLANATION_BLOCKED_OPS_MAX)
            .map(|&op| match self.ops[op].action {
                Action::Read { .. } => describe(&self.ops[op]),
                Action::Write { .. } if state_readers > 0 => format!(
                    "{} (it would overwrite {state_name}, which {state_readers} unplaced read(s) saw)",
                    describe(&self.ops[op])
                ),
                Action::Write { .. } => format!("{} (every order after it dead-ends)", describe(&self.ops[op])),
            })
            .collect();
        text.push_str(&blocked.join("; "));
        if due.len() > EXPLANATION_BLOCKED_OPS_MAX {
            let _ = write!(text, "; and {} more", due.len() - EXPLANATION_BLOCKED_OPS_MAX);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::ClientId;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A completed write of `value` to `key`.
    fn write(client: ClientId, key: &str, value: u64, invoke_ms: u64, complete_ms: u64) -> Event {
        let op = Op::Write { key: key.to_string(), value };
        Event { client, node: None, op, invoke_ms, complete_ms: Some(complete_ms), outcome: Outcome::Ok(None) }
    }

    /// A write of `value` to `key` that never got a reply.
    fn write_lost(client: ClientId, key: &str, value: u64, invoke_ms: u64) -> Event {
        let op = Op::Write { key: key.to_string(), value };
        Event { client, node: None, op, invoke_ms, complete_ms: None, outcome: Outcome::Indeterminate }
    }

    /// A completed read of `key` that saw `saw`.
    fn read(client: ClientId, key: &str, saw: Option<u64>, invoke_ms: u64, complete_ms: u64) -> Event {
        let op = Op::Read { key: key.to_string() };
        Event { client, node: None, op, invoke_ms, complete_ms: Some(complete_ms), outcome: Outcome::Ok(saw) }
    }

    /// The verdict on `events` with the default limits.
    fn verdict(events: Vec<Event>) -> Verdict {
        check(&History { events }, &Limits::default())
    }

    /// Panics unless `verdict` is a failure on `key`; returns its explanation.
    fn explanation_of(verdict: Verdict, key: &str) -> String {
        match verdict {
            Verdict::NotLinearizable { key: bad, explanation } if bad == key => explanation,
            other => panic!("expected NotLinearizable on {key:?}, got {other:?}"),
        }
    }

    #[test]
    fn sequential_write_then_read_of_it_is_linearizable() {
        let events = vec![read(1, "k", None, 0, 1), write(1, "k", 7, 2, 3), read(2, "k", Some(7), 4, 5)];
        assert_eq!(verdict(events), Verdict::Linearizable);
    }

    #[test]
    fn read_of_a_value_never_written_is_not_linearizable() {
        let events = vec![write(1, "k", 7, 0, 1), read(2, "k", Some(8), 2, 3)];
        let explanation = explanation_of(verdict(events), "k");
        assert!(explanation.contains("client 2: read saw 8"), "{explanation}");
    }

    #[test]
    fn read_of_a_value_written_to_another_key_is_not_linearizable() {
        let events = vec![write(1, "a", 7, 0, 1), read(2, "b", Some(7), 2, 3)];
        explanation_of(verdict(events), "b");
    }

    #[test]
    fn stale_read_is_not_linearizable() {
        let events = vec![write(1, "k", 1, 0, 10), write(2, "k", 2, 20, 30), read(3, "k", Some(1), 40, 50)];
        let explanation = explanation_of(verdict(events), "k");
        assert!(explanation.contains("client 3: read saw 1, 40 ms..50 ms"), "{explanation}");
        assert!(explanation.contains("client 2: write 2, 20 ms..30 ms"), "{explanation}");
    }

    #[test]
    fn read_concurrent_with_a_write_may_see_old_or_new() {
        for saw in [Some(1), Some(2)] {
            let events = vec![write(1, "k", 1, 0, 10), write(2, "k", 2, 20, 40), read(3, "k", saw, 25, 35)];
            assert_eq!(verdict(events), Verdict::Linearizable, "read saw {saw:?}");
        }
        // From an absent key, too.
        for saw in [None, Some(1)] {
            let events = vec![write(1, "k", 1, 0, 10), read(2, "k", saw, 5, 15)];
            assert_eq!(verdict(events), Verdict::Linearizable, "read saw {saw:?}");
        }
    }

    #[test]
    fn reads_that_disagree_on_the_order_of_concurrent_writes_are_not_linearizable() {
        let writes = || vec![write(1, "k", 1, 0, 10), write(2, "k", 2, 0, 10)];
        let mut events = writes();
        events.extend([read(3, "k", Some(2), 20, 30), read(3, "k", Some(1), 40, 50)]);
        let explanation = explanation_of(verdict(events), "k");
        assert!(explanation.starts_with("1 of 4 operations linearize"), "{explanation}");
        assert!(explanation.contains("None of these can come next: client 2: write 2"), "{explanation}");
        // Either order alone is fine.
        for (first, second) in [(1, 1), (2, 2)] {
            let mut events = writes();
            events.extend([read(3, "k", Some(first), 20, 30), read(4, "k", Some(second), 40, 50)]);
            assert_eq!(verdict(events), Verdict::Linearizable);
        }
    }

    #[test]
    fn indeterminate_write_whose_value_is_read_later_is_linearizable() {
        let events = vec![write(1, "k", 1, 0, 10), write_lost(2, "k", 2, 20), read(3, "k", Some(2), 100, 110)];
        assert_eq!(verdict(events), Verdict::Linearizable);
    }

    #[test]
    fn indeterminate_write_never_read_is_linearizable() {
        let events = vec![write(1, "k", 1, 0, 10), write_lost(2, "k", 2, 20), read(3, "k", Some(1), 100, 110)];
        assert_eq!(verdict(events), Verdict::Linearizable);
        // A reply that does not say bounds nothing either: the write may land later.
        let mut vague = write(2, "k", 2, 20, 30);
        vague.outcome = Outcome::Indeterminate;
        let events = vec![write(1, "k", 1, 0, 10), vague, read(3, "k", Some(1), 40, 50), read(3, "k", Some(2), 60, 70)];
        assert_eq!(verdict(events), Verdict::Linearizable);
    }

    #[test]
    fn indeterminate_write_can_take_effect_late_but_only_once() {
        // Seen after a later write, it must have landed after that write; then the later
        // write's value cannot come back.
        let events = vec![
            write_lost(1, "k", 1, 0),
            write(2, "k", 2, 10, 20),
            read(3, "k", Some(1), 30, 40),
            read(3, "k", Some(2), 50, 60),
        ];
        explanation_of(verdict(events), "k");
    }

    #[test]
    fn read_of_an_indeterminate_write_before_it_was_invoked_is_not_linearizable() {
        let events = vec![read(1, "k", Some(2), 0, 10), write_lost(2, "k", 2, 20)];
        explanation_of(verdict(events), "k");
    }

    #[test]
    fn indeterminate_read_constrains_nothing() {
        let mut lost = read(2, "k", None, 20, 30);
        lost.outcome = Outcome::Indeterminate;
        lost.complete_ms = None;
        let events = vec![write(1, "k", 1, 0, 10), lost, read(3, "k", Some(1), 40, 50)];
        assert_eq!(verdict(events), Verdict::Linearizable);
    }

    #[test]
    fn read_of_absent_after_a_completed_write_is_not_linearizable() {
        let events = vec![write(1, "k", 1, 0, 10), read(2, "k", None, 20, 30)];
        let explanation = explanation_of(verdict(events), "k");
        assert!(explanation.contains("read saw absent"), "{explanation}");
    }

    #[test]
    fn equal_timestamps_count_as_concurrent() {
        // The write's reply and the read's invocation fall in the same millisecond: either
        // may have come first, so the read may see the old value.
        let events = vec![write(1, "k", 1, 0, 10), write(2, "k", 2, 20, 30), read(3, "k", Some(1), 30, 40)];
        assert_eq!(verdict(events), Verdict::Linearizable);
        // One millisecond later it may not.
        let events = vec![write(1, "k", 1, 0, 10), write(2, "k", 2, 20, 30), read(3, "k", Some(1), 31, 40)];
        explanation_of(verdict(events), "k");
        // An operation within one millisecond is well-formed.
        let events = vec![write(1, "k", 1, 5, 5), read(2, "k", Some(1), 6, 6)];
        assert_eq!(verdict(events), Verdict::Linearizable);
    }

    #[test]
    fn several_keys_name_the_bad_one() {
        let events = vec![
            write(1, "a", 1, 0, 10),
            read(2, "a", Some(1), 20, 30),
            write(1, "b", 2, 0, 10),
            write(1, "b", 3, 20, 30),
            read(2, "b", Some(2), 40, 50),
            write(1, "c", 4, 0, 10),
            read(2, "c", Some(4), 20, 30),
        ];
        explanation_of(verdict(events.clone()), "b");
        let good: Vec<Event> = events.into_iter().filter(|event| event.op.key() != "b").collect();
        assert_eq!(verdict(good), Verdict::Linearizable);
    }

    #[test]
    fn too_many_operations_on_a_key_gives_up() {
        let events: Vec<Event> = (0..11).map(|value| write(1, "k", value, 10 * value, 10 * value + 1)).collect();
        let limits = Limits { ops_per_key_max: 10, ..Limits::default() };
        let verdict = check(&History { events: events.clone() }, &limits);
        assert!(matches!(&verdict, Verdict::GaveUp { key, .. } if key == "k"), "{verdict:?}");
        let limits = Limits { ops_per_key_max: 11, ..Limits::default() };
        assert_eq!(check(&History { events }, &limits), Verdict::Linearizable);
    }

    #[test]
    fn a_failure_on_a_later_key_beats_giving_up_on_an_earlier_one() {
        let mut events: Vec<Event> = (0..3).map(|value| write(1, "a", value, 10 * value, 10 * value + 1)).collect();
        events.extend([write(1, "b", 10, 0, 10), read(2, "b", None, 20, 30)]);
        let limits = Limits { ops_per_key_max: 2, ..Limits::default() };
        explanation_of(check(&History { events }, &limits), "b");
    }

    #[test]
    fn a_small_step_budget_gives_up_on_a_hard_linearizable_history() {
        let events = concurrent_history(&mut ChaCha8Rng::seed_from_u64(7), 8, 50);
        assert_eq!(verdict(events.clone()), Verdict::Linearizable);
        let limits = Limits { steps_max: 50, ..Limits::default() };
        let verdict = check(&History { events }, &limits);
        assert!(matches!(&verdict, Verdict::GaveUp { key, reason } if key == "k" && reason.contains("steps_max")));
    }

    /// `ops` operations on key `k` by one client at a time, each strictly after the last, as
    /// a real register answers them; about half are reads, and writes are numbered from 1.
    fn sequential_history(rng: &mut ChaCha8Rng, ops: usize) -> Vec<Event> {
        let (mut now_ms, mut register, mut next_value) = (0, None, 1);
        let mut events = Vec::with_capacity(ops);
        for _ in 0..ops {
            let client = rng.gen_range(1..=5);
            let invoke_ms = now_ms + rng.gen_range(1..=5);
            let complete_ms = invoke_ms + rng.gen_range(0..=5);
            now_ms = complete_ms;
            if rng.gen_bool(0.5) {
                events.push(read(client, "k", register, invoke_ms, complete_ms));
            } else {
                events.push(write(client, "k", next_value, invoke_ms, complete_ms));
                register = Some(next_value);
                next_value += 1;
            }
        }
        events
    }

    #[test]
    fn random_sequential_histories_pass_and_one_stale_read_fails_them() {
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut events = sequential_history(&mut rng, 200);
            assert_eq!(verdict(events.clone()), Verdict::Linearizable, "seed {seed}");

            // A read that saw the second write or later, made to see an older write: every
            // operation is sequential, so it definitely reads a value overwritten before it.
            let stale: Vec<usize> = (0..events.len())
                .filter(|&index| matches!(events[index].outcome, Outcome::Ok(Some(value)) if value >= 2))
                .filter(|&index| matches!(events[index].op, Op::Read { .. }))
                .collect();
            let index = stale[rng.gen_range(0..stale.len())];
            let Outcome::Ok(Some(saw)) = events[index].outcome else { unreachable!() };
            let older = rng.gen_range(1..saw);
            events[index].outcome = Outcome::Ok(Some(older));
            let explanation = explanation_of(verdict(events), "k");
            assert!(explanation.contains(&format!("read saw {older}")), "seed {seed}: {explanation}");
        }
    }

    /// `ops_per_client` operations on key `k` by each of `clients` clients, each client one
    /// at a time but overlapping the others, answered by a real register that applies each at
    /// a random instant inside its interval; about half are reads, and writes are unique.
    fn concurrent_history(rng: &mut ChaCha8Rng, clients: u32, ops_per_client: usize) -> Vec<Event> {
        let mut events = Vec::new();
        let mut instants = Vec::new();
        for client in 1..=clients {
            let mut now_ms = rng.gen_range(0..10);
            for _ in 0..ops_per_client {
                let invoke_ms = now_ms;
                let complete_ms = invoke_ms + rng.gen_range(1..=20);
                now_ms = complete_ms + rng.gen_range(0..=5);
                instants.push((rng.gen_range(invoke_ms..=complete_ms), events.len()));
                let value = events.len() as u64;
                events.push(if rng.gen_bool(0.5) {
                    read(client, "k", None, invoke_ms, complete_ms)
                } else {
                    write(client, "k", value, invoke_ms, complete_ms)
                });
            }
        }
        instants.sort_unstable();
        let mut register = None;
        for (_, index) in instants {
            match events[index].op {
                Op::Read { .. } => events[index].outcome = Outcome::Ok(register),
                Op::Write { value, .. } => register = Some(value),
            }
        }
        events
    }

    #[test]
    fn a_thousand_concurrent_operations_by_ten_clients_are_decided() {
        // Fifty clients, too: without the pruning rules twenty already exhaust the budget.
        for (clients, seed) in [(10, 0), (10, 1), (10, 2), (50, 3)] {
            let events = concurrent_history(&mut ChaCha8Rng::seed_from_u64(seed), clients, 1000 / clients as usize);
            assert_eq!(events.len(), 1000);
            assert_eq!(verdict(events), Verdict::Linearizable, "{clients} clients, seed {seed}");
        }
    }

    /// Whether `events` are linearizable, by trying every order: no cache, no pruning, no
    /// dropped operations (an indeterminate write's return is +infinity; an indeterminate
    /// read constrains nothing).
    fn brute_force(events: &[Event]) -> bool {
        let ops: Vec<&Event> = events
            .iter()
            .filter(|event| !matches!((&event.op, &event.outcome), (Op::Read { .. }, Outcome::Indeterminate)))
            .collect();
        fn return_ms(event: &Event) -> u64 {
            match (event.complete_ms, &event.outcome) {
                (Some(complete_ms), Outcome::Ok(_)) => complete_ms,
                _ => u64::MAX,
            }
        }
        fn extend(ops: &[&Event], placed: &mut Vec<bool>, state: Option<u64>) -> bool {
            if placed.iter().all(|&done| done) {
                return true;
            }
            for next in 0..ops.len() {
                // Next only if nothing unplaced returned strictly before it was invoked.
                let blocked = (0..ops.len()).any(|other| !placed[other] && return_ms(ops[other]) < ops[next].invoke_ms);
                if placed[next] || blocked {
                    continue;
                }
                let after = match (&ops[next].op, &ops[next].outcome) {
                    (Op::Write { value, .. }, _) => Some(*value),
                    (Op::Read { .. }, Outcome::Ok(saw)) if *saw == state => state,
                    _ => continue,
                };
                placed[next] = true;
                if extend(ops, placed, after) {
                    return true;
                }
                placed[next] = false;
            }
            false
        }
        extend(&ops, &mut vec![false; ops.len()], None)
    }

    /// Up to `ops_max` operations on key `k` with random intervals, outcomes and values: some
    /// indeterminate, reads seeing absent, a written value, or occasionally one never written.
    fn random_small_history(rng: &mut ChaCha8Rng, ops_max: usize) -> Vec<Event> {
        let ops = rng.gen_range(1..=ops_max);
        let mut events = Vec::with_capacity(ops);
        for index in 0..ops {
            let client = rng.gen_range(1..=3);
            let invoke_ms = rng.gen_range(0..20);
            let complete_ms = invoke_ms + rng.gen_range(0..8);
            let mut event = if rng.gen_bool(0.5) {
                write(client, "k", index as u64 + 1, invoke_ms, complete_ms)
            } else {
                let saw = match rng.gen_range(0..10) {
                    0..=2 => None,
                    3 => Some(99),
                    _ => Some(rng.gen_range(1..=ops as u64)),
                };
                read(client, "k", saw, invoke_ms, complete_ms)
            };
            if rng.gen_bool(0.15) {
                event.outcome = Outcome::Indeterminate;
                if rng.gen_bool(0.5) {
                    event.complete_ms = None;
                }
            }
            events.push(event);
        }
        events
    }

    #[test]
    fn agrees_with_trying_every_order_on_small_random_histories() {
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let mut passes = 0;
        for round in 0..3000 {
            let events = random_small_history(&mut rng, 7);
            let expected = brute_force(&events);
            let got = verdict(events.clone());
            assert!(!matches!(got, Verdict::GaveUp { .. }), "round {round}: {got:?}");
            assert_eq!(got == Verdict::Linearizable, expected, "round {round}: {got:?} for {events:#?}");
            passes += usize::from(expected);
        }
        // Both verdicts were exercised.
        assert!((300..2700).contains(&passes), "{passes} of 3000 passed");
    }
}
