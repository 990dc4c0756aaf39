//! The model's state: three replicas, the messages in flight between them, which clients have
//! written, and the ghost history the properties read.
//!
//! Every type here is a plain value that hashes (stateright fingerprints states by their hash),
//! so the core's election types, which do not derive `Hash`, are mirrored field for field and
//! converted at the boundary: [`Node::voter`] and [`Node::last`] build the core's
//! [`VoterState`] and [`LogPosition`], [`Node::set_voter`] takes a [`VoterState`] back.
//!
//! # Invariants
//!
//! - A log is a vector indexed by LSN - 1: LSNs are contiguous from 1, as in replikv's log.
//! - A node's epoch never goes down, and its vote is for its current epoch (or none).
//! - The ghost fields ([`State::leaderships`], [`State::acked`], [`State::durable_led`] and
//!   the two `served_` flags) only grow (a flag only goes from false to true) and no node reads
//!   them: they are the history the properties judge, not part of the protocol.
//! - A node's `durable` is at most its log's length; only a leader's is ever less.
//!
//! CAVEATS
//! - A log entry holds an epoch and a payload (a no-op or one client's value), not replikv's
//!   [`LogRecord`](replikv_core::replication::LogRecord): keys, versions and changes play no
//!   part in who is elected or what is acknowledged.
//! - Nodes are named by their index (0, 1, 2) inside the model and by [`node_id`] (1, 2, 3)
//!   where the core's functions need a [`NodeId`].

use replikv_core::replication::{Epoch, Lsn};
use replikv_core::single_leader::election::{LogPosition, VoterState};
use replikv_core::version::NodeId;

/// The number of replicas in the modelled cluster (all of them voters).
pub const REPLICAS: usize = 3;

/// The number of clients; each issues one write of its own value.
pub const CLIENTS: usize = 2;

/// A replica, by its index in [`State::nodes`].
pub type Replica = usize;

/// A client, by its index (0 or 1); its write's value is its index.
pub type Client = u8;

/// The core's identity for replica `replica`: `NodeId(replica + 1)`.
pub fn node_id(replica: Replica) -> NodeId {
    NodeId(replica as u64 + 1)
}

/// What a log entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Payload {
    /// The empty entry a new leader appends in its epoch on election.
    Noop,
    /// A client's write, named by the client (each client writes one distinct value).
    Write(Client),
}

/// One entry of a replica's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    /// The epoch of the leader that appended it.
    pub epoch: Epoch,
    /// What it carries.
    pub payload: Payload,
}

/// A replica's role: volatile, lost in a crash.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Follows whoever leads its epoch; stands for election when its timeout fires.
    Follower,
    /// Stands in its epoch, having voted for itself.
    Candidate {
        /// Who granted their vote in this epoch, by replica, itself included; refusals are
        /// not kept because the model's candidate never gives up on them (it waits for a
        /// timeout).
        granted: [bool; REPLICAS],
    },
    /// Leads its epoch: appends client writes and ships its log.
    Leader {
        /// The highest LSN each replica is known to match this leader's log at (its own slot
        /// unused: the leader matches itself up to its last entry).
        matched: [Lsn; REPLICAS],
        /// By client: whether this leader appended its write in this epoch and has not yet
        /// acknowledged it (the replies a crash or a step-down loses).
        pending: [bool; CLIENTS],
    },
}

/// One replica: durable voter state and log, volatile role.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Node {
    /// The newest epoch it has seen (durable).
    pub epoch: Epoch,
    /// Whom it voted for in that epoch, if anyone (durable).
    pub voted_for: Option<NodeId>,
    /// Its log, entry `i` at LSN `i + 1`: durable through `durable`, the rest only written
    /// (a crash loses it).
    pub log: Vec<Entry>,
    /// How much of its log is durable: a follower's appends are durable before it answers, a
    /// leader's own entries only once it fsyncs ([`crate::Action::Fsync`]).
    pub durable: Lsn,
    /// Its role (volatile).
    pub role: Role,
}

impl Node {
    /// A fresh replica: epoch 0, no vote, empty log, follower.
    pub fn new() -> Node {
        Node { epoch: 0, voted_for: None, log: Vec::new(), durable: 0, role: Role::Follower }
    }

    /// Its voter state, as the core's election rules take it.
    pub fn voter(&self) -> VoterState {
        VoterState { epoch: self.epoch, voted_for: self.voted_for }
    }

