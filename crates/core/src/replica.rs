//! The replica: a node's state machine, driven by `step(now, input, &mut outbox)`.
//!
//! Every replication strategy replikv offers will be a replica of this shape: the runtime
//! hands it one input at a time with the current time, the replica pushes what must be sent
//! into an outbox, and the runtime releases the outbox only after `flush` has made the
//! batch's writes durable. The replica itself never blocks, sleeps, reads a clock or touches
//! a socket, so the simulator can run the same code on virtual time.
//!
//! This first replica is a lone node: it executes client requests against its store and
//! answers them. It is the degenerate single-leader cluster (a leader with no followers),
//! and the strategies build on its contract:
//!
//! - `step` with [`Input::Request`] executes the request at `now_ms` and pushes exactly one
//!   [`Output::Reply`] for it, in input order.
//! - `step` with [`Input::Tick`] does timed work: deleting keys past their deadline, with
//!   tombstone writes.
//! - A reply in the outbox may depend on writes that are not yet durable: the runtime must
//!   call [`Replica::flush`] and see it succeed before releasing any output. If `flush` or
//!   `step` returns an error, the node must stop without releasing the outbox.
//!
//! CAVEATS
//! - No replication yet: there are no peers, no log shipping, no roles.

use crate::error::Result;
use crate::kv::{Reply, Request, Store};
use crate::storage::{Engine, EngineStats, Flushed, WrittenOut};
use crate::version::NodeId;

/// Identifies a request across the step boundary, so the runtime can route its reply.
pub type RequestId = u64;

/// What a replica is handed.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// A client's request; its reply carries the same id.
    Request {
        /// Chosen by the runtime, unique among requests in flight.
        id: RequestId,
        /// What the client asked.
        request: Request,
    },
    /// Time passed: do timed work (expiry now; heartbeats and elections later).
    Tick,
}

/// What a replica asks the runtime to send, once the batch is durable.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// The reply to a client's request.
    Reply {
        /// The id of the request this answers.
        id: RequestId,
        /// The answer.
        reply: Reply,
    },
}

/// A lone node's replica.
#[derive(Debug)]
pub struct Replica<E> {
    /// The node's keys and clock.
    store: Store<E>,
}

impl<E: Engine> Replica<E> {
    /// A replica named `node` over `engine`.
    pub fn new(engine: E, node: NodeId) -> Replica<E> {
        Replica { store: Store::new(engine, node) }
    }

    /// Handles one input at wall-clock `now_ms`, pushing outputs into `outbox`. An error is an
    /// engine failure: the node must stop and release nothing.
    pub fn step(&mut self, now_ms: u64, input: Input, outbox: &mut Vec<Output>) -> Result<()> {
        match input {
            // A client asks: execute against local state and answer.
            Input::Request { id, request } => {
                let reply = self.store.execute(now_ms, request)?;
                outbox.push(Output::Reply { id, reply });
            }
            // Time passed: delete what has expired.
            Input::Tick => {
                self.store.expire_due(now_ms)?;
            }
        }
        Ok(())
    }

    /// Makes every write stepped so far durable; only then may the outbox be released.
    pub fn flush(&mut self, now_ms: u64) -> Result<Flushed> {
        self.store.engine_mut().flush(now_ms)
    }

    /// Hands every write stepped so far to the operating system and returns the fsync that
    /// makes them durable; the outbox may be released once it has succeeded (see
    /// [`Engine::write_out`]).
    pub fn write_out(&mut self, now_ms: u64) -> Result<WrittenOut> {
        self.store.engine_mut().write_out(now_ms)
    }

    /// Background work between batches (compaction), bounded by `budget_bytes`.
    pub fn maintain(&mut self, budget_bytes: u64) -> Result<()> {
        self.store.engine_mut().maintain(budget_bytes)
    }

    /// The storage engine's counters.
    pub fn stats(&self) -> EngineStats {
        self.store.engine().stats()
    }
}

#[cfg(test)]
mod golden_tests;
