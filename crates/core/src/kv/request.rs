//! The request and reply vocabulary of the key-value layer.

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};

/// The names a request or reply holds as `&'static str`, so that one read from a peer maps
/// back onto them (a forwarded request, its reply).
const KNOWN_NAMES: &[&str] = &["expire", "pexpire", "expireat", "pexpireat", "string", "none", "QUEUED"];

/// A name fixed at compile time. (An alias, so that serde does not take a field of this type
/// for a string borrowed from the input.)
pub type StaticName = &'static str;

/// Deserializes one of [`KNOWN_NAMES`]; any other text is an error.
fn known_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<&'static str, D::Error> {
    let name = String::deserialize(deserializer)?;
    KNOWN_NAMES
        .iter()
        .find(|known| **known == name)
        .copied()
        .ok_or_else(|| serde::de::Error::custom(format!("unknown name {name:?}")))
}

/// When a SET applies, by whether the key exists (Redis's NX and XX).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetCondition {
    /// Always (no flag).
    #[default]
    Always,
    /// Only if the key does not exist (NX).
    IfAbsent,
    /// Only if the key exists (XX).
    IfPresent,
}

/// What a write does to the key's expiry deadline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expiry {
    /// Remove any deadline (a plain SET).
    #[default]
    Clear,
    /// Keep the key's current deadline (KEEPTTL).
    Keep,
    /// Expire this many milliseconds after the request executes (EX, PX). Must be positive.
    InMs(i64),
    /// Expire at this Unix time in milliseconds (EXAT, PXAT). Must be positive.
    AtMs(i64),
}

