//! The simulated network every family's world shares: packets on their way, drawn delays,
//! drops and duplicates, and partitions that form and heal.
//!
//! A packet is a peer message between nodes or a client's request to a node. Each is due at
//! a virtual millisecond drawn from the run's delay range (a spread reorders them) and
//! delivered in (due time, sequence) order, so two packets due in the same millisecond keep
//! the order they were sent in. Only messages between nodes meet the network's faults: a
//! client's request always arrives (the faults are between nodes). A partition cuts one node
//! off from the others, both ways or outbound only, for a drawn while; a blocked direction
//! drops what is sent on it and what was on its way when it formed.
//!
//! Every draw comes from the world's RNG, in the order the world calls these functions, so a
//! seed replays the same network.
//!
//! CAVEATS
//! - One partition at a time: one node against the rest, or (multi-leader) one datacenter
//!   against the others.
//! - A packet is dropped whole or delivered whole; nothing corrupts its bytes (the peer
//!   framing's checks are tested on their own).

use crate::faults::Faults;
use rand::Rng;
use replikv_core::kv::Request;
use replikv_core::node::{Input, PeerMessage, RequestId};
use replikv_core::version::NodeId;
use std::collections::{BTreeMap, BTreeSet};

/// Virtual milliseconds a partition lasts: drawn from this range.
const PARTITION_MS: std::ops::Range<u64> = 50..2_000;

/// A message or request on its way.
#[derive(Debug)]
pub(crate) enum Packet {
    /// Between nodes.
    Peer {
        /// The sender's index.
        from: usize,
        /// The message.
        message: PeerMessage,
    },
    /// From a client to a node.
    Request {
        /// The request's id, which its reply carries.
        id: RequestId,
        /// The request.
        request: Request,
    },
}

/// What [`Network::send`] did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    /// A client's request: on its way, no fault drawn.
    Request,
    /// A peer message the network lost.
    Dropped,
    /// A peer message on its way, twice when `duplicated`.
    Message {
        /// A copy follows it.
        duplicated: bool,
    },
}

/// Packets on their way, and the partition in force.
#[derive(Debug, Default)]
pub(crate) struct Network {
    /// (deliver at, sequence) -> (to, packet).
    queue: BTreeMap<(u64, u64), (usize, Packet)>,
    /// The last sequence number handed out.
    seq: u64,
    /// Blocked directions (from, to).
    blocked: BTreeSet<(usize, usize)>,
    /// When the partition in force heals.
    partition_until: Option<u64>,
}

impl Network {
    /// True when the direction `from` to `to` is cut.
    pub(crate) fn is_blocked(&self, from: usize, to: usize) -> bool {
        self.blocked.contains(&(from, to))
    }

    /// True when nothing is on its way.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Sends `packet` to node `to` at `now`, through the network's faults when it comes from a
    /// node (`from`).
    pub(crate) fn send(
        &mut self,
        rng: &mut impl Rng,
        faults: &Faults,
        now: u64,
        from: Option<usize>,
        to: usize,
        packet: Packet,
    ) -> Sent {
        let delay = rng.gen_range(faults.delay_min_ms..=faults.delay_max_ms);
        let mut sent = Sent::Request;
        if from.is_some() {
            if faults.drop > 0.0 && rng.gen_bool(faults.drop) {
                return Sent::Dropped;
            }
            let duplicated = faults.dup > 0.0 && rng.gen_bool(faults.dup);
            sent = Sent::Message { duplicated };
        }
        if sent == (Sent::Message { duplicated: true }) {
            let copy = match &packet {
                Packet::Peer { from, message } => Packet::Peer { from: *from, message: message.clone() },
                Packet::Request { id, request } => Packet::Request { id: *id, request: request.clone() },
            };
            let extra = rng.gen_range(0..=faults.delay_max_ms);
            self.seq += 1;
            self.queue.insert((now + delay + extra, self.seq), (to, copy));
        }
        self.seq += 1;
        self.queue.insert((now + delay, self.seq), (to, packet));
        sent
    }

