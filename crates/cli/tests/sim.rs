//! `replikv sim` as a user runs it: one seed prints the same text every time.

#[test]
fn one_seed_prints_the_same_logs_every_time_stamped_with_virtual_time() {
    let run = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_replikv"))
            .args(["sim", "--seeds", "0..2"])
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
