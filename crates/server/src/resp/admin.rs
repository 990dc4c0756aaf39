//! The commands a node answers itself, without the replica: connection setup and
//! introspection (`PING`, `HELLO`, `CLIENT`, `COMMAND`, `CONFIG`, `INFO`, ...). Tools send
//! these before any data command (redis-cli, redis-benchmark and client libraries all do), so
//! their replies follow Redis's shapes and error texts closely.
//!
//! # CONFIG
//!
//! `CONFIG GET pattern...` shows the configuration as it is now ([`crate::live`]): replikv's
//! names, a cluster's replication settings by their own names, the Redis names tools ask for
//! (`maxclients`, `appendonly`, `save`, ...) and `loglevel`. `CONFIG SET name value ...`
//! changes the settings that may change while the node runs (`maxclients`/`connections_max`,
//! `proto-max-bulk-len`/`bulk_bytes_max`, `multibulk_len_max`,
//! `client-query-buffer-limit`/`query_buffer_bytes_max`, `ack_timeout_ms`, `loglevel`), all
//! pairs or none, and refuses every other known setting saying it is fixed at start.
//! `CONFIG REWRITE` is refused: replikv never writes its configuration file.
//!
//! # CLIENT
//!
//! `CLIENT LIST [TYPE type | ID id...]` lists every open RESP connection of the node from its
//! registry ([`crate::clients`]), in Redis's fields and order; `CLIENT INFO` is the caller's
//! line. Fields with no meaning here have fixed values: `sub`, `psub`, `ssub` are 0 (no
//! pub/sub), `argv-mem` and `multi-mem` are 0 (arguments are not held between rounds),
//! `obl`, `oll`, `omem` are 0 (a round's replies are written before the next read, so nothing
//! waits in an output buffer), `events` is `r`, `user` is `default`, `redir` is -1. `qbuf`,
//! `qbuf-free` and `tot-mem` are the query buffer's length, its spare capacity, and both
//! buffers' capacity at the end of the connection's last round; `idle` counts from the start
//! of its last round, `age` from its connection. `db`, `multi` and `watch` (and the `x` flag
//! in a transaction) are [`Client`]'s fields, which `SELECT`, `MULTI` and `WATCH` keep.
//! `CLIENT KILL` closes connections by `ID`,
//! `ADDR`, `LADDR` or `TYPE` (with `SKIPME`), or by address alone in the old form.
//!
//! CAVEATS
//! - `TYPE master`, `replica` and `pubsub` match no connection: replicas talk to their leader
//!   over the peer protocol, not RESP, and there is no pub/sub.
//! - `CLIENT KILL USER` and `MAXAGE`, `CLIENT PAUSE`, `CLIENT NO-EVICT` and the like are not
//!   served.
//! - Another connection's line is as of the end of its last round (see [`crate::clients`]).

use super::frame::{Frame, Protocol};
use crate::state::NodeState;
use bytes::Bytes;
use replikv_core::kv::glob_match;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The Redis version replikv answers to `HELLO` and `INFO`, so that clients which check it
/// enable the features replikv has (RESP3 needs 6.0 or later).
pub const REDIS_VERSION_COMPAT: &str = "7.2.0";

/// A client name's length at most, in bytes.
const CLIENT_NAME_BYTES_MAX: usize = 256;

/// A subcommand's length at most, in bytes, for `CLIENT LIST`'s `cmd` (`client|setname`).
const SUBCOMMAND_BYTES_MAX: usize = 32;

/// The commands whose subcommand `cmd` shows, as Redis's container commands.
const CONTAINER_COMMANDS: &[&str] = &["client", "command", "config"];

