//! The command line of `replikv cluster`.
//!
//! Every subcommand finds its cluster by `--name` (its id and directory name) under `--data`;
//! `start` adds the shape of the cluster: how many nodes, the replication mode and its
//! acknowledgements, the base port. Names are checked by the same rule as node ids, so a name
//! is always one plain path component.

use clap::{Args, Subcommand, ValueEnum};
use replikv_server::config::{Acks, ReplicationMode};

/// `--conflicts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Conflicts {
    /// The newest version wins.
    Lww,
    /// Concurrent values are kept and listed.
    Siblings,
}

/// `--resolve` (multi-leader).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Resolve {
    /// The highest version wins; the loser goes to the conflict log.
    Lww,
    /// The concurrent values, sorted and joined.
    Merge,
    /// Every concurrent value kept as a sibling, for the application.
    App,
}

/// `--read-repair`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReadRepair {
    /// Repairs go out after the answer.
    Async,
    /// The answer waits until w replicas hold it.
    Blocking,
}
use std::path::PathBuf;

/// Run a local cluster of real `replikv node` processes.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
replikv cluster start                      # 3 nodes, RESP on 7001..7003, HTTP on 7101..7103; Ctrl-C stops\n  \
replikv cluster start --nodes 5 --acks semi-sync:2 --detach\n  \
replikv cluster start --mode leaderless --n 3 --w 2 --r 2\n  \
replikv cluster status                     # or: replikv status\n  \
replikv cluster stop\n  \
replikv cluster clean                      # stop, then remove ./data/demo\n\n\
The first node listed (n1) leads a new cluster, and elections replace it if it goes; the\n\
others follow the leader and refuse writes with READONLY naming it. --acks picks when a write is acknowledged: sync (every follower has it),\n\
semi-sync:K (K followers have it) or async (the leader alone has it).\n\n\
With --mode leaderless every node takes reads and writes: a write waits for w of a key's n\n\
replicas, a read for r, and the newest version wins; w + r <= n is allowed and warned about.\n\
Replicas also converge without reads: every --anti-entropy-ms each node compares Merkle trees\n\
with a random peer and exchanges the keys that differ. --hinted-handoff keeps a write for a\n\
replica that is down on a stand-in until it is back; --sloppy-quorum counts such hints toward\n\
w (warned about: w + r > n then no longer guarantees overlap).")]
pub struct ClusterArgs {
    /// What to do with the cluster.
    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// The `replikv cluster` subcommands.
#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Start a local cluster: one node process per node, connect commands, merged logs.
    ///
    /// Writes DATA/NAME/cluster.toml, starts `replikv node --config it --id nI` per node, waits
    /// until each answers PING, prints how to connect, then shows the nodes' logs with id
    /// prefixes until Ctrl-C or SIGTERM, which stops every node. With --detach it returns once
    /// all answer PING and leaves them running.
    Start(StartArgs),
    /// Ask every node of the cluster for its status and print a table (or JSON).
    Status(StatusArgs),
    /// Stop a cluster's nodes, found through its pid file: SIGTERM, then SIGKILL after 15 s.
    Stop(WhichCluster),
    /// Stop the cluster, then remove its directory (data, logs, cluster file).
    Clean(WhichCluster),
}

/// Which cluster a command is about.
#[derive(Args, Clone, Debug)]
pub struct WhichCluster {
    /// The cluster's id, and its directory's name under --data.
    #[arg(long, default_value = "demo")]
    pub name: String,
    /// The directory that holds clusters: the cluster lives in DATA/NAME.
    #[arg(long, default_value = "./data", value_name = "DIR")]
    pub data: PathBuf,
}

/// The leaderless settings a command line may give (`cluster start`, `sim`).
#[derive(Args, Clone, Debug, Default)]
pub struct LeaderlessArgs {
    /// Leaderless: replicas per key [default: min(3, nodes)].
    #[arg(long, value_name = "N")]
    pub n: Option<usize>,
    /// Leaderless: replicas a write waits for [default: a majority of n].
    #[arg(long, value_name = "W")]
    pub w: Option<usize>,
    /// Leaderless: replicas a read waits for [default: a majority of n].
    #[arg(long, value_name = "R")]
    pub r: Option<usize>,
    /// Leaderless: what a GET of concurrent values returns: lww (the newest) or siblings (an
    /// error; REPLIKV.SIBLINGS lists them).
    #[arg(long, value_enum, value_name = "lww|siblings")]
    pub conflicts: Option<Conflicts>,
    /// Leaderless: whether a read waits for its repairs: async or blocking.
    #[arg(long, value_enum, value_name = "async|blocking")]
    pub read_repair: Option<ReadRepair>,
}

