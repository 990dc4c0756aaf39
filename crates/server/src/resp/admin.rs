//! The commands a node answers itself, without the replica: connection setup and
//! introspection (`PING`, `HELLO`, `CLIENT`, `COMMAND`, `CONFIG GET`, `INFO`, ...). Tools
//! send these before any data command (redis-cli, redis-benchmark and client libraries all
//! do), so their replies follow Redis's shapes closely.

use super::frame::{Frame, Protocol};
use crate::state::NodeState;
use bytes::Bytes;
use replikv_core::kv::glob_match;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

/// The Redis version replikv answers to `HELLO` and `INFO`, so that clients which check it
/// enable the features replikv has (RESP3 needs 6.0 or later).
pub const REDIS_VERSION_COMPAT: &str = "7.2.0";

/// A client name's length at most, in bytes.
const CLIENT_NAME_BYTES_MAX: usize = 256;

/// One connection's client, as `CLIENT` and `HELLO` see it.
#[derive(Debug)]
pub struct Client {
    /// Unique per node, from 1.
    pub id: u64,
    /// The peer's address.
    pub addr: SocketAddr,
    /// The node's address the client connected to.
    pub local_addr: SocketAddr,
    /// Set by `CLIENT SETNAME` or `HELLO ... SETNAME`.
    pub name: String,
    /// Set by `CLIENT SETINFO LIB-NAME`.
    pub lib_name: String,
    /// Set by `CLIENT SETINFO LIB-VER`.
    pub lib_ver: String,
    /// RESP2 or RESP3, set by `HELLO`.
    pub proto: Protocol,
}

/// The commands [`execute`] answers.
const ANSWERED: &[&str] = &["ping", "echo", "hello", "auth", "client", "command", "config", "info", "time", "role"];

/// True when `name` (lowercase) is a command the node answers itself, without the replica.
pub fn answers(name: &str) -> bool {
    ANSWERED.contains(&name)
}

/// Executes `args`, a command [`answers`] says is answered here.
pub fn execute(name: &str, args: &[Bytes], client: &mut Client, state: &NodeState) -> Frame {
    match name {
        "ping" => match args.len() {
            1 => Frame::Simple("PONG".into()),
            2 => Frame::Bulk(args[1].clone()),
            _ => arity(name),
        },
        "echo" if args.len() == 2 => Frame::Bulk(args[1].clone()),
        "hello" => hello(args, client, state),
        "auth" => Frame::error(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        ),
        "client" if args.len() >= 2 => client_command(args, client),
        "command" => command(args),
        "config" if args.len() >= 2 => config(args, state),
        "info" => Frame::Bulk(Bytes::from(info(args.get(1), client, state))),
        "time" if args.len() == 1 => time(),
        "role" if args.len() == 1 => role_frame(crate::replication::role(state)),
        "echo" | "client" | "config" | "time" | "role" => arity(name),
        _ => unreachable!("{name} is not answered here"),
    }
}

/// `ROLE`'s reply as a frame.
fn role_frame(item: crate::replication::RoleItem) -> Frame {
    use crate::replication::RoleItem;
    match item {
        RoleItem::Text(text) => Frame::bulk(text),
        RoleItem::Int(n) => Frame::Integer(n),
        RoleItem::List(items) => Frame::Array(items.into_iter().map(role_frame).collect()),
    }
}

fn arity(name: &str) -> Frame {
    Frame::error(format!("ERR wrong number of arguments for '{name}' command"))
}

fn hello(args: &[Bytes], client: &mut Client, state: &NodeState) -> Frame {
    let mut rest = args[1..].iter();
    let mut proto = client.proto;
    if let Some(version) = rest.next() {
        proto = match &version[..] {
            b"2" => Protocol::Resp2,
            b"3" => Protocol::Resp3,
            _ => return Frame::error("NOPROTO unsupported protocol version"),
        };
    }
    let mut name = None;
    while let Some(option) = rest.next() {
        if option.eq_ignore_ascii_case(b"setname") {
            let Some(value) = rest.next() else {
                return Frame::error("ERR syntax error");
            };
            name = Some(value);
        } else if option.eq_ignore_ascii_case(b"auth") {
            return Frame::error("WRONGPASS invalid username-password pair or user is disabled.");
        } else {
            return Frame::error(format!("ERR Syntax error in HELLO option '{}'", String::from_utf8_lossy(option)));
        }
    }
    if let Some(name) = name {
        if let Err(e) = set_name(client, name) {
            return e;
        }
    }
    client.proto = proto;
    let text = |s: &str| Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()));
    Frame::Map(vec![
        (text("server"), text("redis")),
        (text("version"), text(REDIS_VERSION_COMPAT)),
        (text("proto"), Frame::Integer(if proto == Protocol::Resp3 { 3 } else { 2 })),
        (text("id"), Frame::Integer(client.id as i64)),
        (text("mode"), text("standalone")),
        (text("role"), text(if state.handle.replication().role == "follower" { "replica" } else { "master" })),
        (text("modules"), Frame::Array(vec![])),
        (text("replikv_version"), text(env!("CARGO_PKG_VERSION"))),
        (text("replikv_node"), text(&state.config.id)),
    ])
}

