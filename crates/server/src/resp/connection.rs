//! One client connection: read bytes, cut them into requests, answer in order.
//!
//! Each connection is a task. It reads what the client sent, cuts every complete request out
//! of the buffer (up to `PIPELINE_REQUESTS_MAX` at a time), answers admin commands itself, and
//! sends all the key-value requests of that read to the runtime as one call, so that a
//! pipelined burst is one unit of group commit. Replies go out in request order, each encoded
//! in the protocol the connection spoke when its request arrived (`HELLO 3` mid-pipeline
//! switches the replies after it).
//!
//! A protocol error or a request over a limit gets an `-ERR` reply naming it, after the
//! replies to the requests before it, and then this connection, and only this one, closes:
//! nothing after a framing error can be trusted to be aligned.
//!
//! The accept loop admits a connection into the node's registry ([`crate::clients`]) while
//! fewer than `connections_max` are open (read at each accept, so `CONFIG SET maxclients`
//! applies to the next one) and refuses it with Redis's error otherwise. A connection reads
//! its request limits (`bulk_bytes_max`, `multibulk_len_max`, `query_buffer_bytes_max`) from
//! [`crate::live`] each time it parses, so a `CONFIG SET` reaches open connections at their
//! next request. After each round it publishes its client to the registry for `CLIENT LIST`,
//! and it closes when `CLIENT KILL` signals it.
//!
//! Each time it has cut the complete requests out of its buffer, a connection publishes the
//! bytes left, those of the request not yet complete, to the node's ledger
//! ([`crate::query_buffers`]): two atomic operations per read. When the node's total goes
//! over `query_buffer_total_bytes_max`, the connection holding the most is told to close; it
//! answers `-ERR` naming the limit (after the replies of a round it is in) and closes.
//!
//! CAVEATS
//! - A connection has one call in flight at a time: it does not read ahead while waiting for
//!   the runtime, so a pipelining client's next burst waits for the previous replies.

use super::admin::{self, Client};
use super::frame::{Frame, Limits, Protocol, ProtocolError, RequestParser};
use crate::clients::Registration;
use crate::live::idle_timeout;
use crate::metrics::CommandLabel;
use crate::query_buffers::Share;
use crate::state::NodeState;
use bytes::{Bytes, BytesMut};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use replikv_core::kv::{is_command, Action, ExecItem, ExecPlan, Reply, Request, Session};
use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Requests cut from one connection's buffer per round at most; the rest wait for the next.
pub const PIPELINE_REQUESTS_MAX: usize = 1024;

/// Milliseconds to wait after a failed accept (out of file descriptors, say) before the next.
const ACCEPT_RETRY_MS: u64 = 50;

/// Bytes of encoded replies a connection holds before it writes them out, so that a round
/// of large replies does not pile up in memory twice (as values and as encoded bytes).
const OUT_BUFFER_BYTES_MAX: usize = 1024 * 1024;

/// Distinct command names one connection keeps metric handles for; the names are the known
/// commands plus `unknown`, so this is never reached in practice, but it bounds the map.
const COUNTED_COMMANDS_MAX: usize = 128;

/// Bytes a connection reads per call at least (the buffer grows for large values).
const READ_BYTES_MIN: usize = 16 * 1024;

/// Accepts clients until `shutdown` turns true, then waits for open connections to finish
/// the round they are in.
pub async fn serve(listener: TcpListener, state: Arc<NodeState>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (mut stream, addr) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!("accepting a RESP connection failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(ACCEPT_RETRY_MS)).await;
                continue;
            }
        };
        state.connections_total.fetch_add(1, Ordering::Relaxed);
        let local_addr = stream.local_addr().unwrap_or(addr);
        let mut client = Client::new(state.client_id(), addr, local_addr, stream.as_raw_fd());
        client.session = crate::sessions::for_node(&state.config);
        let Some(registration) = state.clients.admit(client.clone(), state.live.connections_max()) else {
            state.metrics.connections_refused.inc();
            let _ = stream.write_all(b"-ERR max number of clients reached\r\n").await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            state.connections_open.fetch_add(1, Ordering::Relaxed);
            state.metrics.connections.inc();
            let mut connection = Connection {
                stream,
                client,
                registration,
                buffered: state.query_buffers.join(addr, "RESP"),
                state: state.clone(),
                shutdown,
                parser: RequestParser::new(),
                counters: BTreeMap::new(),
                session: Session::new(state.config.databases),
            };
            if let Err(e) = connection.run().await {
                tracing::debug!("connection {addr}: {e}");
            }
            state.connections_open.fetch_sub(1, Ordering::Relaxed);
            state.metrics.connections.dec();
            // Dropping the connection drops its registration: it leaves the registry.
        });
    }
    // An empty registry means every connection finished its round. The node bounds this wait
    // (`SHUTDOWN_DRAIN_SECS`) and drops what is left.
    state.clients.wait_empty().await;
}

