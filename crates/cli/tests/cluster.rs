//! End-to-end tests of `replikv cluster` and of cluster files: real `replikv` processes on
//! 127.0.0.1. These check the processes, the ports, the status (roles and lag included),
//! stopping and cleaning; `replication.rs` checks what replication does.

mod common;

use rand::Rng;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Nodes in the test cluster.
const NODES: u16 = 3;
/// Random bases tried before the test gives up on finding free ports.
const START_ATTEMPTS: usize = 8;
/// How long any one `replikv` command may take before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the followers may take to show a write the leader acknowledged.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);

/// Every port node i of `NODES` takes from `base`: RESP, HTTP and peer.
fn ports(base: u16) -> Vec<u16> {
    (1..=NODES).flat_map(|i| [base + i, base + 100 + i, base + 200 + i]).collect()
}

/// A random base whose nine ports are all free right now.
fn free_base() -> u16 {
    let mut rng = rand::thread_rng();
    loop {
        let base = rng.gen_range(20_000..60_000);
        if ports(base).iter().all(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok()) {
            return base;
        }
    }
}

/// Runs `replikv args...` to completion, at most `COMMAND_TIMEOUT`.
fn replikv(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_replikv"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting replikv");
    wait_output(child, COMMAND_TIMEOUT)
}

/// Waits for `child` to finish and collects its output; kills it after `timeout`.
fn wait_output(mut child: Child, timeout: Duration) -> Output {
    let mut readers = Vec::new();
    for pipe in [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
        child.stderr.take().map(|p| Box::new(p) as _),
    ]
    .into_iter()
    .flatten()
    {
        readers.push(std::thread::spawn(move || {
            let (mut pipe, mut out) = (pipe, Vec::new());
            let _ = pipe.read_to_end(&mut out);
            out
        }));
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("replikv did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut outputs = readers.into_iter().map(|r| r.join().unwrap());
    Output { status, stdout: outputs.next().unwrap_or_default(), stderr: outputs.next().unwrap_or_default() }
}

/// Whether `pid` is alive: kill(pid, 0) succeeds and it is not a zombie. Detached nodes are
/// reparented when their launcher exits, and the new parent may be slow to reap them.
fn alive(pid: u32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid as i32, 0) } == 0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    exists && !zombie
}

/// Whether a RESP server on 127.0.0.1:`port` answers PING.
fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// A cluster's directory under a temporary data directory; on drop, SIGKILLs every process
/// its pid file (or the test) ever named that is still a live replikv node, and a launcher.
struct Guard {
    /// The `--data` directory (removed on drop).
    data: tempfile::TempDir,
    /// Pids seen during the test.
    pids: Vec<u32>,
    /// A launcher running in the foreground, if any.
    launcher: Option<Child>,
}

impl Guard {
    fn new() -> Guard {
        Guard { data: tempfile::tempdir().unwrap(), pids: Vec::new(), launcher: None }
    }

    fn data(&self) -> &str {
        self.data.path().to_str().unwrap()
    }

    fn cluster_dir(&self) -> PathBuf {
        self.data.path().join("demo")
    }

    /// The pids the pid file names now.
    fn file_pids(&self) -> Vec<u32> {
        let text = std::fs::read_to_string(self.cluster_dir().join("pids")).unwrap_or_default();
        text.lines().filter_map(|l| l.split_whitespace().nth(1)?.parse().ok()).collect()
    }

