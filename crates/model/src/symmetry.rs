//! Symmetry reduction: replicas are interchangeable, and so are clients, so the checker
//! explores one state per class of states that differ only by renaming them.
//!
//! The rules never compare two replicas' names except for equality (a vote is for *this*
//! candidate, a reply goes to *that* leader), and `decide_vote` compares log positions, not
//! names; clients likewise. Renaming replicas (a permutation of 0, 1, 2, applied to every
//! index and [`NodeId`] in the state) and clients (a permutation of 0, 1, applied to every
//! write) therefore maps behaviours to behaviours and properties to themselves, and checking
//! one state of each class checks them all.
//!
//! # How the representative is chosen
//!
//! The representative of a state is the least (by the derived `Ord`) of its images under a
//! set of renamings that is the same for every member of the class, so every member yields
//! the same one. The set is built from keys that no replica renaming changes: clients are
//! ordered by where their write sits (LSN and epoch in each log, sorted over replicas) and
//! whether it is issued, awaited or acknowledged; then, for each client order, replicas are
//! ordered by what they hold with names forgotten (epoch, whether they voted for themselves,
//! log, durable end, role, grant count or sorted matches). The renamings that sort the keys,
//! every order of tied keys included, are the candidates. Keys rarely tie, so this builds about one image per
//! state instead of all twelve.
//!
//! CAVEATS
//! - stateright 0.30 applies symmetry reduction in its depth-first checker only, so the checks
//!   that use it run depth first, and their counterexamples are not the shortest.

use crate::state::{node_id, Acked, Entry, Message, Node, Payload, Replica, Role, State, CLIENTS, REPLICAS};
use replikv_core::replication::{Epoch, Lsn};
use replikv_core::version::NodeId;
use std::cmp::Ordering;

/// Every ordering of the three replicas, as `order[new index] = old index`.
const REPLICA_ORDERS: [[Replica; REPLICAS]; 6] = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];

/// Both renamings of the two clients, as `renaming[old client] = new client`.
const CLIENT_RENAMINGS: [[u8; CLIENTS]; 2] = [[0, 1], [1, 0]];

/// One renaming: of replicas (`replica[old] = new`) and of clients (`client[old] = new`).
struct Renaming {
    /// The new index of each replica.
    replica: [Replica; REPLICAS],
    /// The new index of each client.
    client: [u8; CLIENTS],
}

impl Renaming {
    /// True when it renames nothing.
    fn is_identity(&self) -> bool {
        self.replica == [0, 1, 2] && self.client == [0, 1]
    }

    /// The renamed identity.
    fn id(&self, id: NodeId) -> NodeId {
        node_id(self.replica[id.0 as usize - 1])
    }

    /// The renamed entry.
    fn entry(&self, entry: Entry) -> Entry {
        let payload = match entry.payload {
            Payload::Noop => Payload::Noop,
            Payload::Write(c) => Payload::Write(self.client[c as usize]),
        };
        Entry { epoch: entry.epoch, payload }
    }

    /// The renamed entries.
    fn entries(&self, entries: &[Entry]) -> Vec<Entry> {
        entries.iter().map(|&e| self.entry(e)).collect()
    }

    /// The renamed replica.
    fn node(&self, node: &Node) -> Node {
        let role = match &node.role {
            Role::Follower => Role::Follower,
            Role::Candidate { granted } => Role::Candidate { granted: self.by_replica(granted) },
            Role::Leader { matched, pending } => {
                Role::Leader { matched: self.by_replica(matched), pending: self.by_client(pending) }
            }
        };
        Node {
            epoch: node.epoch,
            voted_for: node.voted_for.map(|v| self.id(v)),
            log: self.entries(&node.log),
            durable: node.durable,
            role,
        }
    }

