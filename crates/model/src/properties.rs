//! The properties the checker judges every reachable state by, and the glue that makes
//! [`ElectionModel`] a stateright [`Model`].
//!
//! # Properties
//!
//! - [`ONE_LEADER_PER_EPOCH`] (always): no two replicas ever led the same epoch. Judged on the
//!   ghost set of every (epoch, node) leadership, so a leader that has since crashed or
//!   stepped down still counts.
//! - [`ACKED_ON_MAJORITY`] (always): a majority of the replicas hold every acknowledged write,
//!   at its LSN and with its epoch: no later election, crash or cut takes it off.
//! - [`NEW_LEADERS_HOLD_ACKED`] (always): every replica leading an epoch holds every write
//!   acknowledged in an older epoch. Judged on every state, so on the state right after each
//!   election: a new leader holds, at the moment it is elected, every write acknowledged
//!   before in an older epoch, and keeps it while it leads.
//! - [`ACKED_THEN_ELECTED`] (sometimes): a replica leads an epoch newer than an acknowledged
//!   write's, so [`NEW_LEADERS_HOLD_ACKED`] is not vacuous.
//! - [`ACKED_BOTH`] (sometimes): both clients' writes are acknowledged.
//! - [`SERVED_DURABLE_ON_A_LEADER`] (always): no follower ever applied (so no read of it ever
//!   saw) a write that was not durable on a leader while it led. Judged when the follower
//!   applies, against the ghost set of such writes, which only grows.
//! - [`SERVED_A_WRITE`] (sometimes): a follower applies a client's write, so the property
//!   above is not vacuous.
//!
//! CAVEATS
//! - "Every write acknowledged before the election" is judged for writes acknowledged in an
//!   older epoch than the new leader's, as Raft's Leader Completeness is. A leader of an old
//!   epoch may still be elected after a newer leader acknowledged a write (its grants were in
//!   flight while the cluster moved on), and the check reaches such states; it lacks that
//!   write, and that is harmless: every replica that would follow it has moved to the newer
//!   epoch and refuses it.

use crate::model::{Action, ElectionModel};
use crate::state::{node_id, State, CLIENTS, REPLICAS};
use replikv_core::single_leader::election::Tally;
use stateright::{Model, Property};

/// The name of the first safety property.
pub const ONE_LEADER_PER_EPOCH: &str = "at most one leader per epoch";

/// The name of the second safety property's first half.
pub const ACKED_ON_MAJORITY: &str = "acknowledged writes stay on a majority";

/// The name of the second safety property's second half.
pub const NEW_LEADERS_HOLD_ACKED: &str = "leaders of newer epochs hold acknowledged writes";

/// The name of the sanity property that a newer epoch's leader exists beside an acknowledged
/// write.
pub const ACKED_THEN_ELECTED: &str = "a leader of a newer epoch than an acknowledged write's";

/// The name of the sanity property that both clients are acknowledged.
pub const ACKED_BOTH: &str = "both writes are acknowledged";

/// The name of the third safety property: followers serve only what a leader made durable.
pub const SERVED_DURABLE_ON_A_LEADER: &str = "followers serve only entries durable on a leader";

/// The name of the sanity property that a follower serves a client's write.
pub const SERVED_A_WRITE: &str = "a follower serves a write";

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
            Property::always(ACKED_ON_MAJORITY, |_, s| acked_on_majority(s)),
            Property::always(NEW_LEADERS_HOLD_ACKED, |_, s| new_leaders_hold_acked(s)),
            Property::sometimes(ACKED_THEN_ELECTED, |_, s| acked_then_elected(s)),
            Property::sometimes(ACKED_BOTH, |_, s| acked_both(s)),
            Property::always(SERVED_DURABLE_ON_A_LEADER, |_, s| served_durable_on_a_leader(s)),
            Property::sometimes(SERVED_A_WRITE, |_, s| served_a_write(s)),
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

/// True when a majority of the replicas hold every acknowledged write at its LSN.
pub fn acked_on_majority(state: &State) -> bool {
    state.acked.iter().all(|&ack| {
        let mut tally = Tally::default();
        for (i, node) in state.nodes.iter().enumerate() {
            tally.record(node_id(i), node.holds(ack.lsn, ack.entry));
        }
        tally.won(REPLICAS)
    })
}

/// True when every replica leading an epoch holds every write acknowledged in an older one.
pub fn new_leaders_hold_acked(state: &State) -> bool {
    let leaders = state.nodes.iter().filter(|n| n.is_leader());
    leaders.into_iter().all(|n| state.acked.iter().all(|a| n.epoch <= a.entry.epoch || n.holds(a.lsn, a.entry)))
}

/// True when a replica leads an epoch newer than some acknowledged write's: the case the
/// property [`new_leaders_hold_acked`] is about.
pub fn acked_then_elected(state: &State) -> bool {
    let newest = state.nodes.iter().filter(|n| n.is_leader()).map(|n| n.epoch).max();
    state.acked.iter().any(|ack| newest > Some(ack.entry.epoch))
}

/// True when every client's write is acknowledged.
pub fn acked_both(state: &State) -> bool {
    state.acked.len() == CLIENTS
}

/// True when no follower applied (and so could serve) a write that was not durable on a
/// leader while it led: no follower shows what a leader could still lose in a crash.
pub fn served_durable_on_a_leader(state: &State) -> bool {
    !state.served_undurable
}

/// True when a follower applied a client's write, so [`served_durable_on_a_leader`] is not
/// vacuous.
pub fn served_a_write(state: &State) -> bool {
    state.served_write
}
