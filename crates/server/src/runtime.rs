//! The node runtime: one thread owns the replica and steps it with batches of inputs; a
//! second thread makes each batch durable, so that stepping and fsync overlap.
//!
//! Connections and HTTP handlers send [`Call`]s (a client's pipelined requests, as one unit)
//! into a bounded queue; the peer listener sends the messages other nodes send; the node's
//! ticker sends ticks. The **stepper** thread takes the first waiting input, then every input
//! already queued behind it up to `batch_requests_max` requests, steps the replica with each
//! in order, and has the replica write the batch out to the operating system (`write_out`:
//! the replication log and the engine). It passes the fsyncs still owed to the **syncer**
//! thread and goes on with the next batch at once. The syncer takes every batch waiting for
//! it, runs one fsync per file for all of them (the newest batch's: an older file was fsynced
//! when it was sealed, before any newer batch was written), marks them durable and wakes the
//! stepper, which then releases their held outputs: replies and messages to peers.
//!
//! This is group commit, pipelined (DESIGN §12): one fsync covers every batch that arrived
//! while the previous fsync ran, and no reply leaves before the writes it acknowledges, and
//! every write it may have read, are durable under `fsync = always`. Held outputs are
//! released batch by batch in the order the batches were stepped, so a read that saw an
//! earlier batch's write is never answered before that write is durable. A batch that owes no
//! fsync, stepped when nothing is held, is released at once (reads skip the syncer).
//!
//! Outputs the replica marks as depending on nothing unflushed here (records a leader ships as
//! the batch is written out, so that its followers write them while the syncer fsyncs them
//! here; replies released by acknowledgements) leave at once. The
//! stepper tells the replica how far its log is durable ([`Input::Durable`]) when it releases
//! a batch, which is what lets a leader acknowledge writes and its followers apply them: also a batch released at once because it owed
//! no fsync, which is every write batch of a node on `engine = "memory"` (its in-memory log is
//! durable once appended, as far as that node can make it). The notice names the log's reset
//! count when the batch was written out, so that one from before a follower emptied its log
//! vouches for nothing written after.
//!
//! Settings that change while the node runs (`CONFIG SET ack_timeout_ms`) reach the replica
//! through [`Handle::reconfigure`]: it leaves the newest [`Reconfigure`] in a slot the stepper
//! empties before each batch, so the replica changes on its own thread, between two inputs,
//! and never in the middle of a call. The slot is filled before `CONFIG SET` answers, and
//! every request sent after that answer reaches the stepper after it, so it sees the change.
//!
//! Both are plain OS threads rather than tokio tasks because they block (in fsync, and on
//! the queues); a blocked tokio worker would stall unrelated connections. Between batches,
//! when its queue is empty, the stepper gives the engine up to [`COMPACTION_STEP_BYTES`] of
//! compaction work in slices of [`MAINTAIN_SLICE_BYTES`], looking at its queue between two,
//! so that a message that arrives meanwhile waits for one slice (or, rarely, for a commit
//! that slice must wait for). A compaction's commit (its fsyncs, manifest, renames and
//! removals) and a replicating engine's segment seal run on the node's executor, a thread per
//! job (see the storage log's "Commit off the caller's thread"). How long each write-out and each slice
//! held the stepper is in `/metrics` (`replikv_write_out_duration_seconds`,
//! `replikv_maintain_duration_seconds`).
//!
//! If a step, a write or an fsync fails (a failed fsync, a damaged file), the runtime stops
//! for good: it records why, answers every call not yet answered with that reason instead of
//! its replies, refuses every later call, and tells the node to exit. An fsync is never
//! retried (see the storage module).
//!
//! CAVEATS
//! - A write's reply waits for the fsync of its batch even when the client did not ask for
//!   durability; there is no per-request relaxation yet.
//! - A replicating node fsyncs one file per group, its replication log (the write-ahead log);
//!   the engine's files are fsynced when the replica says (segment seals, before the log drops
//!   records, at shutdown), on the stepper; an engine seal's and a compaction's commits on the
//!   node's executor. The replication log's seal (three fsyncs) still runs on the
//!   stepper, and so does compaction's copying, a slice at a time.
//! - Held outputs are released by the stepper, so a reply crosses threads twice after its
//!   fsync (syncer -> stepper -> connection) rather than once.

