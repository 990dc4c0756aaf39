//! Both sides of the leaderless protocol: the coordinator's operations in flight (their
//! quorums, timeouts and read repairs), and the replica's answers to `Write` and `Read`.
//!
//! An operation lives from the client's request until its quorum answered and, for a read,
//! until every replica answered or the timeout passed (the read repairs go out then). Its
//! id is drawn from the node's seed and counted up, so a late answer from before a restart
//! does not land on a new operation. The coordinator counts an answer only from a replica of
//! the key it asked, and each replica once; its own copy counts once the runtime says the
//! state it saved is durable ([`super::Input::Durable`]).
//!
//! Every message that carries a state (a write, a read repair, a read's reply) leaves only
//! once the sender's saves are durable ([`crate::node::Outbox::after_flush`]). A state can
//! hold a write this node just stamped; sent sooner, that write could live on at the others
//! while this node crashed before its fsync, came back without it and handed the same dot to
//! its next write of the key: the two would clash and one of them, perhaps acknowledged, be
//! lost (found by the simulator).

use super::session::{self, Ask, Waiting};
use super::{
    Canary, Client, Leaderless, Message, ReadRepair, Taken, CLOCK_AHEAD_MAX_MS, FORWARD_SLACK_MS, OPS_IN_FLIGHT_MAX,
};
use crate::causality::{decode_context, siblings_error, siblings_reply, Siblings};
use crate::error::Result;
use crate::kv::{Reply, Request};
use crate::node::{Outbox, Output};
use crate::storage::Engine;
use crate::version::NodeId;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

/// What a coordinator has in flight.
#[derive(Debug, Default)]
pub(super) struct Ops {
    /// The next operation's id.
    next: u64,
    /// Operations by id.
    ops: BTreeMap<u64, Op>,
    /// (deadline, id) of every operation, to time them out in order.
    deadlines: BTreeSet<(u64, u64)>,
    /// Local saves an operation waits to see durable: the save's number -> the operation.
    saves: BTreeMap<u64, u64>,
    /// Writes this node forwarded to a replica of their key: its number -> (the client's
    /// request, deadline).
    forwarding: BTreeMap<u64, (crate::node::RequestId, u64)>,
    /// The next number for a forwarded write.
    next_forward: u64,
    /// Session reads held for their floor, as the last tick counted them.
    held_reads: usize,
    /// Writes answered whose last replicas have not acknowledged yet: id -> (deadline, the
    /// replicas still to acknowledge). Only watched (`replikv check` waits for them), so at
    /// most [`UNCONFIRMED_MAX`], the oldest forgotten first.
    unconfirmed: BTreeMap<u64, (u64, Vec<NodeId>)>,
}

/// Answered writes whose last acknowledgements a coordinator watches for at most.
pub const UNCONFIRMED_MAX: usize = 100_000;

impl Ops {
    /// No operation yet; ids start at a point drawn from `seed`.
    pub(super) fn new(seed: u64) -> Ops {
        let start = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 1;
        Ops { next: start, next_forward: start, ..Ops::default() }
    }

    /// Operations in flight.
    pub(super) fn len(&self) -> usize {
        self.ops.len() + self.forwarding.len()
    }

    /// Operations in flight, and answered writes not yet on every replica.
    pub(super) fn unsettled(&self) -> usize {
        self.len() + self.unconfirmed.len()
    }

    fn insert(&mut self, op: Op) -> u64 {
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        self.deadlines.insert((op.deadline_ms, id));
        self.ops.insert(id, op);
        id
    }

    fn remove(&mut self, id: u64) -> Option<Op> {
        let op = self.ops.remove(&id)?;
        self.deadlines.remove(&(op.deadline_ms, id));
        Some(op)
    }
}

/// One coordinated operation.
#[derive(Debug)]
struct Op {
    /// Who waits for the answer; `None` once answered.
    client: Option<Client>,
    /// The key.
    key: Bytes,
    /// Its replicas (the preference list).
    replicas: Vec<NodeId>,
    /// When it times out.
    deadline_ms: u64,
    /// A write or a read.
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Write(WriteOp),
    Read(ReadOp),
}

#[derive(Debug)]
struct WriteOp {
    /// Replicas that hold the state durably.
    acked: BTreeSet<NodeId>,
    /// Acknowledgements counted (one per replica, unless a canary says otherwise).
    acks: usize,
    /// Replicas it waits for.
    w: usize,
    /// What the client gets once `w` replicas hold it.
    reply: Reply,
    /// The state written (hinted handoff sends it to stand-ins).
    state: Siblings,
    /// When it started.
    started_ms: u64,
    /// Replicas hinted for.
    hinted: BTreeSet<NodeId>,
    /// Stand-ins that hold a hint of it (counted toward w under a sloppy quorum).
    stand_ins: BTreeSet<NodeId>,
    /// In a session: the answer carries the state's context ([`Reply::InKeySession`]).
    session: bool,
}

#[derive(Debug)]
pub(super) struct ReadOp {
    /// What the client asked.
    what: ReadWhat,
    /// Replicas it waits for (r), and, blocking, replicas its repair waits for (w).
    quorums: Quorums,
    /// Each replica's reply, in the order they came.
    pub(super) replies: Vec<(NodeId, Option<Siblings>)>,
    /// The state the client was answered with (or, blocking, will be).
    answer: Option<Siblings>,
    /// Blocking read repair: replicas known to hold `answer`.
    holders: BTreeSet<NodeId>,
    /// Replicas sent `answer` as a repair already.
    repaired: BTreeSet<NodeId>,
    /// In a session: its floor, and the rounds asked so far.
    pub(super) session: Option<Waiting>,
}

/// The replicas an operation waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Quorums {
    /// A write's.
    w: usize,
    /// A read's.
    r: usize,
}

