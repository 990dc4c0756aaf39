//! Node processes: whether one is alive and still ours, signals, and stopping a set of them
//! within a bound.
//!
//! Stopping is SIGTERM to every node at once (a node then stops accepting, finishes what is in
//! flight, flushes and exits 0), a wait of up to [`STOP_TIMEOUT_SECS`], SIGKILL to any still
//! running, and a last wait of up to [`KILL_TIMEOUT_SECS`]. A process the launcher spawned
//! itself is watched through its `Child` (which also reaps it); any other through
//! `kill(pid, 0)`, where a zombie, dead but not yet reaped by its parent, counts as gone.
//!
//! CAVEATS
//! - Whether a pid is still the node it was is read from `/proc/<pid>/cmdline`, on Linux only;
//!   elsewhere a live pid is assumed to be the node.

use std::process::Child;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// Seconds a node has to exit after SIGTERM before it gets SIGKILL (a node drains its clients
/// for up to `SHUTDOWN_DRAIN_SECS`, 10, before it stops).
pub const STOP_TIMEOUT_SECS: u64 = 15;
/// Seconds a node has to disappear after SIGKILL before stopping reports it still running.
pub const KILL_TIMEOUT_SECS: u64 = 5;
/// Milliseconds between two looks at processes that are stopping.
const POLL_MS: u64 = 50;

/// A node process to watch or stop.
pub struct NodeProcess {
    /// The node's id.
    pub id: String,
    /// Its process id.
    pub pid: u32,
    /// The process, when this launcher spawned it (and so must reap it).
    pub child: Option<Child>,
    /// Set once the process is known to be gone.
    pub exited: bool,
}

/// How a node ended when asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// It exited after SIGTERM (or was already gone).
    Stopped,
    /// It was still running after SIGTERM and its bound, and SIGKILL ended it.
    Killed,
    /// Even SIGKILL did not end it within its bound.
    StillRunning,
}

impl NodeProcess {
    /// A process this launcher spawned.
    pub fn spawned(id: &str, child: Child) -> NodeProcess {
        NodeProcess { id: id.to_string(), pid: child.id(), child: Some(child), exited: false }
    }

    /// A process known only by its pid (from the pid file).
    pub fn by_pid(id: &str, pid: u32) -> NodeProcess {
        NodeProcess { id: id.to_string(), pid, child: None, exited: false }
    }

    /// Whether the process has exited, reaping it if it is ours; the exit status when known.
    pub fn poll_exit(&mut self) -> Option<String> {
        if self.exited {
            return Some(String::from("exited"));
        }
        let status = match self.child.as_mut() {
            Some(child) => match child.try_wait() {
                Ok(Some(status)) => Some(status.to_string()),
                Ok(None) => None,
                Err(e) => Some(format!("unknown ({e})")),
            },
            None => (!alive(self.pid)).then(|| String::from("exited")),
        };
        self.exited = status.is_some();
        status
    }

    /// Sends `signal` unless the process is already gone.
    fn signal(&mut self, signal: i32) {
        if self.poll_exit().is_none() {
            send(self.pid, signal);
        }
    }
}

/// Sends `signal` to `pid`, ignoring a process that is already gone.
pub fn send(pid: u32, signal: i32) {
    // A pid past i32::MAX would name a process group or every process: never signal it.
    let Ok(pid) = libc::pid_t::try_from(pid) else { return };
    // SAFETY: kill(2) has no memory effects; the pid is a node's, checked alive just before.
    unsafe { libc::kill(pid, signal) };
}

