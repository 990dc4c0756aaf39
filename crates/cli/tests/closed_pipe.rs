//! Every command's output ends quietly when its reader has gone (`replikv status -o json |
//! head`): no panic message ("failed printing to stdout: Broken pipe"), and the command's own
//! exit status (0 here: each of these succeeds).
//!
//! The reader here is a pipe whose read end is closed before the command starts: every write
//! the command makes fails with EPIPE, as the writes after `head` has exited do. A reader that
//! reads the first bytes and then closes would test the same thing by chance only, since these
//! outputs fit in the pipe's buffer whole before the reader gets to close it. (`cluster.rs`
//! checks that `cluster stop` into a closed pipe still stops every node.)

mod common;

use common::{free_ports, replikv_into_closed_pipe, Node};

/// Asserts that `replikv ARGS` ended quietly into a closed pipe.
fn assert_quiet(args: &[&str]) {
    let (status, stderr) = replikv_into_closed_pipe(args);
    assert!(!stderr.contains("panicked"), "replikv {args:?} panicked on a closed pipe:\n{stderr}");
    assert!(status.success(), "replikv {args:?} ended with {status}:\n{stderr}");
}

#[test]
fn help_and_a_simulator_sweep_end_quietly_on_a_closed_pipe() {
    assert_quiet(&["--help"]);
    assert_quiet(&["check", "--help"]);
    assert_quiet(&["sim", "--seeds", "0..3", "--verbose"]);
}

#[test]
fn status_and_check_end_quietly_on_a_closed_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("solo");
    std::fs::create_dir_all(&root).unwrap();
    let ports = free_ports(3);
    let file = root.join("cluster.toml");
    let text = format!(
        "cluster = \"solo\"\n[[nodes]]\nid = \"n1\"\npeer_addr = \"127.0.0.1:{}\"\nresp_addr = \"127.0.0.1:{}\"\nhttp_addr = \"127.0.0.1:{}\"\n",
        ports[0], ports[1], ports[2]
    );
    std::fs::write(&file, text).unwrap();
    let _node =
        Node::start_on(&root.join("n1"), ports[1], ports[2], &["--config", file.to_str().unwrap(), "--id", "n1"]);
    let data = dir.path().to_str().unwrap();
    for command in [&["status", "-o", "json"][..], &["status"], &["check"], &["check", "-o", "json"]] {
        let args: Vec<&str> = command.iter().copied().chain(["--name", "solo", "--data", data]).collect();
        assert_quiet(&args);
    }
    // Another write error (a full disk) is a failure: for `check`, "could not check" (2), not
    // "a replica differs" (1).
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_replikv"))
        .args(["check", "--name", "solo", "--data", data])
        .stdout(full)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("writing to standard output"), "{stderr}");
}
