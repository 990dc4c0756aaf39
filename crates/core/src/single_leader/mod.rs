//! Single-leader replication (DESIGN §6-§7): one leader takes every write and ships its log
//! to followers. This folder is the family: its node ([`SingleLeader`], a
//! [`crate::node::Family`]), its settings, its peer messages ([`message`]), elections
//! ([`election`]) and votes ([`vote`]), handovers, rollback files ([`rollback`]) and the
//! repair of damaged records. What it shares with the other families (the step()/Outbox
//! shape, storage, the replication log, versions) lives outside it (see [`crate::node`]).
//!
//! # Roles
//!
//! A replica is one of three ([`Role`]):
//!
//! - **Standalone**: a lone node. It executes requests against its store and keeps no
//!   replication log.
//! - **Leader** (single-leader, DESIGN §6-§7): it executes every request; each write becomes
//!   one record of the replication log ([`crate::replication`]) (several, its parts, for a
//!   request over [`RECORD_BYTES_SOFT_MAX`] or [`RECORD_CHANGES_MAX`] keys, which followers
//!   apply together once they hold them all; a transaction is one request; with
//!   `log_format` statement or mixed, the request itself, see [`statement`]; physical, the bytes
//!   its log engine appended, which followers write verbatim at the same place, and each
//!   compaction, which every replica runs at that place: see `storage/log/physical.rs`), which it ships to every
//!   follower in order, batched, as soon as the batch is written out: followers write it while
//!   the leader's own fsync runs (DESIGN §12). A write's reply waits until the record is
//!   durable on the leader and on `acks_needed` followers (`sync`: all of them;
//!   `semi-sync:K`: K; `async`: none). If they do not within `ack_timeout_ms` the client gets
//!   `-NOREPLICAS`, naming how many have it: a write is never acknowledged on fewer copies
//!   than the mode promises, and never silently downgraded.
//! - **Follower**: it appends the leader's records to its own log, acknowledges each batch
//!   once it is durable, and applies them to its store in the leader's order once the leader
//!   holds them durably too (the follower's essay, "Applying"). It serves
//!   reads from its own state (stale by its lag) and refuses writes with `-READONLY`, naming
//!   the leader; with `forward_writes` it sends them to the leader instead
//!   (`Message::Forward`), which executes them as its own client's and sends the reply back
//!   once it would have answered (acknowledgements included). A forwarded write is sent once:
//!   if no reply comes within `forward_timeout_ms` the client gets an error saying the write
//!   may or may not have been applied, never a silent retry. It gets the same error at once
//!   if the node stops following that leader in that epoch first (it stands, leads, or
//!   follows another leader or none), whose reply could no longer be taken: every role change
//!   fails what it forwarded (see `single_leader/failover.rs`).
//!
//! # Outputs and durability
//!
//! - [`Outbox::after_flush`] holds outputs that may depend on writes made in this step (a
//!   read's reply, an `async` write's reply, a follower's acknowledgement): the runtime
//!   releases them only after [`SingleLeader::write_out`]'s fsync (or [`SingleLeader::flush`]) has
//!   succeeded for this batch and every batch before it.
//! - [`Outbox::now`] holds outputs that depend on nothing unflushed here: records the leader
//!   ships (from [`SingleLeader::write_out`], before their fsync: each `Append` says how far
//!   the leader's log is durable), heartbeats, the replies that acknowledgements release,
//!   `-NOREPLICAS` and WAIT timeouts, forwarded writes and their timeouts. The runtime may
//!   send them at once.
//! - The runtime tells the replica how far its log is durable with [`Input::Durable`]. A
//!   leader acknowledges no write past it, and tells its followers, which apply no record past
//!   it: a follower may hold a record its leader then loses in a crash (the next leader's
//!   history cuts it), but no reader has seen it. At open the replica fsyncs its log (what it
//!   read back may have been in the page cache only).
//!
//! # Time and lag
//!
//! The leader sends a heartbeat to each follower every `heartbeat_ms` ([`Input::Tick`]),
//! carrying its durable log end and its own clock. A follower echoes, in each
//! acknowledgement, the leader clock of the newest heartbeat whose log end it has reached;
//! the leader's lag in time is its clock now minus that echo, one clock, so no skew enters.
//! An idle, connected follower shows a lag of about one round trip; a cut one shows a lag
//! that grows with the wall clock.
//!
//! # Failover
//!
//! With `auto_failover`, followers elect a new leader when theirs is gone, and a leader cut
//! off from a majority steps down; every message carries an epoch that fences old leaders.
//! Leader reads are confirmed with a heartbeat round (read index) before they are answered,
//! or, with `read_lease`, answered under a lease that rests on a clock-drift allowance (the
//! leader's essay, "Leases").
//! See `single_leader/failover.rs` for elections and fencing, `single_leader/handover.rs` for FAILOVER (a
//! planned handover), the leader's essay for reads and step-down, and the follower's for how a
//! rejoining node cuts what the new leader's history lacks.
//!
//! # Damaged records
//!
//! A record found damaged on disk is refused to its readers and listed (`kv::damage`); the
//! replica takes it back from a healthy one: a follower from its leader, a leader after handing
//! leadership to a follower (`single_leader/repair.rs`). Under `corruption = "stop"` the node stops.
//!
//! # Recovery
//!
//! The replication log is the write-ahead log: a batch is durable once the log is (one fsync
//! per batch). The engine's files are written with each batch but fsynced only when it
//! matters: when one of its segments seals, before the log may drop records (a tick at which
//! the log is over `retain_bytes_max`), before the log is reset, and at shutdown; so a crash
//! can leave the engine behind the log by many batches, or (its pages reached the disk, the
//! log's did not) ahead of it. A standalone node has no log: its engine is fsynced per batch.
//! At open, every logged change whose key the engine holds at an older version (or
//! not at all) is applied again: a key's versions rise in log order, and changes carry full
//! values and versions, so this restores exactly what the engine missed, also after a
//! snapshot whose values may be newer than the records that follow it. If the engine holds
//! writes newer than the log's last (its pages reached the disk, the log's did not), a leader
//! logs those keys' current records again as new records, so that its followers get them. A
//! follower (every node that restarts in a cluster it ran in before) undoes them instead: the record they
//! came from may never be shipped again, since a new leader may hold another record at that
//! position. Each such key goes back to its newest change in the log (or is deleted when the
//! log holds the whole history and no change to it); when the log is too short to say, the
//! replica empties itself and takes the leader's history again.
//!
//! A follower applies a request only when it holds every part of it ([`LogRecord`]), so a
//! reader never sees half of a transaction or of a large MSET; the log may end inside a
//! request (its applied end is [`ReplicationLog::complete_lsn`]), and a request whose later
//! parts are superseded by another leader's history is never applied, here or at recovery.
//!
//! CAVEATS
//! - The engine's active segment may hold many batches that were never fsynced, whose pages
//!   may reach the disk out of order in a power loss. The engine records its active
//!   segment's fsynced length at each fsync the replica asks for (its `SYNCED` file, see
//!   `storage::log::synced`) and cuts a hole past it at open as an unsynced tail; the log
//!   replays what it held. An fsync asked for is then two (the segment's and the record's),
//!   three when the record is created, one when nothing changed.
//! - While the log is over `retain_bytes_max` but held by a follower (or by the start's wait
//!   for followers), every tick that follows new writes fsyncs the engine, on the stepper:
//!   the check is "may drop", not "will drop". `INFO persistence`'s `replikv_fsyncs` counts the
//!   engine's fsyncs only, so on a replicating node it moves only at these, seals and shutdown.
//! - A follower that must cut records its leader's history lacks cuts them from its log alone
//!   when it never applied them, but only within its log's active segment: records that
//!   reach into an older segment (or into a snapshot's taint) make it empty itself and take
//!   the history again.
//! - A follower that restarted refuses reads (`-TRYAGAIN`) until a leader confirms its log:
//!   recovery applied all of it, and it cannot tell which records its leader made durable. A
//!   leader that steps down with writes not yet durable refuses reads as a follower the same
//!   way, until a leader confirms them or it cuts them.
//! - WAIT counts the followers that have every write the leader holds, not only the calling
//!   client's.
//! - Without `auto_failover`, a leader that dies for good is replaced only by hand: a
//!   follower does not stand, and `FAILOVER` needs a live leader.
//! - A leader at open (a node that never ran in this cluster's epochs: a restarted node comes
//!   back as a follower) whose engine kept writes its log lost logs them again as one new
//!   request; a crash that kept only some of a request's writes in the engine makes that a
//!   part of a request. It would take a vote file lost while the log survived.
//! - A node sent a snapshot saves to its rollback log only its records that the leader's
//!   retained log shows to differ: records below the leader's log start are taken as the
//!   leader's. An old leader cut off for longer than the new leader's log retention can lose
//!   its `async`-acknowledged writes from before that start without a rollback copy.
//! - Records no majority is known to hold stay past `retain_bytes_max` (a leader's, while its
//!   followers are away; a follower's, until a leader confirms them: after a restart, its whole
//!   log), up to the log's `unreplicated_bytes_max`. Past that bound the oldest go with a
//!   warning, and a failover that cuts them loses those `async`-acknowledged writes without a
//!   rollback copy.
//! - A late pre-vote grant from an earlier round counts in a later one (pre-votes carry no
//!   round number): it can start an election that was not needed, never a second leader.
//! - A node whose data directory (vote file included) is wiped and that is listed first
//!   starts as the leader of epoch 1: it is fenced as soon as it hears the cluster's newer
//!   epoch, but in `async` it may acknowledge writes until then (they end in its rollback log
//!   when it rejoins). A leader that finds a follower holding more of its own epoch than it
//!   has steps down rather than overwrite it.
//! - A node that cut records it had applied (or whose engine kept writes its log lost, with
//!   too little log to undo them) takes the leader's whole history again, as a new node would:
//!   a logical log without old values cannot undo in place.
//! - A snapshot that replaces a log ending inside a request saves to the rollback log only the
//!   records from the first one outside the leader's history, not that request's earlier
//!   parts (a cut does save them).
//! - A snapshot's chunks are read from the live engine, so they may hold writes past the
//!   snapshot's base. The follower's store is tainted until its log holds the leader's log end
//!   of the last chunk, in that epoch; a tainted follower does not stand for election, and if
//!   the history differs there it empties itself and takes it again. Those writes, which it
//!   holds only as values, are not saved to the rollback log.
//! - A node that empties its log (a cut, a snapshot) votes with the position it had, from its
//!   vote floor (see [`crate::single_leader::vote`]), until its log is back past it, and does
//!   not stand for election meanwhile: its old log may have held writes acknowledged with its
//!   copy, and nodes behind it could otherwise elect it without them (found by
//!   `replikv sim --acks semi-sync:1 --seed 365`). While the only node holding them is down,
//!   the cluster waits for it.
//! - WAIT on a lone node, or on a leader without followers, answers at once (Redis would
//!   block until its timeout).
//! - A follower up but slow keeps the leader's log from shrinking (it is warned about, not
//!   bounded); one silent for `link_timeout_ms` stops pinning it and may later need a snapshot.
//! - A value over a peer frame (64 MiB) can only come from a data directory written before it
//!   joined a cluster (writes in a cluster are limited to [`REPLICATED_VALUE_BYTES_MAX`]); a
//!   snapshot chunk holding one cannot be sent, and that follower never completes its
//!   snapshot.
//! - [`SingleLeader::set_timeouts`] changes deadlines only for what starts waiting afterwards. A
//!   write held by a FAILOVER, or a forwarded write, that waited under the old timeout names
//!   the new one in its error; and after a lowered timeout a held write fails no earlier than
//!   the held write before it.
//! - At open the log is fsynced but the engine is not: engine pages that a crashed process
//!   left in the page cache, and whose log records retention then deletes, could be lost to a
//!   power cut that follows.

