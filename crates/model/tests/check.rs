//! The exhaustive checks: replikv's rules hold every property; each canary breaks one.

use replikv_model::properties::{ACKED_WRITES_SURVIVE, ONE_LEADER_PER_EPOCH};
use replikv_model::{Bug, ElectionModel};
use stateright::{Checker, HasDiscoveries, Model};

/// Threads for the checker: the CI machine has two cores.
const CHECKER_THREADS: usize = 2;

// Timing the check is the test's report, not an input to the model.
#[allow(clippy::disallowed_methods)]
fn now() -> std::time::Instant {
    std::time::Instant::now()
}

#[test]
fn replikv_rules_hold_for_three_replicas_and_two_clients() {
    let model = ElectionModel::new();
    let start = now();
    let checker = model.checker().threads(CHECKER_THREADS).spawn_bfs().join();
    println!(
        "replikv rules (epoch max {}, crashes max {}): {} unique states, {} generated, depth {}, {:?}",
        checker.model().epoch_max,
        checker.model().crashes_max,
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
        start.elapsed()
    );
    checker.assert_properties();
}

/// Checks the model with `bug` until a property fails, and asserts that `expected` is one that does.
fn canary(bug: Bug, expected: &'static str) {
    let model = ElectionModel::with_bug(bug);
    let start = now();
    let checker =
        model.checker().threads(CHECKER_THREADS).finish_when(HasDiscoveries::AnyFailures).spawn_bfs().join();
    let path = checker.discovery(expected).unwrap_or_else(|| panic!("{bug:?} should violate {expected:?}"));
    let last = path.last_state().clone();
    let actions = path.into_actions();
    println!(
        "canary {bug:?}: violates {expected:?} after {} steps; {} unique states, {:?}",
        actions.len(),
        checker.unique_state_count(),
        start.elapsed()
    );
    for action in &actions {
        println!("  {action:?}");
    }
    println!("  final state: {last:?}");
}

#[test]
fn canary_voter_ignoring_the_log_loses_an_acknowledged_write() {
    canary(Bug::VoterIgnoresLog, ACKED_WRITES_SURVIVE);
}

#[test]
fn canary_ack_on_one_copy_loses_an_acknowledged_write() {
    canary(Bug::AckOnOneCopy, ACKED_WRITES_SURVIVE);
}

#[test]
fn canary_voting_twice_elects_two_leaders() {
    canary(Bug::VoterVotesTwice, ONE_LEADER_PER_EPOCH);
}
