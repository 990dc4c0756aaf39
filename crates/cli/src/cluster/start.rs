//! `replikv cluster start`: write the cluster file, start the nodes, wait until each answers
//! `PING`, print how to connect, then supervise them (or return, with `--detach`).
//!
//! In order:
//!
//! 1. plan the cluster from the flags and check it ([`layout::plan`]); refuse to start when the
//!    pid file names a live node of this cluster, or when one of the nodes' ports is taken;
//! 2. write `cluster.toml`, then spawn `replikv node --config <it> --id nI --data-dir <dir>/nI`
//!    for each node from the running executable, each in its own process group so that a
//!    terminal's Ctrl-C reaches the launcher only, and the launcher decides how they stop;
//! 3. write the pid file, and wait until every node answers `PING` on its RESP address, at most
//!    [`READY_TIMEOUT_SECS`]. A node that exits, or does not answer in time, fails the start:
//!    every node started is stopped and the error shows the end of that node's log;
//! 4. print who leads and the connect commands. With `--detach`, return (the nodes' standard
//!    error went to their log files). Otherwise show the merged log stream ([`logs`]) until
//!    SIGINT or SIGTERM, then stop every node ([`process::stop_all`]), remove the pid file and
//!    exit 0.
//!
//! A node that exits while the cluster runs is reported and the others keep running; when none
//! is left, the launcher exits 1.
//!
//! CAVEATS
//! - The per-node variables (`REPLIKV_ID`, `REPLIKV_CONFIG`, `REPLIKV_CLUSTER`,
//!   `REPLIKV_DATA_DIR`, `REPLIKV_RESP_ADDR`, `REPLIKV_HTTP_ADDR`) are removed from the nodes'
//!   environment, since one value would put every node on the same address; every other
//!   `REPLIKV_*` variable (`REPLIKV_FSYNC=never`, ...) reaches every node.
//! - If the launcher itself is killed with SIGKILL, the nodes keep running:
//!   `replikv cluster stop` finds them through the pid file.

use super::layout::{self, ClusterDir};
use super::logs::{self, Gate};
use super::process::{self, Ending, NodeProcess};
use super::{args::StartArgs, net};
use crate::output::progressln;
use anyhow::{bail, Context, Result};
use replikv_server::config::{ClusterConfig, ClusterNode, ReplicationMode};
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Seconds every node has to answer `PING` after it is spawned.
pub const READY_TIMEOUT_SECS: u64 = 30;
/// Milliseconds between two rounds of `PING`s while the nodes start.
const READY_POLL_MS: u64 = 100;
/// Milliseconds between two looks at running nodes while the cluster runs.
const SUPERVISE_POLL_MS: u64 = 200;
/// Lines of a node's log shown when it fails to start.
pub const LOG_TAIL_LINES: usize = 20;
/// Bytes read from the end of a log to find those lines, at most.
const LOG_TAIL_BYTES: u64 = 16 * 1024;
/// Variables that set one node's identity or addresses: not passed on (see CAVEATS).
const NODE_VARS_REMOVED: &[&str] =
    &["REPLIKV_ID", "REPLIKV_CONFIG", "REPLIKV_CLUSTER", "REPLIKV_DATA_DIR", "REPLIKV_RESP_ADDR", "REPLIKV_HTTP_ADDR"];

/// Runs `replikv cluster start`.
pub fn main(args: &StartArgs) -> Result<()> {
    let dir = ClusterDir::new(&args.which)?;
    let cluster = layout::plan(args).context("cluster start")?;
    refuse_if_running(&dir)?;
    check_ports_free(&cluster)?;
    std::fs::create_dir_all(&dir.root).with_context(|| format!("creating {}", dir.root.display()))?;
    let text = format!("{}{}", file_header(&cluster), cluster.to_toml());
    std::fs::write(dir.config(), text).with_context(|| format!("writing {}", dir.config().display()))?;
    let signals = listen_for_signals()?;
    let mut launch = Launch { dir, cluster, detach: args.detach, gate: Arc::new(Gate::default()), nodes: Vec::new() };
    if let Err(e) = launch.spawn_all().and_then(|()| launch.wait_ready(&signals)) {
        launch.abort();
        return Err(e);
    }
    launch.print_banner();
    if args.detach {
        return Ok(());
    }
    launch.gate.open();
    launch.supervise(&signals)
}