/// True when `name` is REPLIKV.CHANGES, in any case.
fn is_changes(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"replikv.changes")
}

/// A reply slot, in request order.
enum Slot {
    /// Answered already, in the protocol of the moment.
    Ready(Frame, Protocol),
    /// Waiting for the runtime: the index of its request in the call, the protocol of the
    /// moment, and what its reply becomes.
    Pending(usize, Protocol, Pending),
}

/// What a call's reply becomes.
#[derive(Default)]
enum Pending {
    /// The client's answer as it is.
    #[default]
    Plain,
    /// WATCH's: kept by the session, `OK` to the client.
    Watch,
    /// EXEC's: assembled with its local commands.
    Exec(ExecPlan),
}

/// A round's slots and the calls they wait for.
#[derive(Default)]
struct Round {
    slots: Vec<Slot>,
    calls: Vec<Request>,
    /// For each call in the session's care: what it asked (whether it writes, its key), for
    /// the session to keep what its reply saw.
    in_session: Vec<Option<crate::sessions::Asked>>,
}

impl Round {
    /// A slot waiting for `request`'s reply.
    fn push(
        &mut self,
        request: Request,
        pending: Pending,
        proto: Protocol,
        session: Option<&crate::sessions::Session>,
    ) {
        self.slots.push(Slot::Pending(self.calls.len(), proto, pending));
        self.in_session.push(session.and_then(|session| session.asked(&request)));
        self.calls.push(request);
    }
}

/// One client's connection.
struct Connection {
    stream: TcpStream,
    client: Client,
    /// Its entry in the node's registry, removed when the connection is dropped.
    registration: Registration,
    /// Its share of the node's bytes of incomplete requests.
    buffered: Share,
    state: Arc<NodeState>,
    shutdown: watch::Receiver<bool>,
    /// Resumes a request split over several reads where it stopped.
    parser: RequestParser,
    /// This connection's handles on the per-command metrics, so that counting a command
    /// does not take the registry's lock.
    counters: BTreeMap<String, (Counter, Histogram)>,
    /// Its database and transaction.
    session: Session,
}