/// One connection's client, as `CLIENT` and `HELLO` see it.
#[derive(Clone, Debug)]
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
    /// The socket's file descriptor (`fd`).
    pub fd: i32,
    /// The database `SELECT` chose; 0 at connect.
    pub db: u32,
    /// Commands queued since `MULTI`; -1 when not in a transaction.
    pub multi: i64,
    /// Keys `WATCH`ed.
    pub watch: usize,
    /// When the connection was accepted (`age`).
    pub created: Instant,
    /// When its last round of requests began (`idle`).
    pub last_active: Instant,
    /// Its last command as Redis names it (`get`, `client|list`); `NULL` before the first
    /// and after a command replikv does not serve.
    pub command: String,
    /// Bytes of incomplete requests in its query buffer at the end of its last round (`qbuf`).
    pub query_buffer_bytes: usize,
    /// Bytes its query buffer could take then without growing (`qbuf-free`).
    pub query_buffer_free_bytes: usize,
    /// Bytes its query and reply buffers held then (`tot-mem`).
    pub buffer_bytes: usize,
    /// The quorums `REPLIKV.CONSISTENCY` chose (leaderless mode); `None`: the cluster's.
    pub consistency: Option<replikv_core::kv::Consistency>,
    /// Its session (a node in a cluster, any family): guarantee, read source and what it
    /// has seen ([`crate::sessions`]).
    pub session: Option<crate::sessions::Session>,
}

impl Client {
    /// A client that has just connected from `addr` to `local_addr` on socket `fd`.
    pub fn new(id: u64, addr: SocketAddr, local_addr: SocketAddr, fd: i32) -> Client {
        let now = Instant::now();
        Client {
            id,
            addr,
            local_addr,
            name: String::new(),
            lib_name: String::new(),
            lib_ver: String::new(),
            proto: Protocol::Resp2,
            fd,
            db: 0,
            multi: -1,
            watch: 0,
            created: now,
            last_active: now,
            command: "NULL".to_string(),
            query_buffer_bytes: 0,
            query_buffer_free_bytes: 0,
            buffer_bytes: 0,
            consistency: None,
            session: None,
        }
    }
}

/// A command as `CLIENT LIST`'s `cmd` names it: its lowercase name, `name|sub` for a container
/// command, `NULL` for one replikv does not serve.
pub fn command_label(args: &[Bytes]) -> String {
    let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
    if !COMMANDS.iter().any(|c| c.0 == name) {
        return "NULL".to_string();
    }
    match args.get(1) {
        Some(sub)
            if CONTAINER_COMMANDS.contains(&name.as_str())
                && sub.len() <= SUBCOMMAND_BYTES_MAX
                && sub.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-') =>
        {
            format!("{name}|{}", String::from_utf8_lossy(sub).to_ascii_lowercase())
        }
        _ => name,
    }
}

/// The commands [`execute`] answers.
const ANSWERED: &[&str] = &[
    "ping",
    "echo",
    "hello",
    "auth",
    "client",
    "command",
    "config",
    "info",
    "time",
    "role",
    "replikv.consistency",
    "replikv.session",
    "replikv.guarantee",
    "replikv.readfrom",
    "replikv.receipts",
    "replikv.receipt",
    "replikv.changes",
];

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
        "client" if args.len() >= 2 => client_command(args, client, state),
        "command" => command(args),
        "config" if args.len() >= 2 => config(args, state),
        "info" => Frame::Bulk(Bytes::from(info(args.get(1), client, state))),
        "time" if args.len() == 1 => time(),
        "role" if args.len() == 1 => role_frame(crate::replication::role(state)),
        "replikv.consistency" if args.len() <= 2 => consistency(args, client, state),
        "replikv.session" | "replikv.guarantee" | "replikv.readfrom" | "replikv.receipts" | "replikv.receipt" => {
            session_command(name, args, client, &state.config.id)
        }
        // Streamed by the connection when it is the last command of its round, outside MULTI.
        "replikv.changes" => Frame::error(
            "ERR REPLIKV.CHANGES must be the last command of its pipeline, outside MULTI: it streams until the \
             connection closes",
        ),
        "echo" | "client" | "config" | "time" | "role" | "replikv.consistency" => arity(name),
        _ => unreachable!("{name} is not answered here"),
    }
}

