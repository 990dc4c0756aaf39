//! Node configuration: every setting has a default, a TOML key, a `REPLIKV_*` variable and a
//! flag, with precedence flags > environment > file > defaults.
//!
//! Flags and variables come in through clap (`NodeArgs`, where every field is optional so
//! that an absent flag lets the file speak); the file is read into `FileConfig`, which refuses
//! unknown keys so that a typo is an error rather than a silently ignored setting; `resolve`
//! merges them into the effective [`NodeConfig`], which `CONFIG GET *` and `/api/v1/config`
//! show.

use crate::error::{Error, Result};
use replikv_core::storage::{FsyncPolicy, VALUE_CACHE_BYTES_MAX_DEFAULT};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    /// (`resp_addr = "127.0.0.1:6380"`). Flags and variables override it.
    #[arg(long, env = "REPLIKV_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's name [default: n1].
    #[arg(long, env = "REPLIKV_ID")]
    pub id: Option<String>,
    /// Where the node keeps its data [default: ./data/{id}].
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
    /// A batch (one group commit) takes no more calls once it holds this many requests
    /// [default: 4096].
    #[arg(long, env = "REPLIKV_BATCH_REQUESTS_MAX", value_name = "N")]
    pub batch_requests_max: Option<usize>,
    /// Milliseconds between ticks, which delete expired keys [default: 100].
    #[arg(long, env = "REPLIKV_TICK_MS", value_name = "MS")]
    pub tick_ms: Option<u64>,
    /// Test only: the n-th flush fails as a failing fsync would (see `faults`).
    #[arg(long, hide = true, value_name = "N")]
    pub test_fail_fsync_after: Option<u64>,
}

/// The configuration file: the same settings as the flags, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
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
    batch_requests_max: Option<usize>,
    tick_ms: Option<u64>,
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
    /// Requests stepped between two flushes at most.
    pub batch_requests_max: usize,
    /// Milliseconds between ticks.
    pub tick_ms: u64,
    /// The file the configuration came from, if any.
    pub config_file: Option<PathBuf>,
    /// Test only: the flush that fails, if any.
    pub test_fail_fsync_after: Option<u64>,
}

fn display<T: std::fmt::Display, S: serde::Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

impl NodeConfig {
    /// Merges flags (and variables) over the file over the defaults, and checks the result.
    pub fn resolve(args: &NodeArgs) -> Result<NodeConfig> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let fsync = match (&args.fsync, &file.fsync) {
            (Some(policy), _) => *policy,
            (None, Some(text)) => text.parse().map_err(|e| Error::Config(format!("fsync in config file: {e}")))?,
            (None, None) => FsyncPolicy::Always,
        };
        let id = args.id.clone().or(file.id).unwrap_or_else(|| ID_DEFAULT.to_string());
        let data_dir = args.data_dir.clone().or(file.data_dir).unwrap_or_else(|| Path::new("data").join(&id));
        let config = NodeConfig {
            data_dir,
            resp_addr: args.resp_addr.or(file.resp_addr).unwrap_or_else(|| RESP_ADDR_DEFAULT.parse().unwrap()),
            http_addr: args.http_addr.or(file.http_addr).unwrap_or_else(|| HTTP_ADDR_DEFAULT.parse().unwrap()),
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
            batch_requests_max: args
                .batch_requests_max
                .or(file.batch_requests_max)
                .unwrap_or(BATCH_REQUESTS_MAX_DEFAULT),
            tick_ms: args.tick_ms.or(file.tick_ms).unwrap_or(TICK_MS_DEFAULT),
            config_file: args.config.clone(),
            test_fail_fsync_after: args.test_fail_fsync_after,
            id,
        };
        config.check()?;
        Ok(config)
    }

    /// Refuses settings that cannot work, naming the setting.
    fn check(&self) -> Result<()> {
        let valid_id = !self.id.is_empty()
            && self.id.len() <= 64
            && self.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_id {
            return Err(Error::Config(format!("id {:?}: use 1 to 64 letters, digits, '-' or '_'", self.id)));
        }
        let positive = [
            ("segment_bytes_max", self.segment_bytes_max as usize),
            ("connections_max", self.connections_max),
            ("bulk_bytes_max", self.bulk_bytes_max),
            ("multibulk_len_max", self.multibulk_len_max),
            ("query_buffer_bytes_max", self.query_buffer_bytes_max),
            ("batch_requests_max", self.batch_requests_max),
            ("tick_ms", self.tick_ms as usize),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::Config(format!("{name} must be greater than 0")));
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
    /// for (`save`, `appendonly`, `appendfsync`, `maxclients`, ...) beside replikv's own.
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
            ("databases", "1".to_string()),
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
        pairs
    }
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("reading config file {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| Error::Config(format!("config file {}: {e}", path.display())))
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
    fn value_cache_bytes_max_has_its_flag_and_variable() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            node: NodeArgs,
        }
        let command = <Cli as clap::CommandFactory>::command();
        let arg = command.get_arguments().find(|a| a.get_id() == "value_cache_bytes_max").expect("the setting");
        assert_eq!(arg.get_long(), Some("value-cache-bytes-max"));
        assert_eq!(arg.get_env().and_then(|v| v.to_str()), Some("REPLIKV_VALUE_CACHE_BYTES_MAX"));
        let cli = <Cli as clap::Parser>::try_parse_from(["node", "--value-cache-bytes-max", "1234"]).unwrap();
        assert_eq!(cli.node.value_cache_bytes_max, Some(1234));
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
    }
}