pub mod election;
mod failover;
mod follower;
mod handover;
mod leader;
pub mod message;
mod repair;
pub mod rollback;
mod session;
pub mod statement;
pub mod vote;

use crate::error::Result;
use crate::kv::{Commands, Reply, Request, Store, Strings};
use crate::node::{Common, Family, Outbox, Output, ReplicationStatus, RequestId, WrittenOutAll};
use crate::replication::{Change, Epoch, Extent, LogRecord, Lsn, Old, Physical, ReplicationLog, ReplogOptions};
use crate::single_leader::election::{LogPosition, VoterState};
use crate::storage::{Engine, EngineStats, Flushed, LogEngine, PhysicalRole};
use crate::version::NodeId;
use std::collections::BTreeMap;
use std::ops::Bound;

pub use follower::FollowerView;
pub use leader::FollowerProgress;
pub use message::Message;
pub use rollback::{RollbackEntry, RollbackLog};
pub use vote::VoteStore;

/// What a single-leader node is handed: [`crate::node::Input`] with this family's messages.
pub type Input = crate::node::Input<Message>;

/// Which part a replica plays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// A lone node.
    Standalone,
    /// The leader of these followers.
    Leader {
        /// Every other node of the cluster.
        followers: Vec<NodeId>,
    },
    /// A follower of `leader` (`None`: not known yet, or an election is under way).
    Follower {
        /// The leader.
        leader: Option<NodeId>,
        /// How a client reaches the leader, for `-READONLY`: e.g. `n1 at 127.0.0.1:7001`.
        leader_hint: String,
    },
}

/// How a replicated replica behaves; the server builds it from the cluster file.
#[derive(Clone, Debug)]
pub struct Settings {
    /// What every family's node has: its id, its peers, its seed.
    pub common: Common,
    /// Its part: the one it starts in, then the one it plays (the replica keeps it current).
    pub role: Role,
    /// The epoch: the one it starts in, then the newest it has seen (kept current too).
    pub epoch: Epoch,
    /// Elections and step-down: a follower that hears no leader for the election timeout
    /// stands, and a leader cut off from a majority steps down. Off: the configured leader
    /// leads until an operator moves it.
    pub auto_failover: bool,
    /// Milliseconds without a leader's message before a follower stands, at least: each wait
    /// is drawn from `election_timeout_ms..=2 * election_timeout_ms`. Also how long a leader
    /// keeps leading without hearing from a majority.
    pub election_timeout_ms: u64,
    /// Followers that must hold a write durably before its reply (0: `async`).
    pub acks_needed: usize,
    /// The acknowledgement mode's name, for messages (`sync`, `semi-sync:1`, `async`).
    pub acks_label: String,
    /// Milliseconds a write waits for its acknowledgements before `-NOREPLICAS`.
    pub ack_timeout_ms: u64,
    /// Milliseconds between the leader's heartbeats.
    pub heartbeat_ms: u64,
    /// Milliseconds without an acknowledgement after which the leader ships again from the
    /// follower's last acknowledged record (messages may be lost).
    pub resend_ms: u64,
    /// Milliseconds without a message from its leader after which a follower calls its
    /// link down.
    pub link_timeout_ms: u64,
    /// Bytes of records in one `Append` at most (at least one record is always sent).
    pub ship_bytes_max: usize,
    /// Bytes of records shipped to one follower and not yet acknowledged, at most.
    pub window_bytes_max: usize,
    /// Bytes of keys and values in one snapshot chunk at most.
    pub snapshot_chunk_bytes_max: usize,
    /// Followers forward writes to the leader instead of refusing them with `-READONLY`.
    pub forward_writes: bool,
    /// Milliseconds a follower waits for the leader's reply to a forwarded write.
    pub forward_timeout_ms: u64,
    /// Leader reads under a lease: answered without the read-index round trip while the
    /// leader's last confirmed heartbeat round is recent (see the leader's essay, "Leases").
    pub read_lease: bool,
    /// The clock-drift allowance the lease assumes, in parts per million: every node's clock
    /// advances at a rate within this of real time. The lease is shortened by it.
    pub read_lease_drift_ppm: u64,
    /// What the leader logs of a client's write: its effects (the default), the request
    /// itself, or the request when it is deterministic (see [`statement`]).
    pub log_format: crate::replication::LogFormat,
    /// A bug planted on purpose, to test that the simulator's checkers catch it. The server
    /// never sets one; `Canary::None` in every real node.
    pub canary: Canary,
    /// Changes in one log record at most ([`RECORD_CHANGES_MAX`]; the simulator lowers it so
    /// that requests span several records).
    pub record_changes_max: usize,
}

impl<E: Engine> Family for SingleLeader<E> {
    type Message = Message;

    fn step(&mut self, now_ms: u64, input: Input, outbox: &mut Outbox) -> Result<()> {
        SingleLeader::step(self, now_ms, input, outbox)
    }

    fn write_out(&mut self, now_ms: u64, outbox: &mut Outbox) -> Result<WrittenOutAll> {
        SingleLeader::write_out(self, now_ms, outbox)
    }

    fn status(&self, now_ms: u64) -> ReplicationStatus {
        SingleLeader::status(self, now_ms)
    }
}

/// Bugs the simulator plants to test its own checkers (issue 5's canaries). Each must be
/// caught by a seed sweep; none is reachable from the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Canary {
    /// No planted bug.
    #[default]
    None,
    /// The leader answers a write before it is durable (its reply leaves at once).
    AckBeforeFsync,
    /// A follower applies the records of each `Append` in reverse order.
    FollowerOutOfOrder,
    /// A write whose acknowledgements time out is answered OK (semi-sync silently async).
    SilentAsync,
    /// A snapshot leaves out the first key of each chunk.
    SnapshotSkipsKey,
    /// A leader answers reads at once, without confirming it still leads.
    UnconfirmedReads,
    /// No fencing: a follower takes an old leader's messages as its leader's and acknowledges
    /// them in the old epoch, and a leader neither steps down without a majority nor hears of
    /// a newer epoch.
    NoFencing,
    /// A leader reading under its lease answers at once, without waiting for the log through
    /// the read to be held by a majority (it may show a write a failover takes back).
    LeaseSkipsCommit,
    /// A follower applies every record it matched, without waiting for its leader to hold it
    /// durably (it may serve a write its leader then loses in a crash).
    FollowerAppliesUndurable,
    /// A follower answers a session read at once from what it has applied, without waiting
    /// to hold the session's position (a stale read under any guarantee).
    SessionNoWait,
    /// The simulated client's session forgets its read position (it never raises its read
    /// floor): planted in the simulator's client, not in the replicas, which ignore it.
    TokenForgetsRead,
    /// A follower applies each part of a request as it arrives, not the request whole once
    /// its last part is there: readers see half a transaction.
    FollowerAppliesParts,
}

impl Settings {
    /// Defaults for a node with `role`, in `async` mode.
    pub fn new(node: NodeId, role: Role) -> Settings {
        Settings {
            common: Common::new(node),
            role,
            epoch: 1,
            auto_failover: false,
            election_timeout_ms: 1_000,
            acks_needed: 0,
            acks_label: "async".into(),
            ack_timeout_ms: 5_000,
            heartbeat_ms: 100,
            resend_ms: 1_000,
            link_timeout_ms: 1_000,
            ship_bytes_max: SHIP_BYTES_MAX_DEFAULT,
            window_bytes_max: 8 * SHIP_BYTES_MAX_DEFAULT,
            snapshot_chunk_bytes_max: SHIP_BYTES_MAX_DEFAULT,
            forward_writes: false,
            forward_timeout_ms: 10_000,
            read_lease: false,
            read_lease_drift_ppm: READ_LEASE_DRIFT_PPM_DEFAULT,
            log_format: crate::replication::LogFormat::Logical,
            canary: Canary::None,
            record_changes_max: RECORD_CHANGES_MAX,
        }
    }
}

impl Settings {
    /// Every other voting node: `peers`, or else the nodes `role` names.
    pub fn peers(&self) -> Vec<NodeId> {
        if !self.common.peers.is_empty() {
            return self.common.peers.clone();
        }
        match &self.role {
            Role::Standalone => Vec::new(),
            Role::Leader { followers } => followers.clone(),
            Role::Follower { leader, .. } => leader.iter().copied().collect(),
        }
    }

    /// How a client reaches `node`.
    pub fn hint(&self, node: NodeId) -> String {
        match (self.common.hints.get(&node), &self.role) {
            (Some(hint), _) => hint.clone(),
            (None, Role::Follower { leader: Some(leader), leader_hint }) if *leader == node => leader_hint.clone(),
            (None, _) => node.to_string(),
        }
    }
}

/// Bytes of records in one `Append`, by default.
pub const SHIP_BYTES_MAX_DEFAULT: usize = 1024 * 1024;

/// The lease's clock-drift allowance by default: 1% (10,000 ppm), a hundred times a quartz
/// clock's and ten times what NTP slews at most.
pub const READ_LEASE_DRIFT_PPM_DEFAULT: u64 = 10_000;

/// The smallest clock-drift allowance a lease may assume: 100 ppm, a quartz clock's worst.
pub const READ_LEASE_DRIFT_PPM_MIN: u64 = 100;

/// The largest clock-drift allowance a lease may assume: 20% (past it the lease would be
/// under two thirds of the election timeout).
pub const READ_LEASE_DRIFT_PPM_MAX: u64 = 200_000;

/// The largest value a replicated write may store: one change must fit in one peer frame.
pub const REPLICATED_VALUE_BYTES_MAX: usize = 32 * 1024 * 1024;

/// Changes in one log record at most; a request that writes more (a FLUSHALL of many keys)
/// is logged as several records in a row, its parts, which replicas apply together once they
/// hold them all (see [`LogRecord`]).
pub const RECORD_CHANGES_MAX: usize = 10_000;

/// Bytes of changes after which a request's record is closed and the rest go in the next one,
/// so that every record fits in one peer frame (one change is at most
/// [`REPLICATED_VALUE_BYTES_MAX`] plus its key).
pub const RECORD_BYTES_SOFT_MAX: usize = 16 * 1024 * 1024;

/// Writes waiting for their acknowledgements, and WAITs, at most; beyond, a request is
/// refused with an error rather than queued.
pub const PENDING_REPLIES_MAX: usize = 100_000;

/// Request ids a leader gives the requests followers forward: the upper half of the id
/// space, which a runtime counting from 1 never reaches.
pub const FORWARDED_ID_BASE: RequestId = 1 << 63;

/// What a replica keeps on disk besides its engine: the replication log, its vote, and the
/// writes it cut.
#[derive(Debug)]
pub struct ReplicaFiles {
    /// The replication log.
    pub log: ReplicationLog,
    /// The voter's durable state.
    pub votes: VoteStore,
    /// Writes cut from the log when it rejoined a newer leader.
    pub rollback: RollbackLog,
}

