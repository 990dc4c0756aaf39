//! Three nodes of one cluster on 127.0.0.1, laid out at DIR/e2e/cluster.toml as `replikv
//! cluster start` lays a cluster out (so that `replikv check|fault --name e2e --data DIR`
//! find it); n1 leads at first, elections decide after that (the helpers ask who leads).

use super::{cluster_ports, try_get, Node};
use redis::Connection;
use serde_json::Value;
use std::time::{Duration, Instant};

/// A 3-node cluster of real processes.
pub struct Trio {
    /// n1, n2, n3.
    pub nodes: Vec<Node>,
    /// The directory holding the cluster (`e2e/` inside).
    dir: tempfile::TempDir,
}

impl Trio {
    /// Starts n1, n2, n3 with `[replication]` settings `replication` (TOML lines) and `flags`
    /// added to every node's command line, and waits until both followers stream.
    pub fn start(replication: &str, flags: &[&str]) -> Trio {
        let trio = Trio::launch(replication, flags);
        trio.wait_streaming(&[1, 2]);
        trio
    }

    /// Starts n1, n2, n3 as [`Trio::start`] does, without waiting for any of them (a
    /// leaderless cluster has no followers to wait for).
    pub fn launch(replication: &str, flags: &[&str]) -> Trio {
        let dir = tempfile::tempdir().unwrap();
        let ports = cluster_ports();
        let mut text = format!("cluster = \"e2e\"\n[replication]\n{replication}\n");
        for (i, (peer, resp, http)) in ports.iter().enumerate() {
            text += &format!(
                "[[nodes]]\nid = \"n{}\"\npeer_addr = \"127.0.0.1:{peer}\"\nresp_addr = \"127.0.0.1:{resp}\"\nhttp_addr = \"127.0.0.1:{http}\"\n",
                i + 1
            );
        }
        let root = dir.path().join("e2e");
        std::fs::create_dir_all(&root).unwrap();
        let file = root.join("cluster.toml");
        std::fs::write(&file, text).unwrap();
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, &(_, resp, http))| {
                let id = format!("n{}", i + 1);
                let mut args = vec!["--config", file.to_str().unwrap(), "--id", &id];
                args.extend_from_slice(flags);
                Node::start_on(&root.join(&id), resp, http, &args)
            })
            .collect();
        Trio { nodes, dir }
    }

    /// The cluster file every node reads.
    #[allow(dead_code)] // not every test binary uses it
    pub fn cluster_file(&self) -> std::path::PathBuf {
        self.dir.path().join("e2e").join("cluster.toml")
    }

    /// Runs `replikv ARGS --name e2e --data DIR`: (exit success, stdout, stderr).
    pub fn replikv(&self, args: &[&str]) -> (bool, String, String) {
        let (code, stdout, stderr) = self.replikv_code(args);
        (code == Some(0), stdout, stderr)
    }

    /// Runs `replikv ARGS --name e2e --data DIR`: (exit code, `None` if a signal ended it;
    /// stdout; stderr).
    pub fn replikv_code(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_replikv"))
            .args(args)
            .args(["--name", "e2e", "--data"])
            .arg(self.dir.path())
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
    }

    /// A RESP connection to node `i` (0-based).
    pub fn con(&self, i: usize) -> Connection {
        let client = redis::Client::open(self.nodes[i].url()).unwrap();
        let con = client.get_connection_with_timeout(Duration::from_secs(10)).unwrap();
        con.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        con
    }

    /// Node `i`'s `/api/v1/status`.
    pub fn status(&self, i: usize) -> Value {
        let (code, body) = self.nodes[i].http("GET", "/api/v1/status", b"");
        assert_eq!(code, 200);
        serde_json::from_slice(&body).unwrap()
    }

    /// Node `i`'s `/api/v1/status`, `None` if it is down or does not answer within a second.
    pub fn try_status(&self, i: usize) -> Option<Value> {
        if !self.nodes[i].running() {
            return None;
        }
        let (code, body) = try_get(self.nodes[i].http_port(), "/api/v1/status", Duration::from_secs(1))?;
        (code == 200).then(|| serde_json::from_slice(&body).ok()).flatten()
    }

    /// The node that leads, among those in `among`, waiting (bounded) until exactly one of
    /// them says it does.
    pub fn leader_among(&self, among: &[usize]) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let leaders: Vec<usize> = among
                .iter()
                .copied()
                .filter(|&i| self.try_status(i).is_some_and(|s| s["replication"]["role"] == "leader"))
                .collect();
            if leaders.len() == 1 {
                return leaders[0];
            }
            assert!(Instant::now() < deadline, "no single leader among {among:?}: {leaders:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The node that leads now (waiting, bounded, for one).
    pub fn leader(&self) -> usize {
        self.leader_among(&[0, 1, 2])
    }

    /// The leader's view of follower `i`.
    pub fn follower(&self, i: usize) -> Value {
        self.try_follower(i).unwrap_or_else(|| panic!("the leader does not list n{} as a follower", i + 1))
    }

    /// The leader's view of follower `i`, if the leader lists it (a leader elected a moment ago
    /// may not yet; so may one that was leading when asked and is not any more).
    fn try_follower(&self, i: usize) -> Option<Value> {
        let status = self.try_status(self.leader())?;
        let id = format!("n{}", i + 1);
        status["replication"]["followers"].as_array()?.iter().find(|f| f["id"] == id.as_str()).cloned()
    }

    /// Waits (bounded) until `done` holds for the leader's view of follower `i`.
    pub fn wait_follower(&self, i: usize, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let f = self.try_follower(i);
            if let Some(f) = f.as_ref().filter(|f| done(f)) {
                return f.clone();
            }
            assert!(
                Instant::now() < deadline,
                "n{} never {what}: {f:?}\nleader log:\n{}",
                i + 1,
                self.nodes[self.leader()].log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until follower `i` has applied its log through `lsn` (its own status): what its
    /// readers see. A follower applies a record once its leader holds it durably, a message
    /// after the leader's fsync, so a write acknowledged in `sync` mode (durable on every
    /// follower) is readable there a moment after its OK, not at once.
    pub fn wait_applied(&self, i: usize, lsn: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.status(i);
            let applied = status["replication"]["leader"]["applied_lsn"].as_u64();
            if applied >= Some(lsn) {
                return;
            }
            assert!(Instant::now() < deadline, "n{} never applied its log through {lsn}: {status}", i + 1);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until each of `followers` streams and answers.
    pub fn wait_streaming(&self, followers: &[usize]) {
        for &i in followers {
            self.wait_follower(i, "streaming", |f| f["mode"] == "stream" && f["up"] == true);
        }
    }
}
