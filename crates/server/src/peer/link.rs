//! An outbound link: one node's queue of messages to one peer, and the task that delivers them.
//!
//! A [`Link`] is a bounded queue ([`Link::send`], [`Link::try_send`]) and a tokio task that owns
//! the connection. The task dials the peer, runs the handshake ([`super::handshake::dial`]) and
//! then, while connected, takes every message waiting in the queue (up to
//! `WRITE_BATCH_FRAMES_MAX` frames or `WRITE_BATCH_BYTES_MAX` bytes), encodes them as frames into
//! one buffer and writes it with one `write_all`. Meanwhile it watches the socket's read side:
//! the accepting node sends nothing after its `Welcome`, so end of stream means the peer closed,
//! and any byte is a protocol error.
//!
//! On any failure (the dial, the handshake, a write, the peer closing) the task closes the
//! connection, waits a backoff and dials again. The backoff doubles with each failure from
//! `backoff_min_ms` to `backoff_max_ms`, and each wait is drawn from the upper half of the
//! current step (equal jitter) by an RNG seeded from the two node ids, so that nodes restarting
//! together do not dial in lockstep, and a run is reproducible. A connection that stayed up for
//! `backoff_max_ms` resets the backoff; a shorter one does not, so a peer that accepts and then
//! drops every connection is not dialed in a tight loop.
//!
//! A refusal ([`Error::PeerRefused`]) is a configuration disagreement: it is logged, shown in
//! [`LinkState::Refused`], and the link keeps dialing with the same backoff, so that the link
//! comes up by itself once the operator fixes the configuration. Repeated failures of the same
//! kind are logged once at `warn`, then at `debug`, until the link connects or the kind changes.
//!
//! # What happens to messages
//!
//! - Messages wait in the queue while the link is down and are sent, in order, once it is up.
//! - A message taken from the queue into a write batch is sent once or lost, never twice: if the
//!   connection fails, the whole batch in hand is dropped and counted in
//!   [`LinkSnapshot::messages_lost`]; some of it may have arrived.
//! - A message whose encoding fails or passes `frame_bytes_max` is dropped, logged and counted;
//!   the connection goes on.
//! - Dropping the [`Link`], or the node's shutdown signal, stops the task at once; what is queued
//!   is dropped.
//! - Under test faults ([`crate::faults::LinkFaults`], only with `--test-faults`), a message may
//!   be held until its delay after it was queued (the ones behind it wait, and go out one per
//!   write while the delay lasts), or discarded when it leaves the queue because the peer is
//!   blocked or the drop draw says so; discarded messages count in `messages_lost`.
//!
//! # CAVEATS
//!
//! - Delivery is at most once per message and in order per link, nothing more. A write that
//!   succeeds only reached this host's kernel: a message written just before the peer closed
//!   or crashed is lost without an error here. The replication protocol must resend what is not
//!   acknowledged and, because it resends, tolerate duplicates.
//! - A write blocked by a peer that stopped reading (its inbox is full) blocks the link until the
//!   peer reads again or TCP gives up (minutes, for a host that vanished); there is no write
//!   timeout, because a slow follower is not a dead one. The queue then fills and `try_send`
//!   fails, which is the signal for the layer above.
//! - No keepalive: an idle link to a host that vanished looks connected until the next write
//!   fails. The replication heartbeats above notice first.

use super::frame::{encode_frame, FRAME_BYTES_MAX};
use super::handshake::{self, Hello, HANDSHAKE_TIMEOUT_MS};
use crate::error::{Error, Result};
use crate::faults::LinkFaults;
use bytes::BytesMut;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use replikv_core::node::Mode;
use serde::Serialize;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// The default capacity of a link's queue, in messages.
pub const PEER_QUEUE_MESSAGES_MAX: usize = 4096;

/// The default first backoff after a failure, in milliseconds.
pub const RECONNECT_BACKOFF_MIN_MS: u64 = 50;

/// The default longest backoff, in milliseconds.
pub const RECONNECT_BACKOFF_MAX_MS: u64 = 2_000;

/// Frames written with one `write_all` at most.
pub const WRITE_BATCH_FRAMES_MAX: usize = 1024;

/// Bytes gathered for one `write_all` before it is issued (a batch passes this by at most one frame).
pub const WRITE_BATCH_BYTES_MAX: usize = 1024 * 1024;

