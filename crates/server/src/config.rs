//! Node configuration: every setting has a default, a TOML key, a `REPLIKV_*` variable and a
//! flag, with precedence flags > environment > file > defaults.
//!
//! Flags and variables come in through clap (`NodeArgs`, where every field is optional so
//! that an absent flag lets the file speak); the file is read into `FileConfig`, which refuses
//! unknown keys so that a typo is an error rather than a silently ignored setting; `resolve`
//! merges them into the effective [`NodeConfig`], which `CONFIG GET *` and `/api/v1/config`
//! show.
//!
//! # Clusters
//!
//! The same file may describe a whole cluster, and then every node reads the same file and is
//! told which entry it is with `--id`:
//!
//! ```toml
//! cluster = "demo"                 # the cluster id: letters, digits, '-', '_'
//! [replication]
//! mode = "single-leader"           # or "leaderless" (then n, w, r below)
//! acks = "async"                   # "sync" | "semi-sync:K" | "async"
//! ack_timeout_ms = 1000
//! forward_writes = false
//! heartbeat_ms = 100
//! auto_failover = true             # elections when the leader is gone; false: manual only
//! election_timeout_ms = 1000       # a follower stands after 1000..=2000 ms without a leader
//! read_lease = false               # true: leader reads under a lease, no round trip each
//! read_lease_drift_ppm = 10000     # the clock-drift allowance the lease assumes (1%)
//! log_retain_bytes = 268435456     # 256 MiB; a follower further behind gets a snapshot
//! log_segment_bytes = 16777216     # 16 MiB
//! log_unreplicated_bytes = 1073741824  # 1 GiB of records no majority holds, kept past retention
//! log_format = "logical"           # or "statement" (requests, executed again), "mixed", or
//!                                   # "physical" (the log engine's bytes: identical files)
//! session_guarantee = "none"       # a session's start (see crate::sessions)
//! session_wait_ms = 1000           # a replica behind a session waits, then TRYAGAIN
//! read_your_writes = "wait"        # or "leader" for read_your_writes_leader_ms after a write
//! # mode = "leaderless" only:
//! # n = 3                          # replicas per key [default: min(3, nodes)]
//! # w = 2                          # replicas a write waits for [default: a majority of n]
//! # r = 2                          # replicas a read waits for [default: a majority of n]
//! # conflicts = "lww"              # or "siblings": GET of concurrent values is an error
//! # read_repair = "async"          # or "blocking": a read waits until w replicas hold it
//! # anti_entropy_interval_ms = 5000 # between the Merkle-tree exchanges a node starts; 0: none
//! # anti_entropy_style = "push-pull" # or "push" | "pull": which side of a round sends states
//! # tombstone_grace_ms = 864000000 # 10 days after a delete, and every replica holding it: purged
//! # hinted_handoff = false         # a write whose replica is down goes to a stand-in as a hint
//! # sloppy_quorum = false          # a hint counts toward w (needs hinted_handoff; see below)
//! [[nodes]]                        # the first node listed leads a new cluster
//! id = "n1"
//! peer_addr = "127.0.0.1:7201"
//! resp_addr = "127.0.0.1:7001"
//! http_addr = "127.0.0.1:7101"
//! datacenter = "dc1"               # optional
//! ```
//!
//! A node takes its RESP and HTTP addresses from its `[[nodes]]` entry (flags and variables
//! still win), its data directory defaults to `./data/<cluster>/<id>`, and it keeps the whole
//! [`ClusterConfig`] (its peers and the replication settings) in its [`NodeConfig`].
//! [`ClusterConfig::check`] refuses what cannot work, naming the setting: an id that is not an
//! entry, duplicate ids or addresses, a semi-sync K outside 1..=N-1, a mode that does not exist,
//! n, w or r out of range, or a setting of one mode in a file of another (for the single-leader
//! settings, which have defaults, a value other than the default). In leaderless mode
//! `ack_timeout_ms` is how long a coordinator waits for its w (or r) replicas.
//! [`ClusterConfig::durability_warnings`] names settings that work but promise less than a
//! reader may assume (acknowledged writes that a failover can lose, quorums that need not
//! overlap, a sloppy quorum's hints); the node logs them at start. `sloppy_quorum = true`
//! without `hinted_handoff = true` is refused: there would be no hint to count.
//!
//! CAVEATS
//! - The first node of `[[nodes]]` leads when a cluster first starts; after that elections
//!   (`auto_failover`) and `FAILOVER` decide, and a restarted node rejoins as what it was.
//! - A flag or variable that overrides a node's address is not seen by the other nodes, which
//!   read the addresses in the file.
//! - Addresses are compared as written: `127.0.0.1:7001` and `0.0.0.0:7001` are not seen as
//!   the same port, nor are two host names for one machine.

use crate::error::{Error, Result};
use replikv_core::storage::{FsyncPolicy, VALUE_CACHE_BYTES_MAX_DEFAULT};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The longest idle timeout, in seconds, as Redis's (a C int).
pub const IDLE_TIMEOUT_S_MAX: u64 = i32::MAX as u64;

/// The node id when none is given.
pub const ID_DEFAULT: &str = "n1";
/// The RESP listen address when none is given (Redis's port plus one, so both can run).
pub const RESP_ADDR_DEFAULT: &str = "127.0.0.1:6380";
/// The HTTP listen address when none is given.
pub const HTTP_ADDR_DEFAULT: &str = "127.0.0.1:8080";
/// Client connections at most, as Redis's `maxclients`.
pub const CONNECTIONS_MAX_DEFAULT: usize = 10_000;
/// Bytes a connection may buffer of requests not yet complete, as Redis's
/// `client-query-buffer-limit`.
pub const QUERY_BUFFER_BYTES_MAX_DEFAULT: usize = 1024 * 1024 * 1024;
/// Bytes of incomplete requests all connections together may buffer (RESP read buffers and
/// HTTP bodies being read); past it the connection holding the most is closed.
pub const QUERY_BUFFER_TOTAL_BYTES_MAX_DEFAULT: usize = 1024 * 1024 * 1024;
/// HTTP connections open at most; one more is answered 503 and closed at once.
pub const HTTP_CONNECTIONS_MAX_DEFAULT: usize = 1024;
/// Milliseconds an HTTP client has to send a request's head (request line and headers),
/// counted from the first byte it could send; an idle keep-alive connection is closed after
/// as long.
pub const HTTP_HEADER_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Milliseconds an HTTP client has to send a request's body once its head arrived.
pub const HTTP_BODY_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// The longest HTTP header or body timeout a file (or `CONFIG SET`) may set, in
/// milliseconds: an hour.
pub const HTTP_TIMEOUT_MS_MAX: u64 = 3_600_000;

// One value of the largest size a request may carry must fit in the node's bound.
const _: () = assert!(crate::resp::frame::BULK_BYTES_MAX_DEFAULT < QUERY_BUFFER_TOTAL_BYTES_MAX_DEFAULT);

/// A batch takes no more calls once it holds this many requests (a call, a connection's
/// pipelined round of up to 1024 requests, is never split).
pub const BATCH_REQUESTS_MAX_DEFAULT: usize = 4096;
/// Calls (rounds of requests) waiting for the runtime at most; a full queue makes
/// connections wait. Not a setting yet.
pub const PENDING_CALLS_MAX_DEFAULT: usize = 1024;
/// Milliseconds between ticks (expiry and, later, heartbeats).
pub const TICK_MS_DEFAULT: u64 = 100;
/// A log segment's size at most, in bytes.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024;
/// A node id's, cluster id's or datacenter's length at most, in bytes.
pub const NAME_BYTES_MAX: usize = 64;
/// Nodes one cluster file may list at most.
pub const NODES_MAX: usize = 64;
/// Milliseconds a write may wait for its acknowledgements when the file does not say.
pub const ACK_TIMEOUT_MS_DEFAULT: u64 = 1000;
/// The longest ack timeout a file (or `CONFIG SET`) may set, in milliseconds: an hour. A
/// client waiting longer is waiting for a follower that is gone.
pub const ACK_TIMEOUT_MS_MAX: u64 = 3_600_000;
/// How much longer than the ack timeout a follower waits for the reply to a forwarded write,
/// in milliseconds: the leader's own wait for acknowledgements, plus two hops.
pub const FORWARD_TIMEOUT_SLACK_MS: u64 = 5_000;
/// Milliseconds between leader heartbeats when the file does not say.
pub const HEARTBEAT_MS_DEFAULT: u64 = 100;

/// The election timeout's lower bound, by default: ten heartbeats.
pub const ELECTION_TIMEOUT_MS_DEFAULT: u64 = 1_000;
/// Bytes of replication log kept when the file does not say.
pub const LOG_RETAIN_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;
/// Bytes per replication log segment when the file does not say.
pub const LOG_SEGMENT_BYTES_DEFAULT: u64 = 16 * 1024 * 1024;
/// The smallest replication log segment (and retention) a file may set.
pub const LOG_BYTES_MIN: u64 = 64 * 1024;
/// The replication modes a cluster file may name today.
pub const MODES_VALID: &[&str] = &["single-leader", "leaderless", "multi-leader"];

/// Milliseconds a multi-leader change may be stamped ahead of the receiving leader's clock
/// when the file does not say (`max_clock_skew_ms`).
pub const MAX_CLOCK_SKEW_MS_DEFAULT: u64 = 1_000;

/// The largest `max_clock_skew_ms` a file may set: a minute.
pub const MAX_CLOCK_SKEW_MS_MAX: u64 = 60_000;

/// Which storage engine a node uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// Log-structured segments on disk (durable).
    Log,
    /// Memory only: everything is lost when the node stops.
    Memory,
}