use crate::metrics::Metrics;
use replikv_core::kv::DbKeys;
use replikv_core::kv::{Reply, Request};
use replikv_core::node::{Input, Outbox, Output, PeerMessage, Replica, ReplicationStatus, RequestId, WrittenOutAll};
use replikv_core::replication::Lsn;
use replikv_core::storage::{Engine, EngineStats, SyncHandle};
use replikv_core::version::NodeId;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, watch};

/// Bytes of compaction work the stepper does between two batches at most, so that a
/// compaction never holds a waiting client for long.
pub const COMPACTION_STEP_BYTES: u64 = 1024 * 1024;

/// Bytes of maintenance per slice: between slices the stepper looks at its queue and stops
/// if a message waits, so that a message arriving mid-maintenance waits for one slice (which
/// itself may wait for the engine's commit under way, rarely).
pub const MAINTAIN_SLICE_BYTES: u64 = 64 * 1024;

/// Batches written out but not yet fsynced, at most; a slow disk makes the stepper wait.
pub const SYNC_QUEUE_BATCHES_MAX: usize = 64;

/// Milliseconds without a tick after which the stepper ticks on its own: the ticker's ticks
/// are dropped when the queue is full, and timed work (heartbeats, timeouts, expiry) must not
/// stop under load.
const TICK_OVERDUE_MS: u64 = 250;

/// How often, at most, the stepper publishes the replication status for the status pages
/// (besides every tick).
const STATUS_PUBLISH_MS: u64 = 20;

/// A client's requests, stepped in order in one batch, answered together.
pub struct Call {
    /// The requests, in the order the client sent them.
    pub requests: Vec<Request>,
    /// Where the replies go, one per request, once they are durable; or why there are none.
    pub reply: ReplySender,
}

/// Where a call's replies go.
type ReplySender = oneshot::Sender<Result<Vec<Reply>, Stopped>>;

/// Sends a message to another node (best effort: the transport may drop it, and the
/// replication protocol resends).
pub type PeerSender = Arc<dyn Fn(NodeId, PeerMessage) + Send + Sync>;

/// Replica settings that change while the node runs (`CONFIG SET`), applied by the stepper
/// before its next batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reconfigure {
    /// Milliseconds a write waits for its acknowledgements (a read for its confirmation).
    pub ack_timeout_ms: u64,
    /// Milliseconds a follower waits for the reply to a forwarded write.
    pub forward_timeout_ms: u64,
}

/// What the stepper receives.
enum Message {
    /// Requests to execute.
    Call(Call),
    /// Time passed.
    Tick,
    /// A message from another node.
    Peer(NodeId, PeerMessage),
    /// The syncer made batches durable: release their outputs.
    Wake,
    /// Finish what is queued before this, make it durable, and exit.
    Shutdown,
}

/// A stepped batch on its way to the disk.
struct Batch {
    /// Its number, counting from 1.
    number: u64,
    /// The fsyncs it still needs, if any.
    syncs: Vec<SyncHandle>,
}

/// A call whose replies are not all in.
struct PendingCall {
    reply: ReplySender,
    replies: Vec<Option<Reply>>,
    missing: usize,
}

/// A batch's held outputs, waiting for its fsync.
struct Held {
    number: u64,
    /// The replication log's end once this batch is durable.
    lsn: Lsn,
    /// The log's reset count when the batch was written out.
    resets: u64,
    outputs: Vec<Output>,
}

/// Why a call got no reply.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub struct Stopped(pub String);

/// State the runtime threads share with the rest of the node.
#[derive(Debug, Default)]
struct Shared {
    /// Why the runtime stopped, once it has.
    stopped: Mutex<Option<String>>,
    /// Set with `stopped`, read by the stepper before each batch.
    failed: AtomicBool,
    /// The engine's counters after the last batch.
    stats: Mutex<EngineStats>,
    /// Keys per database after the last batch.
    keyspace: Mutex<Vec<DbKeys>>,
    /// The replication status, published by the stepper.
    replication: Mutex<ReplicationStatus>,
    /// Changes whenever the log's progress does (records appended, made durable, applied,
    /// acknowledged), published with the status: change streams wait on it.
    log_end: tokio::sync::watch::Sender<u64>,
    /// The replication log's last position, as last published.
    last_lsn: AtomicU64,
    /// The newest batch the syncer made durable.
    durable_batch: AtomicU64,
    /// Settings for the stepper to apply before its next batch; only the newest is kept.
    reconfigure: Mutex<Option<Reconfigure>>,
    /// Set with `reconfigure`, so that the stepper takes the lock only when there is work.
    reconfigure_pending: AtomicBool,
}

