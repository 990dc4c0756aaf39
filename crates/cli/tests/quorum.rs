//! `replikv quorum` as a user runs it: the lecture's exercise as a golden file, the other
//! flags, and every usage error.
//!
//! The exercise: 3 replicas, the last accepted write on replicas 1 and 2, not on 3. Worked by
//! hand:
//! 1. The configurations whose reads see the newest version are those with w + r > 3: (1,3),
//!    (2,2), (2,3), (3,1), (3,2), (3,3). A write on exactly two replicas was accepted only if
//!    w <= 2: (1,3), (2,2) and (2,3) remain; with w = 3 it would have failed.
//! 2. With r = 3 a read needs all three replicas: it succeeds with none down, {}. With (2,2) it
//!    needs two up, and any two of three include 1 or 2: {} (up {1,2,3}), {1} (up {2,3}), {2}
//!    (up {1,3}) and {3} (up {1,2}) work; two or three down leave fewer than two up.
//!
//! `tests/golden/quorum-lecture.txt` is the whole output; `UPDATE_GOLDEN=1` rewrites it
//! (review the diff). The test also checks the hand-worked lines above on their own, so that
//! a rewritten file cannot carry a wrong answer unnoticed.

use std::path::Path;
use std::process::Output;

/// Runs `replikv quorum ARGS`.
fn quorum(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_replikv")).arg("quorum").args(args).output().unwrap()
}

/// Standard output of a run that must succeed.
fn stdout_of(args: &[&str]) -> String {
    let out = quorum(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_lecture_exercise_matches_the_golden_file() {
    let fresh = stdout_of(&["--n", "3", "--written", "1,2"]);
    // The answer to the lecture's two questions, worked by hand (see the module documentation).
    for (row, accepted) in
        [("1  3", "yes"), ("2  2", "yes"), ("2  3", "yes"), ("3  1", "no"), ("3  2", "no"), ("3  3", "no")]
    {
        let line = fresh.lines().find(|l| l.starts_with(row)).unwrap_or_else(|| panic!("no row {row}:\n{fresh}"));
        assert!(line.ends_with(accepted), "{row} should say {accepted}: {line}");
    }
    assert_eq!(
        fresh.lines().filter(|l| l.starts_with("  w=")).count(),
        3,
        "three configurations could accept:\n{fresh}"
    );
    for line in ["  w=1 r=3  {}\n", "  w=2 r=2  {}, {1}, {2}, {3}\n", "  w=2 r=3  {}\n"] {
        assert!(fresh.contains(line), "missing {line:?} in:\n{fresh}");
    }

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/quorum-lecture.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &fresh).unwrap();
    }
    let golden = std::fs::read_to_string(&path).unwrap();
    assert_eq!(fresh, golden, "differs from {} (UPDATE_GOLDEN=1 rewrites it)", path.display());
}