impl Connection {
    /// Serves requests until the client leaves, breaks the protocol, or the node stops.
    async fn run(&mut self) -> std::io::Result<()> {
        let mut buf = BytesMut::with_capacity(READ_BYTES_MIN);
        let mut out = BytesMut::with_capacity(READ_BYTES_MIN);
        // When the client last sent bytes: its idle time counts from there.
        let mut idle_since = tokio::time::Instant::now();
        // One watch of the idle timeout for the connection's life, not one per read.
        let mut idle_rx = self.state.live.watch_idle_timeout();
        loop {
            // Read each time, so that CONFIG SET reaches this connection at its next request.
            let limits = self.state.live.limits();
            let query_buffer_max = self.state.live.query_buffer_bytes_max();
            let (requests, error) = cut_requests(&mut self.parser, &mut buf, &limits);
            self.buffered.set(buf.len(), self.state.live.query_buffer_total_bytes_max());
            if requests.is_empty() && error.is_none() {
                if buf.len() > query_buffer_max {
                    self.state.metrics.protocol_errors.inc();
                    let msg = format!(
                        "ERR Protocol error: query buffer of {} bytes exceeds query_buffer_bytes_max of {query_buffer_max} bytes",
                        buf.len()
                    );
                    return self.close_with(&mut out, &msg).await;
                }
                buf.reserve(READ_BYTES_MIN);
                let read = loop {
                    let idle = idle_timeout(*idle_rx.borrow_and_update());
                    tokio::select! {
                        read = self.stream.read_buf(&mut buf) => break Ok(read?),
                        _ = self.shutdown.wait_for(|stop| *stop) => return Ok(()),
                        _ = self.registration.wait_killed() => return Ok(()),
                        eviction = self.buffered.wait_evicted() => break Err(eviction),
                        // Redis's `timeout`: an idle client is closed without a word.
                        _ = idle_until(idle.map(|idle| idle_since + idle)) => {
                            tracing::debug!("closing {}: idle for {:?}", self.client.addr, idle.unwrap_or_default());
                            return Ok(());
                        }
                        // A CONFIG SET reaches a connection already idle: wait again, by the
                        // new timeout, from when it went idle.
                        Ok(()) = idle_rx.changed() => {}
                    }
                };
                idle_since = tokio::time::Instant::now();
                match read {
                    Ok(0) => return Ok(()),
                    Ok(_) => continue,
                    Err(eviction) => {
                        self.state.metrics.protocol_errors.inc();
                        return self.close_with(&mut out, &format!("ERR {eviction}")).await;
                    }
                }
            }
            // REPLIKV.CHANGES, last in its round and outside MULTI, turns the connection into a
            // change stream once the requests before it are answered.
            let mut requests = requests;
            let stream = match requests.last() {
                Some(args) if error.is_none() && is_changes(&args[0]) && self.session.queued().is_none() => {
                    requests.pop()
                }
                _ => None,
            };
            let close = self.answer(requests, &mut out).await?;
            if let Some(error) = error {
                self.state.metrics.protocol_errors.inc();
                return self.close_with(&mut out, &format!("ERR Protocol error: {error}")).await;
            }
            if !self.write_or_closed(&out).await? {
                return Ok(());
            }
            out.clear();
            idle_since = tokio::time::Instant::now();
            self.client.query_buffer_bytes = buf.len();
            self.client.query_buffer_free_bytes = buf.capacity() - buf.len();
            self.client.buffer_bytes = buf.capacity() + out.capacity();
            self.registration.publish(&self.client);
            if let Some(eviction) = self.buffered.eviction() {
                self.state.metrics.protocol_errors.inc();
                return self.close_with(&mut out, &format!("ERR {eviction}")).await;
            }
            if close || *self.shutdown.borrow() || self.registration.killed() {
                return Ok(());
            }
            // A MULTI of this round opened a transaction: REPLIKV.CHANGES is queued in it (and
            // refused at EXEC), not streamed.
            let stream = match stream {
                Some(args) if self.session.queued().is_some() => {
                    let close = self.answer(vec![args], &mut out).await?;
                    if !self.write_or_closed(&out).await? || close {
                        return Ok(());
                    }
                    out.clear();
                    None
                }
                stream => stream,
            };
            if let Some(args) = stream {
                match crate::changes::parse(&args[1..]) {
                    Ok((start, prefix)) => return self.stream_changes(start, prefix, &mut buf, &mut out).await,
                    Err(refusal) => {
                        Frame::error(refusal).encode(self.client.proto, &mut out);
                        if !self.write_or_closed(&out).await? {
                            return Ok(());
                        }
                        out.clear();
                    }
                }
            }
        }
    }

