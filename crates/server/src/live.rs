//! Settings that change while a node runs: `CONFIG SET`.
//!
//! A node starts with the configuration its flags, environment and file give it
//! ([`crate::config`]), and most of it is fixed for the node's life: addresses, the data
//! directory, the engine, the cluster's nodes and acknowledgement mode. A few settings are
//! limits and timeouts an operator may need to change without a restart. [`Live`] holds the
//! configuration as it is now, which `CONFIG GET` and `GET /api/v1/config` show, and changes
//! those:
//!
//! | replikv name | Redis name | who reads it | a change reaches it |
//! | --- | --- | --- | --- |
//! | `connections_max` | `maxclients` | the RESP accept loop | at the next connection accepted |
//! | `bulk_bytes_max` | `proto-max-bulk-len` | each RESP connection | before it parses its next request |
//! | `multibulk_len_max` | | each RESP connection | before it parses its next request |
//! | `query_buffer_bytes_max` | `client-query-buffer-limit` | each RESP connection | before it parses its next request |
//! | `query_buffer_total_bytes_max` | | each RESP connection and HTTP body ([`crate::query_buffers`]) | at its next read |
//! | `http_connections_max` | | the HTTP accept loop | at the next connection accepted |
//! | `http_header_timeout_ms` | | the HTTP accept loop | at the next connection accepted |
//! | `http_body_timeout_ms` | | each HTTP request | at the next request's body |
//! | `ack_timeout_ms` | | the replica (and its forward timeout, [`FORWARD_TIMEOUT_SLACK_MS`] more) | before the runtime's next batch ([`Handle::reconfigure`]) |
//! | `loglevel` | `loglevel` | the process's log filter ([`crate::logging`]) | at once |
//!
//! Connections read the request limits from atomics each time they parse, rather than
//! once at connect, so an open connection's next request is judged by the new value; the
//! request path takes no lock for it. The accept loops compare the connections open with
//! `connections_max` (RESP) or `http_connections_max` (HTTP) each time they accept one.
//!
//! `CONFIG SET name value [name value ...]` is all or nothing, as Redis's: [`Live::set`]
//! first resolves every name (an unknown one, a fixed one or one given twice refuses the
//! whole command), then parses each value into a copy of the configuration and checks the copy
//! with the same checks a file's values go through ([`NodeConfig`]'s and
//! [`ReplicationConfig::check`]: same bounds, same messages), and applies the pairs only when
//! every one passed. The log filter changes first, since it is the only step that can still
//! fail; the rest are stores. One lock orders concurrent `CONFIG SET`s, so what `CONFIG GET`
//! shows is what the node runs with.
//!
//! CAVEATS
//! - Changes are not written to the configuration file: a restart takes the file's values
//!   again, and `CONFIG REWRITE` is refused saying so.
//! - Values are integers as in the file: Redis's units (`proto-max-bulk-len 1gb`) are refused.
//! - Lowering `maxclients` below the connections open closes none of them; new ones are
//!   refused until enough leave.
//! - Requests already cut from a connection's buffer when a limit is lowered are served.
//! - The bounds are the file's, which let `bulk_bytes_max` or `multibulk_len_max` go below
//!   what a `CONFIG SET` itself needs (its name's length; four arguments): set that low, the
//!   limit comes back only with a restart. Redis floors `proto-max-bulk-len` at 1 MiB; the
//!   file never has.
//! - The HTTP API's body limit is fixed when it starts, at the start value of
//!   `bulk_bytes_max`: a lower value also refuses larger `PUT`s (413), a higher one does not
//!   let them through.

use crate::config::NodeConfig;
use crate::logging::{self, LogLevel};
use crate::resp::frame::{Limits, INLINE_BYTES_MAX_DEFAULT};
use crate::runtime::{Handle, Reconfigure};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

#[cfg(doc)]
use crate::config::{ReplicationConfig, FORWARD_TIMEOUT_SLACK_MS};

/// A setting `CONFIG SET` changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setting {
    ConnectionsMax,
    BulkBytesMax,
    MultibulkLenMax,
    QueryBufferBytesMax,
    AckTimeoutMs,
    LogLevel,
    IdleTimeoutS,
    QueryBufferTotalBytesMax,
    HttpConnectionsMax,
    HttpHeaderTimeoutMs,
    HttpBodyTimeoutMs,
}

