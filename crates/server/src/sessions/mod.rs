//! Session guarantees at the front end (the lecture's answers to replication lag; DESIGN §7).
//!
//! A session is a client connection, or a token that carries it across reconnects and nodes.
//! While it has a guarantee (or receipts, or reads on the leader) it remembers what it wrote
//! and read, and each of its reads asks the replica for a state at least that new; without
//! any, its requests pass through untouched and cost nothing (so turn the guarantee on before
//! the writes it should cover, or set the cluster's `session_guarantee`). What "at least that
//! new" means is each family's own:
//!
//! - single-leader, and inside a multi-leader datacenter ([`positions`]): a position of the
//!   leader's log, which a follower waits to have applied;
//! - leaderless ([`contexts`]): per key, a causal context, which the coordinator waits for a
//!   merge of replicas' replies to cover.
//!
//! The guarantees (`REPLIKV.GUARANTEE`, or the cluster's `session_guarantee`):
//!
//! - `read-your-writes`: a read sees the session's own writes;
//! - `monotonic-reads`: a read never sees an older state than one the session saw before;
//! - `consistent-prefix` (not leaderless): the session sees writes in an order some prefix of
//!   the leader's log had;
//! - `all` (not leaderless): all three.
//!
//! A replica or coordinator that cannot serve the floor within `session_wait_ms` answers
//! `-TRYAGAIN` naming the gap: never a silently stale value. `REPLIKV.READFROM leader` sends
//! every read to the leader; `nearest` and `follower` answer on the node the client is
//! connected to (today's default; a leaderless cluster has no leader to send them to).
//!
//! With `REPLIKV.RECEIPTS ON`, every answer in the session also carries a [`Receipt`]: who
//! answered, how stale it may be and how the guarantee was met (a RESP3 attribute;
//! `REPLIKV.RECEIPT` for RESP2; `X-Replikv-Receipt` over HTTP).
//!
//! Over HTTP, the key routes take a session in request headers (`X-Replikv-Session`,
//! `X-Replikv-Guarantee`, `X-Replikv-Read-From`) and, when any is sent, return its new token
//! in `X-Replikv-Session` (see `crate::http`).
//!
//! `REPLIKV.SESSION` returns the session's token, `REPLIKV.SESSION RESUME token` adopts one
//! (a session never forgets what it saw: it keeps the newer of each), `REPLIKV.SESSION RESET`
//! forgets what the session saw. Each family's token is documented in its module so that a
//! reader can debug it; clients should pass it through unread.

pub mod contexts;
pub mod positions;

pub use positions::{LogReceipt, TOKEN_BYTES_MAX};

use replikv_core::kv::{Reply, Request};
use serde::{Deserialize, Serialize};
use std::fmt;

/// How long a replica behind a session waits by default before it refuses, in ms.
pub const SESSION_WAIT_MS_DEFAULT: u64 = 1_000;

/// The longest wait a file may set: 20 s, below an HTTP request's limit
/// (`crate::http::HTTP_REQUEST_TIMEOUT_SECS`), so that a session read over HTTP is refused
/// with the gap rather than timed out.
pub const SESSION_WAIT_MS_MAX: u64 = 20_000;

/// The longest `read_your_writes_leader_ms` a file may set: a minute.
pub const READ_YOUR_WRITES_LEADER_MS_MAX: u64 = 60_000;

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

    /// True when reads must see the session's writes.
    fn own_writes(self) -> bool {
        matches!(self, Guarantee::ReadYourWrites | Guarantee::All)
    }

    /// True when reads must not go back before what the session saw.
    fn monotonic(self) -> bool {
        matches!(self, Guarantee::MonotonicReads | Guarantee::ConsistentPrefix | Guarantee::All)
    }

    /// Why a leaderless cluster cannot keep this guarantee, if it cannot.
    pub fn leaderless_refusal(self) -> Option<String> {
        matches!(self, Guarantee::ConsistentPrefix | Guarantee::All).then(|| {
            format!(
                "a leaderless cluster cannot keep {self}: it has no single order of writes whose prefixes a session \
                 could be kept to (causally related writes of different keys may reach a replica in any order); use \
                 read-your-writes, or monotonic-reads, which covers the session's own writes too, per key"
            )
        })
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

/// What a session learns with each answer (REPLIKV.RECEIPTS ON): each family's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Receipt {
    /// A replica of a leader's log answered.
    Log(LogReceipt),
    /// A leaderless coordinator answered from a quorum.
    Quorum(contexts::QuorumReceipt),
}