    /// Streams the log's changes from `start` under `prefix` as push messages until the
    /// client leaves (or sends QUIT), the node stops, or the stream must end (its records are
    /// gone, the log was cut, the client stalled): then with an error naming why. Requests the
    /// client sends meanwhile: PING is answered with a push `["pong", ""]`, QUIT closes, any
    /// other gets an error and the stream goes on. See [`crate::changes`].
    async fn stream_changes(
        &mut self,
        start: crate::changes::Start,
        prefix: Bytes,
        buf: &mut BytesMut,
        out: &mut BytesMut,
    ) -> std::io::Result<()> {
        use crate::changes::{field, Feed, FEED_STALL_MS_MAX};
        let feed = Feed::new(self.state.clone(), start, prefix);
        self.client.command = "replikv.changes".into();
        self.registration.publish(&self.client);
        let tag = || Frame::bulk("replikv.changes");
        // The last position whose records have all left for the client: where a stalled
        // consumer resumes after.
        let mut delivered = feed.position();
        let mut pending_through = delivered;
        Frame::Push(vec![tag(), Frame::bulk("from"), Frame::Integer((delivered + 1) as i64)])
            .encode(self.client.proto, out);
        // One read of the log at a time, kept across the loop's turns: a PING does not cancel it.
        let mut next = Box::pin(feed.into_next());
        loop {
            if !out.is_empty() {
                let stall = std::time::Duration::from_millis(FEED_STALL_MS_MAX);
                match tokio::time::timeout(stall, self.write_or_closed(out)).await {
                    Ok(written) => {
                        if !written? {
                            return Ok(());
                        }
                        out.clear();
                        delivered = pending_through;
                    }
                    Err(_) => {
                        tracing::info!("closing change stream of {}: it took no data for {stall:?}", self.client.addr);
                        // Best effort: part of a frame may have gone before the stall.
                        let reason = format!(
                            "ERR REPLIKV.CHANGES: this consumer took no data for {FEED_STALL_MS_MAX} ms: \
                             disconnected; resume FROM {}",
                            delivered + 1
                        );
                        let mut last = BytesMut::new();
                        Frame::error(reason).encode(self.client.proto, &mut last);
                        let _ =
                            tokio::time::timeout(std::time::Duration::from_secs(1), self.stream.write_all(&last)).await;
                        return Ok(());
                    }
                }
            }
            /// What woke the stream.
            enum Woke {
                Records(Feed, Result<Vec<Reply>, String>),
                Read(usize),
                Evicted(String),
                Stop,
            }
            let woke = tokio::select! {
                (feed, records) = &mut next => Woke::Records(feed, records),
                read = self.stream.read_buf(buf) => Woke::Read(read?),
                eviction = self.buffered.wait_evicted() => Woke::Evicted(eviction.to_string()),
                _ = self.shutdown.wait_for(|stop| *stop) => Woke::Stop,
                _ = self.registration.wait_killed() => Woke::Stop,
            };
            match woke {
                Woke::Stop | Woke::Read(0) => return Ok(()),
                Woke::Evicted(eviction) => return self.close_within(out, &format!("ERR {eviction}")).await,
                Woke::Records(_, Err(reason)) => return self.close_within(out, &reason).await,
                Woke::Records(feed, Ok(records)) => {
                    pending_through = feed.position();
                    for record in records {
                        pending_through = pending_through.max(field(&record, "lsn").unwrap_or(0));
                        Frame::Push(vec![tag(), Frame::bulk("record"), to_frame(record)])
                            .encode(self.client.proto, out);
                    }
                    next = Box::pin(feed.into_next());
                }
                Woke::Read(_) => {
                    let (requests, error) = cut_requests(&mut self.parser, buf, &self.state.live.limits());
                    self.buffered.set(buf.len(), self.state.live.query_buffer_total_bytes_max());
                    for args in requests {
                        match CommandName::of(&args[0]).as_str() {
                            "quit" => {
                                Frame::ok().encode(self.client.proto, out);
                                return self.close_within(out, "").await;
                            }
                            "ping" => {
                                Frame::Push(vec![Frame::bulk("pong"), Frame::bulk("")]).encode(self.client.proto, out)
                            }
                            _ => Frame::error(
                                "ERR only PING and QUIT are allowed while REPLIKV.CHANGES streams: it streams until \
                                 the connection closes",
                            )
                            .encode(self.client.proto, out),
                        }
                    }
                    if let Some(error) = error {
                        self.state.metrics.protocol_errors.inc();
                        return self.close_within(out, &format!("ERR Protocol error: {error}")).await;
                    }
                    if buf.len() > self.state.live.query_buffer_bytes_max() {
                        return self
                            .close_within(out, "ERR Protocol error: a request too large while streaming changes")
                            .await;
                    }
                }
            }
        }
    }

    /// Writes what is pending and a last error line (none when `message` is empty) within a
    /// second, and closes: a streaming client that does not read must not hold the connection.
    async fn close_within(&mut self, out: &mut BytesMut, message: &str) -> std::io::Result<()> {
        if !message.is_empty() {
            Frame::error(message).encode(self.client.proto, out);
        }
        let write = async {
            if self.write_or_closed(out).await? {
                self.stream.shutdown().await?;
            }
            Ok(())
        };
        tokio::time::timeout(std::time::Duration::from_secs(1), write).await.unwrap_or(Ok(()))
    }

    /// Writes what is pending plus a last error line, and closes.
    async fn close_with(&mut self, out: &mut BytesMut, message: &str) -> std::io::Result<()> {
        Frame::error(message).encode(self.client.proto, out);
        if self.write_or_closed(out).await? {
            self.stream.shutdown().await?;
        }
        Ok(())
    }

