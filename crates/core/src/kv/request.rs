//! The request and reply vocabulary of the key-value layer.

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};

/// The names a request or reply holds as `&'static str`, so that one read from a peer maps
/// back onto them (a forwarded request, its reply).
const KNOWN_NAMES: &[&str] =
    &["expire", "pexpire", "expireat", "pexpireat", "string", "none", "setex", "psetex", "QUEUED"];

/// OBJECT HELP's lines, as Redis 7 prints them (status replies, so names in the sense of
/// [`KNOWN_NAMES`]).
pub(super) const OBJECT_HELP: &[&str] = &[
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>",
    "    Return the kind of internal representation used in order to store the value",
    "    associated with a <key>.",
    "FREQ <key>",
    "    Return the access frequency index of the <key>. The returned integer is",
    "    proportional to the logarithm of the recent access frequency of the key.",
    "IDLETIME <key>",
    "    Return the idle time of the <key>, that is the approximated number of",
    "    seconds elapsed since the last access to the key.",
    "REFCOUNT <key>",
    "    Return the number of references of the value associated with the specified",
    "    <key>.",
    "HELP",
    "    Print this help.",
];

/// A name fixed at compile time. (An alias, so that serde does not take a field of this type
/// for a string borrowed from the input.)
pub type StaticName = &'static str;

/// Deserializes one of [`KNOWN_NAMES`]; any other text is an error.
fn known_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<&'static str, D::Error> {
    let name = String::deserialize(deserializer)?;
    KNOWN_NAMES
        .iter()
        .chain(OBJECT_HELP)
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

/// EXPIRE's conditions (Redis 7's NX, XX, GT, LT), checked in this order; the parser refuses
/// NX with any other, and GT with LT.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpireCondition {
    /// NX: only if the key has no deadline.
    pub nx: bool,
    /// XX: only if the key has a deadline.
    pub xx: bool,
    /// GT: only if the new deadline is later than the current one (no deadline counts as
    /// infinitely late, so GT never applies to a key without one).
    pub gt: bool,
    /// LT: only if the new deadline is earlier than the current one (no deadline counts as
    /// infinitely late, so LT always applies to a key without one).
    pub lt: bool,
}

/// What GETEX does to the key's deadline.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum GetExExpiry {
    /// No option: a GET that changes nothing.
    #[default]
    Keep,
    /// PERSIST: remove the deadline.
    Persist,
    /// EX, PX, EXAT or PXAT. The amount is kept as the client sent it, because Redis checks it
    /// only once the key is known to exist (a missing key answers nil whatever the amount).
    Set {
        /// The amount's text (an integer, if the client got it right).
        amount: Bytes,
        /// EX, EXAT: seconds; PX, PXAT: milliseconds.
        seconds: bool,
        /// EXAT, PXAT: a Unix time; EX, PX: a time from now.
        absolute: bool,
    },
}

/// A BITCOUNT range: `start` and `end` inclusive, negative from the end, in bytes or bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BitRange {
    /// The first byte or bit counted (negative: from the end).
    pub start: i64,
    /// The last byte or bit counted (negative: from the end).
    pub end: i64,
    /// BIT: `start` and `end` count bits; BYTE (the default): bytes.
    pub bits: bool,
}

/// What LCS answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LcsAnswer {
    /// No option: the longest common subsequence itself.
    Text,
    /// LEN: its length.
    Len,
    /// IDX: the matching ranges in both strings, last first, and the length.
    Idx {
        /// MINMATCHLEN: ranges shorter than this are left out (0: none is).
        min_match_len: u64,
        /// WITHMATCHLEN: each range also gives its length.
        with_match_len: bool,
    },
}

/// What OBJECT tells of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectField {
    /// ENCODING: "int", "embstr" or "raw", from the value's bytes.
    Encoding,
    /// FREQ: always Redis's error for a maxmemory policy that is not LFU.
    Freq,
    /// IDLETIME: always 0 (access times are not tracked).
    IdleTime,
    /// REFCOUNT: always 1.
    RefCount,
}