/// A client's write: `value` (`None`: a delete) of `key`, with the causal `context` it gave,
/// in a session or not.
struct Write {
    key: Bytes,
    value: Option<Bytes>,
    context: Option<Bytes>,
    session: Option<Ask>,
}

/// A client's read of `key`: what it answers, with which quorums, in a session or not.
struct Read {
    key: Bytes,
    what: ReadWhat,
    quorums: Quorums,
    ask: Option<Ask>,
}

/// What a read answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadWhat {
    Get,
    Exists,
    Siblings,
}

impl<E: Engine> Leaderless<E> {
    /// A client's request.
    pub(super) fn request(
        &mut self,
        now_ms: u64,
        id: crate::node::RequestId,
        request: Request,
        outbox: &mut Outbox,
    ) -> Result<()> {
        let (ask, request) = session::peel(request);
        let (quorums, request) = match self.quorums(request) {
            Ok(unwrapped) => unwrapped,
            Err(reply) => {
                outbox.after_flush.push(Output::Reply { id, reply });
                return Ok(());
            }
        };
        if let Some(reply) = self.local_reply(&request)? {
            outbox.after_flush.push(Output::Reply { id, reply });
            return Ok(());
        }
        self.coordinate(now_ms, Client::Local(id), request, quorums, ask, outbox)
    }

    /// The (w, r) a request runs with (the connection's choice, or the cluster's) and the
    /// request itself; an error reply for a choice that does not fit n.
    fn quorums(&self, request: Request) -> std::result::Result<(Quorums, Request), Reply> {
        let nwr = self.settings.nwr;
        match request {
            Request::WithConsistency { consistency, request } => match consistency.resolve(nwr.n) {
                Ok((w, r)) => Ok((Quorums { w, r }, *request)),
                Err(why) => Err(Reply::err(format!("consistency {consistency}: {why}"))),
            },
            request => Ok((Quorums { w: nwr.w, r: nwr.r }, request)),
        }
    }

    /// Starts the operation `request` asks for (a request `local_reply` let through), in the
    /// session `ask` names, if any.
    fn coordinate(
        &mut self,
        now_ms: u64,
        client: Client,
        request: Request,
        mut quorums: Quorums,
        ask: Option<Ask>,
        outbox: &mut Outbox,
    ) -> Result<()> {
        if self.ops.len() >= OPS_IN_FLIGHT_MAX {
            let reply = Reply::err(format!(
                "this node coordinates {OPS_IN_FLIGHT_MAX} requests already, its limit: try again later"
            ));
            answer(client, reply, outbox);
            return Ok(());
        }
        if let Some(reply) = ask.as_ref().and_then(|ask| session::check_floor(ask, now_ms, CLOCK_AHEAD_MAX_MS)) {
            answer(client, reply, outbox);
            return Ok(());
        }
        if ask.as_ref().is_some_and(|ask| ask.every_replica) {
            quorums.r = self.settings.nwr.n;
        }
        let read = |what: ReadWhat, key: Bytes| Read { key, what, quorums, ask: ask.clone() };
        match request {
            Request::Get { key } => self.start_read(now_ms, client, read(ReadWhat::Get, key), outbox),
            Request::Exists { mut keys } => {
                let key = keys.pop().expect("local_reply lets one key through");
                self.start_read(now_ms, client, read(ReadWhat::Exists, key), outbox)
            }
            Request::Siblings { key } => self.start_read(now_ms, client, read(ReadWhat::Siblings, key), outbox),
            Request::Set { key, value, .. } => {
                let write = Write { key, value: Some(value), context: None, session: ask };
                self.start_write(now_ms, client, write, quorums, outbox)
            }
            Request::SetContext { key, value, context } => {
                let write = Write { key, value: Some(value), context: Some(context), session: ask };
                self.start_write(now_ms, client, write, quorums, outbox)
            }
            Request::Del { mut keys } => {
                let key = keys.pop().expect("local_reply lets one key through");
                let write = Write { key, value: None, context: None, session: ask };
                self.start_write(now_ms, client, write, quorums, outbox)
            }
            other => unreachable!("local_reply answers {other:?}"),
        }
    }