fn set_name(client: &mut Client, name: &Bytes) -> Result<(), Frame> {
    if name.len() > CLIENT_NAME_BYTES_MAX || name.iter().any(|b| *b <= b' ' || *b > b'~') {
        return Err(Frame::error("ERR Client names cannot contain spaces, newlines or special characters."));
    }
    client.name = String::from_utf8_lossy(name).into_owned();
    Ok(())
}

fn client_command(args: &[Bytes], client: &mut Client) -> Frame {
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
    match (sub.as_str(), args.len()) {
        ("setname", 3) => match set_name(client, &args[2]) {
            Ok(()) => Frame::ok(),
            Err(e) => e,
        },
        ("getname", 2) if client.name.is_empty() => Frame::Null,
        ("getname", 2) => Frame::bulk(client.name.clone()),
        ("id", 2) => Frame::Integer(client.id as i64),
        ("setinfo", 4) => {
            let value = String::from_utf8_lossy(&args[3]).into_owned();
            if args[2].eq_ignore_ascii_case(b"lib-name") {
                client.lib_name = value;
            } else if args[2].eq_ignore_ascii_case(b"lib-ver") {
                client.lib_ver = value;
            } else {
                return Frame::error(format!("ERR Unrecognized option '{}'", String::from_utf8_lossy(&args[2])));
            }
            Frame::ok()
        }
        ("info", 2) => Frame::Verbatim { format: *b"txt", text: Bytes::from(client_line(client) + "\n") },
        ("list", _) => Frame::Verbatim { format: *b"txt", text: Bytes::from(client_line(client) + "\n") },
        ("setname" | "getname" | "id" | "setinfo" | "info", _) => {
            Frame::error(format!("ERR wrong number of arguments for 'client|{sub}' command"))
        }
        _ => Frame::error(format!("ERR unknown subcommand '{}'. Try CLIENT HELP.", String::from_utf8_lossy(&args[1]))),
    }
}

/// One line of `CLIENT INFO`, with Redis's field names for the fields replikv has.
fn client_line(client: &Client) -> String {
    let resp = if client.proto == Protocol::Resp3 { 3 } else { 2 };
    format!(
        "id={} addr={} laddr={} name={} db=0 resp={} lib-name={} lib-ver={}",
        client.id, client.addr, client.local_addr, client.name, resp, client.lib_name, client.lib_ver
    )
}

