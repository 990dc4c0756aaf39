//! The multi-leader node: a single-leader replica inside its datacenter, and, while it leads
//! there, the exchange of changes with the other datacenters' leaders (see the module above).

use super::canary::Canary;
use super::commands::{encode, load, Causal};
use super::conflict::{ahead_by, receive_planted, Resolve, Rules};
use super::conflict_log::{ConflictEntry, ConflictLog, CONFLICTS_NAMESPACE};
use super::message::{dc_id, DcId, Message, Position, Ship, ShipAck};
use crate::causality::Siblings;
use crate::error::Result;
use crate::kv::{physical, Store};
use crate::node::{Family, Input, Outbox, Output, PeerMessage, ReplicationStatus, WrittenOutAll};
use crate::replication::{Change, Epoch, LogRecord, Lsn};
use crate::single_leader::{self, SingleLeader};
use crate::storage::{Engine, Flushed, Record};
use crate::version::NodeId;
use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};

/// Bytes of changes one shipment carries at most (at least one whole request).
pub const SHIP_BYTES_MAX: usize = 1024 * 1024;

/// Lag samples (a record's position and when it became durable) a leader keeps, to tell how
/// long ago the oldest change another datacenter lacks was written.
pub const LAG_SAMPLES_MAX: usize = 4096;

/// Answers to other datacenters a leader holds at most while its own datacenter has not yet
/// made durable what they confirm (its followers are slow or down); past it the oldest is
/// dropped, harmlessly: its sender asks again.
pub const OWED_ACKS_MAX: usize = 1024;

/// Milliseconds between two warnings of the same kind about one datacenter.
const WARN_EVERY_MS: u64 = 10_000;

/// Records of another datacenter's log a leader takes without storing its position (its
/// shipments carried no change of that datacenter's own) before it stores it anyway, so that
/// the other keeps at most about this many records for it beyond what it needs.
pub const POSITION_STORE_EVERY_RECORDS: u64 = 1024;

/// Bytes of whole requests one shipment may carry at most when a single request is bigger
/// than [`SHIP_BYTES_MAX`] (a peer frame holds 64 MiB).
pub const SHIP_REQUEST_BYTES_MAX: usize = 48 * 1024 * 1024;

/// A datacenter: its name and its nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datacenter {
    /// Its name, as the cluster file gives it.
    pub name: String,
    /// Its nodes, the first the one that leads at the start.
    pub nodes: Vec<NodeId>,
}

/// How a multi-leader node behaves; the server builds it from the cluster file.
#[derive(Clone, Debug)]
pub struct Settings {
    /// This node inside its datacenter: its role there, its acknowledgements, its elections.
    /// Its peers are its datacenter's other nodes.
    pub local: single_leader::Settings,
    /// Every datacenter of the cluster, this node's among them.
    pub datacenters: Vec<Datacenter>,
    /// How conflicting writes of each key are resolved; the same on every node.
    pub rules: Rules,
    /// A change stamped more than this many milliseconds ahead of the receiving leader's
    /// clock waits until the clock catches up, so no leader's fast clock wins `lww` by more.
    pub max_clock_skew_ms: u64,
    /// Milliseconds after which a shipment not acknowledged is sent again (to the next node
    /// of the datacenter, if its target has not answered since).
    pub resend_ms: u64,
    /// Milliseconds without an answer after which another datacenter counts as cut off: its
    /// position no longer holds the log.
    pub link_timeout_ms: u64,
    /// Records of another datacenter's log taken without storing the position before it is
    /// stored anyway ([`POSITION_STORE_EVERY_RECORDS`] in a node).
    pub store_position_every: u64,
    /// Entries the conflict log keeps at most ([`super::CONFLICTS_KEPT_MAX`] in a node).
    pub conflicts_kept_max: usize,
    /// A bug planted to test the simulator's checkers; [`Canary::None`] on every real node.
    pub canary: Canary,
}

impl Settings {
    /// The datacenter `node` belongs to.
    pub fn datacenter_of(&self, node: NodeId) -> Option<&Datacenter> {
        self.datacenters.iter().find(|dc| dc.nodes.contains(&node))
    }
}

/// Where this leader's shipping to one other datacenter stands.
#[derive(Debug)]
struct Outbound {
    /// The datacenter.
    name: String,
    /// Its nodes.
    nodes: Vec<NodeId>,
    /// The node taken for its leader (an index into `nodes`).
    target: usize,
    /// How far it has applied this datacenter's log, in this log's history; `None` until it
    /// says.
    applied: Option<Position>,
    /// How far a majority of it holds that durably (where a failover there goes back to): the
    /// log is kept from here on; `None` until it says.
    stored: Option<Position>,
    /// Its position, which was not in this log's history: the next shipment says so
    /// (`restart`).
    restart: Option<Position>,
    /// The last shipment (or question) in flight: what it covers and when it left.
    sent: Option<(Position, u64)>,
    /// When its target last answered.
    heard_ms: Option<u64>,
    /// When it was last warned about, by kind.
    warned_ms: BTreeMap<&'static str, u64>,
}

