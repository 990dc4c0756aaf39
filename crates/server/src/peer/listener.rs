//! The inbound side: accept peers' connections, handshake, and deliver their messages.
//!
//! [`Listener::serve`] accepts connections on the node's peer port, at most `connections_max`
//! at a time, each in its own task. A connection's task reads the peer's `Hello` within the
//! handshake timeout, checks it ([`check_hello`]), and answers `Refused` (then closes) or
//! `Welcome`. From then on it reads frames, decodes each as a message `M`, and delivers
//! `(peer node id, message)` into the caller's bounded channel. When that channel is full the
//! task waits, and so stops reading its socket: the peer's writes block, its link's queue fills,
//! and its `try_send` fails. That is the backpressure, end to end.
//!
//! A frame over the limit, a stream that ends inside a frame, or a payload that does not decode
//! closes that connection, and only that one, with an error naming the peer, its address and
//! what arrived; the error is logged and kept in [`ListenerSnapshot::last_error`]. Nothing is
//! sent back: after the handshake, a connection carries messages one way only.
//!
//! A node has at most one connection from each peer: when a peer's new connection passes the
//! handshake, the older one from the same node id is closed (and its task finished) before the
//! new one is welcomed. A peer that restarted, or whose link gave up on a connection that this
//! side still holds, thus never has two streams delivering at once, and stale connections do
//! not eat the connection limit.
//!
//! A connection beyond `connections_max` gets a `Refused` naming the limit, in a task of its own
//! (at most `REFUSING_CONNECTIONS_MAX` at once; beyond that it is just closed).
//!
//! # CAVEATS
//!
//! - Messages are delivered in order per connection; a replaced connection may have delivered
//!   messages that the peer's link counted as lost, and the new one starts where the link's queue
//!   stands. Nothing here deduplicates or reorders.
//! - A message is decoded before the channel has room for it, so a connection holds at most one
//!   decoded message and one read buffer (up to a frame) while it waits.
//! - When `shutdown` turns true, connections stop between messages; a message decoded but not
//!   yet delivered is dropped, like any message in flight.

use super::frame::{decode_message, read_frame, FRAME_BYTES_MAX, FRAME_HEADER_BYTES, READ_BYTES_MIN};
use super::handshake::{
    check_hello, check_mode, read_hello, read_mode, shown, write_handshake, Handshake, Hello, HANDSHAKE_TIMEOUT_MS,
    PEER_PROTOCOL_VERSION,
};
use crate::error::{Error, Result};
use bytes::BytesMut;
use replikv_core::node::Mode;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

/// The default most peer connections a node holds at once.
pub const PEER_CONNECTIONS_MAX: usize = 256;

/// Connections over the limit that are being told so at once, at most; more are just closed.
pub const REFUSING_CONNECTIONS_MAX: usize = 16;

/// Milliseconds to wait after a failed accept (out of file descriptors, say) before the next.
const ACCEPT_RETRY_MS: u64 = 50;

/// A message from a peer: the peer's node id and the message.
pub type Inbound<M> = (Arc<str>, M);

/// The receiver of a listener's deliveries is gone (the node is stopping).
#[derive(Debug)]
pub struct Gone;

/// Where a listener hands the messages its peers send: a channel ([`mpsc::Sender`], which
/// tests read), or the node's runtime itself (`crate::peers::RuntimeSink`), so that a message
/// goes from the socket's task to the stepper's queue with no task between.
pub trait Sink<M>: Clone + Send + Sync + 'static {
    /// Delivers `message` from peer `from`, waiting while the receiver is full (backpressure
    /// on that peer's socket); `Err` once the receiver is gone.
    fn deliver(
        &self,
        from: &Arc<str>,
        message: M,
    ) -> impl std::future::Future<Output = std::result::Result<(), Gone>> + Send;
}

impl<M: Send + 'static> Sink<M> for mpsc::Sender<Inbound<M>> {
    async fn deliver(&self, from: &Arc<str>, message: M) -> std::result::Result<(), Gone> {
        self.send((from.clone(), message)).await.map_err(|_| Gone)
    }
}