/// `replikv node` flags; each also reads a `REPLIKV_*` variable. Absent ones fall back to the
/// configuration file, then to the defaults named in each help text.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct NodeArgs {
    /// TOML file with any of the settings below, by the same names with underscores
    /// (`resp_addr = "127.0.0.1:6380"`), and for a cluster `cluster = "NAME"`, `[replication]`
    /// and one `[[nodes]]` entry per node. Flags and variables override it.
    #[arg(long, env = "REPLIKV_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's name; with a cluster file, the `[[nodes]]` entry it takes its addresses
    /// from [default: n1].
    #[arg(long, env = "REPLIKV_ID")]
    pub id: Option<String>,
    /// The cluster this node belongs to (letters, digits, '-', '_') [default: `cluster` in
    /// the file, else none].
    #[arg(long, env = "REPLIKV_CLUSTER", value_name = "NAME")]
    pub cluster: Option<String>,
    /// Where the node keeps its data [default: ./data/{cluster}/{id}, or ./data/{id} outside
    /// a cluster].
    #[arg(long, env = "REPLIKV_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address for Redis clients (RESP2/RESP3) [default: 127.0.0.1:6380].
    #[arg(long, env = "REPLIKV_RESP_ADDR", value_name = "HOST:PORT")]
    pub resp_addr: Option<SocketAddr>,
    /// Address for HTTP/JSON, /metrics and health checks [default: 127.0.0.1:8080].
    #[arg(long, env = "REPLIKV_HTTP_ADDR", value_name = "HOST:PORT")]
    pub http_addr: Option<SocketAddr>,
    /// Storage engine: log (durable) or memory [default: log].
    #[arg(long, env = "REPLIKV_ENGINE", value_enum)]
    pub engine: Option<EngineKind>,
    /// When writes reach the disk: always (fsync every batch, before any reply), never, or a
    /// number of milliseconds between fsyncs [default: always].
    #[arg(long, env = "REPLIKV_FSYNC", value_name = "always|never|MS")]
    pub fsync: Option<FsyncPolicy>,
    /// A log segment's size at most, in bytes [default: 67108864].
    #[arg(long, env = "REPLIKV_SEGMENT_BYTES_MAX", value_name = "BYTES")]
    pub segment_bytes_max: Option<u64>,
    /// Bytes of values the log engine keeps in memory for reads at most; 0 caches none
    /// [default: 268435456].
    #[arg(long, env = "REPLIKV_VALUE_CACHE_BYTES_MAX", value_name = "BYTES")]
    pub value_cache_bytes_max: Option<u64>,
    /// RESP client connections at most [default: 10000].
    #[arg(long, env = "REPLIKV_CONNECTIONS_MAX", value_name = "N")]
    pub connections_max: Option<usize>,
    /// A bulk string's length at most, in bytes [default: 536870912, as Redis].
    #[arg(long, env = "REPLIKV_BULK_BYTES_MAX", value_name = "BYTES")]
    pub bulk_bytes_max: Option<usize>,
    /// Arguments in one request at most [default: 1048576].
    #[arg(long, env = "REPLIKV_MULTIBULK_LEN_MAX", value_name = "N")]
    pub multibulk_len_max: Option<usize>,
    /// Bytes of incomplete requests one connection may buffer [default: 1073741824].
    #[arg(long, env = "REPLIKV_QUERY_BUFFER_BYTES_MAX", value_name = "BYTES")]
    pub query_buffer_bytes_max: Option<usize>,
    /// Bytes of incomplete requests all clients together may buffer (RESP and HTTP); past
    /// it the connection holding the most is closed with an error [default: 1073741824].
    #[arg(long, env = "REPLIKV_QUERY_BUFFER_TOTAL_BYTES_MAX", value_name = "BYTES")]
    pub query_buffer_total_bytes_max: Option<usize>,
    /// HTTP connections open at most; one more is answered 503 and closed at once
    /// [default: 1024].
    #[arg(long, env = "REPLIKV_HTTP_CONNECTIONS_MAX", value_name = "N")]
    pub http_connections_max: Option<usize>,
    /// Milliseconds an HTTP client has to send a request's head; a slower one, or a
    /// keep-alive connection idle as long, is closed [default: 10000].
    #[arg(long, env = "REPLIKV_HTTP_HEADER_TIMEOUT_MS", value_name = "MS")]
    pub http_header_timeout_ms: Option<u64>,
    /// Milliseconds an HTTP client has to send a request's body once its head arrived; a
    /// slower one gets 408 and is closed [default: 60000].
    #[arg(long, env = "REPLIKV_HTTP_BODY_TIMEOUT_MS", value_name = "MS")]
    pub http_body_timeout_ms: Option<u64>,
    /// A batch (one group commit) takes no more calls once it holds this many requests
    /// [default: 4096].
    #[arg(long, env = "REPLIKV_BATCH_REQUESTS_MAX", value_name = "N")]
    pub batch_requests_max: Option<usize>,
    /// Milliseconds between ticks, which delete expired keys [default: 100].
    #[arg(long, env = "REPLIKV_TICK_MS", value_name = "MS")]
    pub tick_ms: Option<u64>,
    /// Numbered databases clients may SELECT, 1 to 255 [default: 16, as Redis]; the same on
    /// every node of a cluster.
    #[arg(long, env = "REPLIKV_DATABASES", value_name = "N")]
    pub databases: Option<u32>,
    /// What a read that finds a record damaged on disk does: `repair` keeps the node up,
    /// refuses that key with a DAMAGED error and repairs it from a healthy replica; `stop`
    /// stops the node [default: repair].
    #[arg(long, env = "REPLIKV_CORRUPTION", value_name = "repair|stop")]
    pub corruption: Option<replikv_core::kv::Corruption>,
    /// Seconds a RESP client may stay idle (nothing sent) before the node closes its
    /// connection; 0 never closes one [default: 0, as Redis's `timeout`].
    #[arg(long, env = "REPLIKV_IDLE_TIMEOUT_S", value_name = "SECONDS")]
    pub idle_timeout_s: Option<u64>,
    /// Test only: the n-th flush fails as a failing fsync would (see `faults`).
    #[arg(long, hide = true, value_name = "N")]
    pub test_fail_fsync_after: Option<u64>,
    /// Test only: peer links obey a fault table driven by `/api/v1/test/faults` (see `faults`).
    // Boolish, so that the variable takes 1/0, yes/no, on/off as well as true/false.
    #[arg(long, hide = true, env = "REPLIKV_TEST_FAULTS", value_parser = clap::builder::BoolishValueParser::new())]
    pub test_faults: bool,
}

/// The configuration file: the same settings as the flags, all optional, and a cluster's.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    cluster: Option<String>,
    replication: Option<ReplicationConfig>,
    conflicts: Option<Vec<ConflictRule>>,
    nodes: Option<Vec<ClusterNode>>,
    id: Option<String>,
    data_dir: Option<PathBuf>,
    resp_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    engine: Option<EngineKind>,
    fsync: Option<String>,
    segment_bytes_max: Option<u64>,
    value_cache_bytes_max: Option<u64>,
    connections_max: Option<usize>,
    bulk_bytes_max: Option<usize>,
    multibulk_len_max: Option<usize>,
    query_buffer_bytes_max: Option<usize>,
    query_buffer_total_bytes_max: Option<usize>,
    http_connections_max: Option<usize>,
    http_header_timeout_ms: Option<u64>,
    http_body_timeout_ms: Option<u64>,
    batch_requests_max: Option<usize>,
    tick_ms: Option<u64>,
    databases: Option<u32>,
    idle_timeout_s: Option<u64>,
    corruption: Option<replikv_core::kv::Corruption>,
}

/// The effective configuration of a node.
#[derive(Clone, Debug, Serialize)]
pub struct NodeConfig {
    /// This node's name.
    pub id: String,
    /// Where the node keeps its data.
    pub data_dir: PathBuf,
    /// Address for Redis clients.
    pub resp_addr: SocketAddr,
    /// Address for HTTP.
    pub http_addr: SocketAddr,
    /// Storage engine.
    pub engine: EngineKind,
    /// When writes reach the disk.
    #[serde(serialize_with = "display")]
    pub fsync: FsyncPolicy,
    /// A log segment's size at most, in bytes.
    pub segment_bytes_max: u64,
    /// Bytes of values the log engine caches at most; 0 caches none.
    pub value_cache_bytes_max: u64,
    /// Client connections at most.
    pub connections_max: usize,
    /// A bulk string's length at most, in bytes.
    pub bulk_bytes_max: usize,
    /// Arguments in one request at most.
    pub multibulk_len_max: usize,
    /// Bytes of incomplete requests one connection may buffer.
    pub query_buffer_bytes_max: usize,
    /// Bytes of incomplete requests all clients together may buffer.
    pub query_buffer_total_bytes_max: usize,
    /// HTTP connections open at most.
    pub http_connections_max: usize,
    /// Milliseconds an HTTP client has to send a request's head.
    pub http_header_timeout_ms: u64,
    /// Milliseconds an HTTP client has to send a request's body once its head arrived.
    pub http_body_timeout_ms: u64,
    /// A batch takes no more calls once it holds this many requests.
    pub batch_requests_max: usize,
    /// Milliseconds between ticks.
    pub tick_ms: u64,
    /// Numbered databases clients may SELECT.
    pub databases: u32,
    /// What a read that finds a damaged record does.
    pub corruption: replikv_core::kv::Corruption,
    /// Seconds a RESP client may stay idle before its connection is closed; 0 never.
    pub idle_timeout_s: u64,
    /// The file the configuration came from, if any.
    pub config_file: Option<PathBuf>,
    /// Test only: the flush that fails, if any.
    pub test_fail_fsync_after: Option<u64>,
    /// Test only: whether peer links obey a fault table (`replikv fault`).
    pub test_faults: bool,
    /// The cluster this node belongs to, its peers and replication settings, if any.
    pub cluster: Option<ClusterConfig>,
}

fn display<T: std::fmt::Display, S: serde::Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

impl NodeConfig {
    /// Merges flags (and variables) over the file over the defaults, and checks the result.
    pub fn resolve(args: &NodeArgs) -> Result<NodeConfig> {
        let mut file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let fsync = match (&args.fsync, &file.fsync) {
            (Some(policy), _) => *policy,
            (None, Some(text)) => text.parse().map_err(|e| Error::Config(format!("fsync in config file: {e}")))?,
            (None, None) => FsyncPolicy::Always,
        };
        let id = args.id.clone().or(file.id.take()).unwrap_or_else(|| ID_DEFAULT.to_string());
        let cluster = resolve_cluster(args, &mut file)?;
        let (entry_resp, entry_http) = match &cluster {
            Some(cluster) => entry_addrs(cluster, &id, &file, args.config.as_deref())?,
            None => (None, None),
        };
        let data_dir = match (args.data_dir.clone().or(file.data_dir), &cluster) {
            (Some(dir), _) => dir,
            (None, Some(cluster)) => Path::new("data").join(&cluster.name).join(&id),
            (None, None) => Path::new("data").join(&id),
        };
        let config = NodeConfig {
            data_dir,
            resp_addr: args
                .resp_addr
                .or(file.resp_addr)
                .or(entry_resp)
                .unwrap_or_else(|| RESP_ADDR_DEFAULT.parse().unwrap()),
            http_addr: args
                .http_addr
                .or(file.http_addr)
                .or(entry_http)
                .unwrap_or_else(|| HTTP_ADDR_DEFAULT.parse().unwrap()),
            engine: args.engine.or(file.engine).unwrap_or(EngineKind::Log),
            fsync,
            segment_bytes_max: args.segment_bytes_max.or(file.segment_bytes_max).unwrap_or(SEGMENT_BYTES_MAX_DEFAULT),
            value_cache_bytes_max: args
                .value_cache_bytes_max
                .or(file.value_cache_bytes_max)
                .unwrap_or(VALUE_CACHE_BYTES_MAX_DEFAULT),
            connections_max: args.connections_max.or(file.connections_max).unwrap_or(CONNECTIONS_MAX_DEFAULT),
            bulk_bytes_max: args
                .bulk_bytes_max
                .or(file.bulk_bytes_max)
                .unwrap_or(crate::resp::frame::BULK_BYTES_MAX_DEFAULT),
            multibulk_len_max: args
                .multibulk_len_max
                .or(file.multibulk_len_max)
                .unwrap_or(crate::resp::frame::MULTIBULK_LEN_MAX_DEFAULT),
            query_buffer_bytes_max: args
                .query_buffer_bytes_max
                .or(file.query_buffer_bytes_max)
                .unwrap_or(QUERY_BUFFER_BYTES_MAX_DEFAULT),
            query_buffer_total_bytes_max: args
                .query_buffer_total_bytes_max
                .or(file.query_buffer_total_bytes_max)
                .unwrap_or(QUERY_BUFFER_TOTAL_BYTES_MAX_DEFAULT),
            http_connections_max: args
                .http_connections_max
                .or(file.http_connections_max)
                .unwrap_or(HTTP_CONNECTIONS_MAX_DEFAULT),
            http_header_timeout_ms: args
                .http_header_timeout_ms
                .or(file.http_header_timeout_ms)
                .unwrap_or(HTTP_HEADER_TIMEOUT_MS_DEFAULT),
            http_body_timeout_ms: args
                .http_body_timeout_ms
                .or(file.http_body_timeout_ms)
                .unwrap_or(HTTP_BODY_TIMEOUT_MS_DEFAULT),
            batch_requests_max: args
                .batch_requests_max
                .or(file.batch_requests_max)
                .unwrap_or(BATCH_REQUESTS_MAX_DEFAULT),
            tick_ms: args.tick_ms.or(file.tick_ms).unwrap_or(TICK_MS_DEFAULT),
            databases: args.databases.or(file.databases).unwrap_or(replikv_core::kv::DATABASES_DEFAULT),
            corruption: args.corruption.or(file.corruption).unwrap_or_default(),
            idle_timeout_s: args.idle_timeout_s.or(file.idle_timeout_s).unwrap_or(0),
            config_file: args.config.clone(),
            test_fail_fsync_after: args.test_fail_fsync_after,
            test_faults: args.test_faults,
            cluster,
            id,
        };
        config.check()?;
        Ok(config)
    }

