use super::*;
use crate::check::sessions::Anomaly;
use crate::faults::Faults;
use crate::run::swarm_faults;
use replikv_core::leaderless::{Conflicts, ReadRepair};
use replikv_core::quorum::Nwr;

/// A run of `seed` with n, w, r and `faults`: lww, asynchronous read repair, fsync always,
/// 5 clients on 3 keys, 2 s of faults (the single-leader tests' shape).
fn config(seed: u64, (n, w, r): (usize, usize, usize), faults: Faults) -> Config {
    Config {
        seed,
        nwr: Nwr::new(n, w, r).unwrap(),
        conflicts: Conflicts::Lww,
        read_repair: ReadRepair::Async,
        fsync: Fsync::Always,
        clients: 5,
        keys: 3,
        safety_ms: 2_000,
        quiet_ms: 10_000,
        faults,
        canary: Canary::None,
        anti_entropy_ms: 0,
        tombstone_grace_ms: replikv_core::leaderless::TOMBSTONE_GRACE_MS_DEFAULT,
        sessions: false,
    }
}

/// The names of the checkers that failed.
fn failed(report: &Report) -> Vec<&str> {
    report.judgement.failures()
}

/// Seeds per configuration in CI's fixed sweep (a few seconds in a debug build); the longer
/// sweeps are `replikv sim --mode leaderless --seeds 0..10000` per configuration (README).
const CI_SEEDS: u64 = 25;

#[test]
fn a_sweep_without_canaries_passes_in_every_configuration() {
    type Adjust = fn(&mut Config);
    let configurations: [(&str, Adjust); 5] = [
        ("n3 w2 r2 lww async", |_| {}),
        ("n3 w2 r2 siblings blocking", |c| (c.conflicts, c.read_repair) = (Conflicts::Siblings, ReadRepair::Blocking)),
        ("n3 w1 r1 lww (stale reads are figures)", |c| c.nwr = Nwr::new(3, 1, 1).unwrap()),
        ("n3 w2 r2 fsync never (lost writes are figures)", |c| c.fsync = Fsync::Never),
        ("n5 w3 r3 siblings", |c| (c.nwr, c.conflicts) = (Nwr::new(5, 3, 3).unwrap(), Conflicts::Siblings)),
    ];
    for (name, adjust) in configurations {
        for seed in 0..CI_SEEDS {
            let mut c = config(seed, (3, 2, 2), swarm_faults(seed));
            adjust(&mut c);
            let report = run(c);
            assert!(
                !report.failed(),
                "{name}, seed {seed}: {:?}\nreplay: {}",
                report.judgement.verdicts,
                report.replay()
            );
        }
    }
}

#[test]
fn every_leaderless_canary_is_caught_by_its_checker() {
    // Seeds found by `replikv sim --mode leaderless --canary ... --steps 2000 --quiet-ms
    // 10000 --seeds 0..500` (each canary is caught by most seeds; see the README).
    // (The checkers each canary may trip: an older state overwriting a newer one shows as a
    // stale read, a deleted value back, or a write neither kept nor merged, whichever the
    // seed's history meets first.)
    let newest = "reads see the newest acknowledged write";
    for (canary, seeds, checkers) in [
        (Canary::CountAckTwice, [1, 3], &[newest][..]),
        (
            Canary::OlderOverwrites,
            [0, 1],
            &[newest, "acknowledged deletes stay deleted", "siblings bounded, every write kept or merged"][..],
        ),
        (Canary::RepairWithFirstReply, [0, 1], &["replicas converge by read repair"][..]),
    ] {
        for seed in seeds {
            let mut c = config(seed, (3, 2, 2), swarm_faults(seed));
            c.canary = canary;
            let report = run(c);
            let caught = failed(&report);
            assert!(
                caught.iter().any(|checker| checkers.contains(checker)),
                "{canary:?} at seed {seed}: caught by {caught:?}, expected one of {checkers:?}"
            );
        }
    }
}

#[test]
fn the_lectures_anomalies_are_counted_not_failed() {
    // w + r <= n: reads miss the newest acknowledged write.
    let report = run(config(3, (3, 1, 1), swarm_faults(3)));
    assert!(!report.failed(), "{:?}", report.judgement.verdicts);
    assert!(report.anomalies.stale_reads > 0, "{:?}", report.anomalies);
    // lww with clock skew: older values overwrite newer ones; none without skew.
    let skewed = Faults::parse("skew=300,delay=1..20,drop=0.02").unwrap();
    let report = run(config(1, (3, 1, 1), skewed.clone()));
    assert!(!report.failed(), "{:?}", report.judgement.verdicts);
    assert!(report.anomalies.older_overwrites > 0, "{:?}", report.anomalies);
    let calm = Faults { skew_ms: 0, ..skewed };
    assert_eq!(run(config(1, (3, 1, 1), calm)).anomalies.older_overwrites, 0);
    // fsync never and crashes: a node comes back older and a quorum read returns it.
    let mut c = config(0, (3, 2, 2), swarm_faults(0));
    c.fsync = Fsync::Never;
    let report = run(c);
    assert!(!report.failed(), "{:?}", report.judgement.verdicts);
    assert!(
        report.anomalies.came_back_older > 0 && report.anomalies.stale_after_rollback > 0,
        "{:?}",
        report.anomalies
    );
}

