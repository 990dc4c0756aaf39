//! The node runtime: one thread owns the replica and steps it with batches of inputs.
//!
//! Connections and HTTP handlers send [`Call`]s (a client's pipelined requests, as one unit)
//! into a bounded queue. The runtime thread takes the first waiting call, then every call
//! already queued behind it up to `batch_requests_max` requests, steps the replica with each
//! request in order, calls `flush` once, and only then sends the replies (group commit): one
//! fsync covers the whole batch, and no reply leaves before the writes it acknowledges are
//! durable under `fsync = always`. Between batches, when the queue is empty, the runtime gives
//! the engine a bounded slice of compaction work.
//!
//! The runtime is a plain OS thread rather than a tokio task because `flush` blocks in fsync;
//! a blocked tokio worker would stall unrelated connections.
//!
//! If a step or a flush fails (a failed fsync, a damaged file), the runtime stops for good:
//! it records why, drops every reply of the failed batch unsent, refuses every later call,
//! and tells the node to exit. An fsync is never retried (see the storage module).
//!
//! CAVEATS
//! - Batches are not pipelined yet: while batch N is being fsynced, batch N+1 waits in the
//!   queue instead of being stepped.

use crate::metrics::Metrics;
use replikv_core::kv::{Reply, Request};
use replikv_core::replica::{Input, Output, Replica};
use replikv_core::storage::{Engine, EngineStats};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};

/// Bytes of compaction work the runtime does between two batches at most, so that a
/// compaction never holds a waiting client for long.
pub const COMPACTION_STEP_BYTES: u64 = 1024 * 1024;

/// A client's requests, stepped in order in one batch, answered together.
pub struct Call {
    /// The requests, in the order the client sent them.
    pub requests: Vec<Request>,
    /// Where the replies go, one per request, once they are durable; or why there are none.
    pub reply: ReplySender,
}

/// What the runtime thread receives.
enum Message {
    /// Requests to execute.
    Call(Call),
    /// Time passed.
    Tick,
    /// Finish what is queued before this, flush, and exit.
    Shutdown,
}

/// Where a call's replies go.
type ReplySender = oneshot::Sender<Result<Vec<Reply>, Stopped>>;

/// Why a call got no reply.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub struct Stopped(pub String);

/// State the runtime shares with the rest of the node.
#[derive(Debug, Default)]
struct Shared {
    /// Why the runtime stopped, once it has.
    stopped: Mutex<Option<String>>,
    /// The engine's counters after the last batch.
    stats: Mutex<EngineStats>,
}

/// A cloneable handle to send calls to the runtime.
#[derive(Clone)]
pub struct Handle {
    /// The bounded queue into the runtime thread.
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

/// The runtime thread, to stop at shutdown.
pub struct Runtime {
    /// A handle for the node's own use (ticks, shutdown).
    handle: Handle,
    /// The thread, joined at shutdown.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Runtime {
    /// Starts the runtime thread over `replica`. `failed` is set to true if the runtime stops
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
        let mut worker = Worker { replica, rx, shared, metrics, batch_requests_max, answers: Vec::new() };
        let thread = std::thread::Builder::new()
            .name("replikv-runtime".into())
            .spawn(move || {
                if let Err(why) = worker.run() {
                    tracing::error!("runtime stopped: {why}");
                    let why = format!("node stopped: {why}");
                    *worker.shared.stopped.lock().unwrap() = Some(why.clone());
                    worker.rx.close();
                    for (reply, _) in worker.answers.drain(..) {
                        let _ = reply.send(Err(Stopped(why.clone())));
                    }
                    let _ = failed.send(true);
                }
            })
            .expect("spawning the runtime thread");
        Runtime { handle, thread: Some(thread) }
    }

    /// A handle to send calls.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Lets the runtime finish every call queued so far, flush, and exit; waits for it.
    pub async fn shutdown(mut self) {
        let _ = self.handle.tx.send(Message::Shutdown).await;
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// The runtime thread's state.
struct Worker<E> {
    replica: Replica<E>,
    rx: mpsc::Receiver<Message>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    batch_requests_max: usize,
    /// Replies of the current batch, held until its flush succeeds.
    answers: Vec<(ReplySender, Vec<Reply>)>,
}

/// Wall-clock milliseconds since the Unix epoch: the `now` every step of a batch runs at.
fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl<E: Engine> Worker<E> {
    /// Runs batches until shutdown (Ok) or a failure (Err, which stops the node).
    fn run(&mut self) -> replikv_core::Result<()> {
        let mut outbox = Vec::new();
        let mut next_id = 0u64;
        while let Some(first) = self.rx.blocking_recv() {
            let batch = self.collect(first);
            let now = now_ms();
            let mut shutdown = false;
            let mut requests = 0;
            for message in batch {
                match message {
                    Message::Call(call) => {
                        requests += call.requests.len();
                        let count = call.requests.len();
                        for request in call.requests {
                            next_id += 1;
                            self.replica.step(now, Input::Request { id: next_id, request }, &mut outbox)?;
                        }
                        let replies: Vec<Reply> = outbox.drain(..).map(|Output::Reply { reply, .. }| reply).collect();
                        assert_eq!(replies.len(), count, "one reply per request");
                        self.answers.push((call.reply, replies));
                    }
                    Message::Tick => self.replica.step(now, Input::Tick, &mut outbox)?,
                    Message::Shutdown => shutdown = true,
                }
            }
            self.flush(now, requests)?;
            for (reply, replies) in self.answers.drain(..) {
                let _ = reply.send(Ok(replies)); // the client may have gone; its writes stand
            }
            if shutdown {
                tracing::info!("runtime flushed and stopped");
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

    /// Flushes the batch and updates the metrics and shared counters.
    fn flush(&mut self, now: u64, requests: usize) -> replikv_core::Result<()> {
        let started = Instant::now();
        let flushed = self.replica.flush(now)?;
        self.metrics.flush_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.batch_requests.observe(requests as f64);
        if flushed.synced {
            self.metrics.fsyncs.inc();
        }
        self.metrics.bytes_written.inc_by(flushed.bytes);
        let stats = self.replica.stats();
        self.metrics.set_engine(&stats);
        *self.shared.stats.lock().unwrap() = stats;
        Ok(())
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
}
