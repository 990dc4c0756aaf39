//! The transitions: what each action does to the cluster, with the core's election rules
//! deciding votes and majorities.
//!
//! An action is one atomic step of one replica (or one client): a timeout, the delivery of one
//! message, a leader shipping its log to one peer, a client's write, a crash-restart. Each
//! step reads and writes only the acting replica's state and the network, plus the ghost
//! history; durable state is written before any message that depends on it leaves, because
//! both happen in the same step.
//!
//! # Message by message
//!
//! - **Timeout** (follower or candidate, epoch below the bound): the replica moves to
//!   epoch + 1, votes for itself, and sends `RequestVote` to the others.
//! - **`RequestVote`**: the voter asks [`decide_vote`] (with `leader_recent = false`), stores
//!   the voter state it returns, steps down if that state is in a newer epoch, and answers a
//!   grant, or a refusal when its epoch is newer than the request's.
//! - **`Vote`**: a newer epoch makes the receiver adopt it as a follower; a grant in the
//!   candidate's epoch is recorded, and a [`Tally`] that has [`won`](Tally::won) over
//!   [`REPLICAS`] makes the candidate leader: it appends a no-op entry in its epoch.
//! - **Replicate** (a leader's choice, any time, any peer): `Append` with the entries after
//!   `prev_lsn`, where `prev_lsn` is the peer's known match or the leader's last LSN (an
//!   optimistic guess, as Raft's initial next index, which the follower may refuse).
//! - **`Append`**: an older epoch is refused with the receiver's epoch; a newer one is adopted;
//!   a candidate of the same epoch becomes follower. The follower accepts when its entry at
//!   `prev_lsn` has `prev_epoch`, cuts its log at the first entry whose epoch differs, appends
//!   what it lacks, and answers `prev_lsn + entries`.
//! - **`Appended`**: a newer epoch deposes the leader; a match raises the leader's
//!   `matched[peer]` and may acknowledge pending writes.
//! - **Write** (a client that has not written, to a leader): the leader appends the value in
//!   its epoch and keeps the client's reply pending.
//! - **Crash** (a candidate or leader, within the crash bound): the replica restarts as a
//!   follower with its voter state and log; its pending replies are gone.
//!
//! A leader acknowledges a pending write when the write's entry is in its current epoch and a
//! majority (a [`Tally`] of the replicas whose match reaches the write's LSN, itself
//! included) holds it; the acknowledgement goes to the ghost history.
//!
//! CAVEATS
//! - A crash of a follower changes nothing the model tracks (a follower has no volatile
//!   state), so only candidates and leaders crash: the same behaviours, fewer states.
//! - A leader that receives an `Append` of its own epoch ignores it: that can only happen
//!   when two leaders share an epoch, which the first property forbids and only a [`Bug`]
//!   brings about.

use crate::state::{node_id, Acked, Client, Entry, Envelope, Message, Payload, Replica, Role, State, REPLICAS};
use replikv_core::replication::election::{decide_vote, LogPosition, Tally, VoteRequest};
use replikv_core::replication::{Epoch, Lsn};

/// The highest epoch a replica may stand in: the bound on elections per run.
pub const EPOCH_MAX: Epoch = 3;

/// The most crash-restarts per run, across all replicas.
pub const CRASHES_MAX: u8 = 1;

/// A rule deliberately broken, for the canary checks that prove the properties can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// Voters skip the up-to-date check (they decide as if their own log were empty).
    VoterIgnoresLog,
    /// Voters forget their vote before deciding, so they may vote twice in one epoch.
    VoterVotesTwice,
    /// A leader acknowledges a write as soon as it holds it, without waiting for a majority.
    AckOnOneCopy,
}

/// The election and acknowledgement model of a three-replica cluster with two clients.
#[derive(Clone, Debug)]
pub struct ElectionModel {
    /// The highest epoch a replica may stand in.
    pub epoch_max: Epoch,
    /// The most crash-restarts per run.
    pub crashes_max: u8,
    /// The rule broken on purpose, for canaries; `None` checks replikv's rules.
    pub bug: Option<Bug>,
}

/// One step of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// The replica's election timeout fires: it stands in the next epoch.
    Timeout(Replica),
    /// The message is delivered to its recipient (and leaves the network).
    Deliver(Envelope),
    /// The leader ships its entries after `prev_lsn` to the peer `to`.
    Replicate {
        /// The sending leader.
        leader: Replica,
        /// The peer.
        to: Replica,
        /// The LSN the shipped entries follow.
        prev_lsn: Lsn,
    },
    /// The client sends its write to the leader.
    Write {
        /// The writing client.
        client: Client,
        /// The leader it writes to.
        leader: Replica,
    },
    /// The replica crashes and restarts.
    Crash(Replica),
}

impl ElectionModel {
    /// replikv's rules within the default bounds ([`EPOCH_MAX`], [`CRASHES_MAX`]).
    pub fn new() -> ElectionModel {
        ElectionModel { epoch_max: EPOCH_MAX, crashes_max: CRASHES_MAX, bug: None }
    }