#[test]
fn a_calm_run_passes_every_check_and_counts_no_anomaly() {
    let report = run(config(1, (3, 2, 2), Faults::none()));
    assert!(!report.failed(), "{:?}", report.judgement.verdicts);
    assert!(report.judgement.run.ok > 100, "the clients got work done: {:?}", report.judgement.run);
    assert_eq!(report.judgement.run.indeterminate, 0, "nothing times out without faults");
    assert!(report.stamped > 50 && report.written > 50, "{} stamped, {} written", report.stamped, report.written);
    assert_eq!(report.anomalies, Anomalies::default());
}

#[test]
fn regression_a_coordinator_no_longer_hands_one_dot_to_two_writes() {
    // Seed 195 sent a write before its coordinator's fsync; the coordinator crashed, came
    // back without it and gave its dot to its next write of the key.
    let report = run(config(195, (3, 2, 2), swarm_faults(195)));
    assert!(!report.failed(), "{:?}", report.judgement.verdicts);
    assert!(report.judgement.run.crashes > 0);
}

#[test]
fn one_seed_replays_the_same_trace() {
    for seed in 0..10 {
        let mut c = config(seed, (3, 2, 2), swarm_faults(seed));
        c.conflicts = if seed % 2 == 0 { Conflicts::Lww } else { Conflicts::Siblings };
        let (a, b) = (run(c.clone()), run(c));
        assert_eq!(a.judgement.trace_hash, b.judgement.trace_hash, "seed {seed}: two runs, two traces");
        assert_eq!(a.judgement.run, b.judgement.run);
    }
    assert_ne!(
        run(config(1, (3, 2, 2), swarm_faults(1))).judgement.trace_hash,
        run(config(2, (3, 2, 2), swarm_faults(2))).judgement.trace_hash
    );
}

#[test]
fn the_replay_command_names_every_setting() {
    let mut c = config(7, (5, 2, 4), Faults::parse("drop=0.5").unwrap());
    (c.conflicts, c.read_repair, c.fsync, c.canary) =
        (Conflicts::Siblings, ReadRepair::Blocking, Fsync::Never, Canary::OlderOverwrites);
    (c.clients, c.keys, c.safety_ms, c.quiet_ms) = (2, 4, 300, 5_000);
    let report = run(c);
    assert_eq!(
        report.replay(),
        "replikv sim --mode leaderless --n 5 --w 2 --r 4 --conflicts siblings --read-repair blocking --fsync never \
         --seed 7 --steps 300 --quiet-ms 5000 --clients 2 --keys 4 --faults \
         'drop=0.5,dup=0,delay=1..1,partition=0,crash=0,pause=0,skew=0,drift=0' --canary older-overwrites"
    );
}

#[test]
fn a_calm_siblings_run_records_every_read_even_of_deleted_keys() {
    // REPLIKV.SIBLINGS lists a delete as nil: such a read must reach the history (the checkers
    // judge it), not be counted as refused.
    let mut c = config(4, (3, 2, 2), Faults::none());
    c.conflicts = Conflicts::Siblings;
    let report = run(c);
    assert!(!report.failed(), "{:?}", report.judgement.verdicts);
    assert_eq!(report.judgement.run.refused, 0, "{:?}", report.judgement.run);
}

/// `config` with anti-entropy every second and a two-second tombstone grace.
fn with_anti_entropy(mut c: Config) -> Config {
    c.anti_entropy_ms = 1_000;
    c.tombstone_grace_ms = 2_000;
    c
}