    /// Writes `bytes` to the client; false, unfinished, when the connection is evicted or
    /// killed while the write waits: a client that does not read must not hold this
    /// connection (and the buffers the node-wide bound no longer counts) for ever. A write
    /// that can finish does, first: the replies of a round that was answered are sent.
    async fn write_or_closed(&mut self, bytes: &[u8]) -> std::io::Result<bool> {
        tokio::select! {
            biased;
            written = self.stream.write_all(bytes) => written.map(|()| true),
            _ = self.buffered.wait_evicted() => Ok(false),
            _ = self.registration.wait_killed() => Ok(false),
        }
    }

    /// Answers a round of requests into `out`, in order, writing `out` to the client whenever
    /// it passes `OUT_BUFFER_BYTES_MAX`. True when the connection must close after sending
    /// the rest (QUIT, or the node stopped). The round's calls to the runtime go as one,
    /// except that EXEC, UNWATCH, DISCARD or WATCH after a WATCH of the same round waits for
    /// that WATCH's answer.
    async fn answer(&mut self, requests: Vec<Vec<Bytes>>, out: &mut BytesMut) -> std::io::Result<bool> {
        let started = Instant::now();
        self.client.last_active = started;
        let last_command = requests.last().map(|args| admin::command_label(args));
        let mut round = Round::default();
        let mut names = Vec::with_capacity(requests.len());
        let mut close = false;
        for args in requests {
            let name = CommandName::of(&args[0]);
            names.push(if is_command(name.as_str()) || admin::answers(name.as_str()) || name.as_str() == "quit" {
                name
            } else {
                CommandName::unknown()
            });
            if name.as_str() == "quit" {
                round.slots.push(Slot::Ready(Frame::ok(), self.client.proto));
                close = true;
                break;
            }
            // The session must hold a WATCH's answer before anything that reads or clears what
            // is watched: so such a command after a WATCH of this round waits for it.
            let watch_pending = || round.slots.iter().any(|s| matches!(s, Slot::Pending(_, _, Pending::Watch)));
            if matches!(name.as_str(), "exec" | "unwatch" | "discard" | "watch") && watch_pending() {
                close |= self.call(&mut round).await;
            }
            // A session's write of this round must be answered (and its position kept) before
            // anything that reads under the session or shows its token.
            let session_write_pending = round.in_session.iter().any(|asked| asked.is_some_and(|a| a.write));
            if session_write_pending && self.client.session.is_some() && !is_session_write(name.as_str()) {
                close |= self.call(&mut round).await;
            }
            // Any answer in the session must be kept before a session command shows or changes
            // what the session saw (its token, the last receipt, a RESET); and in a leaderless
            // session before its next request: two reads of one key run as separate quorum
            // operations, and the second could be answered from an older replica first.
            let session_pending = round.in_session.iter().any(Option::is_some);
            let orders = self.client.session.as_ref().is_some_and(|s| s.orders_each_request());
            if session_pending && (orders || is_session_command(name.as_str())) {
                close |= self.call(&mut round).await;
            }
            let proto = self.client.proto;
            let local = admin::answers(name.as_str());
            match self.session.command(name.as_str(), &args, local) {
                Action::Reply(reply) => round.slots.push(Slot::Ready(to_frame(reply), proto)),
                Action::Local => {
                    self.show_session();
                    let frame = admin::execute(name.as_str(), &args, &mut self.client, &self.state);
                    // After the command, so that HELLO 3 is itself answered in RESP3, as Redis does.
                    round.slots.push(Slot::Ready(frame, self.client.proto));
                }
                Action::Call(request) => {
                    let request = match self.client.consistency {
                        Some(consistency) => Request::WithConsistency { consistency, request: Box::new(request) },
                        None => request,
                    };
                    let request = match &self.client.session {
                        Some(session) => session.wrap(request, crate::clock::now_ms()),
                        None => request,
                    };
                    round.push(request, Pending::Plain, proto, self.client.session.as_ref())
                }
                Action::Watch(request) => round.push(request, Pending::Watch, proto, None),
                Action::Exec(request, plan) => {
                    let request = match &self.client.session {
                        Some(session) => session.wrap(request, crate::clock::now_ms()),
                        None => request,
                    };
                    // A SELECT inside it holds only once it ran: the next command waits.
                    let selects = plan.db() != self.session.db();
                    round.push(request, Pending::Exec(plan), proto, self.client.session.as_ref());
                    if selects {
                        close |= self.call(&mut round).await;
                    }
                }
            }
        }
        if let Some(command) = last_command {
            self.client.command = command;
        }
        close |= self.call(&mut round).await;
        self.show_session();
        for slot in round.slots {
            let Slot::Ready(frame, proto) = slot else { unreachable!("every call was answered") };
            frame.encode(proto, out);
            if out.len() >= OUT_BUFFER_BYTES_MAX {
                if !self.write_or_closed(out).await? {
                    // Evicted or killed while the client did not read: the rest is dropped.
                    out.clear();
                    return Ok(true);
                }
                out.clear();
            }
        }
        // Every reply of the round leaves together, so one latency serves them all.
        let seconds = started.elapsed().as_secs_f64();
        for name in &names {
            self.count(name.as_str(), seconds);
        }
        Ok(close)
    }

