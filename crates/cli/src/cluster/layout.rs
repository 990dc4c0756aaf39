//! Where a cluster's files live, which ports its nodes take, and the pid file.
//!
//! The directory is `<data>/<name>/`; see the module above for what it holds. Node i of N is
//! `nI` and listens on base+i (RESP), base+100+i (HTTP) and base+200+i (peers), so the three
//! ranges never overlap while N stays under 100 ([`NODES_MAX`] is lower).
//!
//! The pid file holds one `<id> <pid>` line per node. It is written whole to a temporary file
//! and renamed, so a reader sees the old file or the new one, never half of one.
//!
//! CAVEATS
//! - Every node listens on 127.0.0.1: the layout is for one machine. A cluster across machines
//!   needs a cluster file written by hand.

use super::args::{Conflicts, ReadRepair, Resolve, StartArgs, WhichCluster};
use anyhow::{bail, Context, Result};
use replikv_server::config::{
    valid_name, ClusterConfig, ClusterNode, ConflictsSetting, ReadRepairSetting, ReplicationConfig, ReplicationMode,
    ResolveSetting, NAME_RULE,
};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// The distance from a node's RESP port to its HTTP port.
pub const HTTP_PORT_OFFSET: u16 = 100;
/// The distance from a node's RESP port to its peer port.
pub const PEER_PORT_OFFSET: u16 = 200;
/// Nodes `cluster start` starts at most (the cluster file's own limit).
pub const NODES_MAX: usize = replikv_server::config::NODES_MAX;
/// Bytes a pid file may hold at most; a larger one is not ours.
pub const PIDS_FILE_BYTES_MAX: u64 = 64 * 1024;

/// A cluster's directory and the paths in it.
#[derive(Clone, Debug)]
pub struct ClusterDir {
    /// The cluster's id.
    pub name: String,
    /// `<data>/<name>`.
    pub root: PathBuf,
}

impl ClusterDir {
    /// The directory of the cluster `which` names; refuses a name that is not a valid id.
    pub fn new(which: &WhichCluster) -> Result<ClusterDir> {
        if !valid_name(&which.name) {
            bail!("--name {:?}: {NAME_RULE}", which.name);
        }
        Ok(ClusterDir { name: which.name.clone(), root: which.data.join(&which.name) })
    }

    /// The cluster file.
    pub fn config(&self) -> PathBuf {
        self.root.join("cluster.toml")
    }

    /// The pid file.
    pub fn pids(&self) -> PathBuf {
        self.root.join("pids")
    }

    /// Node `id`'s log file.
    pub fn log(&self, id: &str) -> PathBuf {
        self.root.join(format!("{id}.log"))
    }