/// Distinct (peer, refusal kind) pairs a listener remembers having logged at warn.
const REFUSALS_LOGGED_MAX: usize = 64;

/// Whom a listener admits and how much it holds; [`ListenerConfig::new`] fills in the defaults.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// What this node says about itself; peers must match its cluster and versions.
    pub local: Hello,
    /// The replication mode this node runs; peers must run the same.
    pub mode: Mode,
    /// A multi-leader node's conflict rules fingerprint; peers must hold the same.
    pub rules: Option<u64>,
    /// A physical log's `segment_bytes_max`; peers must run the same, with this node's storage
    /// format version.
    pub physical: Option<u64>,
    /// The node ids admitted, or `None` to admit any node of the cluster.
    pub allowed_node_ids: Option<BTreeSet<String>>,
    /// The largest frame payload accepted after the handshake, in bytes.
    pub frame_bytes_max: usize,
    /// The most connections held at once.
    pub connections_max: usize,
    /// The time a peer has to send its Hello, in milliseconds.
    pub handshake_timeout_ms: u64,
}

impl ListenerConfig {
    /// A listener for the node that says `local`, admitting any node of its cluster, with the
    /// default limits.
    pub fn new(local: Hello) -> ListenerConfig {
        ListenerConfig {
            local,
            mode: Mode::default(),
            rules: None,
            physical: None,
            allowed_node_ids: None,
            frame_bytes_max: FRAME_BYTES_MAX,
            connections_max: PEER_CONNECTIONS_MAX,
            handshake_timeout_ms: HANDSHAKE_TIMEOUT_MS,
        }
    }
}

/// A listener's counters at one moment, for status pages and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenerSnapshot {
    /// Connections open now, in the handshake or past it.
    pub connections_open: usize,
    /// The node ids with a welcomed connection now, sorted.
    pub peers: Vec<String>,
    /// Connections accepted from the socket.
    pub accepted: u64,
    /// Connections that passed the handshake.
    pub welcomed: u64,
    /// Connections refused: in the handshake, or over the connection limit.
    pub refused: u64,
    /// Connections closed on an error: a protocol error, a socket error, a timeout.
    pub failed: u64,
    /// Messages delivered into the channel.
    pub messages_received: u64,
    /// Bytes of the frames of those messages, headers included.
    pub bytes_received: u64,
    /// The last refusal or error, as logged.
    pub last_error: Option<String>,
}

/// A welcomed connection, as the registry of peers knows it.
struct Registered {
    /// The connection's number, so that an older connection does not unregister a newer one.
    id: u64,
    /// Set to true to close the connection; closed when its task has finished.
    replace: watch::Sender<bool>,
}

/// What a listener's tasks share.
struct Context {
    /// Limits and identity.
    config: ListenerConfig,
    /// Welcomed connections by peer node id.
    peers: Mutex<BTreeMap<String, Registered>>,
    /// The next connection number.
    next_id: AtomicU64,
    /// Open connections.
    open: AtomicUsize,
    /// See [`ListenerSnapshot`].
    accepted: AtomicU64,
    /// See [`ListenerSnapshot`].
    welcomed: AtomicU64,
    /// See [`ListenerSnapshot`].
    refused: AtomicU64,
    /// See [`ListenerSnapshot`].
    failed: AtomicU64,
    /// See [`ListenerSnapshot`].
    messages_received: AtomicU64,
    /// See [`ListenerSnapshot`].
    bytes_received: AtomicU64,
    /// See [`ListenerSnapshot`].
    last_error: Mutex<Option<String>>,
    /// (peer, kind of refusal) pairs already logged at warn; repeats log at debug, so that a
    /// misconfigured node redialing every few seconds does not flood the log.
    refusals_logged: Mutex<std::collections::BTreeSet<(String, String)>>,
}

/// The inbound side of the peer transport, on one TCP listening socket.
pub struct Listener {
    /// The listening socket.
    tcp: TcpListener,
    /// What its tasks share.
    ctx: Arc<Context>,
}