/// A key-value request, as a front end parsed it. Keys and values are bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// GET key: the value, or nil.
    Get {
        /// The key.
        key: Bytes,
    },
    /// SET key value \[NX|XX\] \[GET\] \[EX|PX|EXAT|PXAT|KEEPTTL\]: OK, or nil when the condition
    /// failed; with `get`, the old value instead.
    Set {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// When it applies (NX, XX).
        condition: SetCondition,
        /// Answer with the old value instead of OK (GET).
        get: bool,
        /// What happens to the deadline.
        expiry: Expiry,
    },
    /// SETNX key value: 1 if set, 0 if the key existed.
    SetNx {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// GETDEL key: the value, deleting the key.
    GetDel {
        /// The key.
        key: Bytes,
    },
    /// DEL / UNLINK key...: how many keys existed and were deleted.
    Del {
        /// The keys, in the client's order.
        keys: Vec<Bytes>,
    },
    /// EXISTS key...: how many of the keys exist (a key named twice counts twice).
    Exists {
        /// The keys, in the client's order.
        keys: Vec<Bytes>,
    },
    /// MGET key...: each value or nil.
    MGet {
        /// The keys, in the client's order.
        keys: Vec<Bytes>,
    },
    /// MSET / MSETNX key value...: with `if_none_exist`, sets all or none and answers 1 or 0.
    MSet {
        /// (key, value) pairs, in the client's order.
        pairs: Vec<(Bytes, Bytes)>,
        /// MSETNX: only if none of the keys exists.
        if_none_exist: bool,
    },
    /// INCR / DECR / INCRBY / DECRBY: the new value.
    IncrBy {
        /// The key.
        key: Bytes,
        /// What to add (negative to subtract).
        delta: i64,
    },
    /// INCRBYFLOAT key delta: the new value as a string.
    IncrByFloat {
        /// The key.
        key: Bytes,
        /// What to add (negative to subtract).
        delta: f64,
    },
    /// APPEND key value: the new length.
    Append {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// STRLEN key: the value's length, 0 if absent.
    Strlen {
        /// The key.
        key: Bytes,
    },
    /// TYPE key: `string` or `none`.
    Type {
        /// The key.
        key: Bytes,
    },
    /// KEYS pattern: every key matching the glob.
    Keys {
        /// A glob: `*`, `?`, `[...]`, and `\\` to escape.
        pattern: Bytes,
    },
    /// SCAN cursor \[MATCH pattern\] \[COUNT n\]: the next cursor and a batch of keys.
    Scan {
        /// 0 to start, or a cursor an earlier SCAN returned.
        cursor: u64,
        /// A glob: `*`, `?`, `[...]`, and `\\` to escape.
        pattern: Option<Bytes>,
        /// Keys to examine (COUNT; at most `SCAN_COUNT_MAX`).
        count: usize,
    },
    /// EXPIRE / PEXPIRE / EXPIREAT / PEXPIREAT: 1 if the deadline was set, 0 if the key is
    /// absent. A deadline already past deletes the key.
    Expire {
        /// The key.
        key: Bytes,
        /// What happens to the deadline.
        expiry: Expiry,
        /// The command's name, for error texts.
        #[serde(deserialize_with = "known_name")]
        command: StaticName,
    },
    /// TTL / PTTL: time left (seconds or milliseconds), -1 without deadline, -2 if absent.
    Ttl {
        /// The key.
        key: Bytes,
        /// PTTL (milliseconds) rather than TTL (seconds).
        millis: bool,
    },
    /// PERSIST key: 1 if a deadline was removed.
    Persist {
        /// The key.
        key: Bytes,
    },
    /// DBSIZE: the number of keys.
    DbSize,
    /// FLUSHALL: delete every key.
    FlushAll,
    /// REPLIKV.DIGEST \[BUCKET n\]: the replica's Merkle digest (see [`crate::digest`]) with its
    /// log position, or one bucket's keys and entry hashes. The replica, not the store,
    /// answers it.
    Digest {
        /// One bucket's entries instead of the whole digest.
        bucket: Option<usize>,
    },
    /// REPLIKV.LOG after count: the replication log's records after `after`, at most `count`,
    /// as `[lsn, epoch, [key...]]` (keys only, no values): what `replikv failover --dry-run`
    /// names. The replica, not the store, answers it.
    Log {
        /// The records after this position.
        after: u64,
        /// Records at most (at most [`crate::replica::LOG_LIST_RECORDS_MAX`]).
        count: u64,
    },
    /// FAILOVER \[TO host port \[FORCE\]\] \[ABORT\] \[TIMEOUT ms\], as Redis has it: the leader
    /// stops taking writes (they wait), lets the target catch up, and hands over; it then
    /// follows the target. The replica, not the store, answers it.
    Failover {
        /// The follower to hand over to, as `host:port` of its client address; `None`: the
        /// most up-to-date follower.
        to: Option<String>,
        /// Hand over at the timeout even if the target has not caught up (needs `to` and a
        /// timeout).
        force: bool,
        /// Cancel a handover under way.
        abort: bool,
        /// Milliseconds to wait for the target to catch up; 0: no limit.
        timeout_ms: u64,
    },
    /// WAIT numreplicas timeout: block until every write made before it is durable on
    /// `replicas` followers, or `timeout_ms` passed (0: no limit); answers how many have it.
    /// The replica, not the store, answers it.
    Wait {
        /// Followers wanted.
        replicas: u64,
        /// Milliseconds to wait at most; 0 waits without limit.
        timeout_ms: u64,
    },
    /// EXEC after MULTI: the queued requests, executed in order at one `now` with nothing in
    /// between; their writes are one request of the replication log, applied whole by every
    /// replica. Answers an array of their replies, or [`Reply::NullArray`] (nothing executed)
    /// when a watched key changed since its WATCH.
    Exec {
        /// The queued requests, in the client's order.
        requests: Vec<Request>,
        /// The keys the connection watches, as WATCH saw them.
        watched: Vec<Watched>,
    },
    /// WATCH key...: the keys' states now, answered as [`Reply::Watched`]; the front end keeps
    /// them and sends them with its EXEC, which fails if any changed.
    Watch {
        /// The keys, in the client's order.
        keys: Vec<Bytes>,
    },
    /// A request in database `db` (after `SELECT db`); a request without it is in database 0.
    /// Made by [`Request::in_db`].
    InDb {
        /// The database, below the store's `databases`.
        db: u32,
        /// The request.
        request: Box<Request>,
    },
    /// FLUSHDB: delete every key of the database.
    FlushDb,
    /// MOVE key db: moves the key to database `db` if it exists here and not there; 1 or 0.
    Move {
        /// The key.
        key: Bytes,
        /// The database to move it to.
        db: i64,
    },
    /// SWAPDB a b: the two databases trade their keys, at once for every client.
    SwapDb {
        /// One database.
        a: i64,
        /// The other.
        b: i64,
    },
}

/// A watched key as WATCH saw it: EXEC fails when the key's newest record (a value or a
/// tombstone) is no longer this one, or the key was live and has expired since.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watched {
    /// The key.
    pub key: Bytes,
    /// The version of its newest record, tombstones included; `None` if it never existed.
    pub version: Option<crate::version::Version>,
    /// True when it held a value that had not expired.
    pub live: bool,
}