    /// Sends the round's calls to the runtime and turns every pending slot into its answer.
    /// True when the runtime gave none (the node is stopping): the connection closes.
    async fn call(&mut self, round: &mut Round) -> bool {
        if round.calls.is_empty() {
            return false;
        }
        let calls = std::mem::take(&mut round.calls);
        let in_session = std::mem::take(&mut round.in_session);
        let (mut replies, stopped) = match self.state.handle.call(calls).await {
            Ok(answers) => (answers.into_iter().map(Some).collect(), false),
            Err(_) => (Vec::new(), true), // every pending slot answers with the reason below
        };
        for slot in &mut round.slots {
            let Slot::Pending(index, proto, pending) = slot else { continue };
            let (index, proto) = (*index, *proto);
            let mut reply = replies.get_mut(index).and_then(Option::take);
            if let (Some(Some(asked)), Some(session)) = (in_session.get(index), self.client.session.as_mut()) {
                reply = reply.map(|answer| session.observe(answer, asked, crate::clock::now_ms()));
            }
            let frame = match (reply, std::mem::take(pending)) {
                (None, _) => Frame::error(format!("ERR {}", self.stop_reason())),
                (Some(reply), Pending::Plain) => to_frame(reply),
                (Some(reply), Pending::Watch) => to_frame(self.session.watched(reply)),
                (Some(reply), Pending::Exec(plan)) => self.exec_reply(plan, reply),
            };
            let receipt = match (in_session.get(index), &self.client.session) {
                (Some(Some(_)), Some(session)) if session.receipts => session.last_receipt.clone(),
                _ => None,
            };
            let frame = match receipt {
                Some(receipt) => {
                    let fields = receipt.fields(&self.state.config.id);
                    let pairs = fields.into_iter().map(|(k, v)| (Frame::bulk(k), Frame::bulk(v))).collect();
                    let receipt = vec![(Frame::bulk("receipt"), Frame::Map(pairs))];
                    Frame::Attributed(receipt, Box::new(frame))
                }
                None => frame,
            };
            *slot = Slot::Ready(frame, proto);
        }
        stopped
    }

    /// Copies the session's database and transaction into what CLIENT INFO and LIST show.
    fn show_session(&mut self) {
        self.client.db = self.session.db();
        self.client.multi = self.session.queued().map_or(-1, |n| n as i64);
        self.client.watch = self.session.watching();
    }

    /// EXEC's reply: the queued requests' replies with the local commands run in their places.
    fn exec_reply(&mut self, plan: ExecPlan, reply: Reply) -> Frame {
        match self.session.executed(plan, reply) {
            Ok(items) => Frame::Array(
                items
                    .into_iter()
                    .map(|item| match item {
                        ExecItem::Reply(reply) => to_frame(reply),
                        ExecItem::Local(args) => {
                            let name = CommandName::of(&args[0]);
                            admin::execute(name.as_str(), &args, &mut self.client, &self.state)
                        }
                    })
                    .collect(),
            ),
            Err(reply) => to_frame(reply),
        }
    }

    /// Why the runtime gave no reply.
    fn stop_reason(&self) -> String {
        self.state.handle.failure().unwrap_or_else(|| "the node is shutting down".to_string())
    }