#[test]
fn json_lists_every_down_set_with_its_outcome() {
    let json: serde_json::Value = serde_json::from_str(&stdout_of(&["--written", "1,2", "-o", "json"])).unwrap();
    assert_eq!((json["n"].as_u64(), json["written"].to_string().as_str()), (Some(3), "[1,2]"));
    let configurations = json["configurations"].as_array().unwrap();
    assert_eq!(configurations.len(), 6);
    let two_two = configurations.iter().find(|c| c["w"] == 2 && c["r"] == 2).unwrap();
    let outcomes: Vec<String> = two_two["reads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|read| format!("{} {}", read["down"], read["outcome"].as_str().unwrap()))
        .collect();
    let want = [
        "[] succeeds",
        "[1] succeeds",
        "[2] succeeds",
        "[3] succeeds",
        "[1,2] too_few_up",
        "[1,3] too_few_up",
        "[2,3] too_few_up",
        "[1,2,3] too_few_up",
    ];
    assert_eq!(outcomes, want);
    let three_one = configurations.iter().find(|c| c["w"] == 3 && c["r"] == 1).unwrap();
    assert_eq!((three_one["accepted"].as_bool(), three_one["reads"].is_null()), (Some(false), true));
}

#[test]
fn without_written_it_lists_the_overlapping_configurations() {
    let out = stdout_of(&["--n", "4"]);
    let rows: Vec<&str> = out.lines().skip_while(|l| !l.starts_with("W  R")).skip(1).collect();
    assert_eq!(rows.len(), 10, "(w, r) with w + r > 4:\n{out}");
    assert_eq!((rows[0], rows[9]), ("1  4  3                0", "4  4  0                0"));
    assert!(!out.contains("ACCEPTED"), "{out}");
    let only_w2 = stdout_of(&["--n", "4", "--w", "2"]);
    let rows: Vec<&str> = only_w2.lines().skip_while(|l| !l.starts_with("W  R")).skip(1).collect();
    assert_eq!(rows, ["2  3  2                1", "2  4  2                0"]);
}

#[test]
fn down_asks_about_one_set_of_unavailable_replicas() {
    let out = stdout_of(&["--written", "1,2", "--down", "3"]);
    assert!(out.contains("With {3} unavailable (up: {1,2}), the next read:\n"), "{out}");
    assert!(out.contains("  w=1 r=3  fails: {1,2} up, fewer than r = 3\n"), "{out}");
    assert!(out.contains("  w=2 r=2  succeeds: any 2 of {1,2} include one of {1,2}\n"), "{out}");
    assert!(out.contains("  w=2 r=3  fails: {1,2} up, fewer than r = 3\n"), "{out}");
    let none_down = stdout_of(&["--written", "1,2", "--down", ""]);
    assert_eq!(none_down.matches(" succeeds: ").count(), 3, "{none_down}");
}

#[test]
fn a_configuration_without_overlap_says_what_goes_wrong() {
    let out = stdout_of(&["--written", "1,2", "--w", "1", "--r", "1"]);
    assert!(out.contains("w = 1, r = 1 is not such a quorum: w + r = 2 is not more than n = 3"), "{out}");
    assert!(out.contains("(a stale read)"), "{out}");
    // Replica 3 lacks the write and may answer a read of one replica alone, unless it is down.
    assert!(out.contains("  w=1 r=1  {3}, {1,3}, {2,3}\n"), "{out}");
    assert!(out.contains("may return an older version with {}, {1}, {2}, {1,2} down"), "{out}");
}

#[test]
fn a_write_no_configuration_could_accept_is_said_so() {
    let out = stdout_of(&["--written", "1", "--w", "3"]);
    assert!(out.contains("None of these configurations could have accepted a write on {1}: it needs w <= 1."), "{out}");
}

#[test]
fn usage_errors_name_the_flag_and_exit_2() {
    // (arguments, words the error must contain)
    let table: [(&[&str], &str); 9] = [
        (&["--written", "4"], "--written 4: replica numbers go from 1 to n = 3; 4 is not one"),
        (&["--n", "2", "--written", "1,3"], "--written 1,3: replica numbers go from 1 to n = 2; 3 is not one"),
        (&["--written", "1,1"], "--written 1,1: replica 1 is listed twice"),
        (&["--written", ""], "--written '': name the replicas"),
        (&["--written", "one"], "'--written <LIST>': \"one\" is not a replica number"),
        (&["--written", "1", "--down", "0"], "--down 0: replica numbers go from 1 to n = 3; 0 is not one"),
        (&["--w", "4"], "--w 4: must be between 1 and n = 3"),
        (&["--n", "13"], "n = 13 is over 12 replicas"),
        (&["--down", "3"], "--written <LIST>"),
    ];
    for (args, words) in table {
        let out = quorum(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(words), "{args:?}: want {words:?} in {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed {}", String::from_utf8_lossy(&out.stdout));
    }
    let r0 = quorum(&["--r", "0"]);
    assert_eq!(r0.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r0.stderr).contains("--r 0: must be between 1 and n = 3"));
}