#[test]
fn with_anti_entropy_replicas_converge_without_reads_and_purge_tombstones_safely() {
    let mut purged = 0;
    for seed in 0..CI_SEEDS {
        let c = with_anti_entropy(config(seed, (3, 2, 2), swarm_faults(seed)));
        let converge = converge_checker(&c);
        let report = run(c);
        assert!(report.replay().contains(" --anti-entropy-ms 1000 "), "{}", report.replay());
        assert!(!report.failed(), "seed {seed}: {:?}\nreplay: {}", report.judgement.verdicts, report.replay());
        for checker in [converge, TREES_CHECKER, PURGE_CHECKER] {
            let verdict = report.judgement.verdicts.iter().find(|(name, _)| name == checker).map(|(_, v)| v);
            assert_eq!(verdict, Some(&Verdict::Pass), "seed {seed}: {checker}");
        }
        purged += report.counters.tombstones_purged;
    }
    assert!(purged > 0, "the purge checker judged no purge at all");
}

#[test]
fn the_anti_entropy_canaries_are_caught_by_their_checkers() {
    // Seeds found by `replikv sim --mode leaderless --anti-entropy-ms 1000 --canary ...
    // --steps 2000 --quiet-ms 10000 --seeds 0..40`. At the CLI's defaults (5 s of faults)
    // 342 and 71 of seeds 0..500 catch them.
    let converge = "replicas converge by anti-entropy alone";
    for (canary, seeds, checker) in
        [(Canary::ExchangeSkipsSubtree, [1, 2], converge), (Canary::TreeNotUpdatedOnRepair, [2, 5], TREES_CHECKER)]
    {
        for seed in seeds {
            let mut c = with_anti_entropy(config(seed, (3, 2, 2), swarm_faults(seed)));
            c.canary = canary;
            let report = run(c);
            let caught = failed(&report);
            assert!(caught.contains(&checker), "{canary:?} at seed {seed}: caught by {caught:?}, expected {checker:?}");
        }
    }
}

#[test]
fn a_purged_tombstone_does_not_hand_its_dots_out_again() {
    // `replikv sim --mode leaderless --anti-entropy-ms 1000 --seed 696`: n1 purges k2's
    // tombstone with its context, and its next write of k2 takes dot n1:1 again.
    let mut c = with_anti_entropy(config(696, (3, 2, 2), swarm_faults(696)));
    (c.safety_ms, c.quiet_ms) = (5_000, 20_000);
    let report = run(c);
    assert!(!report.failed(), "{:?}\nreplay: {}", report.judgement.verdicts, report.replay());
}

#[test]
fn a_write_its_coordinator_lost_before_sending_is_not_read_as_seen_by_later_contexts() {
    // `replikv sim --mode leaderless --anti-entropy-ms 1000 --seed 277`: n1 crashes with write
    // #6 of k1 unsynced and never sent; its next write of k1 takes a later dot from its clock,
    // whose context covers #6's dot. Checker (d) took #6 for seen and vanished.
    let report = run(with_anti_entropy(config(277, (3, 2, 2), swarm_faults(277))));
    assert!(!report.failed(), "{:?}\nreplay: {}", report.judgement.verdicts, report.replay());
}

#[test]
fn a_tombstone_is_purged_only_once_every_replica_holds_it_not_when_one_holds_nothing() {
    // `replikv sim --mode leaderless --anti-entropy-ms 1000 --seed 557`: aged tombstones left
    // the trees, so a replica holding nothing of the key matched and counted as safe; the
    // purge checker caught a purge while that replica lacked the tombstone.
    let mut c = with_anti_entropy(config(557, (3, 2, 2), swarm_faults(557)));
    (c.safety_ms, c.quiet_ms) = (5_000, 20_000);
    let report = run(c);
    assert!(!report.failed(), "{:?}\nreplay: {}", report.judgement.verdicts, report.replay());
    assert!(report.counters.tombstones_purged > 0, "no purge judged");
}

#[test]
fn a_write_over_a_remembered_tombstone_replaces_it_for_checker_d_too() {
    // `replikv sim --mode leaderless --conflicts siblings --read-repair blocking
    // --anti-entropy-ms 1000 --seed 800`: n1 purged k0's tombstone and wrote k0 over the
    // tombstone it remembers; the oracle read the write's context off the store alone and
    // took the delete for seen and vanished.
    let mut c = with_anti_entropy(config(800, (3, 2, 2), swarm_faults(800)));
    (c.conflicts, c.read_repair) = (Conflicts::Siblings, ReadRepair::Blocking);
    (c.safety_ms, c.quiet_ms) = (5_000, 20_000);
    let report = run(c);
    assert!(!report.failed(), "{:?}\nreplay: {}", report.judgement.verdicts, report.replay());
}

/// `config` with every client in a session, at n3 w1 r1 (quorums that miss each other, so a
/// session's floor matters).
/// Seeds a session canary must be caught within.
const CANARY_SEEDS: u64 = 10;

fn in_sessions(seed: u64) -> Config {
    let mut c = config(seed, (3, 1, 1), swarm_faults(seed));
    c.sessions = true;
    c
}