impl ReplicaFiles {
    /// All three in memory, the log with `options`.
    pub fn in_memory(options: ReplogOptions) -> ReplicaFiles {
        ReplicaFiles::with_log(ReplicationLog::in_memory(options))
    }

    /// `log`, with a vote and rollback log in memory.
    pub fn with_log(log: ReplicationLog) -> ReplicaFiles {
        ReplicaFiles { log, votes: VoteStore::in_memory(), rollback: RollbackLog::in_memory() }
    }
}

/// What a follower forwarded to its leader, for the error when no answer comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Forwarded {
    /// A write: it may have been applied.
    Write,
    /// A read (`REPLIKV.READFROM leader`, or a session's read on the leader): it took no effect.
    Read,
}

impl Forwarded {
    fn name(self) -> &'static str {
        match self {
            Forwarded::Write => "write",
            Forwarded::Read => "read",
        }
    }

    /// What became of the request, for the client.
    fn outcome(self) -> &'static str {
        match self {
            Forwarded::Write => "; it may or may not have been applied",
            Forwarded::Read => ": it took no effect; try again",
        }
    }
}

/// The part-specific state.
#[derive(Debug)]
enum State {
    Standalone,
    Leader(leader::Leader),
    Follower(follower::Follower),
}

/// A node's replica.
#[derive(Debug)]
pub struct SingleLeader<E> {
    /// The node's keys and clock.
    store: Store<E>,
    /// What requests do to the store: Redis's string commands unless the family running
    /// this replica gave its own ([`SingleLeader::set_commands`]).
    commands: Box<dyn Commands<E>>,
    /// Records another family needs the log to keep, on a leader and (until its leader's
    /// heartbeats say where the leader holds from) on a follower
    /// ([`SingleLeader::hold_log_from`]).
    log_hold: Option<Lsn>,
    /// The replication log (unused when standalone).
    log: ReplicationLog,
    /// The voter's durable state.
    votes: VoteStore,
    /// Where cut writes go.
    rollback: RollbackLog,
    /// How it behaves.
    settings: Settings,
    /// The log is durable through here (from [`Input::Durable`]), as the log was after its
    /// `durable_resets`th reset: a later reset discards the records it names (see
    /// [`SingleLeader::durable_lsn`]).
    durable: Lsn,
    /// The log's reset count when `durable` was set.
    durable_resets: u64,
    /// When a follower (or candidate) stands next, if no leader is heard from before.
    election_deadline_ms: u64,
    /// The state of the random draws (splitmix64).
    random: u64,
    /// Elections stood in, and won, since start.
    elections: (u64, u64),
    /// Stand at the next timeout although `auto_failover` is off: this node led (or stood)
    /// before it restarted, and no leader has been heard since.
    reclaim: bool,
    /// A FAILOVER under way (on a leader).
    handover: Option<handover::Handover>,
    /// Writes held while it runs.
    held: std::collections::VecDeque<handover::Held>,
    /// The statement log's judgements and warnings (with `log_format` other than logical).
    statements: statement::Statements,
    /// The part it plays.
    state: State,
    /// On a leader: the ids it gave forwarded requests -> (follower, its incarnation, its
    /// number).
    forwarded: BTreeMap<RequestId, (NodeId, u64, u64)>,
    /// This replica's start time, which names its forwarded writes across restarts.
    incarnation: u64,
    /// The next id for a forwarded request.
    next_forwarded: RequestId,
    /// On a follower: its number for each write it forwarded -> (client request, deadline).
    forwarding: BTreeMap<u64, (RequestId, u64, Forwarded)>,
    /// The leader every write in `forwarding` went to, and the epoch it led: they live only
    /// while this node follows it in that epoch (see [`SingleLeader::maybe_abort_forwarding`]).
    forwarding_to: (NodeId, Epoch),
    /// The next number for a forwarded write.
    next_forward: u64,
    /// Session reads waiting for this replica to hold their session's position.
    session_waits: std::collections::VecDeque<session::SessionWait>,
    /// Session requests taken, by id, until their replies leave positioned.
    session_answers: BTreeMap<RequestId, session::SessionAnswer>,
    /// (a follower, what its readers saw) when the waits were last checked, and the earliest
    /// wait's deadline: the waits are checked again only once one of those changes.
    session_checked: Option<(bool, Option<Lsn>)>,
    session_due_ms: u64,
    /// Its repair of damaged records (see `repair.rs`).
    repair: repair::Repair,
    /// When it last heard from a leader of its epoch, in any role (with `read_lease`, its
    /// start counts too): a voter refuses votes for `election_timeout_ms` after it, which is
    /// what a leader's lease rests on (the leader's essay, "Leases").
    leader_heard_ms: Option<u64>,
    /// A voter refuses every vote until here: the guard a leasing leader's heartbeat asked for
    /// (its election timeout from when it was heard), whatever this node's own settings.
    vote_guard_until_ms: u64,
}

impl<E: Engine> SingleLeader<E> {
    /// A lone node's replica over `engine`; fails with [`crate::Error::Corrupt`] when the engine's
    /// database map is damaged.
    pub fn standalone(engine: E, node: NodeId) -> Result<SingleLeader<E>> {
        let settings = Settings::new(node, Role::Standalone);
        let files = ReplicaFiles::in_memory(Default::default());
        Ok(SingleLeader::assemble(Store::open(engine, node)?, files, settings, State::Standalone))
    }

    /// A lone node's replica over `engine`, for tests (panics where [`SingleLeader::standalone`]
    /// fails).
    pub fn new(engine: E, node: NodeId) -> SingleLeader<E> {
        let settings = Settings::new(node, Role::Standalone);
        let files = ReplicaFiles::in_memory(Default::default());
        SingleLeader::assemble(Store::new(engine, node), files, settings, State::Standalone)
    }

    /// A replica of a cluster over `engine` and its `files`, recovered as the module
    /// documentation says. It starts in `settings.role` and `settings.epoch` when its vote
    /// file is fresh; a node that ran in this cluster before starts as a follower in its last
    /// epoch, leader unknown, and waits for a leader or an election. Without `auto_failover`,
    /// one that led (or stood) in that epoch asks to lead again at its first election timeout,
    /// and wins unless another leader is heard: so a restarted leader resumes, as Redis's
    /// master does, and a node a FAILOVER deposed does not.
    pub fn replicated(engine: E, files: ReplicaFiles, settings: Settings, now_ms: u64) -> Result<SingleLeader<E>> {
        let mut settings = settings;
        let mut votes = files.votes;
        let persisted = votes.state();
        settings.common.peers = settings.peers();
        let restarted = persisted.epoch > 0 && persisted.epoch >= settings.epoch;
        // A node that stood or led in its epoch asks to lead again at its first timeout even
        // without auto_failover (its pre-vote fails if another leader is heard).
        let reclaim = restarted && !settings.auto_failover && persisted.voted_for == Some(settings.common.node);
        if restarted && !matches!(settings.role, Role::Standalone) {
            settings.role = Role::Follower { leader: None, leader_hint: String::new() };
        }
        settings.epoch = settings.epoch.max(persisted.epoch);
        if persisted.epoch < settings.epoch {
            let voted_for = match &settings.role {
                Role::Leader { .. } => Some(settings.common.node),
                _ => None,
            };
            votes.save(VoterState { epoch: settings.epoch, voted_for })?;
        }
        let mut store = Store::open(engine, settings.common.node)?;
        store.set_corruption(settings.common.corruption);
        store.set_physical_log(settings.log_format == crate::replication::LogFormat::Physical);
        let state = match &settings.role {
            Role::Standalone => State::Standalone,
            Role::Leader { .. } => State::Leader(leader::Leader::new(&settings.peers(), now_ms)),
            Role::Follower { leader, .. } => State::Follower(follower::Follower::new(*leader, 0)),
        };
        store.capture_changes();
        store.limit_values(REPLICATED_VALUE_BYTES_MAX);
        let files = ReplicaFiles { votes, ..files };
        let mut replica = SingleLeader::assemble(store, files, settings, state);
        replica.incarnation = now_ms;
        replica.reclaim = reclaim;
        // A voter that heard a leader just before it restarted must not vote the moment it is
        // back: with a lease, the restart counts as hearing one.
        replica.leader_heard_ms = replica.settings.read_lease.then_some(now_ms);
        replica.random = replica.settings.common.seed ^ 0x9e37_79b9_7f4a_7c15;
        replica.election_deadline_ms = now_ms + replica.draw_election_timeout();
        if replica.votes.rebuilding() {
            // A crash interrupted emptying the replica (or installing a snapshot): finish.
            tracing::warn!("a rebuild was under way when this replica stopped: emptying it to take the history again");
            follower::wipe(&mut replica.store)?;
            replica.store.engine_mut().sync_written(now_ms)?;
            replica.log.reset(0, 0)?;
            replica.votes.rebuilt()?;
        }
        replica.recover()?;
        if let State::Follower(follower) = &mut replica.state {
            // Recovery applied the whole log, which may hold records no leader made durable.
            follower.unconfirmed_through(replica.log.complete_lsn(), "restarted");
        }
        // Everything the log holds is durable from here on (open may have read records that
        // were only in the page cache): a leader may ship all of it at once, without waiting
        // for a write to tell it so.
        replica.log.flush()?;
        let durable = replica.log.last_lsn();
        (replica.durable, replica.durable_resets) = (durable, replica.log.resets().0);
        if let State::Leader(leader) = &mut replica.state {
            leader.restarted(durable);
        }
        Ok(replica)
    }

    fn assemble(store: Store<E>, files: ReplicaFiles, settings: Settings, state: State) -> SingleLeader<E> {
        SingleLeader {
            store,
            commands: Box::new(Strings),
            log_hold: None,
            log: files.log,
            votes: files.votes,
            rollback: files.rollback,
            settings,
            state,
            durable: 0,
            durable_resets: 0,
            election_deadline_ms: 0,
            random: 0,
            elections: (0, 0),
            reclaim: false,
            handover: None,
            held: std::collections::VecDeque::new(),
            statements: statement::Statements::default(),
            forwarded: BTreeMap::new(),
            incarnation: 0,
            next_forwarded: FORWARDED_ID_BASE,
            forwarding: BTreeMap::new(),
            forwarding_to: (NodeId(0), 0),
            next_forward: 0,
            session_waits: std::collections::VecDeque::new(),
            session_answers: BTreeMap::new(),
            session_checked: None,
            session_due_ms: u64::MAX,
            repair: repair::Repair::default(),
            leader_heard_ms: None,
            vote_guard_until_ms: 0,
        }
    }

    /// A write the leader makes of its own, not a client's (another family's, such as a
    /// change a multi-leader node receives from another leader): `write` changes the store,
    /// and what it changed is logged as one request and shipped like any other. Returns the
    /// request's last position, whose [`Input::Durable`] says it is durable here; `None`,
    /// without calling `write`, when this node does not lead or hands leadership over (the
    /// caller tries again later), and when `write` changed nothing.
    pub fn leader_write(&mut self, write: impl FnOnce(&mut Store<E>) -> Result<()>) -> Result<Option<Lsn>> {
        let State::Leader(leader) = &mut self.state else { return Ok(None) };
        if self.handover.is_some() {
            return Ok(None);
        }
        write(&mut self.store)?;
        Self::log_captured(&mut self.log, &mut self.store, &self.settings, leader)
    }

