//! The leaderless workload: clients that send each operation to a node drawn at random among
//! those up (any node coordinates), and record what they saw in the history.
//!
//! An idle client issues, at a random key among a few, a SET of a fresh number
//! ([`SET_PERCENT`]), a DEL ([`DEL_PERCENT`]) or a read: GET under `lww`, REPLIKV.SIBLINGS
//! under `siblings` (whose context token the client keeps; half its later SETs of that key
//! carry it as `CONTEXT`, resolving the siblings it read). In the quiet phase the clients
//! read each key once instead. A client gives up after [`CLIENT_TIMEOUT_MS`], or at once when
//! its node crashes (the connection resets): the operation is then indeterminate, as is a
//! write answered `NOQUORUM` ("it may still be there").
//!
//! In a session (`Config::sessions`), a client sends every request through its
//! [`KeySessions`], which wraps it with the floor its guarantee needs and keeps the context
//! each answer carries; the history records each acknowledged write's [`Receipt`] (its
//! context, and its dot: the entry of the node the client sent it to) and each operation's
//! node. A read refused for its floor (`-TRYAGAIN`) took no effect and is not recorded.

use super::history::{show_context, Op, Outcome, Receipt, Seen};
use super::session::KeySessions;
use super::world::{value_bytes, World};
use crate::history::{ClientId, Event};
use crate::net::Packet;
use bytes::Bytes;
use rand::Rng;
use replikv_core::causality::{Dot, VersionVector};
use replikv_core::kv::{Reply, Request};
use replikv_core::leaderless::Conflicts;
use replikv_core::node::RequestId;
use std::collections::BTreeMap;

/// Virtual milliseconds a client waits for a reply before the operation is indeterminate.
pub const CLIENT_TIMEOUT_MS: u64 = 2_000;

/// Percent of operations that are SETs.
pub const SET_PERCENT: u32 = 40;

/// Percent of operations that are DELs (the rest are reads).
pub const DEL_PERCENT: u32 = 10;

/// Virtual milliseconds a client waits before it tries again when every node is down.
const ALL_DOWN_WAIT_MS: u64 = 10;

/// One simulated client.
#[derive(Debug)]
pub(super) struct Client {
    /// Its id in the history.
    id: ClientId,
    /// Its operation in flight.
    pub(super) outstanding: Option<Outstanding>,
    /// When it may issue its next operation.
    next_at: u64,
    /// The node its operation in flight went to.
    node: usize,
    /// The context token of its last siblings read of each key.
    tokens: BTreeMap<String, Bytes>,
    /// Its session, if it runs in one.
    session: Option<KeySessions>,
}

/// A client's operation in flight.
#[derive(Debug)]
pub(super) struct Outstanding {
    /// Its request's id.
    pub(super) id: RequestId,
    /// What it asked.
    pub(super) op: Op,
    /// When it was sent.
    invoke_ms: u64,
    /// The context its `CONTEXT` token named (`SET ... CONTEXT`).
    token: Option<VersionVector>,
}

impl Client {
    /// Client number `id`, idle, in `session` if any.
    pub(super) fn new(id: usize, session: Option<KeySessions>) -> Client {
        Client { id: id as ClientId, outstanding: None, next_at: 0, node: 0, tokens: BTreeMap::new(), session }
    }

    /// True when it has nothing in flight.
    pub(super) fn is_idle(&self) -> bool {
        self.outstanding.is_none()
    }
}

impl World {
    /// Clients time out, or issue their next operation.
    pub(super) fn run_clients(&mut self) {
        for c in 0..self.clients.len() {
            match &self.clients[c].outstanding {
                Some(o) => {
                    let reset = self.ground.health[self.clients[c].node].down_until.is_some();
                    if reset {
                        self.give_up(c, "lost its connection");
                    } else if o.invoke_ms + CLIENT_TIMEOUT_MS <= self.ground.now {
                        self.give_up(c, "timed out");
                    }
                }
                None if self.clients[c].next_at <= self.ground.now => self.issue(c),
                None => {}
            }
        }
    }