impl Shared {
    /// Records the first failure; returns the reason every unanswered call gets.
    fn fail(&self, why: &str) -> String {
        let mut stopped = self.stopped.lock().unwrap();
        let reason = stopped.get_or_insert_with(|| format!("node stopped: {why}")).clone();
        self.failed.store(true, Ordering::SeqCst);
        reason
    }
}

/// A cloneable handle to send calls to the runtime.
#[derive(Clone)]
pub struct Handle {
    /// The bounded queue into the stepper.
    tx: mpsc::Sender<Message>,
    /// Stop reason and counters.
    shared: Arc<Shared>,
}

impl Handle {
    /// Executes `requests` in one batch and returns their replies once durable.
    pub async fn call(&self, requests: Vec<Request>) -> Result<Vec<Reply>, Stopped> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Message::Call(Call { requests, reply })).await.is_err() {
            return Err(self.stopped());
        }
        rx.await.map_err(|_| self.stopped())?
    }

    /// Hands the runtime a message from another node, waiting while its queue is full.
    pub async fn deliver(&self, from: NodeId, message: PeerMessage) -> Result<(), Stopped> {
        self.tx.send(Message::Peer(from, message)).await.map_err(|_| self.stopped())
    }

    /// Why the runtime no longer answers.
    fn stopped(&self) -> Stopped {
        let why = self.shared.stopped.lock().unwrap().clone();
        Stopped(why.unwrap_or_else(|| "the node is shutting down".to_string()))
    }

    /// The reason the runtime stopped on a failure, if it has.
    pub fn failure(&self) -> Option<String> {
        self.shared.stopped.lock().unwrap().clone()
    }

    /// The engine's counters after the last batch.
    pub fn stats(&self) -> EngineStats {
        *self.shared.stats.lock().unwrap()
    }

    /// Every database holding keys, with its counts, after the last batch.
    pub fn keyspace(&self) -> Vec<DbKeys> {
        self.shared.keyspace.lock().unwrap().clone()
    }

    /// The replication status as last published: after the last batch when the node is idle,
    /// at most `STATUS_PUBLISH_MS` old under load.
    pub fn replication(&self) -> ReplicationStatus {
        self.shared.replication.lock().unwrap().clone()
    }

    /// A watch that changes whenever the replication log progresses (records appended, made
    /// durable, applied or acknowledged), as published with the status (at most
    /// `STATUS_PUBLISH_MS` late under load).
    pub fn watch_log_progress(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.log_end.subscribe()
    }

    /// The replication log's last position, as last published.
    pub fn last_lsn(&self) -> u64 {
        self.shared.last_lsn.load(Ordering::SeqCst)
    }

    /// Asks the runtime to do timed work; skipped if the queue is full (the next tick will).
    pub fn tick(&self) {
        let _ = self.tx.try_send(Message::Tick);
    }

    /// Has the stepper apply `settings` to the replica before its next batch (a newer call
    /// before then replaces them). Every call sent after this returns is stepped with them.
    pub fn reconfigure(&self, settings: Reconfigure) {
        *self.shared.reconfigure.lock().unwrap() = Some(settings);
        self.shared.reconfigure_pending.store(true, Ordering::SeqCst);
    }
}