    /// The same model with `bug` broken on purpose.
    pub fn with_bug(bug: Bug) -> ElectionModel {
        ElectionModel { bug: Some(bug), ..ElectionModel::new() }
    }

    /// Lists every step enabled in `state`.
    pub fn enabled(&self, state: &State, actions: &mut Vec<Action>) {
        for (i, node) in state.nodes.iter().enumerate() {
            match &node.role {
                Role::Follower | Role::Candidate { .. } if node.epoch < self.epoch_max => {
                    actions.push(Action::Timeout(i))
                }
                Role::Leader { matched, .. } => {
                    self.enabled_leader(state, i, matched, actions);
                }
                _ => {}
            }
            if state.crashes < self.crashes_max && node.role != Role::Follower {
                actions.push(Action::Crash(i));
            }
        }
        actions.extend(state.network.iter().cloned().map(Action::Deliver));
    }

    /// Lists the steps of `leader`: shipping to each peer, and each waiting client's write.
    fn enabled_leader(&self, state: &State, leader: Replica, matched: &[Lsn; REPLICAS], actions: &mut Vec<Action>) {
        let last = state.nodes[leader].last().lsn;
        for to in (0..REPLICAS).filter(|&to| to != leader) {
            let mut guesses = vec![matched[to], last];
            guesses.dedup();
            for prev_lsn in guesses {
                // Shipping what is already in flight would merge with it: no new state.
                if !state.network.contains(&append(state, leader, to, prev_lsn)) {
                    actions.push(Action::Replicate { leader, to, prev_lsn });
                }
            }
        }
        for client in 0..crate::state::CLIENTS as Client {
            if !state.issued.contains(&client) {
                actions.push(Action::Write { client, leader });
            }
        }
    }

    /// Applies `action` to `state`.
    pub fn step(&self, state: &mut State, action: Action) {
        match action {
            Action::Timeout(i) => self.on_timeout(state, i),
            Action::Deliver(envelope) => {
                state.network.remove(&envelope);
                self.on_message(state, envelope);
            }
            Action::Replicate { leader, to, prev_lsn } => {
                let envelope = append(state, leader, to, prev_lsn);
                state.network.insert(envelope);
            }
            Action::Write { client, leader } => self.on_write(state, client, leader),
            Action::Crash(i) => {
                state.crashes += 1;
                state.nodes[i].role = Role::Follower;
            }
        }
    }

    /// A timeout: stand in the next epoch, vote for itself, ask the others.
    fn on_timeout(&self, state: &mut State, i: Replica) {
        let node = &mut state.nodes[i];
        node.epoch += 1;
        node.voted_for = Some(node_id(i));
        node.role = Role::Candidate { granted: [node_id(i)].into() };
        let last = node.last();
        let request = Message::RequestVote { epoch: node.epoch, last_epoch: last.epoch, last_lsn: last.lsn };
        for to in (0..REPLICAS).filter(|&to| to != i) {
            state.send(i, to, request.clone());
        }
        self.maybe_win(state, i);
    }

    /// Delivers `envelope` to its recipient.
    fn on_message(&self, state: &mut State, envelope: Envelope) {
        let Envelope { from, to, message } = envelope;
        match message {
            // A candidate asks this replica, in any role, for its vote.
            Message::RequestVote { epoch, last_epoch, last_lsn } => {
                let last = LogPosition { epoch: last_epoch, lsn: last_lsn };
                self.on_request_vote(state, from, to, VoteRequest { epoch, candidate: node_id(from), last, pre_vote: false })
            }
            // A voter answers this replica's candidacy (or an older one).
            Message::Vote { epoch, granted } => {
                let node = &mut state.nodes[to];
                if epoch > node.epoch {
                    node.adopt(epoch);
                } else if let Role::Candidate { granted: grants } = &mut node.role {
                    if epoch == node.epoch && granted {
                        grants.insert(node_id(from));
                        self.maybe_win(state, to);
                    }
                }
            }
            // A leader ships entries to this replica.
            Message::Append { epoch, prev_lsn, prev_epoch, entries } => {
                on_append(state, from, to, epoch, prev_lsn, prev_epoch, &entries)
            }
            // A follower answers this replica's shipment (perhaps from an older epoch).
            Message::Appended { epoch, matched } => {
                let node = &mut state.nodes[to];
                if epoch > node.epoch {
                    node.adopt(epoch);
                } else if let (Role::Leader { matched: known, .. }, Some(lsn)) = (&mut node.role, matched) {
                    if epoch == node.epoch {
                        known[from] = known[from].max(lsn);
                        self.maybe_acknowledge(state, to);
                    }
                }
            }
        }
    }