/// An acknowledgement owed once this node's log is durable through `lsn`.
#[derive(Debug)]
struct Owed {
    lsn: Lsn,
    to: NodeId,
    ack: ShipAck,
}

/// What the exchange counted since start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExchangeCounters {
    /// Changes this leader shipped to other datacenters.
    pub shipped: u64,
    /// Changes it received from them.
    pub received: u64,
    /// Conflicts it detected.
    pub conflicts: u64,
    /// Shipments held back because a change was stamped too far ahead of this clock.
    pub held_back: u64,
    /// Shipments refused (a change that does not decode, from an unknown datacenter).
    pub refused: u64,
}

/// One other datacenter, as a status shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DatacenterLag {
    /// Its name.
    pub name: String,
    /// The node taken for its leader.
    pub target: String,
    /// How far it has applied this datacenter's log (0 until it says).
    pub applied_lsn: Lsn,
    /// Records of this datacenter's log it lacks (of those a majority here holds).
    pub lag_records: u64,
    /// Milliseconds since the oldest change it lacks was durable here (0 when it lacks none).
    pub lag_ms: u64,
    /// It answered within the link timeout.
    pub up: bool,
}

/// A multi-leader node's part of the status pages.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MultiLeaderStatus {
    /// This node's datacenter.
    pub datacenter: String,
    /// On its datacenter's leader: each other datacenter.
    pub datacenters: Vec<DatacenterLag>,
    /// The exchange's counters.
    pub counters: ExchangeCounters,
    /// Conflict log entries held (once counted), written and deleted by retention.
    pub conflicts_held: Option<usize>,
    /// Entries deleted by retention since start.
    pub conflicts_dropped: u64,
}

/// A node of a multi-leader cluster.
#[derive(Debug)]
pub struct MultiLeader<E> {
    /// Its replica inside its datacenter.
    inner: SingleLeader<E>,
    /// How it behaves.
    settings: Settings,
    /// Its datacenter.
    me: DcId,
    /// Its datacenter's name.
    me_name: String,
    /// On a leader: each other datacenter's shipping.
    outbound: BTreeMap<DcId, Outbound>,
    /// Acknowledgements waiting for this node's log to be durable.
    owed: VecDeque<Owed>,
    /// (position, when it became durable) of this log's records, oldest first.
    samples: VecDeque<(Lsn, u64)>,
    /// The conflict log's counts.
    conflicts: ConflictLog,
    /// The exchange's counters.
    counters: ExchangeCounters,
    /// On a leader: how far it took each datacenter's log since it leads, including
    /// shipments that carried no change (which it does not store: an empty shipment answered
    /// with a write would answer back, for ever).
    taken: BTreeMap<DcId, Position>,
}

/// The physical key of the position this datacenter has applied `origin`'s log through.
fn applied_key(origin: DcId) -> Bytes {
    let mut raw = BytesMut::with_capacity(16);
    raw.extend_from_slice(b"applied/");
    raw.put_u64(origin);
    physical(CONFLICTS_NAMESPACE, &raw.freeze())
}

/// True for a key of the family's own records (never shipped: each datacenter keeps its own).
fn own_record(key: &[u8]) -> bool {
    super::conflict_log::is_own_record(key)
}

impl<E: Engine> MultiLeader<E> {
    /// A node over `inner`, its replica inside its datacenter (built with `settings.local`,
    /// its commands replaced here by the family's).
    pub fn new(mut inner: SingleLeader<E>, settings: Settings) -> Result<MultiLeader<E>> {
        let node = settings.local.common.node;
        let Some(mine) = settings.datacenter_of(node) else {
            return Err(crate::Error::InvalidInput(format!("node {node} is in no datacenter")));
        };
        let (me, me_name) = (dc_id(&mine.name), mine.name.clone());
        let kept_max = settings.conflicts_kept_max;
        inner.set_commands(Box::new(Causal::new(node, settings.rules.clone())));
        let outbound = settings
            .datacenters
            .iter()
            .filter(|dc| dc.name != me_name)
            .map(|dc| {
                let out = Outbound {
                    name: dc.name.clone(),
                    nodes: dc.nodes.clone(),
                    target: 0,
                    applied: None,
                    stored: None,
                    restart: None,
                    sent: None,
                    heard_ms: None,
                    warned_ms: BTreeMap::new(),
                };
                (dc_id(&dc.name), out)
            })
            .collect();
        Ok(MultiLeader {
            inner,
            settings,
            me,
            me_name,
            outbound,
            owed: VecDeque::new(),
            samples: VecDeque::new(),
            conflicts: ConflictLog::new(kept_max),
            counters: ExchangeCounters::default(),
            taken: BTreeMap::new(),
        })
    }

