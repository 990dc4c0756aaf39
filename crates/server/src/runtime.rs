//! The node runtime: one thread owns the replica and steps it with batches of inputs; a
//! second thread makes each batch durable, so that stepping and fsync overlap.
//!
//! Connections and HTTP handlers send [`Call`]s (a client's pipelined requests, as one unit)
//! into a bounded queue. The **stepper** thread takes the first waiting call, then every call
//! already queued behind it up to `batch_requests_max` requests, steps the replica with each
//! request in order, and has the engine write the batch out to the operating system
//! (`write_out`). It passes the batch's replies, with the fsync still owed, to the **syncer**
//! thread and goes on with the next batch at once. The syncer takes every batch waiting for
//! it, runs one fsync for all of them (the newest batch's file: an older file was fsynced
//! when it was sealed, before any newer batch was written), and only then sends their replies.
//!
//! This is group commit, pipelined (DESIGN §12): one fsync covers every batch that arrived
//! while the previous fsync ran, and no reply leaves before the writes it acknowledges, and
//! every write it may have read, are durable under `fsync = always`. Batches are released
//! in the order they were stepped, so a read that saw an earlier batch's write is never
//! answered before that write is durable.
//!
//! Both are plain OS threads rather than tokio tasks because they block (in fsync, and on
//! the queues); a blocked tokio worker would stall unrelated connections. Between batches,
//! when its queue is empty, the stepper gives the engine a bounded slice of compaction work.
//!
//! If a step, a write or an fsync fails (a failed fsync, a damaged file), the runtime stops
//! for good: it records why, answers every call not yet answered with that reason instead of
//! its replies, refuses every later call, and tells the node to exit. An fsync is never
//! retried (see the storage module).
//!
//! CAVEATS
//! - A write's reply waits for the fsync of its batch even when the client did not ask for
//!   durability; there is no per-request relaxation yet.

use crate::metrics::Metrics;
use replikv_core::kv::{Reply, Request};
use replikv_core::replica::{Input, Output, Replica};
use replikv_core::storage::{Engine, EngineStats, SyncHandle};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};

/// Bytes of compaction work the stepper does between two batches at most, so that a
/// compaction never holds a waiting client for long.
pub const COMPACTION_STEP_BYTES: u64 = 1024 * 1024;

/// Batches written out but not yet fsynced, at most; a slow disk makes the stepper wait.
pub const SYNC_QUEUE_BATCHES_MAX: usize = 64;

/// A client's requests, stepped in order in one batch, answered together.
pub struct Call {
    /// The requests, in the order the client sent them.
    pub requests: Vec<Request>,
    /// Where the replies go, one per request, once they are durable; or why there are none.
    pub reply: ReplySender,
}

/// Where a call's replies go.
type ReplySender = oneshot::Sender<Result<Vec<Reply>, Stopped>>;

/// What the stepper receives.
enum Message {
    /// Requests to execute.
    Call(Call),
    /// Time passed.
    Tick,
    /// Finish what is queued before this, make it durable, and exit.
    Shutdown,
}

/// A stepped batch on its way to the disk.
struct Batch {
    /// The fsync it still needs, if any.
    sync: Option<SyncHandle>,
    /// Its replies, held until the fsync succeeds.
    answers: Vec<(ReplySender, Vec<Reply>)>,
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