impl LeaderlessArgs {
    /// Each flag by name (`--n`), and whether it was given: for refusing them in another mode.
    pub fn flags(&self) -> [(&'static str, bool); 5] {
        [
            ("--n", self.n.is_some()),
            ("--w", self.w.is_some()),
            ("--r", self.r.is_some()),
            ("--conflicts", self.conflicts.is_some()),
            ("--read-repair", self.read_repair.is_some()),
        ]
    }
}

/// The leaderless anti-entropy and hinted-handoff settings `cluster start` writes to the
/// cluster file (refused, as every leaderless setting, in another mode).
#[derive(Args, Clone, Debug, Default)]
pub struct AntiEntropyArgs {
    /// Leaderless: milliseconds between the Merkle-tree exchanges each node starts with a
    /// random peer; 0 starts none [default: 5000].
    #[arg(long, value_name = "MS")]
    pub anti_entropy_ms: Option<u64>,
    /// Leaderless: which side of a round sends its states [default: push-pull].
    #[arg(long, value_name = "push|pull|push-pull", value_parser = parse_style)]
    pub anti_entropy_style: Option<replikv_server::config::AntiEntropyStyleSetting>,
    /// Leaderless: milliseconds after a delete before its tombstone may be purged, and then
    /// only once every replica of the key holds it [default: 864000000, 10 days].
    #[arg(long, value_name = "MS")]
    pub tombstone_grace_ms: Option<u64>,
    /// Leaderless: a write whose replica is down goes to the next node on the ring as a
    /// durable hint, delivered when the replica is back.
    #[arg(long)]
    pub hinted_handoff: bool,
    /// Leaderless: a hint counts toward w (needs --hinted-handoff); then w + r > n no longer
    /// guarantees that a read sees an acknowledged write.
    #[arg(long)]
    pub sloppy_quorum: bool,
}

/// `replikv cluster start`.
#[derive(Args, Debug)]
pub struct StartArgs {
    /// Which cluster to start.
    #[command(flatten)]
    pub which: WhichCluster,
    /// How many nodes (n1..nN).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub nodes: usize,
    /// The replication mode: single-leader, leaderless or multi-leader.
    #[arg(long, default_value = "single-leader")]
    pub mode: ReplicationMode,
    /// Multi-leader: how many datacenters the nodes are dealt into, in order (4 nodes in 2:
    /// n1 and n2 in dc1, n3 and n4 in dc2; the first of each leads it) [default: 2].
    #[arg(long, value_name = "D")]
    pub datacenters: Option<usize>,
    /// Multi-leader: how concurrent writes in two datacenters are resolved [default: lww].
    #[arg(long, value_enum)]
    pub resolve: Option<Resolve>,
    /// Leaderless: n, w, r, conflicts, read repair.
    #[command(flatten)]
    pub leaderless: LeaderlessArgs,
    /// Leaderless: anti-entropy, tombstone collection, hinted handoff.
    #[command(flatten)]
    pub anti_entropy: AntiEntropyArgs,
    /// When a write is acknowledged: sync, semi-sync:K (K followers) or async (multi-leader:
    /// inside each datacenter).
    #[arg(long, default_value = "async", value_name = "sync|semi-sync:K|async")]
    pub acks: Acks,
    /// Node i serves RESP on P+i, HTTP on P+100+i and peers on P+200+i.
    #[arg(long, default_value_t = 7000, value_name = "P")]
    pub base_port: u16,
    /// Milliseconds a write waits for its acknowledgements before -NOREPLICAS.
    #[arg(long, default_value_t = replikv_server::config::ACK_TIMEOUT_MS_DEFAULT, value_name = "MS")]
    pub ack_timeout_ms: u64,
    /// Followers forward writes to the leader instead of refusing them with READONLY.
    #[arg(long)]
    pub forward_writes: bool,
    /// Single-leader: the leader answers reads under a lease instead of a round trip each
    /// (assumes clocks drift by at most 1%: read_lease_drift_ppm in the cluster file).
    #[arg(long)]
    pub read_lease: bool,
    /// Single-leader: what the leader logs of a write: `logical` (its effects, old values
    /// included), `statement` (the request, executed again by each replica: nondeterministic
    /// requests leave replicas different), `mixed` (statements, effects for the
    /// nondeterministic) or `physical` (the storage engine's bytes: every replica's segment
    /// files the same, byte for byte; nodes of one storage format version only).
    #[arg(long, default_value = "logical", value_name = "FORMAT")]
    pub log_format: replikv_core::replication::LogFormat,
    /// Bytes of replication log each node keeps (a follower further behind gets a snapshot).
    #[arg(long, default_value_t = replikv_server::config::LOG_RETAIN_BYTES_DEFAULT, value_name = "BYTES")]
    pub log_retain_bytes: u64,
    /// Return once every node answers PING, leaving them running (logs in DATA/NAME/ID.log).
    #[arg(long)]
    pub detach: bool,
}

/// `replikv status` and `replikv cluster status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Which cluster to ask.
    #[command(flatten)]
    pub which: WhichCluster,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
}