/// Every name `CONFIG SET` changes a setting by: replikv's and Redis's.
const CHANGEABLE: &[(&str, Setting)] = &[
    ("connections_max", Setting::ConnectionsMax),
    ("maxclients", Setting::ConnectionsMax),
    ("bulk_bytes_max", Setting::BulkBytesMax),
    ("proto-max-bulk-len", Setting::BulkBytesMax),
    ("multibulk_len_max", Setting::MultibulkLenMax),
    ("query_buffer_bytes_max", Setting::QueryBufferBytesMax),
    ("client-query-buffer-limit", Setting::QueryBufferBytesMax),
    ("ack_timeout_ms", Setting::AckTimeoutMs),
    ("loglevel", Setting::LogLevel),
    ("idle_timeout_s", Setting::IdleTimeoutS),
    ("timeout", Setting::IdleTimeoutS),
    ("query_buffer_total_bytes_max", Setting::QueryBufferTotalBytesMax),
    ("http_connections_max", Setting::HttpConnectionsMax),
    ("http_header_timeout_ms", Setting::HttpHeaderTimeoutMs),
    ("http_body_timeout_ms", Setting::HttpBodyTimeoutMs),
];

/// Why a `CONFIG SET` changed nothing; its `Display` is the error line, in Redis's words.
#[derive(Debug, PartialEq, Eq)]
pub enum SetError {
    /// A name that `CONFIG GET` does not show.
    Unknown(String),
    /// This setting cannot take this value (or cannot change at all), and why.
    Failed {
        /// The name as the client gave it, lowercased.
        name: String,
        /// What is wrong.
        why: String,
    },
}

impl fmt::Display for SetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetError::Unknown(name) => write!(f, "ERR Unknown option or number of arguments for CONFIG SET - '{name}'"),
            SetError::Failed { name, why } => {
                write!(f, "ERR CONFIG SET failed (possibly related to argument '{name}') - {why}")
            }
        }
    }
}

/// The configuration as it is now, and the changeable limits as atomics for the request path.
pub struct Live {
    /// The configuration now: the start configuration with every `CONFIG SET` applied. Its
    /// lock also orders `CONFIG SET`s.
    config: Mutex<NodeConfig>,
    /// `config.connections_max`, for the accept loop.
    connections_max: AtomicUsize,
    /// `config.bulk_bytes_max`, for each request.
    bulk_bytes_max: AtomicUsize,
    /// `config.multibulk_len_max`, for each request.
    multibulk_len_max: AtomicUsize,
    /// `config.query_buffer_bytes_max`, for each read.
    query_buffer_bytes_max: AtomicUsize,
    /// Seconds a client may stay idle; 0 never closes one. A watch, so that a change reaches
    /// connections already waiting idle.
    idle_timeout_s: tokio::sync::watch::Sender<u64>,
    /// `config.query_buffer_total_bytes_max`, for each read.
    query_buffer_total_bytes_max: AtomicUsize,
    /// `config.http_connections_max`, for the HTTP accept loop.
    http_connections_max: AtomicUsize,
    /// `config.http_header_timeout_ms`, for each HTTP connection.
    http_header_timeout_ms: AtomicU64,
    /// `config.http_body_timeout_ms`, for each HTTP request.
    http_body_timeout_ms: AtomicU64,
}

impl Live {
    /// The settings of a node that starts with `config`.
    pub fn new(config: &NodeConfig) -> Live {
        Live {
            config: Mutex::new(config.clone()),
            connections_max: AtomicUsize::new(config.connections_max),
            bulk_bytes_max: AtomicUsize::new(config.bulk_bytes_max),
            multibulk_len_max: AtomicUsize::new(config.multibulk_len_max),
            query_buffer_bytes_max: AtomicUsize::new(config.query_buffer_bytes_max),
            idle_timeout_s: tokio::sync::watch::Sender::new(config.idle_timeout_s),
            query_buffer_total_bytes_max: AtomicUsize::new(config.query_buffer_total_bytes_max),
            http_connections_max: AtomicUsize::new(config.http_connections_max),
            http_header_timeout_ms: AtomicU64::new(config.http_header_timeout_ms),
            http_body_timeout_ms: AtomicU64::new(config.http_body_timeout_ms),
        }
    }

    /// The configuration now.
    pub fn config(&self) -> NodeConfig {
        self.config.lock().unwrap().clone()
    }

    /// The settings now as (name, value) pairs for `CONFIG GET`: [`NodeConfig::pairs`] and
    /// `loglevel` (when the process has a log hook).
    pub fn pairs(&self) -> Vec<(String, String)> {
        let mut pairs = self.config.lock().unwrap().pairs();
        if let Some(level) = logging::level() {
            pairs.push(("loglevel".to_string(), level.to_string()));
        }
        pairs
    }

