//! Session guarantees at the front end (the lecture's answers to replication lag; DESIGN §7).
//!
//! A session is a client connection, or a token that carries it across reconnects and nodes.
//! While it has a guarantee (or receipts, or reads on the leader) it remembers the newest
//! position of the leader's history it wrote (each write's record) and read (the state each
//! read saw, under a guarantee that needs it), and when it last wrote; without any, its
//! requests pass through untouched and cost nothing (so turn the guarantee on before the
//! writes it should cover, or set the cluster's `session_guarantee`). With a guarantee on, every read goes to the replica as a
//! [`Request::Session`] whose floor is what the guarantee needs:
//!
//! - `read-your-writes`: the session's newest write. With `read_your_writes = "wait"` (the
//!   default) a follower waits until it holds it; with `"leader"`, every read goes to the
//!   leader for `read_your_writes_leader_ms` after the session's last write (the lecture's
//!   second variant), and waits as above after that. The token keeps no keys (it would grow
//!   with them), so reads of keys the session never wrote wait too.
//! - `monotonic-reads`: the newest state the session read.
//! - `consistent-prefix`: the same floor. A replica serves only prefixes of the leader's log,
//!   so a session never sees an effect before its cause as long as it never reads an older
//!   prefix than one it saw.
//! - `all`: every floor at once.
//!
//! A replica behind the floor waits up to `session_wait_ms`, then answers `-TRYAGAIN` naming
//! the gap and the leader: never a silently stale value (see
//! `replikv_core::single_leader::session`). `REPLIKV.READFROM leader` sends every read to the
//! leader; `nearest` and `follower` answer on the node the client is connected to (today's
//! default).
//!
//! With `REPLIKV.RECEIPTS ON`, every answer in the session also carries a [`Receipt`]: who
//! answered, from which position, how stale it may be and how the guarantee was met (a RESP3
//! attribute; `REPLIKV.RECEIPT` for RESP2; `X-Replikv-Receipt` over HTTP).
//!
//! Over HTTP, the key routes take a session in request headers (`X-Replikv-Session`,
//! `X-Replikv-Guarantee`, `X-Replikv-Read-From`) and, when any is sent, return its new token
//! in `X-Replikv-Session` (see `crate::http`).
//!
//! # The token
//!
//! `REPLIKV.SESSION` returns `rkv1-CLUSTER-WLSN-WEPOCH-RLSN-REPOCH-WMS`, lowercase hex
//! fields: a fingerprint of the cluster's name, the written and read positions (record and
//! epoch), and the wall-clock milliseconds of the last write. It is at most
//! [`TOKEN_BYTES_MAX`] bytes; `REPLIKV.SESSION RESUME token` takes the newer of each position
//! (a session never forgets what it saw) and refuses a token of another cluster (in a
//! multi-leader cluster, of another datacenter: positions are of each datacenter's own log)
//! or form. `REPLIKV.SESSION RESET` forgets the positions: for a session whose positions an
//! `async` failover cut, which every replica refuses from then on.
//! The fields are documented so that a reader can debug them; clients should pass the token
//! through unread.

use replikv_core::kv::{Reply, Request, SessionPosition};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The longest token: seven fields of at most 16 hex digits and their dashes.
pub const TOKEN_BYTES_MAX: usize = 128;

/// How long a replica behind a session waits by default before it refuses, in ms.
pub const SESSION_WAIT_MS_DEFAULT: u64 = 1_000;

/// The longest wait a file may set: a minute.
pub const SESSION_WAIT_MS_MAX: u64 = 60_000;

/// How long reads go to the leader after a write by default, with `read_your_writes = "leader"`.
pub const READ_YOUR_WRITES_LEADER_MS_DEFAULT: u64 = 5_000;

/// What a session is promised (`REPLIKV.GUARANTEE`, or the cluster's `session_guarantee`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Guarantee {
    /// Reads answer from whatever the replica holds (stale by its lag).
    #[default]
    None,
    /// A read sees the session's own writes.
    ReadYourWrites,
    /// A read never sees an older state than one read before.
    MonotonicReads,
    /// Reads see writes in an order some prefix of the leader's log had.
    ConsistentPrefix,
    /// All three.
    All,
}

impl Guarantee {
    /// Parses a guarantee's name, any case.
    pub fn parse(text: &str) -> Result<Guarantee, String> {
        match text.to_ascii_lowercase().as_str() {
            "none" => Ok(Guarantee::None),
            "read-your-writes" => Ok(Guarantee::ReadYourWrites),
            "monotonic-reads" => Ok(Guarantee::MonotonicReads),
            "consistent-prefix" => Ok(Guarantee::ConsistentPrefix),
            "all" => Ok(Guarantee::All),
            _ => Err(format!(
                "unknown guarantee {text:?}: use none, read-your-writes, monotonic-reads, consistent-prefix or all"
            )),
        }
    }