/// The runtime's threads, to stop at shutdown.
pub struct Runtime {
    /// A handle for the node's own use (ticks, shutdown).
    handle: Handle,
    /// The stepper, joined at shutdown (it joins the syncer).
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Runtime {
    /// Starts the runtime threads over `replica`. Messages for other nodes go to `peers`.
    /// `failed` is set to true if the runtime stops on a failure, so that the node can exit.
    pub fn start<E: Engine + Send + 'static>(
        replica: Replica<E>,
        metrics: Arc<Metrics>,
        batch_requests_max: usize,
        queue_calls_max: usize,
        peers: PeerSender,
        failed: watch::Sender<bool>,
    ) -> Runtime {
        let (tx, rx) = mpsc::channel(queue_calls_max);
        let shared = Arc::new(Shared::default());
        *shared.stats.lock().unwrap() = replica.stats();
        *shared.keyspace.lock().unwrap() = replica.keyspace();
        *shared.replication.lock().unwrap() = replica.status(now_ms());
        shared.last_lsn.store(shared.replication.lock().unwrap().last_lsn, Ordering::SeqCst);
        let handle = Handle { tx: tx.clone(), shared: shared.clone() };
        let failed = Arc::new(failed);
        let (sync_tx, sync_rx) = std_mpsc::sync_channel(SYNC_QUEUE_BATCHES_MAX);
        let syncer =
            Syncer { rx: sync_rx, wake: tx, shared: shared.clone(), metrics: metrics.clone(), failed: failed.clone() };
        let syncer = std::thread::Builder::new()
            .name("replikv-syncer".into())
            .spawn(move || syncer.run())
            .expect("spawning the syncer thread");
        let written_lsn = replica.last_lsn();
        let mut stepper = Stepper {
            replica,
            rx,
            shared,
            metrics,
            peers,
            batch_requests_max,
            sync_tx: Some(sync_tx),
            calls: BTreeMap::new(),
            held: VecDeque::new(),
            batches: 0,
            next_id: 0,
            last_publish_ms: 0,
            progress: Default::default(),
            last_tick_ms: 0,
            told_durable: None,
            written_lsn,
        };
        let thread = std::thread::Builder::new()
            .name("replikv-runtime".into())
            .spawn(move || {
                // A panic is a broken invariant: stop as for any failure, never as a clean exit.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stepper.run()));
                let failure = match result {
                    Ok(Ok(())) => None,
                    Ok(Err(why)) => Some(why.to_string()),
                    Err(panic) => Some(format!("invariant broken: {}", panic_text(&*panic))),
                };
                let reason = match failure {
                    Some(why) => {
                        tracing::error!("runtime stopped: {why}");
                        let reason = stepper.shared.fail(&why);
                        let _ = failed.send(true);
                        reason
                    }
                    None => "the node is shutting down".to_string(),
                };
                stepper.rx.close();
                for (_, call) in std::mem::take(&mut stepper.calls) {
                    let _ = call.reply.send(Err(Stopped(reason.clone())));
                }
                // Closing the queue lets the syncer finish and exit.
                drop(stepper.sync_tx.take());
                let _ = syncer.join();
            })
            .expect("spawning the runtime thread");
        Runtime { handle, thread: Some(thread) }
    }

    /// A handle to send calls.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Lets the runtime finish every call queued so far, make it durable, and exit; waits.
    pub async fn shutdown(mut self) {
        let _ = self.handle.tx.send(Message::Shutdown).await;
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// The message a panic carried.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(text), _) => text.to_string(),
        (_, Some(text)) => text.clone(),
        _ => "a panic without a message".to_string(),
    }
}

/// The stepper thread's state.
struct Stepper<E> {
    replica: Replica<E>,
    rx: mpsc::Receiver<Message>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    peers: PeerSender,
    batch_requests_max: usize,
    /// Where stepped batches go; `None` once closed.
    sync_tx: Option<std_mpsc::SyncSender<Batch>>,
    /// Calls not fully answered, by the id of their first request. On a failure, these are
    /// answered with the reason.
    calls: BTreeMap<RequestId, PendingCall>,
    /// Batches whose outputs wait for their fsync, oldest first.
    held: VecDeque<Held>,
    /// Batches stepped so far.
    batches: u64,
    /// The last request id handed out.
    next_id: RequestId,
    /// When the replication status was last published.
    last_publish_ms: u64,
    /// What a change stream's progress was at the last publish: the log's end, its durable
    /// end, the applied position, each follower's acknowledged one.
    progress: (u64, u64, u64, Vec<u64>),
    /// When the replica last ticked.
    last_tick_ms: u64,
    /// The last log position the replica was told is durable, so that a batch released at
    /// once that wrote no record (a read) does not step it again.
    told_durable: Option<(Lsn, u64)>,
    /// The newest record handed to `write_out` (at open, what the log held).
    written_lsn: Lsn,
}

/// The `now` every step of a batch runs at (see [`crate::clock`]).
fn now_ms() -> u64 {
    crate::clock::now_ms()
}