impl Receipt {
    /// Its fields, names first, as a receipt shows them (the node the client asked is `node`).
    pub fn fields(&self, node: &str) -> Vec<(&'static str, String)> {
        match self {
            Receipt::Log(receipt) => receipt.fields(node),
            Receipt::Quorum(receipt) => receipt.fields(node),
        }
    }

    /// As an HTTP header's value: `name=value` pairs joined by `; `.
    pub fn header(&self, node: &str) -> String {
        self.fields(node).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }
}

/// What a request sent in a session was, for [`Session::observe`] of its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Asked {
    /// It may write.
    pub write: bool,
    /// Leaderless: the fingerprint of its key.
    key: Option<u64>,
}

/// What a session has seen: each family's own.
#[derive(Clone, Debug)]
enum Seen {
    Log(positions::Positions),
    Keys(contexts::Contexts),
}

/// One session: its choices and what it has seen.
#[derive(Clone, Debug)]
pub struct Session {
    guarantee: Guarantee,
    read_from: ReadFrom,
    /// Each answer carries a receipt (REPLIKV.RECEIPTS ON).
    pub receipts: bool,
    /// The last answer's receipt.
    pub last_receipt: Option<Receipt>,
    settings: SessionSettings,
    seen: Seen,
}

impl Session {
    /// A new single-leader (or multi-leader datacenter) session under the cluster's settings.
    pub fn new(settings: SessionSettings) -> Session {
        Session::with(settings, Seen::Log(positions::Positions::default()))
    }

    /// A new leaderless session; `nodes` are the cluster's node names (receipts name replicas).
    pub fn leaderless(settings: SessionSettings, nodes: &[String]) -> Session {
        Session::with(settings, Seen::Keys(contexts::Contexts::new(nodes)))
    }

    fn with(settings: SessionSettings, seen: Seen) -> Session {
        Session {
            guarantee: settings.guarantee,
            read_from: ReadFrom::default(),
            receipts: false,
            last_receipt: None,
            settings,
            seen,
        }
    }

    /// The guarantee in force.
    pub fn guarantee(&self) -> Guarantee {
        self.guarantee
    }

    /// Sets the guarantee; refused when this family cannot keep it.
    pub fn set_guarantee(&mut self, guarantee: Guarantee) -> Result<(), String> {
        if let (Seen::Keys(_), Some(why)) = (&self.seen, guarantee.leaderless_refusal()) {
            return Err(why);
        }
        self.guarantee = guarantee;
        Ok(())
    }

    /// Where reads go.
    pub fn read_from(&self) -> ReadFrom {
        self.read_from
    }

    /// Sets where reads go; `leader` is refused in a leaderless cluster.
    pub fn set_read_from(&mut self, read_from: ReadFrom) -> Result<(), String> {
        if matches!(self.seen, Seen::Keys(_)) && read_from == ReadFrom::Leader {
            return Err(
                "a leaderless cluster has no leader: every read goes to the key's replicas, and REPLIKV.CONSISTENCY \
                 chooses how many"
                    .into(),
            );
        }
        self.read_from = read_from;
        Ok(())
    }

    /// `request` as the replica should take it: in session while the session keeps what it
    /// saw (a guarantee, receipts or reads on the leader are on) and the request writes or
    /// reads keys; unchanged otherwise, at no cost.
    pub fn wrap(&self, request: Request, now_ms: u64) -> Request {
        let write = request.is_write();
        if !write && !reads_keys(&request) {
            return request; // FAILOVER, WAIT, REPLIKV.LOG...: about this node, not the keys
        }
        if !self.keeps_positions() {
            return request;
        }
        match &self.seen {
            Seen::Log(positions) => positions.wrap(self, request, write, now_ms),
            Seen::Keys(contexts) => contexts.wrap(self, request, write),
        }
    }