/// How a link dials and how much it holds; [`LinkConfig::new`] fills in the defaults.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// What this node says about itself in the handshake.
    pub local: Hello,
    /// The replication mode this node runs, sent after the Hello.
    pub mode: Mode,
    /// A multi-leader node's conflict rules fingerprint, sent with the mode.
    pub rules: Option<u64>,
    /// A physical log's `segment_bytes_max`, sent with the mode.
    pub physical: Option<u64>,
    /// The node id the peer must answer with.
    pub peer_node_id: String,
    /// Where the peer listens, as `host:port`; resolved again on every dial.
    pub peer_addr: String,
    /// The largest frame payload sent, in bytes; larger messages are dropped.
    pub frame_bytes_max: usize,
    /// The queue's capacity, in messages.
    pub queue_messages_max: usize,
    /// The first backoff after a failure, in milliseconds.
    pub backoff_min_ms: u64,
    /// The longest backoff, in milliseconds.
    pub backoff_max_ms: u64,
    /// The time a dial and handshake may take together, in milliseconds.
    pub handshake_timeout_ms: u64,
    /// The seed of the backoff jitter; by default derived from the two node ids.
    pub jitter_seed: u64,
    /// The test faults this link obeys; `None` (the default) outside tests.
    pub faults: Option<Arc<LinkFaults>>,
}

impl LinkConfig {
    /// A link from the node that says `local` to node `peer_node_id` at `peer_addr`, with the
    /// default limits and a jitter seed derived from both node ids.
    pub fn new(local: Hello, peer_node_id: impl Into<String>, peer_addr: impl Into<String>) -> LinkConfig {
        let peer_node_id = peer_node_id.into();
        let jitter_seed = fnv1a(format!("{}->{}", local.node_id, peer_node_id).as_bytes());
        LinkConfig {
            local,
            mode: Mode::default(),
            rules: None,
            physical: None,
            peer_node_id,
            peer_addr: peer_addr.into(),
            frame_bytes_max: FRAME_BYTES_MAX,
            queue_messages_max: PEER_QUEUE_MESSAGES_MAX,
            backoff_min_ms: RECONNECT_BACKOFF_MIN_MS,
            backoff_max_ms: RECONNECT_BACKOFF_MAX_MS,
            handshake_timeout_ms: HANDSHAKE_TIMEOUT_MS,
            jitter_seed,
            faults: None,
        }
    }

    /// How errors and logs name the peer: `n2 at 127.0.0.1:7202`.
    fn peer(&self) -> String {
        format!("{} at {}", self.peer_node_id, self.peer_addr)
    }
}

/// 64-bit FNV-1a: a stable hash for seeds (std's hasher may change between releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The wait before the next dial after `failures` failures in a row: drawn from
/// `[step / 2, step]` with `step = min(min_ms * 2^failures, max_ms)`, and never below `min_ms`.
pub fn backoff_ms(failures: u32, min_ms: u64, max_ms: u64, rng: &mut impl Rng) -> u64 {
    let max_ms = max_ms.max(min_ms);
    let step = min_ms.saturating_mul(1u64 << failures.min(63)).min(max_ms);
    let floor = (step / 2).max(min_ms).min(step);
    rng.gen_range(floor..=step)
}

/// What a link is doing, as last seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Dialing the peer, or waiting for its answer to the Hello.
    Connecting,
    /// Handshake done: queued messages are being sent.
    Connected {
        /// When the handshake finished.
        since: Instant,
    },
    /// The peer refused the handshake; the link dials again at `retry_at`.
    Refused {
        /// The refusing side's reason.
        reason: String,
        /// When the link dials again.
        retry_at: Instant,
    },
    /// The last dial or connection failed; the link dials again at `until`.
    BackingOff {
        /// When the link dials again.
        until: Instant,
        /// Why the last attempt failed.
        error: String,
    },
    /// The link's task has ended: the node is stopping or the link was dropped.
    Stopped,
}

/// A link's state and counters at one moment, for status pages and metrics.
#[derive(Clone, Debug)]
pub struct LinkSnapshot {
    /// The peer's node id.
    pub peer_node_id: String,
    /// The peer's address, as configured.
    pub peer_addr: String,
    /// What the link is doing.
    pub state: LinkState,
    /// Messages waiting in the queue.
    pub queued: usize,
    /// Frames written to the socket.
    pub frames_sent: u64,
    /// Bytes written to the socket, frame headers included, handshakes not.
    pub bytes_sent: u64,
    /// Dials, the first one included.
    pub dials: u64,
    /// Handshakes that succeeded after the first one.
    pub reconnects: u64,
    /// Messages taken from the queue and then dropped: in a failed write batch, unencodable, or
    /// discarded by a test fault.
    pub messages_lost: u64,
}