impl<E: Engine> Stepper<E> {
    /// Runs batches until shutdown (Ok) or a failure (Err, which stops the node).
    fn run(&mut self) -> replikv_core::Result<()> {
        let mut outbox = Outbox::default();
        while let Some(first) = self.rx.blocking_recv() {
            if self.shared.failed.load(Ordering::SeqCst) {
                return Err(replikv_core::Error::Stopped("the syncer failed".into()));
            }
            let batch = self.collect(first);
            // After collecting: a request sent after CONFIG SET answered is in this batch or a
            // later one, and the new settings were in place before it was sent.
            self.maybe_reconfigure();
            let now = now_ms();
            let mut shutdown = false;
            let mut requests = 0;
            let mut ticked = false;
            let mut stepped = batch.iter().any(|m| !matches!(m, Message::Wake));
            if now.saturating_sub(self.last_tick_ms) >= TICK_OVERDUE_MS
                && !batch.iter().any(|m| matches!(m, Message::Tick))
            {
                ticked = true;
                stepped = true;
                self.last_tick_ms = now;
                self.replica.step(now, Input::Tick, &mut outbox)?;
                self.dispatch(std::mem::take(&mut outbox.now));
            }
            self.release_durable(now, &mut outbox)?;
            // Telling the replica what is durable can append records (a leader releasing the
            // writes a handover held): those must be written out like any batch's.
            stepped |= self.replica.last_lsn() > self.written_lsn;
            for message in batch {
                match message {
                    Message::Call(call) => {
                        let count = call.requests.len();
                        requests += count;
                        let first_id = self.next_id + 1;
                        // Held before stepping, so that a failure mid-call answers it too.
                        let pending = PendingCall { reply: call.reply, replies: vec![None; count], missing: count };
                        self.calls.insert(first_id, pending);
                        for request in call.requests {
                            self.next_id += 1;
                            let input = Input::Request { id: self.next_id, request };
                            self.replica.step(now, input, &mut outbox)?;
                        }
                        if count == 0 {
                            self.answer(first_id, None);
                        }
                    }
                    Message::Tick => {
                        ticked = true;
                        self.last_tick_ms = now;
                        self.replica.step(now, Input::Tick, &mut outbox)?;
                    }
                    Message::Peer(from, message) => {
                        self.replica.step(now, Input::Message { from, message }, &mut outbox)?;
                    }
                    Message::Wake => {}
                    Message::Shutdown => shutdown = true,
                }
                self.dispatch(std::mem::take(&mut outbox.now));
            }
            // A batch of wake-ups alone wrote nothing: no write-out, no fsync to wait for.
            let written = match stepped {
                true => {
                    let started = Instant::now();
                    let written = self.replica.write_out(now, &mut outbox)?;
                    self.metrics.write_out_seconds.observe(started.elapsed().as_secs_f64());
                    written
                }
                // Every record appended so far was written out with the batch that appended it.
                false => WrittenOutAll {
                    last_lsn: self.written_lsn,
                    resets: self.replica.log_resets(),
                    ..Default::default()
                },
            };
            self.written_lsn = written.last_lsn;
            self.metrics.bytes_written.inc_by(written.bytes);
            if requests > 0 {
                self.metrics.batch_requests.observe(requests as f64);
            }
            // Published before the replies leave, so a client that reads them sees its writes.
            if stepped {
                let stats = self.replica.stats();
                self.metrics.set_engine(&stats);
                *self.shared.stats.lock().unwrap() = stats;
                *self.shared.keyspace.lock().unwrap() = self.replica.keyspace();
            }
            let outputs = std::mem::take(&mut outbox.after_flush);
            if written.syncs.is_empty() && self.held.is_empty() {
                // Nothing owed and nothing before it waiting: release at once. The log is as
                // durable as this node can make it through what the batch wrote (an in-memory
                // log, or nothing appended): say so, or a leader would never ship.
                self.dispatch(outputs);
                if self.told_durable != Some((written.last_lsn, written.resets)) {
                    self.tell_durable(now, written.last_lsn, written.resets, &mut outbox)?;
                }
            } else {
                self.batches += 1;
                let number = self.batches;
                self.held.push_back(Held { number, lsn: written.last_lsn, resets: written.resets, outputs });
                let sync_tx = self.sync_tx.as_ref().expect("open until the stepper exits");
                if sync_tx.send(Batch { number, syncs: written.syncs }).is_err() {
                    return Err(replikv_core::Error::Stopped("the syncer is gone".into()));
                }
            }
            // What a leader shipped as the batch was written out: its followers write it while
            // the syncer fsyncs it here (DESIGN §12).
            self.dispatch(std::mem::take(&mut outbox.now));
            // Fresh whenever the node goes idle; throttled under load.
            if ticked || self.rx.is_empty() || now.saturating_sub(self.last_publish_ms) >= STATUS_PUBLISH_MS {
                self.publish(now);
            }
            if shutdown {
                self.finish()?;
                tracing::info!("runtime finished its queue");
                return Ok(());
            }
            self.maintain()?;
        }
        Ok(())
    }