    /// Client `c` sends its next operation to a node up, drawn at random.
    fn issue(&mut self, c: usize) {
        let key = if self.ground.quiet {
            let Some(key) = self.sweep.pop_front() else { return };
            key
        } else {
            format!("k{}", self.ground.rng.gen_range(0..self.config.keys))
        };
        let up: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.ground.health[i].down_until.is_none()).collect();
        if up.is_empty() {
            self.clients[c].next_at = self.ground.now + ALL_DOWN_WAIT_MS;
            if self.ground.quiet {
                self.sweep.push_front(key);
            }
            return;
        }
        let node = up[self.ground.rng.gen_range(0..up.len())];
        let op = if self.ground.quiet { Op::Read { key } } else { self.draw_op(c, key) };
        let request = self.request(c, &op);
        let token = match &request {
            Request::SetContext { key, context, .. } => replikv_core::causality::decode_context(key, context).ok(),
            _ => None,
        };
        let request = match &self.clients[c].session {
            Some(session) => session.wrap(op.key(), request),
            None => request,
        };
        self.next_request += 1;
        let id = self.next_request;
        self.requests.insert(id, c);
        if let Some(write) = op.write() {
            self.writes_sent.insert(id, (write, op.key().to_string()));
        }
        self.ground.counts.ops += 1;
        let client = &mut self.clients[c];
        client.outstanding = Some(Outstanding { id, op, invoke_ms: self.ground.now, token });
        client.node = node;
        self.ground.send(None, node, Packet::Request { id, request });
    }

    /// A SET, a DEL or a read of `key`, drawn for client `c`.
    fn draw_op(&mut self, c: usize, key: String) -> Op {
        let roll = self.ground.rng.gen_range(0..100);
        if roll >= SET_PERCENT + DEL_PERCENT {
            return Op::Read { key };
        }
        self.next_write += 1;
        let write = self.next_write;
        if roll >= SET_PERCENT {
            return Op::Del { key, write };
        }
        let has_token = self.config.conflicts == Conflicts::Siblings && self.clients[c].tokens.contains_key(&key);
        let context = has_token && self.ground.rng.gen_bool(0.5);
        Op::Set { key, write, context }
    }

    /// The request client `c` sends for `op`.
    fn request(&self, c: usize, op: &Op) -> Request {
        let key = Bytes::from(op.key().to_string());
        match op {
            Op::Set { write, context: true, .. } => {
                let token = self.clients[c].tokens[op.key()].clone();
                Request::SetContext { key, value: value_bytes(*write), context: token }
            }
            Op::Set { write, .. } => Request::Set {
                key,
                value: value_bytes(*write),
                condition: Default::default(),
                get: false,
                expiry: Default::default(),
            },
            Op::Del { .. } => Request::Del { keys: vec![key] },
            Op::Read { .. } if self.config.conflicts == Conflicts::Siblings => Request::Siblings { key },
            Op::Read { .. } => Request::Get { key },
        }
    }

    /// A reply reaches its client (1 ms later, which the client does not notice).
    pub(super) fn reply(&mut self, id: RequestId, reply: Reply) {
        let Some(c) = self.requests.remove(&id) else { return };
        let Some(outstanding) = self.clients[c].outstanding.take_if(|o| o.id == id) else {
            return; // it gave up already
        };
        let (reply, context) = match &mut self.clients[c].session {
            Some(session) => session.observe(outstanding.op.key(), reply, outstanding.op.write().is_some()),
            None => (reply, None),
        };
        let outcome = match self.outcome(c, &outstanding.op, &reply) {
            Some(Outcome::Written(None)) if self.clients[c].session.is_some() => {
                let write = outstanding.op.write().expect("only a write is Written");
                self.receipt(c, write, context.clone(), outstanding.token.clone()).map(|r| Outcome::Written(Some(r)))
            }
            outcome => outcome,
        };
        let in_session =
            context.map_or(String::new(), |context| format!(" in session, context {}", show_context(&context)));
        self.trace(format!(
            "client {c} {:?} at n{} -> {reply:?}{in_session}",
            outstanding.op,
            self.clients[c].node + 1
        ));
        match outcome {
            Some(outcome) => self.record(c, outstanding, outcome),
            None => self.ground.counts.refused += 1,
        }
        self.clients[c].next_at = self.ground.now + 1 + self.ground.rng.gen_range(0..5);
    }

    /// What `reply` to client `c`'s `op` means; `None`: it took no effect (a refusal, a read
    /// that heard from too few replicas).
    fn outcome(&mut self, c: usize, op: &Op, reply: &Reply) -> Option<Outcome> {
        match (op, reply) {
            (Op::Set { .. }, Reply::Ok) | (Op::Del { .. }, Reply::Int(_)) => Some(Outcome::Written(None)),
            (Op::Set { .. } | Op::Del { .. }, Reply::Error(e)) if e.starts_with("NOQUORUM") => {
                Some(Outcome::Indeterminate)
            }
            (Op::Read { key }, _) => self.seen(c, key, reply).map(Outcome::Read),
            (_, Reply::Error(_)) => None,
            (op, reply) => {
                self.ground.broken.get_or_insert(format!("{op:?} was answered {reply:?}"));
                None
            }
        }
    }

    /// What a read of `key` by client `c` returned, or `None` for an error (it keeps the
    /// context token of a siblings read).
    fn seen(&mut self, c: usize, key: &str, reply: &Reply) -> Option<Seen> {
        match reply {
            Reply::Nil => Some(Seen::default()),
            Reply::Bulk(value) => Some(Seen { values: vec![self.write_number(value)?], context: None }),
            Reply::Array(parts) => {
                let [Reply::Bulk(token), Reply::Array(values)] = parts.as_slice() else {
                    self.ground.broken.get_or_insert(format!("a siblings read of {key} was answered {parts:?}"));
                    return None;
                };
                let context = match replikv_core::causality::decode_context(key.as_bytes(), token) {
                    Ok(context) => context,
                    Err(e) => {
                        self.ground.broken.get_or_insert(format!("a siblings read of {key} returned a bad token: {e}"));
                        return None;
                    }
                };
                self.clients[c].tokens.insert(key.to_string(), token.clone());
                let mut numbers = Vec::new();
                for value in values {
                    match value {
                        Reply::Bulk(value) => numbers.push(self.write_number(value)?),
                        // A delete among the siblings: the read lists live values only.
                        Reply::Nil => {}
                        other => {
                            self.ground.broken.get_or_insert(format!("a siblings read of {key} listed {other:?}"));
                            return None;
                        }
                    }
                }
                Some(Seen { values: numbers, context: Some(context) })
            }
            Reply::Error(_) => None,
            other => {
                self.ground.broken.get_or_insert(format!("a read of {key} was answered {other:?}"));
                None
            }
        }
    }

    /// What client `c` learned of its write `write` acknowledged in session with `context`
    /// (the answer's), having sent `token`; `None` breaks the run: a session write
    /// acknowledged without its context, or whose context lacks its coordinator's entry. The
    /// dot the client infers must be the one the oracle saw stamped (the simulator checks its
    /// own reasoning, [`Receipt`]).
    fn receipt(
        &mut self,
        c: usize,
        write: u64,
        context: Option<VersionVector>,
        token: Option<VersionVector>,
    ) -> Option<Receipt> {
        let node = self.clients[c].node;
        let Some(context) = context else {
            self.ground
                .broken
                .get_or_insert(format!("client {c}'s write in session was acknowledged without a context"));
            return None;
        };
        let coordinator = self.id(node);
        let counter = context.get(coordinator);
        if counter == 0 {
            self.ground.broken.get_or_insert(format!(
                "client {c}'s write through n{} answered context {context:?}, without an entry of its coordinator",
                node + 1
            ));
            return None;
        }
        let dot = Dot { node: coordinator, counter };
        if let Some(stamp) = self.stamps.get(&write).filter(|stamp| stamp.dot != dot) {
            let stamped = stamp.dot;
            self.ground.broken.get_or_insert(format!(
                "write #{write}'s answer says dot {}:{counter}, but it was stamped {}:{}",
                dot.node, stamped.node, stamped.counter
            ));
            return None;
        }
        Some(Receipt { dot, context, token })
    }

    /// The write number a value read names; a value no client wrote breaks the run.
    fn write_number(&mut self, value: &Bytes) -> Option<u64> {
        let number = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
        if number.is_none() {
            self.ground.broken.get_or_insert(format!("a read returned {value:?}, which no client wrote"));
        }
        number
    }

    /// Client `c`'s operation ends indeterminate (`why`).
    fn give_up(&mut self, c: usize, why: &str) {
        let Some(outstanding) = self.clients[c].outstanding.take() else { return };
        self.requests.remove(&outstanding.id);
        self.trace(format!("client {c} {:?} {why}", outstanding.op));
        self.record(c, outstanding, Outcome::Indeterminate);
        self.clients[c].next_at = self.ground.now + 1 + self.ground.rng.gen_range(0..20);
    }

    /// Records client `c`'s operation, ended with `outcome`, in the history.
    fn record(&mut self, c: usize, outstanding: Outstanding, outcome: Outcome) {
        let determinate = outcome != Outcome::Indeterminate;
        if determinate {
            self.ground.counts.ok += 1;
        } else {
            self.ground.counts.indeterminate += 1;
        }
        self.history.events.push(Event {
            client: self.clients[c].id,
            node: Some(self.clients[c].node),
            op: outstanding.op,
            invoke_ms: outstanding.invoke_ms,
            complete_ms: determinate.then_some(self.ground.now + 1),
            outcome,
        });
    }
}
