//! The transitions: what each action does to the cluster, with the core's election rules
//! deciding votes and majorities.
//!
//! An action is one atomic step of one replica: a timeout, the delivery of one message, a
//! leader shipping its log (or a heartbeat) to one peer, a client's write reaching a leader, a
//! leader's fsync, a crash-restart. A step reads and writes the acting replica's state, the
//! network and the ghost history; voter state, and a follower's appends, are durable before
//! any message that depends on them leaves, because both happen in the same step; a leader's
//! own entries are durable only from its next fsync on, and it ships them before.
//!
//! # Message by message
//!
//! - **Timeout** (a follower, or a candidate that has not won, below
//!   [`ElectionModel::epoch_max`]): it moves to epoch + 1, votes for itself, and sends
//!   `RequestVote` to the others.
//! - **`RequestVote`**: the voter asks [`decide_vote`] (`leader_recent = false`), stores the
//!   voter state it returns, becomes a follower if that state is in a newer epoch, and answers
//!   a grant, or a refusal when its epoch is newer than the request's.
//! - **`Vote`**: a newer epoch makes the receiver adopt it as a follower; a grant in the
//!   candidate's epoch is recorded, and when a [`Tally`] of the grants has
//!   [`won`](Tally::won) over [`REPLICAS`] the candidate becomes leader and appends a no-op
//!   entry in its epoch.
//! - **Heartbeat** (a leader's step, for a peer with no shipment outstanding, once the leader
//!   has something durable): an `Append` of no entries after what the peer is known to match,
//!   carrying the leader's durable end; the peer applies through the lesser of the two, so a
//!   peer holding entries the leader lost (it crashed before its fsync) applies none of them.
//! - **Replicate** (a leader's step, for a peer that lags: `matched[peer]` below its last
//!   LSN): `Append` with its entries after `prev_lsn`, which is the peer's known match or,
//!   optimistically, the LSN just before the leader's first entry of its own epoch (Raft's
//!   initial next index), which the peer refuses if its log differs there. A leader has one
//!   shipment outstanding per peer: it ships again only when neither its last `Append` to the
//!   peer nor the peer's `Appended` is in flight.
//! - **`Append`**: an older epoch is refused with the receiver's epoch; a newer one is
//!   adopted; a candidate of the same epoch becomes follower. The follower accepts only if its
//!   entry at `prev_lsn` has `prev_epoch`; then it cuts its log at the first shipped entry
//!   whose epoch differs from its own entry there, appends what it lacks, and answers
//!   `prev_lsn + entries` (it never cuts entries that agree: an old shipment arriving late
//!   must not undo a newer one).
//! - **`Appended`**: a newer epoch deposes the leader; a match in its epoch raises the
//!   leader's `matched[peer]` and may acknowledge pending writes.
//! - **Write** (a client that has not written, to a leader): the leader appends the value in
//!   its epoch (written, not durable) and keeps the client's reply pending.
//! - **Fsync** (a leader whose log has entries not yet durable): all of them become durable,
//!   and the ghost history records its writes as durable on a leader.
//! - **Crash** (a leader, within [`ElectionModel::crashes_max`]): it restarts as a follower
//!   with its voter state and the durable part of its log; the rest, and its pending replies,
//!   are gone.
//!
//! Shipments carry every entry, durable or not, and the leader's durable end; a follower makes
//! what it appends durable before it answers, and applies its log through the lesser of what
//! it matched and that durable end (judged then against the ghost history). A leader
//! acknowledges a pending write when the write's entry is in the leader's current epoch and a
//! majority holds it durably: a [`Tally`] over the replicas whose match reaches the write's
//! LSN, the leader included only through its durable end. The acknowledgement goes to the
//! ghost history.
//!
//! After every step, replies their recipient would ignore now and forever (see [`inert`]) are
//! dropped: a loss the network allows anyway, and it merges states that differ only in
//! messages nobody will act on.
//!
//! CAVEATS
//! - Only leaders crash: a follower has no volatile state, so its crash changes nothing, and
//!   a crashed candidate (a follower that voted for itself) acts as a candidate whose
//!   remaining grants are lost, which the network already allows. The same behaviours, fewer
//!   states.
//! - A leader that receives an `Append` of its own epoch ignores it: only two leaders in one
//!   epoch could send it, which the first property forbids and only a [`Bug`] brings about.
//! - A leader with nothing to ship sends no heartbeats; its epoch spreads with its shipments.

use crate::state::{node_id, Acked, Client, Entry, Envelope, Message, Node, Payload, Replica, Role, State};
use crate::state::{CLIENTS, REPLICAS};
use replikv_core::replication::{Epoch, Lsn};
use replikv_core::single_leader::election::{decide_vote, LogPosition, Tally, VoteRequest};