    /// A vote request reaches `voter`: the core decides, the voter stores the outcome.
    fn on_request_vote(&self, state: &mut State, candidate: Replica, voter: Replica, request: VoteRequest) {
        let node = &mut state.nodes[voter];
        let mut held = node.voter();
        let mut mine = node.last();
        match self.bug {
            Some(Bug::VoterIgnoresLog) => mine = LogPosition::default(),
            Some(Bug::VoterVotesTwice) => held.voted_for = None,
            _ => {}
        }
        let decision = decide_vote(held, mine, request, false);
        if decision.state.epoch > node.epoch {
            node.role = Role::Follower;
        }
        node.set_voter(decision.state);
        if decision.granted || decision.state.epoch > request.epoch {
            let answer = Message::Vote { epoch: decision.state.epoch, granted: decision.granted };
            state.send(voter, candidate, answer);
        }
    }

    /// A client's write reaches `leader`: appended in its epoch, its reply pending.
    fn on_write(&self, state: &mut State, client: Client, leader: Replica) {
        state.issued.insert(client);
        let node = &mut state.nodes[leader];
        node.log.push(Entry { epoch: node.epoch, payload: Payload::Write(client) });
        let Role::Leader { pending, .. } = &mut node.role else {
            panic!("client {client} wrote to replica {leader}, which is not leader: {node:?}");
        };
        pending.insert(client);
        self.maybe_acknowledge(state, leader);
    }

    /// Makes candidate `i` leader if its grants are a majority: it appends its no-op and the
    /// ghost history records the leadership.
    fn maybe_win(&self, state: &mut State, i: Replica) {
        let node = &mut state.nodes[i];
        let Role::Candidate { granted } = &node.role else { return };
        let mut tally = Tally::default();
        for &voter in granted {
            tally.record(voter, true);
        }
        if !tally.won(REPLICAS) {
            return;
        }
        node.role = Role::Leader { matched: [0; REPLICAS], pending: Default::default() };
        node.log.push(Entry { epoch: node.epoch, payload: Payload::Noop });
        state.leaderships.insert((node.epoch, node_id(i)));
    }

    /// Acknowledges every pending write of `leader` that a majority holds and that it appended
    /// in its current epoch.
    fn maybe_acknowledge(&self, state: &mut State, leader: Replica) {
        let node = &mut state.nodes[leader];
        let last = node.last().lsn;
        let Role::Leader { matched, pending } = &mut node.role else { return };
        let mut acked = Vec::new();
        for &client in pending.iter() {
            let index = node.log.iter().position(|e| e.payload == Payload::Write(client));
            let index = index.unwrap_or_else(|| panic!("pending write of client {client} not in {:?}", node.log));
            let (lsn, entry) = (index as Lsn + 1, node.log[index]);
            let mut tally = Tally::default();
            for (peer, &known) in matched.iter().enumerate() {
                let reach = if peer == leader { last } else { known };
                tally.record(node_id(peer), reach >= lsn);
            }
            let quorum = tally.won(REPLICAS) || self.bug == Some(Bug::AckOnOneCopy);
            if quorum && entry.epoch == node.epoch {
                acked.push((client, Acked { lsn, entry }));
            }
        }
        for (client, ack) in acked {
            pending.remove(&client);
            state.acked.insert(ack);
        }
    }
}

impl Default for ElectionModel {
    fn default() -> ElectionModel {
        ElectionModel::new()
    }
}

/// The `Append` that `leader` sends `to` with its entries after `prev_lsn`.
fn append(state: &State, leader: Replica, to: Replica, prev_lsn: Lsn) -> Envelope {
    let node = &state.nodes[leader];
    let prev_epoch = node.epoch_at(prev_lsn).unwrap_or_else(|| panic!("prev_lsn {prev_lsn} past {node:?}"));
    let entries = node.log[prev_lsn as usize..].to_vec();
    Envelope { from: leader, to, message: Message::Append { epoch: node.epoch, prev_lsn, prev_epoch, entries } }
}

/// An append reaches `follower`: Raft's consistency check, then the splice.
fn on_append(
    state: &mut State,
    leader: Replica,
    follower: Replica,
    epoch: Epoch,
    prev_lsn: Lsn,
    prev_epoch: Epoch,
    entries: &[Entry],
) {
    let node = &mut state.nodes[follower];
    if epoch < node.epoch {
        let refusal = Message::Appended { epoch: node.epoch, matched: None };
        state.send(follower, leader, refusal);
        return;
    }
    if epoch > node.epoch {
        node.adopt(epoch);
    }
    match node.role {
        Role::Leader { .. } => return,
        Role::Candidate { .. } => node.role = Role::Follower,
        Role::Follower => {}
    }
    if node.epoch_at(prev_lsn) != Some(prev_epoch) {
        return;
    }
    for (offset, &entry) in entries.iter().enumerate() {
        let lsn = prev_lsn + 1 + offset as Lsn;
        match node.entry(lsn) {
            Some(mine) if mine.epoch == entry.epoch => continue,
            Some(_) => node.log.truncate(lsn as usize - 1),
            None => {}
        }
        node.log.push(entry);
    }
    let matched = prev_lsn + entries.len() as Lsn;
    state.send(follower, leader, Message::Appended { epoch, matched: Some(matched) });
}