/// `REPLIKV.CONSISTENCY [ONE|QUORUM|ALL|w,r|DEFAULT]`: the connection's quorums in a
/// leaderless cluster (as Cassandra's `CONSISTENCY`), checked against the cluster's n; with no
/// argument, the level in force.
fn consistency(args: &[Bytes], client: &mut Client, state: &NodeState) -> Frame {
    use crate::config::ReplicationMode;
    let cluster = state.config.cluster.as_ref();
    let Some(cluster) = cluster.filter(|c| c.replication.mode == ReplicationMode::Leaderless) else {
        return Frame::error(
            "ERR REPLIKV.CONSISTENCY is for a leaderless cluster: this node has one leader, and its acks setting says \
             how many copies a write waits for",
        );
    };
    let nwr = match cluster.replication.nwr(cluster.nodes.len()) {
        Ok(nwr) => nwr,
        Err(e) => return Frame::error(format!("ERR {e}")),
    };
    let Some(level) = args.get(1) else {
        return Frame::bulk(match client.consistency {
            Some(level) => level.to_string(),
            None => format!("DEFAULT ({},{})", nwr.w, nwr.r),
        });
    };
    let text = String::from_utf8_lossy(level);
    if text.eq_ignore_ascii_case("default") {
        client.consistency = None;
        return Frame::ok();
    }
    match replikv_core::kv::Consistency::parse(&text) {
        Ok(level) => match level.resolve(nwr.n) {
            Ok(_) => {
                client.consistency = Some(level);
                Frame::ok()
            }
            Err(why) => Frame::error(format!("ERR consistency {level}: {why}")),
        },
        Err(why) => Frame::error(format!("ERR {why}")),
    }
}