    fn own_writes(self) -> bool {
        matches!(self, Guarantee::ReadYourWrites | Guarantee::All)
    }

    fn monotonic(self) -> bool {
        matches!(self, Guarantee::MonotonicReads | Guarantee::ConsistentPrefix | Guarantee::All)
    }
}

impl fmt::Display for Guarantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Guarantee::None => "none",
            Guarantee::ReadYourWrites => "read-your-writes",
            Guarantee::MonotonicReads => "monotonic-reads",
            Guarantee::ConsistentPrefix => "consistent-prefix",
            Guarantee::All => "all",
        })
    }
}

/// How read-your-writes is kept (the lecture's two variants).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadYourWrites {
    /// A replica waits until it holds the session's write.
    #[default]
    Wait,
    /// Reads go to the leader for a while after each write.
    Leader,
}

impl fmt::Display for ReadYourWrites {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReadYourWrites::Wait => "wait",
            ReadYourWrites::Leader => "leader",
        })
    }
}

/// Where a connection's reads go (`REPLIKV.READFROM`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadFrom {
    /// The node the client is connected to.
    #[default]
    Nearest,
    /// The node the client is connected to, as `Nearest` (a name for clients that connect
    /// to a follower on purpose).
    Follower,
    /// The leader: a follower forwards each read.
    Leader,
}

impl ReadFrom {
    /// Parses a choice's name, any case.
    pub fn parse(text: &str) -> Result<ReadFrom, String> {
        match text.to_ascii_lowercase().as_str() {
            "nearest" => Ok(ReadFrom::Nearest),
            "follower" => Ok(ReadFrom::Follower),
            "leader" => Ok(ReadFrom::Leader),
            _ => Err(format!("unknown read source {text:?}: use leader, follower or nearest")),
        }
    }
}

impl fmt::Display for ReadFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReadFrom::Nearest => "nearest",
            ReadFrom::Follower => "follower",
            ReadFrom::Leader => "leader",
        })
    }
}

/// The cluster's session settings, as every connection starts with them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionSettings {
    /// The guarantee a new session has.
    pub guarantee: Guarantee,
    /// How long a replica behind a session waits, in ms.
    pub wait_ms: u64,
    /// How read-your-writes is kept.
    pub read_your_writes: ReadYourWrites,
    /// With [`ReadYourWrites::Leader`]: how long reads go to the leader after a write, in ms.
    pub leader_ms: u64,
    /// A fingerprint of the cluster's name, which tokens carry.
    pub cluster: u32,
}

/// What a session learns with each answer (REPLIKV.RECEIPTS ON): who answered, from which
/// position, how stale it may be, and how the guarantee was met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The position of the leader's history the answer reflects.
    pub at: SessionPosition,
    /// Answered by the leader (this node, or the leader a follower forwarded it to).
    pub by_leader: bool,
    /// How long the replica waited for the session's position, in ms.
    pub waited_ms: u64,
    /// Records of the leader's log the replica knew of and had not applied.
    pub behind_records: u64,
    /// Ms since the replica last held all it had been told of (`u64::MAX`: never).
    pub behind_ms: u64,
    /// The guarantee in force.
    pub guarantee: Guarantee,
}

impl Receipt {
    /// How the guarantee was met.
    fn met_by(&self) -> String {
        match (self.guarantee, self.waited_ms, self.by_leader) {
            (Guarantee::None, ..) => "no guarantee asked".to_string(),
            (_, 0, true) => "the leader".to_string(),
            (_, 0, false) => "held already".to_string(),
            (_, ms, _) => format!("waiting {ms} ms"),
        }
    }

    /// Its fields, names first, as a receipt shows them (the node the client asked is `node`).
    pub fn fields(&self, node: &str) -> Vec<(&'static str, String)> {
        let behind_ms = match self.behind_ms {
            u64::MAX => "unknown".to_string(),
            ms => ms.to_string(),
        };
        vec![
            ("node", node.to_string()),
            ("role", if self.by_leader { "leader" } else { "follower" }.to_string()),
            ("at", format!("{}@{}", self.at.lsn, self.at.epoch)),
            ("behind_records", self.behind_records.to_string()),
            ("behind_ms", behind_ms),
            ("guarantee", self.guarantee.to_string()),
            ("met_by", self.met_by()),
        ]
    }