    /// The array indexed by replica `values`, indexed by the replicas' new names.
    fn by_replica<T: Copy + Default>(&self, values: &[T; REPLICAS]) -> [T; REPLICAS] {
        let mut renamed = [T::default(); REPLICAS];
        for (old, &value) in values.iter().enumerate() {
            renamed[self.replica[old]] = value;
        }
        renamed
    }

    /// The array indexed by client `values`, indexed by the clients' new names.
    fn by_client<T: Copy + Default>(&self, values: &[T; CLIENTS]) -> [T; CLIENTS] {
        let mut renamed = [T::default(); CLIENTS];
        for (old, &value) in values.iter().enumerate() {
            renamed[self.client[old] as usize] = value;
        }
        renamed
    }

    /// The renamed message.
    fn message(&self, message: &Message) -> Message {
        match message {
            Message::Append { epoch, prev_lsn, prev_epoch, entries, durable } => Message::Append {
                epoch: *epoch,
                prev_lsn: *prev_lsn,
                prev_epoch: *prev_epoch,
                entries: self.entries(entries),
                durable: *durable,
            },
            other => other.clone(),
        }
    }

    /// The renamed state.
    fn state(&self, state: &State) -> State {
        let mut nodes: [Node; REPLICAS] = Default::default();
        let mut network: [[Option<Message>; REPLICAS]; REPLICAS] = Default::default();
        for (old, node) in state.nodes.iter().enumerate() {
            nodes[self.replica[old]] = self.node(node);
            for (to, message) in state.network[old].iter().enumerate() {
                network[self.replica[old]][self.replica[to]] = message.as_ref().map(|m| self.message(m));
            }
        }
        let mut leaderships: Vec<_> = state.leaderships.iter().map(|&(epoch, id)| (epoch, self.id(id))).collect();
        leaderships.sort_unstable();
        let rename = |items: &[Acked]| {
            let mut renamed: Vec<_> = items.iter().map(|a| Acked { lsn: a.lsn, entry: self.entry(a.entry) }).collect();
            renamed.sort_unstable();
            renamed
        };
        State {
            nodes,
            network,
            issued: self.by_client(&state.issued),
            crashes: state.crashes,
            leaderships,
            acked: rename(&state.acked),
            durable_led: rename(&state.durable_led),
            served_undurable: state.served_undurable,
            served_write: state.served_write,
        }
    }
}

/// Compares replicas `a` and `b` as they look with every replica's name forgotten (names
/// become "myself" or counts) and clients renamed by `client`: the order the representative
/// sorts replicas by.
fn compare_replicas(state: &State, a: Replica, b: Replica, client: [u8; CLIENTS]) -> Ordering {
    let (x, y) = (&state.nodes[a], &state.nodes[b]);
    let rename = |e: &Entry| match e.payload {
        Payload::Noop => (e.epoch, None),
        Payload::Write(c) => (e.epoch, Some(client[c as usize])),
    };
    let self_vote = |n: &Node, i: Replica| n.voted_for.map(|v| v == node_id(i));
    x.epoch
        .cmp(&y.epoch)
        .then_with(|| self_vote(x, a).cmp(&self_vote(y, b)))
        .then_with(|| x.log.iter().map(rename).cmp(y.log.iter().map(rename)))
        .then_with(|| x.durable.cmp(&y.durable))
        .then_with(|| role_key(&x.role, a, client).cmp(&role_key(&y.role, b, client)))
}

/// A role with names forgotten: its kind, then a candidate's grant count or a leader's peer
/// matches (sorted) and pending clients (renamed).
fn role_key(role: &Role, me: Replica, client: [u8; CLIENTS]) -> (u8, [Lsn; REPLICAS - 1], [bool; CLIENTS]) {
    match role {
        Role::Follower => (0, [0; REPLICAS - 1], [false; CLIENTS]),
        Role::Candidate { granted } => {
            let count = granted.iter().filter(|&&g| g).count() as Lsn;
            (1, [count, 0], [false; CLIENTS])
        }
        Role::Leader { matched, pending, .. } => {
            let mut peers = [0; REPLICAS - 1];
            for (slot, (_, &lsn)) in matched.iter().enumerate().filter(|&(p, _)| p != me).enumerate() {
                peers[slot] = lsn;
            }
            peers.sort_unstable();
            let renaming = Renaming { replica: [0, 1, 2], client };
            (2, peers, renaming.by_client(pending))
        }
    }
}