    /// A client's write, acknowledged once `quorums.w` replicas hold it.
    fn start_write(
        &mut self,
        now_ms: u64,
        client: Client,
        write: Write,
        quorums: Quorums,
        outbox: &mut Outbox,
    ) -> Result<()> {
        let Write { key, value, context, session } = write;
        if let Some(reply) = check_key(&key) {
            answer(client, reply, outbox);
            return Ok(());
        }
        if let Some(len) = value.as_ref().map(Bytes::len).filter(|len| *len > super::VALUE_BYTES_MAX) {
            let reply = Reply::err(format!(
                "a value of {len} bytes is over the leaderless limit of {} bytes (a key's state travels whole between replicas)",
                super::VALUE_BYTES_MAX
            ));
            answer(client, reply, outbox);
            return Ok(());
        }
        let me = self.settings.common.node;
        let replicas = self.ring.preference_list(&key);
        if !replicas.contains(&me) {
            return self.forward(now_ms, client, Write { key, value, context, session }, quorums, replicas[0], outbox);
        }
        let state = self.load_or_purged(&key);
        if self.store.damaged().get(&crate::kv::physical(0, &key)).is_some() {
            // Its own dots of this key may be in the damaged record: writing now could hand
            // one out again. A read through any node repairs it first.
            let reply = Reply::Error(format!(
                "DAMAGED this node's record of the key is damaged on disk: read the key (the read repairs it), then write again; {}",
                "or write through another node"
            ));
            answer(client, reply, outbox);
            return Ok(());
        }
        let mut state = match state {
            Ok(state) => state.unwrap_or_default(),
            Err(crate::Error::InvalidInput(why)) => {
                answer(client, Reply::err(why), outbox);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let context = match (context, &session) {
            // In a session: the write replaces what the session wrote or saw of the key too,
            // even what this replica has not heard of yet (so a later write of the session
            // never loses to an earlier one, whatever the clocks say).
            (None, Some(ask)) => match state.context().join(&ask.seen) {
                Ok(context) => context,
                Err(e) => {
                    answer(client, Reply::err(format!("the session's floor of this key: {e}")), outbox);
                    return Ok(());
                }
            },
            (None, None) => state.context().clone(),
            (Some(token), _) => match decode_context(&key, &token) {
                Ok(context) => context,
                Err(e) => {
                    answer(client, Reply::err(format!("invalid CONTEXT: {e}")), outbox);
                    return Ok(());
                }
            },
        };
        let existed = state.winner().is_some_and(|s| !s.is_tombstone());
        if let Some(time) = session.as_ref().and_then(|ask| session::floor_time(&ask.seen)) {
            // The write replaces what the floor names: its version must be above theirs too,
            // or `lww` would rank a replaced write above the one that replaced it.
            self.clock.observe(time);
        }
        let version = self.stamp(now_ms, &state);
        // Dots come from the clock: a tombstone purged here took the key's context with it (and
        // an older state may have come back since), while a replica that has not purged yet
        // still remembers the dots of before.
        let floor = crate::causality::dot_floor(version.ts);
        let outcome = match state.write_from(self.settings.dot_id, &context, version, value.clone(), floor) {
            Ok(outcome) => outcome,
            Err(crate::Error::InvalidInput(why)) => {
                answer(client, Reply::err(why), outbox);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        self.note_dropped(&key, outcome.dropped);
        let number = match self.save(&key, &state, None, false) {
            Ok(number) => number,
            Err(crate::Error::InvalidInput(why)) => {
                answer(client, Reply::err(why), outbox);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        self.counters.writes_coordinated += 1;
        let reply = if value.is_some() { Reply::Ok } else { Reply::Int(existed.into()) };
        let write = WriteOp {
            acked: BTreeSet::new(),
            acks: 0,
            w: quorums.w,
            reply,
            state: state.clone(),
            started_ms: now_ms,
            hinted: BTreeSet::new(),
            stand_ins: BTreeSet::new(),
            session: session.is_some(),
        };
        let deadline_ms = now_ms + self.settings.request_timeout_ms;
        let op = Op {
            client: Some(client),
            key: key.clone(),
            replicas: replicas.clone(),
            deadline_ms,
            kind: Kind::Write(write),
        };
        let id = self.ops.insert(op);
        self.ops.saves.insert(number, id);
        // Sent once this node's copy is durable, like every state it sends (see the module
        // documentation).
        for to in replicas.into_iter().filter(|r| *r != me) {
            // Only once the state is durable here: a dot that reached a peer must never be lost
            // by its coordinator in a crash, or it would hand the dot out again.
            let message = Message::Write { op: id, key: key.clone(), state: state.clone(), repair: false };
            outbox.after_flush.push(Output::Send { to, message: message.into() });
        }
        if self.settings.hinted_handoff {
            let suspected: Vec<NodeId> =
                replicas_of(&self.ops, id).into_iter().filter(|r| self.hints.suspected.contains_key(r)).collect();
            self.hint_for(now_ms, id, &suspected, outbox)?;
        }
        Ok(())
    }

    /// Hints write `id` for `replicas` (suspected down), once each.
    fn hint_for(&mut self, now_ms: u64, id: u64, replicas: &[NodeId], outbox: &mut Outbox) -> Result<()> {
        let Some(Op { key, kind: Kind::Write(write), .. }) = self.ops.ops.get_mut(&id) else { return Ok(()) };
        let fresh: Vec<NodeId> = replicas.iter().copied().filter(|r| write.hinted.insert(*r)).collect();
        let (key, state) = (key.clone(), write.state.clone());
        for owner in fresh {
            self.hint(now_ms, id, owner, &key, &state, outbox)?;
        }
        Ok(())
    }

    /// Sends a write this node may not coordinate (it is no replica of the key) to `to`,
    /// with the quorums it runs with.
    fn forward(
        &mut self,
        now_ms: u64,
        client: Client,
        write: Write,
        quorums: Quorums,
        to: NodeId,
        outbox: &mut Outbox,
    ) -> Result<()> {
        let Write { key, value, context, session } = write;
        let Client::Local(request_id) = client else {
            // Forwarded once already: the two nodes disagree on placement.
            let reply = Reply::err(format!(
                "node {} is no replica of this key either: do the nodes share one cluster file?",
                self.settings.common.node
            ));
            answer(client, reply, outbox);
            return Ok(());
        };
        let request = match (value, context) {
            (Some(value), Some(context)) => Request::SetContext { key, value, context },
            (Some(value), None) => Request::Set {
                key,
                value,
                condition: crate::kv::SetCondition::Always,
                get: false,
                expiry: crate::kv::Expiry::Clear,
            },
            (None, _) => Request::Del { keys: vec![key] },
        };
        let consistency = crate::kv::Consistency::Nwr { w: quorums.w, r: quorums.r };
        let mut request = Request::WithConsistency { consistency, request: Box::new(request) };
        if let Some(Ask { wait_ms, seen, .. }) = session {
            // The replica writes and answers in the session: the write replaces what the
            // session saw, and the front end keeps its context.
            request = Request::KeySession { seen, wait_ms, every_replica: false, request: Box::new(request) };
        }
        let id = self.ops.next_forward;
        self.ops.next_forward = id.wrapping_add(1);
        let deadline = now_ms + self.settings.request_timeout_ms + FORWARD_SLACK_MS;
        self.ops.forwarding.insert(id, (request_id, deadline));
        self.counters.forwarded += 1;
        outbox.now.push(Output::Send { to, message: Message::Forward { id, request }.into() });
        Ok(())
    }

    /// A read of `key`: ask every replica, answer after `r` (in a session, once the replies
    /// cover its floor).
    fn start_read(&mut self, now_ms: u64, client: Client, read: Read, outbox: &mut Outbox) -> Result<()> {
        let Read { key, what, quorums, ask } = read;
        if let Some(reply) = check_key(&key) {
            answer(client, reply, outbox);
            return Ok(());
        }
        let me = self.settings.common.node;
        let replicas = self.ring.preference_list(&key);
        let mut replies = Vec::new();
        if replicas.contains(&me) {
            match self.load_or_purged(&key) {
                Ok(state) => replies.push((me, state)),
                Err(crate::Error::InvalidInput(why)) => {
                    answer(client, Reply::err(why), outbox);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        self.counters.reads_coordinated += 1;
        let session = ask.as_ref().map(|ask| Waiting::new(ask, now_ms));
        let wait_ms = ask.map_or(0, |ask| ask.wait_ms);
        let read = ReadOp {
            what,
            quorums,
            replies,
            answer: None,
            holders: BTreeSet::new(),
            repaired: BTreeSet::new(),
            session,
        };
        let deadline_ms = now_ms + self.settings.request_timeout_ms.max(wait_ms);
        let op = Op {
            client: Some(client),
            key: key.clone(),
            replicas: replicas.clone(),
            deadline_ms,
            kind: Kind::Read(read),
        };
        let id = self.ops.insert(op);
        for to in replicas.into_iter().filter(|r| *r != me) {
            outbox.now.push(Output::Send { to, message: Message::Read { op: id, key: key.clone() }.into() });
        }
        self.progress(now_ms, id, outbox)
    }

    /// A peer's message.
    pub(super) fn message(&mut self, now_ms: u64, from: NodeId, message: Message, outbox: &mut Outbox) -> Result<()> {
        match message {
            Message::Write { op, key, state, repair } => {
                let taken = if repair { Taken::Repair } else { Taken::Write(from) };
                if self.take_state(now_ms, &key, &state, taken)?.is_some() {
                    outbox.after_flush.push(Output::Send { to: from, message: Message::WriteAck { op }.into() });
                }
                Ok(())
            }
            Message::WriteAck { op } => {
                if let Some((_, missing)) = self.ops.unconfirmed.get_mut(&op) {
                    missing.retain(|r| *r != from);
                    if missing.is_empty() {
                        self.ops.unconfirmed.remove(&op);
                    }
                }
                self.acknowledged(op, from);
                self.progress(now_ms, op, outbox)
            }
            Message::Read { op, key } => {
                let state = match self.load_or_purged(&key) {
                    Ok(state) => state,
                    Err(crate::Error::InvalidInput(why)) => {
                        tracing::warn!("a read of {from} finds no state here: {why}");
                        None
                    }
                    Err(e) => return Err(e),
                };
                // After this batch's fsync, like every state this node sends (see the module
                // documentation): the state may hold a write this node just stamped.
                outbox.after_flush.push(Output::Send { to: from, message: Message::ReadReply { op, state }.into() });
                Ok(())
            }
            Message::ReadReply { op, state } => {
                if let Some(Op { replicas, kind: Kind::Read(read), .. }) = self.ops.ops.get_mut(&op) {
                    if replicas.contains(&from) && !read.replies.iter().any(|(n, _)| *n == from) {
                        read.replies.push((from, state));
                    }
                }
                self.progress(now_ms, op, outbox)
            }
            Message::Forward { id, request } => {
                let client = Client::Forwarded(from, id);
                let (ask, request) = session::peel(request);
                let (quorums, request) = match self.quorums(request) {
                    Ok(unwrapped) => unwrapped,
                    Err(reply) => {
                        answer(client, reply, outbox);
                        return Ok(());
                    }
                };
                match &request {
                    Request::Set { .. } | Request::SetContext { .. } | Request::Del { .. } => {
                        match self.local_reply(&request)? {
                            Some(reply) => answer(client, reply, outbox),
                            None => self.coordinate(now_ms, client, request, quorums, ask, outbox)?,
                        }
                    }
                    other => {
                        let reply = Reply::err(format!("a forwarded request must be a write, not {other:?}"));
                        answer(client, reply, outbox);
                    }
                }
                Ok(())
            }
            Message::AntiEntropy(exchange) => self.exchange(now_ms, from, exchange, outbox),
            Message::Hint { op, owner, key, state } => self.take_hint(now_ms, from, (op, owner), &key, &state, outbox),
            Message::HintAck { op } => {
                let sloppy = self.settings.sloppy_quorum;
                if let Some(Op { kind: Kind::Write(write), replicas, .. }) = self.ops.ops.get_mut(&op) {
                    if !replicas.contains(&from) && write.stand_ins.insert(from) && sloppy {
                        write.acks += 1;
                    }
                }
                self.progress(now_ms, op, outbox)
            }
            Message::Handoff { id, key, state } => self.take_handoff(now_ms, from, id, &key, &state, outbox),
            Message::HandoffAck { id } => self.handed_off(from, id),
            Message::ForwardReply { id, reply } => {
                if let Some((request_id, _)) = self.ops.forwarding.remove(&id) {
                    outbox.after_flush.push(Output::Reply { id: request_id, reply });
                }
                Ok(())
            }
        }
    }

    /// A replica's side of `Write` (and of anti-entropy): merge `state` into this node's;
    /// `None` when it could not (the sender is told nothing, and its operation times out),
    /// else whether this node's state changed.
    pub(super) fn take_state(
        &mut self,
        now_ms: u64,
        key: &Bytes,
        state: &Siblings,
        taken: Taken,
    ) -> Result<Option<bool>> {
        let repair = taken == Taken::Repair;
        if let Some(newest) = state.newest_version().filter(|v| v.ts.millis > now_ms.saturating_add(CLOCK_AHEAD_MAX_MS))
        {
            self.counters.refused_states += 1;
            tracing::warn!(
                "a state of key {:?} is stamped {} ms ahead of this node's clock, past the bound of {CLOCK_AHEAD_MAX_MS} ms: refused (is a node's clock wrong?)",
                String::from_utf8_lossy(key),
                newest.ts.millis - now_ms
            );
            return Ok(None);
        }
        // Over what the store holds, or the tombstone this node purged and remembers; a
        // damaged record is rewritten whatever the merge gives.
        let loaded = self.load(key);
        let damaged = self.damaged(key);
        let (mut local, from_remembered) = match loaded {
            Ok(Some(local)) => (local, false),
            Ok(None) => match self.tombstones.remembered(key) {
                Some(remembered) => (remembered.clone(), true),
                None => (Siblings::new(), false),
            },
            Err(crate::Error::InvalidInput(why)) => {
                tracing::warn!("a write is refused here: {why}");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let changed = if self.settings.canary == Canary::OlderOverwrites {
            let changed = local != *state;
            local = state.clone();
            changed
        } else {
            match local.merge(state) {
                Ok(outcome) => {
                    self.note_dropped(key, outcome.dropped);
                    if outcome.clashes > 0 {
                        tracing::error!(
                            "key {:?}: {} values share a dot with different contents: a node handed out one dot twice (did a node lose its data and keep its id?)",
                            String::from_utf8_lossy(key),
                            outcome.clashes
                        );
                    }
                    outcome.changed
                }
                Err(e) => {
                    tracing::warn!("a state of key {:?} cannot be merged here: {e}", String::from_utf8_lossy(key));
                    return Ok(None);
                }
            }
        };
        // The peer that sent exactly the state this node now has holds it too (tombstone
        // collection's knowledge).
        let sender = match taken {
            Taken::Write(peer) | Taken::AntiEntropy(peer) if local == *state => Some(peer),
            _ => None,
        };
        if !changed {
            if let Some(peer) = sender {
                self.tombstones.held_by(key, peer);
            }
            // A peer holding a state this node's purged tombstone covers (an old write it took
            // after forgetting the tombstone, in a restart) gets the tombstone back: it would
            // otherwise keep the old value, and hand it on once every node forgot.
            if let (true, Taken::Write(peer) | Taken::AntiEntropy(peer)) = (from_remembered, taken) {
                if local != *state {
                    self.tombstones.send_back(peer, key);
                }
            }
        }
        let changed = changed || damaged;
        if changed {
            if let Err(e) = self.save(key, &local, sender, repair) {
                return match e {
                    crate::Error::InvalidInput(why) => {
                        tracing::warn!(
                            "a state of key {:?} cannot be stored here: {why}",
                            String::from_utf8_lossy(key)
                        );
                        Ok(None)
                    }
                    e => Err(e),
                };
            }
            if repair {
                self.counters.read_repairs_received += 1;
            }
        }
        Ok(Some(changed))
    }

    /// Counts `from`'s acknowledgement of operation `op`.
    fn acknowledged(&mut self, op: u64, from: NodeId) {
        let canary = self.settings.canary;
        let Some(Op { replicas, kind, .. }) = self.ops.ops.get_mut(&op) else { return };
        if !replicas.contains(&from) {
            return;
        }
        match kind {
            Kind::Write(write) => {
                if write.acked.insert(from) {
                    write.acks += if canary == Canary::CountAckTwice { 2 } else { 1 };
                }
            }
            Kind::Read(read) => {
                read.holders.insert(from);
            }
        }
    }

    /// The runtime says this node's saves are durable through `self.durable`.
    pub(super) fn durable_now(&mut self, now_ms: u64, outbox: &mut Outbox) -> Result<()> {
        let later = self.ops.saves.split_off(&(self.durable + 1));
        let done = std::mem::replace(&mut self.ops.saves, later);
        let me = self.settings.common.node;
        for op in done.into_values() {
            self.acknowledged(op, me);
            self.progress(now_ms, op, outbox)?;
        }
        Ok(())
    }

    /// Time passed: operations past their deadline fail (or, answered reads, repair).
    pub(super) fn tick(&mut self, now_ms: u64, outbox: &mut Outbox) -> Result<()> {
        if self.settings.hinted_handoff {
            let after = super::hints::HINT_AFTER_MS.min(self.settings.request_timeout_ms / 2);
            let me = self.settings.common.node;
            let waiting: Vec<(u64, Vec<NodeId>)> = self
                .ops
                .ops
                .iter()
                .filter_map(|(id, op)| match &op.kind {
                    Kind::Write(w) if now_ms >= w.started_ms + after => {
                        let missing: Vec<NodeId> = op
                            .replicas
                            .iter()
                            .copied()
                            .filter(|r| *r != me && !w.acked.contains(r) && !w.hinted.contains(r))
                            .collect();
                        (!missing.is_empty()).then_some((*id, missing))
                    }
                    _ => None,
                })
                .collect();
            for (id, missing) in waiting {
                for r in &missing {
                    self.hints.suspected.entry(*r).or_insert(now_ms);
                }
                self.hint_for(now_ms, id, &missing, outbox)?;
                // Hinted for every missing replica: an answered write need not wait any more.
                self.progress(now_ms, id, outbox)?;
            }
        }
        self.sessions_held(now_ms, outbox)?;
        while let Some(&(deadline, id)) = self.ops.deadlines.first() {
            if deadline > now_ms {
                break;
            }
            self.ops.deadlines.pop_first();
            let Some(op) = self.ops.ops.remove(&id) else { continue };
            self.timed_out(now_ms, id, op, outbox)?;
        }
        self.ops.unconfirmed.retain(|_, (deadline, _)| *deadline > now_ms);
        let expired: Vec<u64> =
            self.ops.forwarding.iter().filter(|(_, (_, deadline))| *deadline <= now_ms).map(|(id, _)| *id).collect();
        for id in expired {
            let (request_id, _) = self.ops.forwarding.remove(&id).expect("listed above");
            let reply = Reply::Error(format!(
                "NOQUORUM the replica this write was forwarded to did not answer within {} ms: it may or may not have been applied",
                self.settings.request_timeout_ms + FORWARD_SLACK_MS
            ));
            outbox.after_flush.push(Output::Reply { id: request_id, reply });
        }
        Ok(())
    }

    /// Session reads held for their floor (counted, for [`session::SESSION_READS_HELD_MAX`]):
    /// past the session's wait, refused naming the gap; else every replica is asked again
    /// when the read's next round is due ([`session::SESSION_REASK_MS`] after it started, each
    /// round twice as late), the round's replies merged into what earlier rounds said.
    fn sessions_held(&mut self, now_ms: u64, outbox: &mut Outbox) -> Result<()> {
        let me = self.settings.common.node;
        let held: Vec<(u64, bool, bool)> = self
            .ops
            .ops
            .iter()
            .filter_map(|(id, op)| match &op.kind {
                Kind::Read(ReadOp { session: Some(waiting), answer: None, .. })
                    if op.client.is_some() && waiting.held =>
                {
                    // Held: r replicas answered once, without the floor.
                    let expired = now_ms >= waiting.until_ms;
                    // A replica that has not answered may be down: the others are asked again
                    // too (anti-entropy or a hint may have brought them the floor since).
                    let due = waiting.due(now_ms);
                    Some((*id, expired, due))
                }
                _ => None,
            })
            .collect();
        self.ops.held_reads = held.iter().filter(|(_, expired, _)| !expired).count();
        for (id, expired, _) in held.into_iter().filter(|(_, expired, due)| *expired || *due) {
            let key = op_key(&self.ops, id);
            let local = if !expired && replicas_of(&self.ops, id).contains(&me) {
                match self.load_or_purged(&key) {
                    Ok(state) => Some(state),
                    Err(crate::Error::InvalidInput(_)) => Some(None),
                    Err(e) => return Err(e),
                }
            } else {
                None
            };
            let Some(op) = self.ops.ops.get_mut(&id) else { continue };
            let Kind::Read(read) = &mut op.kind else { continue };
            let waiting = read.session.as_mut().expect("selected above");
            if expired {
                let mut merged = merge_all(&read.replies).unwrap_or_default();
                let _ = merged.merge(&waiting.earlier);
                let answered = read.replies.iter().filter(|(node, _)| !waiting.answered.contains(node)).count();
                let reply = waiting.gap(&merged, waiting.answered.len() + answered, op.replicas.len(), now_ms);
                self.counters.failed_reads += 1;
                answer(op.client.take().expect("selected above"), reply, outbox);
                // Kept until every replica answered or its deadline: its repairs go out then.
                continue;
            }
            waiting.next_round(now_ms, std::mem::take(&mut read.replies));
            if let Some(state) = local {
                read.replies.push((me, state));
            }
            for to in op.replicas.iter().copied().filter(|r| *r != me) {
                outbox.now.push(Output::Send { to, message: Message::Read { op: id, key: key.clone() }.into() });
            }
            self.progress(now_ms, id, outbox)?;
        }
        Ok(())
    }

    /// Operation `id` reached its deadline.
    fn timed_out(&mut self, now_ms: u64, id: u64, mut op: Op, outbox: &mut Outbox) -> Result<()> {
        let (n, timeout) = (op.replicas.len(), self.settings.request_timeout_ms);
        match &op.kind {
            Kind::Write(write) => {
                let w = write.w;
                if let Some(client) = op.client.take() {
                    self.counters.partial_writes += 1;
                    let reply = Reply::Error(format!(
                        "NOQUORUM the write reached {} of {n} replicas (w = {w} needed) within {timeout} ms; it may still be there, and reach the others later: read it back before you write again",
                        write.acked.len()
                    ));
                    answer(client, reply, outbox);
                }
            }
            Kind::Read(read) => {
                let Quorums { w, r } = read.quorums;
                if let Some(client) = op.client.take() {
                    self.counters.failed_reads += 1;
                    let held = read.session.as_ref().filter(|_| read.answer.is_none() && read.replies.len() >= r);
                    let reply = if let Some(waiting) = held {
                        let mut merged = merge_all(&read.replies).unwrap_or_default();
                        let _ = merged.merge(&waiting.earlier);
                        waiting.gap(&merged, read.replies.len(), n, now_ms)
                    } else if read.answer.is_some() {
                        Reply::Error(format!(
                            "NOQUORUM the read's repair reached {} of {n} replicas (w = {w} needed) within {timeout} ms",
                            read.holders.len()
                        ))
                    } else {
                        let (waited, why) = match &read.session {
                            Some(w) => (
                                now_ms.saturating_sub(w.started_ms),
                                if w.every_replica {
                                    " (r = n: the session forgot what it saw of this key, so every replica must answer)"
                                } else {
                                    ""
                                },
                            ),
                            None => (timeout, ""),
                        };
                        Reply::Error(format!(
                            "NOQUORUM the read heard from {} of {n} replicas (r = {r} needed{why}) within {waited} ms",
                            read.replies.len()
                        ))
                    };
                    answer(client, reply, outbox);
                }
                self.repair(now_ms, id, &op, outbox)?;
            }
        }
        // Forget saves it waited for (their number stays in `saves` otherwise).
        self.ops.saves.retain(|_, op| *op != id);
        Ok(())
    }

    /// Moves operation `id` on after an answer: replies to its client when its quorum is
    /// there, and ends it when nothing more can come.
    fn progress(&mut self, now_ms: u64, id: u64, outbox: &mut Outbox) -> Result<()> {
        let blocking = self.settings.read_repair == ReadRepair::Blocking;
        let conflicts = self.settings.conflicts;
        let hinted_handoff = self.settings.hinted_handoff;
        let floor_ignored = self.settings.canary == Canary::SessionFloorIgnored;
        let me = self.settings.common.node;
        let held_full = self.ops.held_reads >= session::SESSION_READS_HELD_MAX;
        let Some(op) = self.ops.ops.get_mut(&id) else { return Ok(()) };
        match &mut op.kind {
            Kind::Write(write) => {
                if write.acks >= write.w {
                    if let Some(client) = op.client.take() {
                        let reply = if write.session {
                            let holders = write.acked.iter().chain(&write.stand_ins).copied().collect();
                            session::write_answer(&write.state, holders, write.reply.clone())
                        } else {
                            write.reply.clone()
                        };
                        answer(client, reply, outbox);
                    }
                    // Nothing waits for the other acknowledgements: they are only watched.
                    let missing: Vec<NodeId> =
                        op.replicas.iter().copied().filter(|r| !write.acked.contains(r)).collect();
                    if hinted_handoff && missing.iter().any(|r| !write.hinted.contains(r)) {
                        // Kept until its deadline: a replica that does not acknowledge in
                        // time gets a hint (see `tick`).
                        return Ok(());
                    }
                    let deadline = op.deadline_ms;
                    self.ops.remove(id);
                    self.ops.saves.retain(|_, op| *op != id);
                    if !missing.is_empty() {
                        if self.ops.unconfirmed.len() >= UNCONFIRMED_MAX {
                            self.ops.unconfirmed.pop_first();
                        }
                        self.ops.unconfirmed.insert(id, (deadline, missing));
                    }
                }
                Ok(())
            }
            Kind::Read(read) => {
                let Quorums { w, r } = read.quorums;
                // Two reads in a row see each other's answers only if the answer is on enough
                // replicas for the cluster's reads too.
                let w = w.max(self.settings.nwr.w);
                if read.answer.is_none() && read.replies.len() >= r {
                    let merged = match merge_all(&read.replies).and_then(|mut merged| {
                        if let Some(waiting) = &read.session {
                            merged.merge(&waiting.earlier)?;
                        }
                        Ok(merged)
                    }) {
                        Ok(merged) => merged,
                        Err(e) => {
                            // Only a peer's state past a named limit gets here: fail the read.
                            let op = self.ops.remove(id).expect("still there");
                            if let Some(client) = op.client {
                                answer(
                                    client,
                                    Reply::err(format!("the replicas' states cannot be merged: {e}")),
                                    outbox,
                                );
                            }
                            return Ok(());
                        }
                    };
                    if let Some(waiting) = &mut read.session {
                        let grace = self.settings.tombstone_grace_ms;
                        let covered = waiting.covered(&merged, &read.replies, op.replicas.len(), now_ms, grace);
                        if !covered && !floor_ignored {
                            if !waiting.held && held_full {
                                if let Some(client) = op.client.take() {
                                    self.counters.failed_reads += 1;
                                    answer(client, waiting.too_many(), outbox);
                                }
                            } else if !waiting.held && op.client.is_some() {
                                // Held for the session's floor: the other replies, or a round
                                // asked again (see `tick`), may cover it.
                                waiting.held = true;
                                self.ops.held_reads += 1;
                            }
                            return Ok(());
                        }
                    }
                    read.answer = Some(merged);
                }
                let Some(merged) = read.answer.clone() else { return Ok(()) };
                // A replica that holds nothing of a key whose tombstone is past its grace
                // holds the answer as well as it needs to (see `repair`).
                let aged = super::tombstones::aged(&merged, now_ms, self.settings.tombstone_grace_ms);
                for (node, state) in &read.replies {
                    if holds(state, &merged) || (aged && state.is_none()) {
                        read.holders.insert(*node);
                    }
                }
                let mut local_repair = None;
                if blocking && op.client.is_some() && read.holders.len() < w {
                    // Send the answer to every replica not known to hold it, once.
                    for node in op.replicas.iter().copied() {
                        if read.holders.contains(&node) || !read.repaired.insert(node) {
                            continue;
                        }
                        if node == me {
                            local_repair = Some(merged.clone());
                        } else {
                            // After this batch's fsync: the state may hold a dot of this node
                            // that is not durable here yet.
                            let message =
                                Message::Write { op: id, key: op.key.clone(), state: merged.clone(), repair: true };
                            outbox.after_flush.push(Output::Send { to: node, message: message.into() });
                            self.counters.read_repairs_sent += 1;
                        }
                    }
                }
                if (!blocking || read.holders.len() >= w) && op.client.is_some() {
                    let client = op.client.take().expect("checked above");
                    let (reply, siblings) = read_reply(read.what, &op.key, &merged, conflicts);
                    self.counters.sibling_reads += u64::from(siblings);
                    answer(client, session::read_answer(read, &merged, reply, now_ms, aged), outbox);
                }
                let all = read.replies.len() == op.replicas.len();
                if let Some(state) = local_repair {
                    let before = self.stored;
                    if self.take_state(now_ms, &op_key(&self.ops, id), &state, Taken::Repair)?.is_some() {
                        if self.stored > before {
                            self.ops.saves.insert(self.stored, id);
                        } else {
                            // Nothing to store: this node holds the answer already.
                            self.acknowledged(id, me);
                            return self.progress(now_ms, id, outbox);
                        }
                    }
                }
                let op = self.ops.ops.get(&id).expect("still there");
                if all && op.client.is_none() {
                    let op = self.ops.remove(id).expect("still there");
                    self.repair(now_ms, id, &op, outbox)?;
                }
                Ok(())
            }
        }
    }

    /// The read repairs of a finished read: every replica whose reply is older than the
    /// merge of all replies is sent the merge (this node merges it into its own).
    fn repair(&mut self, now_ms: u64, id: u64, op: &Op, outbox: &mut Outbox) -> Result<()> {
        let Kind::Read(read) = &op.kind else { return Ok(()) };
        if read.replies.is_empty() {
            return Ok(());
        }
        let merged = match merge_all(&read.replies).and_then(|mut merged| {
            if let Some(waiting) = &read.session {
                merged.merge(&waiting.earlier)?;
            }
            Ok(merged)
        }) {
            Ok(merged) => merged,
            Err(e) => {
                tracing::warn!("no read repair of key {:?}: {e}", String::from_utf8_lossy(&op.key));
                return Ok(());
            }
        };
        let state = if self.settings.canary == Canary::RepairWithFirstReply {
            read.replies[0].1.clone().unwrap_or_default()
        } else {
            merged.clone()
        };
        let me = self.settings.common.node;
        // A replica that holds nothing of a key whose tombstone is past its grace has no old
        // value to cover: it purged and forgot the tombstone, and handing it back would only
        // start its purge again.
        let aged = super::tombstones::aged(&merged, now_ms, self.settings.tombstone_grace_ms);
        for (node, reply) in &read.replies {
            if holds(reply, &merged) || (read.repaired.contains(node) && read.answer.as_ref() == Some(&merged)) {
                continue;
            }
            if aged && reply.is_none() {
                continue;
            }
            if *node == me {
                self.take_state(now_ms, &op.key, &state, Taken::Repair)?;
            } else {
                let message = Message::Write { op: id, key: op.key.clone(), state: state.clone(), repair: true };
                outbox.after_flush.push(Output::Send { to: *node, message: message.into() });
                self.counters.read_repairs_sent += 1;
            }
        }
        Ok(())
    }

    /// Counts and logs siblings merged away past the bound.
    fn note_dropped(&mut self, key: &Bytes, dropped: usize) {
        if dropped > 0 {
            self.counters.siblings_dropped += dropped as u64;
            tracing::warn!(
                "key {:?} had more than {} concurrent values: the {dropped} oldest were merged away by last-write-wins",
                String::from_utf8_lossy(key),
                crate::causality::SIBLINGS_MAX
            );
        }
    }
}

/// The key of operation `id`.
fn replicas_of(ops: &Ops, id: u64) -> Vec<NodeId> {
    ops.ops.get(&id).map(|op| op.replicas.clone()).unwrap_or_default()
}

fn op_key(ops: &Ops, id: u64) -> Bytes {
    ops.ops.get(&id).map(|op| op.key.clone()).unwrap_or_default()
}

/// True when a replica that replied `reply` holds `state` (no state is the empty one).
pub(super) fn holds(reply: &Option<Siblings>, state: &Siblings) -> bool {
    match reply {
        Some(reply) => reply == state,
        None => state.is_empty() && state.context().is_empty(),
    }
}

/// The merge of every reply's state.
fn merge_all(replies: &[(NodeId, Option<Siblings>)]) -> Result<Siblings> {
    let mut merged = Siblings::new();
    for state in replies.iter().filter_map(|(_, s)| s.as_ref()) {
        merged.merge(state)?;
    }
    Ok(merged)
}

/// The client's answer to a read of `key` that found `state`, and whether it found
/// concurrent values. Under `siblings`, a delete concurrent with a write is a sibling too:
/// REPLIKV.SIBLINGS lists it as a nil.
fn read_reply(what: ReadWhat, key: &Bytes, state: &Siblings, conflicts: super::Conflicts) -> (Reply, bool) {
    let all = state.values();
    let live = all.iter().filter(|s| !s.is_tombstone()).count();
    let siblings = all.len() > 1 && live > 0;
    let keep_siblings = conflicts == super::Conflicts::Siblings;
    let reply = match what {
        ReadWhat::Exists if keep_siblings => Reply::Int(i64::from(live > 0)),
        ReadWhat::Exists => Reply::Int(i64::from(state.winner().is_some_and(|w| !w.is_tombstone()))),
        ReadWhat::Siblings => siblings_reply(key, state),
        ReadWhat::Get if siblings && keep_siblings && live > 0 => siblings_error(all.len(), all.len() - live),
        ReadWhat::Get => match state.winner() {
            Some(winner) => winner.value.clone().map_or(Reply::Nil, Reply::Bulk),
            None => Reply::Nil,
        },
    };
    (reply, siblings)
}

/// An error for a key no store can hold.
fn check_key(key: &Bytes) -> Option<Reply> {
    (key.len() > crate::kv::CLIENT_KEY_BYTES_MAX).then(|| {
        Reply::err(format!("key is {} bytes, over the limit of {}", key.len(), crate::kv::CLIENT_KEY_BYTES_MAX))
    })
}

/// Sends `reply` to `client`, once this batch is durable.
fn answer(client: Client, reply: Reply, outbox: &mut Outbox) {
    match client {
        Client::Local(id) => outbox.after_flush.push(Output::Reply { id, reply }),
        Client::Forwarded(to, id) => {
            outbox.after_flush.push(Output::Send { to, message: Message::ForwardReply { id, reply }.into() })
        }
    }
}