    /// Refuses settings that cannot work, naming the setting (`CONFIG SET` checks its
    /// changes with it too).
    pub(crate) fn check(&self) -> Result<()> {
        if !valid_name(&self.id) {
            return Err(Error::Config(format!("id {:?}: {NAME_RULE}", self.id)));
        }
        let positive = [
            ("segment_bytes_max", self.segment_bytes_max as usize),
            ("connections_max", self.connections_max),
            ("bulk_bytes_max", self.bulk_bytes_max),
            ("multibulk_len_max", self.multibulk_len_max),
            ("query_buffer_bytes_max", self.query_buffer_bytes_max),
            ("query_buffer_total_bytes_max", self.query_buffer_total_bytes_max),
            ("http_connections_max", self.http_connections_max),
            ("batch_requests_max", self.batch_requests_max),
            ("tick_ms", self.tick_ms as usize),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::Config(format!("{name} must be greater than 0")));
        }
        let physical = self
            .cluster
            .as_ref()
            .is_some_and(|c| c.replication.log_format == replikv_core::replication::LogFormat::Physical);
        if physical && self.engine == EngineKind::Memory {
            return Err(Error::Config(
                "replication.log_format = \"physical\" ships the log engine's segment bytes, and this node's engine \
                 is \"memory\", which has none: use engine = \"log\", or another log format"
                    .into(),
            ));
        }
        for (name, ms) in [
            ("http_header_timeout_ms", self.http_header_timeout_ms),
            ("http_body_timeout_ms", self.http_body_timeout_ms),
        ] {
            if !(1..=HTTP_TIMEOUT_MS_MAX).contains(&ms) {
                return Err(Error::Config(format!("{name} must be between 1 and {HTTP_TIMEOUT_MS_MAX} (now {ms})")));
            }
        }
        if self.idle_timeout_s > IDLE_TIMEOUT_S_MAX {
            return Err(Error::Config(format!(
                "idle_timeout_s {} is over {IDLE_TIMEOUT_S_MAX} (0 never closes an idle client)",
                self.idle_timeout_s
            )));
        }
        if !(1..=replikv_core::kv::DATABASES_MAX).contains(&self.databases) {
            return Err(Error::Config(format!(
                "databases {} outside 1..={}",
                self.databases,
                replikv_core::kv::DATABASES_MAX
            )));
        }
        if self.bulk_bytes_max > replikv_core::storage::VALUE_BYTES_MAX {
            return Err(Error::Config(format!(
                "bulk_bytes_max {} is over the engine's value limit of {} bytes",
                self.bulk_bytes_max,
                replikv_core::storage::VALUE_BYTES_MAX
            )));
        }
        Ok(())
    }

    /// The settings as (name, value) pairs for `CONFIG GET`, with the Redis names tools ask
    /// for (`save`, `appendonly`, `appendfsync`, `maxclients`, ...) beside replikv's own; a
    /// cluster node's replication settings also by their own names (`acks`, `ack_timeout_ms`).
    pub fn pairs(&self) -> Vec<(String, String)> {
        let appendfsync = match self.fsync {
            FsyncPolicy::Always => "always",
            FsyncPolicy::IntervalMs(_) => "everysec",
            FsyncPolicy::Never => "no",
        };
        let durable = self.engine == EngineKind::Log;
        let redis_names = [
            ("save", String::new()),
            ("appendonly", if durable { "yes" } else { "no" }.to_string()),
            ("appendfsync", appendfsync.to_string()),
            ("maxclients", self.connections_max.to_string()),
            ("proto-max-bulk-len", self.bulk_bytes_max.to_string()),
            ("client-query-buffer-limit", self.query_buffer_bytes_max.to_string()),
            ("timeout", self.idle_timeout_s.to_string()),
            ("port", self.resp_addr.port().to_string()),
            ("bind", self.resp_addr.ip().to_string()),
            ("dir", self.data_dir.display().to_string()),
        ];
        let mut pairs: Vec<(String, String)> = redis_names.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let ours = serde_json::to_value(self).expect("config serializes");
        for (name, value) in ours.as_object().expect("config is an object") {
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            pairs.push((name.clone(), text));
        }
        if let Some(cluster) = &self.cluster {
            let replication = serde_json::to_value(&cluster.replication).expect("replication serializes");
            for (name, value) in replication.as_object().expect("replication is an object") {
                let text = value.as_str().map_or_else(|| value.to_string(), str::to_string);
                pairs.push((name.clone(), text));
            }
        }
        pairs
    }
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("reading config file {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| Error::Config(format!("config file {}: {e}", path.display())))
}

/// What a valid id, cluster id or datacenter looks like, for error messages.
pub const NAME_RULE: &str = "use 1 to 64 letters, digits, '-' or '_'";

/// Whether `name` is a valid node id, cluster id or datacenter (see [`NAME_RULE`]).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_BYTES_MAX
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Takes the cluster settings out of `file` (the cluster id may come from `--cluster` instead)
/// and checks them; `None` when neither names a cluster.
fn resolve_cluster(args: &NodeArgs, file: &mut FileConfig) -> Result<Option<ClusterConfig>> {
    let name = args.cluster.clone().or(file.cluster.take());
    let (replication, nodes, conflicts) = (file.replication.take(), file.nodes.take(), file.conflicts.take());
    let in_file = |e: Error| match (&args.config, e) {
        (Some(path), Error::Config(why)) => Error::Config(format!("config file {}: {why}", path.display())),
        (_, other) => other,
    };
    let Some(name) = name else {
        if replication.is_some() || nodes.is_some() || conflicts.is_some() {
            let why = "[replication], [[conflicts]] and [[nodes]] need the cluster's id: add cluster = \"NAME\"";
            return Err(in_file(Error::Config(why.to_string())));
        }
        return Ok(None);
    };
    let cluster = ClusterConfig {
        name,
        replication: replication.unwrap_or_default(),
        conflicts: conflicts.unwrap_or_default(),
        nodes: nodes.unwrap_or_default(),
    };
    cluster.check().map_err(in_file)?;
    Ok(Some(cluster))
}

/// The RESP and HTTP addresses of node `id`'s `[[nodes]]` entry, or `None`s when the cluster
/// lists no nodes. Refuses an id that is not listed, and top-level addresses in a file that
/// lists nodes (the same file serves every node, so one address cannot fit them all).
fn entry_addrs(
    cluster: &ClusterConfig,
    id: &str,
    file: &FileConfig,
    path: Option<&Path>,
) -> Result<(Option<SocketAddr>, Option<SocketAddr>)> {
    if cluster.nodes.is_empty() {
        return Ok((None, None));
    }
    let file_name = path.map(|p| p.display().to_string()).unwrap_or_default();
    let Some(entry) = cluster.node(id) else {
        let ids: Vec<&str> = cluster.nodes.iter().map(|n| n.id.as_str()).collect();
        return Err(Error::Config(format!(
            "id {id:?} is not one of the [[nodes]] in config file {file_name}: use --id with one of {}",
            ids.join(", ")
        )));
    };
    for (name, value) in [("resp_addr", file.resp_addr), ("http_addr", file.http_addr)] {
        if value.is_some() {
            return Err(Error::Config(format!(
                "config file {file_name}: {name} at the top level conflicts with [[nodes]]: \
                 give each node's address in its entry (or use --{} for one node)",
                name.replace('_', "-")
            )));
        }
    }
    Ok((Some(entry.resp_addr), Some(entry.http_addr)))
}

/// How a cluster replicates: the `[replication]` table of a cluster file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// The replication strategy.
    pub mode: ReplicationMode,
    /// When a write is acknowledged to the client.
    pub acks: Acks,
    /// Milliseconds a write may wait for its acknowledgements before it fails.
    pub ack_timeout_ms: u64,
    /// Whether followers forward writes to the leader instead of refusing them.
    pub forward_writes: bool,
    /// Milliseconds between the leader's heartbeats to each follower.
    pub heartbeat_ms: u64,
    /// Whether followers elect a new leader when theirs is gone, and a leader cut off from a
    /// majority steps down; off, only an operator's FAILOVER moves the leader.
    pub auto_failover: bool,
    /// Milliseconds without a leader's message before a follower stands (each wait drawn from
    /// this to twice this); also how long a leader leads without hearing from a majority.
    pub election_timeout_ms: u64,
    /// Whether the leader answers reads under a lease (no read-index round trip each), which
    /// assumes clocks drift by at most `read_lease_drift_ppm` (see the leader's essay,
    /// "Leases", for a voter's restart).
    pub read_lease: bool,
    /// The clock-drift allowance the lease assumes, in parts per million: every node's clock
    /// advances at a rate within this of real time (the lease lasts
    /// `election_timeout_ms * (1 - d) / (1 + d)` from a round a majority confirmed).
    pub read_lease_drift_ppm: u64,
    /// Bytes of replication log each node keeps at most (older segments are deleted unless a
    /// follower still needs them); a follower further behind gets a snapshot.
    pub log_retain_bytes: u64,
    /// Bytes of replication log per segment file; retention deletes whole segments.
    pub log_segment_bytes: u64,
    /// Bytes of records no majority holds yet that a leader keeps past `log_retain_bytes`, so
    /// that a failover that cuts them finds them to save to the rollback log (in `async` and
    /// `semi-sync`, acknowledged writes among them); past it the oldest go, with a warning.
    pub log_unreplicated_bytes: u64,
    /// Single-leader: what the leader logs of a client's write: its effects (`logical`), the
    /// request itself (`statement`, executed again by every replica), or the request when it
    /// is deterministic (`mixed`). See `replikv_core::single_leader::statement`.
    pub log_format: replikv_core::replication::LogFormat,
    /// Leaderless: replicas per key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
    /// Leaderless: replicas a write waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub w: Option<usize>,
    /// Leaderless: replicas a read waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r: Option<usize>,
    /// Leaderless: what a GET of concurrent values returns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflicts: Option<ConflictsSetting>,
    /// Leaderless: whether a read waits for its repairs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_repair: Option<ReadRepairSetting>,
    /// Leaderless: milliseconds between the anti-entropy rounds a node starts (0: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anti_entropy_interval_ms: Option<u64>,
    /// Leaderless: which side of an anti-entropy round sends its states.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anti_entropy_style: Option<AntiEntropyStyleSetting>,
    /// Leaderless: milliseconds after a delete before its tombstone may be purged (and only
    /// once every replica of the key holds it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tombstone_grace_ms: Option<u64>,
    /// Leaderless: whether a write whose replica is down goes to a stand-in as a durable hint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hinted_handoff: Option<bool>,
    /// Leaderless: whether a hint counts toward w (then w + r > n no longer guarantees overlap).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sloppy_quorum: Option<bool>,
    /// Multi-leader: how concurrent writes of a key are resolved, unless a `[[conflicts]]`
    /// prefix says otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolve: Option<ResolveSetting>,
    /// Multi-leader: what `merge` joins concurrent values with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merge_separator: Option<String>,
    /// Multi-leader: milliseconds a change may be stamped ahead of the receiving leader's
    /// clock; one further ahead waits until the clock catches up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_clock_skew_ms: Option<u64>,
    /// The guarantee every session starts with (a connection changes its own with
    /// REPLIKV.GUARANTEE; leaderless: not consistent-prefix or all); see [`crate::sessions`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_guarantee: Option<crate::sessions::Guarantee>,
    /// Milliseconds a replica behind a session's position waits for it before it refuses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_wait_ms: Option<u64>,
    /// How read-your-writes is kept: `wait` (a replica waits for the session's write) or
    /// `leader` (reads go to the leader for `read_your_writes_leader_ms` after a write).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_your_writes: Option<crate::sessions::ReadYourWrites>,
    /// With `read_your_writes = "leader"`: for how long after a write, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_your_writes_leader_ms: Option<u64>,
}