/// A cheap handle on a listener's counters, usable while it serves.
#[derive(Clone)]
pub struct ListenerStats {
    /// The listener's shared context.
    ctx: Arc<Context>,
}

impl ListenerStats {
    /// The listener's counters now.
    pub fn snapshot(&self) -> ListenerSnapshot {
        let ctx = &self.ctx;
        ListenerSnapshot {
            connections_open: ctx.open.load(Ordering::Relaxed),
            peers: ctx.peers.lock().unwrap().keys().cloned().collect(),
            accepted: ctx.accepted.load(Ordering::Relaxed),
            welcomed: ctx.welcomed.load(Ordering::Relaxed),
            refused: ctx.refused.load(Ordering::Relaxed),
            failed: ctx.failed.load(Ordering::Relaxed),
            messages_received: ctx.messages_received.load(Ordering::Relaxed),
            bytes_received: ctx.bytes_received.load(Ordering::Relaxed),
            last_error: ctx.last_error.lock().unwrap().clone(),
        }
    }
}

impl Listener {
    /// A listener on `tcp` (already bound) with `config`.
    pub fn new(tcp: TcpListener, config: ListenerConfig) -> Listener {
        let ctx = Context {
            config,
            peers: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            welcomed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            messages_received: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            last_error: Mutex::new(None),
            refusals_logged: Mutex::new(std::collections::BTreeSet::new()),
        };
        Listener { tcp, ctx: Arc::new(ctx) }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// A handle on the listener's counters.
    pub fn stats(&self) -> ListenerStats {
        ListenerStats { ctx: self.ctx.clone() }
    }

    /// Accepts peers and delivers their messages into `inbox` until `shutdown` turns true (or
    /// its sender is dropped); then closes the socket and waits for open connections to stop.
    pub async fn serve<M: DeserializeOwned + Send + 'static, S: Sink<M>>(
        self,
        inbox: S,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let max = self.ctx.config.connections_max.max(1);
        let permits = Arc::new(Semaphore::new(max));
        let refusing = Arc::new(Semaphore::new(REFUSING_CONNECTIONS_MAX));
        loop {
            let accepted = tokio::select! {
                accepted = self.tcp.accept() => accepted,
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            let (stream, addr) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!("accepting a peer connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
                    continue;
                }
            };
            self.ctx.accepted.fetch_add(1, Ordering::Relaxed);
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                self.ctx.refuse_over_limit(stream, addr, &refusing, max);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (ctx, inbox, shutdown) = (self.ctx.clone(), inbox.clone(), shutdown.clone());
            tokio::spawn(async move {
                ctx.open.fetch_add(1, Ordering::Relaxed);
                if let Err(error) = ctx.connection(stream, addr, inbox, shutdown).await {
                    ctx.record(&error);
                }
                ctx.open.fetch_sub(1, Ordering::Relaxed);
                drop(permit);
            });
        }
        // Close the port first, so that peers' dials fail at once rather than wait in its backlog.
        drop(self.tcp);
        let _ = permits.acquire_many(u32::try_from(max).unwrap_or(u32::MAX)).await;
    }
}