    /// Runs up to [`COMPACTION_STEP_BYTES`] of maintenance while the queue is empty, in
    /// slices of [`MAINTAIN_SLICE_BYTES`]: a message that arrives meanwhile waits for the
    /// slice under way, not for the whole step.
    fn maintain(&mut self) -> replikv_core::Result<()> {
        let mut spent = 0;
        while spent < COMPACTION_STEP_BYTES && self.rx.is_empty() {
            let started = Instant::now();
            self.replica.maintain(MAINTAIN_SLICE_BYTES)?;
            self.metrics.maintain_seconds.observe(started.elapsed().as_secs_f64());
            spent += MAINTAIN_SLICE_BYTES;
        }
        Ok(())
    }

    /// Applies the settings [`Handle::reconfigure`] left, if any.
    fn maybe_reconfigure(&mut self) {
        if !self.shared.reconfigure_pending.swap(false, Ordering::SeqCst) {
            return;
        }
        if let Some(settings) = self.shared.reconfigure.lock().unwrap().take() {
            self.replica.set_timeouts(settings.ack_timeout_ms, settings.forward_timeout_ms);
            tracing::info!(
                ack_timeout_ms = settings.ack_timeout_ms,
                forward_timeout_ms = settings.forward_timeout_ms,
                "replica reconfigured"
            );
        }
    }

    /// Publishes the replication status for the status pages.
    fn publish(&mut self, now: u64) {
        self.last_publish_ms = now;
        let status = self.replica.status(now);
        self.metrics.set_replication(&status);
        // Anything that moves what a change stream may deliver: the log's end, its durable
        // end, a follower's applied position, the followers' acknowledgements (the commit).
        let progress = (
            status.last_lsn,
            status.durable_lsn,
            status.leader.as_ref().map_or(0, |l| l.applied_lsn),
            status.followers.iter().map(|f| f.acked_lsn).collect::<Vec<_>>(),
        );
        if progress != self.progress {
            self.progress = progress;
            self.shared.log_end.send_modify(|changes| *changes += 1);
        }
        self.shared.last_lsn.store(status.last_lsn, Ordering::SeqCst);
        *self.shared.replication.lock().unwrap() = status;
    }

    /// Releases the held outputs of every batch the syncer has made durable, and tells the
    /// replica how far its log is durable.
    fn release_durable(&mut self, now: u64, outbox: &mut Outbox) -> replikv_core::Result<()> {
        let durable = self.shared.durable_batch.load(Ordering::SeqCst);
        // The newest batch released: batches are written out in order, so its position is the
        // furthest (a reset between batches makes the earlier ones' positions stale anyway).
        let mut newest = None;
        while self.held.front().is_some_and(|h| h.number <= durable) {
            let held = self.held.pop_front().expect("front exists");
            newest = Some((held.lsn, held.resets));
            self.dispatch(held.outputs);
        }
        if let Some((lsn, resets)) = newest {
            self.tell_durable(now, lsn, resets, outbox)?;
        }
        Ok(())
    }

    /// Tells the replica its log is durable through `lsn` ([`Input::Durable`]) and sends what
    /// that releases (a leader ships up to it, and answers what waited on it).
    fn tell_durable(&mut self, now: u64, lsn: Lsn, resets: u64, outbox: &mut Outbox) -> replikv_core::Result<()> {
        self.told_durable = Some((lsn, resets));
        self.replica.step(now, Input::Durable { lsn, resets }, outbox)?;
        self.dispatch(std::mem::take(&mut outbox.now));
        Ok(())
    }