    /// The configuration now as JSON for `GET /api/v1/config`, with `loglevel`.
    pub fn json(&self) -> serde_json::Value {
        let mut json = serde_json::to_value(&*self.config.lock().unwrap()).expect("config serializes");
        if let (Some(level), Some(object)) = (logging::level(), json.as_object_mut()) {
            object.insert("loglevel".to_string(), level.to_string().into());
        }
        json
    }

    /// RESP client connections at most, now.
    pub fn connections_max(&self) -> usize {
        self.connections_max.load(Ordering::Relaxed)
    }

    /// A bulk string's length at most now, in bytes.
    pub fn bulk_bytes_max(&self) -> usize {
        self.bulk_bytes_max.load(Ordering::Relaxed)
    }

    /// The limits a RESP connection parses its next request with.
    pub fn limits(&self) -> Limits {
        Limits {
            bulk_bytes_max: self.bulk_bytes_max(),
            multibulk_len_max: self.multibulk_len_max.load(Ordering::Relaxed),
            inline_bytes_max: INLINE_BYTES_MAX_DEFAULT,
        }
    }

    /// How long a client may stay idle now; `None` never closes one.
    pub fn idle_timeout(&self) -> Option<std::time::Duration> {
        idle_timeout(*self.idle_timeout_s.borrow())
    }

    /// The idle timeout's changes, for a connection waiting idle (see [`idle_timeout`]).
    pub fn watch_idle_timeout(&self) -> tokio::sync::watch::Receiver<u64> {
        self.idle_timeout_s.subscribe()
    }

    /// Bytes of incomplete requests one connection may buffer now.
    pub fn query_buffer_bytes_max(&self) -> usize {
        self.query_buffer_bytes_max.load(Ordering::Relaxed)
    }

    /// Bytes of incomplete requests all clients together may buffer now.
    pub fn query_buffer_total_bytes_max(&self) -> usize {
        self.query_buffer_total_bytes_max.load(Ordering::Relaxed)
    }

    /// HTTP connections open at most, now.
    pub fn http_connections_max(&self) -> usize {
        self.http_connections_max.load(Ordering::Relaxed)
    }

    /// How long an HTTP client has to send a request's head, now.
    pub fn http_header_timeout(&self) -> Duration {
        Duration::from_millis(self.http_header_timeout_ms.load(Ordering::Relaxed))
    }

    /// How long an HTTP client has to send a request's body once its head arrived, now.
    pub fn http_body_timeout(&self) -> Duration {
        Duration::from_millis(self.http_body_timeout_ms.load(Ordering::Relaxed))
    }

    /// `CONFIG SET`: checks every (name, value) pair, then applies them all, or none (see the
    /// module documentation); a changed ack timeout goes to `runtime`.
    pub fn set(&self, pairs: &[(&[u8], &[u8])], runtime: &Handle) -> Result<(), SetError> {
        let mut config = self.config.lock().unwrap();
        let plan = plan(&config, pairs)?;
        if let Some(level) = plan.loglevel {
            logging::set(level).map_err(|why| SetError::Failed { name: plan.loglevel_name.clone(), why })?;
        }
        let new = plan.config;
        self.connections_max.store(new.connections_max, Ordering::Relaxed);
        self.bulk_bytes_max.store(new.bulk_bytes_max, Ordering::Relaxed);
        self.multibulk_len_max.store(new.multibulk_len_max, Ordering::Relaxed);
        self.query_buffer_bytes_max.store(new.query_buffer_bytes_max, Ordering::Relaxed);
        self.idle_timeout_s.send_replace(new.idle_timeout_s);
        self.query_buffer_total_bytes_max.store(new.query_buffer_total_bytes_max, Ordering::Relaxed);
        self.http_connections_max.store(new.http_connections_max, Ordering::Relaxed);
        self.http_header_timeout_ms.store(new.http_header_timeout_ms, Ordering::Relaxed);
        self.http_body_timeout_ms.store(new.http_body_timeout_ms, Ordering::Relaxed);
        let replication = |c: &NodeConfig| c.cluster.as_ref().map(|c| c.replication.clone());
        if let (Some(r), true) = (replication(&new), replication(&new) != replication(&config)) {
            runtime.reconfigure(Reconfigure {
                ack_timeout_ms: r.ack_timeout_ms,
                forward_timeout_ms: r.forward_timeout_ms(),
            });
        }
        let names: Vec<String> = pairs.iter().map(|(name, _)| text(name).to_ascii_lowercase()).collect();
        tracing::info!(settings = %names.join(", "), "CONFIG SET");
        *config = new;
        Ok(())
    }
}

