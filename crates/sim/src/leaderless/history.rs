//! What leaderless clients did and saw, and what each write was stamped with: the input of
//! the checkers ([`super::checks`]).
//!
//! Every write a client issues gets a number unique in the run (a SET writes its number as
//! its value), so a value read names its write, and a DEL has a name too. An operation is
//! recorded in a [`History`] when it ends: a write acknowledged (OK, or the number a DEL
//! answers), a read answered, or indeterminate (a timeout, a lost connection, a `NOQUORUM`
//! write: it may still take effect, at any time later). A refused operation (a read that
//! heard from fewer than `r` replicas, a bad context) took no effect and is not recorded.
//!
//! A write in a session ([`Receipt`]) records the context its answer carried, and the dot
//! it was given: what the session checkers ([`super::checks::sessions`]) judge by.
//!
//! The simulator also watches each coordinator as it stamps a write (the **oracle**): the dot
//! the write was given, its version, and the causal context it replaced (a plain write
//! replaces what its coordinator had seen; a write with `CONTEXT` what the token named). The
//! clients do not see this; the checkers use it to tell "newer" and "replaced" apart from
//! "lost".

use crate::history::History;
use replikv_core::causality::{Dot, VersionVector};
use replikv_core::version::Version;
use serde::Serialize;

/// What a leaderless client asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Op {
    /// SET key number, or with `CONTEXT` (the token of the client's last siblings read of
    /// the key).
    Set {
        /// The key.
        key: String,
        /// The write's number, also its value.
        write: u64,
        /// It carried a context token.
        context: bool,
    },
    /// DEL key.
    Del {
        /// The key.
        key: String,
        /// The write's number.
        write: u64,
    },
    /// GET key (`lww`), or REPLIKV.SIBLINGS key (`siblings`).
    Read {
        /// The key.
        key: String,
    },
}

impl Op {
    /// The key the operation is on.
    pub fn key(&self) -> &str {
        match self {
            Op::Set { key, .. } | Op::Del { key, .. } | Op::Read { key } => key,
        }
    }

    /// The write's number, for a write.
    pub fn write(&self) -> Option<u64> {
        match self {
            Op::Set { write, .. } | Op::Del { write, .. } => Some(*write),
            Op::Read { .. } => None,
        }
    }
}

/// How a leaderless operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// A write was acknowledged: `w` replicas hold it. In a session, with what its answer
    /// said (`None` outside sessions).
    Written(Option<Receipt>),
    /// A read was answered.
    Read(Seen),
    /// No answer that says (a timeout, a lost connection, `NOQUORUM`): it may or may not have
    /// taken effect, now or later.
    Indeterminate,
}

impl Outcome {
    /// True for an acknowledged write.
    pub fn is_written(&self) -> bool {
        matches!(self, Outcome::Written(_))
    }
}

/// What a read returned.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Seen {
    /// The write numbers of the values returned: none (nil), one (a GET), or every sibling
    /// (REPLIKV.SIBLINGS).
    pub values: Vec<u64>,
    /// The causal context of the state read (REPLIKV.SIBLINGS only): the writes it had seen.
    pub context: Option<VersionVector>,
}

/// What a session's client learned of its acknowledged write from the answer
/// ([`replikv_core::kv::Reply::InKeySession`]) and from what it sent: client-visible, unlike a
/// [`Stamp`].
///
/// The answer carries the context of the state the write made. Its coordinator drew the
/// write's dot as its own entry of that context, raised above every entry it held
/// (`Siblings::write_from`), so the dot is the coordinator's entry; the client knows the
/// coordinator because it is the node it sent the write to (every simulated node replicates
/// every key, so none forwards; a cluster that forwards would have to name the coordinator
/// in the answer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Receipt {
    /// The write's dot.
    pub dot: Dot,
    /// The context of the state it made.
    pub context: VersionVector,
    /// The context its `CONTEXT` token named (`SET ... CONTEXT`), `None` for a plain write.
    pub token: Option<VersionVector>,
}

impl Receipt {
    /// True when this write replaced the write of `dot`: no state that has seen this write can
    /// hold that one (a merge drops a value the other side has seen and no longer holds).
    ///
    /// A plain write replaced everything its coordinator had seen: every other dot its
    /// context covers (the dots of its coordinator below its own included, which only that
    /// coordinator hands out, in order). A write with `CONTEXT` replaced what its token
    /// covers; what else its coordinator held stays beside it as siblings.
    pub fn replaced(&self, dot: Dot) -> bool {
        dot != self.dot && self.token.as_ref().unwrap_or(&self.context).contains(dot)
    }
}

/// `context` as `{node:counter, ...}`, nodes as their ids print: for traces and failures.
pub fn show_context(context: &VersionVector) -> String {
    let entries: Vec<String> = context.entries().map(|(node, counter)| format!("{node}:{counter}")).collect();
    format!("{{{}}}", entries.join(", "))
}

/// What the oracle saw a coordinator stamp a write with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stamp {
    /// The key.
    pub key: String,
    /// The dot it was given.
    pub dot: Dot,
    /// Its version (HLC and coordinator): what last-write-wins orders by.
    pub version: Version,
    /// The context it replaced: every write it overwrote or deleted is covered by it.
    pub replaced: VersionVector,
    /// A delete (a tombstone).
    pub delete: bool,
}

/// A leaderless run's history.
pub type LeaderlessHistory = History<Op, Outcome>;