impl Default for ReplicationConfig {
    fn default() -> ReplicationConfig {
        ReplicationConfig {
            mode: ReplicationMode::SingleLeader,
            acks: Acks::Async,
            ack_timeout_ms: ACK_TIMEOUT_MS_DEFAULT,
            forward_writes: false,
            heartbeat_ms: HEARTBEAT_MS_DEFAULT,
            auto_failover: true,
            election_timeout_ms: ELECTION_TIMEOUT_MS_DEFAULT,
            read_lease: false,
            read_lease_drift_ppm: replikv_core::single_leader::READ_LEASE_DRIFT_PPM_DEFAULT,
            log_retain_bytes: LOG_RETAIN_BYTES_DEFAULT,
            log_segment_bytes: LOG_SEGMENT_BYTES_DEFAULT,
            log_unreplicated_bytes: replikv_core::replication::log::UNREPLICATED_BYTES_MAX_DEFAULT,
            log_format: replikv_core::replication::LogFormat::Logical,
            n: None,
            w: None,
            r: None,
            conflicts: None,
            read_repair: None,
            anti_entropy_interval_ms: None,
            anti_entropy_style: None,
            tombstone_grace_ms: None,
            hinted_handoff: None,
            sloppy_quorum: None,
            resolve: None,
            merge_separator: None,
            max_clock_skew_ms: None,
            session_guarantee: None,
            session_wait_ms: None,
            read_your_writes: None,
            read_your_writes_leader_ms: None,
        }
    }
}

impl ReplicationConfig {
    /// The session settings every connection of `cluster` starts with.
    pub fn session_settings(&self, cluster: &str) -> crate::sessions::SessionSettings {
        crate::sessions::SessionSettings {
            guarantee: self.session_guarantee.unwrap_or_default(),
            wait_ms: self.session_wait_ms.unwrap_or(crate::sessions::SESSION_WAIT_MS_DEFAULT),
            read_your_writes: self.read_your_writes.unwrap_or_default(),
            leader_ms: self.read_your_writes_leader_ms.unwrap_or(crate::sessions::READ_YOUR_WRITES_LEADER_MS_DEFAULT),
            cluster: crate::sessions::cluster_fingerprint(cluster),
        }
    }

    /// Milliseconds a follower waits for the reply to a forwarded write: the ack timeout plus
    /// [`FORWARD_TIMEOUT_SLACK_MS`], so that the leader's own wait ends first.
    pub fn forward_timeout_ms(&self) -> u64 {
        self.ack_timeout_ms + FORWARD_TIMEOUT_SLACK_MS
    }

    /// The leaderless quorums for a cluster of `nodes` nodes: the file's n, w and r, or
    /// their defaults (n = min(3, nodes), w = r = a majority of n); an error names the
    /// setting out of range.
    pub fn nwr(&self, nodes: usize) -> Result<replikv_core::quorum::Nwr> {
        let n = self.n.unwrap_or(nodes.clamp(1, 3));
        if n > nodes {
            return Err(Error::Config(format!(
                "replication.n = {n}: a key cannot have more replicas than [[nodes]] lists ({nodes})"
            )));
        }
        let w = self.w.unwrap_or(majority(n.max(1)));
        let r = self.r.unwrap_or(majority(n.max(1)));
        replikv_core::quorum::Nwr::new(n, w, r).map_err(|why| Error::Config(format!("replication: {why}")))
    }

    /// Refuses settings that cannot work in a cluster of `nodes` nodes, naming the setting.
    pub fn check(&self, nodes: usize) -> Result<()> {
        if self.mode == ReplicationMode::Leaderless {
            self.nwr(nodes)?;
            // The single-leader settings have defaults, so only a value other than the
            // default shows that the file set one.
            let d = ReplicationConfig::default();
            let single_leader = [
                ("acks", self.acks != d.acks),
                ("forward_writes", self.forward_writes != d.forward_writes),
                ("heartbeat_ms", self.heartbeat_ms != d.heartbeat_ms),
                ("auto_failover", self.auto_failover != d.auto_failover),
                ("election_timeout_ms", self.election_timeout_ms != d.election_timeout_ms),
                ("read_lease", self.read_lease != d.read_lease),
                ("read_lease_drift_ppm", self.read_lease_drift_ppm != d.read_lease_drift_ppm),
                ("log_retain_bytes", self.log_retain_bytes != d.log_retain_bytes),
                ("log_segment_bytes", self.log_segment_bytes != d.log_segment_bytes),
                ("log_unreplicated_bytes", self.log_unreplicated_bytes != d.log_unreplicated_bytes),
                ("read_your_writes", self.read_your_writes.is_some()),
                ("read_your_writes_leader_ms", self.read_your_writes_leader_ms.is_some()),
            ];
            if let Some((setting, _)) = single_leader.iter().find(|(_, set)| *set) {
                return Err(Error::Config(format!(
                    "replication.{setting} is a setting of mode = \"single-leader\", and this cluster's mode is \"leaderless\""
                )));
            }
            if let Some(why) = self.session_guarantee.and_then(|g| g.leaderless_refusal()) {
                return Err(Error::Config(format!("replication.session_guarantee: {why}")));
            }
            self.check_anti_entropy()?;
        } else {
            let leaderless = [
                ("n", self.n.is_some()),
                ("w", self.w.is_some()),
                ("r", self.r.is_some()),
                ("conflicts", self.conflicts.is_some()),
                ("read_repair", self.read_repair.is_some()),
                ("anti_entropy_interval_ms", self.anti_entropy_interval_ms.is_some()),
                ("anti_entropy_style", self.anti_entropy_style.is_some()),
                ("tombstone_grace_ms", self.tombstone_grace_ms.is_some()),
                ("hinted_handoff", self.hinted_handoff.is_some()),
                ("sloppy_quorum", self.sloppy_quorum.is_some()),
            ];
            if let Some((setting, _)) = leaderless.iter().find(|(_, set)| *set) {
                return Err(Error::Config(format!(
                    "replication.{setting} is a setting of mode = \"leaderless\", and this cluster's mode is \"{}\"",
                    self.mode
                )));
            }
        }
        if self.mode != ReplicationMode::SingleLeader
            && self.log_format != replikv_core::replication::LogFormat::Logical
        {
            return Err(Error::Config(format!(
                "replication.log_format = \"{}\" is a setting of mode = \"single-leader\", and this cluster's mode is \
                 \"{}\" (its replicas exchange their writes' effects)",
                self.log_format.name(),
                self.mode
            )));
        }
        if self.mode != ReplicationMode::MultiLeader {
            let multi_leader = [
                ("resolve", self.resolve.is_some()),
                ("merge_separator", self.merge_separator.is_some()),
                ("max_clock_skew_ms", self.max_clock_skew_ms.is_some()),
            ];
            if let Some((setting, _)) = multi_leader.iter().find(|(_, set)| *set) {
                return Err(Error::Config(format!(
                    "replication.{setting} is a setting of mode = \"multi-leader\", and this cluster's mode is \"{}\"",
                    self.mode
                )));
            }
        }
        for (setting, value, max) in [
            ("session_wait_ms", self.session_wait_ms, crate::sessions::SESSION_WAIT_MS_MAX),
            (
                "read_your_writes_leader_ms",
                self.read_your_writes_leader_ms,
                crate::sessions::READ_YOUR_WRITES_LEADER_MS_MAX,
            ),
        ] {
            if let Some(ms) = value.filter(|ms| *ms > max) {
                return Err(Error::Config(format!("replication.{setting} must be at most {max} (now {ms})")));
            }
        }
        if let Some(ms) = self.max_clock_skew_ms.filter(|ms| *ms > MAX_CLOCK_SKEW_MS_MAX) {
            return Err(Error::Config(format!(
                "replication.max_clock_skew_ms must be at most {MAX_CLOCK_SKEW_MS_MAX} (now {ms})"
            )));
        }
        if !(1..=ACK_TIMEOUT_MS_MAX).contains(&self.ack_timeout_ms) {
            return Err(Error::Config(format!(
                "replication.ack_timeout_ms must be between 1 and {ACK_TIMEOUT_MS_MAX} (now {})",
                self.ack_timeout_ms
            )));
        }
        if !(1..=60_000).contains(&self.heartbeat_ms) {
            return Err(Error::Config("replication.heartbeat_ms must be between 1 and 60000".into()));
        }
        if self.election_timeout_ms < 3 * self.heartbeat_ms || self.election_timeout_ms > 600_000 {
            return Err(Error::Config(format!(
                "replication.election_timeout_ms must be at least three heartbeats (3 x heartbeat_ms = {}) and at \
                 most 600000, so that a live leader is not deposed between two heartbeats (now {})",
                3 * self.heartbeat_ms,
                self.election_timeout_ms
            )));
        }
        let drift = replikv_core::single_leader::READ_LEASE_DRIFT_PPM_MIN
            ..=replikv_core::single_leader::READ_LEASE_DRIFT_PPM_MAX;
        if !drift.contains(&self.read_lease_drift_ppm) {
            return Err(Error::Config(format!(
                "replication.read_lease_drift_ppm must be between {} (a quartz clock's worst) and {} (20%) (now {})",
                drift.start(),
                drift.end(),
                self.read_lease_drift_ppm
            )));
        }
        if self.log_segment_bytes < LOG_BYTES_MIN || self.log_retain_bytes < self.log_segment_bytes {
            return Err(Error::Config(format!(
                "replication.log_segment_bytes must be at least {LOG_BYTES_MIN}, and log_retain_bytes at least \
                 log_segment_bytes (now {} and {})",
                self.log_segment_bytes, self.log_retain_bytes
            )));
        }
        if let Acks::SemiSync(k) = self.acks {
            if nodes < 2 {
                return Err(Error::Config(format!(
                    "replication.acks = \"{}\" needs a leader and K followers, but [[nodes]] lists {nodes} node(s)",
                    self.acks
                )));
            }
            if !(1..nodes).contains(&k) {
                return Err(Error::Config(format!(
                    "replication.acks = \"{}\": K counts followers, so with {nodes} nodes it must be between 1 and {}",
                    self.acks,
                    nodes - 1
                )));
            }
        }
        Ok(())
    }
}