/// The comment at the top of a cluster file.
fn file_header(cluster: &ClusterConfig) -> String {
    if cluster.replication.mode == ReplicationMode::Leaderless {
        return format!(
            "# replikv cluster {:?}, written by `replikv cluster start`. Every node reads this file:\n\
             #   replikv node --config cluster.toml --id n1\n\
             # Leaderless: every node takes reads and writes; a write waits for w of a key's n replicas,\n\
             # a read for r. [replication] n, w, r, conflicts (\"lww\" | \"siblings\"), read_repair,\n\
             # anti_entropy_interval_ms, anti_entropy_style, tombstone_grace_ms, hinted_handoff, sloppy_quorum.\n\n",
            cluster.name
        );
    }
    if cluster.replication.mode == ReplicationMode::MultiLeader {
        return format!(
            "# replikv cluster {:?}, written by `replikv cluster start`. Every node reads this file:\n\
             #   replikv node --config cluster.toml --id n1\n\
             # Multi-leader: the first node listed of each datacenter leads it and takes its writes; the\n\
             # leaders ship them to each other. [replication] acks (inside a datacenter), resolve\n\
             # (\"lww\" | \"merge\" | \"app\"), merge_separator, max_clock_skew_ms; [[conflicts]] prefix, resolve.\n\n",
            cluster.name
        );
    }
    format!(
        "# replikv cluster {:?}, written by `replikv cluster start`. Every node reads this file:\n\
         #   replikv node --config cluster.toml --id n1\n\
         # The first node listed leads; the others follow it and refuse writes with READONLY.\n\
         # [replication] acks: \"sync\" | \"semi-sync:K\" | \"async\".\n\n",
        cluster.name
    )
}

/// What the banner says of who leads and who follows.
fn roles_line(cluster: &ClusterConfig) -> String {
    if let (ReplicationMode::Leaderless, Ok(nwr)) =
        (cluster.replication.mode, cluster.replication.nwr(cluster.nodes.len()))
    {
        let overlap = if nwr.overlaps() {
            "w + r > n: a read sees the newest acknowledged write"
        } else {
            "w + r <= n: reads may miss the newest acknowledged write"
        };
        return format!("every node takes reads and writes: n = {}, w = {}, r = {} ({overlap})", nwr.n, nwr.w, nwr.r);
    }
    if cluster.replication.mode == ReplicationMode::MultiLeader {
        let datacenters: Vec<String> = cluster
            .datacenters()
            .iter()
            .map(|(dc, nodes)| {
                let ids: Vec<&str> = nodes[1..].iter().map(|n| n.id.as_str()).collect();
                match ids.as_slice() {
                    [] => format!("{dc}: {} leads", nodes[0].id),
                    [one] => format!("{dc}: {} leads, {one} follows", nodes[0].id),
                    many => format!("{dc}: {} leads, {} follow", nodes[0].id, many.join(", ")),
                }
            })
            .collect();
        let resolve = cluster.replication.resolve.map_or("lww", |r| match r {
            replikv_server::config::ResolveSetting::Lww => "lww",
            replikv_server::config::ResolveSetting::Merge => "merge",
            replikv_server::config::ResolveSetting::App => "app",
        });
        return format!(
            "{}; each leader takes its datacenter's writes and ships them to the others (conflicts: {resolve})",
            datacenters.join("; ")
        );
    }
    match cluster.nodes.as_slice() {
        [] => "no nodes".to_string(),
        [only] => format!("{} runs alone: there is no follower to replicate to", only.id),
        [leader, followers @ ..] => {
            let ids: Vec<&str> = followers.iter().map(|n| n.id.as_str()).collect();
            let s = if ids.len() == 1 { "s" } else { "" };
            format!("{} leads; {} follow{s} it and refuse{s} writes with READONLY naming it", leader.id, ids.join(", "))
        }
    }
}