    /// At shutdown: waits until every batch is durable and releases it, then makes the
    /// engine's files durable too (a replicating node's are not fsynced per batch).
    fn finish(&mut self) -> replikv_core::Result<()> {
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        let mut outbox = Outbox::default();
        while !self.held.is_empty() && Instant::now() < deadline {
            if self.shared.failed.load(Ordering::SeqCst) {
                return Err(replikv_core::Error::Stopped("the syncer failed".into()));
            }
            self.release_durable(now_ms(), &mut outbox)?;
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        self.replica.flush(now_ms())?;
        Ok(())
    }

    /// Sends replies to their calls and messages to their peers.
    fn dispatch(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Reply { id, reply } => self.answer(id, Some((id, reply))),
                Output::Send { to, message } => (self.peers)(to, message),
            }
        }
    }

    /// Records request `id`'s reply in its call (found by `key`, any id of the call), and
    /// answers the call once every reply is in.
    fn answer(&mut self, key: RequestId, reply: Option<(RequestId, Reply)>) {
        let Some((&first, call)) = self.calls.range_mut(..=key).next_back() else {
            debug_assert!(false, "a reply for request {key}, which no call holds");
            return;
        };
        if let Some((id, reply)) = reply {
            let Some(slot) = call.replies.get_mut((id - first) as usize) else {
                debug_assert!(false, "request {id} is outside its call");
                return;
            };
            debug_assert!(slot.is_none(), "two replies for request {id}");
            if slot.replace(reply).is_none() {
                call.missing -= 1;
            }
        }
        if call.missing == 0 {
            let call = self.calls.remove(&first).expect("found above");
            let replies = call.replies.into_iter().map(|r| r.expect("every reply is in")).collect();
            // The client may have gone; its writes stand.
            let _ = call.reply.send(Ok(replies));
        }
    }

    /// The first message and every message queued behind it, up to the batch limit.
    fn collect(&mut self, first: Message) -> Vec<Message> {
        let size = |m: &Message| if let Message::Call(c) = m { c.requests.len() } else { 1 };
        let mut total = size(&first);
        let mut batch = vec![first];
        while total < self.batch_requests_max {
            match self.rx.try_recv() {
                Ok(message) => {
                    total += size(&message);
                    batch.push(message);
                }
                Err(_) => break,
            }
        }
        batch
    }
}

/// The syncer thread's state.
struct Syncer {
    rx: std_mpsc::Receiver<Batch>,
    /// The stepper's queue, to wake it when batches are durable.
    wake: mpsc::Sender<Message>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    failed: Arc<watch::Sender<bool>>,
}

impl Syncer {
    /// Makes batches durable, in order, until the stepper closes the queue.
    fn run(self) {
        while let Ok(first) = self.rx.recv() {
            let mut group = vec![first];
            group.extend(self.rx.try_iter());
            if self.shared.failed.load(Ordering::SeqCst) || self.sync(&group).is_err() {
                continue;
            }
            let newest = group.last().expect("one at least").number;
            self.shared.durable_batch.store(newest, Ordering::SeqCst);
            // A full queue means the stepper is busy and reads `durable_batch` before its next
            // batch anyway.
            let _ = self.wake.try_send(Message::Wake);
        }
    }