impl ReplicationConfig {
    /// Refuses leaderless anti-entropy and handoff settings that cannot work, naming them.
    fn check_anti_entropy(&self) -> Result<()> {
        if let Some(ms) = self.anti_entropy_interval_ms.filter(|ms| *ms > ANTI_ENTROPY_INTERVAL_MS_MAX) {
            return Err(Error::Config(format!(
                "replication.anti_entropy_interval_ms must be at most {ANTI_ENTROPY_INTERVAL_MS_MAX} (now {ms}; 0 starts \
                 no rounds)"
            )));
        }
        if let Some(ms) = self.tombstone_grace_ms.filter(|ms| *ms > TOMBSTONE_GRACE_MS_MAX) {
            return Err(Error::Config(format!(
                "replication.tombstone_grace_ms must be at most {TOMBSTONE_GRACE_MS_MAX} (365 days; now {ms})"
            )));
        }
        if self.sloppy_quorum == Some(true) && self.hinted_handoff != Some(true) {
            return Err(Error::Config(
                "replication.sloppy_quorum = true counts hints toward w, so it needs replication.hinted_handoff = true \
                 (now hinted_handoff is off)"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// The longest anti-entropy interval the cluster file may set, in milliseconds (one day).
pub const ANTI_ENTROPY_INTERVAL_MS_MAX: u64 = 24 * 3600 * 1000;

/// The longest tombstone grace period the cluster file may set, in milliseconds (365 days).
pub const TOMBSTONE_GRACE_MS_MAX: u64 = 365 * 24 * 3600 * 1000;

/// Leaderless `anti_entropy_style`: which side of a round sends its states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AntiEntropyStyleSetting {
    /// The node that starts the round sends what its peer lacks.
    Push,
    /// The peer sends what the node that starts the round lacks.
    Pull,
    /// Both.
    PushPull,
}

impl AntiEntropyStyleSetting {
    /// The core's style.
    pub fn core(self) -> replikv_core::leaderless::anti_entropy::Style {
        use replikv_core::leaderless::anti_entropy::Style;
        match self {
            AntiEntropyStyleSetting::Push => Style::Push,
            AntiEntropyStyleSetting::Pull => Style::Pull,
            AntiEntropyStyleSetting::PushPull => Style::PushPull,
        }
    }
}

/// A replication strategy (DESIGN §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicationMode {
    /// One leader takes the writes and ships its log to followers, which serve reads.
    SingleLeader,
    /// Every replica takes writes; quorums of n, w and r.
    Leaderless,
    /// A leader per datacenter, each with followers, exchanging changes asynchronously.
    MultiLeader,
}

impl ReplicationMode {
    /// The core's name for this mode (the peer handshake carries it).
    pub fn core(self) -> replikv_core::node::Mode {
        match self {
            ReplicationMode::SingleLeader => replikv_core::node::Mode::SingleLeader,
            ReplicationMode::Leaderless => replikv_core::node::Mode::Leaderless,
            ReplicationMode::MultiLeader => replikv_core::node::Mode::MultiLeader,
        }
    }
}

/// Leaderless `conflicts`: what a GET of a key with concurrent values returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictsSetting {
    /// The value of the highest version.
    Lww,
    /// An error naming how many; REPLIKV.SIBLINGS lists them.
    Siblings,
}

/// Multi-leader `resolve`: how concurrent writes of a key are resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResolveSetting {
    /// The highest version wins; the losers go to the conflict log.
    Lww,
    /// The concurrent values, sorted and joined by `merge_separator`.
    Merge,
    /// Every concurrent value kept as a sibling, for the application.
    App,
}

impl ResolveSetting {
    /// The core's resolution.
    pub fn core(self) -> replikv_core::multi_leader::Resolve {
        use replikv_core::multi_leader::Resolve;
        match self {
            ResolveSetting::Lww => Resolve::Lww,
            ResolveSetting::Merge => Resolve::Merge,
            ResolveSetting::App => Resolve::App,
        }
    }
}

/// A `[[conflicts]]` entry: keys starting with `prefix` are resolved by `resolve`
/// (multi-leader; the longest matching prefix wins).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConflictRule {
    /// The key prefix.
    pub prefix: String,
    /// How its keys' conflicts are resolved.
    pub resolve: ResolveSetting,
}

/// Leaderless `read_repair`: whether a read waits for its repairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadRepairSetting {
    /// The answer goes first; repairs follow.
    Async,
    /// The answer waits until w replicas hold it.
    Blocking,
}

impl FromStr for ReplicationMode {
    type Err = String;

    fn from_str(s: &str) -> Result<ReplicationMode, String> {
        let valid = MODES_VALID.join(", ");
        match s {
            "single-leader" => Ok(ReplicationMode::SingleLeader),
            "leaderless" => Ok(ReplicationMode::Leaderless),
            "multi-leader" => Ok(ReplicationMode::MultiLeader),
            _ => Err(format!("unknown replication mode {s:?}: valid modes are {valid}")),
        }
    }
}

impl fmt::Display for ReplicationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplicationMode::SingleLeader => f.write_str("single-leader"),
            ReplicationMode::Leaderless => f.write_str("leaderless"),
            ReplicationMode::MultiLeader => f.write_str("multi-leader"),
        }
    }
}

/// When a leader acknowledges a write (DESIGN §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// Once every follower has it durable.
    Sync,
    /// Once this many followers have it durable (`semi-sync:K`; `semi-sync` alone is K = 1).
    SemiSync(usize),
    /// Once the leader has it durable.
    Async,
}

impl Acks {
    /// How many nodes hold a write durably when it is acknowledged, in a cluster of `nodes`.
    pub fn copies(self, nodes: usize) -> usize {
        match self {
            Acks::Sync => nodes,
            Acks::SemiSync(k) => k + 1,
            Acks::Async => 1,
        }
    }
}

impl FromStr for Acks {
    type Err = String;

    fn from_str(s: &str) -> Result<Acks, String> {
        match s {
            "sync" => Ok(Acks::Sync),
            "async" => Ok(Acks::Async),
            "semi-sync" => Ok(Acks::SemiSync(1)),
            _ => match s.strip_prefix("semi-sync:") {
                Some(k) => k
                    .parse()
                    .ok()
                    .filter(|k| *k >= 1)
                    .map(Acks::SemiSync)
                    .ok_or_else(|| format!("acks {s:?}: K in semi-sync:K is a number of followers, at least 1")),
                None => Err(format!("unknown acks {s:?}: use sync, semi-sync:K or async")),
            },
        }
    }
}

impl fmt::Display for Acks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Acks::Sync => f.write_str("sync"),
            Acks::SemiSync(k) => write!(f, "semi-sync:{k}"),
            Acks::Async => f.write_str("async"),
        }
    }
}

/// Serializes and deserializes a type through its `Display` and `FromStr`, so files and JSON
/// show `"semi-sync:2"` rather than a tagged enum.
macro_rules! serde_as_text {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_as_text!(ReplicationMode);
serde_as_text!(Acks);

/// One node of a cluster: a `[[nodes]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterNode {
    /// The node's id, as given to `--id`.
    pub id: String,
    /// Where the node listens for its peers.
    pub peer_addr: SocketAddr,
    /// Where the node listens for Redis clients.
    pub resp_addr: SocketAddr,
    /// Where the node listens for HTTP.
    pub http_addr: SocketAddr,
    /// The datacenter the node is in, if the file says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<String>,
}

/// A cluster: its id, how it replicates, and its nodes, as every node's file describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterConfig {
    /// The cluster's id (`cluster = "..."`); peers from another cluster will be refused.
    pub name: String,
    /// How the cluster replicates.
    pub replication: ReplicationConfig,
    /// Multi-leader: conflict resolutions by key prefix (`[[conflicts]]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<ConflictRule>,
    /// The nodes, in the file's order; empty when the file names a cluster but lists none.
    pub nodes: Vec<ClusterNode>,
}

/// A cluster file as written: the cluster id first, then its tables.
#[derive(Serialize)]
struct ClusterFile<'a> {
    cluster: &'a str,
    replication: &'a ReplicationConfig,
    #[serde(skip_serializing_if = "<[ConflictRule]>::is_empty")]
    conflicts: &'a [ConflictRule],
    nodes: &'a [ClusterNode],
}

impl ClusterConfig {
    /// Reads the cluster a configuration file describes (its other settings are ignored) and
    /// checks it.
    pub fn read(path: &Path) -> Result<ClusterConfig> {
        let mut file = read_file(path)?;
        let args = NodeArgs { config: Some(path.to_path_buf()), ..NodeArgs::default() };
        resolve_cluster(&args, &mut file)?
            .ok_or_else(|| Error::Config(format!("config file {}: no cluster = \"NAME\" in it", path.display())))
    }

    /// The configuration file text for this cluster, which [`ClusterConfig::read`] reads back.
    pub fn to_toml(&self) -> String {
        let file = ClusterFile {
            cluster: &self.name,
            replication: &self.replication,
            conflicts: &self.conflicts,
            nodes: &self.nodes,
        };
        toml::to_string(&file).expect("a cluster serializes to TOML")
    }

    /// The `[[nodes]]` entry with this id.
    pub fn node(&self, id: &str) -> Option<&ClusterNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Refuses a cluster that cannot work, naming the setting: a bad id, too many nodes, a
    /// duplicate id or address, replication settings that do not fit the node count.
    pub fn check(&self) -> Result<()> {
        if !valid_name(&self.name) {
            return Err(Error::Config(format!("cluster {:?}: {NAME_RULE}", self.name)));
        }
        if self.nodes.len() > NODES_MAX {
            return Err(Error::Config(format!("[[nodes]] lists {} nodes, more than {NODES_MAX}", self.nodes.len())));
        }
        self.check_nodes()?;
        if self.replication.mode != ReplicationMode::MultiLeader {
            if !self.conflicts.is_empty() {
                return Err(Error::Config(format!(
                    "[[conflicts]] is a setting of mode = \"multi-leader\", and this cluster's mode is \"{}\"",
                    self.replication.mode
                )));
            }
            return self.replication.check(self.nodes.len());
        }
        self.check_datacenters()
    }

    /// A multi-leader cluster's datacenters, in the order their first node is listed, each
    /// with its nodes in the file's order (the first leads it when the cluster first starts).
    pub fn datacenters(&self) -> Vec<(String, Vec<&ClusterNode>)> {
        let mut out: Vec<(String, Vec<&ClusterNode>)> = Vec::new();
        for node in &self.nodes {
            let dc = node.datacenter.clone().unwrap_or_default();
            match out.iter_mut().find(|(name, _)| *name == dc) {
                Some((_, nodes)) => nodes.push(node),
                None => out.push((dc, vec![node])),
            }
        }
        out
    }

    /// The conflict rules of a multi-leader cluster: `resolve`, `merge_separator` and every
    /// `[[conflicts]]` prefix; an error names a bad one.
    pub fn rules(&self) -> Result<replikv_core::multi_leader::Rules> {
        let r = &self.replication;
        let mut rules =
            replikv_core::multi_leader::Rules::new(r.resolve.map_or(Default::default(), ResolveSetting::core));
        if let Some(separator) = &r.merge_separator {
            rules
                .set_separator(separator.as_bytes())
                .map_err(|e| Error::Config(format!("replication.merge_separator: {e}")))?;
        }
        for rule in &self.conflicts {
            rules
                .add_prefix(rule.prefix.as_bytes(), rule.resolve.core())
                .map_err(|e| Error::Config(format!("[[conflicts]] prefix {:?}: {e}", rule.prefix)))?;
        }
        Ok(rules)
    }

    /// Refuses a multi-leader cluster that cannot work: a node without a datacenter, acks
    /// that a datacenter cannot meet, bad conflict rules.
    fn check_datacenters(&self) -> Result<()> {
        if let Some(node) = self.nodes.iter().find(|n| n.datacenter.is_none()) {
            return Err(Error::Config(format!(
                "[[nodes]] {}: mode = \"multi-leader\" needs every node's datacenter (datacenter = \"dc1\")",
                node.id
            )));
        }
        let datacenters = self.datacenters();
        let smallest = datacenters.iter().map(|(_, nodes)| nodes.len()).min().unwrap_or(1);
        // Every datacenter is a single-leader cluster: its acks must fit the smallest.
        let mut inside = self.replication.clone();
        inside.mode = ReplicationMode::SingleLeader;
        (inside.resolve, inside.merge_separator, inside.max_clock_skew_ms) = (None, None, None);
        self.replication.check(smallest).and(inside.check(smallest)).map_err(|e| match self.replication.acks {
            Acks::SemiSync(_) if datacenters.len() > 1 => Error::Config(format!(
                "{e} (in multi-leader mode, acks apply inside each datacenter; the smallest has {smallest})"
            )),
            _ => e,
        })?;
        self.rules().map(|_| ())
    }