    /// Stores `voter` as its durable voter state.
    pub fn set_voter(&mut self, voter: VoterState) {
        self.epoch = voter.epoch;
        self.voted_for = voter.voted_for;
    }

    /// How up to date its log is: the last entry's epoch and LSN (0, 0 when empty: the
    /// model's logs start empty, with base epoch 0).
    pub fn last(&self) -> LogPosition {
        LogPosition { epoch: self.log.last().map_or(0, |e| e.epoch), lsn: self.log.len() as Lsn }
    }

    /// The entry at `lsn`, if the log reaches it (LSN 0 holds none).
    pub fn entry(&self, lsn: Lsn) -> Option<&Entry> {
        lsn.checked_sub(1).and_then(|i| self.log.get(i as usize))
    }

    /// The epoch of the entry at `lsn`: 0 for LSN 0, `None` past the end of the log.
    pub fn epoch_at(&self, lsn: Lsn) -> Option<Epoch> {
        if lsn == 0 {
            return Some(0);
        }
        self.entry(lsn).map(|e| e.epoch)
    }

    /// True when its log holds `entry` at `lsn`.
    pub fn holds(&self, lsn: Lsn, entry: Entry) -> bool {
        self.entry(lsn) == Some(&entry)
    }

    /// True when it is the leader of its epoch.
    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader { .. })
    }

    /// Cuts its log after `lsn`, with its durable end.
    pub fn cut(&mut self, lsn: Lsn) {
        self.log.truncate(lsn as usize);
        self.durable = self.durable.min(lsn);
    }

    /// Moves to the newer `epoch` (with no vote in it) as a follower: what a node does on
    /// seeing a message from a newer epoch, whatever its role.
    pub fn adopt(&mut self, epoch: Epoch) {
        assert!(epoch > self.epoch, "adopting epoch {epoch} from epoch {}", self.epoch);
        self.epoch = epoch;
        self.voted_for = None;
        self.step_down();
    }

    /// Becomes a follower. A leader's fsync under way completes: only leaders crash in this
    /// model, so a follower's unsynced tail could never be lost, only counted apart.
    pub fn step_down(&mut self) {
        self.role = Role::Follower;
        self.durable = self.log.len() as Lsn;
    }
}

impl Default for Node {
    fn default() -> Node {
        Node::new()
    }
}

/// The peer protocol, reduced to what elections and acknowledgements need. Every message
/// carries its sender's epoch.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Message {
    /// A candidate asks for a vote in `epoch`; sent to every other replica when it stands.
    RequestVote {
        /// The epoch it stands in.
        epoch: Epoch,
        /// The epoch of its last entry (the core's [`LogPosition::epoch`]).
        last_epoch: Epoch,
        /// The LSN of its last entry (the core's [`LogPosition::lsn`]).
        last_lsn: Lsn,
    },
    /// A voter's answer: a grant, or a refusal from a newer epoch (which makes the candidate
    /// step down). A refusal in the candidate's own epoch would change nothing and is not sent.
    Vote {
        /// The voter's epoch after deciding.
        epoch: Epoch,
        /// Whether it voted for the candidate.
        granted: bool,
    },
    /// A leader ships its entries after `prev_lsn` to a peer that lags, one shipment
    /// outstanding per peer.
    Append {
        /// The leader's epoch.
        epoch: Epoch,
        /// The LSN the entries follow (0: from the start of the log).
        prev_lsn: Lsn,
        /// The epoch of the leader's entry at `prev_lsn` (0 for LSN 0).
        prev_epoch: Epoch,
        /// The leader's entries from `prev_lsn + 1` to its last, durable on it or not.
        entries: Vec<Entry>,
        /// The leader's durable end when it sent this.
        durable: Lsn,
    },
    /// A follower's answer to an append: the highest LSN known to match the leader's log, or a
    /// refusal from a newer epoch (which makes the old leader step down). A refusal for a
    /// missing `prev_lsn` would change nothing at the leader and is not sent.
    Appended {
        /// The follower's epoch.
        epoch: Epoch,
        /// `Some(lsn)`: its log matches the leader's up to `lsn`; `None`: refused.
        matched: Option<Lsn>,
    },
}

/// A message in flight, with its sender and recipient.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Envelope {
    /// The sender.
    pub from: Replica,
    /// The recipient.
    pub to: Replica,
    /// What it says.
    pub message: Message,
}

/// A write the leader acknowledged (ghost): where it sits and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Acked {
    /// Its LSN.
    pub lsn: Lsn,
    /// Its entry (its epoch is the acknowledging leader's).
    pub entry: Entry,
}