    /// Logs what a leader's store captured since the last call as one request; its last
    /// position, or `None` when nothing was captured.
    fn log_captured(
        log: &mut ReplicationLog,
        store: &mut Store<E>,
        settings: &Settings,
        leader: &mut leader::Leader,
    ) -> Result<Option<Lsn>> {
        let (epoch, changes_max) = (settings.epoch, settings.record_changes_max);
        let logged = store.take_logged();
        // Physical replication ships the bytes the engine appended, the records of the
        // changes the store captured (and of any record it moved between batches).
        let extents = store.engine_mut().log_engine().map(LogEngine::take_extents).unwrap_or_default();
        if !extents.is_empty() {
            let (lsn, bytes) = append_physical(log, epoch, extents, changes_max)?;
            leader.logged(lsn, bytes);
            return Ok(Some(lsn));
        }
        if logged.0.is_empty() {
            return Ok(None);
        }
        let (lsn, bytes) = append_changes(log, epoch, logged, changes_max)?;
        leader.logged(lsn, bytes);
        Ok(Some(lsn))
    }

    /// Has requests answered by `commands` instead of Redis's string commands: how another
    /// family runs its own state machine on this family's log, followers and elections. Set
    /// it before the first request; the records it writes replicate as any others.
    pub fn set_commands(&mut self, commands: Box<dyn Commands<E>>) {
        self.commands = commands;
    }

    /// Handles one input at wall-clock `now_ms`, pushing outputs into `outbox`. An error is an
    /// engine or log failure: the node must stop and release nothing.
    pub fn step(&mut self, now_ms: u64, input: Input, outbox: &mut Outbox) -> Result<()> {
        let marks = (outbox.after_flush.len(), outbox.now.len());
        self.physical_role()?;
        self.dispatch(now_ms, input, outbox)?;
        self.physical_role()?;
        if let State::Follower(follower) = &mut self.state {
            // What it knows of the leader's log is as old as the leader's last message.
            if follower.leader.is_some() && follower.applied >= follower.leader_lsn() {
                follower.caught_up_local_ms = follower.last_heard_ms.or(follower.caught_up_local_ms);
            }
        }
        self.session_tick(now_ms, outbox)?;
        self.take_damage_found()?;
        self.take_pending_repair()?;
        if self.handover.is_some() || !self.held.is_empty() {
            self.drive_handover(now_ms, outbox)?;
        }
        // Before the forwarded-reply mapping below: a write this node forwarded may itself be
        // one a follower forwarded to it while it led (held by a handover, then forwarded on).
        self.maybe_abort_forwarding(outbox);
        if !self.session_answers.is_empty() {
            let (after_flush, now) = (&mut outbox.after_flush[marks.0..], &mut outbox.now[marks.1..]);
            self.position_session_replies(after_flush.iter_mut().chain(now.iter_mut()));
        }
        if !self.forwarded.is_empty() {
            // Replies to forwarded requests go back to the follower that forwarded them.
            let forwarded = &mut self.forwarded;
            let epoch = self.settings.epoch;
            for output in outbox.after_flush[marks.0..].iter_mut().chain(outbox.now[marks.1..].iter_mut()) {
                if let Output::Reply { id, reply } = output {
                    if let Some((to, incarnation, number)) = forwarded.remove(id) {
                        let reply = std::mem::replace(reply, Reply::Nil);
                        let message = Message::ForwardReply { epoch, incarnation, id: number, reply };
                        *output = Output::Send { to, message: message.into() };
                    }
                }
            }
        }
        Ok(())
    }

    fn dispatch(&mut self, now_ms: u64, input: Input, outbox: &mut Outbox) -> Result<()> {
        match input {
            Input::Request { id, request } => self.request(now_ms, id, request, outbox),
            Input::Tick => self.tick(now_ms, outbox),
            Input::Message { from, message } => self.message(now_ms, from, message, outbox),
            Input::Durable { lsn, resets } => {
                let (now_resets, _) = self.log.resets();
                if resets != now_resets {
                    // Written out before a reset (a follower's cut or snapshot) that discarded
                    // those records: the lsn may name new records, not yet durable.
                    return Ok(());
                }
                assert!(
                    lsn <= self.log.last_lsn(),
                    "durable lsn {lsn} is past the log's end {} in the same log (resets {resets})",
                    self.log.last_lsn()
                );
                let lsn = lsn.max(self.durable_lsn());
                (self.durable, self.durable_resets) = (lsn, resets);
                if let State::Leader(leader) = &mut self.state {
                    leader.durable(now_ms, lsn, &mut self.log, &self.store, &self.settings, outbox)?;
                }
                Ok(())
            }
        }
    }

    fn request(&mut self, now_ms: u64, id: RequestId, request: Request, outbox: &mut Outbox) -> Result<()> {
        if let Request::Digest { bucket } = request {
            let reply = self.digest(bucket)?;
            outbox.after_flush.push(Output::Reply { id, reply });
            return Ok(());
        }
        if let Request::Log { after, count, changes, prefix } = request {
            let reply = self.list_log(after, count, changes, &prefix)?;
            outbox.after_flush.push(Output::Reply { id, reply });
            return Ok(());
        }
        if let Request::Failover { to, force, abort, timeout_ms } = request {
            return self.failover(now_ms, id, to, force, abort, timeout_ms, outbox);
        }
        if matches!(self.state, State::Leader(_)) && self.maybe_hold(now_ms, id, &request, outbox) {
            return Ok(()); // a session's request is held whole, and positioned once it runs
        }
        if let Request::Session { after, wait_ms, on_leader, request } = request {
            return self.session_request(now_ms, id, after, wait_ms, on_leader, *request, outbox);
        }
        match &mut self.state {
            State::Standalone => {
                let reply = match request {
                    Request::Wait { .. } => Reply::Int(0),
                    request => self.commands.execute(&mut self.store, now_ms, request)?,
                };
                outbox.after_flush.push(Output::Reply { id, reply });
            }
            State::Follower(_) if request.is_write() && self.settings.forward_writes => {
                self.forward(now_ms, id, request, outbox);
            }
            State::Follower(follower) => {
                let reply = match request {
                    Request::Wait { .. } => Reply::err("WAIT cannot be used with replica instances."),
                    request if request.is_write() => Reply::Error(match follower.leader {
                        Some(leader) => format!(
                            "READONLY You can't write against a read only replica. The leader is {}.",
                            self.settings.hint(leader)
                        ),
                        None => format!(
                            "READONLY You can't write against a read only replica. No leader is known right now \
                             (epoch {}; an election may be under way); try again shortly.",
                            self.settings.epoch
                        ),
                    }),
                    _ if follower.installing_snapshot() => Reply::Error(format!(
                        "TRYAGAIN this replica is installing a snapshot from its leader; it serves reads once the \
                         snapshot is whole{}",
                        match follower.leader {
                            Some(leader) => format!(". The leader is {}.", self.settings.hint(leader)),
                            None => String::from("."),
                        }
                    )),
                    _ if follower.unconfirmed() > 0 => Reply::Error(format!(
                        "TRYAGAIN this replica {} holding records through {} that no leader has confirmed \
                         durable yet; it serves reads once its leader does (within a heartbeat of hearing it){}",
                        follower.unconfirmed_because(),
                        follower.unconfirmed(),
                        match follower.leader {
                            Some(leader) => format!(". The leader is {}.", self.settings.hint(leader)),
                            None => String::from(". No leader is known right now."),
                        }
                    )),
                    request => self.commands.execute(&mut self.store, now_ms, request)?,
                };
                outbox.after_flush.push(Output::Reply { id, reply });
            }
            State::Leader(leader) => {
                if let Request::Wait { replicas, timeout_ms } = request {
                    leader.wait(now_ms, id, replicas, timeout_ms, self.log.last_lsn(), outbox);
                    return Ok(());
                }
                if leader.is_full() && request.is_write() {
                    let reply = Reply::err("too many writes are waiting for their acknowledgements; try again later");
                    outbox.after_flush.push(Output::Reply { id, reply });
                    return Ok(());
                }
                // The request itself, for a statement log (before it executes: a script's
                // notes of nondeterminism are this request's).
                let format = self.settings.log_format;
                let statement = match format {
                    crate::replication::LogFormat::Logical | crate::replication::LogFormat::Physical => None,
                    _ if !request.is_write() || !self.commands.statements() => None,
                    // While a snapshot is in flight its chunks read the engine as it is then,
                    // writes after the snapshot's position included: what follows that position
                    // must apply harmlessly over them, as effects do and statements do not.
                    _ if leader.snapshotting() => None,
                    _ => {
                        let _ = self.store.take_nondeterministic();
                        Some(self.store.statement_form(request.clone()))
                    }
                };
                let reply = self.commands.execute(&mut self.store, now_ms, request)?;
                let logged = match statement {
                    None => Self::log_captured(&mut self.log, &mut self.store, &self.settings, leader)?,
                    Some(request) => {
                        let logged = self.store.take_logged();
                        if logged.0.is_empty() {
                            None
                        } else {
                            let epoch = self.settings.epoch;
                            let (lsn, bytes) =
                                match self.statements.statement(now_ms, format, &mut self.store, request, &logged) {
                                    Some(statement) => append_statement(&mut self.log, epoch, statement)?,
                                    None => {
                                        append_changes(&mut self.log, epoch, logged, self.settings.record_changes_max)?
                                    }
                                };
                            leader.logged(lsn, bytes);
                            Some(lsn)
                        }
                    }
                };
                let Some(lsn) = logged else {
                    // A read, or a write that changed nothing (DEL of a missing key): its
                    // answer must not describe a state this node may no longer lead.
                    if leader.is_full() {
                        let reply = Reply::err("too many requests are waiting for the leader; try again later");
                        outbox.after_flush.push(Output::Reply { id, reply });
                        return Ok(());
                    }
                    leader.read(now_ms, id, reply, self.log.last_lsn(), &self.settings, outbox);
                    return Ok(());
                };
                leader.written(now_ms, id, lsn, reply, &self.settings, outbox);
            }
        }
        Ok(())
    }

    /// Sends `request` to this follower's leader, which answers it as its own client's and sends
    /// the reply back; an error when no leader is known or too many wait.
    fn forward(&mut self, now_ms: u64, id: RequestId, request: Request, outbox: &mut Outbox) {
        let State::Follower(follower) = &self.state else { unreachable!("only a follower forwards") };
        let Some(leader) = follower.leader else {
            let reply = Reply::err(format!(
                "no leader is known right now (epoch {}; an election may be under way): the request was not \
                 forwarded; try again shortly",
                self.settings.epoch
            ));
            outbox.after_flush.push(Output::Reply { id, reply });
            return;
        };
        if self.forwarding.len() >= PENDING_REPLIES_MAX {
            let reply = Reply::err("too many forwarded requests are waiting for the leader; try again later");
            outbox.after_flush.push(Output::Reply { id, reply });
            return;
        }
        // Writes forwarded to an earlier leader fail first: all of `forwarding` goes to one.
        self.maybe_abort_forwarding(outbox);
        self.forwarding_to = (leader, self.settings.epoch);
        self.next_forward += 1;
        let number = self.next_forward;
        let what = if request.is_write() { Forwarded::Write } else { Forwarded::Read };
        self.forwarding.insert(number, (id, now_ms + self.settings.forward_timeout_ms, what));
        let message =
            Message::Forward { epoch: self.settings.epoch, incarnation: self.incarnation, id: number, request };
        outbox.now.push(Output::Send { to: leader, message: message.into() });
    }