/// What a client looks like with replicas' names forgotten.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct ClientKey {
    /// Whether it has written.
    issued: bool,
    /// Where its write sits in each log, as (LSN, epoch), sorted over replicas.
    places: [Option<(Lsn, Epoch)>; REPLICAS],
    /// The epoch of the leader awaiting it, if any.
    awaited: Option<Epoch>,
    /// The LSN it was acknowledged at, if it was.
    acked: Option<Lsn>,
}

/// The key of client `c`.
fn client_key(state: &State, c: u8) -> ClientKey {
    let mut places = [None; REPLICAS];
    for (slot, node) in state.nodes.iter().enumerate() {
        let at = node.log.iter().position(|e| e.payload == Payload::Write(c));
        places[slot] = at.map(|i| (i as Lsn + 1, node.log[i].epoch));
    }
    places.sort_unstable();
    let awaited = state.nodes.iter().find_map(|n| match &n.role {
        Role::Leader { pending, .. } if pending[c as usize] => Some(n.epoch),
        _ => None,
    });
    let acked = state.acked.iter().find(|a| a.entry.payload == Payload::Write(c)).map(|a| a.lsn);
    ClientKey { issued: state.issued[c as usize], places, awaited, acked }
}

/// The representative of `state`'s class: the least image under the renamings that sort the
/// clients' keys and then the replicas, all orders of ties included.
pub fn representative(state: &State) -> State {
    let clients = match client_key(state, 0).cmp(&client_key(state, 1)) {
        Ordering::Less => &CLIENT_RENAMINGS[..1],
        Ordering::Greater => &CLIENT_RENAMINGS[1..],
        Ordering::Equal => &CLIENT_RENAMINGS[..],
    };
    let mut best: Option<State> = None;
    for &client in clients {
        for order in REPLICA_ORDERS {
            let sorted = order.windows(2).all(|w| compare_replicas(state, w[0], w[1], client) != Ordering::Greater);
            if !sorted {
                continue;
            }
            let mut replica = [0; REPLICAS];
            for (new, &old) in order.iter().enumerate() {
                replica[old] = new;
            }
            let renaming = Renaming { replica, client };
            let image = if renaming.is_identity() { state.clone() } else { renaming.state(state) };
            if best.as_ref().is_none_or(|b| image < *b) {
                best = Some(image);
            }
        }
    }
    best.expect("some order sorts the replicas")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ElectionModel;

    /// The first states of the model, breadth first, as many as `count`.
    fn first_states(count: usize) -> Vec<State> {
        let model = ElectionModel::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut queue = std::collections::VecDeque::from([State::new()]);
        while let Some(state) = queue.pop_front() {
            if seen.len() >= count {
                break;
            }
            if !seen.insert(state.clone()) {
                continue;
            }
            let mut actions = Vec::new();
            model.enabled(&state, &mut actions);
            for action in actions {
                let mut next = state.clone();
                model.step(&mut next, action);
                queue.push_back(next);
            }
        }
        seen.into_iter().collect()
    }

    #[test]
    fn renamed_states_share_their_representative() {
        let states = first_states(3000);
        assert!(states.iter().any(|s| s.nodes.iter().any(|n| n.is_leader() && n.log.len() > 1)), "reaches writes");
        for state in &states {
            let mine = representative(state);
            for order in REPLICA_ORDERS {
                for client in CLIENT_RENAMINGS {
                    let renamed = Renaming { replica: order, client }.state(state);
                    assert_eq!(representative(&renamed), mine, "renaming {order:?} {client:?} of {state:?}");
                }
            }
        }
    }
}