/// The highest epoch a replica may stand in: the bound on elections per run.
pub const EPOCH_MAX: Epoch = 2;

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
    /// Followers accept an append without checking their entry at `prev_lsn`.
    FollowerSkipsCheck,
    /// Followers keep their own entry where a shipped one conflicts, instead of cutting there.
    FollowerKeepsConflicts,
    /// A leader counts its own copy of a write before it is durable.
    LeaderCountsUndurable,
    /// Followers serve everything they matched, not only what the leader had durable.
    FollowerServesUndurable,
    /// Followers serve through the leader's durable end as far as their own log reaches,
    /// whether or not it matched the leader's there.
    FollowerServesUnmatched,
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

/// The fields of an `Append`, borrowed.
struct Shipment<'a> {
    /// The leader's epoch.
    epoch: Epoch,
    /// The LSN the entries follow.
    prev_lsn: Lsn,
    /// The epoch of the leader's entry at `prev_lsn`.
    prev_epoch: Epoch,
    /// The entries.
    entries: &'a [Entry],
    /// The leader's durable end.
    durable: Lsn,
}

/// One step of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// The follower's (or candidate's) election timeout fires: it stands in the next epoch.
    Timeout(Replica),
    /// The message is delivered to its recipient (and leaves the network).
    Deliver(Envelope),
    /// The leader sends the peer `to` a heartbeat: an `Append` of no entries after what the
    /// peer is known to match, carrying its durable end.
    Heartbeat {
        /// The sending leader.
        leader: Replica,
        /// The peer.
        to: Replica,
    },
    /// The leader ships its entries after `prev_lsn` to the peer `to`.
    Replicate {
        /// The sending leader.
        leader: Replica,
        /// The peer.
        to: Replica,
        /// The LSN the shipped entries follow.
        prev_lsn: Lsn,
    },
    /// The client's write reaches the leader.
    Write {
        /// The writing client.
        client: Client,
        /// The leader it writes to.
        leader: Replica,
    },
    /// The replica fsyncs its log: every entry it holds is durable.
    Fsync(Replica),
    /// The replica crashes and restarts, losing what of its log was not durable.
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
                    actions.push(Action::Timeout(i));
                }
                Role::Leader { .. } => {
                    enabled_leader(state, i, actions);
                    if state.crashes < self.crashes_max {
                        actions.push(Action::Crash(i));
                    }
                    if node.durable < node.log.len() as Lsn {
                        actions.push(Action::Fsync(i));
                    }
                }
                _ => {}
            }
        }
        actions.extend(state.messages().map(Action::Deliver));
    }

    /// Applies `action` to `state`, then drops the replies that became inert.
    pub fn step(&self, state: &mut State, action: Action) {
        match action {
            Action::Timeout(i) => self.on_timeout(state, i),
            Action::Deliver(Envelope { from, to, message }) => {
                state.network[from][to] = None;
                self.on_message(state, from, to, message);
            }
            Action::Replicate { leader, to, prev_lsn } => {
                let append = append(&state.nodes[leader], prev_lsn);
                state.send(leader, to, append);
            }
            Action::Heartbeat { leader, to } => {
                let node = &state.nodes[leader];
                let Role::Leader { matched, .. } = &node.role else { panic!("a heartbeat from a non-leader") };
                let prev_lsn = matched[to];
                let prev_epoch = node.epoch_at(prev_lsn).expect("a peer matches within the leader's log");
                let heartbeat = Message::Append {
                    epoch: node.epoch,
                    prev_lsn,
                    prev_epoch,
                    entries: Vec::new(),
                    durable: node.durable,
                };
                state.send(leader, to, heartbeat);
            }
            Action::Write { client, leader } => self.on_write(state, client, leader),
            Action::Fsync(i) => {
                let node = &mut state.nodes[i];
                node.durable = node.log.len() as Lsn;
                state.record_durable_led(i);
                self.maybe_acknowledge(state, i);
            }
            Action::Crash(i) => {
                state.crashes += 1;
                let node = &mut state.nodes[i];
                node.role = Role::Follower;
                let durable = node.durable;
                node.cut(durable);
            }
        }
        for (from, channels) in state.network.iter_mut().enumerate() {
            for (to, slot) in channels.iter_mut().enumerate() {
                if slot.as_ref().is_some_and(|message| inert(&state.nodes[to], from, message)) {
                    *slot = None;
                }
            }
        }
    }

    /// A timeout: stand in the next epoch, vote for itself, ask the others.
    fn on_timeout(&self, state: &mut State, i: Replica) {
        let node = &mut state.nodes[i];
        node.epoch += 1;
        node.voted_for = Some(node_id(i));
        let mut granted = [false; REPLICAS];
        granted[i] = true;
        node.role = Role::Candidate { granted };
        let last = node.last();
        let request = Message::RequestVote { epoch: node.epoch, last_epoch: last.epoch, last_lsn: last.lsn };
        for to in (0..REPLICAS).filter(|&to| to != i) {
            state.send(i, to, request.clone());
        }
        self.maybe_win(state, i);
    }

    /// Delivers `message` from `from` to `to`.
    fn on_message(&self, state: &mut State, from: Replica, to: Replica, message: Message) {
        match message {
            // A candidate asks this replica, in any role, for its vote.
            Message::RequestVote { epoch, last_epoch, last_lsn } => {
                let last = LogPosition { epoch: last_epoch, lsn: last_lsn };
                let request = VoteRequest { epoch, candidate: node_id(from), last, pre_vote: false };
                self.on_request_vote(state, from, to, request);
            }
            // A voter answers this replica's candidacy (or an older one).
            Message::Vote { epoch, granted } => {
                let node = &mut state.nodes[to];
                if epoch > node.epoch {
                    node.adopt(epoch);
                } else if let Role::Candidate { granted: grants } = &mut node.role {
                    if epoch == node.epoch && granted {
                        grants[from] = true;
                        self.maybe_win(state, to);
                    }
                }
            }
            // A leader ships entries to this replica.
            Message::Append { epoch, prev_lsn, prev_epoch, entries, durable } => {
                let shipment = Shipment { epoch, prev_lsn, prev_epoch, entries: &entries, durable };
                self.on_append(state, from, to, shipment);
            }
            // A follower answers this replica's shipment (perhaps one of an older epoch).
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
            node.step_down();
        }
        node.set_voter(decision.state);
        // A refusal in the request's own epoch would change nothing at the candidate.
        if decision.granted || decision.state.epoch > request.epoch {
            let answer = Message::Vote { epoch: decision.state.epoch, granted: decision.granted };
            state.send(voter, candidate, answer);
        }
    }

    /// An append reaches `follower`: Raft's consistency check, then the splice.
    fn on_append(&self, state: &mut State, leader: Replica, follower: Replica, shipment: Shipment<'_>) {
        let Shipment { epoch, prev_lsn, prev_epoch, entries, durable } = shipment;
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
        // A refusal for a missing `prev_lsn` would change nothing at the leader: not sent.
        if node.epoch_at(prev_lsn) != Some(prev_epoch) && self.bug != Some(Bug::FollowerSkipsCheck) {
            return;
        }
        for (offset, &entry) in entries.iter().enumerate() {
            let lsn = prev_lsn + 1 + offset as Lsn;
            match node.entry(lsn) {
                Some(mine) if mine.epoch == entry.epoch => continue,
                Some(_) if self.bug == Some(Bug::FollowerKeepsConflicts) => continue,
                Some(_) => node.cut(lsn - 1),
                None => {}
            }
            node.log.push(entry);
        }
        // Durable before it answers; what it applies, and so serves, stops at what the leader
        // had durable (and at what it matched).
        node.durable = node.log.len() as Lsn;
        let matched = prev_lsn + entries.len() as Lsn;
        let servable = match self.bug {
            Some(Bug::FollowerServesUndurable) => matched,
            Some(Bug::FollowerServesUnmatched) => (node.log.len() as Lsn).min(durable),
            _ => matched.min(durable),
        };
        state.record_served(follower, servable);
        state.send(follower, leader, Message::Appended { epoch, matched: Some(matched) });
    }

    /// A client's write reaches `leader`: appended in its epoch, its reply pending.
    fn on_write(&self, state: &mut State, client: Client, leader: Replica) {
        state.issued[client as usize] = true;
        let node = &mut state.nodes[leader];
        node.log.push(Entry { epoch: node.epoch, payload: Payload::Write(client) });
        let Role::Leader { pending, .. } = &mut node.role else {
            panic!("client {client} wrote to replica {leader}, which is not leader: {node:?}");
        };
        pending[client as usize] = true;
        self.maybe_acknowledge(state, leader);
    }

    /// Makes candidate `i` leader if its grants are a majority: it appends its no-op, and the
    /// ghost history records the leadership.
    fn maybe_win(&self, state: &mut State, i: Replica) {
        let node = &mut state.nodes[i];
        let Role::Candidate { granted } = &node.role else { return };
        let mut tally = Tally::default();
        for (voter, _) in granted.iter().enumerate().filter(|&(_, &granted)| granted) {
            tally.record(node_id(voter), true);
        }
        if !tally.won(REPLICAS) {
            return;
        }
        node.role = Role::Leader { matched: [0; REPLICAS], pending: [false; CLIENTS] };
        node.log.push(Entry { epoch: node.epoch, payload: Payload::Noop });
        let epoch = node.epoch;
        state.record_leadership(epoch, node_id(i));
        state.record_durable_led(i);
    }

    /// Acknowledges every pending write of `leader` that it appended in its current epoch and
    /// that a majority holds.
    fn maybe_acknowledge(&self, state: &mut State, leader: Replica) {
        let node = &mut state.nodes[leader];
        // The leader's own copy counts once it is durable.
        let mine = if self.bug == Some(Bug::LeaderCountsUndurable) { node.last().lsn } else { node.durable };
        let Role::Leader { matched, pending, .. } = &mut node.role else { return };
        let mut acked = Vec::new();
        for client in (0..CLIENTS as Client).filter(|&c| pending[c as usize]) {
            let index = node.log.iter().position(|e| e.payload == Payload::Write(client));
            let index = index.unwrap_or_else(|| panic!("pending write of client {client} not in {:?}", node.log));
            let (lsn, entry) = (index as Lsn + 1, node.log[index]);
            let mut tally = Tally::default();
            for (peer, &known) in matched.iter().enumerate() {
                let reach = if peer == leader { mine } else { known };
                tally.record(node_id(peer), reach >= lsn);
            }
            let quorum = tally.won(REPLICAS) || self.bug == Some(Bug::AckOnOneCopy);
            if quorum && entry.epoch == node.epoch {
                acked.push((client, Acked { lsn, entry }));
            }
        }
        for &(client, _) in &acked {
            pending[client as usize] = false;
        }
        for (_, ack) in acked {
            state.record_ack(ack);
        }
    }
}