/// Conflict log entries REPLIKV.CONFLICTS lists when COUNT is not given.
pub const CONFLICTS_LISTED_DEFAULT: u64 = 10;

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
    /// EVAL script numkeys key... arg...: runs a Lua script atomically (see
    /// [`super::scripts`]): what it wrote is applied whole, or nothing when it fails.
    Eval {
        /// The script's source.
        script: Bytes,
        /// `KEYS`, client keys.
        keys: Vec<Bytes>,
        /// `ARGV`.
        args: Vec<Bytes>,
    },
    /// EVALSHA sha1 numkeys key... arg...: EVAL of a script this node has cached.
    EvalSha {
        /// The script's SHA1, in hex.
        sha: Bytes,
        /// `KEYS`, client keys.
        keys: Vec<Bytes>,
        /// `ARGV`.
        args: Vec<Bytes>,
    },
    /// SCRIPT LOAD script: caches a script on this node and answers its SHA1.
    ScriptLoad {
        /// The script's source.
        script: Bytes,
    },
    /// SCRIPT EXISTS sha1...: 1 or 0 for each, whether this node has it cached.
    ScriptExists {
        /// The SHA1s asked about.
        shas: Vec<Bytes>,
    },
    /// SCRIPT FLUSH \[ASYNC|SYNC\]: forgets every cached script.
    ScriptFlush,
    /// REPLIKV.LOG after count \[CHANGES\] \[PREFIX p\]: the replication log's records after
    /// `after`, at most `count`. Without CHANGES, each as `[lsn, epoch, [key...]]` (physical
    /// keys only, no values): what `replikv failover --dry-run` names. With CHANGES, each as
    /// the pairs of [`crate::replication::show::record_reply`]: its transaction and each
    /// change's old and new value and version (the lecture's logical log). PREFIX keeps the
    /// changes (with CHANGES) or keys of client keys starting with `p`; a record without any is
    /// listed still, so that a reader knows how far it got. With CHANGES only what a change
    /// stream may deliver is listed (committed, never an abandoned request). The replica, not
    /// the store, answers it.
    Log {
        /// The records after this position.
        after: u64,
        /// Records at most (at most [`crate::single_leader::LOG_LIST_RECORDS_MAX`]).
        count: u64,
        /// Each change in full, not keys only.
        changes: bool,
        /// Only changes of client keys starting with this (empty: all).
        prefix: Bytes,
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
    /// GETEX key \[EX s|PX ms|EXAT s|PXAT ms|PERSIST\]: the value (or nil), changing its
    /// deadline; a Unix time already past deletes the key.
    GetEx {
        /// The key.
        key: Bytes,
        /// What happens to the deadline.
        expiry: GetExExpiry,
    },
    /// SETEX key seconds value / PSETEX key ms value: OK; sets the value with a deadline.
    SetEx {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// Milliseconds from now until the deadline; positive.
        ttl_ms: i64,
        /// The command's name, for error texts.
        #[serde(deserialize_with = "known_name")]
        command: StaticName,
    },
    /// SETRANGE key offset value: the new length; overwrites from `offset`, padding with zero
    /// bytes.
    SetRange {
        /// The key.
        key: Bytes,
        /// Where the value goes, in bytes.
        offset: u64,
        /// The bytes written there.
        value: Bytes,
    },
    /// GETRANGE / SUBSTR key start end: the bytes from `start` to `end` inclusive (negative:
    /// from the end); empty when the key is absent.
    GetRange {
        /// The key.
        key: Bytes,
        /// The first byte (negative: from the end).
        start: i64,
        /// The last byte (negative: from the end).
        end: i64,
    },
    /// SETBIT key offset 0|1: the bit's old value; grows the value with zero bytes.
    SetBit {
        /// The key.
        key: Bytes,
        /// The bit, counted from the first byte's most significant bit.
        offset: u64,
        /// Set (true) or clear (false).
        bit: bool,
    },
    /// GETBIT key offset: the bit, 0 past the end or when the key is absent.
    GetBit {
        /// The key.
        key: Bytes,
        /// The bit, counted from the first byte's most significant bit.
        offset: u64,
    },
    /// BITCOUNT key \[start end \[BYTE|BIT\]\]: how many bits are set.
    BitCount {
        /// The key.
        key: Bytes,
        /// The range counted; `None`: the whole value.
        range: Option<BitRange>,
    },
    /// LCS key1 key2 \[LEN\] \[IDX\] \[MINMATCHLEN n\] \[WITHMATCHLEN\]: the longest common
    /// subsequence of the two values (an absent key is empty).
    Lcs {
        /// The first key.
        a: Bytes,
        /// The second key.
        b: Bytes,
        /// What to answer.
        answer: LcsAnswer,
    },
    /// RENAME / RENAMENX source destination: moves the value and its deadline.
    Rename {
        /// The key renamed.
        source: Bytes,
        /// Its new name.
        destination: Bytes,
        /// RENAMENX: only if `destination` does not exist (answers 1 or 0 instead of OK).
        if_absent: bool,
    },
    /// COPY source destination \[DB n\] \[REPLACE\]: 1 if copied (value and deadline), 0 if
    /// the source is absent or the destination exists without REPLACE.
    Copy {
        /// The key copied.
        source: Bytes,
        /// Where the copy goes.
        destination: Bytes,
        /// DB: the destination database (the current one when `None`).
        db: Option<i64>,
        /// REPLACE: overwrite an existing destination.
        replace: bool,
    },
    /// EXPIRETIME / PEXPIRETIME key: the deadline as a Unix time (seconds or milliseconds),
    /// -1 without deadline, -2 if absent.
    ExpireTime {
        /// The key.
        key: Bytes,
        /// PEXPIRETIME (milliseconds) rather than EXPIRETIME (seconds).
        millis: bool,
    },
    /// OBJECT ENCODING|FREQ|IDLETIME|REFCOUNT key: what the store says of the key; nil if
    /// absent.
    Object {
        /// Which question.
        field: ObjectField,
        /// The key.
        key: Bytes,
    },
    /// OBJECT HELP: the subcommands, one status line each.
    ObjectHelp,
    /// TOUCH key...: how many of the keys exist (a key named twice counts twice).
    Touch {
        /// The keys, in the client's order.
        keys: Vec<Bytes>,
    },
    /// RANDOMKEY: a live key drawn by the store's seeded generator, or nil when there is none.
    RandomKey,
    /// EXPIRE / PEXPIRE / EXPIREAT / PEXPIREAT with NX, XX, GT or LT: as [`Request::Expire`],
    /// answering 0 when the condition fails. (A variant of its own, so that a plain EXPIRE
    /// keeps its encoding between peers.)
    ExpireIf {
        /// The key.
        key: Bytes,
        /// What happens to the deadline.
        expiry: Expiry,
        /// The command's name, for error texts.
        #[serde(deserialize_with = "known_name")]
        command: StaticName,
        /// When the new deadline applies.
        condition: ExpireCondition,
    },
    /// SET key value CONTEXT token (leaderless mode): OK; the value replaces every value the
    /// causal context (from REPLIKV.SIBLINGS) names.
    SetContext {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// The context token REPLIKV.SIBLINGS gave.
        context: Bytes,
    },
    /// REPLIKV.SIBLINGS key (leaderless and multi-leader modes): the causal context and every
    /// concurrent value.
    Siblings {
        /// The key.
        key: Bytes,
    },
    /// A request run with the quorums a connection chose (REPLIKV.CONSISTENCY, or HTTP's
    /// `?w=&r=`), leaderless mode only.
    WithConsistency {
        /// The quorums.
        consistency: Consistency,
        /// The request.
        request: Box<Request>,
    },
    /// REPLIKV.CONFLICTS \[prefix\] \[COUNT n\] (multi-leader mode): the newest `count` entries of
    /// the conflict log for keys starting with `prefix`, oldest first.
    Conflicts {
        /// The key prefix (empty: every key).
        prefix: Bytes,
        /// Entries at most ([`CONFLICTS_LISTED_DEFAULT`] when not given).
        count: u64,
    },
    /// A request of a session with guarantees (REPLIKV.GUARANTEE; single-leader, and inside a
    /// multi-leader datacenter): the replica answers only from a state that holds `after`, and
    /// says which position its answer reflects ([`Reply::InSession`]).
    Session {
        /// The newest position of the leader's history the session must see (its writes, and
        /// what it read before): `lsn` 0 for none.
        after: SessionPosition,
        /// How long a replica that does not hold `after` yet waits for it, before it answers
        /// with an error naming the gap and where to read instead.
        wait_ms: u64,
        /// Answer on the leader: a follower forwards the request (REPLIKV.READFROM leader, or
        /// read-your-writes sending reads to the leader for a while after a write).
        on_leader: bool,
        /// The request.
        request: Box<Request>,
    },
    /// A request of a session with guarantees in a leaderless cluster (REPLIKV.GUARANTEE):
    /// the coordinator answers a read only from a merge of replicas' states whose causal
    /// context covers `seen`, and says which context its answer reflects
    /// ([`Reply::InKeySession`]; see `crate::leaderless::session`).
    KeySession {
        /// What the session wrote or read of the key (empty for a write, or a key it never
        /// touched).
        seen: crate::causality::VersionVector,
        /// How long the coordinator asks the replicas again for a state that covers `seen`,
        /// before it answers with an error naming the gap.
        wait_ms: u64,
        /// Read from every replica of the key (r = n): for a key the session has forgotten
        /// (it tracks a bounded number), whose floor it no longer knows.
        every_replica: bool,
        /// The request.
        request: Box<Request>,
    },
}

