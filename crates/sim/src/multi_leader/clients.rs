//! The multi-leader workload: clients each attached to one datacenter, sending every
//! operation to the node they take for its leader, and recording what they saw in the
//! history (the leaderless simulator's vocabulary: [`Op`], [`Outcome`], [`Seen`]).
//!
//! An idle client issues, at a random key among a few, a SET of a fresh number
//! ([`SET_PERCENT`]), a DEL ([`DEL_PERCENT`]) or a read: GET under `lww` and `merge` (a merged
//! value names every write it joins), REPLIKV.SIBLINGS under `app` (whose context token the
//! client keeps; half its later SETs of that key carry it as `CONTEXT`, resolving the
//! siblings it read). A follower refuses a write with `-READONLY` naming its leader: the
//! client goes there (the write took no effect and is not recorded). A client gives up
//! after [`CLIENT_TIMEOUT_MS`], or at once when its node crashes (the connection resets), and
//! tries another node of its datacenter: the operation is then indeterminate, as is a write
//! answered `NOREPLICAS` ("it may or may not be there"). In the quiet phase the clients stop.
//!
//! With `follower_reads`, every client keeps a session ([`crate::session`], its guarantee
//! drawn from the seed): it sends each read to a node of its datacenter drawn at random,
//! followers included, and every request as a `Request::Session` with the floor its guarantee
//! needs (writes still to the leader, so that their replies carry the record they made). Its
//! positions are of its datacenter's log and move only with replies that are not errors; a
//! `-TRYAGAIN` from a follower still behind the session took no effect and is not recorded
//! (it is counted). The history records each operation's node.

use super::world::World;
use crate::history::{ClientId, Event};
use crate::leaderless::history::{Op, Outcome, Seen};
use crate::net::Packet;
use crate::session::Session;
use bytes::Bytes;
use rand::Rng;
use replikv_core::kv::{Reply, Request};
use replikv_core::multi_leader::Resolve;
use replikv_core::node::RequestId;
use std::collections::BTreeMap;

/// Virtual milliseconds a client waits for a reply before the operation is indeterminate.
pub const CLIENT_TIMEOUT_MS: u64 = 2_000;

/// Percent of operations that are SETs.
pub const SET_PERCENT: u32 = 40;

/// Percent of operations that are DELs (the rest are reads).
pub const DEL_PERCENT: u32 = 10;

/// One simulated client.
#[derive(Debug)]
pub(super) struct Client {
    /// Its id in the history.
    id: ClientId,
    /// Its datacenter.
    dc: usize,
    /// Its operation in flight.
    outstanding: Option<Outstanding>,
    /// When it may issue its next operation.
    next_at: u64,
    /// The node it takes for its datacenter's leader.
    target: Option<usize>,
    /// The context token of its last siblings read of each key.
    tokens: BTreeMap<String, Bytes>,
    /// Its session, when it reads from any node of its datacenter (`follower_reads`).
    session: Option<Session>,
}

/// A client's operation in flight.
#[derive(Debug)]
struct Outstanding {
    /// Its request's id.
    id: RequestId,
    /// What it asked.
    op: Op,
    /// When it was sent.
    invoke_ms: u64,
    /// The node it was sent to.
    node: usize,
}