/// What a `CONFIG SET` will do, once every pair has passed.
#[derive(Debug)]
struct Plan {
    /// The configuration with every change made.
    config: NodeConfig,
    /// The new log level, if one was given.
    loglevel: Option<LogLevel>,
    /// The name the log level was given by, for an error.
    loglevel_name: String,
}

/// Resolves and checks `pairs` against `current`; changes nothing.
fn plan(current: &NodeConfig, pairs: &[(&[u8], &[u8])]) -> Result<Plan, SetError> {
    let shown: Vec<String> = current.pairs().into_iter().map(|(name, _)| name).collect();
    let mut resolved: Vec<(String, Setting, String)> = Vec::with_capacity(pairs.len());
    for (name, value) in pairs {
        let name = text(name).to_ascii_lowercase();
        let setting = match CHANGEABLE.iter().find(|(n, _)| *n == name) {
            Some((_, setting)) => *setting,
            None if shown.contains(&name) => {
                let why = format!(
                    "'{name}' cannot change while the node runs: it is fixed at start (restart the node with the new value)"
                );
                return Err(SetError::Failed { name, why });
            }
            None => return Err(SetError::Unknown(name)),
        };
        if resolved.iter().any(|(_, s, _)| *s == setting) {
            return Err(SetError::Failed { name, why: "duplicate parameter".to_string() });
        }
        resolved.push((name, setting, text(value)));
    }
    let mut plan = Plan { config: current.clone(), loglevel: None, loglevel_name: String::new() };
    for (name, setting, value) in resolved {
        change(&mut plan, setting, &name, &value).map_err(|why| SetError::Failed { name, why })?;
    }
    Ok(plan)
}

/// Makes one change in `plan` and checks the result as a configuration file's is checked.
fn change(plan: &mut Plan, setting: Setting, name: &str, value: &str) -> Result<(), String> {
    let config = &mut plan.config;
    match setting {
        Setting::LogLevel => {
            plan.loglevel = Some(value.parse()?);
            plan.loglevel_name = name.to_string();
            return Ok(());
        }
        Setting::AckTimeoutMs => {
            let Some(cluster) = config.cluster.as_mut() else {
                return Err(format!("'{name}' is a replication setting, and this node is not in a cluster"));
            };
            cluster.replication.ack_timeout_ms = integer(value)?;
            return cluster.replication.check(cluster.nodes.len()).map_err(|e| e.to_string());
        }
        Setting::ConnectionsMax => config.connections_max = integer(value)?,
        Setting::BulkBytesMax => config.bulk_bytes_max = integer(value)?,
        Setting::MultibulkLenMax => config.multibulk_len_max = integer(value)?,
        Setting::QueryBufferBytesMax => config.query_buffer_bytes_max = integer(value)?,
        Setting::IdleTimeoutS => config.idle_timeout_s = integer(value)?,
        Setting::QueryBufferTotalBytesMax => config.query_buffer_total_bytes_max = integer(value)?,
        Setting::HttpConnectionsMax => config.http_connections_max = integer(value)?,
        Setting::HttpHeaderTimeoutMs => config.http_header_timeout_ms = integer(value)?,
        Setting::HttpBodyTimeoutMs => config.http_body_timeout_ms = integer(value)?,
    }
    config.check().map_err(|e| e.to_string())
}

/// A value as a whole number, as the file gives them (Redis's error when it is not one).
fn integer<T: std::str::FromStr>(value: &str) -> Result<T, String> {
    value.parse().map_err(|_| "argument couldn't be parsed into an integer".to_string())
}