/// A command's entry for `COMMAND`: name, Redis's arity (negative: at least), flags, and key
/// positions (first, last, step).
type CommandInfo = (&'static str, i64, &'static [&'static str], i64, i64, i64);

/// Every command replikv serves, for `COMMAND`.
const COMMANDS: &[CommandInfo] = &[
    ("get", 2, &["readonly", "fast"], 1, 1, 1),
    ("set", -3, &["write", "denyoom"], 1, 1, 1),
    ("setnx", 3, &["write", "denyoom", "fast"], 1, 1, 1),
    ("getset", 3, &["write", "denyoom", "fast"], 1, 1, 1),
    ("getdel", 2, &["write", "fast"], 1, 1, 1),
    ("del", -2, &["write"], 1, -1, 1),
    ("unlink", -2, &["write", "fast"], 1, -1, 1),
    ("exists", -2, &["readonly", "fast"], 1, -1, 1),
    ("mget", -2, &["readonly", "fast"], 1, -1, 1),
    ("mset", -3, &["write", "denyoom"], 1, -1, 2),
    ("msetnx", -3, &["write", "denyoom"], 1, -1, 2),
    ("incr", 2, &["write", "denyoom", "fast"], 1, 1, 1),
    ("decr", 2, &["write", "denyoom", "fast"], 1, 1, 1),
    ("incrby", 3, &["write", "denyoom", "fast"], 1, 1, 1),
    ("decrby", 3, &["write", "denyoom", "fast"], 1, 1, 1),
    ("incrbyfloat", 3, &["write", "denyoom", "fast"], 1, 1, 1),
    ("append", 3, &["write", "denyoom"], 1, 1, 1),
    ("strlen", 2, &["readonly", "fast"], 1, 1, 1),
    ("type", 2, &["readonly", "fast"], 1, 1, 1),
    ("keys", 2, &["readonly"], 0, 0, 0),
    ("scan", -2, &["readonly"], 0, 0, 0),
    ("expire", -3, &["write", "fast"], 1, 1, 1),
    ("pexpire", -3, &["write", "fast"], 1, 1, 1),
    ("expireat", -3, &["write", "fast"], 1, 1, 1),
    ("pexpireat", -3, &["write", "fast"], 1, 1, 1),
    ("ttl", 2, &["readonly", "fast"], 1, 1, 1),
    ("pttl", 2, &["readonly", "fast"], 1, 1, 1),
    ("persist", 2, &["write", "fast"], 1, 1, 1),
    ("dbsize", 1, &["readonly", "fast"], 0, 0, 0),
    ("flushall", -1, &["write"], 0, 0, 0),
    ("flushdb", -1, &["write"], 0, 0, 0),
    ("select", 2, &["loading", "stale", "fast"], 0, 0, 0),
    ("swapdb", 3, &["write", "fast"], 0, 0, 0),
    ("move", 3, &["write", "fast"], 1, 1, 1),
    ("multi", 1, &["noscript", "loading", "stale", "fast"], 0, 0, 0),
    ("exec", 1, &["noscript", "loading", "stale", "skip_slowlog"], 0, 0, 0),
    ("discard", 1, &["noscript", "loading", "stale", "fast"], 0, 0, 0),
    ("watch", -2, &["noscript", "loading", "stale", "fast"], 1, -1, 1),
    ("unwatch", 1, &["noscript", "loading", "stale", "fast"], 0, 0, 0),
    ("getex", -2, &["write", "fast"], 1, 1, 1),
    ("setex", 4, &["write", "denyoom"], 1, 1, 1),
    ("psetex", 4, &["write", "denyoom"], 1, 1, 1),
    ("setrange", 4, &["write", "denyoom"], 1, 1, 1),
    ("getrange", 4, &["readonly"], 1, 1, 1),
    ("substr", 4, &["readonly"], 1, 1, 1),
    ("setbit", 4, &["write", "denyoom"], 1, 1, 1),
    ("getbit", 3, &["readonly", "fast"], 1, 1, 1),
    ("bitcount", -2, &["readonly"], 1, 1, 1),
    ("lcs", -3, &["readonly"], 1, 2, 1),
    ("rename", 3, &["write"], 1, 2, 1),
    ("renamenx", 3, &["write", "fast"], 1, 2, 1),
    ("copy", -3, &["write", "denyoom"], 1, 2, 1),
    ("expiretime", 2, &["readonly", "fast"], 1, 1, 1),
    ("pexpiretime", 2, &["readonly", "fast"], 1, 1, 1),
    ("object", -2, &[], 0, 0, 0),
    ("touch", -2, &["readonly", "fast"], 1, -1, 1),
    ("randomkey", 1, &["readonly"], 0, 0, 0),
    ("ping", -1, &["fast"], 0, 0, 0),
    ("echo", 2, &["fast"], 0, 0, 0),
    ("quit", -1, &["fast"], 0, 0, 0),
    ("hello", -1, &["fast"], 0, 0, 0),
    ("auth", -2, &["fast"], 0, 0, 0),
    ("client", -2, &[], 0, 0, 0),
    ("command", -1, &[], 0, 0, 0),
    ("config", -2, &[], 0, 0, 0),
    ("info", -1, &[], 0, 0, 0),
    ("time", 1, &["fast"], 0, 0, 0),
    ("wait", 3, &[], 0, 0, 0),
    ("failover", -1, &["admin"], 0, 0, 0),
    ("role", 1, &["fast"], 0, 0, 0),
    ("replikv.digest", -1, &["readonly"], 0, 0, 0),
    ("replikv.log", 3, &["readonly"], 0, 0, 0),
];

fn command(args: &[Bytes]) -> Frame {
    let describe = |(name, arity, flags, first, last, step): &CommandInfo| {
        Frame::Array(vec![
            Frame::bulk(name.to_string()),
            Frame::Integer(*arity),
            Frame::Set(flags.iter().map(|f| Frame::Simple(f.to_string())).collect()),
            Frame::Integer(*first),
            Frame::Integer(*last),
            Frame::Integer(*step),
        ])
    };
    let sub = args.get(1).map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
    match sub.as_deref() {
        None => Frame::Array(COMMANDS.iter().map(describe).collect()),
        Some("count") => Frame::Integer(COMMANDS.len() as i64),
        // Documentation is not served; an empty map tells redis-cli to use its built-in help.
        Some("docs") => Frame::Map(vec![]),
        Some("info") => Frame::Array(
            args[2..]
                .iter()
                .map(|n| {
                    let n = String::from_utf8_lossy(n).to_ascii_lowercase();
                    COMMANDS.iter().find(|c| c.0 == n).map_or(Frame::NullArray, describe)
                })
                .collect(),
        ),
        Some(other) => Frame::error(format!("ERR unknown subcommand '{other}'. Try COMMAND HELP.")),
    }
}

fn config(args: &[Bytes], state: &NodeState) -> Frame {
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
    match sub.as_str() {
        "get" if args.len() >= 3 => {
            let pairs = state.config.pairs();
            let mut found = Vec::new();
            for (name, value) in &pairs {
                if args[2..].iter().any(|p| glob_match(&p.to_ascii_lowercase(), name.as_bytes())) {
                    found.push((Frame::bulk(name.clone()), Frame::bulk(value.clone())));
                }
            }
            Frame::Map(found)
        }
        "set" => {
            Frame::error("ERR CONFIG SET is not supported: change the configuration file or flags and restart the node")
        }
        "resetstat" => Frame::ok(),
        "get" => Frame::error("ERR wrong number of arguments for 'config|get' command"),
        _ => Frame::error(format!("ERR unknown subcommand '{sub}'. Try CONFIG HELP.")),
    }
}

fn time() -> Frame {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Frame::Array(vec![Frame::bulk(now.as_secs().to_string()), Frame::bulk(now.subsec_micros().to_string())])
}

/// The `INFO` text for `section` (`default`, `all`, `everything` or one section name).
pub fn info(section: Option<&Bytes>, client: &Client, state: &NodeState) -> String {
    let section = section.map_or("default".to_string(), |s| String::from_utf8_lossy(s).to_ascii_lowercase());
    let all = matches!(section.as_str(), "default" | "all" | "everything");
    let stats = state.handle.stats();
    let config = &state.config;
    let mut out = String::new();
    let mut add = |name: &str, title: &str, body: String| {
        if all || section == name {
            if !out.is_empty() {
                out.push_str("\r\n");
            }
            let _ = write!(out, "# {title}\r\n{body}");
        }
    };
    let uptime = state.started.elapsed().as_secs();
    add(
        "server",
        "Server",
        format!(
            "redis_version:{REDIS_VERSION_COMPAT}\r\nreplikv_version:{}\r\nreplikv_node:{}\r\nredis_mode:standalone\r\nos:{}\r\narch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\n",
            env!("CARGO_PKG_VERSION"),
            config.id,
            std::env::consts::OS,
            std::process::id(),
            config.resp_addr.port(),
            uptime / 86400
        ),
    );
    add(
        "clients",
        "Clients",
        format!(
            "connected_clients:{}\r\nmaxclients:{}\r\nclient_resp:{}\r\n",
            state.connections_open.load(Ordering::Relaxed),
            config.connections_max,
            if client.proto == Protocol::Resp3 { 3 } else { 2 }
        ),
    );
    add(
        "persistence",
        "Persistence",
        format!(
            "loading:0\r\naof_enabled:{}\r\nreplikv_engine:{:?}\r\nreplikv_fsync:{}\r\nreplikv_segments:{}\r\nreplikv_dead_bytes:{}\r\nreplikv_compactions:{}\r\nreplikv_fsyncs:{}\r\nreplikv_bytes_written:{}\r\nreplikv_value_cache_bytes:{}\r\n",
            u8::from(config.engine == crate::config::EngineKind::Log),
            config.engine,
            config.fsync,
            stats.segments,
            stats.dead_bytes,
            stats.compactions,
            stats.fsyncs,
            stats.bytes_written,
            stats.cached_bytes,
        ),
    );
    add(
        "stats",
        "Stats",
        format!(
            "total_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\n",
            state.connections_total.load(Ordering::Relaxed),
            state.commands_total.load(Ordering::Relaxed),
            state.metrics.connections_refused.get(),
        ),
    );
    add("replication", "Replication", crate::replication::info(state));
    let keyspace = if stats.keys > 0 {
        format!("db0:keys={},expires={},avg_ttl=0\r\n", stats.keys, stats.expires)
    } else {
        String::new()
    };
    add("keyspace", "Keyspace", keyspace);
    out
}