impl Client {
    /// Client number `id`, idle, attached to datacenter `dc`, in `session` if it has one.
    pub(super) fn new(id: usize, dc: usize, session: Option<Session>) -> Client {
        Client { id: id as ClientId, dc, outstanding: None, next_at: 0, target: None, tokens: BTreeMap::new(), session }
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
                    let reset = self.ground.health[o.node].down_until.is_some();
                    if reset {
                        self.give_up(c, "lost its connection");
                    } else if o.invoke_ms + CLIENT_TIMEOUT_MS <= self.ground.now {
                        self.give_up(c, "timed out");
                    }
                }
                None if !self.ground.quiet && self.clients[c].next_at <= self.ground.now => self.issue(c),
                None => {}
            }
        }
    }

    /// Client `c` sends its next operation to the node it takes for its datacenter's leader
    /// (the datacenter's first node at the start); in a session, a read to any node of it.
    fn issue(&mut self, c: usize) {
        let key = format!("k{}", self.ground.rng.gen_range(0..self.config.keys));
        let dc = self.clients[c].dc;
        let first = self.dc_nodes(dc).start;
        let mut node = *self.clients[c].target.get_or_insert(first);
        let op = self.draw_op(c, key);
        let mut request = self.request(c, &op);
        if let Some(session) = &self.clients[c].session {
            if op.write().is_none() {
                node = self.ground.rng.gen_range(self.dc_nodes(dc));
            }
            request = session.wrap(request);
        }
        self.next_request += 1;
        let id = self.next_request;
        self.requests.insert(id, c);
        if let Some(write) = op.write() {
            self.writes_sent.insert(id, (write, op.key().to_string()));
        }
        self.ground.counts.ops += 1;
        self.clients[c].outstanding = Some(Outstanding { id, op, invoke_ms: self.ground.now, node });
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
        let has_token = self.config.resolve == Resolve::App && self.clients[c].tokens.contains_key(&key);
        let context = has_token && self.ground.rng.gen_bool(0.5);
        Op::Set { key, write, context }
    }

    /// The request client `c` sends for `op`.
    fn request(&self, c: usize, op: &Op) -> Request {
        let key = Bytes::from(op.key().to_string());
        let value = |write: u64| Bytes::from(write.to_string());
        match op {
            Op::Set { write, context: true, .. } => {
                let token = self.clients[c].tokens[op.key()].clone();
                Request::SetContext { key, value: value(*write), context: token }
            }
            Op::Set { write, .. } => Request::Set {
                key,
                value: value(*write),
                condition: Default::default(),
                get: false,
                expiry: Default::default(),
            },
            Op::Del { .. } => Request::Del { keys: vec![key] },
            Op::Read { .. } if self.config.resolve == Resolve::App => Request::Siblings { key },
            Op::Read { .. } => Request::Get { key },
        }
    }

    /// A reply reaches its client (1 ms later, which the client does not notice).
    pub(super) fn reply(&mut self, id: RequestId, reply: Reply) {
        self.writes_sent.remove(&id);
        let Some(c) = self.requests.remove(&id) else { return };
        let Some(outstanding) = self.clients[c].outstanding.take_if(|o| o.id == id) else {
            return; // it gave up already
        };
        // A session's reply moves its positions and is then what the client sees.
        let reply = match (self.clients[c].session.as_mut(), reply) {
            (Some(session), reply) => session.observe(reply, outstanding.op.write().is_some()),
            (None, Reply::InSession { reply, .. }) => *reply,
            (None, reply) => reply,
        };
        let outcome = self.outcome(c, &outstanding.op, &reply);
        self.trace(format!("client {c} {:?} at n{} -> {reply:?}", outstanding.op, outstanding.node + 1));
        match outcome {
            Some(outcome) => self.record(c, outstanding, outcome),
            None => self.ground.counts.refused += 1,
        }
        self.clients[c].next_at = self.ground.now + 1 + self.ground.rng.gen_range(0..5);
    }

    /// What `reply` to client `c`'s `op` means; `None`: it took no effect (a refusal; a
    /// follower's `-READONLY`, which sends the client to the leader it names).
    fn outcome(&mut self, c: usize, op: &Op, reply: &Reply) -> Option<Outcome> {
        match (op, reply) {
            (Op::Set { .. }, Reply::Ok) | (Op::Del { .. }, Reply::Int(_)) => Some(Outcome::Written(None)),
            (_, Reply::Error(e)) if e.starts_with("READONLY") => {
                self.follow_leader(c, e);
                None
            }
            (Op::Set { .. } | Op::Del { .. }, Reply::Error(e))
                if e.starts_with("NOREPLICAS") || e.contains("may or may not") =>
            {
                Some(Outcome::Indeterminate)
            }
            (Op::Read { .. }, Reply::Error(e)) if e.starts_with("TRYAGAIN") => {
                self.tryagain += 1; // a follower behind the session: no effect
                None
            }
            (Op::Read { key }, _) => self.seen(c, key, reply).map(Outcome::Read),
            (_, Reply::Error(_)) => None,
            (op, reply) => {
                self.ground.broken.get_or_insert(format!("{op:?} was answered {reply:?}"));
                None
            }
        }
    }

    /// Client `c` goes to the leader a `-READONLY` names, or, when it names none or one
    /// outside the client's datacenter, to another node of its datacenter.
    fn follow_leader(&mut self, c: usize, error: &str) {
        let dc = self.clients[c].dc;
        let named = error
            .rsplit_once("The leader is n")
            .and_then(|(_, rest)| rest.trim_end_matches('.').parse::<usize>().ok())
            .map(|n| n - 1)
            .filter(|n| self.dc_nodes(dc).contains(n));
        let nodes = self.dc_nodes(dc);
        self.clients[c].target = Some(named.unwrap_or_else(|| self.ground.rng.gen_range(nodes)));
    }

    /// What a read of `key` by client `c` returned, or `None` for an error (it keeps the
    /// context token of a siblings read).
    fn seen(&mut self, c: usize, key: &str, reply: &Reply) -> Option<Seen> {
        match reply {
            Reply::Nil => Some(Seen::default()),
            Reply::Bulk(value) => {
                // Under merge, the concurrent values joined by the separator.
                let numbers: Option<Vec<u64>> = value.split(|b| *b == b',').map(|v| self.write_number(v)).collect();
                Some(Seen { values: numbers?, context: None })
            }
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
                        Reply::Nil => {} // a delete among the siblings
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

    /// The write number a value read names; a value no client wrote breaks the run.
    fn write_number(&mut self, value: &[u8]) -> Option<u64> {
        let number = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
        if number.is_none() {
            self.ground.broken.get_or_insert(format!("a read returned {value:?}, which no client wrote"));
        }
        number
    }

    /// Client `c`'s operation ends indeterminate (`why`); it tries another node of its
    /// datacenter next.
    fn give_up(&mut self, c: usize, why: &str) {
        let Some(outstanding) = self.clients[c].outstanding.take() else { return };
        self.requests.remove(&outstanding.id);
        self.trace(format!("client {c} {:?} {why}", outstanding.op));
        self.record(c, outstanding, Outcome::Indeterminate);
        let nodes = self.dc_nodes(self.clients[c].dc);
        self.clients[c].target = Some(self.ground.rng.gen_range(nodes));
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
            node: Some(outstanding.node),
            op: outstanding.op,
            invoke_ms: outstanding.invoke_ms,
            complete_ms: determinate.then_some(self.ground.now + 1),
            outcome,
        });
    }
}