    /// Forwards `request` to the leader when `forwards`, else takes it as this replica's own.
    pub(super) fn forward_or_refuse(
        &mut self,
        now_ms: u64,
        id: RequestId,
        request: Request,
        forwards: bool,
        outbox: &mut Outbox,
    ) -> Result<()> {
        match forwards {
            true => {
                self.forward(now_ms, id, request, outbox);
                Ok(())
            }
            false => self.request(now_ms, id, request, outbox),
        }
    }

    fn tick(&mut self, now_ms: u64, outbox: &mut Outbox) -> Result<()> {
        self.repair_tick(now_ms, outbox);
        match &mut self.state {
            State::Standalone => {
                self.store.expire_due(now_ms)?;
            }
            State::Leader(leader) => {
                if leader.lost_majority(now_ms, &self.settings) {
                    tracing::warn!(
                        "no majority of the cluster answered for {} ms: stepping down from leading epoch {}",
                        self.settings.election_timeout_ms,
                        self.settings.epoch
                    );
                    return self.become_follower(now_ms, None, outbox);
                }
                // Expiry is a write the leader makes and ships; followers never expire keys
                // themselves, so that every replica deletes the same keys at the same place.
                // None during a handover: the target must be able to catch up to the end.
                if self.handover.is_none() {
                    self.store.expire_due(now_ms)?;
                }
                Self::log_captured(&mut self.log, &mut self.store, &self.settings, leader)?;
                // The log may drop records at this tick: the engine holds them durably first
                // (not while what the log holds for another family keeps every segment).
                leader.hold_from = self.log_hold;
                if self.log.would_retain_drop(leader.retain_bound(&self.log)) {
                    self.store.engine_mut().sync_written(now_ms)?;
                }
                leader.tick(now_ms, &mut self.log, &self.store, &self.settings, outbox)?;
            }
            State::Follower(follower) => {
                if self.log.would_retain_drop(follower.keep_from(&self.log, self.log_hold)) {
                    self.store.engine_mut().sync_written(now_ms)?;
                }
                follower.tick(&mut self.log, self.log_hold)?;
                let leader = follower.leader;
                let late: Vec<u64> = self
                    .forwarding
                    .iter()
                    .filter(|(_, (_, deadline, _))| *deadline <= now_ms)
                    .map(|(n, _)| *n)
                    .collect();
                for number in late {
                    let (id, _, what) = self.forwarding.remove(&number).expect("listed above");
                    let hint = leader.map(|l| self.settings.hint(l)).unwrap_or_else(|| "unknown".into());
                    let reply = Reply::err(format!(
                        "the leader ({hint}) did not answer this forwarded {} within {} ms{}",
                        what.name(),
                        self.settings.forward_timeout_ms,
                        what.outcome()
                    ));
                    outbox.now.push(Output::Reply { id, reply });
                }
                if leader.is_some() {
                    self.reclaim = false;
                }
                // A replica whose store may hold writes its log lacks (a snapshot's taint) does
                // not stand: as leader it would serve values no log records. Nor does one whose
                // log is behind its vote floor: it emptied a log that may have held writes it
                // acknowledged, and voters behind it could elect it without them.
                let tainted = self.votes.taint().is_some() || self.behind_vote_floor();
                if (self.settings.auto_failover || self.reclaim) && !tainted && now_ms >= self.election_deadline_ms {
                    self.stand(now_ms, true, false, outbox)?;
                }
            }
        }
        Ok(())
    }

    fn message(&mut self, now_ms: u64, from: NodeId, message: Message, outbox: &mut Outbox) -> Result<()> {
        if !self.fence(now_ms, from, &message, outbox)? {
            return Ok(());
        }
        match (&self.state, message) {
            (_, Message::Vote { epoch, last_epoch, last_lsn, pre_vote, transfer }) => {
                let last = LogPosition { epoch: last_epoch, lsn: last_lsn };
                self.vote(now_ms, from, epoch, last, pre_vote, transfer, outbox)
            }
            (State::Follower(f), Message::TimeoutNow { .. })
                if f.leader == Some(from) && self.votes.taint().is_none() && !self.behind_vote_floor() =>
            {
                tracing::info!("{from:?} hands over: standing now");
                self.stand(now_ms, false, true, outbox)
            }
            (_, Message::VoteReply { epoch, granted, pre_vote }) => {
                self.vote_reply(now_ms, from, epoch, granted, pre_vote, outbox)
            }
            (State::Leader(_), Message::Forward { epoch, incarnation, id, request }) => {
                if self.forwarded.len() >= PENDING_REPLIES_MAX {
                    let reply = Reply::err("too many forwarded requests are pending on the leader; try again later");
                    let message = Message::ForwardReply { epoch, incarnation, id, reply };
                    outbox.now.push(Output::Send { to: from, message: message.into() });
                    return Ok(());
                }
                self.next_forwarded += 1;
                let local = self.next_forwarded;
                self.forwarded.insert(local, (from, incarnation, id));
                self.request(now_ms, local, request, outbox)
            }
            (State::Follower(follower), Message::ForwardReply { incarnation, id, reply, .. }) => {
                if follower.leader != Some(from) || incarnation != self.incarnation {
                    tracing::debug!("a forwarded reply for another node, epoch or run of this one: ignored");
                    return Ok(());
                }
                match self.forwarding.remove(&id) {
                    Some((request, _, _)) => outbox.now.push(Output::Reply { id: request, reply }),
                    None => tracing::debug!("a reply to forwarded request {id} came after its timeout"),
                }
                Ok(())
            }
            (State::Leader(_), Message::RepairRequest { keys, .. }) => self.repair_request(now_ms, from, keys, outbox),
            (State::Follower(f), Message::RepairReply { lsn, entries, .. }) if f.leader == Some(from) => {
                self.repair_reply(now_ms, from, lsn, entries)
            }
            (_, message @ (Message::RepairRequest { .. } | Message::RepairReply { .. })) => {
                tracing::debug!("{} from {from:?} is not for this node's role now: ignored", message.kind());
                Ok(())
            }
            (_, message) => self.peer_message(now_ms, from, message, outbox),
        }
    }

    fn peer_message(&mut self, now_ms: u64, from: NodeId, message: Message, outbox: &mut Outbox) -> Result<()> {
        match &mut self.state {
            State::Standalone => {
                tracing::debug!("standalone node ignores a message from {from:?}");
            }
            State::Leader(leader) => {
                // An acknowledgement (anything else a leader ignores, saying so).
                leader.message(now_ms, from, message, &mut self.log, &self.store, &self.settings, outbox)?;
                if leader.lost_data {
                    return self.become_follower(now_ms, None, outbox);
                }
            }
            State::Follower(follower) => {
                // The epoch's leader shipping, beating or sending a snapshot (fence() made
                // `from` this follower's leader when it is the epoch's).
                if follower.leader != Some(from) {
                    // An acknowledgement sent to this node while it led, say.
                    tracing::debug!("follower ignores a {} from {from:?}, which is not its leader", message.kind());
                    return Ok(());
                }
                let heard = message.from_leader();
                follower.message(
                    now_ms,
                    from,
                    message,
                    &mut self.log,
                    &mut self.store,
                    &mut self.rollback,
                    &mut self.votes,
                    &self.settings,
                    outbox,
                )?;
                if heard {
                    self.election_deadline_ms = now_ms + self.draw_election_timeout();
                }
            }
        }
        Ok(())
    }

    /// Makes every write stepped so far durable; only then may `after_flush` be released. A
    /// replicating node's engine is fsynced too, whatever its fsync policy's interval (the
    /// runtime calls this at shutdown).
    pub fn flush(&mut self, now_ms: u64) -> Result<Flushed> {
        self.log.flush()?;
        match self.state {
            State::Standalone => self.store.engine_mut().flush(now_ms),
            _ => {
                let bytes = self.store.engine_mut().write_out_unsynced(now_ms)?;
                self.store.engine_mut().sync_written(now_ms)?;
                Ok(Flushed { bytes, synced: true })
            }
        }
    }

    /// Hands every write stepped so far to the operating system and returns the fsyncs that
    /// make them durable (the log's; a standalone node's engine's); `after_flush` may be released once
    /// they have succeeded (see [`Engine::write_out`]). A leader ships what the batch appended
    /// into `outbox.now` (DESIGN §12: followers write in parallel with the leader's fsync).
    pub fn write_out(&mut self, now_ms: u64, outbox: &mut Outbox) -> Result<WrittenOutAll> {
        let log = self.log.write_out()?;
        if let State::Leader(leader) = &mut self.state {
            leader.ship_all(now_ms, &mut self.log, &self.store, &self.settings, outbox)?;
        }
        let (engine_bytes, engine_sync) = match self.state {
            State::Standalone => {
                let engine = self.store.engine_mut().write_out(now_ms)?;
                (engine.bytes, engine.sync)
            }
            // The replication log is the write-ahead log: a batch is durable when the log is,
            // and recovery replays the log into the engine. The engine's files are fsynced
            // when a segment seals, before the log drops records ([`Self::tick`]), before a
            // reset, and at shutdown.
            _ => (self.store.engine_mut().write_out_unsynced(now_ms)?, None),
        };
        let syncs = log.sync.into_iter().chain(engine_sync).collect();
        Ok(WrittenOutAll {
            bytes: log.bytes + engine_bytes,
            syncs,
            last_lsn: self.log.last_lsn(),
            resets: self.log.resets().0,
        })
    }

    /// Gives the log engine its part in physical replication (`log_format = "physical"`): a
    /// leader's captures what it appends, a follower's writes the leader's bytes.
    fn physical_role(&mut self) -> Result<()> {
        if self.settings.log_format != crate::replication::LogFormat::Physical {
            return Ok(());
        }
        let role = match self.state {
            State::Leader(_) => PhysicalRole::Lead,
            // Its files no longer the leader's, it compacts its own on its own.
            State::Follower(_) if self.store.physical_left() => PhysicalRole::Off,
            State::Follower(_) => PhysicalRole::Follow,
            State::Standalone => PhysicalRole::Off,
        };
        match self.store.engine_mut().log_engine().filter(|e| e.physical_role() != role) {
            Some(engine) => engine.set_physical(role),
            None => Ok(()),
        }
    }

    /// A physical leader's compaction: when one is due, the leader logs its inputs as a
    /// record and runs it whole, and every follower runs it when it applies that record, at
    /// the same place among the puts, so that the outputs are the same bytes everywhere. The
    /// record is durable before the leader compacts: a leader that crashed with its outputs
    /// committed and the record lost would hold files its followers never will.
    fn compact_physical(&mut self) -> Result<()> {
        let State::Leader(leader) = &mut self.state else { return Ok(()) };
        if self.handover.is_some() {
            return Ok(());
        }
        let Some((inputs, active)) =
            self.store.engine_mut().log_engine().and_then(|e| Some((e.compaction_inputs()?, e.active_base())))
        else {
            return Ok(());
        };
        Self::log_captured(&mut self.log, &mut self.store, &self.settings, leader)?;
        let physical = Physical { extents: Vec::new(), compact: inputs.clone(), active };
        let record = LogRecord {
            physical: Some(physical),
            ..LogRecord::whole(self.log.last_lsn() + 1, self.settings.epoch, Vec::new())
        };
        let (lsn, bytes) = (record.lsn, record.size_hint() as u64);
        self.log.append(record)?;
        self.log.flush()?;
        leader.logged(lsn, bytes);
        if let Some(engine) = self.store.engine_mut().log_engine() {
            engine.compact_whole(&inputs, active)?;
        }
        Ok(())
    }

