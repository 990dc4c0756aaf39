//! The peer transport: how the nodes of a cluster carry messages to each other over TCP.
//!
//! This module moves messages; it does not know what they mean. It is generic over the message
//! type `M` (any `serde` type, encoded with postcard), so that the replication protocol, whose
//! vocabulary lives in the core, can change without touching the sockets.
//!
//! # Shape
//!
//! Each node runs one [`Listener`] on its peer port and one [`Link`] per peer it sends to. After
//! the handshake a connection carries messages **one way**, from the node that dialed to the node
//! that accepted: n1's messages to n2 travel on n1's link to n2, and n2's answers on n2's link to
//! n1. Each side thus owns the one connection it writes, two nodes dialing each other at once need
//! no tie-break, and reconnecting lives in one place (the link); the cost is two sockets per pair.
//!
//! # Message by message
//!
//! 1. The link dials the peer's address and sends `Hello { cluster_id, node_id,
//!    protocol_version, storage_format_version }` as its first frame ([`handshake`]), then
//!    `Mode { mode }`, the replication mode it runs.
//! 2. The listener checks it: same cluster, same [`PEER_PROTOCOL_VERSION`], same storage format
//!    version, same replication mode, a node id that is not its own and, given an allow-list,
//!    on it. It answers
//!    `Welcome { node_id }`, or `Refused { reason }` with both sides' values, and closes.
//! 3. The link checks that the welcoming node is the one it dialed. A refusal becomes
//!    [`crate::error::Error::PeerRefused`], shown in [`LinkState::Refused`], and the link backs off.
//! 4. The link writes queued messages as frames ([`frame`]: a 4-byte big-endian length, then
//!    postcard), many per write. The listener cuts frames, decodes each as `M` and delivers
//!    `(peer node id, message)` into the caller's bounded channel.
//! 5. On any failure the connection closes; the link dials again after an exponential backoff
//!    with jitter ([`link`]), and the listener forgets the connection ([`listener`]).
//!
//! # Promises
//!
//! - **Order**: messages queued on one link are delivered in that order, each at most once.
//! - **Bounded memory**: a link's queue ([`PEER_QUEUE_MESSAGES_MAX`] messages), a frame
//!   ([`FRAME_BYTES_MAX`]; [`handshake::HANDSHAKE_FRAME_BYTES_MAX`] before the handshake), a
//!   write batch, the listener's connections ([`PEER_CONNECTIONS_MAX`]) and the caller's channel
//!   are all bounded; a full channel stops the reading of the socket, which fills the sender's
//!   queue, which makes its `try_send` fail.
//! - **Containment**: a frame over the limit, a stream cut inside a frame, or bytes that do not
//!   decode close that connection only, with an error that names the peer, its address, the
//!   frame's length and the limit. No input makes this module panic.
//! - **No spinning**: a link that fails or is refused waits between dials, 50 ms doubling to 2 s.
//!
//! # Invariants
//!
//! - No replication message is decoded from a connection before its handshake succeeded, and
//!   none is sent on one before its `Welcome` arrived.
//! - A listener holds at most one welcomed connection per peer node id: a newer one closes the
//!   older one before it is welcomed.
//!
//! # CAVEATS
//!
//! - **At most once, not exactly once.** Messages in a write that failed, or written just before
//!   the peer went away, are lost; the layer above must resend what is not acknowledged and so
//!   tolerate duplicates. Messages still queued when the connection fails are kept and sent after
//!   the reconnect.
//! - **No authentication, no encryption.** A node id is taken on its word; keep peer ports on a
//!   private network.
//! - **No keepalive, no write timeout.** A link to a host that vanished looks connected until a
//!   write fails; a peer that stops reading holds its links' writes. The replication layer's
//!   heartbeats are what detect a dead peer.
//! - **One queue per link, no priorities.** A heartbeat queued behind a large batch waits for it.
//!   If that matters, the replication layer can open a second link for control messages.
//! - **Versions must match exactly**, so a rolling upgrade across a peer protocol version is not
//!   possible yet.
//! - `M`'s postcard encoding carries no field names: every change to a message sent between
//!   peers must raise [`PEER_PROTOCOL_VERSION`].

pub mod frame;
pub mod handshake;
pub mod link;
pub mod listener;

#[cfg(test)]
mod tests;

pub use frame::{FrameError, FRAME_BYTES_MAX};
pub use handshake::{Handshake, Hello, HANDSHAKE_TIMEOUT_MS, PEER_PROTOCOL_VERSION};
pub use link::{
    Link, LinkConfig, LinkSnapshot, LinkState, PEER_QUEUE_MESSAGES_MAX, RECONNECT_BACKOFF_MAX_MS,
    RECONNECT_BACKOFF_MIN_MS,
};
pub use listener::{
    Gone, Inbound, Listener, ListenerConfig, ListenerSnapshot, ListenerStats, Sink, PEER_CONNECTIONS_MAX,
};