impl Context {
    /// Runs one peer's connection: handshake, then deliver its messages until it ends.
    async fn connection<M: DeserializeOwned, S: Sink<M>>(
        &self,
        mut stream: TcpStream,
        addr: SocketAddr,
        inbox: S,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<()> {
        let mut buf = BytesMut::with_capacity(READ_BYTES_MIN);
        let unknown = format!("at {addr}");
        let timeout = Duration::from_millis(self.config.handshake_timeout_ms);
        // One deadline for the whole handshake, from accepting to the answer.
        let deadline = tokio::time::Instant::now() + timeout;
        let hello = tokio::select! {
            hello = tokio::time::timeout(timeout, read_hello(&mut stream, &mut buf, &unknown)) => {
                hello.map_err(|_| self.timed_out(&unknown, "waiting for its Hello"))??
            }
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
        };
        let peer = format!("{} at {addr}", shown(&hello.node_id));
        // A peer of this protocol version sends its mode next; read it before any refusal, so
        // the refusal is not lost to a reset for unread bytes.
        let mode = if hello.protocol_version == self.config.local.protocol_version {
            let mode = tokio::select! {
                mode = tokio::time::timeout_at(deadline, read_mode(&mut stream, &mut buf, &peer)) => {
                    mode.map_err(|_| self.timed_out(&peer, "waiting for its replication mode"))??
                }
                _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
            };
            Some(mode)
        } else {
            None
        };
        let checked =
            check_hello(&self.config.local, self.config.allowed_node_ids.as_ref(), &hello, addr).and_then(|()| {
                mode.map_or(Ok(()), |mode| {
                    check_mode(
                        (self.config.mode, self.config.rules, self.config.physical),
                        &mode,
                        &peer,
                        (self.config.local.storage_format_version, hello.storage_format_version),
                    )
                })
            });
        if let Err(reason) = checked {
            let refused = Handshake::Refused { reason: reason.clone() };
            let _ = tokio::time::timeout(timeout, write_handshake(&mut stream, &refused, &peer)).await;
            let _ = stream.shutdown().await;
            return Err(Error::PeerRefused { peer, reason });
        }
        let (id, mut replaced) = self.register(&hello.node_id, timeout).await;
        let welcome = Handshake::Welcome { node_id: self.config.local.node_id.clone() };
        let result = match tokio::time::timeout(timeout, write_handshake(&mut stream, &welcome, &peer)).await {
            Err(_) => Err(self.timed_out(&peer, "writing its Welcome")),
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => {
                self.welcomed.fetch_add(1, Ordering::Relaxed);
                tracing::info!("peer {peer}: welcomed");
                let from: Arc<str> = Arc::from(hello.node_id.as_str());
                let mut stop = Stop { shutdown: &mut shutdown, replaced: &mut replaced };
                self.deliver(&mut stream, buf, &peer, from, &inbox, &mut stop).await
            }
        };
        self.unregister(&hello.node_id, id);
        result
    }

    /// Reads, decodes and delivers one welcomed peer's messages until the stream ends or stops.
    async fn deliver<M: DeserializeOwned, S: Sink<M>>(
        &self,
        stream: &mut TcpStream,
        mut buf: BytesMut,
        peer: &str,
        from: Arc<str>,
        inbox: &S,
        stop: &mut Stop<'_>,
    ) -> Result<()> {
        let frame_bytes_max = self.config.frame_bytes_max;
        loop {
            let payload = tokio::select! {
                biased;
                why = stop.wait() => return self.stopped(peer, why),
                payload = read_frame(stream, &mut buf, frame_bytes_max, peer) => payload?,
            };
            let Some(payload) = payload else { return Ok(()) };
            let message: M = decode_message(&payload).map_err(|e| Error::peer_protocol(peer, e))?;
            tokio::select! {
                biased;
                why = stop.wait() => return self.stopped(peer, why),
                sent = inbox.deliver(&from, message) => {
                    // The receiver is gone: the node is stopping.
                    if sent.is_err() {
                        return Ok(());
                    }
                }
            }
            self.messages_received.fetch_add(1, Ordering::Relaxed);
            self.bytes_received.fetch_add((FRAME_HEADER_BYTES + payload.len()) as u64, Ordering::Relaxed);
        }
    }

    /// Logs why a connection stopped without an error.
    fn stopped(&self, peer: &str, why: StopReason) -> Result<()> {
        if why == StopReason::Replaced {
            tracing::info!("peer {peer}: closed, replaced by a newer connection from the same node");
        }
        Ok(())
    }

    /// Makes `node_id`'s new connection the registered one, after closing the older one and
    /// waiting (at most `timeout`) for its task to finish; returns the new one's number and the
    /// signal that closes it in turn.
    async fn register(&self, node_id: &str, timeout: Duration) -> (u64, watch::Receiver<bool>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (replace, replaced) = watch::channel(false);
        let older = self.peers.lock().unwrap().insert(node_id.to_string(), Registered { id, replace });
        if let Some(older) = older {
            let _ = older.replace.send(true);
            let _ = tokio::time::timeout(timeout, older.replace.closed()).await;
        }
        (id, replaced)
    }

    /// Forgets connection `id` of `node_id`, unless a newer one took its place.
    fn unregister(&self, node_id: &str, id: u64) {
        let mut peers = self.peers.lock().unwrap();
        if peers.get(node_id).is_some_and(|registered| registered.id == id) {
            peers.remove(node_id);
        }
    }

    /// Tells a connection over the limit so, in a task of its own, if few such tasks run.
    fn refuse_over_limit(&self, mut stream: TcpStream, addr: SocketAddr, refusing: &Arc<Semaphore>, max: usize) {
        let peer = format!("at {addr}");
        let reason = format!("too many peer connections: this node holds {max}, its limit");
        self.record(&Error::PeerRefused { peer: peer.clone(), reason: reason.clone() });
        let Ok(permit) = refusing.clone().try_acquire_owned() else { return };
        let timeout = Duration::from_millis(self.config.handshake_timeout_ms);
        tokio::spawn(async move {
            // Read the Hello first: closing a socket with unread bytes resets it, and the
            // dialer would see the reset instead of the reason.
            let _ = tokio::time::timeout(timeout, async {
                let mut buf = BytesMut::new();
                let hello = read_hello(&mut stream, &mut buf, &peer).await?;
                if hello.protocol_version == PEER_PROTOCOL_VERSION {
                    read_mode(&mut stream, &mut buf, &peer).await?;
                }
                write_handshake(&mut stream, &Handshake::Refused { reason }, &peer).await?;
                stream.shutdown().await.map_err(|e| Error::peer_io(&peer, "closing", e))
            })
            .await;
            drop(permit);
        });
    }

    /// Counts and logs a connection's end on an error, and keeps it as the last error.
    fn record(&self, error: &Error) {
        match error {
            Error::PeerRefused { peer, reason } => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                // The peer's node id (its address carries an ephemeral port) and the kind of
                // refusal (the reason up to its first colon) make a repeat.
                let who = peer.split(" at ").next().unwrap_or_default().to_string();
                let kind = reason.split(':').next().unwrap_or_default().to_string();
                let mut logged = self.refusals_logged.lock().unwrap();
                if logged.len() < REFUSALS_LOGGED_MAX && logged.insert((who, kind)) {
                    tracing::warn!("refused a peer connection: {error} (repeats are logged at debug)");
                } else {
                    tracing::debug!("refused a peer connection: {error}");
                }
            }
            Error::PeerIo { .. } => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::info!("peer connection closed: {error}");
            }
            _ => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("peer connection closed: {error}");
            }
        }
        *self.last_error.lock().unwrap() = Some(error.to_string());
    }

    /// The error for a handshake step that took longer than the handshake timeout.
    fn timed_out(&self, peer: &str, doing: &'static str) -> Error {
        let why = format!("no progress within {} ms", self.config.handshake_timeout_ms);
        Error::peer_io(peer, doing, std::io::Error::new(std::io::ErrorKind::TimedOut, why))
    }
}

/// Why a connection stops between messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopReason {
    /// The node is shutting down.
    Shutdown,
    /// A newer connection from the same peer took this one's place.
    Replaced,
}

/// The two signals that stop a welcomed connection.
struct Stop<'a> {
    /// The node's shutdown.
    shutdown: &'a mut watch::Receiver<bool>,
    /// The registry's replacement signal for this connection.
    replaced: &'a mut watch::Receiver<bool>,
}

impl Stop<'_> {
    /// Resolves when either signal fires (or its sender is gone).
    async fn wait(&mut self) -> StopReason {
        tokio::select! {
            _ = self.shutdown.wait_for(|stop| *stop) => StopReason::Shutdown,
            _ = self.replaced.wait_for(|replaced| *replaced) => StopReason::Replaced,
        }
    }
}