    /// The packets due at `now`, as inputs for their nodes (by index; `ids` names each node):
    /// those to a node that `is_down` hears nothing, and those on a blocked direction are
    /// lost.
    pub(crate) fn deliver(&mut self, now: u64, ids: &[NodeId], is_down: impl Fn(usize) -> bool) -> Vec<(usize, Input)> {
        let mut due = Vec::new();
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (to, packet) = entry.remove();
            if is_down(to) {
                continue; // a down node hears nothing
            }
            let input = match packet {
                Packet::Peer { from, message } => {
                    if self.is_blocked(from, to) {
                        continue;
                    }
                    Input::Message { from: ids[from], message }
                }
                Packet::Request { id, request } => Input::Request { id, request },
            };
            due.push((to, input));
        }
        due
    }

    /// Heals the partition in force if its time has come; true if it did.
    pub(crate) fn maybe_heal(&mut self, now: u64) -> bool {
        if self.partition_until.is_some_and(|until| until <= now) {
            self.heal();
            return true;
        }
        false
    }

    /// Ends any partition at once (the quiet phase).
    pub(crate) fn heal(&mut self) {
        self.blocked.clear();
        self.partition_until = None;
    }

    /// Forms a partition among `nodes` nodes, at the run's rate, when none is in force;
    /// returns the trace line saying so.
    pub(crate) fn maybe_partition(
        &mut self,
        rng: &mut impl Rng,
        faults: &Faults,
        now: u64,
        nodes: usize,
    ) -> Option<String> {
        if self.partition_until.is_some() || faults.partition <= 0.0 || !rng.gen_bool(faults.partition) {
            return None;
        }
        let cut = rng.gen_range(0..nodes);
        let (one_way, until) = self.cut_off(rng, now, nodes, |n| n == cut);
        Some(format!("partition: n{} cut off{one_way} until t={until}", cut + 1))
    }

    /// As [`Network::maybe_partition`], among nodes in groups (datacenters: `group_of[i]` is
    /// node `i`'s): half the partitions drawn cut one group off from the others (every link
    /// between datacenters that crosses the cut), half one node off from every other.
    pub(crate) fn maybe_partition_groups(
        &mut self,
        rng: &mut impl Rng,
        faults: &Faults,
        now: u64,
        group_of: &[usize],
    ) -> Option<String> {
        if self.partition_until.is_some() || faults.partition <= 0.0 || !rng.gen_bool(faults.partition) {
            return None;
        }
        let nodes = group_of.len();
        let groups = group_of.iter().max().map_or(1, |g| g + 1);
        if rng.gen_bool(0.5) {
            let cut = rng.gen_range(0..groups);
            let (one_way, until) = self.cut_off(rng, now, nodes, |n| group_of[n] == cut);
            return Some(format!("partition: datacenter dc{} cut off{one_way} until t={until}", cut + 1));
        }
        let cut = rng.gen_range(0..nodes);
        let (one_way, until) = self.cut_off(rng, now, nodes, |n| n == cut);
        Some(format!("partition: n{} cut off{one_way} until t={until}", cut + 1))
    }

    /// Cuts the nodes `inside` says off from the others, both ways or (drawn) outbound only,
    /// for a drawn while: the trace's words for the direction, and when it heals.
    fn cut_off(
        &mut self,
        rng: &mut impl Rng,
        now: u64,
        nodes: usize,
        inside: impl Fn(usize) -> bool,
    ) -> (&'static str, u64) {
        let one_way = rng.gen_bool(0.3);
        for cut in (0..nodes).filter(|&n| inside(n)) {
            for other in (0..nodes).filter(|&o| !inside(o)) {
                self.blocked.insert((cut, other));
                if !one_way {
                    self.blocked.insert((other, cut));
                }
            }
        }
        let until = now + rng.gen_range(PARTITION_MS);
        self.partition_until = Some(until);
        (if one_way { " (outbound only)" } else { "" }, until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_group_partition_cuts_every_link_between_the_group_and_the_rest_and_none_inside() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let faults = Faults { partition: 1.0, ..Faults::none() };
        let group_of = [0, 0, 1, 1, 2, 2];
        let mut groups_cut = 0;
        for now in 0..200 {
            let mut net = Network::default();
            let line = net.maybe_partition_groups(&mut rng, &faults, now, &group_of).expect("rate 1 always draws");
            let Some(rest) = line.strip_prefix("partition: datacenter dc") else { continue };
            groups_cut += 1;
            let cut = rest[..1].parse::<usize>().unwrap() - 1;
            for a in 0..6 {
                for b in 0..6 {
                    let across = (group_of[a] == cut) != (group_of[b] == cut);
                    if !across {
                        assert!(!net.is_blocked(a, b), "{line}: n{} -> n{} is inside one side", a + 1, b + 1);
                    } else if group_of[a] == cut {
                        assert!(net.is_blocked(a, b), "{line}: n{} -> n{} crosses the cut", a + 1, b + 1);
                    }
                }
            }
        }
        assert!((50..150).contains(&groups_cut), "about half the partitions cut a datacenter: {groups_cut} of 200");
    }
}