    /// Background work between batches (compaction), bounded by `budget_bytes`.
    pub fn maintain(&mut self, budget_bytes: u64) -> Result<()> {
        self.physical_role()?;
        self.compact_physical()?;
        // A physical leader handing over writes nothing of its own (a damaged segment's
        // records moved): it could not log them, and its successor would never have them.
        let physical_leader =
            self.store.engine_mut().log_engine().is_some_and(|e| e.physical_role() == PhysicalRole::Lead);
        if !(physical_leader && self.handover.is_some()) {
            self.store.engine_mut().maintain(budget_bytes)?;
        }
        // A physical leader ships what maintain wrote (a damaged segment's records moved) at
        // once, as a write of its own, rather than with the next request.
        if let (State::Leader(leader), false) = (&mut self.state, self.handover.is_some()) {
            Self::log_captured(&mut self.log, &mut self.store, &self.settings, leader)?;
        }
        for (key, error) in self.store.engine_mut().take_damaged() {
            self.store.note_damage(&key, error)?;
        }
        Ok(())
    }

    /// The storage engine's counters.
    pub fn stats(&self) -> EngineStats {
        self.store.engine().stats()
    }

    /// Every database holding keys, with its counts (INFO keyspace).
    pub fn keyspace(&self) -> Vec<crate::kv::DbKeys> {
        self.store.keyspace()
    }

    /// The newest record in the replication log.
    pub fn last_lsn(&self) -> Lsn {
        self.log.last_lsn()
    }

    /// Takes the replica apart into its engine and its files, as a crash leaves them (the
    /// simulator keeps what was durable and restarts a replica over it).
    pub fn into_parts(self) -> (E, ReplicaFiles) {
        let SingleLeader { store, log, votes, rollback, .. } = self;
        (store.into_engine(), ReplicaFiles { log, votes, rollback })
    }

    /// True while this replica leads.
    pub fn is_leader(&self) -> bool {
        matches!(self.state, State::Leader(_))
    }

    /// The leader as this replica knows it (itself when it leads), with how clients reach it.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let leader = match &self.state {
            State::Standalone => None,
            State::Leader(_) => Some(self.settings.common.node),
            State::Follower(follower) => follower.leader,
        };
        leader.map(|l| (l, self.settings.hint(l)))
    }

    /// On a leader: the newest record a majority of its cluster holds durably (so that no
    /// failover the cluster survives loses it); `None` on other roles.
    ///
    /// As Raft's leaders, it counts records of earlier epochs only once a record of its own
    /// epoch is held by a majority too (before that a record an older leader wrote may be on a
    /// majority and still be cut by a later election: Raft's figure 8), and says 0 until then.
    pub fn committed_lsn(&self) -> Option<Lsn> {
        match &self.state {
            State::Leader(leader) => {
                let committed = leader.committed();
                Some(if self.log.epoch_at(committed) == Some(self.settings.epoch) { committed } else { 0 })
            }
            _ => None,
        }
    }

    /// Have the log keep its records from `lsn` on (`None`: no more) while this replica leads,
    /// as it keeps those a live follower still needs: what another family reads from the log
    /// with [`SingleLeader::read_log`] (multi-leader's exchange between datacenters). Set
    /// before the replica leads, it holds from its first tick as leader. Past its size bound the
    /// log warns, naming what holds it. The leader's heartbeats carry its hold, and its
    /// followers' logs keep the same records, so that whichever leads next still has them; a
    /// follower that has heard no heartbeat of its leader yet holds from its own `lsn`.
    pub fn hold_log_from(&mut self, lsn: Option<Lsn>) {
        self.log_hold = lsn;
    }

    /// The log's records from `after + 1` on, up to about `bytes_max` (at least one if any):
    /// see [`ReplicationLog::read`]. `Ok(None)` when the log no longer holds `after + 1`.
    pub fn read_log(&mut self, after: Lsn, bytes_max: usize) -> Result<Option<Vec<crate::replication::LogRecord>>> {
        self.log.read(after, bytes_max)
    }

    /// The epoch of the log's record at `lsn`, if the log holds it.
    pub fn log_epoch_at(&self, lsn: Lsn) -> Option<Epoch> {
        self.log.epoch_at(lsn)
    }

    /// The oldest record the log holds (its base + 1).
    pub fn first_lsn(&self) -> Lsn {
        self.log.first_lsn()
    }

    /// Every run of one epoch's records in the log, as (where it starts, its epoch), oldest
    /// first; the first at the log's base.
    pub fn log_epoch_runs(&self) -> Vec<(Lsn, Epoch)> {
        self.log.epoch_runs()
    }

    /// On a follower whose readers may see its store: the newest record the store holds
    /// (`None` on other roles, and on a follower that restarted and refuses reads until a
    /// leader confirms its log).
    pub fn follower_serves_through(&self) -> Option<Lsn> {
        match &self.state {
            State::Follower(follower) if follower.unconfirmed() == 0 && !follower.installing_snapshot() => {
                Some(follower.applied)
            }
            _ => None,
        }
    }

    /// True when the log ends before the vote floor: it was emptied (or its tail cut) from a
    /// position it has not reached again.
    fn behind_vote_floor(&self) -> bool {
        LogPosition { epoch: self.log.last_epoch(), lsn: self.log.last_lsn() } < self.votes.floor()
    }

    /// Where the log's last reset (or cut of its tail) left it: durable through there.
    pub fn log_reset_lsn(&self) -> Lsn {
        self.log.resets().1
    }

    /// How many times the log was reset (snapshots installed, histories cut) since it opened.
    pub fn log_resets(&self) -> u64 {
        self.log.resets().0
    }

    /// How far the log is durable, as far as this replica was told: the last
    /// [`Input::Durable`] of the log as it is now, or where the last reset left it (a reset is
    /// durable when it returns) if none came since.
    pub(crate) fn durable_lsn(&self) -> Lsn {
        let (resets, reset_lsn) = self.log.resets();
        if resets == self.durable_resets {
            self.durable
        } else {
            reset_lsn
        }
    }

    /// The writes this replica cut from its log (kept in memory by an in-memory rollback log).
    pub fn rollback(&self) -> &RollbackLog {
        &self.rollback
    }

    /// The replica's settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The settings, to change in a test after the replica is built.
    #[cfg(test)]
    pub(crate) fn settings_mut(&mut self) -> &mut Settings {
        &mut self.settings
    }

    /// Sets what a read that finds a damaged record does (see [`Store::set_corruption`]).
    pub fn set_corruption(&mut self, corruption: crate::kv::Corruption) {
        self.store.set_corruption(corruption);
    }

    /// Sets how many databases requests may name (see [`Store::set_databases`]).
    pub fn set_databases(&mut self, databases: u32) {
        self.store.set_databases(databases);
    }

    /// Changes the timeouts of a running replica (the server's `CONFIG SET ack_timeout_ms`).
    /// Writes, reads and forwarded writes that start waiting after this get the new ones;
    /// those already waiting keep the deadline they were given. A zero timeout is a broken
    /// invariant: the server refuses one before it gets here.
    pub fn set_timeouts(&mut self, ack_timeout_ms: u64, forward_timeout_ms: u64) {
        assert!(
            ack_timeout_ms > 0 && forward_timeout_ms > 0,
            "timeouts must be positive: ack {ack_timeout_ms} ms, forward {forward_timeout_ms} ms"
        );
        self.settings.ack_timeout_ms = ack_timeout_ms;
        self.settings.forward_timeout_ms = forward_timeout_ms;
    }

    /// The store, for reading keys (digests, tests).
    pub fn store(&self) -> &Store<E> {
        &self.store
    }

    /// What the replication status pages show, at `now_ms`.
    pub fn status(&self, now_ms: u64) -> ReplicationStatus {
        let log = self.log.stats();
        let mut status = ReplicationStatus {
            role: "standalone",
            mode: "single-leader",
            epoch: self.settings.epoch,
            voted_for: self.votes.state().voted_for.filter(|_| self.votes.state().epoch == self.settings.epoch),
            elections: self.elections.0,
            elections_won: self.elections.1,
            rolled_back: self.rollback.entries_total(),
            physical_diverged: self.store.physical_diverged(),
            auto_failover: self.settings.auto_failover,
            failover_state: self.failover_state(),
            last_lsn: log.last_lsn,
            durable_lsn: log.last_lsn,
            first_lsn: log.first_lsn,
            log_bytes: log.bytes,
            log_dropped_segments: log.dropped_segments,
            acks: self.settings.acks_label.clone(),
            damaged_keys: self.store.damaged().count(),
            damaged: crate::node::damaged_records(self.store.damaged()),
            ..Default::default()
        };
        match &self.state {
            State::Standalone => {}
            State::Leader(leader) => {
                status.role = "leader";
                leader.fill_status(now_ms, &self.log, &self.settings, &mut status);
            }
            State::Follower(follower) => {
                status.role = if follower.candidacy.is_some() { "candidate" } else { "follower" };
                status.leader = Some(follower.view(now_ms, &self.log, &self.settings));
            }
        }
        status
    }

    /// REPLIKV.LOG: up to `count` records after `after`, as `[lsn, epoch, [key...]]` or, with
    /// `changes`, in full ([`crate::replication::show::record_reply`]); only the changes of
    /// client keys starting with `prefix`. An error reply when the log no longer holds them.
    /// Records of about [`LOG_LIST_BYTES_MAX`] are listed at most (always one).
    ///
    /// With `changes`, only what a change stream may deliver is listed: on a leader the
    /// records a majority holds durably ([`SingleLeader::committed_lsn`]), on a follower those
    /// it applied; and never a request a failover abandoned half shipped (its parts stay in
    /// the log, never applied). Without, every record the log holds (what a failover would
    /// lose).
    fn list_log(&mut self, after: Lsn, count: u64, changes: bool, prefix: &[u8]) -> Result<Reply> {
        use crate::replication::show;
        let through = match &self.state {
            _ if !changes => Lsn::MAX,
            State::Follower(follower) => follower.applied,
            State::Leader(_) => self.committed_lsn().unwrap_or(0).min(self.log.complete_lsn()),
            _ => self.durable_lsn().min(self.log.complete_lsn()),
        };
        let count = count.min(LOG_LIST_RECORDS_MAX) as usize;
        let mut out = Vec::new();
        let mut at = after;
        let mut bytes = 0;
        // The fate of the multi-record request seen last: (its start, whole).
        let mut fate: Option<(Lsn, bool)> = None;
        while out.len() < count && (out.is_empty() || bytes < LOG_LIST_BYTES_MAX) {
            let Some(records) = self.log.read(at, RECOVERY_READ_BYTES)? else {
                return Ok(Reply::err(format!(
                    "the log starts at {}: records after {after} are gone",
                    self.log.first_lsn()
                )));
            };
            if records.is_empty() {
                break;
            }
            for r in records {
                if out.len() >= count || r.lsn > through || (!out.is_empty() && bytes >= LOG_LIST_BYTES_MAX) {
                    return Ok(Reply::Array(out));
                }
                // Examined: the next read starts after it (listed or passed over).
                at = r.lsn;
                if changes && r.parts > 1 {
                    let start = r.request_start();
                    let whole = match fate {
                        Some((seen, whole)) if seen == start => whole,
                        _ => match self.request_whole(&r, through)? {
                            Some(whole) => whole,
                            None => return Ok(Reply::Array(out)), // its last part is not deliverable yet
                        },
                    };
                    fate = Some((start, whole));
                    if !whole {
                        continue; // abandoned: never applied, never delivered
                    }
                }
                // What the answer costs: the values (twice: the change and the lecture's
                // record), and field names and framing per change.
                bytes += 2 * r.size_hint() + 600 * r.changes.len();
                let commands = &self.commands;
                let own = |key: &[u8]| commands.own_record(key);
                if changes {
                    out.push(show::record_reply(&r, prefix, &own));
                    continue;
                }
                let statement_keys = r.statement.iter().flat_map(|s| s.keys.iter());
                let keys = r
                    .changes
                    .iter()
                    .map(|c| &c.key)
                    .chain(statement_keys)
                    .filter(|k| show::key_shown(k, prefix, &own))
                    .map(|k| Reply::Bulk(k.clone()))
                    .collect();
                out.push(Reply::Array(vec![Reply::Int(r.lsn as i64), Reply::Int(r.epoch as i64), Reply::Array(keys)]));
            }
        }
        Ok(Reply::Array(out))
    }

    /// Whether the request `record` is a part of reaches its last part in the log (whole),
    /// or another request follows before it (abandoned by a failover); `None` when its last
    /// part would lie past `through`, not yet deliverable.
    fn request_whole(&mut self, record: &LogRecord, through: Lsn) -> Result<Option<bool>> {
        let start = record.request_start();
        let end = start + Lsn::from(record.parts) - 1;
        let ours = |r: &LogRecord| r.request_start() == start && r.epoch == record.epoch;
        // The records from this one to the request's end, as far as `through`: each must be its
        // next part. A broken chain is an abandoned request even when its end lies past
        // `through` (a new leader's records follow it).
        let mut at = record.lsn;
        let seen_to = end.min(through);
        while at < seen_to {
            let Some(records) = self.log.read(at, RECOVERY_READ_BYTES)? else { return Ok(Some(false)) };
            let Some(last) = records.last().map(|r| r.lsn) else { return Ok(Some(false)) };
            if records.iter().take_while(|r| r.lsn <= seen_to).any(|r| !ours(r)) {
                return Ok(Some(false));
            }
            at = last;
        }
        if end > through {
            // Its end is not deliverable yet; the record after `through` may show it abandoned.
            let next = self.log.read(through.max(record.lsn), RECOVERY_READ_BYTES)?.and_then(|r| r.into_iter().next());
            return Ok(match next {
                Some(r) if r.lsn <= end && !ours(&r) => Some(false),
                _ => None,
            });
        }
        Ok(Some(true))
    }

    /// REPLIKV.DIGEST: `[lsn, keys, root, [bucket...]]` in hex, or one bucket's
    /// `[lsn, [key, hash]...]`. A digest over too many keys is an error reply.
    fn digest(&mut self, bucket: Option<usize>) -> Result<Reply> {
        let applied = match &self.state {
            State::Follower(follower) => follower.applied,
            _ => self.log.complete_lsn(),
        };
        let commands = &self.commands;
        let scope = crate::digest::Scope {
            keep: &|key| !commands.own_record(key),
            versions: !commands.record_versions_differ(),
        };
        crate::node::digest_reply(&mut self.store, applied, bucket, scope)
    }

    /// Recovery at open: see the module documentation.
    fn recover(&mut self) -> Result<()> {
        let left_before = self.store.physical_left();
        let engine_ts = self.store.engine().last_timestamp();
        let mut log_ts = crate::version::Timestamp::default();
        let mut replayed = 0u64;
        let store = &mut self.store;
        for_each_applied_change(&mut self.log, |applied| {
            let change = match applied {
                Applied::Change(change) => change,
                Applied::Physical(extents, changes) => {
                    // By place: what the engine kept of its active segment is there; the rest
                    // goes where the leader put it (a write and the record it undid, a failed
                    // script's, both, in order). By version, as changes, in an engine whose
                    // files left the leader's.
                    let mut missed = store.physical_left();
                    for extent in &extents {
                        let records = crate::storage::decode_extent(extent)?;
                        // Every version the engine had from the log, undone writes' too.
                        log_ts = records.iter().map(|(_, r)| r.version.ts).fold(log_ts, std::cmp::max);
                        if missed {
                            continue;
                        }
                        let why = match store.engine_mut().log_engine() {
                            Some(engine) => engine.replay_extent(extent, records)?,
                            None => Some("not the log engine".into()),
                        };
                        if let Some(why) = why {
                            store.leave_physical(&format!("recovery: {why}"))?;
                            missed = true;
                        }
                    }
                    for change in changes.into_iter().filter(|_| missed) {
                        replayed += u64::from(apply_missing(store, change)?);
                    }
                    return Ok(());
                }
                Applied::Compact(_, _) if store.physical_left() => return Ok(()),
                Applied::Compact(inputs, active) => {
                    // Run again only if its outputs never committed here (inputs still here),
                    // after the same puts as the first time: none after it reached the engine,
                    // since a compaction's commit is waited for before the next put.
                    if let Some(engine) = store.engine_mut().log_engine() {
                        let compacted = engine.compact_whole(&inputs, active)?;
                        replayed += u64::from(compacted != crate::storage::Compacted::Gone);
                    }
                    return Ok(());
                }
                Applied::Statement(lsn, statement) => {
                    log_ts = log_ts.max(statement.last);
                    // Its writes' versions are the first's and its successors, in the order
                    // of its keys: which of them the engine holds (or something newer).
                    let mut version = statement.first;
                    let mut kept = 0;
                    for key in &statement.keys {
                        kept += usize::from(store.engine().meta(key).is_some_and(|m| m.version >= version));
                        version = crate::version::Version { ts: version.ts.successor(), node: version.node };
                    }
                    if kept == statement.keys.len() {
                        return Ok(());
                    }
                    // Executed again at the time it first executed. Kept in part (a crash
                    // inside its batch), its kept writes are skipped, and what it reads is
                    // what it wrote: the statement module's caveats say where that differs.
                    if kept > 0 {
                        tracing::warn!(
                            "the engine kept {kept} of the {} writes of the statement at {lsn}: executing it again \
                             over them, skipping those ({}); `replikv check` tells whether this replica now differs",
                            statement.keys.len(),
                            statement::describe(&statement.request)
                        );
                    }
                    statement::execute(store, statement.first.ts.millis, lsn, statement, kept > 0)?;
                    replayed += 1;
                    return Ok(());
                }
            };
            log_ts = log_ts.max(change.record.version.ts);
            replayed += u64::from(apply_missing(store, change)?);
            Ok(())
        })?;
        if store.physical_left() && !left_before {
            // Its files left the leader's partway: the requests taken as there by place before
            // that are taken again by version, as a logical log's.
            for_each_applied_change(&mut self.log, |applied| {
                if let Applied::Physical(_, changes) = applied {
                    for change in changes {
                        replayed += u64::from(apply_missing(store, change)?);
                    }
                }
                Ok(())
            })?;
        }
        if replayed > 0 {
            tracing::info!("recovery applied {replayed} logged changes the engine had not kept");
        }
        if engine_ts <= log_ts {
            return Ok(());
        }
        if matches!(self.state, State::Follower(_)) {
            return self.repair_strays(log_ts);
        }
        if !matches!(self.state, State::Leader(_)) {
            return Ok(());
        }
        if self.log.first_lsn() > self.log.last_lsn() {
            // The log holds no record, yet the engine has keys: a standalone data directory,
            // or a log emptied by a reset. Followers cannot get those keys from the log, so
            // make every follower start from a snapshot (which reads the engine) by moving the
            // log's start past 1, once.
            if self.log.last_lsn() == 0 {
                self.log.reset(1, self.settings.epoch)?;
                tracing::info!("the engine holds keys no log record has; followers will start from a snapshot");
            }
            return Ok(());
        }
        // The engine kept writes the log lost: log the keys' current records again.
        let (mut changes, mut damaged) = (Vec::new(), Vec::new());
        let engine = self.store.engine();
        for_each_key(engine, |key, meta| {
            if meta.version.ts > log_ts {
                match engine.get(&key) {
                    Ok(Some(record)) => changes.push(Change { key, record }),
                    Ok(None) => {}
                    // A damaged record is not logged again (its value is gone): listed, it is
                    // refused until repaired, and its key is left out of the log.
                    Err(error) => damaged.push((key, error)),
                }
            }
            Ok(())
        })?;
        for (key, error) in damaged {
            self.store.note_damage(&key, error)?;
        }
        if !changes.is_empty() {
            tracing::warn!(
                "the engine kept {} writes the replication log lost in a crash; logging them again",
                changes.len()
            );
            append_changes(
                &mut self.log,
                self.settings.epoch,
                (changes, Vec::new()),
                self.settings.record_changes_max,
            )?;
            self.log.flush()?;
        }
        Ok(())
    }
}