/// How `status` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A table for people.
    Table,
    /// One JSON object for scripts.
    Json,
}

/// Parses `--anti-entropy-style`.
fn parse_style(value: &str) -> Result<replikv_server::config::AntiEntropyStyleSetting, String> {
    use replikv_server::config::AntiEntropyStyleSetting as S;
    match value {
        "push" => Ok(S::Push),
        "pull" => Ok(S::Pull),
        "push-pull" => Ok(S::PushPull),
        other => Err(format!("{other:?} is not push, pull or push-pull")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: ClusterCommand,
    }

    #[test]
    fn start_has_the_documented_defaults() {
        let cli = Cli::try_parse_from(["cluster", "start"]).unwrap();
        let ClusterCommand::Start(start) = cli.command else { panic!("start") };
        assert_eq!((start.nodes, start.base_port, start.detach), (3, 7000, false));
        assert_eq!((start.mode, start.acks), (ReplicationMode::SingleLeader, Acks::Async));
        assert_eq!((start.which.name.as_str(), start.which.data), ("demo", PathBuf::from("./data")));
    }

    #[test]
    fn start_parses_acks_and_refuses_bad_ones() {
        let cli = Cli::try_parse_from(["cluster", "start", "--acks", "semi-sync:2", "--nodes", "5"]).unwrap();
        let ClusterCommand::Start(start) = cli.command else { panic!("start") };
        assert_eq!(start.acks, Acks::SemiSync(2));
        let err = Cli::try_parse_from(["cluster", "start", "--acks", "most"]).err().unwrap().to_string();
        assert!(err.contains("unknown acks"), "{err}");
        let cli = Cli::try_parse_from([
            "cluster",
            "start",
            "--mode",
            "multi-leader",
            "--datacenters",
            "2",
            "--resolve",
            "merge",
        ])
        .unwrap();
        let ClusterCommand::Start(start) = cli.command else { panic!("start") };
        assert_eq!(
            (start.mode, start.datacenters, start.resolve),
            (ReplicationMode::MultiLeader, Some(2), Some(Resolve::Merge))
        );
        let cli = Cli::try_parse_from(["cluster", "start", "--mode", "leaderless", "--n", "3", "--w", "2", "--r", "1"])
            .unwrap();
        let ClusterCommand::Start(start) = cli.command else { panic!("start") };
        assert_eq!(
            (start.mode, start.leaderless.n, start.leaderless.w, start.leaderless.r),
            (ReplicationMode::Leaderless, Some(3), Some(2), Some(1))
        );
    }

    #[test]
    fn status_takes_an_output_format() {
        let cli = Cli::try_parse_from(["cluster", "status", "-o", "json", "--name", "x"]).unwrap();
        let ClusterCommand::Status(status) = cli.command else { panic!("status") };
        assert_eq!((status.output, status.which.name.as_str()), (Output::Json, "x"));
    }
}