/// What the link's task shares with its [`Link`].
#[derive(Debug)]
struct Shared {
    /// What the task is doing.
    state: Mutex<LinkState>,
    /// Frames written.
    frames_sent: AtomicU64,
    /// Bytes written.
    bytes_sent: AtomicU64,
    /// Dials.
    dials: AtomicU64,
    /// Handshakes that succeeded.
    connections: AtomicU64,
    /// Messages dropped after they left the queue.
    messages_lost: AtomicU64,
}

impl Shared {
    /// Records what the task is doing now.
    fn set(&self, state: LinkState) {
        *self.state.lock().unwrap() = state;
    }
}

/// One node's outbound link to one peer: a bounded queue and the task that delivers it.
///
/// Messages of type `M` are sent in the order they were queued. Dropping the link stops its task.
pub struct Link<M> {
    /// The queue into the task, each message with the moment it was queued.
    tx: mpsc::Sender<(Instant, M)>,
    /// State and counters.
    shared: Arc<Shared>,
    /// The task, aborted on drop.
    task: JoinHandle<()>,
    /// The peer, for errors and snapshots.
    config: LinkConfig,
}

impl<M: Serialize + Send + 'static> Link<M> {
    /// Starts a link's task on the current tokio runtime; it runs until `shutdown` turns true
    /// (or its sender is dropped) or the link is dropped.
    pub fn spawn(config: LinkConfig, shutdown: watch::Receiver<bool>) -> Link<M> {
        let (tx, rx) = mpsc::channel(config.queue_messages_max.max(1));
        let shared = Arc::new(Shared {
            state: Mutex::new(LinkState::Connecting),
            frames_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            dials: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            messages_lost: AtomicU64::new(0),
        });
        let task = Task {
            rng: StdRng::seed_from_u64(config.jitter_seed),
            peer: config.peer(),
            config: config.clone(),
            rx,
            shared: shared.clone(),
            shutdown,
            out: BytesMut::new(),
            last_logged: None,
            _message: PhantomData,
        };
        let task = tokio::spawn(task.run());
        Link { tx, shared, task, config }
    }

    /// Queues `message`, waiting while the queue is full.
    pub async fn send(&self, message: M) -> Result<()> {
        self.tx.send((Instant::now(), message)).await.map_err(|_| Error::PeerLinkStopped { peer: self.config.peer() })
    }

    /// Queues `message` if there is room; a full queue is [`Error::PeerQueueFull`] and the message
    /// is dropped. Never waits, so it may be called from any thread.
    pub fn try_send(&self, message: M) -> Result<()> {
        self.tx.try_send((Instant::now(), message)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                Error::PeerQueueFull { peer: self.config.peer(), messages_max: self.tx.max_capacity() }
            }
            mpsc::error::TrySendError::Closed(_) => Error::PeerLinkStopped { peer: self.config.peer() },
        })
    }
}

impl<M> Link<M> {
    /// The node id of the peer this link leads to.
    pub fn peer_node_id(&self) -> &str {
        &self.config.peer_node_id
    }

    /// The link's state and counters now; takes one short lock.
    pub fn snapshot(&self) -> LinkSnapshot {
        let state = self.shared.state.lock().unwrap().clone();
        let connections = self.shared.connections.load(Ordering::Relaxed);
        LinkSnapshot {
            peer_node_id: self.config.peer_node_id.clone(),
            peer_addr: self.config.peer_addr.clone(),
            state,
            queued: self.tx.max_capacity() - self.tx.capacity(),
            frames_sent: self.shared.frames_sent.load(Ordering::Relaxed),
            bytes_sent: self.shared.bytes_sent.load(Ordering::Relaxed),
            dials: self.shared.dials.load(Ordering::Relaxed),
            reconnects: connections.saturating_sub(1),
            messages_lost: self.shared.messages_lost.load(Ordering::Relaxed),
        }
    }
}