    /// Refuses bad or duplicate ids and any address used twice, by any two nodes or settings.
    fn check_nodes(&self) -> Result<()> {
        let mut ids = BTreeSet::new();
        let mut addrs: BTreeMap<SocketAddr, String> = BTreeMap::new();
        for node in &self.nodes {
            if !valid_name(&node.id) {
                return Err(Error::Config(format!("[[nodes]] id {:?}: {NAME_RULE}", node.id)));
            }
            if let Some(dc) = node.datacenter.as_deref().filter(|dc| !valid_name(dc)) {
                return Err(Error::Config(format!("[[nodes]] {}: datacenter {dc:?}: {NAME_RULE}", node.id)));
            }
            if !ids.insert(node.id.as_str()) {
                return Err(Error::Config(format!("[[nodes]]: duplicate id {:?}: each node needs its own", node.id)));
            }
            for (setting, addr) in
                [("peer_addr", node.peer_addr), ("resp_addr", node.resp_addr), ("http_addr", node.http_addr)]
            {
                let user = format!("{}'s {setting}", node.id);
                if let Some(first) = addrs.insert(addr, user.clone()) {
                    return Err(Error::Config(format!("[[nodes]]: duplicate address {addr}: both {first} and {user}")));
                }
            }
        }
        Ok(())
    }

    /// What the replication settings do not promise that a reader may assume: one sentence
    /// per problem, for the node to log at start. Empty when acknowledged writes are on a
    /// majority, or when there is no follower to fail over to.
    pub fn durability_warnings(&self) -> Vec<String> {
        if self.replication.mode == ReplicationMode::MultiLeader {
            let mut warnings = Vec::new();
            for (name, nodes) in self.datacenters() {
                let (n, acks) = (nodes.len(), self.replication.acks);
                if n >= 2 && acks.copies(n) < majority(n) {
                    warnings.push(format!(
                        "datacenter {name}: acks = {acks} puts an acknowledged write on {} of its {n} nodes, not a \
                         majority, so a failover there can lose it, in this datacenter and (never shipped) everywhere",
                        acks.copies(n)
                    ));
                }
            }
            if self.datacenters().len() > 1 && self.replication.resolve.is_none_or(|r| r == ResolveSetting::Lww) {
                warnings.push(format!(
                    "resolve = lww: of two concurrent writes in different datacenters the one stamped later wins, and the \
                     other is kept only in the conflict log (clocks may differ by up to max_clock_skew_ms = {} ms)",
                    self.replication.max_clock_skew_ms.unwrap_or(MAX_CLOCK_SKEW_MS_DEFAULT)
                ));
            }
            return warnings;
        }
        let nodes = self.nodes.len();
        if self.replication.mode == ReplicationMode::Leaderless {
            let mut warnings = match self.replication.nwr(nodes) {
                Ok(nwr) if !nwr.overlaps() => vec![format!(
                    "n = {}, w = {}, r = {}: w + r <= n, so reads may miss the newest acknowledged write (a read \
                     quorum need not meet the write quorum)",
                    nwr.n, nwr.w, nwr.r
                )],
                _ => Vec::new(),
            };
            if self.replication.sloppy_quorum == Some(true) {
                warnings.push(
                    "sloppy_quorum = true: a hint held by a stand-in counts toward w, so w + r > n no longer guarantees \
                     overlap (a read quorum of the key's own replicas may miss an acknowledged write until its hints \
                     are delivered)"
                        .to_string(),
                );
            }
            return warnings;
        }
        let acks = self.replication.acks;
        let (copies, majority) = (acks.copies(nodes), majority(nodes));
        if nodes < 2 || copies >= majority {
            return Vec::new();
        }
        vec![match acks {
            Acks::Async => {
                "acks = async: a write is acknowledged once the leader has it, so acknowledged writes can be \
                            lost at failover"
                    .to_string()
            }
            _ => format!(
                "acks = {acks}: an acknowledged write is on {copies} of {nodes} nodes, not a majority ({majority}), so \
                 acknowledged writes may not survive a failover"
            ),
        }]
    }
}

