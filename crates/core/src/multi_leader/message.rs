//! The multi-leader family's peer messages: the single-leader messages inside a datacenter,
//! and the exchange of changes between the datacenters' leaders.
//!
//! A datacenter's leader ships each other datacenter's leader the changes its own clients
//! made, in the order of its replication log ([`Ship`]). The receiver applies them, and once
//! a majority of its datacenter holds them answers how far it has applied that log
//! ([`ShipAck`]): that position is stored in the receiver's datacenter, in the same log
//! record as the changes it covers, so it survives a failover there, and the sender learns it
//! from any leader it reaches, and keeps its log from the stored position on. A
//! position names the record and its epoch, so a sender whose own log went another way (a
//! failover in its datacenter cut records) finds where the two agree and ships again from
//! there. Changes carry whole key states, so a change applied twice, or late, is harmless.

use crate::replication::{Change, Epoch, Lsn};
use crate::version::NodeId;
use serde::{Deserialize, Serialize};

/// A datacenter, on the wire: the xxh3 hash of its configured name.
pub type DcId = u64;

/// The id of the datacenter named `name`.
pub fn dc_id(name: &str) -> DcId {
    xxhash_rust::xxh3::xxh3_64(name.as_bytes())
}

/// A position in a datacenter's replication log: a record and the epoch it was written in
/// (`(0, 0)`: before the first record).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    /// The record.
    pub lsn: Lsn,
    /// Its epoch.
    pub epoch: Epoch,
}

/// A multi-leader peer message. The variant order is part of the peer protocol.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Inside a datacenter: the single-leader family's message.
    Local(crate::single_leader::Message),
    /// Leader to leader: changes of the sender's datacenter.
    Ship(Ship),
    /// Leader to leader: how far the receiver has durably applied the sender's log.
    Ack(ShipAck),
    /// Leader to leader: where have you applied my datacenter's log through? (Answered with a
    /// [`ShipAck`].)
    Where {
        /// The asking datacenter.
        origin: DcId,
    },
    /// A node that does not lead its datacenter, to one that took it for its leader.
    NotLeader {
        /// Its datacenter's leader, if it knows one.
        leader: Option<NodeId>,
    },
}

/// Changes a datacenter's leader ships to another's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ship {
    /// The sending datacenter.
    pub origin: DcId,
    /// The record just before the ones this covers: the receiver takes it only if it has
    /// applied the origin's log at least this far.
    pub after: Position,
    /// The last record this covers. Records of changes the origin itself received from
    /// other datacenters are covered but not shipped (each datacenter ships its own).
    pub through: Position,
    /// The changes its clients made in the records covered, in log order; whole requests.
    pub changes: Vec<Change>,
    /// The receiver's position that this corrects: the sender's history went another way than
    /// it (a failover in the sender's datacenter cut records), so a receiver whose position is
    /// still this one takes `through` as its position even if it is behind. Otherwise a
    /// position never moves back (a late or duplicated shipment covers nothing new, and a late
    /// correction of a position the receiver has since left corrects nothing).
    pub restart: Option<Position>,
    /// The sender's clock when it sent this, echoed by the acknowledgement (lag).
    pub sent_ms: u64,
}

/// A leader's answer to a [`Ship`] or a [`Message::Where`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShipAck {
    /// The datacenter whose log this is about (the shipper's).
    pub origin: DcId,
    /// The receiver's datacenter has applied the origin's log through here (shipments that
    /// carried no change of the origin's own included, which it does not store each time).
    pub applied: Position,
    /// The position its datacenter holds durably (a majority of it), which a failover there
    /// goes back to: the origin keeps its log from here.
    pub stored: Position,
    /// The `sent_ms` of the shipment this answers (0 for a `Where`).
    pub echo_ms: u64,
}

impl Message {
    /// The message's name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Local(message) => message.kind(),
            Message::Ship(_) => "Ship",
            Message::Ack(_) => "ShipAck",
            Message::Where { .. } => "Where",
            Message::NotLeader { .. } => "NotLeader",
        }
    }
}

impl From<crate::single_leader::Message> for Message {
    fn from(message: crate::single_leader::Message) -> Message {
        Message::Local(message)
    }
}
