//! What clients did and saw: the history the checkers judge.
//!
//! Every operation a simulated client issues is recorded with the virtual time it was invoked
//! and the time its reply arrived, and (single-leader) the node it was sent to. An operation whose reply never came (the client timed out,
//! or its node crashed) is *indeterminate*: it may or may not have taken effect, as in Jepsen,
//! and a checker must allow both. An operation that definitely did not take effect (the node
//! refused it: `-READONLY`, a syntax error) is not recorded at all.
//!
//! Values written are unique per history (the workload numbers its writes), so a read names
//! the write it saw.
//!
//! [`Op`] and [`Outcome`] are single-leader's vocabulary (SET and GET); a family whose
//! clients do more (the leaderless DEL, and reads that return siblings) records [`Event`]s of
//! its own operations and outcomes in the same [`History`].

use serde::Serialize;

/// A simulated client.
pub type ClientId = u32;

/// What a client asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Op {
    /// GET key.
    Read {
        /// The key.
        key: String,
    },
    /// SET key value.
    Write {
        /// The key.
        key: String,
        /// The value, unique in the history.
        value: u64,
    },
}

impl Op {
    /// True for a write.
    pub fn is_write(&self) -> bool {
        matches!(self, Op::Write { .. })
    }

    /// The key the operation is on.
    pub fn key(&self) -> &str {
        match self {
            Op::Read { key } | Op::Write { key, .. } => key,
        }
    }
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// It took effect. For a read, the value seen (`None`: the key was absent).
    Ok(Option<u64>),
    /// No reply, or a reply that does not say (a timeout, `-NOREPLICAS`, a crash): it may or
    /// may not have taken effect.
    Indeterminate,
}

/// One operation in a history: by default a single-leader [`Op`] and its [`Outcome`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event<O = Op, R = Outcome> {
    /// Who issued it (a single-leader session is its client: one session per client).
    pub client: ClientId,
    /// The node it was sent to (`None` where the family does not record it).
    pub node: Option<usize>,
    /// What it was.
    pub op: O,
    /// Virtual milliseconds when it was sent.
    pub invoke_ms: u64,
    /// Virtual milliseconds when its reply arrived; `None` when indeterminate (it may take
    /// effect at any time after `invoke_ms`).
    pub complete_ms: Option<u64>,
    /// How it ended.
    pub outcome: R,
}

/// Every operation of a run, in the order they ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct History<O = Op, R = Outcome> {
    /// The operations.
    pub events: Vec<Event<O, R>>,
}

impl<O, R> Default for History<O, R> {
    fn default() -> Self {
        History { events: Vec::new() }
    }
}
