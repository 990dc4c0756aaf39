//! The leaderless family's peer messages: a coordinator asks the replicas of a key to store a
//! state or to read one, and forwards a write it may not coordinate to a replica that may.
//!
//! Every message names the coordinator's operation (`op`), which the answer repeats; the
//! coordinator takes an answer only from a replica it asked, and counts each replica once.
//! A state travels whole ([`Siblings`]: every concurrent value and the causal context), so a
//! replica merges it into its own and never needs an older message: messages may be lost,
//! duplicated or reordered without harm.

use crate::causality::Siblings;
use crate::kv::{Reply, Request};
use crate::version::NodeId;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A leaderless peer message. The variant order is part of the peer protocol.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Coordinator to replica: merge `state` into your state of `key`, then say so.
    Write {
        /// The coordinator's operation.
        op: u64,
        /// The key.
        key: Bytes,
        /// The state the coordinator made (a write) or merged from every reply (a read
        /// repair).
        state: Siblings,
        /// A read repair, not a client's write (counted apart).
        repair: bool,
    },
    /// Replica to coordinator: the state of `Write { op }` is merged and durable here.
    WriteAck {
        /// The coordinator's operation.
        op: u64,
    },
    /// Coordinator to replica: send your state of `key`.
    Read {
        /// The coordinator's operation.
        op: u64,
        /// The key.
        key: Bytes,
    },
    /// Replica to coordinator: its state of `key` (`None`: it holds nothing of it, or could
    /// not read it).
    ReadReply {
        /// The coordinator's operation.
        op: u64,
        /// The state, as durable on the replica.
        state: Option<Siblings>,
    },
    /// A node that is no replica of a key to one that is: coordinate this write for me.
    Forward {
        /// The forwarding node's number for it.
        id: u64,
        /// The client's write.
        request: Request,
    },
    /// The answer to a `Forward`.
    ForwardReply {
        /// The forwarding node's number for it.
        id: u64,
        /// The reply the client gets.
        reply: Reply,
    },
    /// Anti-entropy: a round of Merkle tree comparison ([`super::anti_entropy`]).
    AntiEntropy(super::anti_entropy::Exchange),
    /// Coordinator to stand-in: keep `state` as a hint for `owner`, a replica of `key` that
    /// seems down ([`super::hints`]).
    Hint {
        /// The coordinator's operation.
        op: u64,
        /// The replica the hint is for.
        owner: NodeId,
        /// The key.
        key: Bytes,
        /// The state the coordinator made.
        state: Siblings,
    },
    /// Stand-in to coordinator: the hint of `op` is durable here.
    HintAck {
        /// The coordinator's operation.
        op: u64,
    },
    /// Hint holder to the replica it is for: merge this state.
    Handoff {
        /// The holder's number for this delivery.
        id: u64,
        /// The key.
        key: Bytes,
        /// The hint's state.
        state: Siblings,
    },
    /// Replica to hint holder: the delivery `id` is merged and durable here.
    HandoffAck {
        /// The holder's number for the delivery.
        id: u64,
    },
}

impl Message {
    /// The message's name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Write { repair: false, .. } => "Write",
            Message::Write { repair: true, .. } => "Write (repair)",
            Message::WriteAck { .. } => "WriteAck",
            Message::Read { .. } => "Read",
            Message::ReadReply { .. } => "ReadReply",
            Message::Forward { .. } => "Forward",
            Message::ForwardReply { .. } => "ForwardReply",
            Message::AntiEntropy(exchange) => exchange.kind(),
            Message::Hint { .. } => "Hint",
            Message::HintAck { .. } => "HintAck",
            Message::Handoff { .. } => "Handoff",
            Message::HandoffAck { .. } => "HandoffAck",
        }
    }
}