    /// Its replica inside its datacenter.
    pub fn local(&self) -> &SingleLeader<E> {
        &self.inner
    }

    /// Its replica inside its datacenter, to change its settings and run its maintenance.
    pub fn local_mut(&mut self) -> &mut SingleLeader<E> {
        &mut self.inner
    }

    /// Its replica inside its datacenter, to take it apart (the simulator's crashes).
    pub fn into_local(self) -> SingleLeader<E> {
        self.inner
    }

    /// The store, for reading keys (digests, tests).
    pub fn store(&self) -> &Store<E> {
        self.inner.store()
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Handles one input at wall-clock `now_ms`.
    pub fn step(&mut self, now_ms: u64, input: Input<Message>, outbox: &mut Outbox) -> Result<()> {
        match input {
            Input::Request { id, request } => self.local_step(now_ms, Input::Request { id, request }, outbox)?,
            Input::Durable { lsn, resets } => {
                self.local_step(now_ms, Input::Durable { lsn, resets }, outbox)?;
                let durable = self.inner.durable_lsn();
                if self.samples.back().is_none_or(|(l, _)| *l < durable) {
                    self.samples.push_back((durable, now_ms));
                    if self.samples.len() > LAG_SAMPLES_MAX {
                        self.samples.pop_front();
                    }
                }
            }
            Input::Tick => {
                self.hold_log();
                self.local_step(now_ms, Input::Tick, outbox)?;
                self.ship_all(now_ms, outbox)?;
            }
            Input::Message { from, message } => match message {
                Message::Local(message) => self.local_step(now_ms, Input::Message { from, message }, outbox)?,
                Message::Ship(ship) => self.on_ship(now_ms, from, ship, outbox)?,
                Message::Ack(ack) => self.on_ack(now_ms, from, ack),
                Message::Where { origin } => self.on_where(from, origin, outbox),
                Message::NotLeader { leader } => self.on_not_leader(from, leader),
            },
        }
        self.release_owed(outbox);
        Ok(())
    }

    /// Steps the replica inside the datacenter, wrapping what it sends as this family's.
    fn local_step(&mut self, now_ms: u64, input: single_leader::Input, outbox: &mut Outbox) -> Result<()> {
        let mut local = Outbox::default();
        self.inner.step(now_ms, input, &mut local)?;
        wrap(local, outbox);
        Ok(())
    }

    /// Hands every write stepped so far to the operating system (see [`Family::write_out`]).
    pub fn write_out(&mut self, now_ms: u64, outbox: &mut Outbox) -> Result<WrittenOutAll> {
        let mut local = Outbox::default();
        let written = self.inner.write_out(now_ms, &mut local)?;
        wrap(local, outbox);
        Ok(written)
    }

    /// Makes every write stepped so far durable.
    pub fn flush(&mut self, now_ms: u64) -> Result<Flushed> {
        self.inner.flush(now_ms)
    }

    /// Sends the acknowledgements whose records a majority of this datacenter holds now (so
    /// that no failover here takes back what they acknowledge); forgets them all when this node
    /// no longer leads (the shippers ask again).
    fn release_owed(&mut self, outbox: &mut Outbox) {
        let Some(committed) = self.inner.committed_lsn() else {
            self.owed.clear();
            self.taken.clear();
            self.conflicts.forget();
            return;
        };
        while self.owed.front().is_some_and(|o| o.lsn <= committed) {
            let owed = self.owed.pop_front().expect("checked");
            send(outbox, owed.to, Message::Ack(owed.ack));
        }
    }

    /// The position this datacenter has applied `origin`'s log through: as this leader took
    /// it, or as its store holds it.
    fn applied(&self, origin: DcId) -> Result<Position> {
        match self.taken.get(&origin) {
            Some(taken) => Ok(*taken),
            None => self.stored(origin),
        }
    }

    /// The position of `origin`'s log this datacenter's store holds.
    fn stored(&self, origin: DcId) -> Result<Position> {
        let Some(value) = self.inner.store().engine().get(&applied_key(origin))?.and_then(|r| r.value) else {
            return Ok(Position::default());
        };
        postcard::from_bytes(&value).map_err(|e| crate::Error::Corrupt {
            path: "(the store)".into(),
            offset: 0,
            reason: format!("the applied position of datacenter {origin:016x} does not decode: {e}"),
        })
    }

    /// Acknowledges `applied` of `origin`'s log to `to` once a majority of this datacenter
    /// holds what this node wrote through `lsn` (the stored position among it).
    fn owe(&mut self, lsn: Lsn, to: NodeId, origin: DcId, applied: Position, echo_ms: u64) -> Result<()> {
        let stored = self.stored(origin)?;
        if self.owed.len() >= OWED_ACKS_MAX {
            self.owed.pop_front();
        }
        self.owed.push_back(Owed { lsn, to, ack: ShipAck { origin, applied, stored, echo_ms } });
        Ok(())
    }

    /// Stores `position` as how far this datacenter has applied `origin`'s log, in a request
    /// of its own; the log position of that request.
    fn store_position(&mut self, now_ms: u64, origin: DcId, position: Position) -> Result<Option<Lsn>> {
        self.inner.leader_write(|store| {
            let value = postcard::to_allocvec(&position).expect("postcard encodes a position");
            let version = store.stamp(now_ms, None);
            store.put_record(
                applied_key(origin),
                Record { version, value: Some(Bytes::from(value)), expire_at_ms: None },
            )
        })
    }

    /// The newest record this node wrote, for an answer that must wait until it is durable.
    fn written_lsn(&self) -> Lsn {
        self.inner.last_lsn()
    }

    fn on_where(&mut self, from: NodeId, origin: DcId, outbox: &mut Outbox) {
        if !self.inner.is_leader() {
            let leader = self.inner.leader().map(|(l, _)| l);
            send(outbox, from, Message::NotLeader { leader });
            return;
        }
        let lsn = self.written_lsn();
        if let Err(e) = self.applied(origin).and_then(|applied| self.owe(lsn, from, origin, applied, 0)) {
            tracing::error!("cannot answer where datacenter {origin:016x}'s log is applied: {e}");
        }
    }

    fn on_not_leader(&mut self, from: NodeId, leader: Option<NodeId>) {
        let Some(dc) = self.settings.datacenter_of(from).map(|dc| dc_id(&dc.name)) else { return };
        let Some(out) = self.outbound.get_mut(&dc) else { return };
        out.target = match leader.and_then(|l| out.nodes.iter().position(|n| *n == l)) {
            Some(at) => at,
            None => (out.target + 1) % out.nodes.len().max(1),
        };
        out.sent = None;
    }

    /// A shipment from another datacenter's leader.
    fn on_ship(&mut self, now_ms: u64, from: NodeId, ship: Ship, outbox: &mut Outbox) -> Result<()> {
        if !self.inner.is_leader() {
            let leader = self.inner.leader().map(|(l, _)| l);
            send(outbox, from, Message::NotLeader { leader });
            return Ok(());
        }
        let sender_dc = self.settings.datacenter_of(from).map(|dc| (dc_id(&dc.name), dc.name.clone()));
        let Some((origin, origin_name)) = sender_dc.filter(|(dc, _)| *dc == ship.origin && *dc != self.me) else {
            self.counters.refused += 1;
            tracing::error!(
                "a shipment from node {from} names datacenter {:016x}, which is not the sender's (or is this one): refused",
                ship.origin
            );
            return Ok(());
        };
        let applied = self.applied(origin)?;
        let in_step = ship.after.lsn < applied.lsn || ship.after == applied;
        if !in_step {
            // A gap, or a history that went another way: say where this datacenter is.
            let lsn = self.written_lsn();
            return self.owe(lsn, from, origin, applied, ship.sent_ms);
        }
        // A position moves back only when the origin says its history went another way; a
        // late or duplicated shipment is applied (harmlessly) without moving it.
        let position =
            if ship.restart == Some(applied) || ship.through.lsn > applied.lsn { ship.through } else { applied };
        // Decode and check every state first: a shipment is applied whole or not at all.
        let mut states: Vec<(Bytes, Bytes, Siblings)> = Vec::with_capacity(ship.changes.len());
        for change in &ship.changes {
            let Some((0, client_key)) = crate::kv::logical(&change.key) else {
                self.counters.refused += 1;
                tracing::error!(
                    "a shipment from datacenter {origin_name} (through {}) names key {:?}, outside the clients' \
                     keys: that change is skipped",
                    ship.through.lsn,
                    String::from_utf8_lossy(&change.key)
                );
                continue;
            };
            let state = change.record.value.as_deref().map(Siblings::from_bytes);
            let Some(Ok(state)) = state else {
                self.counters.refused += 1;
                tracing::error!(
                    "a shipment from datacenter {origin_name} (through {}) holds a change of key {:?} that is no \
                     multi-leader state: refused whole, it will come again",
                    ship.through.lsn,
                    String::from_utf8_lossy(&change.key)
                );
                return Ok(());
            };
            if let Some(ahead) =
                state.newest_version().and_then(|v| ahead_by(v, now_ms, self.settings.max_clock_skew_ms))
            {
                self.counters.held_back += 1;
                let out = self.outbound.get_mut(&origin).expect("a known datacenter");
                if out.warned_ms.get("skew").is_none_or(|at| now_ms.saturating_sub(*at) >= WARN_EVERY_MS) {
                    out.warned_ms.insert("skew", now_ms);
                    tracing::warn!(
                        "a change from datacenter {origin_name} is stamped {ahead} ms past this clock's allowance \
                         (max_clock_skew_ms = {}): its shipment waits until this clock catches up",
                        self.settings.max_clock_skew_ms
                    );
                }
                return Ok(());
            }
            states.push((change.key.clone(), client_key, state));
        }
        if states.is_empty() {
            // Records of changes the origin received from elsewhere: nothing to apply. The
            // position is stored now and then only: storing it each time would be a record here
            // that the origin takes the same way, for ever.
            self.taken.insert(origin, position);
            let stored = self.stored(origin)?;
            let lsn = match position.lsn.saturating_sub(stored.lsn) >= self.settings.store_position_every {
                true => self.store_position(now_ms, origin, position)?.unwrap_or_else(|| self.written_lsn()),
                false => self.written_lsn(),
            };
            return self.owe(lsn, from, origin, position, ship.sent_ms);
        }
        let (rules, conflicts, counters) = (&self.settings.rules, &mut self.conflicts, &mut self.counters);
        let (node, canary) = (self.settings.local.common.node, self.settings.canary);
        let written = self.inner.leader_write(|store| {
            // Every merge first, writing nothing: a change that cannot be merged is skipped
            // (logged, counted and kept in the conflict log), never half applied.
            let mut merged = Vec::with_capacity(states.len());
            let mut unmerged = Vec::new();
            for (key, client_key, arrived) in &states {
                let before = match load(store, client_key)? {
                    Ok(state) => state,
                    Err(refused) => {
                        tracing::error!(
                            "key {:?} cannot be read here ({refused:?}): the change from datacenter {origin_name} \
                             replaces it",
                            String::from_utf8_lossy(client_key)
                        );
                        Siblings::new()
                    }
                };
                let resolve = rules.for_key(client_key);
                let mut state = before.clone();
                match receive_planted(&mut state, arrived, resolve, canary) {
                    Ok(got) => merged.push((key, client_key, arrived, resolve, before, state, got)),
                    Err(e) => {
                        counters.refused += 1;
                        tracing::error!(
                            "key {:?}: the change from datacenter {origin_name} cannot be merged ({e}): skipped, its \
                             writes kept in the conflict log",
                            String::from_utf8_lossy(client_key)
                        );
                        unmerged.push((client_key, before, arrived, resolve));
                    }
                }
            }
            for (key, client_key, arrived, resolve, before, mut state, mut got) in merged {
                counters.received += 1;
                if got.clashes > 0 {
                    tracing::error!(
                        "key {:?}: {} writes from datacenter {origin_name} carry a dot this datacenter holds with \
                         another write (a node reused its identity after losing its data): the greater is kept",
                        String::from_utf8_lossy(client_key),
                        got.clashes
                    );
                }
                if let Some(conflict) = &got.conflict {
                    counters.conflicts += 1;
                    let mut entry = ConflictEntry::new(now_ms, client_key.clone(), &origin_name, node, conflict);
                    if canary == Canary::LoserNotLogged && resolve == Resolve::Lww {
                        entry.lost.clear(); // the planted bug: the loser is dropped in silence
                    }
                    conflicts.append(store, now_ms, &entry)?;
                    if canary == Canary::AppliedTwice && resolve == Resolve::Merge {
                        // The planted bug: the arriving values applied again, as this node's.
                        for value in conflict.arrived.iter().filter_map(|s| s.value.clone()) {
                            let version = store.stamp(now_ms, state.newest_version());
                            state.write(node, &crate::causality::VersionVector::new(), version, Some(value))?;
                            got.changed = true;
                        }
                    }
                }
                if !got.changed {
                    continue;
                }
                match encode(&state)? {
                    Ok(mut record) => {
                        // A key's record versions must rise in log order: recovery replays a
                        // logged change only where the engine's version of the key is older.
                        // A merge that adds an older write, or only context, keeps the state's
                        // newest version, so its record gets a fresh one from this clock.
                        let stored = store.engine().meta(key).map(|m| m.version);
                        if stored.is_some_and(|v| v >= record.version) {
                            record.version = store.stamp(now_ms, stored);
                        }
                        store.put_record(key.clone(), record)?
                    }
                    Err(refused) => {
                        // The merged state is too large to store: this datacenter keeps its
                        // own, and the arriving writes go to the conflict log, not to silence.
                        counters.conflicts += 1;
                        tracing::error!(
                            "key {:?}: the state merged with datacenter {origin_name}'s change cannot be stored \
                             ({refused:?}); the arriving writes are kept in the conflict log only",
                            String::from_utf8_lossy(client_key)
                        );
                        let refused = kept_out(resolve, &before, arrived);
                        let entry = ConflictEntry::new(now_ms, client_key.clone(), &origin_name, node, &refused);
                        conflicts.append(store, now_ms, &entry)?;
                    }
                }
            }
            for (client_key, before, arrived, resolve) in unmerged {
                counters.conflicts += 1;
                let refused = kept_out(resolve, &before, arrived);
                let entry = ConflictEntry::new(now_ms, client_key.clone(), &origin_name, node, &refused);
                conflicts.append(store, now_ms, &entry)?;
            }
            let value = postcard::to_allocvec(&position).expect("postcard encodes a position");
            // The clock passes every version received, so a later write here wins over them.
            let newest = states.iter().filter_map(|(_, _, s)| s.newest_version()).max();
            let version = store.stamp(now_ms, newest);
            store.put_record(
                applied_key(origin),
                Record { version, value: Some(Bytes::from(value)), expire_at_ms: None },
            )
        })?;
        if let Some(lsn) = written {
            self.taken.insert(origin, position);
            self.owe(lsn, from, origin, position, ship.sent_ms)?;
        }
        Ok(())
    }

    /// An answer from another datacenter's leader: how far it has applied this log.
    fn on_ack(&mut self, now_ms: u64, from: NodeId, ack: ShipAck) {
        if ack.origin != self.me || !self.inner.is_leader() {
            return;
        }
        let Some(dc) = self.settings.datacenter_of(from).map(|dc| dc_id(&dc.name)) else { return };
        let (matched, stored) = (self.matching(ack.applied), self.matching(ack.stored));
        let Some(out) = self.outbound.get_mut(&dc) else { return };
        if let Some(at) = out.nodes.iter().position(|n| *n == from) {
            out.target = at;
        }
        out.heard_ms = Some(now_ms);
        out.restart = (matched != ack.applied).then_some(ack.applied);
        out.applied = Some(matched);
        out.stored = Some(stored);
        out.sent = None;
    }

    /// The newest position of this log at or before `theirs` that is in this log's history:
    /// `theirs` itself when this log holds it (or no longer can tell), else a point the two
    /// histories surely share ([`shared_point`]).
    fn matching(&self, theirs: Position) -> Position {
        if theirs.lsn == 0 || theirs.lsn < self.inner.first_lsn() {
            return theirs;
        }
        if self.inner.log_epoch_at(theirs.lsn) == Some(theirs.epoch) {
            return theirs;
        }
        shared_point(&self.inner.log_epoch_runs(), self.inner.first_lsn(), self.inner.last_lsn(), theirs)
    }

    /// On a leader: ships each other datacenter what it lacks, and asks one that has not said
    /// where it is.
    fn ship_all(&mut self, now_ms: u64, outbox: &mut Outbox) -> Result<()> {
        let Some(committed) = self.inner.committed_lsn() else {
            for out in self.outbound.values_mut() {
                (out.applied, out.stored, out.sent, out.restart) = (None, None, None, None);
            }
            return Ok(());
        };
        let dcs: Vec<DcId> = self.outbound.keys().copied().collect();
        for dc in dcs {
            self.ship(now_ms, dc, committed, outbox)?;
        }
        Ok(())
    }

    /// Has the log keep what every other datacenter may still need: from the oldest position
    /// their datacenters hold durably (cut off or not), or all of it while one has not said
    /// (a leader that has just taken over). Set before every tick, so that the tick's own
    /// retention never drops what a datacenter lacks. A follower learns no position: it holds
    /// all of its log until its leader's heartbeats say where the leader's is held from, and
    /// from there on holds the same records (so that a successor still has them).
    fn hold_log(&mut self) {
        let unknown = self.outbound.values().any(|o| o.stored.is_none() || o.applied.is_none());
        let hold = match unknown {
            true => Some(self.inner.first_lsn()),
            // Shipping goes on from `applied`, a failover there goes back to `stored`.
            false => self.outbound.values().filter_map(|o| Some(o.stored?.lsn.min(o.applied?.lsn) + 1)).min(),
        };
        self.inner.hold_log_from(hold);
    }

    fn ship(&mut self, now_ms: u64, dc: DcId, committed: Lsn, outbox: &mut Outbox) -> Result<()> {
        let (resend_ms, me) = (self.settings.resend_ms, self.me);
        let out = self.outbound.get_mut(&dc).expect("listed");
        if out.nodes.is_empty() {
            return Ok(());
        }
        if let Some((_, at)) = out.sent {
            if now_ms.saturating_sub(at) < resend_ms {
                return Ok(());
            }
            // Not answered in time: try the datacenter's next node, unless the target spoke
            // since.
            if out.heard_ms.is_none_or(|h| h < at) {
                out.target = (out.target + 1) % out.nodes.len();
            }
            out.sent = None;
        }
        let target = out.nodes[out.target];
        let Some(applied) = out.applied else {
            out.sent = Some((Position::default(), now_ms));
            send(outbox, target, Message::Where { origin: me });
            return Ok(());
        };
        if applied.lsn >= committed {
            // Nothing to ship: ask now and then, so that a cut link shows.
            if out.heard_ms.is_none_or(|h| now_ms.saturating_sub(h) >= resend_ms) {
                out.sent = Some((applied, now_ms));
                send(outbox, target, Message::Where { origin: me });
            }
            return Ok(());
        }
        let Some(mut records) = self.inner.read_log(applied.lsn, SHIP_BYTES_MAX)? else {
            let out = self.outbound.get_mut(&dc).expect("listed");
            if out.warned_ms.get("retention").is_none_or(|at| now_ms.saturating_sub(*at) >= WARN_EVERY_MS) {
                out.warned_ms.insert("retention", now_ms);
                tracing::error!(
                    "datacenter {} has applied this datacenter's log through {}, but the log now starts at {}: it \
                     cannot be brought up to date from the log (a full exchange of states is not built yet)",
                    out.name,
                    applied.lsn,
                    self.inner.first_lsn()
                );
            }
            // It may have moved on since it said so (this view can be older than its state):
            // ask now and then, so that a newer answer resumes the exchange.
            if out.heard_ms.is_none_or(|h| now_ms.saturating_sub(h) >= resend_ms) {
                out.sent = Some((applied, now_ms));
                send(outbox, target, Message::Where { origin: me });
            }
            return Ok(());
        };
        // A request over several records ships whole: when what was read holds no whole
        // request, read on to the first one's end (within reason).
        let mut bytes: usize = records.iter().map(LogRecord::changes_size_hint).sum();
        let whole = |records: &[LogRecord]| records.iter().any(|r| r.lsn <= committed && !r.continues());
        while let Some(last) = records.last().filter(|r| r.lsn < committed && !whole(&records)) {
            if bytes > SHIP_REQUEST_BYTES_MAX {
                let out = self.outbound.get_mut(&dc).expect("listed");
                out.sent = Some((applied, now_ms)); // not read again before resend_ms
                if out.warned_ms.get("request").is_none_or(|at| now_ms.saturating_sub(*at) >= WARN_EVERY_MS) {
                    out.warned_ms.insert("request", now_ms);
                    tracing::error!(
                        "a request of this datacenter's log from {} on is over SHIP_REQUEST_BYTES_MAX \
                         ({SHIP_REQUEST_BYTES_MAX} bytes): it cannot be shipped to datacenter {}, whose exchange \
                         stops here",
                        applied.lsn + 1,
                        out.name
                    );
                }
                return Ok(());
            }
            let Some(more) = self.inner.read_log(last.lsn, SHIP_BYTES_MAX)? else { break };
            if more.is_empty() {
                break;
            }
            bytes += more.iter().map(LogRecord::changes_size_hint).sum::<usize>();
            records.extend(more);
        }
        let Some((through, changes)) = shipment(&records, committed) else { return Ok(()) };
        let out = self.outbound.get_mut(&dc).expect("listed");
        out.sent = Some((through, now_ms));
        self.counters.shipped += changes.len() as u64;
        let ship = Ship { origin: me, after: applied, through, changes, sent_ms: now_ms, restart: out.restart };
        send(outbox, target, Message::Ship(ship));
        Ok(())
    }

    /// What the status pages show of the exchange.
    fn exchange_status(&self, now_ms: u64) -> MultiLeaderStatus {
        let leading = self.inner.committed_lsn();
        let datacenters = match leading {
            None => Vec::new(),
            Some(committed) => self
                .outbound
                .values()
                .map(|out| {
                    let applied = out.applied.map_or(0, |a| a.lsn);
                    let lag_ms = self
                        .samples
                        .iter()
                        .find(|(lsn, _)| *lsn > applied)
                        .filter(|_| applied < committed)
                        .map_or(0, |(_, at)| now_ms.saturating_sub(*at));
                    DatacenterLag {
                        name: out.name.clone(),
                        target: self.settings.local.hint(out.nodes[out.target]),
                        applied_lsn: applied,
                        lag_records: committed.saturating_sub(applied),
                        lag_ms,
                        up: out.heard_ms.is_some_and(|h| now_ms.saturating_sub(h) < self.settings.link_timeout_ms),
                    }
                })
                .collect(),
        };
        MultiLeaderStatus {
            datacenter: self.me_name.clone(),
            datacenters,
            counters: self.counters.clone(),
            conflicts_held: self.conflicts.held(),
            conflicts_dropped: self.conflicts.dropped,
        }
    }

    /// What the replication status pages show, at `now_ms`.
    pub fn status(&self, now_ms: u64) -> ReplicationStatus {
        let mut status = self.inner.status(now_ms);
        status.mode = "multi-leader";
        status.multi_leader = Some(self.exchange_status(now_ms));
        status
    }
}

/// The whole requests of `records` through `committed` (at least one, if the first is whole
/// and committed): the position they end at and the changes of this datacenter's clients in
/// them. `None` when not even one whole request is committed.
fn shipment(records: &[LogRecord], committed: Lsn) -> Option<(Position, Vec<Change>)> {
    let mut end = None;
    for (i, record) in records.iter().enumerate() {
        if record.lsn > committed {
            break;
        }
        if !record.continues() {
            end = Some(i);
        }
    }
    let end = end?;
    let mut changes = Vec::new();
    let mut request: Vec<Change> = Vec::new();
    let mut received = false;
    for record in &records[..=end] {
        if record.part == 0 {
            // A request still open when another starts was abandoned (its leader died while
            // logging it): never applied here, never shipped.
            request.clear();
            received = false;
        }
        for change in &record.changes {
            received |= change.key.starts_with(&applied_prefix());
            if !own_record(&change.key) {
                request.push(change.clone());
            }
        }
        if !record.continues() {
            // A request that applied another datacenter's changes is not this one's to ship.
            if !received {
                changes.append(&mut request);
            }
            request.clear();
            received = false;
        }
    }
    let last = &records[end];
    Some((Position { lsn: last.lsn, epoch: last.epoch }, changes))
}

/// Where a log of epoch runs `runs` (`(first lsn, epoch)`, from `first_lsn` to `last`) and
/// another history that reached `theirs` surely agree, when this log does not hold `theirs`.
/// A run of `theirs`'s own epoch is shared up to `theirs` (one leader wrote both); a run of
/// an older epoch is shared only up to where it starts (where the other history's run of
/// that epoch ended is unknown, and every history holding that epoch's records took the same
/// records before them from its leader). Shipping again from a point before the true fork is
/// harmless (the state merge is idempotent); from a point past it would skip records.
fn shared_point(runs: &[(Lsn, Epoch)], first_lsn: Lsn, last: Lsn, theirs: Position) -> Position {
    let base = first_lsn.saturating_sub(1);
    let mut best = Position { lsn: base, epoch: 0 };
    for (i, &(start, epoch)) in runs.iter().enumerate() {
        if epoch > theirs.epoch {
            break;
        }
        let before = match i {
            0 => Position { lsn: start.saturating_sub(1).max(base), epoch: 0 },
            _ => Position { lsn: start - 1, epoch: runs[i - 1].1 },
        };
        best = before;
        let end = runs.get(i + 1).map_or(last, |&(next, _)| next.saturating_sub(1));
        if epoch == theirs.epoch && end.min(theirs.lsn) >= start {
            best = Position { lsn: end.min(theirs.lsn), epoch };
        }
    }
    best
}

/// A change this datacenter could not take (its merge was refused, or the merged state was
/// too large to store), as the conflict log keeps it: what was held stays, what arrived is
/// lost here.
fn kept_out(resolve: Resolve, before: &Siblings, arrived: &Siblings) -> super::conflict::Conflict {
    super::conflict::Conflict {
        resolve,
        held: before.values().to_vec(),
        arrived: arrived.values().to_vec(),
        kept: before.values().to_vec(),
        lost: arrived.values().to_vec(),
    }
}

/// The physical prefix of every applied-position key.
fn applied_prefix() -> Bytes {
    physical(CONFLICTS_NAMESPACE, &Bytes::from_static(b"applied/"))
}

/// Moves `local`'s outputs into `outbox`, single-leader messages wrapped as this family's.
fn wrap(local: Outbox, outbox: &mut Outbox) {
    let wrap_one = |output: Output| match output {
        Output::Send { to, message: PeerMessage::SingleLeader(message) } => {
            Output::Send { to, message: PeerMessage::MultiLeader(Message::Local(message)) }
        }
        other => other,
    };
    outbox.after_flush.extend(local.after_flush.into_iter().map(wrap_one));
    outbox.now.extend(local.now.into_iter().map(wrap_one));
}

/// Sends `message` to `to` at once (it depends on nothing unflushed: an acknowledgement is
/// sent only once durable, a shipment holds only committed records).
fn send(outbox: &mut Outbox, to: NodeId, message: Message) {
    outbox.now.push(Output::Send { to, message: PeerMessage::MultiLeader(message) });
}

impl<E: Engine> Family for MultiLeader<E> {
    type Message = Message;

    fn step(&mut self, now_ms: u64, input: Input<Message>, outbox: &mut Outbox) -> Result<()> {
        MultiLeader::step(self, now_ms, input, outbox)
    }

    fn write_out(&mut self, now_ms: u64, outbox: &mut Outbox) -> Result<WrittenOutAll> {
        MultiLeader::write_out(self, now_ms, outbox)
    }

    fn status(&self, now_ms: u64) -> ReplicationStatus {
        MultiLeader::status(self, now_ms)
    }
}

#[cfg(test)]
mod tests;