/// The smallest majority of `nodes` nodes.
pub fn majority(nodes: usize) -> usize {
    replikv_core::quorum::majority(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let config = NodeConfig::resolve(&NodeArgs::default()).unwrap();
        assert_eq!(config.id, "n1");
        assert_eq!(config.data_dir, Path::new("data/n1"));
        assert_eq!(config.resp_addr.to_string(), RESP_ADDR_DEFAULT);
        assert_eq!(config.fsync, FsyncPolicy::Always);
    }

    #[test]
    fn flags_override_file_and_file_overrides_defaults() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "id = \"fromfile\"\ntick_ms = 7\nfsync = \"never\"\nresp_addr = \"127.0.0.1:9999\"").unwrap();
        let args = NodeArgs { config: Some(file.path().to_path_buf()), tick_ms: Some(3), ..NodeArgs::default() };
        let config = NodeConfig::resolve(&args).unwrap();
        assert_eq!(config.id, "fromfile", "file over default");
        assert_eq!(config.data_dir, Path::new("data/fromfile"), "data dir follows the id");
        assert_eq!(config.tick_ms, 3, "flag over file");
        assert_eq!(config.fsync, FsyncPolicy::Never);
        assert_eq!(config.resp_addr.port(), 9999);
    }

    #[test]
    fn unknown_key_and_bad_values_are_named() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "resp_adr = \"127.0.0.1:1\"").unwrap();
        let args = NodeArgs { config: Some(file.path().to_path_buf()), ..NodeArgs::default() };
        let err = format!("{:#}", NodeConfig::resolve(&args).unwrap_err());
        assert!(err.contains("resp_adr"), "{err}");
        let zero = NodeArgs { tick_ms: Some(0), ..NodeArgs::default() };
        let err = NodeConfig::resolve(&zero).unwrap_err().to_string();
        assert!(err.contains("tick_ms"), "{err}");
        let bad_id = NodeArgs { id: Some("a b".into()), ..NodeArgs::default() };
        assert!(NodeConfig::resolve(&bad_id).unwrap_err().to_string().contains("id"));
    }

    #[test]
    fn value_cache_bytes_max_comes_from_flag_file_or_default() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "value_cache_bytes_max = 4096").unwrap();
        let from_file = NodeArgs { config: Some(file.path().to_path_buf()), ..NodeArgs::default() };
        let from_flag = NodeArgs { value_cache_bytes_max: Some(0), ..from_file.clone() };
        let table = [
            (NodeArgs::default(), VALUE_CACHE_BYTES_MAX_DEFAULT),
            (from_file, 4096),
            (from_flag, 0), // 0 turns the cache off; it is not refused
        ];
        for (args, want) in table {
            assert_eq!(NodeConfig::resolve(&args).unwrap().value_cache_bytes_max, want, "{args:?}");
        }
        assert_eq!(VALUE_CACHE_BYTES_MAX_DEFAULT, 256 * 1024 * 1024);
    }

    #[test]
    fn client_limits_come_from_file_or_default_and_are_checked() {
        let text = "query_buffer_total_bytes_max = 5000\nhttp_connections_max = 7\nhttp_header_timeout_ms = 250\n\
                    http_body_timeout_ms = 750\n";
        let read = |c: &NodeConfig| {
            (c.query_buffer_total_bytes_max, c.http_connections_max, c.http_header_timeout_ms, c.http_body_timeout_ms)
        };
        assert_eq!(read(&resolve_with(text, NodeArgs::default()).unwrap()), (5000, 7, 250, 750));
        let defaults = NodeConfig::resolve(&NodeArgs::default()).unwrap();
        assert_eq!(read(&defaults), (1 << 30, 1024, 10_000, 60_000));
        let table = [
            ("http_connections_max = 0", "http_connections_max must be greater than 0"),
            ("query_buffer_total_bytes_max = 0", "query_buffer_total_bytes_max must be greater than 0"),
            ("http_header_timeout_ms = 0", "http_header_timeout_ms must be between 1 and 3600000 (now 0)"),
            ("http_body_timeout_ms = 3600001", "http_body_timeout_ms must be between 1 and 3600000"),
        ];
        for (text, want) in table {
            let err = resolve_with(text, NodeArgs::default()).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    /// The `replikv node` flags as clap sees them, to check names and variables.
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        node: NodeArgs,
    }

    /// The argument `id` of `replikv node`.
    /// A multi-leader cluster file of three nodes, n1 and n2 in dc1 and n3 in dc2, with `tail`
    /// (its `[[conflicts]]`) after its `[replication]`.
    fn datacenters(tail: &str) -> String {
        let mut text = format!("cluster = \"c\"\n[replication]\nmode = \"multi-leader\"\n{tail}\n");
        for (i, dc) in [(1, "dc1"), (2, "dc1"), (3, "dc2")] {
            text.push_str(&format!(
                "[[nodes]]\nid = \"n{i}\"\npeer_addr = \"127.0.0.1:{}\"\nresp_addr = \"127.0.0.1:{}\"\nhttp_addr = \"127.0.0.1:{}\"\ndatacenter = \"{dc}\"\n",
                7200 + i,
                7000 + i,
                7100 + i
            ));
        }
        text
    }

    #[test]
    fn a_multi_leader_file_gives_the_datacenters_rules_and_warnings() {
        let text = datacenters("[[conflicts]]\nprefix = \"users.\"\nresolve = \"merge\"").replace(
            "mode = \"multi-leader\"",
            "mode = \"multi-leader\"\nresolve = \"app\"\nmerge_separator = \" | \"",
        );
        let config = resolve_with(&text, id("n3")).unwrap();
        let cluster = config.cluster.unwrap();
        let dcs: Vec<(String, Vec<&str>)> = cluster
            .datacenters()
            .into_iter()
            .map(|(dc, nodes)| (dc, nodes.iter().map(|n| n.id.as_str()).collect()))
            .collect();
        assert_eq!(dcs, vec![("dc1".to_string(), vec!["n1", "n2"]), ("dc2".to_string(), vec!["n3"])]);
        let rules = cluster.rules().unwrap();
        use replikv_core::multi_leader::Resolve;
        assert_eq!((rules.for_key(b"users.1"), rules.for_key(b"other")), (Resolve::Merge, Resolve::App));
        assert_eq!(rules.separator(), b" | ");
        let warnings = cluster.durability_warnings();
        assert!(warnings.iter().any(|w| w.contains("datacenter dc1: acks = async")), "{warnings:?}");
        assert!(!warnings.iter().any(|w| w.contains("lww")), "resolve = app: {warnings:?}");
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(cluster.to_toml().as_bytes()).unwrap();
        let back = ClusterConfig::read(file.path()).unwrap();
        assert_eq!(back, cluster, "written as TOML and read back, [[conflicts]] included: {}", cluster.to_toml());
    }

    fn node_arg(id: &str) -> clap::Arg {
        let command = <Cli as clap::CommandFactory>::command();
        let arg = command.get_arguments().find(|a| a.get_id() == id).cloned();
        arg.unwrap_or_else(|| panic!("no setting {id}"))
    }

    #[test]
    fn value_cache_bytes_max_has_its_flag_and_variable() {
        let arg = node_arg("value_cache_bytes_max");
        assert_eq!(arg.get_long(), Some("value-cache-bytes-max"));
        assert_eq!(arg.get_env().and_then(|v| v.to_str()), Some("REPLIKV_VALUE_CACHE_BYTES_MAX"));
        let cli = <Cli as clap::Parser>::try_parse_from(["node", "--value-cache-bytes-max", "1234"]).unwrap();
        assert_eq!(cli.node.value_cache_bytes_max, Some(1234));
    }

    /// A cluster file: `head` (top-level keys and `[replication]`), then `nodes` entries with
    /// ports 7200+i (peer), 7000+i (RESP), 7100+i (HTTP).
    fn cluster_text(head: &str, nodes: usize) -> String {
        let mut text = format!("{head}\n");
        for i in 1..=nodes {
            text += &format!(
                "[[nodes]]\nid = \"n{i}\"\npeer_addr = \"127.0.0.1:{}\"\nresp_addr = \"127.0.0.1:{}\"\nhttp_addr = \"127.0.0.1:{}\"\n",
                7200 + i,
                7000 + i,
                7100 + i
            );
        }
        text
    }

    /// Resolves `args` with `text` as its config file.
    fn resolve_with(text: &str, args: NodeArgs) -> Result<NodeConfig> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        NodeConfig::resolve(&NodeArgs { config: Some(file.path().to_path_buf()), ..args })
    }

    fn id(id: &str) -> NodeArgs {
        NodeArgs { id: Some(id.to_string()), ..NodeArgs::default() }
    }

    #[test]
    fn acks_parse_and_display() {
        let table: &[(&str, Result<Acks, &str>)] = &[
            ("sync", Ok(Acks::Sync)),
            ("async", Ok(Acks::Async)),
            ("semi-sync", Ok(Acks::SemiSync(1))),
            ("semi-sync:1", Ok(Acks::SemiSync(1))),
            ("semi-sync:12", Ok(Acks::SemiSync(12))),
            ("semi-sync:0", Err("at least 1")),
            ("semi-sync:-1", Err("at least 1")),
            ("semi-sync:two", Err("at least 1")),
            ("semisync", Err("unknown acks")),
            ("SYNC", Err("unknown acks")),
            ("", Err("unknown acks")),
        ];
        for (text, want) in table {
            match (text.parse::<Acks>(), want) {
                (Ok(acks), Ok(want)) => {
                    assert_eq!(acks, *want, "{text}");
                    assert_eq!(acks.to_string().parse::<Acks>(), Ok(acks), "{text} round trip");
                }
                (Err(e), Err(want)) => assert!(e.contains(want), "{text}: {e}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
        assert_eq!(Acks::SemiSync(1).to_string(), "semi-sync:1");
    }

    #[test]
    fn modes_parse_and_name_the_valid_ones() {
        assert_eq!("single-leader".parse(), Ok(ReplicationMode::SingleLeader));
        assert_eq!(ReplicationMode::SingleLeader.to_string(), "single-leader");
        assert_eq!("leaderless".parse(), Ok(ReplicationMode::Leaderless));
        assert_eq!(ReplicationMode::Leaderless.to_string(), "leaderless");
        assert_eq!("multi-leader".parse(), Ok(ReplicationMode::MultiLeader));
        assert_eq!(ReplicationMode::MultiLeader.to_string(), "multi-leader");
        let err = "raft".parse::<ReplicationMode>().unwrap_err();
        assert!(
            err.contains("unknown") && err.contains("valid modes are single-leader, leaderless, multi-leader"),
            "{err}"
        );
    }

    #[test]
    fn a_cluster_file_gives_a_node_its_entry_and_peers() {
        let head = "cluster = \"demo\"\n[replication]\nmode = \"single-leader\"\nacks = \"semi-sync:1\"\n\
                    ack_timeout_ms = 250\nforward_writes = true\nread_lease = true\nread_lease_drift_ppm = 500";
        let config = resolve_with(&cluster_text(head, 3), id("n2")).unwrap();
        assert_eq!(config.resp_addr.to_string(), "127.0.0.1:7002");
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:7102");
        assert_eq!(config.data_dir, Path::new("data/demo/n2"));
        let cluster = config.cluster.expect("a cluster");
        assert_eq!(cluster.name, "demo");
        let replication = ReplicationConfig {
            mode: ReplicationMode::SingleLeader,
            acks: Acks::SemiSync(1),
            ack_timeout_ms: 250,
            forward_writes: true,
            read_lease: true,
            read_lease_drift_ppm: 500,
            ..ReplicationConfig::default()
        };
        assert_eq!(cluster.replication, replication);
        assert_eq!(cluster.nodes.len(), 3);
        assert_eq!(cluster.node("n3").unwrap().peer_addr.to_string(), "127.0.0.1:7203");
        assert_eq!(cluster.node("n3").unwrap().datacenter, None);
    }

    #[test]
    fn replication_settings_have_defaults() {
        let config = resolve_with(&cluster_text("cluster = \"c\"", 2), id("n1")).unwrap();
        assert_eq!(config.cluster.unwrap().replication, ReplicationConfig::default());
        let default = ReplicationConfig::default();
        assert_eq!((default.acks, default.ack_timeout_ms, default.forward_writes), (Acks::Async, 1000, false));
    }

    #[test]
    fn cluster_precedence_is_flags_then_env_then_file_then_defaults() {
        let text = cluster_text("cluster = \"demo\"", 2);
        let flag_addr: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        // (args, resp port, data dir, cluster name)
        let table = [
            (id("n1"), 7001, "data/demo/n1", "demo"),
            (NodeArgs { resp_addr: Some(flag_addr), ..id("n1") }, 9001, "data/demo/n1", "demo"),
            (NodeArgs { data_dir: Some("x".into()), ..id("n2") }, 7002, "x", "demo"),
            (NodeArgs { cluster: Some("other".into()), ..id("n2") }, 7002, "data/other/n2", "other"),
            (NodeArgs::default(), 7001, "data/demo/n1", "demo"), // the id defaults to n1, an entry
        ];
        for (args, port, dir, name) in table {
            let config = resolve_with(&text, args.clone()).unwrap();
            assert_eq!(config.resp_addr.port(), port, "{args:?}");
            assert_eq!(config.data_dir, Path::new(dir), "{args:?}");
            assert_eq!(config.cluster.unwrap().name, name, "{args:?}");
        }
        let from_flag = NodeConfig::resolve(&NodeArgs { cluster: Some("solo".into()), ..id("a") }).unwrap();
        assert_eq!(from_flag.data_dir, Path::new("data/solo/a"), "--cluster without a file");
        assert_eq!(from_flag.resp_addr.to_string(), RESP_ADDR_DEFAULT);
        assert!(from_flag.cluster.unwrap().nodes.is_empty());
    }

    #[test]
    fn the_cluster_flag_reads_its_variable() {
        let arg = node_arg("cluster");
        assert_eq!(arg.get_env().and_then(|v| v.to_str()), Some("REPLIKV_CLUSTER"));
    }

    #[test]
    fn bad_cluster_files_are_refused_naming_the_problem() {
        let three = |head: &str| cluster_text(head, 3);
        let dup_id = cluster_text("cluster = \"c\"", 2).replace("id = \"n2\"", "id = \"n1\"");
        let dup_addr = cluster_text("cluster = \"c\"", 2).replace("127.0.0.1:7002", "127.0.0.1:7101");
        let bad_dc = cluster_text("cluster = \"c\"", 1) + "datacenter = \"dc 1\"\n";
        let typo = cluster_text("cluster = \"c\"", 1) + "resp_adr = \"127.0.0.1:1\"\n";
        let table: Vec<(String, &str, &[&str])> = vec![
            (dup_id, "n1", &["duplicate id", "\"n1\""]),
            (dup_addr, "n1", &["duplicate address 127.0.0.1:7101", "n1's http_addr", "n2's resp_addr"]),
            (
                three("cluster = \"c\"\n[replication]\nacks = \"semi-sync:3\""),
                "n1",
                &["semi-sync:3", "between 1 and 2"],
            ),
            (
                cluster_text("cluster = \"c\"\n[replication]\nacks = \"semi-sync:1\"", 1),
                "n1",
                &["semi-sync:1", "K followers"],
            ),
            (three("cluster = \"c\"\n[replication]\nacks = \"most\""), "n1", &["unknown acks \"most\"", "acks"]),
            (
                three("cluster = \"c\"\n[replication]\nmode = \"multi-leader\""),
                "n1",
                &["[[nodes]] n1: mode = \"multi-leader\" needs every node's datacenter"],
            ),
            (
                three("cluster = \"c\"\n[replication]\nresolve = \"merge\""),
                "n1",
                &["replication.resolve is a setting of mode = \"multi-leader\""],
            ),
            (
                three("cluster = \"c\"\n[[conflicts]]\nprefix = \"users.\"\nresolve = \"merge\""),
                "n1",
                &["[[conflicts]] is a setting of mode = \"multi-leader\""],
            ),
            (
                datacenters("[[conflicts]]\nprefix = \"users.\"\nresolve = \"merge\"\n[[conflicts]]\nprefix = \"users.\"\nresolve = \"app\""),
                "n1",
                &["[[conflicts]] prefix \"users.\"", "given twice (merge and app)"],
            ),
            (
                datacenters("[[conflicts]]\nprefix = \"users.\"\nresolve = \"most\""),
                "n1",
                &["unknown variant `most`"],
            ),
            (
                datacenters("").replace("mode = \"multi-leader\"", "mode = \"multi-leader\"\nmerge_separator = \"\""),
                "n1",
                &["replication.merge_separator", "1 to 64"],
            ),
            (
                datacenters("").replace("mode = \"multi-leader\"", "mode = \"multi-leader\"\nmax_clock_skew_ms = 60001"),
                "n1",
                &["replication.max_clock_skew_ms must be at most 60000"],
            ),
            (
                datacenters("").replace("mode = \"multi-leader\"", "mode = \"multi-leader\"\nacks = \"semi-sync:2\""),
                "n1",
                &["semi-sync:2", "inside each datacenter; the smallest has 1"],
            ),
            (
                three("cluster = \"c\"\n[replication]\nmode = \"leaderless\"\nw = 4"),
                "n1",
                &["replication: w = 4 must be between 1 and n = 3"],
            ),
            (
                three("cluster = \"c\"\n[replication]\nmode = \"leaderless\"\nn = 5"),
                "n1",
                &["replication.n = 5", "lists (3)"],
            ),
            (
                three("cluster = \"c\"\n[replication]\nr = 2"),
                "n1",
                &["replication.r is a setting of mode = \"leaderless\""],
            ),
            (
                three("cluster = \"c\"\n[replication]\nmode = \"leaderless\"\nacks = \"sync\""),
                "n1",
                &["replication.acks is a setting of mode = \"single-leader\""],
            ),
            (
                three("cluster = \"c\"\n[replication]\nmode = \"leaderless\"\nconflicts = \"merge\""),
                "n1",
                &["conflicts", "merge"],
            ),
            (
                three("cluster = \"c\"\n[replication]\nmode = \"leaderless\"\nlog_format = \"mixed\""),
                "n1",
                &["replication.log_format = \"mixed\" is a setting of mode = \"single-leader\""],
            ),
            (
                three("engine = \"memory\"\ncluster = \"c\"\n[replication]\nlog_format = \"physical\""),
                "n1",
                &["replication.log_format = \"physical\" ships the log engine's segment bytes", "\"memory\""],
            ),
            (
                three("cluster = \"c\"\n[replication]\nmode = \"leaderless\"\nread_lease = true"),
                "n1",
                &["replication.read_lease is a setting of mode = \"single-leader\""],
            ),
            (
                three("cluster = \"c\"\n[replication]\nmode = \"leaderless\"\nsession_guarantee = \"all\""),
                "n1",
                &["replication.session_guarantee: a leaderless cluster cannot keep all"],
            ),
            (
                three("cluster = \"c\"\n[replication]\nmode = \"leaderless\"\nread_your_writes = \"leader\""),
                "n1",
                &["replication.read_your_writes is a setting of mode = \"single-leader\""],
            ),
            (
                three("cluster = \"c\"\n[replication]\nsession_wait_ms = 60001"),
                "n1",
                &["replication.session_wait_ms must be at most 20000 (now 60001)"],
            ),
            (
                three("cluster = \"c\"\n[replication]\nsession_guarantee = \"strong\""),
                "n1",
                &["unknown variant `strong`", "read-your-writes"],
            ),
            (
                three("cluster = \"c\"\n[replication]\nread_lease = true\nread_lease_drift_ppm = 300000"),
                "n1",
                &["replication.read_lease_drift_ppm must be between 100", "and 200000 (20%) (now 300000)"],
            ),
            (
                three("cluster = \"c\"\n[replication]\nhinted_handoff = true"),
                "n1",
                &["replication.hinted_handoff is a setting of mode = \"leaderless\""],
            ),
            (
                three("cluster = \"c\"\n[replication]\nanti_entropy_interval_ms = 300"),
                "n1",
                &["replication.anti_entropy_interval_ms is a setting of mode = \"leaderless\""],
            ),
            (
                three("cluster = \"c\"\n[replication]\ntombstone_grace_ms = 1"),
                "n1",
                &["replication.tombstone_grace_ms is a setting of mode = \"leaderless\""],
            ),
            (
                three("cluster = \"c\"\n[replication]\nmode = \"leaderless\"\nsloppy_quorum = true"),
                "n1",
                &["sloppy_quorum = true", "needs replication.hinted_handoff = true"],
            ),
            (
                three(
                    "cluster = \"c\"\n[replication]\nmode = \"leaderless\"\nsloppy_quorum = true\nhinted_handoff = false",
                ),
                "n1",
                &["sloppy_quorum = true", "hinted_handoff"],
            ),
            (
                three("cluster = \"c\"\n[replication]\nmode = \"leaderless\"\nanti_entropy_style = \"gossip\""),
                "n1",
                &["anti_entropy_style", "gossip"],
            ),
            (
                three("cluster = \"c\"\n[replication]\nmode = \"leaderless\"\nanti_entropy_interval_ms = 86400001"),
                "n1",
                &["anti_entropy_interval_ms must be at most 86400000", "now 86400001"],
            ),
            (
                three("cluster = \"c\"\n[replication]\nmode = \"paxos\""),
                "n1",
                &["unknown replication mode", "single-leader"],
            ),
            (three("cluster = \"c\"\n[replication]\nack_timeout_ms = 0"), "n1", &["replication.ack_timeout_ms"]),
            (three("cluster = \"c\"\n[replication]\nack = \"sync\""), "n1", &["ack"]),
            (three("cluster = \"c\""), "n9", &["id \"n9\" is not one of the [[nodes]]", "n1, n2, n3"]),
            (three(""), "n1", &["cluster = \"NAME\""]),
            (three("cluster = \"a b\""), "n1", &["cluster \"a b\""]),
            (three("cluster = \"c\"\nresp_addr = \"127.0.0.1:1\""), "n1", &["resp_addr at the top level", "[[nodes]]"]),
            (bad_dc, "n1", &["datacenter \"dc 1\""]),
            (typo, "n1", &["resp_adr"]),
        ];
        for (text, node, wants) in table {
            let err = resolve_with(&text, id(node)).expect_err(&text).to_string();
            for want in wants {
                assert!(err.contains(want), "want {want:?} in: {err}\nfile:\n{text}");
            }
        }
    }

    #[test]
    fn durability_warnings_come_when_acknowledged_writes_miss_a_majority() {
        // (nodes, acks, a phrase of the warning or None)
        let table = [
            (1, Acks::Async, None),
            (2, Acks::Async, Some("can be lost at failover")),
            (3, Acks::Async, Some("can be lost at failover")),
            (2, Acks::SemiSync(1), None),
            (3, Acks::SemiSync(1), None),
            (4, Acks::SemiSync(1), Some("on 2 of 4 nodes, not a majority (3)")),
            (5, Acks::SemiSync(1), Some("on 2 of 5 nodes, not a majority (3)")),
            (5, Acks::SemiSync(2), None),
            (3, Acks::Sync, None),
            (7, Acks::Sync, None),
        ];
        for (nodes, acks, want) in table {
            let text = cluster_text(&format!("cluster = \"c\"\n[replication]\nacks = \"{acks}\""), nodes);
            let cluster = resolve_with(&text, id("n1")).unwrap().cluster.unwrap();
            let warnings = cluster.durability_warnings();
            match want {
                None => assert!(warnings.is_empty(), "{nodes} {acks}: {warnings:?}"),
                Some(want) => {
                    assert!(warnings.len() == 1 && warnings[0].contains(want), "{nodes} {acks}: {warnings:?}")
                }
            }
        }
        assert_eq!([1, 2, 3, 4, 5].map(majority), [1, 2, 2, 3, 3]);
        // Leaderless: warned exactly when w + r <= n (the default is a majority each).
        for (nwr, want) in [("", None), ("w = 1\nr = 3", None), ("w = 1\nr = 2", Some("w + r <= n"))] {
            let text = cluster_text(&format!("cluster = \"c\"\n[replication]\nmode = \"leaderless\"\n{nwr}"), 3);
            let cluster = resolve_with(&text, id("n1")).unwrap().cluster.unwrap();
            let warnings = cluster.durability_warnings();
            match want {
                None => assert!(warnings.is_empty(), "{nwr}: {warnings:?}"),
                Some(want) => assert!(
                    warnings.len() == 1 && warnings[0].contains(want) && warnings[0].contains("reads may miss"),
                    "{nwr}: {warnings:?}"
                ),
            }
        }
        // A sloppy quorum is warned about even when w + r > n, and hinted handoff alone is not.
        for (handoff, want) in
            [("hinted_handoff = true", None), ("hinted_handoff = true\nsloppy_quorum = true", Some(()))]
        {
            let text = cluster_text(&format!("cluster = \"c\"\n[replication]\nmode = \"leaderless\"\n{handoff}"), 3);
            let cluster = resolve_with(&text, id("n1")).unwrap().cluster.unwrap();
            let warnings = cluster.durability_warnings();
            match want {
                None => assert!(warnings.is_empty(), "{handoff}: {warnings:?}"),
                Some(()) => assert!(
                    warnings.len() == 1 && warnings[0].contains("w + r > n no longer guarantees overlap"),
                    "{handoff}: {warnings:?}"
                ),
            }
        }
    }

    #[test]
    fn the_anti_entropy_settings_are_read_from_the_cluster_file() {
        let head = "cluster = \"c\"\n[replication]\nmode = \"leaderless\"\nanti_entropy_interval_ms = 300\n\
                    anti_entropy_style = \"push-pull\"\ntombstone_grace_ms = 1000\nhinted_handoff = true\nsloppy_quorum = true";
        let r = resolve_with(&cluster_text(head, 3), id("n1")).unwrap().cluster.unwrap().replication;
        assert_eq!(
            (r.anti_entropy_interval_ms, r.anti_entropy_style, r.tombstone_grace_ms, r.hinted_handoff, r.sloppy_quorum),
            (Some(300), Some(AntiEntropyStyleSetting::PushPull), Some(1000), Some(true), Some(true))
        );
        for (text, want) in [("push", "push"), ("pull", "pull"), ("push-pull", "push-pull")] {
            let head =
                format!("cluster = \"c\"\n[replication]\nmode = \"leaderless\"\nanti_entropy_style = \"{text}\"");
            let r = resolve_with(&cluster_text(&head, 3), id("n1")).unwrap().cluster.unwrap().replication;
            assert_eq!(r.anti_entropy_style.unwrap().core().as_str(), want);
        }
    }

    #[test]
    fn a_cluster_written_as_toml_reads_back_the_same() {
        let head = "cluster = \"demo\"\n[replication]\nacks = \"semi-sync:2\"";
        let mut written = resolve_with(&cluster_text(head, 3), id("n1")).unwrap().cluster.unwrap();
        written.nodes[0].datacenter = Some("dc1".into());
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(written.to_toml().as_bytes()).unwrap();
        assert_eq!(ClusterConfig::read(file.path()).unwrap(), written, "{}", written.to_toml());
        assert!(written.to_toml().contains("acks = \"semi-sync:2\""), "{}", written.to_toml());
        let plain = tempfile::NamedTempFile::new().unwrap();
        let err = ClusterConfig::read(plain.path()).unwrap_err().to_string();
        assert!(err.contains("no cluster"), "{err}");
    }

    #[test]
    fn the_cluster_shows_in_config_json_and_config_get() {
        let config = resolve_with(&cluster_text("cluster = \"demo\"", 2), id("n1")).unwrap();
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["cluster"]["name"], "demo");
        assert_eq!(json["cluster"]["replication"]["acks"], "async");
        assert_eq!(json["cluster"]["replication"]["mode"], "single-leader");
        assert_eq!(json["cluster"]["nodes"][1]["resp_addr"], "127.0.0.1:7002");
        let pairs = config.pairs();
        let cluster = pairs.iter().find(|(n, _)| n == "cluster").map(|(_, v)| v.clone()).unwrap();
        assert!(cluster.contains("\"name\":\"demo\""), "{cluster}");
        let solo = NodeConfig::resolve(&NodeArgs::default()).unwrap();
        assert!(serde_json::to_value(&solo).unwrap()["cluster"].is_null());
    }

    #[test]
    fn config_get_pairs_include_redis_names() {
        let config = NodeConfig::resolve(&NodeArgs::default()).unwrap();
        let pairs = config.pairs();
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("appendonly").as_deref(), Some("yes"));
        assert_eq!(get("save").as_deref(), Some(""));
        assert_eq!(get("fsync").as_deref(), Some("always"));
        assert_eq!(get("resp_addr").as_deref(), Some(RESP_ADDR_DEFAULT));
        assert_eq!(get("ack_timeout_ms"), None, "no replication settings outside a cluster");
        let head = "cluster = \"demo\"\n[replication]\nacks = \"sync\"\nack_timeout_ms = 250";
        let pairs = resolve_with(&cluster_text(head, 2), id("n1")).unwrap().pairs();
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("ack_timeout_ms").as_deref(), Some("250"));
        assert_eq!(get("acks").as_deref(), Some("sync"), "a text without JSON quotes");
        assert_eq!(get("auto_failover").as_deref(), Some("true"));
    }

    #[test]
    fn the_ack_timeout_is_bounded_and_the_forward_timeout_follows_it() {
        let table = [(0, false), (1, true), (ACK_TIMEOUT_MS_MAX, true), (ACK_TIMEOUT_MS_MAX + 1, false)];
        for (ack_timeout_ms, ok) in table {
            let r = ReplicationConfig { ack_timeout_ms, ..ReplicationConfig::default() };
            assert_eq!(r.check(3).is_ok(), ok, "{ack_timeout_ms}: {:?}", r.check(3));
        }
        let r = ReplicationConfig { ack_timeout_ms: 250, ..ReplicationConfig::default() };
        assert_eq!(r.forward_timeout_ms(), 5_250);
    }
}