impl<M> Drop for Link<M> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Dials the peer and runs the handshake, within the handshake timeout; `peer` names it in errors.
async fn connect(config: &LinkConfig, peer: &str, shared: &Shared) -> Result<TcpStream> {
    shared.dials.fetch_add(1, Ordering::Relaxed);
    let attempt = async {
        let mut stream =
            TcpStream::connect(&config.peer_addr).await.map_err(|e| Error::peer_io(peer, "connecting", e))?;
        // Frames are batched here already; Nagle would only delay the last one of a batch.
        stream.set_nodelay(true).map_err(|e| Error::peer_io(peer, "setting TCP_NODELAY", e))?;
        handshake::dial(
            &mut stream,
            &config.local,
            (config.mode, config.rules, config.physical),
            &config.peer_node_id,
            peer,
        )
        .await?;
        Ok(stream)
    };
    let timeout = Duration::from_millis(config.handshake_timeout_ms);
    tokio::time::timeout(timeout, attempt).await.unwrap_or_else(|_| {
        let why = format!("no handshake within {} ms", config.handshake_timeout_ms);
        Err(Error::peer_io(peer, "connecting", std::io::Error::new(std::io::ErrorKind::TimedOut, why)))
    })
}

/// Why a connected link stopped pumping.
enum End {
    /// The node is stopping or the link was dropped: exit.
    Stop,
    /// The connection failed: back off and dial again.
    Failed(Error),
}

/// The task behind a [`Link`].
struct Task<M> {
    /// Dialing and limits.
    config: LinkConfig,
    /// The peer, as errors name it.
    peer: String,
    /// The queue, each message with the moment it was queued.
    rx: mpsc::Receiver<(Instant, M)>,
    /// State and counters.
    shared: Arc<Shared>,
    /// Turns true when the node stops.
    shutdown: watch::Receiver<bool>,
    /// The backoff jitter.
    rng: StdRng,
    /// The write batch being built or written.
    out: BytesMut,
    /// The kind of the last failure logged at `warn`, so that a repeat is logged at `debug`.
    last_logged: Option<String>,
    /// The message type.
    _message: PhantomData<fn() -> M>,
}