/// Refuses to start when the pid file names a node of this cluster that still runs.
fn refuse_if_running(dir: &ClusterDir) -> Result<()> {
    let Some(pids) = layout::read_pids(&dir.pids())? else { return Ok(()) };
    let live: Vec<String> = pids
        .iter()
        .filter(|(id, pid)| process::alive(*pid) && process::is_node(*pid, id, &dir.config()))
        .map(|(id, pid)| format!("{id} (pid {pid})"))
        .collect();
    if !live.is_empty() {
        bail!(
            "cluster {:?} is already running: {}; stop it first with `replikv cluster stop --name {} --data {}`",
            dir.name,
            live.join(", "),
            dir.name,
            dir.root.parent().unwrap_or(Path::new(".")).display()
        );
    }
    Ok(())
}

/// Refuses to start when any of the nodes' addresses is taken, naming it.
fn check_ports_free(cluster: &ClusterConfig) -> Result<()> {
    for (addr, what) in layout::addresses(cluster) {
        if let Err(e) = std::net::TcpListener::bind(addr) {
            bail!(
                "port {} ({what}, {addr}) is in use ({e}): choose another --base-port, or stop what uses it",
                addr.port()
            );
        }
    }
    Ok(())
}

/// Delivers one message per SIGINT or SIGTERM from now on, from a thread of its own.
fn listen_for_signals() -> Result<Receiver<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (mut interrupt, mut terminate) = {
        let _entered = runtime.enter();
        (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?)
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        runtime.block_on(async move {
            loop {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
                if tx.send(()).is_err() {
                    return;
                }
            }
        })
    });
    Ok(rx)
}

/// A cluster being started, then run.
struct Launch {
    /// Its directory.
    dir: ClusterDir,
    /// Its nodes and settings.
    cluster: ClusterConfig,
    /// Whether the nodes outlive the launcher, logging to files.
    detach: bool,
    /// Holds the merged log stream until the connect commands are printed.
    gate: Arc<Gate>,
    /// The node processes, in the cluster's order, each with its log reader (foreground only).
    nodes: Vec<(NodeProcess, Option<JoinHandle<()>>)>,
}

impl Launch {
    /// Spawns every node, then writes the pid file.
    fn spawn_all(&mut self) -> Result<()> {
        let exe = std::env::current_exe().context("finding the replikv executable")?;
        let width = self.cluster.nodes.iter().map(|n| n.id.len()).max().unwrap_or(0);
        for node in self.cluster.nodes.clone() {
            self.spawn_node(&exe, &node, width)?;
        }
        let pids: Vec<layout::PidEntry> = self.nodes.iter().map(|(p, _)| (p.id.clone(), p.pid)).collect();
        layout::write_pids(&self.dir.pids(), &pids)
    }