/// The session verdicts of `report`: read-your-writes, monotonic reads.
fn session_verdicts(report: &Report) -> Vec<&Verdict> {
    let names = checks::sessions::ANOMALIES.map(session_checker);
    report.judgement.verdicts.iter().filter(|(name, _)| names.contains(&name.as_str())).map(|(_, v)| v).collect()
}

#[test]
fn sessions_keep_their_guarantees_through_any_coordinator_at_weak_quorums() {
    for conflicts in [Conflicts::Lww, Conflicts::Siblings] {
        for seed in 0..CI_SEEDS {
            let mut c = in_sessions(seed);
            c.conflicts = conflicts;
            let report = run(c);
            assert!(report.replay().contains(" --sessions "), "{}", report.replay());
            assert!(!report.failed(), "seed {seed}: {:?}\nreplay: {}", report.judgement.verdicts, report.replay());
            assert_eq!(session_verdicts(&report), [&Verdict::Pass; 2], "seed {seed}: both judged");
            let guaranteed = report.sessions.iter().filter(|(g, _)| **g != Guarantee::None);
            assert!(guaranteed.map(|(_, f)| f.reads).sum::<u64>() > 0, "seed {seed}: no guaranteed session read");
        }
    }
    // At w + r > n the write checks are judged too: a session write replaces what its floor
    // names, which its coordinator may never have held, and must be stamped above it (under
    // swarm faults, half the seeds skew the clocks).
    for seed in 0..CI_SEEDS / 5 {
        let mut c = config(seed, (3, 2, 2), swarm_faults(seed));
        c.sessions = true;
        let report = run(c);
        assert!(!report.failed(), "seed {seed}: {:?}\nreplay: {}", report.judgement.verdicts, report.replay());
    }
    // Not judged where an acknowledged write may be lost in a restart, nor without sessions.
    let mut c = in_sessions(0);
    c.fsync = Fsync::Never;
    assert_eq!(session_verdicts(&run(c)), [&Verdict::NotApplicable; 2]);
    assert_eq!(session_verdicts(&run(config(0, (3, 1, 1), swarm_faults(0)))), [&Verdict::NotApplicable; 2]);
}

#[test]
fn without_a_guarantee_sessions_see_both_anomalies_at_weak_quorums() {
    let mut figures = BTreeMap::<Guarantee, Figures>::new();
    for seed in 0..10 {
        let report = run(in_sessions(seed));
        assert!(!report.failed(), "seed {seed}: {:?}\nreplay: {}", report.judgement.verdicts, report.replay());
        for (g, f) in &report.sessions {
            figures.entry(*g).or_default().add(f);
        }
    }
    let none = &figures[&Guarantee::None];
    for anomaly in checks::sessions::ANOMALIES {
        assert!(
            none.tallies.get(&anomaly).is_some_and(|t| t.seen > 0),
            "{anomaly:?} never seen: {}",
            none.summary_of(&checks::sessions::ANOMALIES)
        );
    }
    // The guaranteed sessions were exposed to their anomaly and never saw it.
    for (guarantee, anomaly) in
        [(Guarantee::ReadYourWrites, Anomaly::StaleOwnWrite), (Guarantee::MonotonicReads, Anomaly::MonotonicRegression)]
    {
        let tally = figures[&guarantee].tallies.get(&anomaly).copied().unwrap_or_default();
        assert!(tally.exposed > 0 && tally.seen == 0, "{guarantee:?}: {tally:?}");
    }
}

#[test]
fn every_leaderless_session_canary_is_caught_within_the_first_seeds() {
    let (own, monotonic) = (session_checker(Anomaly::StaleOwnWrite), session_checker(Anomaly::MonotonicRegression));
    for (canary, checkers) in
        [(Canary::SessionFloorIgnored, &[own, monotonic][..]), (Canary::TokenForgetsRead, &[monotonic][..])]
    {
        // Bounded, so that a change to the random stream cannot make this hundreds of runs
        // (`replikv sim ... --canary` sweeps 500 seeds; both are caught in the first few).
        let caught = (0..CANARY_SEEDS).find_map(|seed| {
            let mut c = in_sessions(seed);
            c.canary = canary;
            let report = run(c);
            report.failed().then_some((seed, report))
        });
        let (seed, report) = caught.unwrap_or_else(|| panic!("{canary:?} escaped {CANARY_SEEDS} seeds"));
        let failed = failed(&report);
        assert!(
            failed.iter().any(|checker| checkers.contains(checker)),
            "{canary:?} at seed {seed}: caught by {failed:?}, expected one of {checkers:?}"
        );
    }
}
