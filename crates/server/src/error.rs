//! The server crate's one error type, grouped by how the operator must react.

/// A result whose error is the server's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in a node, by how the operator must react.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is missing, malformed or out of range: fix the flag, variable or file the
    /// message names, and start again.
    #[error("{0}")]
    Config(String),
    /// The node could not start: fix what the message names (an address in use, a data
    /// directory that is locked, unreadable or damaged) and start again.
    // The source is shown by the caller walking the chain (`{:#}`), not repeated here.
    #[error("{what}")]
    Start {
        /// What the node was doing.
        what: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The node stopped on a storage failure after it started. Look at the disk and the log
    /// before starting it again: writes after the failure were not acknowledged.
    #[error("{0}")]
    Stopped(String),
    /// A peer connection broke the peer protocol: a frame over the limit, a stream cut inside a
    /// frame, bytes that do not decode, or a handshake frame out of place. Only that connection
    /// is closed; an outbound link dials again after its backoff.
    #[error("peer {peer}: {what}")]
    PeerProtocol {
        /// The peer, as `n2 at 127.0.0.1:7202` or, before its handshake, `at 127.0.0.1:7202`.
        peer: String,
        /// What arrived and where, with the frame length and limit when one is involved.
        what: String,
    },
    /// A peer connection failed at the socket or timed out. Only that connection is closed; an
    /// outbound link dials again after its backoff.
    #[error("peer {peer}: {doing}: {source}")]
    PeerIo {
        /// The peer, as in [`Error::PeerProtocol`].
        peer: String,
        /// What this side was doing: connecting, reading, writing, waiting for the handshake.
        doing: &'static str,
        /// The socket's error (`TimedOut` for a timeout).
        #[source]
        source: std::io::Error,
    },
    /// One side of a peer handshake refused the other: they disagree on the cluster, the peer
    /// protocol or the storage format, or the peer is not one this node expects. Fix the
    /// configuration the reason names; a link keeps dialing, with backoff, until it is fixed.
    #[error("peer {peer}: handshake refused: {reason}")]
    PeerRefused {
        /// The peer, as in [`Error::PeerProtocol`].
        peer: String,
        /// The refusing side's reason, naming both sides' values.
        reason: String,
    },
    /// A link's outbound queue is full and the message was dropped: the peer is slow or down.
    /// Send it later, or let the replication protocol resend what the peer has not acknowledged.
    #[error("peer {peer}: outbound queue full ({messages_max} messages queued)")]
    PeerQueueFull {
        /// The peer the link leads to.
        peer: String,
        /// The queue's capacity, in messages.
        messages_max: usize,
    },
    /// A link's task has ended (the node is stopping) and takes no more messages.
    #[error("peer {peer}: link stopped")]
    PeerLinkStopped {
        /// The peer the link leads to.
        peer: String,
    },
}

impl Error {
    /// An [`Error::Start`] for `what`, caused by `source`.
    pub fn start(what: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Start { what: what.into(), source: Box::new(source) }
    }

    /// An [`Error::PeerProtocol`] for `peer`, saying `what` arrived.
    pub fn peer_protocol(peer: &str, what: impl std::fmt::Display) -> Error {
        Error::PeerProtocol { peer: peer.to_string(), what: what.to_string() }
    }

    /// An [`Error::PeerIo`] for `peer`, failing with `source` while `doing` something.
    pub fn peer_io(peer: &str, doing: &'static str, source: std::io::Error) -> Error {
        Error::PeerIo { peer: peer.to_string(), doing, source }
    }
}