    /// Spawns one node, its standard error going to its log file, or through a reader thread
    /// to the log file and the merged stream.
    fn spawn_node(&mut self, exe: &Path, node: &ClusterNode, width: usize) -> Result<()> {
        let log_path = self.dir.log(&node.id);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        writeln!(log, "--- replikv cluster start: {} at unix time {} ---", node.id, now.as_secs())?;
        let mut command = Command::new(exe);
        command
            .arg("node")
            .arg("--config")
            .arg(process::absolute(&self.dir.config()))
            .arg("--id")
            .arg(&node.id)
            .arg("--data-dir")
            .arg(self.dir.node_data(&node.id))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0);
        NODE_VARS_REMOVED.iter().for_each(|var| {
            command.env_remove(var);
        });
        if self.detach {
            command.stderr(log.try_clone()?);
        } else {
            command.stderr(Stdio::piped());
        }
        let mut child = command.spawn().with_context(|| format!("starting {} ({})", node.id, exe.display()))?;
        let reader = child.stderr.take().map(|stderr| {
            let prefix = format!("{:<width$}", node.id);
            logs::follow(self.gate.clone(), prefix, stderr, log)
        });
        self.nodes.push((NodeProcess::spawned(&node.id, child), reader));
        Ok(())
    }

    /// Waits until every node answers `PING`, at most [`READY_TIMEOUT_SECS`]; fails on a node
    /// that exits, on a signal, or at the deadline.
    fn wait_ready(&mut self, signals: &Receiver<()>) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(READY_TIMEOUT_SECS);
        let mut ready = vec![false; self.nodes.len()];
        loop {
            for (i, is_ready) in ready.iter_mut().enumerate() {
                if *is_ready {
                    continue;
                }
                let node = &self.cluster.nodes[i];
                if let Some(status) = self.nodes[i].0.poll_exit() {
                    // Its reader ends with the pipe; join it so that the log file is complete.
                    if let Some(reader) = self.nodes[i].1.take() {
                        let _ = reader.join();
                    }
                    bail!("{} exited at start ({status}); {}", node.id, self.log_tail(&node.id));
                }
                *is_ready = net::ping(node.resp_addr);
            }
            if ready.iter().all(|r| *r) {
                return Ok(());
            }
            if signals.try_recv().is_ok() {
                bail!("interrupted while the nodes were starting");
            }
            if Instant::now() >= deadline {
                let late = &self.cluster.nodes[ready.iter().position(|r| !r).expect("a node not ready")];
                bail!(
                    "{} did not answer PING on {} within {READY_TIMEOUT_SECS} s; {}",
                    late.id,
                    late.resp_addr,
                    self.log_tail(&late.id)
                );
            }
            std::thread::sleep(Duration::from_millis(READY_POLL_MS));
        }
    }

    /// The last lines of node `id`'s log, introduced, for an error message.
    fn log_tail(&self, id: &str) -> String {
        let path = self.dir.log(id);
        let tail = read_tail(&path, LOG_TAIL_LINES).unwrap_or_else(|e| format!("(unreadable: {e})"));
        format!("the end of its log ({}):\n{tail}", path.display())
    }

    /// Stops every node started so far, after a failed start, and removes the pid file.
    fn abort(&mut self) {
        let mut processes: Vec<NodeProcess> = self.nodes.drain(..).map(|(p, _)| p).collect();
        process::stop_all(&mut processes, None);
        let _ = std::fs::remove_file(self.dir.pids());
    }

    /// Prints what was started and how to reach it.
    fn print_banner(&self) {
        let (cluster, data) = (&self.cluster, self.dir.root.parent().unwrap_or(Path::new(".")).display());
        let how = match cluster.replication.mode {
            ReplicationMode::Leaderless => "leaderless".to_string(),
            mode => format!("{mode}, acks {}", cluster.replication.acks),
        };
        progressln!(
            "cluster {} started: {} node(s), {how}; cluster file {}",
            cluster.name,
            cluster.nodes.len(),
            self.dir.config().display()
        );
        progressln!("{}", roles_line(cluster));
        for (node, (process, _)) in cluster.nodes.iter().zip(&self.nodes) {
            progressln!(
                "  {}  redis-cli -p {:<5}  curl http://{}/api/v1/status   (pid {})",
                node.id,
                node.resp_addr.port(),
                node.http_addr,
                process.pid
            );
        }
        let which = format!("--name {} --data {data}", cluster.name);
        if self.detach {
            progressln!("logs: {}/<id>.log", self.dir.root.display());
            progressln!("status: replikv cluster status {which}\nstop:   replikv cluster stop {which}");
        } else {
            progressln!("logs follow (also in {}/<id>.log); Ctrl-C stops every node", self.dir.root.display());
        }
    }

    /// Shows the merged logs and reports nodes that exit, until a signal; then stops them all.
    fn supervise(&mut self, signals: &Receiver<()>) -> Result<()> {
        loop {
            match signals.recv_timeout(Duration::from_millis(SUPERVISE_POLL_MS)) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            let running = self.report_exits();
            if running == 0 {
                let _ = std::fs::remove_file(self.dir.pids());
                bail!("every node has exited; their logs are in {}", self.dir.root.display());
            }
        }
        self.gate.emit("stopping: SIGTERM to every node (Ctrl-C again sends SIGKILL)".to_string());
        let (mut processes, readers): (Vec<NodeProcess>, Vec<_>) = self.nodes.drain(..).unzip();
        let endings = process::stop_all(&mut processes, Some(signals));
        readers.into_iter().flatten().for_each(|r| {
            let _ = r.join();
        });
        let _ = std::fs::remove_file(self.dir.pids());
        for (process, ending) in processes.iter().zip(endings) {
            match ending {
                Ending::Stopped => {}
                Ending::Killed => progressln!("{}: killed with SIGKILL (it had not stopped after SIGTERM)", process.id),
                Ending::StillRunning => progressln!("{}: pid {} still running after SIGKILL", process.id, process.pid),
            }
        }
        progressln!("cluster {} stopped", self.cluster.name);
        Ok(())
    }

    /// Reports nodes that have exited since the last look; returns how many still run.
    fn report_exits(&mut self) -> usize {
        let mut running = 0;
        for (process, _) in &mut self.nodes {
            let was_running = !process.exited;
            match process.poll_exit() {
                Some(status) if was_running => {
                    self.gate.emit(format!("{} exited ({status}); the other nodes keep running", process.id))
                }
                Some(_) => {}
                None => running += 1,
            }
        }
        running
    }
}

