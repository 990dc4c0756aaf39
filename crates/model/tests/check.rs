//! The exhaustive checks: replikv's rules hold every property within the bounds, and each
//! canary (one rule broken on purpose) violates the property that rule protects, which shows
//! the check can fail.

use replikv_model::properties::{
    ACKED_ON_MAJORITY, NEW_LEADERS_HOLD_ACKED, ONE_LEADER_PER_EPOCH, SERVED_DURABLE_ON_A_LEADER,
};
use replikv_model::symmetry::representative;
use replikv_model::{Bug, ElectionModel};
use stateright::{Checker, HasDiscoveries, Model};

/// Threads for the checker: the CI machine has two cores.
const CHECKER_THREADS: usize = 2;

// Timing the check is what the test reports, not an input to the model.
#[allow(clippy::disallowed_methods)]
fn now() -> std::time::Instant {
    std::time::Instant::now()
}

/// Checks `model` exhaustively (depth first, one state per symmetry class) and asserts that
/// every `always` property holds and every `sometimes` property is reached.
fn check(model: ElectionModel) {
    let start = now();
    let checker = model.checker().threads(CHECKER_THREADS).symmetry_fn(representative).spawn_dfs().join();
    println!(
        "replikv rules, epoch max {}, crashes max {}: {} unique states (up to symmetry), {} generated, \
         depth {}, {:?}",
        checker.model().epoch_max,
        checker.model().crashes_max,
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
        start.elapsed()
    );
    checker.assert_properties();
}

#[test]
fn replikv_rules_hold_for_three_replicas_and_two_clients() {
    check(ElectionModel::new());
}

/// Three elections instead of two: about twelve million classes of states before durability
/// lagged sends (not measured since), so run by hand:
/// `cargo test --release -p replikv-model -- --ignored --nocapture`.
#[test]
#[ignore]
fn replikv_rules_hold_over_three_epochs() {
    check(ElectionModel { epoch_max: 3, ..ElectionModel::new() });
}

/// Checks the model with `bug` breadth first (so the counterexample is a shortest one) until
/// `expected` is violated, and prints the counterexample; fails if it never is.
fn canary(bug: Bug, expected: &'static str) {
    let model = ElectionModel::with_bug(bug);
    let start = now();
    let checker = model
        .checker()
        .threads(CHECKER_THREADS)
        .finish_when(HasDiscoveries::AnyOf([expected].into()))
        .spawn_bfs()
        .join();
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
fn canary_voter_ignoring_the_log_elects_a_leader_without_an_acknowledged_write() {
    canary(Bug::VoterIgnoresLog, NEW_LEADERS_HOLD_ACKED);
}

#[test]
fn canary_acknowledging_one_copy_leaves_a_write_off_the_majority() {
    canary(Bug::AckOnOneCopy, ACKED_ON_MAJORITY);
}

#[test]
fn canary_voting_twice_elects_two_leaders_in_one_epoch() {
    canary(Bug::VoterVotesTwice, ONE_LEADER_PER_EPOCH);
}

#[test]
fn canary_follower_skipping_the_check_miscounts_a_majority() {
    canary(Bug::FollowerSkipsCheck, ACKED_ON_MAJORITY);
}

#[test]
fn canary_follower_keeping_conflicts_miscounts_a_majority() {
    canary(Bug::FollowerKeepsConflicts, ACKED_ON_MAJORITY);
}

#[test]
fn canary_leader_counting_its_undurable_copy_loses_a_write_in_a_crash() {
    canary(Bug::LeaderCountsUndurable, ACKED_ON_MAJORITY);
}

#[test]
fn canary_follower_serving_what_it_matched_shows_an_entry_no_leader_made_durable() {
    canary(Bug::FollowerServesUndurable, SERVED_DURABLE_ON_A_LEADER);
}

#[test]
fn canary_follower_serving_past_what_it_matched_shows_a_write_a_crash_took_back() {
    canary(Bug::FollowerServesUnmatched, SERVED_DURABLE_ON_A_LEADER);
}