    /// As an HTTP header's value: `name=value` pairs joined by `; `.
    pub fn header(&self, node: &str) -> String {
        self.fields(node).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }
}

/// One session: its choices and what it has seen.
#[derive(Clone, Debug)]
pub struct Session {
    /// Its guarantee.
    pub guarantee: Guarantee,
    /// Where its reads go.
    pub read_from: ReadFrom,
    /// Each answer carries a receipt (REPLIKV.RECEIPTS ON).
    pub receipts: bool,
    /// The last answer's receipt.
    pub last_receipt: Option<Receipt>,
    settings: SessionSettings,
    written: SessionPosition,
    read: SessionPosition,
    /// Wall-clock ms of its last write (0: none).
    last_write_ms: u64,
}

impl Session {
    /// A new session under the cluster's settings.
    pub fn new(settings: SessionSettings) -> Session {
        Session {
            guarantee: settings.guarantee,
            read_from: ReadFrom::default(),
            receipts: false,
            last_receipt: None,
            settings,
            written: SessionPosition::default(),
            read: SessionPosition::default(),
            last_write_ms: 0,
        }
    }

    /// `request` as the replica should take it: in session (positioned) while the session
    /// keeps positions (a guarantee, receipts or reads on the leader are on) and the request
    /// writes or reads keys; unchanged otherwise, at no cost.
    pub fn wrap(&self, request: Request, now_ms: u64) -> Request {
        let write = request.is_write();
        if !write && !reads_keys(&request) {
            return request; // FAILOVER, WAIT, REPLIKV.LOG...: about this node, not the keys
        }
        if !self.keeps_positions() {
            return request;
        }
        let mut after = SessionPosition::default();
        let mut on_leader = false;
        if !write {
            on_leader = self.read_from == ReadFrom::Leader;
            if self.guarantee.own_writes() {
                after = after.max(self.written);
                let recent = now_ms.saturating_sub(self.last_write_ms) < self.settings.leader_ms;
                if self.settings.read_your_writes == ReadYourWrites::Leader && self.last_write_ms > 0 && recent {
                    on_leader = true;
                }
            }
            if self.guarantee.monotonic() {
                after = newer(after, self.read);
            }
            if self.guarantee == Guarantee::None && !on_leader && !self.receipts {
                return request;
            }
        }
        Request::Session { after, wait_ms: self.settings.wait_ms, on_leader, request: Box::new(request) }
    }

    /// True while the session keeps its positions: a guarantee, receipts or reads on the
    /// leader are on. A session with none of them passes its requests through as they are
    /// (positioning every write costs about a tenth of a node's write throughput), so its
    /// token holds only what it did while one was on.
    pub fn keeps_positions(&self) -> bool {
        self.guarantee != Guarantee::None || self.receipts || self.read_from == ReadFrom::Leader
    }

    /// Takes a reply to a request [`Session::wrap`] made: keeps its position (unless it is an
    /// error) and returns what the client sees.
    pub fn observe(&mut self, reply: Reply, write: bool, now_ms: u64) -> Reply {
        let Reply::InSession { at, by_leader, waited_ms, behind_records, behind_ms, reply } = reply else {
            self.last_receipt = None; // refused before any replica took it in the session
            return reply;
        };
        let guarantee = self.guarantee;
        self.last_receipt = Some(Receipt { at, by_leader, waited_ms, behind_records, behind_ms, guarantee });
        if !matches!(*reply, Reply::Error(_)) {
            if write {
                self.written = newer(self.written, at);
                self.last_write_ms = now_ms;
            }
            // A write's reply may carry what it read too (INCR, SET ... GET, EXEC).
            if self.guarantee.monotonic() {
                self.read = newer(self.read, at);
            }
        }
        *reply
    }

    /// The session's token (see the module documentation).
    pub fn token(&self) -> String {
        format!(
            "rkv1-{:08x}-{:x}-{:x}-{:x}-{:x}-{:x}",
            self.settings.cluster,
            self.written.lsn,
            self.written.epoch,
            self.read.lsn,
            self.read.epoch,
            self.last_write_ms
        )
    }

    /// Forgets what the session has seen (REPLIKV.SESSION RESET): for a session whose
    /// positions a failover cut, which every replica would refuse from then on.
    pub fn reset(&mut self) {
        (self.written, self.read, self.last_write_ms) = Default::default();
    }