/// The whole cluster at one instant.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct State {
    /// The replicas, by index.
    pub nodes: [Node; REPLICAS],
    /// The messages in flight, `network[from][to]`, at most one per directed channel: a
    /// message sent on a busy channel replaces the one there, which is lost. Channels deliver
    /// in any order relative to each other, and a message may stay in flight forever (loss).
    pub network: [[Option<Message>; REPLICAS]; REPLICAS],
    /// By client: whether it has sent its write.
    pub issued: [bool; CLIENTS],
    /// How many crash-restarts have happened.
    pub crashes: u8,
    /// Ghost: every (epoch, node) that ever became leader, sorted, without repeats.
    pub leaderships: Vec<(Epoch, NodeId)>,
    /// Ghost: every write a leader acknowledged to its client, sorted, without repeats.
    pub acked: Vec<Acked>,
    /// Ghost: every write (with its LSN) that was ever durable on a leader while it led,
    /// sorted, without repeats: what a follower may serve.
    pub durable_led: Vec<Acked>,
    /// Ghost: a follower applied (and so may serve) a write not in `durable_led` when it
    /// applied it. Judged when it happens, since `durable_led` only grows: the follower's
    /// applied end need not be part of the state.
    pub served_undurable: bool,
    /// Ghost: a follower applied a client's write.
    pub served_write: bool,
}

impl State {
    /// The initial cluster: fresh replicas, nothing in flight, no history.
    pub fn new() -> State {
        State {
            nodes: Default::default(),
            network: Default::default(),
            issued: [false; CLIENTS],
            crashes: 0,
            leaderships: Vec::new(),
            acked: Vec::new(),
            durable_led: Vec::new(),
            served_undurable: false,
            served_write: false,
        }
    }

    /// Puts `message` from `from` to `to` in flight, in place of whatever was on that channel.
    pub fn send(&mut self, from: Replica, to: Replica, message: Message) {
        self.network[from][to] = Some(message);
    }

    /// The message in flight from `from` to `to`, if any.
    pub fn in_flight(&self, from: Replica, to: Replica) -> Option<&Message> {
        self.network[from][to].as_ref()
    }

    /// Every message in flight, with its channel.
    pub fn messages(&self) -> impl Iterator<Item = Envelope> + '_ {
        let channels = (0..REPLICAS).flat_map(|from| (0..REPLICAS).map(move |to| (from, to)));
        channels.filter_map(|(from, to)| Some(Envelope { from, to, message: self.network[from][to].clone()? }))
    }

    /// Records (ghost) that `node` became leader of `epoch`.
    pub fn record_leadership(&mut self, epoch: Epoch, node: NodeId) {
        insert_sorted(&mut self.leaderships, (epoch, node));
    }

    /// Records (ghost) that a leader acknowledged `ack`.
    pub fn record_ack(&mut self, ack: Acked) {
        insert_sorted(&mut self.acked, ack);
    }

    /// Judges (ghost) that `follower` applies its log through `lsn`: every write there must
    /// have been durable on a leader.
    pub fn record_served(&mut self, follower: Replica, lsn: Lsn) {
        let node = &self.nodes[follower];
        for (at, &entry) in node.log[..(lsn as usize).min(node.log.len())].iter().enumerate() {
            if let Payload::Write(_) = entry.payload {
                self.served_write = true;
                let write = Acked { lsn: at as Lsn + 1, entry };
                if self.durable_led.binary_search(&write).is_err() {
                    self.served_undurable = true;
                }
            }
        }
    }

    /// Records (ghost) that leader `i` holds its writes durably through its durable end
    /// (no-ops are not recorded: a read shows nothing of them).
    pub fn record_durable_led(&mut self, i: Replica) {
        let node = &self.nodes[i];
        let entries: Vec<Acked> = node.log[..node.durable as usize]
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e.payload, Payload::Write(_)))
            .map(|(at, &entry)| Acked { lsn: at as Lsn + 1, entry })
            .collect();
        for entry in entries {
            insert_sorted(&mut self.durable_led, entry);
        }
    }
}

/// Inserts `item` into the sorted `items` unless it is there already: a small set that
/// clones without allocating per element.
fn insert_sorted<T: Ord>(items: &mut Vec<T>, item: T) {
    if let Err(at) = items.binary_search(&item) {
        items.insert(at, item);
    }
}

impl Default for State {
    fn default() -> State {
        State::new()
    }
}