impl<E: Engine> SingleLeader<E> {
    /// Empties a follower at recovery (store and log), to take the leader's history again as
    /// a new node would; it votes as if it still held its log until it does (the vote floor).
    fn start_again(&mut self) -> Result<()> {
        let position = LogPosition { epoch: self.log.last_epoch(), lsn: self.log.last_lsn() };
        self.votes.emptying_log(position)?;
        follower::wipe(&mut self.store)?;
        self.store.engine_mut().sync_written(0)?;
        self.log.reset(0, 0)?;
        self.votes.rebuilt()
    }

    /// Recovery of a follower whose engine kept writes its log lost (newer than `log_ts`):
    /// the records they came from may never be shipped again (a new leader may hold other
    /// records at those positions), so each such key goes back to its newest change in the
    /// log, or is deleted when the log holds the whole history and no change to it. When the
    /// log lacks the history to say (it starts after a snapshot or retention), the replica
    /// empties itself and takes the leader's history again.
    fn repair_strays(&mut self, log_ts: crate::version::Timestamp) -> Result<()> {
        if self.log.first_lsn() > self.log.last_lsn() {
            // No record to date the engine's keys by (just after a snapshot): keep them.
            return Ok(());
        }
        let mut strays: BTreeMap<bytes::Bytes, Option<Change>> = BTreeMap::new();
        for_each_key(self.store.engine(), |key, meta| {
            if meta.version.ts > log_ts && strays.len() < RECOVERY_STRAYS_MAX {
                strays.insert(key, None);
            }
            Ok(())
        })?;
        // A statement names its keys, not what it wrote: with one in the log, what a stray
        // replaced is not known.
        let mut statements = false;
        for_each_applied_change(&mut self.log, |applied| {
            match applied {
                Applied::Change(change) => {
                    if let Some(newest) = strays.get_mut(&change.key) {
                        *newest = Some(change);
                    }
                }
                Applied::Statement(..) => statements = true,
                Applied::Compact(..) => {}
                Applied::Physical(_, changes) => {
                    for change in changes {
                        if let Some(newest) = strays.get_mut(&change.key) {
                            *newest = Some(change);
                        }
                    }
                }
            }
            Ok(())
        })?;
        let whole_history = self.log.first_lsn() == 1;
        if strays.len() >= RECOVERY_STRAYS_MAX
            || (statements && !strays.is_empty())
            || (!whole_history && strays.values().any(Option::is_none))
        {
            tracing::warn!(
                "the engine kept writes the replication log lost, and the log no longer holds what they replaced: \
                 emptying this replica to take the leader's history again"
            );
            return self.start_again();
        }
        tracing::warn!("the engine kept {} writes the replication log lost: undoing them", strays.len());
        if self.settings.log_format == crate::replication::LogFormat::Physical && !strays.is_empty() {
            self.store.leave_physical("recovery undoes writes the engine kept and the log lost")?;
        }
        for (key, newest) in strays {
            let change = newest.unwrap_or(Change {
                key,
                record: crate::storage::Record {
                    version: crate::version::Version::default(),
                    value: None,
                    expire_at_ms: None,
                },
            });
            self.store.apply(change)?;
        }
        Ok(())
    }
}