    /// Runs, for each file the group owes an fsync, the newest batch's fsync of it.
    fn sync(&self, group: &[Batch]) -> Result<(), String> {
        let mut newest: Vec<&SyncHandle> = Vec::new();
        for handle in group.iter().rev().flat_map(|b| b.syncs.iter()) {
            if !newest.iter().any(|h| h.same_gate(handle)) {
                newest.push(handle);
            }
        }
        for handle in newest {
            let started = Instant::now();
            match handle.sync() {
                Ok(()) => {
                    self.metrics.fsync_seconds.observe(started.elapsed().as_secs_f64());
                    self.metrics.fsyncs.inc();
                }
                Err(e) => {
                    tracing::error!("runtime stopped: {e}");
                    let reason = self.shared.fail(&e.to_string());
                    let _ = self.failed.send(true);
                    // Wake the stepper so that it sees the failure and answers every call.
                    let _ = self.wake.try_send(Message::Wake);
                    return Err(reason);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use replikv_core::storage::MemoryEngine;
    use replikv_core::version::NodeId;

    fn no_peers() -> PeerSender {
        Arc::new(|_, _| panic!("a lone node sends no messages"))
    }

    fn set(key: &str) -> Request {
        Request::Set {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from_static(b"v"),
            condition: Default::default(),
            get: false,
            expiry: Default::default(),
        }
    }

    #[tokio::test]
    async fn replies_come_back_in_order_after_flush() {
        let replica = Replica::new(MemoryEngine::new(), NodeId(1));
        let (failed, _) = watch::channel(false);
        let runtime = Runtime::start(replica, Arc::new(Metrics::new()), 16, 16, no_peers(), failed);
        let handle = runtime.handle();
        let replies =
            handle.call(vec![set("a"), Request::Get { key: Bytes::from("a") }, Request::DbSize]).await.unwrap();
        assert_eq!(replies, vec![Reply::Ok, Reply::Bulk(Bytes::from("v")), Reply::Int(1)]);
        assert_eq!(handle.stats().keys, 1, "counters published after the batch");
        runtime.shutdown().await;
        assert!(handle.call(vec![Request::DbSize]).await.is_err(), "no calls after shutdown");
    }

    #[tokio::test]
    async fn failed_flush_stops_node_and_withholds_replies() {
        let mut engine = MemoryEngine::new();
        engine.fail_next_flush();
        let replica = Replica::new(engine, NodeId(1));
        let (failed, mut failed_rx) = watch::channel(false);
        let runtime = Runtime::start(replica, Arc::new(Metrics::new()), 16, 16, no_peers(), failed);
        let handle = runtime.handle();
        let err = handle.call(vec![set("a")]).await.expect_err("the write's flush failed: no OK");
        assert!(err.0.contains("fsync failed"), "{err}");
        failed_rx.changed().await.unwrap();
        assert!(*failed_rx.borrow(), "the node is told to stop");
        let again = handle.call(vec![set("b")]).await.expect_err("refused after the failure");
        assert!(again.0.contains("node stopped"), "{again}");
        assert!(handle.failure().is_some());
    }

    #[tokio::test]
    async fn failed_fsync_on_the_syncer_refuses_the_batch_and_everything_after() {
        let engine = SyncFailEngine(MemoryEngine::new());
        let replica = Replica::new(engine, NodeId(1));
        let (failed, mut failed_rx) = watch::channel(false);
        let runtime = Runtime::start(replica, Arc::new(Metrics::new()), 16, 16, no_peers(), failed);
        let handle = runtime.handle();
        let err = handle.call(vec![set("a")]).await.expect_err("fsync failed: no OK");
        assert!(err.0.contains("node stopped"), "{err}");
        failed_rx.changed().await.unwrap();
        assert!(handle.call(vec![set("b")]).await.is_err(), "refused after the failure");
    }

    /// A memory engine whose write-outs owe an fsync that always fails.
    struct SyncFailEngine(MemoryEngine);

    impl Engine for SyncFailEngine {
        fn get(&self, key: &[u8]) -> replikv_core::Result<Option<replikv_core::storage::Record>> {
            self.0.get(key)
        }
        fn meta(&self, key: &[u8]) -> Option<replikv_core::storage::Meta> {
            self.0.meta(key)
        }
        fn put(&mut self, key: Bytes, record: replikv_core::storage::Record) -> replikv_core::Result<()> {
            self.0.put(key, record)
        }
        fn scan(&self, from: std::ops::Bound<&[u8]>, limit: usize) -> Vec<(Bytes, replikv_core::storage::Meta)> {
            self.0.scan(from, limit)
        }
        fn expiring(&self, until_ms: u64, limit: usize) -> Vec<Bytes> {
            self.0.expiring(until_ms, limit)
        }
        fn flush(&mut self, now_ms: u64) -> replikv_core::Result<replikv_core::storage::Flushed> {
            self.0.flush(now_ms)
        }
        fn write_out(&mut self, _now_ms: u64) -> replikv_core::Result<replikv_core::storage::WrittenOut> {
            // fsync on a file opened read-only from /proc fails with EINVAL: a real failing fsync.
            let file = std::fs::File::open("/proc/self/stat").unwrap();
            let gate = Arc::new(replikv_core::storage::FsyncGate::default());
            let sync = SyncHandle::new(Arc::new(file), "/proc/self/stat".into(), gate);
            Ok(replikv_core::storage::WrittenOut { bytes: 1, sync: Some(sync) })
        }
        fn maintain(&mut self, budget_bytes: u64) -> replikv_core::Result<()> {
            self.0.maintain(budget_bytes)
        }
        fn stats(&self) -> EngineStats {
            self.0.stats()
        }
        fn last_timestamp(&self) -> replikv_core::version::Timestamp {
            self.0.last_timestamp()
        }
    }
}