    /// Adopts `token`: the newer of each position. Refused: another cluster's, or a malformed one.
    pub fn resume(&mut self, token: &str) -> Result<(), String> {
        if token.len() > TOKEN_BYTES_MAX {
            return Err(format!("a session token is at most {TOKEN_BYTES_MAX} bytes, this one {}", token.len()));
        }
        let fields: Vec<&str> = token.split('-').collect();
        let malformed = || format!("{token:?} is not a session token (REPLIKV.SESSION gives one: rkv1-...)");
        let [version, cluster, wl, we, rl, re, wms] = fields[..] else { return Err(malformed()) };
        if version != "rkv1" {
            return Err(malformed());
        }
        if fields.iter().skip(1).any(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(malformed());
        }
        let hex = |s: &str| u64::from_str_radix(s, 16).map_err(|_| malformed());
        let cluster = u32::from_str_radix(cluster, 16).map_err(|_| malformed())?;
        if cluster != self.settings.cluster {
            return Err(format!(
                "this session token is of another cluster (fingerprint {cluster:08x}, this one's {:08x})",
                self.settings.cluster
            ));
        }
        let written = SessionPosition { lsn: hex(wl)?, epoch: hex(we)? };
        let read = SessionPosition { lsn: hex(rl)?, epoch: hex(re)? };
        self.written = newer(self.written, written);
        self.read = newer(self.read, read);
        self.last_write_ms = self.last_write_ms.max(hex(wms)?);
        Ok(())
    }
}

/// A new connection's session: `None` unless the node is in a single-leader or multi-leader
/// cluster.
pub fn for_node(config: &crate::config::NodeConfig) -> Option<Session> {
    use crate::config::ReplicationMode;
    let cluster = config.cluster.as_ref()?;
    match cluster.replication.mode {
        ReplicationMode::Leaderless => None,
        // A multi-leader datacenter's positions are of its own log: its tokens are its own.
        ReplicationMode::MultiLeader => {
            let dc = cluster.node(&config.id).and_then(|n| n.datacenter.clone()).unwrap_or_default();
            Some(Session::new(cluster.replication.session_settings(&format!("{}/{dc}", cluster.name))))
        }
        ReplicationMode::SingleLeader => Some(Session::new(cluster.replication.session_settings(&cluster.name))),
    }
}

/// The newer of two positions: the later record (at the same record, the newer epoch's,
/// which a failover wrote over the older).
fn newer(a: SessionPosition, b: SessionPosition) -> SessionPosition {
    if (b.lsn, b.epoch) > (a.lsn, a.epoch) {
        b
    } else {
        a
    }
}

/// True when `request` reads the keys (a session's guarantee concerns it); false for what
/// is about the node itself.
fn reads_keys(request: &Request) -> bool {
    !matches!(
        request,
        Request::Wait { .. }
            | Request::Failover { .. }
            | Request::Log { .. }
            | Request::Digest { .. }
            | Request::Conflicts { .. }
    )
}