/// After retention moved the log's start from `before`: a warning if the records it dropped
/// include some after `confirmed` (records this replica does not know to be in every later
/// leader's history), which only a log over `unreplicated_bytes_max` drops.
fn warn_unconfirmed_dropped(log: &ReplicationLog, before: Lsn, confirmed: Lsn) {
    let from = before.max(confirmed + 1);
    if log.first_lsn() > from {
        tracing::warn!(
            "the replication log dropped records {from}..={} that no majority is known to hold: they are over \
             unreplicated_bytes_max ({} bytes), and a failover that cuts them now loses them without a copy in the \
             rollback log",
            log.first_lsn() - 1,
            log.options().unreplicated_bytes_max
        );
    }
}

/// Calls `f` with every change of the log that a replica applies, in log order: the changes
/// of each request the log holds whole, none of a request it holds only some parts of (the
/// open one at its end, or one abandoned before it: see [`LogRecord`]). A request is
/// gathered in memory until its last part, as its leader held it when it executed it.
fn for_each_applied_change(log: &mut ReplicationLog, mut f: impl FnMut(Applied) -> Result<()>) -> Result<()> {
    let mut after = log.first_lsn().saturating_sub(1);
    let mut request: Vec<Change> = Vec::new();
    let mut extents: Vec<crate::replication::Extent> = Vec::new();
    let mut request_start = None;
    while let Some(records) = log.read(after, RECOVERY_READ_BYTES)? {
        let Some(last) = records.last() else { break };
        after = last.lsn;
        for record in records {
            let start = record.request_start();
            // The request's first part, or the first record the log holds of it.
            let continuing = request_start == Some(start) || (request_start.is_none() && record.part > 0);
            if !continuing {
                request.clear(); // a request left open before this one is abandoned
                extents.clear();
            }
            request_start = Some(start);
            let continues = record.continues();
            request.extend(record.changes);
            if let Some(physical) = &record.physical {
                extents.extend(physical.extents.iter().cloned());
            }
            if !continues {
                request_start = None;
                if !extents.is_empty() {
                    // Its changes read from all its parts' bytes at once: a write in one part
                    // and its undoing in another (a large failed script) cancel out.
                    let whole = Physical { extents: std::mem::take(&mut extents), compact: Vec::new(), active: 0 };
                    let changes = whole
                        .changes()
                        .map_err(|e| crate::Error::InvalidInput(format!("the log's storage bytes: {e}")))?;
                    request.clear();
                    f(Applied::Physical(whole.extents, changes))?;
                }
                for change in request.drain(..) {
                    f(Applied::Change(change))?;
                }
                if let Some(statement) = record.statement {
                    f(Applied::Statement(record.lsn, statement))?;
                }
                if let Some(physical) = record.physical.filter(|p| !p.compact.is_empty()) {
                    f(Applied::Compact(physical.compact, physical.active))?;
                }
            }
        }
    }
    Ok(())
}

/// What a replica applies of its log, in order: a change, or a statement (at its position) to
/// execute again.
enum Applied {
    Change(Change),
    Statement(Lsn, crate::replication::Statement),
    /// A physical record's compaction: its inputs, and the leader's active segment then.
    Compact(Vec<(u64, u32)>, u64),
    /// A physical request's storage bytes (all its parts'), and the changes they make.
    Physical(Vec<crate::replication::Extent>, Vec<Change>),
}

/// Applies `change` at recovery if the engine lacks it; true when it did. A key's versions
/// rise in log order, so a change is missing from the engine exactly when the engine's version
/// of its key is older. (Not a comparison with the engine's newest timestamp overall: after a
/// snapshot, which may hold newer values than the records that follow it, that would skip
/// records the engine never got.)
fn apply_missing<E: Engine>(store: &mut Store<E>, change: Change) -> Result<bool> {
    let have = store.engine().meta(&change.key).map(|m| m.version);
    if have.is_some_and(|v| v >= change.record.version) {
        return Ok(false);
    }
    store.apply(change)?;
    Ok(true)
}

/// Calls `f` with every key of `engine` and its meta, in key order, reading
/// [`RECOVERY_SCAN_KEYS`] at a time.
fn for_each_key<E: Engine>(
    engine: &E,
    mut f: impl FnMut(bytes::Bytes, crate::storage::Meta) -> Result<()>,
) -> Result<()> {
    let mut from: Option<bytes::Bytes> = None;
    loop {
        let bound = from.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let chunk = engine.scan(bound, RECOVERY_SCAN_KEYS);
        let Some((last, _)) = chunk.last() else { return Ok(()) };
        from = Some(last.clone());
        for (key, meta) in chunk {
            f(key, meta)?;
        }
    }
}

/// Keys a follower's recovery undoes one by one at most; beyond, it starts again empty.
const RECOVERY_STRAYS_MAX: usize = 100_000;

/// Records one REPLIKV.LOG lists at most.
pub const LOG_LIST_RECORDS_MAX: u64 = 1_000;

/// Bytes of records (their estimated size in the log) one REPLIKV.LOG reads at most, past its
/// first record; with CHANGES each value is shown cut to
/// [`crate::replication::show::SHOWN_VALUE_BYTES_MAX`], so one answer stays within about this
/// plus one record's changes.
pub const LOG_LIST_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Bytes of log records recovery reads at a time.
const RECOVERY_READ_BYTES: usize = 4 * 1024 * 1024;

/// Keys recovery scans at a time.
const RECOVERY_SCAN_KEYS: usize = 4096;

/// Appends `statement` to `log` as one record of `epoch`: its position and estimated bytes.
fn append_statement(
    log: &mut ReplicationLog,
    epoch: Epoch,
    statement: crate::replication::Statement,
) -> Result<(Lsn, u64)> {
    let record = LogRecord { statement: Some(statement), ..LogRecord::whole(log.last_lsn() + 1, epoch, Vec::new()) };
    let (lsn, bytes) = (record.lsn, record.size_hint() as u64);
    log.append(record)?;
    Ok((lsn, bytes))
}

/// Appends `extents` (one per storage record, from [`LogEngine::take_extents`]) as one request
/// of physical records, cut into parts as [`append_changes`] cuts changes; each part's records
/// that lie back to back in one segment are one extent. Returns the last record's position and
/// the records' estimated bytes.
fn append_physical(
    log: &mut ReplicationLog,
    epoch: Epoch,
    extents: Vec<Extent>,
    changes_max: usize,
) -> Result<(Lsn, u64)> {
    let mut parts: Vec<Vec<Extent>> = Vec::new();
    let (mut part_records, mut part_bytes) = (0, 0);
    for extent in extents {
        let size = extent.bytes.len();
        if parts.is_empty() || part_records >= changes_max.max(1) || part_bytes + size > RECORD_BYTES_SOFT_MAX {
            parts.push(Vec::new());
            (part_records, part_bytes) = (0, 0);
        }
        (part_records, part_bytes) = (part_records + 1, part_bytes + size);
        let part = parts.last_mut().expect("a part");
        match part.last_mut() {
            Some(last) if last.segment == extent.segment && last.offset + last.bytes.len() as u64 == extent.offset => {
                let mut joined = Vec::with_capacity(last.bytes.len() + size);
                joined.extend_from_slice(&last.bytes);
                joined.extend_from_slice(&extent.bytes);
                last.bytes = joined.into();
            }
            _ => part.push(extent),
        }
    }
    let mut records = Vec::with_capacity(parts.len());
    for extents in parts {
        let physical = Physical { extents, compact: Vec::new(), active: 0 };
        let changes = physical
            .changes()
            .map_err(|e| crate::Error::InvalidInput(format!("the engine's own records do not decode: {e}")))?;
        records.push((changes, Vec::new(), Some(physical)));
    }
    append_parts(log, epoch, records)
}

/// Appends `parts`, each a record's changes, old values and storage bytes, as the records of
/// one request. Returns the last record's position and the records' estimated bytes.
fn append_parts(
    log: &mut ReplicationLog,
    epoch: Epoch,
    parts: Vec<(Vec<Change>, Vec<Old>, Option<Physical>)>,
) -> Result<(Lsn, u64)> {
    let count =
        u32::try_from(parts.len()).expect("a request's parts fit in u32: each holds RECORD_CHANGES_MAX changes");
    let mut bytes = 0;
    for (part, (changes, olds, physical)) in (0..count).zip(parts) {
        let lsn = log.last_lsn() + 1;
        let record = LogRecord { lsn, epoch, changes, part, parts: count, olds, statement: None, physical };
        bytes += record.size_hint() as u64;
        log.append(record)?;
    }
    Ok((log.last_lsn(), bytes))
}

/// Appends `changes` as one request: one record, or several when there are more than
/// [`RECORD_CHANGES_MAX`] or [`RECORD_BYTES_SOFT_MAX`] of them. `olds` is what each change's
/// key held before it, in order, or empty when not known. Returns the last record's position
/// and the records' estimated bytes.
fn append_changes(
    log: &mut ReplicationLog,
    epoch: Epoch,
    (changes, olds): (Vec<Change>, Vec<Old>),
    changes_max: usize,
) -> Result<(Lsn, u64)> {
    assert!(olds.is_empty() || olds.len() == changes.len(), "one old value per change, or none");
    let mut olds = olds.into_iter();
    // Cut the request into parts first, so that each record knows how many there are.
    let mut parts: Vec<(Vec<Change>, Vec<Old>)> = Vec::new();
    let mut part_bytes = 0;
    for change in changes {
        let old = olds.next();
        let old_bytes = match &old {
            Some(Old::Held(record)) => record.value.as_ref().map_or(0, |v| v.len()),
            _ => 0,
        };
        let size = change.key.len() + change.record.value.as_ref().map_or(0, |v| v.len()) + old_bytes + 40;
        let full =
            parts.last().is_none_or(|p| p.0.len() >= changes_max.max(1) || part_bytes + size > RECORD_BYTES_SOFT_MAX);
        if full {
            parts.push((Vec::new(), Vec::new()));
            part_bytes = 0;
        }
        part_bytes += size;
        let part = parts.last_mut().expect("a part");
        part.0.push(change);
        part.1.extend(old);
    }
    append_parts(log, epoch, parts.into_iter().map(|(changes, olds)| (changes, olds, None)).collect())
}

#[cfg(test)]
mod golden_tests;

#[cfg(test)]
mod cluster_golden_tests;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod statement_tests;

#[cfg(test)]
mod session_tests;

#[cfg(test)]
mod lease_tests;

#[cfg(test)]
mod parallel_tests;