    /// Counts a command served, with its latency from the start of its round.
    fn count(&mut self, name: &str, seconds: f64) {
        if !self.counters.contains_key(name) && self.counters.len() < COUNTED_COMMANDS_MAX {
            let label = CommandLabel { command: name.to_string() };
            let metrics = &self.state.metrics;
            let handles =
                (metrics.commands.get_or_create(&label).clone(), metrics.command_seconds.get_or_create(&label).clone());
            self.counters.insert(name.to_string(), handles);
        }
        if let Some((counter, histogram)) = self.counters.get(name) {
            counter.inc();
            histogram.observe(seconds);
        }
        self.state.commands_total.fetch_add(1, Ordering::Relaxed);
    }
}

/// Completes at `deadline`, or never when there is none.
async fn idle_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Cuts up to `PIPELINE_REQUESTS_MAX` complete requests from `buf`, skipping empty ones, and
/// the protocol error that ended the cutting, if any.
fn cut_requests(
    parser: &mut RequestParser,
    buf: &mut BytesMut,
    limits: &Limits,
) -> (Vec<Vec<Bytes>>, Option<ProtocolError>) {
    let mut requests = Vec::new();
    while requests.len() < PIPELINE_REQUESTS_MAX {
        match parser.parse(buf, limits) {
            Ok(Some(args)) if args.is_empty() => continue,
            Ok(Some(args)) => requests.push(args),
            Ok(None) => break,
            Err(e) => return (requests, Some(e)),
        }
    }
    (requests, None)
}

/// A command's name in lowercase, without a heap allocation: names longer than
/// `COMMAND_NAME_BYTES_MAX` or not ASCII are no command's name and read as `unknown`.
#[derive(Clone, Copy)]
struct CommandName {
    bytes: [u8; COMMAND_NAME_BYTES_MAX],
    len: usize,
}

/// The longest command name replikv knows is shorter than this.
const COMMAND_NAME_BYTES_MAX: usize = 24;

impl CommandName {
    /// The lowercase name of the command `arg` names.
    fn of(arg: &[u8]) -> CommandName {
        if arg.len() > COMMAND_NAME_BYTES_MAX || !arg.is_ascii() {
            return CommandName::unknown();
        }
        let mut bytes = [0u8; COMMAND_NAME_BYTES_MAX];
        for (to, from) in bytes.iter_mut().zip(arg) {
            *to = from.to_ascii_lowercase();
        }
        CommandName { bytes, len: arg.len() }
    }

    /// The name unknown commands are counted under.
    fn unknown() -> CommandName {
        CommandName::of(b"unknown")
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).expect("ASCII by construction")
    }
}

/// True for the commands that show or change what a session saw.
fn is_session_command(name: &str) -> bool {
    matches!(
        name,
        "replikv.session" | "replikv.receipt" | "replikv.receipts" | "replikv.guarantee" | "replikv.readfrom"
    )
}

/// True when a command named `name` surely writes: it may follow a session write in the
/// same round without waiting for it (writes are applied in order anyway). Any other command
/// waits (a write missing here costs a round trip, never a guarantee).
fn is_session_write(name: &str) -> bool {
    matches!(
        name,
        "set"
            | "setnx"
            | "setex"
            | "psetex"
            | "mset"
            | "msetnx"
            | "del"
            | "unlink"
            | "incr"
            | "incrby"
            | "decr"
            | "decrby"
            | "incrbyfloat"
            | "append"
            | "expire"
            | "pexpire"
            | "expireat"
            | "pexpireat"
            | "persist"
            | "getset"
            | "getdel"
            | "setrange"
            | "setbit"
            | "rename"
            | "renamenx"
            | "multi"
    )
}

/// A key-value reply as a RESP frame.
pub fn to_frame(reply: Reply) -> Frame {
    match reply {
        Reply::Ok => Frame::ok(),
        Reply::Status(s) => Frame::Simple(s.to_string()),
        Reply::Nil => Frame::Null,
        Reply::Int(n) => Frame::Integer(n),
        Reply::Bulk(b) => Frame::Bulk(b),
        Reply::Array(items) => Frame::Array(items.into_iter().map(to_frame).collect()),
        Reply::Error(e) => Frame::Error(e),
        Reply::NullArray => Frame::NullArray,
        // The session turns WATCH's answer into OK before it reaches a client.
        Reply::Watched(_) => Frame::ok(),
        // The session keeps the position before it reaches a client.
        Reply::InSession { reply, .. } | Reply::InKeySession { reply, .. } => to_frame(*reply),
    }
}
