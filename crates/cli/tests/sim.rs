//! `replikv sim` as a user runs it: one seed prints the same text every time.

#[test]
fn one_seed_prints_the_same_logs_every_time_stamped_with_virtual_time() {
    let run = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_replikv"))
            .args(["sim", "--seeds", "3..5"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (first, second) = (run(), run());
    assert!(first.1.contains("t=") && first.1.contains("WARN"), "these seeds log warnings: {}", first.1);
    assert!(!first.1.contains("Z "), "no wall-clock timestamp: {}", first.1);
    assert_eq!(first, second, "the same output twice");
}

/// Runs `replikv` with `args`: (exit success, stdout).
fn replikv(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_replikv")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_leaderless_sweep_prints_its_anomalies_as_figures_and_the_same_text_every_time() {
    let args = ["sim", "--mode", "leaderless", "--n", "3", "--w", "1", "--r", "1", "--seeds", "0..3"];
    let (ok, first) = replikv(&args);
    assert!(ok, "{first}");
    assert_eq!(replikv(&args), (true, first.clone()), "the same output twice");
    assert!(
        first.contains("3 seed(s), leaderless n = 3, w = 1, r = 1, lww, read repair async, fsync always"),
        "{first}"
    );
    assert!(first.contains("anomalies (figures, not failures): "), "{first}");
    assert!(first.contains("read(s) missed the newest acknowledged write (w + r <= n)"), "{first}");
    let (ok, refused) = replikv(&["sim", "--mode", "leaderless", "--acks", "async"]);
    assert!(!ok && refused.is_empty(), "single-leader flags are refused in leaderless mode");
}

#[test]
fn a_leaderless_failure_prints_the_command_that_replays_it_exactly() {
    let (ok, out) = replikv(&["sim", "--mode", "leaderless", "--seed", "3", "--canary", "count-ack-twice"]);
    assert!(!ok, "the planted bug is caught: {out}");
    let replay = out.lines().find_map(|l| l.trim().strip_prefix("replay: replikv ")).expect("a replay line");
    // The faults are the one quoted argument.
    let (before, rest) = replay.split_once(" '").expect("quoted faults");
    let (faults, after) = rest.split_once('\'').expect("closing quote");
    let mut args: Vec<&str> = before.split(' ').collect();
    args.push(faults);
    args.extend(after.split(' ').filter(|a| !a.is_empty()));
    let (ok, again) = replikv(&args);
    assert!(!ok);
    assert_eq!(again, out, "the replay prints the same run");
}

#[test]
fn a_multi_leader_sweep_prints_its_totals_and_a_failure_the_command_that_replays_it() {
    let args = ["sim", "--mode", "multi-leader", "--datacenters", "3", "--dc-nodes", "1", "--resolve", "merge"];
    let (ok, first) = replikv(&[&args[..], &["--seeds", "0..2", "--steps", "1000"]].concat());
    assert!(ok, "{first}");
    assert!(
        first.contains("2 seed(s), multi-leader 3 datacenters of 1 node(s), acks sync inside each, merge"),
        "{first}"
    );
    assert!(first.contains("writes: ") && first.contains("seen by no other write"), "{first}");
    let (ok, refused) = replikv(&["sim", "--mode", "leaderless", "--resolve", "lww"]);
    assert!(!ok && refused.is_empty(), "multi-leader flags are refused in another mode");
    let (ok, out) =
        replikv(&["sim", "--mode", "multi-leader", "--seed", "1", "--steps", "2000", "--canary", "loser-not-logged"]);
    assert!(!ok, "the planted bug is caught: {out}");
    assert!(out.contains("lww: every lost write lost to a higher version and logged: FAILED"), "{out}");
    let replay = out.lines().find_map(|l| l.trim().strip_prefix("replay: replikv ")).expect("a replay line");
    let (before, rest) = replay.split_once(" '").expect("quoted faults");
    let (faults, after) = rest.split_once('\'').expect("closing quote");
    let mut again: Vec<&str> = before.split(' ').collect();
    again.push(faults);
    again.extend(after.split(' ').filter(|a| !a.is_empty()));
    assert_eq!(replikv(&again), (false, out), "the replay prints the same run");
}
