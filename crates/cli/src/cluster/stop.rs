//! `replikv cluster stop` and `replikv cluster clean`.
//!
//! `stop` reads the pid file and stops every node it names that is still alive and still that
//! node ([`process::stop_all`]: SIGTERM, a bounded wait, SIGKILL, a bounded wait), reports
//! each, and removes the pid file once none is left. `clean` stops, then removes the cluster's
//! directory: data, logs and cluster file.
//!
//! CAVEATS
//! - `clean` removes a directory only if it holds a `cluster.toml`, so that a mistyped
//!   `--data` or `--name` cannot remove something that is not a cluster.
//! - Nodes started by hand (not by `cluster start`) are not in the pid file and are not stopped.

use super::args::WhichCluster;
use super::layout::{self, ClusterDir};
use super::process::{self, Ending, NodeProcess, STOP_TIMEOUT_SECS};
use crate::output::progressln;
use anyhow::{bail, Context, Result};

/// Runs `replikv cluster stop`.
pub fn stop(which: &WhichCluster) -> Result<()> {
    let dir = ClusterDir::new(which)?;
    let Some(pids) = layout::read_pids(&dir.pids())? else {
        progressln!("cluster {}: not running (no pid file at {})", dir.name, dir.pids().display());
        return Ok(());
    };
    let mut processes = Vec::new();
    for (id, pid) in pids {
        if !process::alive(pid) {
            progressln!("{id}: not running (pid {pid} is gone)");
        } else if !process::is_node(pid, &id, &dir.config()) {
            progressln!("{id}: pid {pid} is no longer this replikv node; left alone");
        } else {
            processes.push(NodeProcess::by_pid(&id, pid));
        }
    }
    let endings = process::stop_all(&mut processes, None);
    let mut left = Vec::new();
    for (node, ending) in processes.iter().zip(endings) {
        match ending {
            Ending::Stopped => progressln!("{}: stopped (pid {})", node.id, node.pid),
            Ending::Killed => {
                progressln!("{}: killed with SIGKILL after {STOP_TIMEOUT_SECS} s (pid {})", node.id, node.pid)
            }
            Ending::StillRunning => left.push(format!("{} (pid {})", node.id, node.pid)),
        }
    }
    if !left.is_empty() {
        bail!("still running after SIGKILL: {}; the pid file {} is kept", left.join(", "), dir.pids().display());
    }
    std::fs::remove_file(dir.pids()).with_context(|| format!("removing {}", dir.pids().display()))?;
    progressln!("cluster {} stopped", dir.name);
    Ok(())
}

/// Runs `replikv cluster clean`.
pub fn clean(which: &WhichCluster) -> Result<()> {
    let dir = ClusterDir::new(which)?;
    if !dir.root.exists() {
        progressln!("nothing to clean: {} does not exist", dir.root.display());
        return Ok(());
    }
    if !dir.config().exists() {
        bail!(
            "refusing to remove {}: it holds no cluster.toml, so it is not a cluster's directory",
            dir.root.display()
        );
    }
    stop(which)?;
    std::fs::remove_dir_all(&dir.root).with_context(|| format!("removing {}", dir.root.display()))?;
    progressln!("removed {}", dir.root.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_removes_only_a_clusters_directory() {
        let data = tempfile::tempdir().unwrap();
        let which = WhichCluster { name: "c".into(), data: data.path().to_path_buf() };
        clean(&which).unwrap(); // nothing there: fine
        let root = data.path().join("c");
        std::fs::create_dir_all(root.join("n1")).unwrap();
        let err = clean(&which).unwrap_err().to_string();
        assert!(err.contains("no cluster.toml"), "{err}");
        std::fs::write(root.join("cluster.toml"), "cluster = \"c\"\n").unwrap();
        layout::write_pids(&root.join("pids"), &[("n1".into(), u32::MAX / 2)]).unwrap();
        clean(&which).unwrap();
        assert!(!root.exists());
    }
}