    /// What `request` (as [`Session::wrap`] made it) asks, for [`Session::observe`]; `None`
    /// for a request the session left alone.
    pub fn asked(&self, request: &Request) -> Option<Asked> {
        match request {
            Request::Session { .. } => Some(Asked { write: request.is_write(), key: None }),
            Request::KeySession { request: inner, .. } => {
                Some(Asked { write: request.is_write(), key: contexts::key_of(inner).map(contexts::fingerprint) })
            }
            _ => None,
        }
    }

    /// True when each request in the session must be answered before the next is sent: a
    /// leaderless session keeping what it saw (each request is its own quorum operation, and a
    /// pipelined read could be answered from an older replica than the read before it).
    pub fn orders_each_request(&self) -> bool {
        matches!(self.seen, Seen::Keys(_)) && self.keeps_positions()
    }

    /// True while the session keeps what it saw: a guarantee, receipts or reads on the
    /// leader are on. A session with none of them passes its requests through as they are
    /// (positioning every write costs about a tenth of a node's write throughput), so its
    /// token holds only what it did while one was on.
    pub fn keeps_positions(&self) -> bool {
        self.guarantee != Guarantee::None || self.receipts || self.read_from == ReadFrom::Leader
    }

    /// Takes the reply to a request [`Session::wrap`] made (`asked` says what it was): keeps
    /// what it saw (unless it is an error) and returns what the client sees.
    pub fn observe(&mut self, reply: Reply, asked: &Asked, now_ms: u64) -> Reply {
        let guarantee = self.guarantee;
        let (reply, receipt) = match &mut self.seen {
            Seen::Log(positions) => positions.observe(reply, asked.write, guarantee, now_ms),
            Seen::Keys(contexts) => contexts.observe(reply, asked, guarantee),
        };
        self.last_receipt = receipt;
        reply
    }

    /// The session's token (see each family's module).
    pub fn token(&self) -> String {
        match &self.seen {
            Seen::Log(positions) => positions.token(self.settings.cluster),
            Seen::Keys(contexts) => contexts.token(self.settings.cluster),
        }
    }

    /// Forgets what the session has seen (REPLIKV.SESSION RESET): for a session whose
    /// positions a failover cut, which every replica would refuse from then on.
    pub fn reset(&mut self) {
        match &mut self.seen {
            Seen::Log(positions) => *positions = positions::Positions::default(),
            Seen::Keys(contexts) => contexts.reset(),
        }
    }

    /// Adopts `token`: the newer of what each side saw. Refused: another cluster's, another
    /// family's, or a malformed one.
    pub fn resume(&mut self, token: &str) -> Result<(), String> {
        let cluster = self.settings.cluster;
        match &mut self.seen {
            Seen::Log(positions) => positions.resume(token, cluster),
            Seen::Keys(contexts) => contexts.resume(token, cluster),
        }
    }
}

/// A new connection's session: `None` unless the node is in a cluster.
pub fn for_node(config: &crate::config::NodeConfig) -> Option<Session> {
    use crate::config::ReplicationMode;
    let cluster = config.cluster.as_ref()?;
    match cluster.replication.mode {
        ReplicationMode::Leaderless => {
            let names: Vec<String> = cluster.nodes.iter().map(|n| n.id.clone()).collect();
            Some(Session::leaderless(cluster.replication.session_settings(&cluster.name), &names))
        }
        // A multi-leader datacenter's positions are of its own log: its tokens are its own.
        ReplicationMode::MultiLeader => {
            let dc = cluster.node(&config.id).and_then(|n| n.datacenter.clone()).unwrap_or_default();
            Some(Session::new(cluster.replication.session_settings(&format!("{}/{dc}", cluster.name))))
        }
        ReplicationMode::SingleLeader => Some(Session::new(cluster.replication.session_settings(&cluster.name))),
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
    let hash = fnv64(name.as_bytes());
    (hash ^ (hash >> 32)) as u32
}

/// FNV-1a over `bytes`, 64 bits.
fn fnv64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}