impl<M: Serialize + Send + 'static> Task<M> {
    /// Dials, pumps and backs off until stopped.
    async fn run(mut self) {
        let mut failures: u32 = 0;
        loop {
            self.shared.set(LinkState::Connecting);
            let dialed = tokio::select! {
                dialed = connect(&self.config, &self.peer, &self.shared) => dialed,
                _ = self.shutdown.wait_for(|stop| *stop) => break,
            };
            let error = match dialed {
                Ok(stream) => {
                    let since = Instant::now();
                    self.shared.connections.fetch_add(1, Ordering::Relaxed);
                    self.shared.set(LinkState::Connected { since });
                    tracing::info!("peer link to {}: connected", self.peer);
                    self.last_logged = None;
                    let End::Failed(error) = self.pump(stream).await else { break };
                    if since.elapsed() >= Duration::from_millis(self.config.backoff_max_ms) {
                        failures = 0;
                    }
                    error
                }
                Err(error) => error,
            };
            let wait = backoff_ms(failures, self.config.backoff_min_ms, self.config.backoff_max_ms, &mut self.rng);
            failures = failures.saturating_add(1);
            let until = Instant::now() + Duration::from_millis(wait);
            self.log_failure(&error, wait);
            self.shared.set(match error {
                Error::PeerRefused { reason, .. } => LinkState::Refused { reason, retry_at: until },
                error => LinkState::BackingOff { until, error: error.to_string() },
            });
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                _ = self.shutdown.wait_for(|stop| *stop) => break,
            }
        }
        self.shared.set(LinkState::Stopped);
    }

    /// Logs a failure at `warn` the first time its kind is seen in a row, at `debug` after. A
    /// refusal's kind is its reason up to the first colon (`cluster id mismatch`), since the rest
    /// names this side's port, new on every dial; other failures are told apart by their text.
    fn log_failure(&mut self, error: &Error, wait_ms: u64) {
        let text = error.to_string();
        let kind = match error {
            Error::PeerRefused { reason, .. } => reason.split(':').next().unwrap_or_default().to_string(),
            _ => text.clone(),
        };
        if self.last_logged.as_deref() == Some(kind.as_str()) {
            tracing::debug!("peer link to {}: {text}; dialing again in {wait_ms} ms", self.peer);
        } else {
            tracing::warn!("peer link to {}: {text}; dialing again in {wait_ms} ms", self.peer);
            self.last_logged = Some(kind);
        }
    }

    /// Writes queued messages to a connected peer until the connection fails or the link stops.
    async fn pump(&mut self, mut stream: TcpStream) -> End {
        let (mut reader, mut writer) = stream.split();
        let mut probe = [0u8; 64];
        loop {
            let next = tokio::select! {
                biased;
                _ = self.shutdown.wait_for(|stop| *stop) => return End::Stop,
                read = reader.read(&mut probe) => Err(read),
                message = self.rx.recv() => Ok(message),
            };
            let (queued_at, first) = match next {
                Err(read) => return End::Failed(self.unexpected_read(read)),
                Ok(None) => return End::Stop,
                Ok(Some(queued)) => queued,
            };
            let delay_ms = self.delay_ms();
            if delay_ms > 0 {
                let due = queued_at + Duration::from_millis(delay_ms);
                tokio::select! {
                    biased;
                    _ = self.shutdown.wait_for(|stop| *stop) => return End::Stop,
                    _ = tokio::time::sleep_until(due.into()) => {}
                }
            }
            let frames = self.fill_batch(first, delay_ms == 0);
            if frames == 0 {
                continue;
            }
            let written = tokio::select! {
                written = writer.write_all(&self.out) => written,
                _ = self.shutdown.wait_for(|stop| *stop) => return End::Stop,
            };
            if let Err(e) = written {
                self.shared.messages_lost.fetch_add(frames as u64, Ordering::Relaxed);
                self.out.clear();
                return End::Failed(Error::peer_io(&self.peer, "writing", e));
            }
            self.shared.frames_sent.fetch_add(frames as u64, Ordering::Relaxed);
            self.shared.bytes_sent.fetch_add(self.out.len() as u64, Ordering::Relaxed);
            self.out.clear();
        }
    }

    /// The test fault's delay on this link, in milliseconds; 0 without test faults.
    fn delay_ms(&self) -> u64 {
        self.config.faults.as_ref().map_or(0, |f| f.delay_ms(&self.config.peer_node_id))
    }

    /// Encodes `first` and, if `more`, whatever else is queued into the write batch, within the
    /// batch limits; returns the frames in it. Messages that do not encode, or that a test fault
    /// discards, are dropped and counted.
    fn fill_batch(&mut self, first: M, more: bool) -> usize {
        let mut frames = 0;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            let discarded = self.config.faults.as_ref().is_some_and(|f| f.discards(&self.config.peer_node_id));
            if discarded {
                self.shared.messages_lost.fetch_add(1, Ordering::Relaxed);
            } else {
                match encode_frame(&message, self.config.frame_bytes_max, &mut self.out) {
                    Ok(_) => frames += 1,
                    Err(e) => {
                        self.shared.messages_lost.fetch_add(1, Ordering::Relaxed);
                        tracing::error!("peer link to {}: dropping a message: {e}", self.peer);
                    }
                }
            }
            if more && frames < WRITE_BATCH_FRAMES_MAX && self.out.len() < WRITE_BATCH_BYTES_MAX {
                next = self.rx.try_recv().ok().map(|(_, message)| message);
            }
        }
        frames
    }

    /// The error for a read on a link's socket, where nothing may arrive.
    fn unexpected_read(&self, read: std::io::Result<usize>) -> Error {
        match read {
            Ok(0) => Error::peer_io(
                &self.peer,
                "sending",
                std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "the peer closed the connection"),
            ),
            Ok(n) => Error::peer_protocol(&self.peer, format!("sent {n} bytes after its Welcome")),
            Err(e) => Error::peer_io(&self.peer, "reading", e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_bounds_and_is_reproducible() {
        let mut rng = StdRng::seed_from_u64(7);
        // failures -> (floor, ceiling) for min 50, max 2000.
        let table = [
            (0, 50, 50),
            (1, 50, 100),
            (2, 100, 200),
            (3, 200, 400),
            (5, 800, 1600),
            (6, 1000, 2000),
            (40, 1000, 2000),
            (u32::MAX, 1000, 2000),
        ];
        for (failures, floor, ceiling) in table {
            for _ in 0..200 {
                let wait = backoff_ms(failures, 50, 2000, &mut rng);
                assert!((floor..=ceiling).contains(&wait), "{failures} failures: {wait} ms");
            }
        }
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..10).map(|f| backoff_ms(f, 50, 2000, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
        // A maximum below the minimum is read as the minimum.
        assert_eq!(backoff_ms(3, 50, 10, &mut rng), 50);
    }

    #[test]
    fn jitter_seeds_differ_by_direction_and_stay_put() {
        let a = LinkConfig::new(Hello::new("demo", "n1"), "n2", "127.0.0.1:1");
        let b = LinkConfig::new(Hello::new("demo", "n2"), "n1", "127.0.0.1:1");
        assert_ne!(a.jitter_seed, b.jitter_seed);
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