    /// Asks the runtime to do timed work; skipped if the queue is full (the next tick will).
    pub fn tick(&self) {
        let _ = self.tx.try_send(Message::Tick);
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
    /// Starts the runtime threads over `replica`. `failed` is set to true if the runtime stops
    /// on a failure, so that the node can exit.
    pub fn start<E: Engine + Send + 'static>(
        replica: Replica<E>,
        metrics: Arc<Metrics>,
        batch_requests_max: usize,
        queue_calls_max: usize,
        failed: watch::Sender<bool>,
    ) -> Runtime {
        let (tx, rx) = mpsc::channel(queue_calls_max);
        let shared = Arc::new(Shared::default());
        *shared.stats.lock().unwrap() = replica.stats();
        let handle = Handle { tx, shared: shared.clone() };
        let failed = Arc::new(failed);
        let (sync_tx, sync_rx) = std_mpsc::sync_channel(SYNC_QUEUE_BATCHES_MAX);
        let syncer = Syncer { rx: sync_rx, shared: shared.clone(), metrics: metrics.clone(), failed: failed.clone() };
        let syncer = std::thread::Builder::new()
            .name("replikv-syncer".into())
            .spawn(move || syncer.run())
            .expect("spawning the syncer thread");
        let mut stepper =
            Stepper { replica, rx, shared, metrics, batch_requests_max, sync_tx: Some(sync_tx), answers: Vec::new() };
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
                if let Some(why) = failure {
                    tracing::error!("runtime stopped: {why}");
                    let reason = stepper.shared.fail(&why);
                    for (reply, _) in stepper.answers.drain(..) {
                        let _ = reply.send(Err(Stopped(reason.clone())));
                    }
                    stepper.rx.close();
                    let _ = failed.send(true);
                }
                // Closing the queue lets the syncer answer what it holds and exit.
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
    batch_requests_max: usize,
    /// Where stepped batches go; `None` once closed.
    sync_tx: Option<std_mpsc::SyncSender<Batch>>,
    /// The current batch's replies, until it goes to the syncer; on a failure, these calls
    /// are answered with the reason.
    answers: Vec<(ReplySender, Vec<Reply>)>,
}

/// Wall-clock milliseconds since the Unix epoch: the `now` every step of a batch runs at.
fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl<E: Engine> Stepper<E> {
    /// Runs batches until shutdown (Ok) or a failure (Err, which stops the node).
    fn run(&mut self) -> replikv_core::Result<()> {
        let mut outbox = Vec::new();
        let mut next_id = 0u64;
        while let Some(first) = self.rx.blocking_recv() {
            if self.shared.failed.load(Ordering::SeqCst) {
                return Err(replikv_core::Error::Stopped("the syncer failed".into()));
            }
            let batch = self.collect(first);
            let now = now_ms();
            let mut shutdown = false;
            let mut requests = 0;
            for message in batch {
                match message {
                    Message::Call(call) => {
                        let count = call.requests.len();
                        requests += count;
                        // Held before stepping, so that a failure mid-call answers it too.
                        self.answers.push((call.reply, Vec::new()));
                        for request in call.requests {
                            next_id += 1;
                            self.replica.step(now, Input::Request { id: next_id, request }, &mut outbox)?;
                        }
                        let replies: Vec<Reply> = outbox.drain(..).map(|Output::Reply { reply, .. }| reply).collect();
                        assert_eq!(replies.len(), count, "one reply per request");
                        self.answers.last_mut().expect("pushed above").1 = replies;
                    }
                    Message::Tick => self.replica.step(now, Input::Tick, &mut outbox)?,
                    Message::Shutdown => shutdown = true,
                }
            }
            let written = self.replica.write_out(now)?;
            self.metrics.bytes_written.inc_by(written.bytes);
            self.metrics.batch_requests.observe(requests as f64);
            let stats = self.replica.stats();
            self.metrics.set_engine(&stats);
            *self.shared.stats.lock().unwrap() = stats;
            let sync_tx = self.sync_tx.as_ref().expect("open until the stepper exits");
            let answers = std::mem::take(&mut self.answers);
            if sync_tx.send(Batch { sync: written.sync, answers }).is_err() {
                return Err(replikv_core::Error::Stopped("the syncer is gone".into()));
            }
            if shutdown {
                tracing::info!("runtime finished its queue");
                return Ok(());
            }
            if self.rx.is_empty() {
                self.replica.maintain(COMPACTION_STEP_BYTES)?;
            }
        }
        Ok(())
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
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    failed: Arc<watch::Sender<bool>>,
}

impl Syncer {
    /// Makes batches durable and releases their replies, in order, until the stepper closes
    /// the queue. After a failure it answers everything with the reason.
    fn run(self) {
        while let Ok(first) = self.rx.recv() {
            let mut group = vec![first];
            group.extend(self.rx.try_iter());
            let result = match self.shared.failed.load(Ordering::SeqCst) {
                true => Err(self.shared.stopped.lock().unwrap().clone().unwrap_or_default()),
                false => self.sync(&group),
            };
            for batch in group {
                for (reply, replies) in batch.answers {
                    // The client may have gone; its writes stand.
                    let _ = reply.send(result.clone().map(|()| replies).map_err(Stopped));
                }
            }
        }
    }

    /// Runs the newest fsync the group owes. Err carries the reason calls are refused with.
    fn sync(&self, group: &[Batch]) -> Result<(), String> {
        let Some(handle) = group.iter().rev().find_map(|b| b.sync.as_ref()) else { return Ok(()) };
        let started = Instant::now();
        match handle.sync() {
            Ok(()) => {
                self.metrics.fsync_seconds.observe(started.elapsed().as_secs_f64());
                self.metrics.fsyncs.inc();
                Ok(())
            }
            Err(e) => {
                tracing::error!("runtime stopped: {e}");
                let reason = self.shared.fail(&e.to_string());
                let _ = self.failed.send(true);
                Err(reason)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use replikv_core::storage::MemoryEngine;
    use replikv_core::version::NodeId;

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
        let runtime = Runtime::start(replica, Arc::new(Metrics::new()), 16, 16, failed);
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
        let runtime = Runtime::start(replica, Arc::new(Metrics::new()), 16, 16, failed);
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
        let runtime = Runtime::start(replica, Arc::new(Metrics::new()), 16, 16, failed);
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