/// A position of a single-leader history: a record's LSN and the epoch it was written in (the
/// epoch tells one history from another that reused the LSN after a failover).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionPosition {
    /// The record's LSN (0: the start, before any record).
    pub lsn: u64,
    /// Its epoch.
    pub epoch: u64,
}

/// How many replicas a leaderless request waits for, as Cassandra's consistency levels:
/// `ONE`, `QUORUM` (a majority of n), `ALL`, or `w,r` as numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Consistency {
    /// One replica.
    One,
    /// A majority of the key's n replicas.
    Quorum,
    /// All n replicas.
    All,
    /// A write waits for `w` replicas, a read for `r`.
    Nwr {
        /// Replicas a write waits for.
        w: usize,
        /// Replicas a read waits for.
        r: usize,
    },
}

impl Consistency {
    /// Parses `ONE`, `QUORUM`, `ALL` (any case) or `w,r`; an error says what is wrong.
    pub fn parse(text: &str) -> Result<Consistency, String> {
        match text.to_ascii_uppercase().as_str() {
            "ONE" => Ok(Consistency::One),
            "QUORUM" => Ok(Consistency::Quorum),
            "ALL" => Ok(Consistency::All),
            _ => {
                let bad = || format!("consistency {text:?}: use ONE, QUORUM, ALL or w,r (two numbers, at least 1)");
                let (w, r) = text.split_once(',').ok_or_else(bad)?;
                let w: usize = w.trim().parse().map_err(|_| bad())?;
                let r: usize = r.trim().parse().map_err(|_| bad())?;
                if w == 0 || r == 0 {
                    return Err(bad());
                }
                Ok(Consistency::Nwr { w, r })
            }
        }
    }