/// Whether `pid` is a live process (a zombie is not).
pub fn alive(pid: u32) -> bool {
    let Ok(pid_t) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let exists =
        unsafe { libc::kill(pid_t, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !zombie(pid)
}

/// Whether `pid` is a zombie, by `/proc/<pid>/stat`'s state field (Linux; false elsewhere).
fn zombie(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // The state follows the command name, which is in parentheses and may hold spaces.
    stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) == Some("Z")
}

/// Whether live `pid` still runs `replikv node --config <config> --id <id>`, by its command
/// line on Linux; true where `/proc` cannot tell. The config path (absolute, as `start`
/// passes it) ties the process to this cluster: every cluster names its nodes n1, n2, ...,
/// so the id alone would match another cluster's node that took a stale pid.
pub fn is_node(pid: u32, id: &str, config: &std::path::Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return !std::path::Path::new("/proc/self").exists();
    };
    let config = absolute(config);
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let has_node = args.iter().any(|a| *a == b"node");
    let has_id = args.windows(2).any(|w| w[0] == b"--id" && w[1] == id.as_bytes());
    let has_config = args.windows(2).any(|w| w[0] == b"--config" && w[1] == config.as_os_str().as_encoded_bytes());
    has_node && has_id && has_config
}

/// `path` made absolute against the current directory (unchanged if that fails).
pub fn absolute(path: &std::path::Path) -> std::path::PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Stops every process in `nodes` within the bounds (see the module doc), and says how each
/// ended. A message on `hurry` (a second Ctrl-C) skips the rest of the SIGTERM wait.
pub fn stop_all(nodes: &mut [NodeProcess], hurry: Option<&Receiver<()>>) -> Vec<Ending> {
    nodes.iter_mut().for_each(|n| n.signal(libc::SIGTERM));
    let terminated = wait_all(nodes, Duration::from_secs(STOP_TIMEOUT_SECS), hurry);
    if !terminated {
        nodes.iter_mut().for_each(|n| n.signal(libc::SIGKILL));
    }
    let mut endings = vec![Ending::Stopped; nodes.len()];
    for (ending, node) in endings.iter_mut().zip(nodes.iter()) {
        if !node.exited {
            *ending = Ending::Killed;
        }
    }
    if !terminated && !wait_all(nodes, Duration::from_secs(KILL_TIMEOUT_SECS), None) {
        for (ending, node) in endings.iter_mut().zip(nodes.iter()) {
            if !node.exited {
                *ending = Ending::StillRunning;
            }
        }
    }
    endings
}

/// Waits up to `timeout` for every process to exit; false if some still run (or on `hurry`).
fn wait_all(nodes: &mut [NodeProcess], timeout: Duration, hurry: Option<&Receiver<()>>) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let mut running = 0;
        for node in nodes.iter_mut() {
            if node.poll_exit().is_none() {
                running += 1;
            }
        }
        if running == 0 {
            return true;
        }
        if Instant::now() >= deadline || hurry.is_some_and(|h| h.try_recv().is_ok()) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(POLL_MS));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_stopped_child_is_reaped_and_reported_stopped() {
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        assert!(alive(pid));
        assert!(!is_node(pid, "n1", std::path::Path::new("c.toml")) || !std::path::Path::new("/proc/self").exists());
        let mut nodes = vec![NodeProcess::spawned("n1", child)];
        assert_eq!(stop_all(&mut nodes, None), [Ending::Stopped]);
        assert!(!alive(pid));
    }

    #[test]
    fn a_child_that_ignores_sigterm_is_killed() {
        let child = Command::new("sh").args(["-c", "trap '' TERM; sleep 30"]).spawn().unwrap();
        // Let the shell install its trap before the signal comes.
        std::thread::sleep(Duration::from_millis(300));
        let mut nodes = vec![NodeProcess::spawned("n1", child)];
        let (tx, rx) = std::sync::mpsc::channel();
        tx.send(()).unwrap(); // a second Ctrl-C: do not wait the whole bound
        assert_eq!(stop_all(&mut nodes, Some(&rx)), [Ending::Killed]);
    }

    #[test]
    fn our_own_process_is_alive_and_not_a_node() {
        assert!(alive(std::process::id()));
        if std::path::Path::new("/proc/self").exists() {
            assert!(!is_node(std::process::id(), "n1", std::path::Path::new("c.toml")));
        }
    }
}