/// A cluster name's fingerprint, for tokens (FNV-1a, folded to 32 bits).
pub fn cluster_fingerprint(name: &str) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash ^ (hash >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn settings() -> SessionSettings {
        SessionSettings {
            guarantee: Guarantee::None,
            wait_ms: 1_000,
            read_your_writes: ReadYourWrites::Wait,
            leader_ms: 5_000,
            cluster: cluster_fingerprint("demo"),
        }
    }

    fn get() -> Request {
        Request::Get { key: Bytes::from_static(b"k") }
    }

    fn positioned(lsn: u64, reply: Reply) -> Reply {
        Reply::InSession {
            at: SessionPosition { lsn, epoch: 1 },
            by_leader: true,
            waited_ms: 0,
            behind_records: 0,
            behind_ms: 0,
            reply: Box::new(reply),
        }
    }

    fn floor(request: &Request) -> Option<(u64, bool)> {
        match request {
            Request::Session { after, on_leader, .. } => Some((after.lsn, *on_leader)),
            _ => None,
        }
    }

    #[test]
    fn each_guarantee_sets_the_floor_it_needs() {
        let mut s = Session::new(settings());
        let set = Request::Set {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            condition: replikv_core::kv::SetCondition::Always,
            get: false,
            expiry: replikv_core::kv::Expiry::Clear,
        };
        assert_eq!(floor(&s.wrap(set.clone(), 10)), None, "no guarantee: passed through, untouched");
        assert_eq!(floor(&s.wrap(get(), 10)), None, "no guarantee: a plain read");
        s.guarantee = Guarantee::ReadYourWrites;
        assert_eq!(floor(&s.wrap(set.clone(), 10)), Some((0, false)), "a write is positioned");
        assert_eq!(s.observe(positioned(7, Reply::Ok), true, 10), Reply::Ok);
        assert_eq!(floor(&s.wrap(get(), 10)), Some((7, false)));
        s.guarantee = Guarantee::MonotonicReads;
        assert_eq!(floor(&s.wrap(get(), 10)), Some((0, false)), "nothing read yet");
        s.observe(positioned(9, Reply::Nil), false, 10);
        s.observe(positioned(4, Reply::Nil), false, 10);
        assert_eq!(floor(&s.wrap(get(), 10)), Some((9, false)), "never back");
        s.observe(positioned(12, Reply::Error("ERR x".into())), false, 10);
        assert_eq!(floor(&s.wrap(get(), 10)), Some((9, false)), "an error moves nothing");
        s.guarantee = Guarantee::All;
        s.observe(positioned(20, Reply::Ok), true, 10);
        assert_eq!(floor(&s.wrap(get(), 10)), Some((20, false)));
        s.read_from = ReadFrom::Leader;
        s.guarantee = Guarantee::None;
        assert_eq!(floor(&s.wrap(get(), 10)), Some((0, true)));
    }

    #[test]
    fn node_commands_are_not_reads_writes_never_go_by_readfrom_and_a_write_raises_the_read_floor() {
        let mut s = Session::new(settings());
        s.guarantee = Guarantee::All;
        s.read_from = ReadFrom::Leader;
        let failover = Request::Failover { to: None, force: false, abort: false, timeout_ms: 0 };
        assert_eq!(floor(&s.wrap(failover, 10)), None, "FAILOVER is about this node, not the keys");
        assert_eq!(floor(&s.wrap(Request::Log { after: 0, count: 1 }, 10)), None);
        let incr = Request::IncrBy { key: Bytes::from_static(b"k"), delta: 1 };
        assert_eq!(floor(&s.wrap(incr, 10)), Some((0, false)), "READFROM leader moves reads only");
        s.guarantee = Guarantee::MonotonicReads;
        s.observe(positioned(5, Reply::Int(1)), true, 10);
        assert_eq!(floor(&s.wrap(get(), 10)), Some((5, true)), "an INCR's reply showed state 5");
        // At one record, the newer epoch's position wins; RESET forgets every position.
        s.observe(
            Reply::InSession {
                at: SessionPosition { lsn: 5, epoch: 2 },
                by_leader: true,
                waited_ms: 0,
                behind_records: 0,
                behind_ms: 0,
                reply: Box::new(Reply::Nil),
            },
            false,
            10,
        );
        assert!(s.token().contains("-5-2-"), "{}", s.token());
        s.reset();
        assert_eq!(floor(&s.wrap(get(), 10)), Some((0, true)));
    }

    #[test]
    fn read_your_writes_on_the_leader_lasts_its_time_after_each_write() {
        let mut s = Session::new(SessionSettings { read_your_writes: ReadYourWrites::Leader, ..settings() });
        s.guarantee = Guarantee::ReadYourWrites;
        assert_eq!(floor(&s.wrap(get(), 1_000)), Some((0, false)), "no write yet");
        s.observe(positioned(3, Reply::Ok), true, 1_000);
        assert_eq!(floor(&s.wrap(get(), 5_999)), Some((3, true)));
        assert_eq!(floor(&s.wrap(get(), 6_000)), Some((3, false)), "then it waits where it reads");
    }

    #[test]
    fn a_token_carries_the_session_and_refuses_another_cluster() {
        let mut s = Session::new(settings());
        s.guarantee = Guarantee::All;
        s.observe(positioned(0x2a, Reply::Ok), true, 77);
        s.observe(positioned(0x30, Reply::Nil), false, 78);
        let token = s.token();
        assert!(token.len() <= TOKEN_BYTES_MAX && token.starts_with("rkv1-"), "{token}");
        let mut other = Session::new(settings());
        other.guarantee = Guarantee::All;
        other.resume(&token).unwrap();
        assert_eq!(other.token(), token);
        assert_eq!(floor(&other.wrap(get(), 100)), Some((0x30, false)));
        let mut elsewhere = Session::new(SessionSettings { cluster: cluster_fingerprint("other"), ..settings() });
        assert!(elsewhere.resume(&token).unwrap_err().contains("another cluster"));
        for bad in ["", "rkv1", "rkv2-0-0-0-0-0-0", "rkv1-zz-0-0-0-0-0", "rkv1-+1-0-0-0-0-0", &"a".repeat(200)] {
            assert!(elsewhere.resume(bad).is_err(), "{bad}");
        }
    }
}