    /// The (w, r) this level means for keys of `n` replicas, checked against `n`.
    pub fn resolve(self, n: usize) -> Result<(usize, usize), String> {
        let (w, r) = match self {
            Consistency::One => (1, 1),
            Consistency::Quorum => (crate::quorum::majority(n), crate::quorum::majority(n)),
            Consistency::All => (n, n),
            Consistency::Nwr { w, r } => (w, r),
        };
        crate::quorum::Nwr::new(n, w, r).map(|nwr| (nwr.w, nwr.r))
    }
}

impl std::fmt::Display for Consistency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Consistency::One => f.write_str("ONE"),
            Consistency::Quorum => f.write_str("QUORUM"),
            Consistency::All => f.write_str("ALL"),
            Consistency::Nwr { w, r } => write!(f, "{w},{r}"),
        }
    }
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
    /// True when it sets a deadline relative to the time it executes (EX, PX, SETEX, PSETEX,
    /// EXPIRE, PEXPIRE, GETEX EX|PX, also inside a transaction): executed again at another
    /// clock, it sets another deadline. The statement log's nondeterministic request.
    pub fn relative_ttl(&self) -> bool {
        match self {
            Request::Set { expiry: Expiry::InMs(_), .. }
            | Request::Expire { expiry: Expiry::InMs(_), .. }
            | Request::ExpireIf { expiry: Expiry::InMs(_), .. }
            | Request::SetEx { .. }
            | Request::GetEx { expiry: GetExExpiry::Set { absolute: false, .. }, .. } => true,
            Request::InDb { request, .. } | Request::WithConsistency { request, .. } => request.relative_ttl(),
            Request::Exec { requests, .. } => requests.iter().any(Request::relative_ttl),
            _ => false,
        }
    }

    /// True when it sets an absolute deadline (EXAT, PXAT, EXPIREAT, PEXPIREAT, GETEX
    /// EXAT|PXAT, also inside a transaction): executed again, it compares the deadline with the
    /// replica's clock (a deadline already past deletes the key).
    pub fn absolute_ttl(&self) -> bool {
        match self {
            Request::Set { expiry: Expiry::AtMs(_), .. }
            | Request::Expire { expiry: Expiry::AtMs(_), .. }
            | Request::ExpireIf { expiry: Expiry::AtMs(_), .. }
            | Request::GetEx { expiry: GetExExpiry::Set { absolute: true, .. }, .. } => true,
            Request::InDb { request, .. } | Request::WithConsistency { request, .. } => request.absolute_ttl(),
            Request::Exec { requests, .. } => requests.iter().any(Request::absolute_ttl),
            _ => false,
        }
    }

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
            | Request::Move { key, .. }
            | Request::GetEx { key, .. }
            | Request::SetEx { key, .. }
            | Request::SetRange { key, .. }
            | Request::GetRange { key, .. }
            | Request::SetBit { key, .. }
            | Request::GetBit { key, .. }
            | Request::BitCount { key, .. }
            | Request::ExpireTime { key, .. }
            | Request::Object { key, .. }
            | Request::ExpireIf { key, .. }
            | Request::SetContext { key, .. }
            | Request::Siblings { key } => vec![key],
            Request::WithConsistency { request, .. }
            | Request::Session { request, .. }
            | Request::KeySession { request, .. } => request.keys_mut(),
            Request::Lcs { a, b, .. } => vec![a, b],
            // COPY ... DB moves the destination to the other database's namespace itself.
            Request::Rename { source, destination, .. } | Request::Copy { source, destination, .. } => {
                vec![source, destination]
            }
            Request::Del { keys }
            | Request::Exists { keys }
            | Request::MGet { keys }
            | Request::Watch { keys }
            | Request::Touch { keys } => keys.iter_mut().collect(),
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
            | Request::InDb { .. }
            | Request::ObjectHelp
            | Request::Conflicts { .. }
            // A script's KEYS are handed to it as the client wrote them; each command it runs
            // names its own.
            | Request::Eval { .. }
            | Request::EvalSha { .. }
            | Request::ScriptLoad { .. }
            | Request::ScriptExists { .. }
            | Request::ScriptFlush
            | Request::RandomKey => Vec::new(),
        }
    }

    /// True when the request may write. A read-only replica refuses these.
    pub fn is_write(&self) -> bool {
        match self {
            Request::Exec { requests, .. } => return requests.iter().any(Request::is_write),
            Request::InDb { request, .. }
            | Request::WithConsistency { request, .. }
            | Request::Session { request, .. }
            | Request::KeySession { request, .. } => return request.is_write(),
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
                | Request::Siblings { .. }
                | Request::Conflicts { .. }
                | Request::Watch { .. }
                | Request::GetRange { .. }
                | Request::GetBit { .. }
                | Request::BitCount { .. }
                | Request::Lcs { .. }
                | Request::ExpireTime { .. }
                | Request::Object { .. }
                | Request::ObjectHelp
                | Request::Touch { .. }
                | Request::RandomKey
                | Request::ScriptLoad { .. }
                | Request::ScriptExists { .. }
                | Request::ScriptFlush
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
    /// A [`Request::Session`]'s answer to the front end, which keeps the position in the
    /// session and tells the client `reply`.
    InSession {
        /// The position of the leader's history the answer reflects: a write's record, or the
        /// state a read saw.
        at: SessionPosition,
        /// The node answered on the leader (itself, or a follower forwarded the request).
        by_leader: bool,
        /// How long the replica waited to hold the session's position, in ms.
        waited_ms: u64,
        /// How stale the answer may be: records of the leader's log the replica knew of and
        /// had not applied (0 on the leader).
        behind_records: u64,
        /// And in time: ms since the leader message after which the replica held every record
        /// the leader had told it of (by its own clock; 0 on the leader): the leader may have
        /// written since. `u64::MAX` when it never did.
        behind_ms: u64,
        /// The answer.
        reply: Box<Reply>,
    },
    /// A [`Request::KeySession`]'s answer to the front end, which keeps the context in the
    /// session and tells the client `reply` (the receipt of a leaderless answer).
    InKeySession {
        /// The causal context of the state the answer reflects: the state a write made, or
        /// the merge of the replies a read answered from.
        context: crate::causality::VersionVector,
        /// The replicas that answered the read (a write: that hold the state durably).
        replicas: Vec<crate::version::NodeId>,
        /// The replicas whose reply was older than the answer: read repair sends them the
        /// answer's state.
        repaired: Vec<crate::version::NodeId>,
        /// How long the read was held for the session's floor, in ms (0: the first `r`
        /// replies covered it).
        waited_ms: u64,
        /// How many times the replicas were asked again for the floor (0: once was enough).
        asked_again: u32,
        /// The answer.
        reply: Box<Reply>,
    },
}

impl Reply {
    /// An error reply with Redis's generic `ERR` code.
    pub fn err(message: impl std::fmt::Display) -> Reply {
        Reply::Error(format!("ERR {message}"))
    }
}