/// Bytes from the client as text (names and values are ASCII when valid).
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An idle timeout of `seconds`; `None` (never) for 0.
pub fn idle_timeout(seconds: u64) -> Option<std::time::Duration> {
    (seconds > 0).then(|| std::time::Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeArgs;
    use std::io::Write;

    /// A standalone node's configuration, defaults only.
    fn standalone() -> NodeConfig {
        NodeConfig::resolve(&NodeArgs::default()).unwrap()
    }

    /// Node n1's configuration in a 3-node cluster with `ack_timeout_ms = 1000`.
    fn clustered() -> NodeConfig {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let mut text = "cluster = \"c\"\n[replication]\nacks = \"sync\"\nack_timeout_ms = 1000\n".to_string();
        for i in 1..=3 {
            text += &format!(
                "[[nodes]]\nid = \"n{i}\"\npeer_addr = \"127.0.0.1:720{i}\"\nresp_addr = \"127.0.0.1:700{i}\"\nhttp_addr = \"127.0.0.1:710{i}\"\n"
            );
        }
        file.write_all(text.as_bytes()).unwrap();
        let args = NodeArgs { config: Some(file.path().to_path_buf()), ..NodeArgs::default() };
        NodeConfig::resolve(&args).unwrap()
    }

    fn pairs<'a>(words: &[&'a str]) -> Vec<(&'a [u8], &'a [u8])> {
        words.chunks(2).map(|p| (p[0].as_bytes(), p[1].as_bytes())).collect()
    }

    fn ack_timeout_ms(config: &NodeConfig) -> u64 {
        config.cluster.as_ref().unwrap().replication.ack_timeout_ms
    }

    #[test]
    fn changeable_settings_take_valid_values_by_either_name() {
        // (pairs, what the planned configuration must show)
        type Check = fn(&Plan) -> bool;
        let table: &[(&[&str], Check)] = &[
            (&["maxclients", "2"], |p| p.config.connections_max == 2),
            (&["CONNECTIONS_MAX", "3"], |p| p.config.connections_max == 3),
            (&["proto-max-bulk-len", "1024"], |p| p.config.bulk_bytes_max == 1024),
            (&["bulk_bytes_max", "2048"], |p| p.config.bulk_bytes_max == 2048),
            (&["multibulk_len_max", "8"], |p| p.config.multibulk_len_max == 8),
            (&["client-query-buffer-limit", "4096"], |p| p.config.query_buffer_bytes_max == 4096),
            (&["query_buffer_bytes_max", "5000"], |p| p.config.query_buffer_bytes_max == 5000),
            (&["ack_timeout_ms", "250"], |p| ack_timeout_ms(&p.config) == 250),
            (&["query_buffer_total_bytes_max", "4096"], |p| p.config.query_buffer_total_bytes_max == 4096),
            (&["http_connections_max", "9"], |p| p.config.http_connections_max == 9),
            (&["http_header_timeout_ms", "250"], |p| p.config.http_header_timeout_ms == 250),
            (&["http_body_timeout_ms", "750"], |p| p.config.http_body_timeout_ms == 750),
            (&["loglevel", "verbose"], |p| p.loglevel == Some(LogLevel::Verbose)),
            (&["maxclients", "7", "ack_timeout_ms", "3600000"], |p| {
                p.config.connections_max == 7 && ack_timeout_ms(&p.config) == 3_600_000
            }),
        ];
        let current = clustered();
        for (words, check) in table {
            let plan = plan(&current, &pairs(words)).unwrap_or_else(|e| panic!("{words:?}: {e}"));
            assert!(check(&plan), "{words:?}: {plan:?}");
        }
    }

    #[test]
    fn bad_values_fixed_settings_and_unknown_names_are_refused_in_redis_words() {
        let table: &[(&[&str], &str)] = &[
            (&["maxclients", "0"], "argument 'maxclients') - connections_max must be greater than 0"),
            (&["maxclients", "-1"], "argument 'maxclients') - argument couldn't be parsed into an integer"),
            (&["maxclients", "1k"], "couldn't be parsed into an integer"),
            (&["proto-max-bulk-len", "0"], "bulk_bytes_max must be greater than 0"),
            (&["bulk_bytes_max", "99999999999"], "over the engine's value limit"),
            (&["multibulk_len_max", "0"], "multibulk_len_max must be greater than 0"),
            (&["client-query-buffer-limit", "0"], "query_buffer_bytes_max must be greater than 0"),
            (&["ack_timeout_ms", "0"], "ack_timeout_ms must be between 1 and 3600000 (now 0)"),
            (&["query_buffer_total_bytes_max", "0"], "query_buffer_total_bytes_max must be greater than 0"),
            (&["http_connections_max", "0"], "http_connections_max must be greater than 0"),
            (&["http_header_timeout_ms", "0"], "http_header_timeout_ms must be between 1 and 3600000 (now 0)"),
            (&["http_body_timeout_ms", "3600001"], "http_body_timeout_ms must be between 1 and 3600000"),
            (&["ack_timeout_ms", "3600001"], "ack_timeout_ms must be between 1 and 3600000"),
            (&["loglevel", "loud"], "argument 'loglevel') - argument(s) must be one of the following: debug,"),
            (
                &["acks", "async"],
                "ERR CONFIG SET failed (possibly related to argument 'acks') - 'acks' cannot change while the node \
                 runs: it is fixed at start (restart the node with the new value)",
            ),
            (&["appendonly", "no"], "'appendonly' cannot change while the node runs"),
            (&["resp_addr", "127.0.0.1:1"], "'resp_addr' cannot change while the node runs"),
            (&["maxmemory", "1"], "ERR Unknown option or number of arguments for CONFIG SET - 'maxmemory'"),
            (&["maxclients", "5", "connections_max", "6"], "argument 'connections_max') - duplicate parameter"),
            // All or nothing: a good pair before a bad one does not count.
            (&["maxclients", "5", "tick_ms", "5"], "'tick_ms' cannot change"),
            (&["maxclients", "5", "nosuch", "5"], "CONFIG SET - 'nosuch'"),
            (&["maxclients", "5", "ack_timeout_ms", "x"], "argument 'ack_timeout_ms') - argument couldn't be parsed"),
        ];
        let current = clustered();
        for (words, want) in table {
            let err = plan(&current, &pairs(words)).expect_err(&format!("{words:?}")).to_string();
            assert!(err.starts_with("ERR ") && err.contains(want), "{words:?}: {err}\nwant: {want}");
        }
    }

    #[test]
    fn a_standalone_node_has_no_ack_timeout_to_change() {
        let err = plan(&standalone(), &pairs(&["ack_timeout_ms", "250"])).unwrap_err().to_string();
        assert!(err.contains("'ack_timeout_ms' is a replication setting, and this node is not in a cluster"), "{err}");
        let err = plan(&standalone(), &pairs(&["acks", "sync"])).unwrap_err().to_string();
        assert!(err.contains("Unknown option"), "not shown by CONFIG GET outside a cluster: {err}");
    }

    /// A runtime over a lone in-memory replica, for its handle.
    fn runtime() -> crate::runtime::Runtime {
        let replica = replikv_core::node::Replica::new(
            replikv_core::storage::MemoryEngine::new(),
            replikv_core::version::NodeId(1),
        );
        let peers: crate::runtime::PeerSender = std::sync::Arc::new(|_, _| {});
        let (failed, _) = tokio::sync::watch::channel(false);
        crate::runtime::Runtime::start(
            replica,
            std::sync::Arc::new(crate::metrics::Metrics::new()),
            16,
            16,
            peers,
            failed,
        )
    }

    #[tokio::test]
    async fn set_applies_every_pair_or_none() {
        let runtime = runtime();
        let live = Live::new(&clustered());
        live.set(&pairs(&["maxclients", "2", "proto-max-bulk-len", "100", "ack_timeout_ms", "300"]), &runtime.handle())
            .unwrap();
        let shown = |live: &Live, name: &str| live.pairs().into_iter().find(|(n, _)| n == name).map(|(_, v)| v);
        assert_eq!((live.connections_max(), live.limits().bulk_bytes_max), (2, 100));
        assert_eq!(shown(&live, "maxclients").as_deref(), Some("2"), "CONFIG GET shows the new value");
        assert_eq!(shown(&live, "connections_max").as_deref(), Some("2"));
        assert_eq!(shown(&live, "ack_timeout_ms").as_deref(), Some("300"));
        assert_eq!(live.json()["cluster"]["replication"]["ack_timeout_ms"], 300, "and /api/v1/config");

        let err = live.set(&pairs(&["maxclients", "9", "multibulk_len_max", "0"]), &runtime.handle()).unwrap_err();
        assert!(err.to_string().contains("multibulk_len_max must be greater than 0"), "{err}");
        assert_eq!(live.connections_max(), 2, "the good pair before the bad one changed nothing");
        assert_eq!(live.config().connections_max, 2);

        // This test binary installs no log hook, so the log level is the step that fails after
        // every check passed: nothing else may change either.
        let err = live.set(&pairs(&["maxclients", "9", "loglevel", "debug"]), &runtime.handle()).unwrap_err();
        assert!(err.to_string().contains("argument 'loglevel') - this process has no reloadable log filter"), "{err}");
        assert_eq!((live.connections_max(), live.config().connections_max), (2, 2));
        runtime.shutdown().await;
    }
}
