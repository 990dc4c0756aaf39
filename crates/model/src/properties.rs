//! The properties the checker judges every reachable state by, and the glue that makes
//! [`ElectionModel`] a stateright [`Model`].
//!
//! # Properties
//!
//! - [`ONE_LEADER_PER_EPOCH`] (always): no two replicas ever led the same epoch. Judged on the
//!   ghost set of every (epoch, node) leadership, so a leader that has since crashed or
//!   stepped down still counts.
//! - [`ACKED_WRITES_SURVIVE`] (always): every acknowledged write is held, at its LSN and with
//!   its epoch, by a majority of the replicas; and every replica that is leader of an epoch
//!   newer than a write's acknowledgement holds it. The check runs on every state, so it runs
//!   on the state right after each election: a new leader holds every write acknowledged in an
//!   older epoch at the moment it is elected, and keeps it.
//! - [`ACKED_THEN_ELECTED`] (sometimes): a write is acknowledged and afterwards a leader is
//!   elected in a newer epoch, so the second property is not vacuous.
//! - [`ACKED_BOTH`] (sometimes): both clients' writes are acknowledged.
//!
//! CAVEATS
//! - "Every write acknowledged before the election" is judged for writes acknowledged in an
//!   older epoch than the new leader's. A leader of an old epoch may still be elected after a
//!   newer leader acknowledged a write (its grants were in flight while the cluster moved
//!   on); it lacks that write, and that is harmless: every replica that would follow it has
//!   moved to the newer epoch and refuses it. Raft promises the same (Leader Completeness is
//!   about newer terms).

use crate::model::{Action, ElectionModel};
use crate::state::{node_id, Acked, State, CLIENTS, REPLICAS};
use replikv_core::replication::election::Tally;
use stateright::{Model, Property};

/// The name of the first safety property.
pub const ONE_LEADER_PER_EPOCH: &str = "at most one leader per epoch";

/// The name of the second safety property.
pub const ACKED_WRITES_SURVIVE: &str = "acknowledged writes survive";

/// The name of the sanity property that a write is acknowledged before a later election.
pub const ACKED_THEN_ELECTED: &str = "a write is acknowledged, then a newer leader is elected";

/// The name of the sanity property that both clients are acknowledged.
pub const ACKED_BOTH: &str = "both writes are acknowledged";

impl Model for ElectionModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![State::new()]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        self.enabled(state, actions);
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut next = last.clone();
        self.step(&mut next, action);
        Some(next)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(ONE_LEADER_PER_EPOCH, |_, s| one_leader_per_epoch(s)),
            Property::always(ACKED_WRITES_SURVIVE, |_, s| acked_writes_survive(s)),
            Property::sometimes(ACKED_THEN_ELECTED, |_, s| acked_then_elected(s)),
            Property::sometimes(ACKED_BOTH, |_, s| acked_both(s)),
        ]
    }
}

/// True when no epoch appears twice in the ghost leaderships.
pub fn one_leader_per_epoch(state: &State) -> bool {
    let mut epochs = state.leaderships.iter().map(|&(epoch, _)| epoch).peekable();
    while let Some(epoch) = epochs.next() {
        // The set is ordered by epoch first: a repeated epoch is adjacent.
        if epochs.peek() == Some(&epoch) {
            return false;
        }
    }
    true
}

/// True when every acknowledged write is on a majority and on every leader of a newer epoch.
pub fn acked_writes_survive(state: &State) -> bool {
    state.acked.iter().all(|&ack| on_majority(state, ack) && on_newer_leaders(state, ack))
}

/// True when a majority of the replicas hold `ack` at its LSN.
fn on_majority(state: &State, ack: Acked) -> bool {
    let mut tally = Tally::default();
    for (i, node) in state.nodes.iter().enumerate() {
        tally.record(node_id(i), node.holds(ack.lsn, ack.entry));
    }
    tally.won(REPLICAS)
}

/// True when every replica leading an epoch newer than `ack`'s holds it.
fn on_newer_leaders(state: &State, ack: Acked) -> bool {
    let newer = state.nodes.iter().filter(|n| n.is_leader() && n.epoch > ack.entry.epoch);
    newer.into_iter().all(|n| n.holds(ack.lsn, ack.entry))
}

/// True when a replica leads an epoch newer than some acknowledged write's: the case the
/// second half of [`acked_writes_survive`] is about.
pub fn acked_then_elected(state: &State) -> bool {
    let newest = state.nodes.iter().filter(|n| n.is_leader()).map(|n| n.epoch).max();
    state.acked.iter().any(|ack| newest > Some(ack.entry.epoch))
}

/// True when every client's write is acknowledged.
pub fn acked_both(state: &State) -> bool {
    state.acked.len() == CLIENTS
}