impl Request {
    /// This request in database `db`: wrapped unless `db` is 0 or the request is not about one
    /// database's keys (the replica answers it, or it holds requests that are wrapped).
    pub fn in_db(self, db: u32) -> Request {
        match self {
            request if db == 0 => request,
            request @ (Request::Exec { .. }
            | Request::Wait { .. }
            | Request::Digest { .. }
            | Request::Failover { .. }
            | Request::Log { .. }
            | Request::FlushAll
            | Request::SwapDb { .. }
            | Request::InDb { .. }) => request,
            request => Request::InDb { db, request: Box::new(request) },
        }
    }

    /// Every key the request names, to be rewritten as the store's physical keys.
    pub fn keys_mut(&mut self) -> Vec<&mut Bytes> {
        match self {
            Request::Get { key }
            | Request::Set { key, .. }
            | Request::SetNx { key, .. }
            | Request::GetDel { key }
            | Request::IncrBy { key, .. }
            | Request::IncrByFloat { key, .. }
            | Request::Append { key, .. }
            | Request::Strlen { key }
            | Request::Type { key }
            | Request::Expire { key, .. }
            | Request::Ttl { key, .. }
            | Request::Persist { key }
            | Request::Move { key, .. } => vec![key],
            Request::Del { keys } | Request::Exists { keys } | Request::MGet { keys } | Request::Watch { keys } => {
                keys.iter_mut().collect()
            }
            Request::MSet { pairs, .. } => pairs.iter_mut().map(|(key, _)| key).collect(),
            // Patterns and cursors are matched against the client's keys; the rest name none,
            // or hold requests that name their own.
            Request::Keys { .. }
            | Request::Scan { .. }
            | Request::DbSize
            | Request::FlushAll
            | Request::FlushDb
            | Request::SwapDb { .. }
            | Request::Digest { .. }
            | Request::Log { .. }
            | Request::Failover { .. }
            | Request::Wait { .. }
            | Request::Exec { .. }
            | Request::InDb { .. } => Vec::new(),
        }
    }

    /// True when the request may write. A read-only replica refuses these.
    pub fn is_write(&self) -> bool {
        match self {
            Request::Exec { requests, .. } => return requests.iter().any(Request::is_write),
            Request::InDb { request, .. } => return request.is_write(),
            _ => {}
        }
        !matches!(
            self,
            Request::Get { .. }
                | Request::Exists { .. }
                | Request::MGet { .. }
                | Request::Strlen { .. }
                | Request::Type { .. }
                | Request::Keys { .. }
                | Request::Scan { .. }
                | Request::Ttl { .. }
                | Request::DbSize
                | Request::Wait { .. }
                | Request::Failover { .. }
                | Request::Log { .. }
                | Request::Digest { .. }
                | Request::Watch { .. }
        )
    }
}

/// A key-value reply, protocol-neutral; front ends encode it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// Success without data (`+OK`).
    Ok,
    /// A short status word (`+string`).
    Status(#[serde(deserialize_with = "known_name")] StaticName),
    /// No value (`$-1` / `_`).
    Nil,
    /// A number.
    Int(i64),
    /// A value.
    Bulk(Bytes),
    /// A list of replies.
    Array(Vec<Reply>),
    /// The request failed; the text starts with Redis's error code (`ERR ...`).
    Error(String),
    /// No array (`*-1` / `_`): an EXEC whose watched keys changed.
    NullArray,
    /// WATCH's answer to the front end, which keeps it and tells the client `OK`.
    Watched(Vec<Watched>),
}

impl Reply {
    /// An error reply with Redis's generic `ERR` code.
    pub fn err(message: impl std::fmt::Display) -> Reply {
        Reply::Error(format!("ERR {message}"))
    }
}