/// `REPLIKV.SESSION [RESUME token | RESET]`, `REPLIKV.GUARANTEE [none|read-your-writes|monotonic-reads|
/// consistent-prefix|all]`, `REPLIKV.READFROM [leader|follower|nearest]` and `REPLIKV.RECEIPTS
/// [ON|OFF]`: the connection's session token, guarantee, read source and receipts
/// ([`crate::sessions`]); with no argument, the one in force. `REPLIKV.RECEIPT`: the last
/// answer's receipt (how a RESP2 client, which has no attributes, reads it).
fn session_command(name: &str, args: &[Bytes], client: &mut Client, node: &str) -> Frame {
    let Some(session) = client.session.as_mut() else {
        return Frame::error(format!(
            "ERR {} is for a node in a cluster: a node on its own has no replicas to be stale",
            name.to_ascii_uppercase()
        ));
    };
    let text = |i: usize| args.get(i).map(|a| String::from_utf8_lossy(a).into_owned());
    match (name, args.len()) {
        ("replikv.session", 1) => Frame::bulk(session.token()),
        ("replikv.session", 3) if text(1).is_some_and(|t| t.eq_ignore_ascii_case("resume")) => {
            match session.resume(&text(2).unwrap_or_default()) {
                Ok(()) => Frame::ok(),
                Err(why) => Frame::error(format!("ERR {why}")),
            }
        }
        ("replikv.session", 2) if text(1).is_some_and(|t| t.eq_ignore_ascii_case("reset")) => {
            session.reset();
            Frame::ok()
        }
        ("replikv.session", _) => Frame::error("ERR syntax: REPLIKV.SESSION [RESUME token | RESET]"),
        ("replikv.guarantee", 1) => Frame::bulk(session.guarantee().to_string()),
        ("replikv.guarantee", 2) => {
            match crate::sessions::Guarantee::parse(&text(1).unwrap_or_default()).and_then(|g| session.set_guarantee(g))
            {
                Ok(()) => Frame::ok(),
                Err(why) => Frame::error(format!("ERR {why}")),
            }
        }
        ("replikv.receipts", 1) => Frame::bulk(if session.receipts { "on" } else { "off" }),
        ("replikv.receipts", 2) => match text(1).unwrap_or_default().to_ascii_lowercase().as_str() {
            "on" => {
                session.receipts = true;
                Frame::ok()
            }
            "off" => {
                session.receipts = false;
                Frame::ok()
            }
            _ => Frame::error("ERR syntax: REPLIKV.RECEIPTS [ON|OFF]"),
        },
        ("replikv.receipt", 1) => match &session.last_receipt {
            Some(receipt) => {
                Frame::Map(receipt.fields(node).into_iter().map(|(k, v)| (Frame::bulk(k), Frame::bulk(v))).collect())
            }
            None => Frame::Null,
        },
        ("replikv.readfrom", 1) => Frame::bulk(session.read_from().to_string()),
        ("replikv.readfrom", 2) => {
            match crate::sessions::ReadFrom::parse(&text(1).unwrap_or_default()).and_then(|r| session.set_read_from(r))
            {
                Ok(()) => Frame::ok(),
                Err(why) => Frame::error(format!("ERR {why}")),
            }
        }
        _ => arity(name),
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

fn client_command(args: &[Bytes], client: &mut Client, state: &NodeState) -> Frame {
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
        ("info", 2) => {
            client.command = "client|info".to_string();
            Frame::Verbatim { format: *b"txt", text: Bytes::from(client_line(client, Instant::now()) + "\n") }
        }
        ("list", _) => {
            client.command = "client|list".to_string();
            client_list(&args[2..], client, state)
        }
        ("kill", 3..) => client_kill(&args[2..], client, state),
        ("setname" | "getname" | "id" | "setinfo" | "info" | "kill", _) => {
            Frame::error(format!("ERR wrong number of arguments for 'client|{sub}' command"))
        }
        _ => Frame::error(format!("ERR unknown subcommand '{}'. Try CLIENT HELP.", String::from_utf8_lossy(&args[1]))),
    }
}

/// Whether a client of `CLIENT LIST TYPE` or `CLIENT KILL TYPE` `kind` can be a RESP client
/// here: only `normal` (see the CAVEATS); `None` for a type Redis does not have.
fn normal_type(kind: &[u8]) -> Option<bool> {
    match kind.to_ascii_lowercase().as_slice() {
        b"normal" => Some(true),
        b"master" | b"replica" | b"slave" | b"pubsub" => Some(false),
        _ => None,
    }
}

fn unknown_type(kind: &[u8]) -> Frame {
    Frame::error(format!("ERR Unknown client type '{}'", String::from_utf8_lossy(kind)))
}

/// `CLIENT LIST [TYPE type | ID id...]`: the caller's line is its own, now; the others' are
/// as their connections last published them.
fn client_list(options: &[Bytes], client: &Client, state: &NodeState) -> Frame {
    let ids: Option<Vec<u64>> = match options {
        [] => None,
        [option, kind] if option.eq_ignore_ascii_case(b"type") => match normal_type(kind) {
            Some(true) => None,
            Some(false) => Some(Vec::new()),
            None => return unknown_type(kind),
        },
        [option, ids @ ..] if option.eq_ignore_ascii_case(b"id") && !ids.is_empty() => {
            let parsed: Option<Vec<u64>> =
                ids.iter().map(|id| std::str::from_utf8(id).ok()?.parse().ok().filter(|n| *n > 0)).collect();
            match parsed {
                Some(ids) => Some(ids),
                None => return Frame::error("ERR Invalid client ID"),
            }
        }
        _ => return Frame::error("ERR syntax error"),
    };
    let now = Instant::now();
    let mut text = String::new();
    for other in state.clients.list() {
        if ids.as_ref().is_some_and(|ids| !ids.contains(&other.id)) {
            continue;
        }
        let line = if other.id == client.id { client_line(client, now) } else { client_line(&other, now) };
        text.push_str(&line);
        text.push('\n');
    }
    Frame::Verbatim { format: *b"txt", text: Bytes::from(text) }
}

/// `CLIENT KILL addr` (Redis's old form: OK or an error) or `CLIENT KILL filter value ...`
/// (the number of connections told to close).
fn client_kill(options: &[Bytes], client: &Client, state: &NodeState) -> Frame {
    if let [addr] = options {
        let addr = String::from_utf8_lossy(addr);
        return match state.clients.kill(|c| c.addr.to_string() == addr) {
            0 => Frame::error("ERR No such client"),
            _ => Frame::ok(),
        };
    }
    if !options.len().is_multiple_of(2) {
        return Frame::error("ERR syntax error");
    }
    let (mut id, mut addr, mut laddr, mut normal, mut skip_me) = (None, None, None, true, true);
    for pair in options.chunks(2) {
        let (filter, value) = (pair[0].to_ascii_lowercase(), &pair[1]);
        let text = String::from_utf8_lossy(value).into_owned();
        match filter.as_slice() {
            b"id" => match text.parse::<u64>() {
                Ok(n) if n > 0 => id = Some(n),
                _ => return Frame::error("ERR client-id should be greater than 0"),
            },
            b"addr" => addr = Some(text),
            b"laddr" => laddr = Some(text),
            b"type" => match normal_type(value) {
                Some(is_normal) => normal = is_normal,
                None => return unknown_type(value),
            },
            b"skipme" => match text.to_ascii_lowercase().as_str() {
                "yes" => skip_me = true,
                "no" => skip_me = false,
                _ => return Frame::error("ERR syntax error"),
            },
            _ => return Frame::error("ERR syntax error"),
        }
    }
    let killed = state.clients.kill(|c| {
        normal
            && id.is_none_or(|id| c.id == id)
            && addr.as_ref().is_none_or(|a| c.addr.to_string() == *a)
            && laddr.as_ref().is_none_or(|a| c.local_addr.to_string() == *a)
            && !(skip_me && c.id == client.id)
    });
    Frame::Integer(killed as i64)
}

/// One line of `CLIENT LIST` or `CLIENT INFO` at `now`, with Redis's fields in Redis's order
/// (see the module documentation for the fields replikv fixes).
fn client_line(client: &Client, now: Instant) -> String {
    let resp = if client.proto == Protocol::Resp3 { 3 } else { 2 };
    let age = now.saturating_duration_since(client.created).as_secs();
    let idle = now.saturating_duration_since(client.last_active).as_secs();
    let flags = if client.multi >= 0 { "x" } else { "N" };
    format!(
        "id={} addr={} laddr={} fd={} name={} age={age} idle={idle} flags={flags} db={} sub=0 psub=0 ssub=0 \
         multi={} watch={} qbuf={} qbuf-free={} argv-mem=0 multi-mem=0 obl=0 oll=0 omem=0 tot-mem={} events=r \
         cmd={} user=default redir=-1 resp={resp} lib-name={} lib-ver={}",
        client.id,
        client.addr,
        client.local_addr,
        client.fd,
        client.name,
        client.db,
        client.multi,
        client.watch,
        client.query_buffer_bytes,
        client.query_buffer_free_bytes,
        client.buffer_bytes,
        client.command,
        client.lib_name,
        client.lib_ver
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
    ("eval", -3, &["noscript", "may_replicate"], 0, 0, 0),
    ("evalsha", -3, &["noscript", "may_replicate"], 0, 0, 0),
    ("script", -2, &["noscript"], 0, 0, 0),
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
    ("replikv.siblings", 2, &["readonly"], 1, 1, 1),
    ("replikv.conflicts", -1, &["readonly"], 0, 0, 0),
    ("replikv.consistency", -1, &["fast"], 0, 0, 0),
    ("replikv.session", -1, &["fast"], 0, 0, 0),
    ("replikv.guarantee", -1, &["fast"], 0, 0, 0),
    ("replikv.readfrom", -1, &["fast"], 0, 0, 0),
    ("replikv.receipts", -1, &["fast"], 0, 0, 0),
    ("replikv.receipt", 1, &["fast"], 0, 0, 0),
    ("replikv.log", -3, &["readonly"], 0, 0, 0),
    ("replikv.changes", -1, &["readonly", "pubsub"], 0, 0, 0),
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
            let mut found = Vec::new();
            for (name, value) in state.live.pairs() {
                if args[2..].iter().any(|p| glob_match(&p.to_ascii_lowercase(), name.as_bytes())) {
                    found.push((Frame::bulk(name), Frame::bulk(value)));
                }
            }
            Frame::Map(found)
        }
        "set" if args.len() >= 4 && args.len().is_multiple_of(2) => {
            let pairs: Vec<(&[u8], &[u8])> = args[2..].chunks(2).map(|p| (&p[0][..], &p[1][..])).collect();
            match state.live.set(&pairs, &state.handle) {
                Ok(()) => Frame::ok(),
                Err(e) => Frame::error(e.to_string()),
            }
        }
        "rewrite" => Frame::error(
            "ERR CONFIG REWRITE is not supported: replikv never writes its configuration file, so changes made with \
             CONFIG SET last until the node restarts (put them in the file or flags to keep them)",
        ),
        "resetstat" => Frame::ok(),
        "get" | "set" => Frame::error(format!("ERR wrong number of arguments for 'config|{sub}' command")),
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
            state.live.connections_max(),
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
    let keyspace: String = state
        .handle
        .keyspace()
        .iter()
        .map(|d| format!("db{}:keys={},expires={},avg_ttl=0\r\n", d.db, d.keys, d.expires))
        .collect();
    add("keyspace", "Keyspace", keyspace);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{NodeArgs, NodeConfig};
    use std::sync::Arc;

    /// A node's state over a lone in-memory replica, and its runtime to shut down.
    fn node() -> (NodeState, crate::runtime::Runtime) {
        let replica = replikv_core::node::Replica::new(
            replikv_core::storage::MemoryEngine::new(),
            replikv_core::version::NodeId(1),
        );
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let (failed, _) = tokio::sync::watch::channel(false);
        let runtime = crate::runtime::Runtime::start(replica, metrics.clone(), 16, 16, Arc::new(|_, _| {}), failed);
        let config = NodeConfig::resolve(&NodeArgs::default()).unwrap();
        (NodeState::new(config, metrics, runtime.handle(), None), runtime)
    }

    fn client(id: u64, port: u16) -> Client {
        Client::new(id, ([127, 0, 0, 1], port).into(), ([127, 0, 0, 1], 6380).into(), 7)
    }

    /// Runs `line` (words split on spaces) as `client`; the reply as text.
    fn run(line: &str, client: &mut Client, state: &NodeState) -> String {
        let args: Vec<Bytes> = line.split(' ').map(|w| Bytes::copy_from_slice(w.as_bytes())).collect();
        let name = line.split(' ').next().unwrap().to_ascii_lowercase();
        match execute(&name, &args, client, state) {
            Frame::Error(e) => format!("-{e}"),
            Frame::Verbatim { text, .. } => String::from_utf8_lossy(&text).into_owned(),
            Frame::Integer(n) => format!(":{n}"),
            Frame::Simple(s) => format!("+{s}"),
            _ => panic!("{line}: unexpected another reply"),
        }
    }

    #[tokio::test]
    async fn client_info_has_redis_fields_in_redis_order() {
        let (state, runtime) = node();
        let mut me = client(3, 50000);
        me.name = "app".into();
        let line = run("CLIENT INFO", &mut me, &state);
        let keys: Vec<&str> = line.trim_end().split(' ').map(|f| f.split('=').next().unwrap()).collect();
        let want = "id addr laddr fd name age idle flags db sub psub ssub multi watch qbuf qbuf-free argv-mem \
                    multi-mem obl oll omem tot-mem events cmd user redir resp lib-name lib-ver";
        assert_eq!(keys.join(" "), want);
        for field in ["id=3 ", "addr=127.0.0.1:50000 ", "laddr=127.0.0.1:6380 ", "fd=7 ", "name=app ", "flags=N "] {
            assert!(line.contains(field), "{field} in {line}");
        }
        for field in ["db=0 ", "multi=-1 ", "watch=0 ", "cmd=client|info ", "resp=2 ", "user=default "] {
            assert!(line.contains(field), "{field} in {line}");
        }
        assert!(line.ends_with("lib-ver=\n"), "{line:?}");
        runtime.shutdown().await;
    }

    #[tokio::test]
    async fn client_list_shows_every_registered_connection_and_filters_like_redis() {
        let (state, runtime) = node();
        let (mut me, mut other) = (client(1, 50001), client(2, 50002));
        let _mine = state.clients.admit(me.clone(), 10).unwrap();
        let theirs = state.clients.admit(other.clone(), 10).unwrap();
        other.name = "worker".into();
        other.command = "get".into();
        theirs.publish(&other);
        let all = run("CLIENT LIST", &mut me, &state);
        let lines: Vec<&str> = all.lines().collect();
        assert_eq!(lines.len(), 2, "{all}");
        assert!(lines[0].starts_with("id=1 ") && lines[0].contains(" cmd=client|list "), "the caller, now: {all}");
        assert!(lines[1].starts_with("id=2 ") && lines[1].contains(" name=worker ") && lines[1].contains(" cmd=get "));
        let table = [
            ("CLIENT LIST ID 2", "id=2 "),
            ("CLIENT LIST ID 2 1", "id=1 "),
            ("CLIENT LIST TYPE normal", "id=2 "),
            ("CLIENT LIST TYPE replica", ""),
            ("CLIENT LIST TYPE pubsub", ""),
            ("CLIENT LIST TYPE nosuch", "-ERR Unknown client type 'nosuch'"),
            ("CLIENT LIST ID x", "-ERR Invalid client ID"),
            ("CLIENT LIST ID 0", "-ERR Invalid client ID"),
            ("CLIENT LIST ID", "-ERR syntax error"),
            ("CLIENT LIST BOGUS 1", "-ERR syntax error"),
        ];
        for (line, want) in table {
            let got = run(line, &mut me, &state);
            assert!(got.contains(want) && (!want.is_empty() || got.is_empty()), "{line}: {got:?}");
        }
        assert_eq!(run("CLIENT LIST ID 2", &mut me, &state).lines().count(), 1);
        runtime.shutdown().await;
    }

    #[tokio::test]
    async fn client_kill_signals_the_chosen_connections() {
        let (state, runtime) = node();
        let mut me = client(1, 50001);
        let mine = state.clients.admit(me.clone(), 10).unwrap();
        let theirs = state.clients.admit(client(2, 50002), 10).unwrap();
        let table = [
            ("CLIENT KILL ID 9", ":0"),
            ("CLIENT KILL ID 0", "-ERR client-id should be greater than 0"),
            ("CLIENT KILL ID 1", ":0"), // SKIPME yes by default
            ("CLIENT KILL TYPE master", ":0"),
            ("CLIENT KILL TYPE what", "-ERR Unknown client type 'what'"),
            ("CLIENT KILL ID 1 SKIPME maybe", "-ERR syntax error"),
            ("CLIENT KILL ID 1 SKIPME", "-ERR syntax error"),
            ("CLIENT KILL ID", "-ERR No such client"), // three words: the old form, as in Redis
            ("CLIENT KILL 127.0.0.1:1", "-ERR No such client"),
        ];
        for (line, want) in table {
            assert_eq!(run(line, &mut me, &state), want, "{line}");
        }
        assert!(!mine.killed() && !theirs.killed(), "nobody chosen yet");
        assert_eq!(run("CLIENT KILL ADDR 127.0.0.1:50002", &mut me, &state), ":1");
        assert!(theirs.killed() && !mine.killed());
        assert_eq!(run("CLIENT KILL 127.0.0.1:50001", &mut me, &state), "+OK", "the old form kills the caller too");
        assert!(mine.killed());
        runtime.shutdown().await;
    }

    #[tokio::test]
    async fn config_set_rewrite_and_get_answer_as_redis_does() {
        let (state, runtime) = node();
        let mut me = client(1, 50001);
        let table = [
            ("CONFIG SET maxclients", "-ERR wrong number of arguments for 'config|set' command"),
            ("CONFIG SET maxclients 5 tick_ms", "-ERR wrong number of arguments for 'config|set' command"),
            ("CONFIG SET nosuch 5", "-ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'"),
            ("CONFIG SET maxclients 5", "+OK"),
            ("CONFIG REWRITE", "-ERR CONFIG REWRITE is not supported: replikv never writes its configuration file"),
        ];
        for (line, want) in table {
            let got = run(line, &mut me, &state);
            assert!(got.starts_with(want), "{line}: {got}");
        }
        let args: Vec<Bytes> = ["CONFIG", "GET", "maxclients"].into_iter().map(Bytes::from).collect();
        let Frame::Map(found) = execute("config", &args, &mut me, &state) else { panic!() };
        assert_eq!(found, vec![(Frame::bulk("maxclients".to_string()), Frame::bulk("5".to_string()))]);
        let info = info(Some(&Bytes::from_static(b"clients")), &me, &state);
        assert!(info.contains("maxclients:5\r\n"), "{info}");
        runtime.shutdown().await;
    }

    #[test]
    fn cmd_names_the_command_and_a_container_command_its_subcommand() {
        let table = [
            ("GET k", "get"),
            ("client SETNAME x", "client|setname"),
            ("CONFIG GET *", "config|get"),
            ("config", "config"),
            ("client a|b", "client"),
            ("nosuch x", "NULL"),
        ];
        for (line, want) in table {
            let args: Vec<Bytes> = line.split(' ').map(|w| Bytes::copy_from_slice(w.as_bytes())).collect();
            assert_eq!(command_label(&args), want, "{line}");
        }
    }
}
