//! The commands a store answers: the state machine a family's log replicates.
//!
//! A single-leader node (and a lone one) runs Redis's string commands over plain values
//! ([`Strings`], [`Store::execute`]). The multi-leader family runs the same machinery (the
//! leader's log, its followers, elections) over per-key causal states, so that leaders can
//! tell a concurrent write from an overwrite: its own [`Commands`] read and write those
//! states through the same store, and the single-leader family never learns what they hold.

use super::{Reply, Request, Store};
use crate::error::Result;
use crate::storage::Engine;
use std::fmt;

/// How a replica's store answers a client's request. Writes go through the store (its
/// [`Store::put_record`] or its own commands), so that a leader captures them for its log.
pub trait Commands<E>: fmt::Debug + Send {
    /// Answers `request` at wall-clock `now_ms`. An `Err` is an engine failure that must stop
    /// the node; a request the client got wrong is an `Ok(Reply::Error(..))`.
    fn execute(&mut self, store: &mut Store<E>, now_ms: u64, request: Request) -> Result<Reply>;

    /// True when a replica may execute a logged request again with [`Store::execute`] (the
    /// statement log format): only for Redis's string commands; another family's requests
    /// are always logged as their effects.
    fn statements(&self) -> bool {
        false
    }

    /// True for a key (physical) of the family's own records, which replicas may hold
    /// differently by design and a digest leaves out (none by default).
    fn own_record(&self, key: &[u8]) -> bool {
        let _ = key;
        false
    }

    /// True when replicas holding the same value may stamp its record with different
    /// versions (the value holds its own versions), so a digest compares values only.
    fn record_versions_differ(&self) -> bool {
        false
    }
}

/// Redis's string commands over plain values: [`Store::execute`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Strings;

impl<E: Engine> Commands<E> for Strings {
    fn execute(&mut self, store: &mut Store<E>, now_ms: u64, request: Request) -> Result<Reply> {
        store.execute(now_ms, request)
    }

    fn statements(&self) -> bool {
        true
    }
}