    /// Node `id`'s data directory.
    pub fn node_data(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Reads the cluster file, with a hint when there is none.
    pub fn read_config(&self) -> Result<ClusterConfig> {
        let path = self.config();
        if !path.exists() {
            bail!(
                "no cluster {:?}: {} does not exist (start one with `replikv cluster start --name {}`)",
                self.name,
                path.display(),
                self.name
            );
        }
        Ok(ClusterConfig::read(&path)?)
    }
}

/// The cluster `start` describes: N nodes on 127.0.0.1 from the base port, checked.
pub fn plan(args: &StartArgs) -> Result<ClusterConfig> {
    let n = args.nodes;
    if !(1..=NODES_MAX).contains(&n) {
        bail!("--nodes {n}: a local cluster has 1 to {NODES_MAX} nodes");
    }
    let last = u32::from(args.base_port) + u32::from(PEER_PORT_OFFSET) + n as u32;
    if args.base_port == 0 || last > u32::from(u16::MAX) {
        bail!(
            "--base-port {}: node ports run up to base+{}+{n} = {last}, past 65535",
            args.base_port,
            PEER_PORT_OFFSET
        );
    }
    let datacenters = match (args.mode, args.datacenters) {
        (ReplicationMode::MultiLeader, d) => Some(d.unwrap_or(DATACENTERS_DEFAULT)),
        (_, None) => None,
        (mode, Some(_)) => bail!("--datacenters is a setting of --mode multi-leader, not of --mode {mode}"),
    };
    if args.resolve.is_some() && args.mode != ReplicationMode::MultiLeader {
        bail!("--resolve is a setting of --mode multi-leader, not of --mode {}", args.mode);
    }
    if args.mode != ReplicationMode::SingleLeader && args.log_format != replikv_core::replication::LogFormat::Logical {
        bail!(
            "--log-format {} is a setting of --mode single-leader, not of --mode {}",
            args.log_format.name(),
            args.mode
        );
    }
    if let Some(d) = datacenters.filter(|d| !(1..=n).contains(d)) {
        bail!("--datacenters {d}: each datacenter needs a node, so with --nodes {n} it must be 1 to {n}");
    }
    let addr = |port: u32| SocketAddr::from((Ipv4Addr::LOCALHOST, port as u16));
    let nodes = (1..=n as u32)
        .map(|i| {
            let resp = u32::from(args.base_port) + i;
            ClusterNode {
                id: format!("n{i}"),
                peer_addr: addr(resp + u32::from(PEER_PORT_OFFSET)),
                resp_addr: addr(resp),
                http_addr: addr(resp + u32::from(HTTP_PORT_OFFSET)),
                // Dealt in order, the first datacenters one node larger when D does not divide N.
                datacenter: datacenters.map(|d| format!("dc{}", datacenter_of(i as usize - 1, n, d) + 1)),
            }
        })
        .collect();
    let defaults = ReplicationConfig::default();
    let replication = ReplicationConfig {
        mode: args.mode,
        acks: args.acks,
        ack_timeout_ms: args.ack_timeout_ms,
        forward_writes: args.forward_writes,
        read_lease: args.read_lease,
        log_retain_bytes: args.log_retain_bytes,
        log_segment_bytes: defaults.log_segment_bytes.min(args.log_retain_bytes),
        log_format: args.log_format,
        n: args.leaderless.n,
        w: args.leaderless.w,
        r: args.leaderless.r,
        conflicts: args.leaderless.conflicts.map(|c| match c {
            Conflicts::Lww => ConflictsSetting::Lww,
            Conflicts::Siblings => ConflictsSetting::Siblings,
        }),
        read_repair: args.leaderless.read_repair.map(|r| match r {
            ReadRepair::Async => ReadRepairSetting::Async,
            ReadRepair::Blocking => ReadRepairSetting::Blocking,
        }),
        anti_entropy_interval_ms: args.anti_entropy.anti_entropy_ms,
        anti_entropy_style: args.anti_entropy.anti_entropy_style,
        tombstone_grace_ms: args.anti_entropy.tombstone_grace_ms,
        hinted_handoff: args.anti_entropy.hinted_handoff.then_some(true),
        sloppy_quorum: args.anti_entropy.sloppy_quorum.then_some(true),
        resolve: args.resolve.map(|r| match r {
            Resolve::Lww => ResolveSetting::Lww,
            Resolve::Merge => ResolveSetting::Merge,
            Resolve::App => ResolveSetting::App,
        }),
        ..defaults
    };
    let cluster = ClusterConfig { name: args.which.name.clone(), replication, conflicts: Vec::new(), nodes };
    cluster.check().with_context(|| match args.mode {
        ReplicationMode::Leaderless => format!("--nodes {n} --mode leaderless"),
        ReplicationMode::MultiLeader => format!(
            "--nodes {n} --mode multi-leader --datacenters {} --acks {}",
            datacenters.unwrap_or(DATACENTERS_DEFAULT),
            args.acks
        ),
        mode => format!("--nodes {n} --mode {mode} --acks {}", args.acks),
    })?;
    Ok(cluster)
}

/// Datacenters `cluster start --mode multi-leader` makes when `--datacenters` is not given.
pub const DATACENTERS_DEFAULT: usize = 2;

/// The datacenter (from 0) of node `i` (from 0) when `n` nodes are dealt into `d` in order,
/// the first `n % d` datacenters taking one node more.
fn datacenter_of(i: usize, n: usize, d: usize) -> usize {
    let (size, extra) = (n / d, n % d);
    let big = extra * (size + 1);
    if i < big {
        i / (size + 1)
    } else {
        extra + (i - big) / size.max(1)
    }
}

/// Every address the cluster's nodes listen on (or will), each with what it is for.
pub fn addresses(cluster: &ClusterConfig) -> Vec<(SocketAddr, String)> {
    let mut all = Vec::new();
    for node in &cluster.nodes {
        all.push((node.resp_addr, format!("{} RESP", node.id)));
        all.push((node.http_addr, format!("{} HTTP", node.id)));
        all.push((node.peer_addr, format!("{} peer", node.id)));
    }
    all
}

/// One line of the pid file: a node's id and its process id.
pub type PidEntry = (String, u32);

/// Writes the pid file whole (a temporary file, then a rename).
pub fn write_pids(path: &Path, pids: &[PidEntry]) -> Result<()> {
    let text: String = pids.iter().map(|(id, pid)| format!("{id} {pid}\n")).collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Reads the pid file; `None` when there is none.
pub fn read_pids(path: &Path) -> Result<Option<Vec<PidEntry>>> {
    let len = match std::fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if len > PIDS_FILE_BYTES_MAX {
        bail!("{}: {len} bytes, more than a pid file holds ({PIDS_FILE_BYTES_MAX})", path.display());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_pids(&text).map(Some).with_context(|| format!("reading {}", path.display()))
}

/// Parses `<id> <pid>` lines, ignoring blank ones.
fn parse_pids(text: &str) -> Result<Vec<PidEntry>> {
    let mut pids = Vec::new();
    for (number, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let pid = match fields[..] {
            // A pid past i32::MAX would become a negative pid_t: a process group, or every process.
            [id, pid] if valid_name(id) => {
                pid.parse::<u32>().ok().filter(|p| *p > 1 && *p <= i32::MAX as u32).map(|p| (id.to_string(), p))
            }
            _ => None,
        };
        match pid {
            Some(entry) => pids.push(entry),
            None => bail!("line {}: {line:?} is not \"<id> <pid>\"", number + 1),
        }
    }
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::args::{AntiEntropyArgs, LeaderlessArgs};
    use replikv_server::config::{Acks, ReplicationMode};

    #[test]
    fn multi_leader_deals_the_nodes_into_datacenters_in_order() {
        let mut args = start(5, 7000, Acks::Async);
        args.mode = ReplicationMode::MultiLeader;
        let dcs =
            |c: &ClusterConfig| -> Vec<String> { c.nodes.iter().map(|n| n.datacenter.clone().unwrap()).collect() };
        assert_eq!(dcs(&plan(&args).unwrap()), ["dc1", "dc1", "dc1", "dc2", "dc2"], "two by default");
        args.datacenters = Some(3);
        assert_eq!(dcs(&plan(&args).unwrap()), ["dc1", "dc1", "dc2", "dc2", "dc3"]);
        args.nodes = 4;
        args.datacenters = Some(2);
        assert_eq!(dcs(&plan(&args).unwrap()), ["dc1", "dc1", "dc2", "dc2"]);
        args.datacenters = Some(5);
        let err = format!("{:#}", plan(&args).unwrap_err());
        assert!(err.contains("--datacenters 5") && err.contains("1 to 4"), "{err}");
        args.datacenters = Some(2);
        args.acks = Acks::SemiSync(2);
        let err = format!("{:#}", plan(&args).unwrap_err());
        assert!(err.contains("inside each datacenter") && err.contains("the smallest has 2"), "{err}");
        let mut single = start(3, 7000, Acks::Async);
        single.datacenters = Some(2);
        let err = format!("{:#}", plan(&single).unwrap_err());
        assert!(err.contains("--datacenters is a setting of --mode multi-leader"), "{err}");
        let mut statement = start(3, 7000, Acks::Async);
        (statement.mode, statement.log_format) =
            (ReplicationMode::Leaderless, replikv_core::replication::LogFormat::Statement);
        let err = format!("{:#}", plan(&statement).unwrap_err());
        assert!(err.contains("--log-format statement is a setting of --mode single-leader"), "{err}");
    }

    fn start(nodes: usize, base_port: u16, acks: Acks) -> StartArgs {
        StartArgs {
            which: WhichCluster { name: "demo".into(), data: "./data".into() },
            nodes,
            mode: ReplicationMode::SingleLeader,
            datacenters: None,
            resolve: None,
            acks,
            base_port,
            ack_timeout_ms: 1000,
            forward_writes: false,
            read_lease: false,
            log_retain_bytes: replikv_server::config::LOG_RETAIN_BYTES_DEFAULT,
            log_format: Default::default(),
            detach: false,
            leaderless: LeaderlessArgs::default(),
            anti_entropy: AntiEntropyArgs::default(),
        }
    }

    #[test]
    fn anti_entropy_flags_reach_the_cluster_file_and_are_refused_where_they_cannot_work() {
        let mut args = start(3, 7000, Acks::Async);
        args.mode = ReplicationMode::Leaderless;
        let r = plan(&args).unwrap().replication;
        let unset = (r.anti_entropy_interval_ms, r.tombstone_grace_ms, r.hinted_handoff, r.sloppy_quorum);
        assert_eq!(unset, (None, None, None, None), "no flag, no setting: the node's defaults speak");
        args.anti_entropy = AntiEntropyArgs {
            anti_entropy_ms: Some(300),
            anti_entropy_style: Some(replikv_server::config::AntiEntropyStyleSetting::Pull),
            tombstone_grace_ms: Some(1000),
            hinted_handoff: true,
            sloppy_quorum: true,
        };
        let r = plan(&args).unwrap().replication;
        let set = (r.anti_entropy_interval_ms, r.tombstone_grace_ms, r.hinted_handoff, r.sloppy_quorum);
        assert_eq!(set, (Some(300), Some(1000), Some(true), Some(true)));
        assert_eq!(r.anti_entropy_style, Some(replikv_server::config::AntiEntropyStyleSetting::Pull));
        args.anti_entropy.hinted_handoff = false;
        let err = format!("{:#}", plan(&args).unwrap_err());
        assert!(err.contains("sloppy_quorum = true") && err.contains("hinted_handoff = true"), "{err}");
        args.anti_entropy = AntiEntropyArgs { anti_entropy_ms: Some(300), ..AntiEntropyArgs::default() };
        args.mode = ReplicationMode::SingleLeader;
        let err = format!("{:#}", plan(&args).unwrap_err());
        assert!(err.contains("replication.anti_entropy_interval_ms is a setting of mode = \"leaderless\""), "{err}");
    }

    #[test]
    fn a_leaderless_plan_carries_n_w_r_and_refuses_them_out_of_range_or_in_another_mode() {
        let mut args = start(3, 7000, Acks::Async);
        args.mode = ReplicationMode::Leaderless;
        args.leaderless.w = Some(3);
        args.leaderless.r = Some(1);
        let r = plan(&args).unwrap().replication;
        assert_eq!((r.n, r.w, r.r), (None, Some(3), Some(1)));
        assert_eq!(r.nwr(3).unwrap(), replikv_core::quorum::Nwr { n: 3, w: 3, r: 1 });
        args.leaderless.n = Some(4);
        let err = format!("{:#}", plan(&args).unwrap_err());
        assert!(err.contains("replication.n = 4: a key cannot have more replicas than [[nodes]] lists (3)"), "{err}");
        args.leaderless.n = Some(3);
        args.leaderless.w = Some(0);
        let err = format!("{:#}", plan(&args).unwrap_err());
        assert!(err.contains("w = 0 must be between 1 and n = 3"), "{err}");
        args.mode = ReplicationMode::SingleLeader;
        args.leaderless.w = Some(2);
        let err = format!("{:#}", plan(&args).unwrap_err());
        assert!(err.contains("replication.n is a setting of mode = \"leaderless\""), "{err}");
    }

    #[test]
    fn replication_flags_reach_the_cluster_file() {
        let mut args = start(3, 7000, Acks::Sync);
        args.ack_timeout_ms = 250;
        args.forward_writes = true;
        args.read_lease = true;
        args.log_retain_bytes = 1 << 20;
        let r = plan(&args).unwrap().replication;
        assert_eq!(
            (r.ack_timeout_ms, r.forward_writes, r.read_lease, r.log_retain_bytes, r.log_segment_bytes),
            (250, true, true, 1 << 20, 1 << 20)
        );
        args.ack_timeout_ms = 0;
        let err = format!("{:#}", plan(&args).unwrap_err());
        assert!(err.contains("ack_timeout_ms must be between 1 and 3600000"), "{err}");
    }

    #[test]
    fn node_i_takes_base_plus_i_plus_its_offset() {
        let cluster = plan(&start(3, 7000, Acks::Async)).unwrap();
        let ports: Vec<(&str, u16, u16, u16)> = cluster
            .nodes
            .iter()
            .map(|n| (n.id.as_str(), n.resp_addr.port(), n.http_addr.port(), n.peer_addr.port()))
            .collect();
        assert_eq!(ports, [("n1", 7001, 7101, 7201), ("n2", 7002, 7102, 7202), ("n3", 7003, 7103, 7203)]);
        assert_eq!(addresses(&cluster).len(), 9);
    }

    #[test]
    fn plans_that_cannot_work_are_refused() {
        let table = [
            (start(0, 7000, Acks::Async), "--nodes 0"),
            (start(NODES_MAX + 1, 7000, Acks::Async), "1 to 64"),
            (start(3, 65400, Acks::Async), "past 65535"),
            (start(3, 0, Acks::Async), "--base-port 0"),
            (start(3, 7000, Acks::SemiSync(3)), "between 1 and 2"),
            (start(1, 7000, Acks::SemiSync(1)), "K followers"),
        ];
        for (args, want) in table {
            let err = format!("{:#}", plan(&args).unwrap_err());
            assert!(err.contains(want), "{args:?}: {err}");
        }
        assert!(plan(&start(3, 65535 - 203, Acks::Sync)).is_ok(), "the last port is 65535");
    }

    #[test]
    fn names_must_be_plain_ids() {
        for name in ["../x", "a/b", "", "a b"] {
            let which = WhichCluster { name: name.into(), data: "d".into() };
            assert!(ClusterDir::new(&which).is_err(), "{name:?}");
        }
        let dir = ClusterDir::new(&WhichCluster { name: "c-1".into(), data: "d".into() }).unwrap();
        assert_eq!(dir.log("n1"), Path::new("d/c-1/n1.log"));
        assert_eq!(dir.node_data("n1"), Path::new("d/c-1/n1"));
    }

    #[test]
    fn pid_files_round_trip_and_bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pids");
        assert!(read_pids(&path).unwrap().is_none());
        let pids = vec![("n1".to_string(), 100), ("n2".to_string(), 200)];
        write_pids(&path, &pids).unwrap();
        assert_eq!(read_pids(&path).unwrap().unwrap(), pids);
        let table = [
            ("n1 100\n\nn2 7\n", Ok(2)),
            ("n1\n", Err("line 1")),
            ("n1 x\n", Err("line 1")),
            ("n1 1\n", Err("line 1")),
        ];
        for (text, want) in table {
            match (parse_pids(text), want) {
                (Ok(pids), Ok(n)) => assert_eq!(pids.len(), n, "{text:?}"),
                (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{text:?}: {e}"),
                (got, want) => panic!("{text:?}: {got:?} vs {want:?}"),
            }
        }
    }
}