/// The last `lines` lines of the file at `path`, from at most its last [`LOG_TAIL_BYTES`].
fn read_tail(path: &Path, lines: usize) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
    let mut bytes = Vec::new();
    file.take(LOG_TAIL_BYTES).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    Ok(all[all.len().saturating_sub(lines)..].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_of_a_log_is_its_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n1.log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        assert_eq!(read_tail(&path, 2).unwrap(), "line 98\nline 99");
        std::fs::write(&path, "only\n").unwrap();
        assert_eq!(read_tail(&path, LOG_TAIL_LINES).unwrap(), "only");
        assert!(read_tail(&dir.path().join("none"), 2).is_err());
    }

    #[test]
    fn a_taken_port_is_named() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let node = |i: u16, resp: u16| ClusterNode {
            id: format!("n{i}"),
            peer_addr: ([127, 0, 0, 1], 0).into(),
            resp_addr: ([127, 0, 0, 1], resp).into(),
            http_addr: ([127, 0, 0, 1], 0).into(),
            datacenter: None,
        };
        let cluster = ClusterConfig {
            name: "c".into(),
            replication: Default::default(),
            conflicts: Vec::new(),
            nodes: vec![node(1, port)],
        };
        let err = check_ports_free(&cluster).unwrap_err().to_string();
        assert!(err.contains(&format!("port {port} (n1 RESP")), "{err}");
    }

    #[test]
    fn the_banner_names_the_leader_and_its_followers() {
        let node = |i: u16| ClusterNode {
            id: format!("n{i}"),
            peer_addr: ([127, 0, 0, 1], 7200 + i).into(),
            resp_addr: ([127, 0, 0, 1], 7000 + i).into(),
            http_addr: ([127, 0, 0, 1], 7100 + i).into(),
            datacenter: None,
        };
        let cluster = |n: u16| ClusterConfig {
            name: "c".into(),
            replication: Default::default(),
            conflicts: Vec::new(),
            nodes: (1..=n).map(node).collect(),
        };
        assert_eq!(roles_line(&cluster(3)), "n1 leads; n2, n3 follow it and refuse writes with READONLY naming it");
        assert_eq!(roles_line(&cluster(2)), "n1 leads; n2 follows it and refuses writes with READONLY naming it");
        assert_eq!(roles_line(&cluster(1)), "n1 runs alone: there is no follower to replicate to");
        let mut multi = cluster(5);
        multi.replication.mode = ReplicationMode::MultiLeader;
        for (i, dc) in ["dc1", "dc1", "dc1", "dc2", "dc2"].iter().enumerate() {
            multi.nodes[i].datacenter = Some(dc.to_string());
        }
        assert_eq!(
            roles_line(&multi),
            "dc1: n1 leads, n2, n3 follow; dc2: n4 leads, n5 follows; each leader takes its datacenter's writes and \
             ships them to the others (conflicts: lww)"
        );
    }
}