impl Default for ElectionModel {
    fn default() -> ElectionModel {
        ElectionModel::new()
    }
}

/// Lists the steps of `leader`: a shipment to each lagging peer with none outstanding, and
/// each waiting client's write.
fn enabled_leader(state: &State, leader: Replica, actions: &mut Vec<Action>) {
    let node = &state.nodes[leader];
    let Role::Leader { matched, .. } = &node.role else { return };
    let last = node.last().lsn;
    // The LSN before the leader's first entry of its own epoch (its no-op): Raft's initial
    // next index, an optimistic guess at what a peer holds.
    let own = node.log.iter().position(|e| e.epoch == node.epoch).expect("a leader holds its no-op") as Lsn;
    for to in (0..REPLICAS).filter(|&to| to != leader) {
        let shipping = matches!(state.in_flight(leader, to), Some(Message::Append { .. }));
        let answering = matches!(state.in_flight(to, leader), Some(Message::Appended { .. }));
        if shipping || answering {
            continue;
        }
        // A heartbeat tells a peer the leader's durable end, whether it lags or not (a peer
        // that lags applies only through what it matched).
        if node.durable > 0 {
            actions.push(Action::Heartbeat { leader, to });
        }
        if matched[to] >= last {
            continue;
        }
        actions.push(Action::Replicate { leader, to, prev_lsn: matched[to] });
        if own > matched[to] {
            actions.push(Action::Replicate { leader, to, prev_lsn: own });
        }
    }
    for client in (0..CLIENTS as Client).filter(|&c| !state.issued[c as usize]) {
        actions.push(Action::Write { client, leader });
    }
}