    /// Starts the cluster detached on a free base, retrying on a port collision; returns the base.
    fn start_detached(&mut self) -> (u16, String) {
        for _ in 0..START_ATTEMPTS {
            let base = free_base().to_string();
            let out =
                replikv(&["cluster", "start", "--nodes", "3", "--detach", "--base-port", &base, "--data", self.data()]);
            self.pids.extend(self.file_pids());
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            if out.status.success() {
                return (base.parse().unwrap(), String::from_utf8_lossy(&out.stdout).to_string());
            }
            assert!(stderr.contains("in use"), "cluster start failed: {stderr}");
        }
        panic!("no free base port in {START_ATTEMPTS} attempts");
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut launcher) = self.launcher.take() {
            let _ = launcher.kill();
            let _ = launcher.wait();
        }
        let mut pids = self.file_pids();
        pids.extend(&self.pids);
        for pid in pids {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if alive(pid) && String::from_utf8_lossy(&cmdline).contains("replikv") {
                // SAFETY: kill(2) on a replikv node this test started.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

#[test]
fn a_detached_cluster_starts_reports_stops_and_cleans() {
    let mut guard = Guard::new();
    let (base, stdout) = guard.start_detached();
    assert!(stdout.contains("n1 leads; n2, n3 follow it and refuse writes with READONLY"), "{stdout}");
    assert!(stdout.contains(&format!("redis-cli -p {}", base + 1)), "{stdout}");
    for i in 1..=NODES {
        assert!(ping(base + i), "n{i} does not answer PING on {}", base + i);
        let (code, body) = common::http(base + 100 + i, "GET", "/api/v1/status", b"");
        let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((code, status["id"].as_str()), (200, Some(format!("n{i}").as_str())), "{status}");
    }
    assert_eq!(common::http(base + 101, "PUT", "/api/v1/kv/k", b"v").0, 200);

    // Status is published once per tick: poll until every node shows the write, applied and
    // not lagging, as the leader sees it.
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    let report = loop {
        let out = replikv(&["cluster", "status", "-o", "json", "--data", guard.data()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let nodes = report["nodes"].as_array().unwrap();
        let caught_up = |n: &serde_json::Value| n["keys"] == 1 && n["applied_lsn"] == 1 && n["lag_records"] == 0;
        if nodes.iter().all(caught_up) {
            break report;
        }
        assert!(Instant::now() < deadline, "the nodes did not catch up within {CATCH_UP_TIMEOUT:?}: {report}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let nodes = report["nodes"].as_array().unwrap();
    assert_eq!((nodes.len(), report["leader"].as_str()), (3, Some("n1")), "{report}");
    for (i, node) in nodes.iter().enumerate() {
        let role = if i == 0 { "leader" } else { "follower" };
        assert_eq!((node["up"].as_bool(), node["role"].as_str()), (Some(true), Some(role)), "{node}");
        assert!(node["pid"].as_u64().is_some() && node["epoch"].as_u64().is_some(), "{node}");
        // The leader answers, so every lag is its view, seconds included.
        assert_eq!((node["lag_from"].as_str(), node["lag_ms"].as_u64()), (Some("leader"), Some(0)), "{node}");
    }
    let pids: Vec<u32> = nodes.iter().map(|n| n["pid"].as_u64().unwrap() as u32).collect();
    assert_eq!(pids, guard.file_pids());

    let again = replikv(&["cluster", "start", "--detach", "--base-port", &base.to_string(), "--data", guard.data()]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already running"));

    let out = replikv(&["cluster", "stop", "--data", guard.data()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for pid in &pids {
        assert!(!alive(*pid), "pid {pid} still alive after cluster stop");
    }
    let table = replikv(&["status", "--data", guard.data()]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("LAG_S") && table.matches("down").count() >= 3, "{table}");

    let out = replikv(&["cluster", "clean", "--data", guard.data()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!guard.cluster_dir().exists());
}

#[test]
fn a_stop_whose_reader_has_gone_still_stops_every_node() {
    let mut guard = Guard::new();
    guard.start_detached();
    let pids = guard.file_pids();
    assert_eq!(pids.len(), NODES as usize);
    let (status, stderr) = common::replikv_into_closed_pipe(&["cluster", "stop", "--data", guard.data()]);
    assert!(!stderr.contains("panicked") && status.success(), "cluster stop into a closed pipe: {status}\n{stderr}");
    for pid in &pids {
        assert!(!alive(*pid), "pid {pid} still alive after cluster stop into a closed pipe");
    }
}

#[test]
fn a_foreground_cluster_merges_logs_and_stops_on_ctrl_c() {
    let mut guard = Guard::new();
    let base = free_base();
    let launcher = Command::new(env!("CARGO_BIN_EXE_replikv"))
        .args(["cluster", "start", "--nodes", "2", "--base-port", &base.to_string(), "--data", guard.data()])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let launcher_pid = launcher.id() as i32;
    guard.launcher = Some(launcher);
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    while !(ping(base + 1) && ping(base + 2)) {
        assert!(Instant::now() < deadline, "the nodes did not answer PING");
        if let Some(status) = guard.launcher.as_mut().unwrap().try_wait().unwrap() {
            let out = wait_output(guard.launcher.take().unwrap(), COMMAND_TIMEOUT);
            panic!("the launcher exited with {status}: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let pids = guard.file_pids();
    guard.pids.extend(&pids);
    assert_eq!(pids.len(), 2);
    // SAFETY: kill(2) on the launcher this test spawned.
    unsafe { libc::kill(launcher_pid, libc::SIGINT) };
    let out = wait_output(guard.launcher.take().unwrap(), COMMAND_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("n1 leads; n2 follows it"), "{stdout}");
    assert!(stdout.contains("n1 | ") && stdout.contains("n2 | "), "{stdout}");
    assert!(stdout.contains("replicating") && stdout.contains("leader=n1"), "each node names its leader: {stdout}");
    assert!(stdout.contains("acknowledged writes can be lost at failover"), "the async warning: {stdout}");
    assert!(stdout.contains("stopped cleanly") && stdout.contains("cluster demo stopped"), "{stdout}");
    for pid in pids {
        assert!(!alive(pid), "pid {pid} still alive after Ctrl-C");
    }
    assert!(!guard.cluster_dir().join("pids").exists());
}

/// Three nodes on ports that are never bound (the node exits before it listens).
fn cluster_file(dir: &Path, acks: &str, second_id: &str) -> PathBuf {
    let mut text = format!("cluster = \"bad\"\n[replication]\nacks = \"{acks}\"\n");
    for (i, id) in [(1, "n1"), (2, second_id), (3, "n3")] {
        text += &format!(
            "[[nodes]]\nid = \"{id}\"\npeer_addr = \"127.0.0.1:{}\"\nresp_addr = \"127.0.0.1:{}\"\nhttp_addr = \"127.0.0.1:{}\"\n",
            7200 + i,
            7000 + i,
            7100 + i
        );
    }
    let path = dir.join(format!("{acks}-{second_id}.toml").replace(':', "_"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_node_refuses_a_bad_cluster_file_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let table = [
        (cluster_file(dir.path(), "async", "n1"), vec!["duplicate id \"n1\""]),
        (cluster_file(dir.path(), "semi-sync:3", "n2"), vec!["semi-sync:3", "between 1 and 2"]),
        (cluster_file(dir.path(), "async", "n2"), vec![]), // the same file, valid: it must not fail
    ];
    for (file, wants) in table {
        let ports = common::free_ports(2);
        let child = Command::new(env!("CARGO_BIN_EXE_replikv"))
            .args(["node", "--id", "n2", "--data-dir", data.to_str().unwrap(), "--config", file.to_str().unwrap()])
            // Free ports, so that the valid file's node starts whatever else runs here.
            .args(["--resp-addr", &format!("127.0.0.1:{}", ports[0])])
            .args(["--http-addr", &format!("127.0.0.1:{}", ports[1])])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if wants.is_empty() {
            let mut child = child;
            std::thread::sleep(Duration::from_millis(500));
            let running = child.try_wait().unwrap().is_none();
            let _ = child.kill();
            let out = wait_output(child, COMMAND_TIMEOUT);
            assert!(running, "a valid cluster file failed: {}", String::from_utf8_lossy(&out.stderr));
            continue;
        }
        let out = wait_output(child, COMMAND_TIMEOUT);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        for want in wants {
            assert!(stderr.contains(want), "want {want:?} in: {stderr}");
        }
        assert!(stderr.contains(file.to_str().unwrap()), "the error names the file: {stderr}");
    }
}