/// The `Append` that `leader` sends with its entries after `prev_lsn`.
fn append(leader: &Node, prev_lsn: Lsn) -> Message {
    let prev_epoch = leader.epoch_at(prev_lsn).unwrap_or_else(|| panic!("prev_lsn {prev_lsn} past {leader:?}"));
    let entries = leader.log[prev_lsn as usize..].to_vec();
    Message::Append { epoch: leader.epoch, prev_lsn, prev_epoch, entries, durable: leader.durable }
}

/// True when `node` would ignore `message` from `from` if it arrived now, and in every later
/// state: a reply from an older epoch, or to a role it cannot hold again in its epoch (a node
/// becomes candidate only by moving to a newer epoch, and leader only from candidate).
pub fn inert(node: &Node, from: Replica, message: &Message) -> bool {
    match *message {
        Message::Vote { epoch, granted } => match &node.role {
            _ if epoch > node.epoch => false,
            Role::Candidate { granted: grants } if epoch == node.epoch => !granted || grants[from],
            _ => true,
        },
        Message::Appended { epoch, matched } => match &node.role {
            _ if epoch > node.epoch => false,
            Role::Leader { matched: known, .. } if epoch == node.epoch => matched.is_none_or(|m| m <= known[from]),
            Role::Candidate { .. } if epoch == node.epoch => false,
            _ => true,
        },
        Message::RequestVote { .. } | Message::Append { .. } => false,
    }
}
