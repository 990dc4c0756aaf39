//! The HTTP/JSON front end: key operations, status, configuration, health and Prometheus
//! metrics.
//!
//! | method and path | answer |
//! | --- | --- |
//! | `GET /api/v1/kv/{key}[?w=W&r=R]` | 200 with the value as the body (bytes, as stored), or 404; leaderless: 300 `{"error", "context", "values"}` when the key has concurrent values (`conflicts = "siblings"`) |
//! | `PUT /api/v1/kv/{key}[?ttl_ms=N][&w=W&r=R][&context=TOKEN]` | stores the request body as the value; 200 `{"ok":true}`; leaderless: `context` (from a 300) replaces the values it names |
//! | `DELETE /api/v1/kv/{key}[?w=W&r=R]` | 200 `{"deleted":0 or 1}` |
//! | `GET /api/v1/status` | the node's id, role, uptime, storage counters, connections (RESP `connections`, `http_connections`), bytes of incomplete requests (`query_buffer_bytes`), peer links (`peers`: state, messages `queued` and `messages_lost`), replication (`replication`; leaderless: quorums, counters and `anti_entropy`, peers by name) |
//! | `GET /api/v1/digest` | the replica's Merkle digest: `{"lsn", "keys", "root", "buckets": [hex...]}` |
//! | `GET /api/v1/digest/bucket/{n}` | one bucket's live keys: `{"lsn", "entries": [{"key", "hash"}...]}` |
//! | `GET /api/v1/config` | the configuration now (with `CONFIG SET`'s changes and `loglevel`) |
//! | `GET /api/v1/changes?from=N&prefix=P` | the log's changes from position N (the log's end when absent; `Last-Event-ID` resumes) as server-sent events: `event: from` `{"from": N}`, then `event: record` per record with a change under P (`id` its position, data as in `/api/v1/log`), until `event: error` `{"error"}` ends it (a stream fallen behind retention, the log cut by a failover, the node stopping): see REPLIKV.CHANGES; a start the log no longer holds is 410 |
//! | `GET /api/v1/conflicts[?prefix=P&count=N]` | multi-leader: the newest N (10) entries of the conflict log for keys starting with P, oldest first: `[{"time_ms", "key", "datacenter", "detected_by", "resolve", "held", "arrived", "kept", "lost", "lecture"}...]`, each write `[origin, version, value, bytes]`, `lecture` the lecture's record (`{"table", "key", "column", "old_value", "new_value", "transaction"}`) or null |
//! | `GET /api/v1/log?after=N&limit=M&prefix=P` (or `from=N+1`; `keys_only=true`: every record the log holds, unacknowledged ones too, as `{"lsn", "epoch", "keys"}` with physical keys) | the replication log's records after N (at most M, 1000; 100 by default), the logical log: `[{"lsn", "epoch", "transaction", "part", "parts", "begins", "ends", "changes": [{"key", "namespace", "old", "old_value", "old_bytes", "old_version", "old_expire_at_ms", "new_value", "new_bytes", "new_version", "expire_at_ms", "lecture"}...], "statement": null or {"command", "keys", "first_version", "nondeterministic"} (`log_format` statement or mixed: the request, executed again by every replica), "keys": [...]}...]`, only the changes of client keys starting with P (every record is listed); values cut at 4096 bytes, text or `{"hex"}`; `lecture` the lecture's record `{"table", "key", "column", "old_value", "new_value", "transaction"}` as text (table and column null for a key that is not `table.row.column`); 410 when the log no longer holds them |
//! | `POST /api/v1/failover` | FAILOVER on the leader: `{"to": "host:port", "timeout_ms": N, "force": false, "abort": false}` (all optional); 200 `{"ok":true}` once the handover has begun, 409 with Redis's error text when refused |
//! | `GET /health` | 200 while the process runs |
//! | `GET /ready` | 200 while the node serves requests; 503 with the reason once it stopped |
//! | `GET /metrics` | Prometheus/OpenMetrics text |
//! | `GET /api/v1/test/faults` | test only: the peer links' fault table, `{"id", "peers": {"n2": {"blocked", "delay_ms", "drop"}...}}` |
//! | `PUT /api/v1/test/faults` | test only: sets the fields given of one peer's fault (`{"peer": "n2", "blocked": true, "delay_ms": 0, "drop": 0.0}`) or clears all (`{"clear": true}`); answers the table |
//!
//! Values travel as raw bodies rather than JSON strings because they are binary-safe bytes;
//! everything else, errors included, is JSON (`{"error": "..."}`). A key is the rest of the
//! path after `/api/v1/kv/`, percent-decoded, so it may contain `/`. The three key routes
//! take a session in request headers (`X-Replikv-Session: token`, `X-Replikv-Guarantee`,
//! `X-Replikv-Read-From`) and, when any is sent, answer with the session's new token in
//! `X-Replikv-Session` and the answer's receipt in `X-Replikv-Receipt` (see [`crate::sessions`]).
//!
//! In a leaderless cluster `w` and `r` choose a request's quorums (the cluster's n, w and r
//! otherwise; one given alone keeps the cluster's other), as `REPLIKV.CONSISTENCY w,r` does
//! on a RESP connection; a request whose quorum did not answer in time gets 503 with the
//! `NOQUORUM` text, saying how many replicas took a write. A single-leader follower that
//! restarted answers reads with 503 and the `TRYAGAIN` text until its leader confirms its log.
//! Values in a 300 are JSON strings
//! when they are UTF-8, else `{"hex": "..."}`; a delete among them is `null`.
//!
//! The test endpoints answer 404 unless the node was started with `--test-faults`
//! (`REPLIKV_TEST_FAULTS=1`); see [`crate::faults`].
//!
//! Every request passes one gate before its route, in this order:
//!
//! 1. **Its body is read whole**, before anything else holds a resource for it. The client
//!    has `http_body_timeout_ms` from the moment its head arrived, then gets 408 and the
//!    connection closes (hyper closes a connection whose request body was not read to its
//!    end). A body over `bulk_bytes_max` as the node started gets 413 (at once when its
//!    `Content-Length` says so). While it is incomplete its bytes count in the node's
//!    [`crate::query_buffers`]: when the node's total passes `query_buffer_total_bytes_max`
//!    and this body is the biggest holder, it gets 503 naming that limit and the connection
//!    closes.
//! 2. **A permit**: at most `HTTP_REQUESTS_MAX` requests run at once; one more gets 503 at
//!    once instead of waiting.
//! 3. **The route**, within `HTTP_REQUEST_TIMEOUT_SECS`, then 408.
//!
//! Connections, and the time a client has to send a request head, are bounded by the accept
//! loop ([`crate::http_serve`]).
//!
//! CAVEATS
//! - Keys must be valid UTF-8 over HTTP; binary keys need RESP.
//! - A PUT body is bounded by `bulk_bytes_max` as the node started, and by a lower value
//!   `CONFIG SET` gives it (413), not by a higher one.
//! - Bodies are buffered whole before the route runs (every route wants its body whole); a
//!   body the route would refuse is read first all the same.
//! - At shutdown, requests still running after `SHUTDOWN_DRAIN_SECS` are dropped.

use crate::query_buffers::{Eviction, Share};
use crate::resp::admin::REDIS_VERSION_COMPAT;
use crate::state::NodeState;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request as HttpRequest, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::BytesMut;
use futures::StreamExt;
use replikv_core::kv::{Expiry, Reply, Request, SetCondition};
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The HTTP routes of a node.
pub fn router(state: Arc<NodeState>) -> Router {
    let body_limit = state.config.bulk_bytes_max;
    let routes = Router::new()
        .route("/api/v1/kv/{*key}", get(get_key).put(put_key).delete(delete_key))
        .route("/api/v1/status", get(status))
        .route("/api/v1/digest", get(digest))
        .route("/api/v1/digest/bucket/{bucket}", get(digest_bucket))
        .route("/api/v1/config", get(config))
        .route("/api/v1/failover", post(failover))
        .route("/api/v1/log", get(log_records))
        .route("/api/v1/changes", get(changes))
        .route("/api/v1/conflicts", get(conflicts))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/test/faults", get(get_faults).put(put_faults))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state.clone());
    limited(routes, state, HTTP_REQUESTS_MAX, Duration::from_secs(HTTP_REQUEST_TIMEOUT_SECS))
}

/// HTTP requests served at once at most; one more gets 503 at once instead of waiting.
pub const HTTP_REQUESTS_MAX: usize = 256;

/// Seconds one HTTP request's route may take once its body is read, before it gets 408.
pub const HTTP_REQUEST_TIMEOUT_SECS: u64 = 30;

/// Wraps `routes` in the gate the module documentation describes: each request's body is
/// read whole within the limits `state` holds, then at most `requests_max` requests run at
/// once and each is cut off after `timeout`.
fn limited(routes: Router, state: Arc<NodeState>, requests_max: usize, timeout: Duration) -> Router {
    let permits = Arc::new(Semaphore::new(requests_max));
    routes.layer(middleware::from_fn(move |request: HttpRequest, next: Next| {
        let (permits, state) = (permits.clone(), state.clone());
        async move {
            let request = match read_body(&state, request).await {
                Ok(request) => request,
                Err(response) => return response,
            };
            let Ok(_permit) = permits.try_acquire() else {
                let message = format!("{requests_max} HTTP requests are in flight, the most this node serves at once");
                return error(StatusCode::SERVICE_UNAVAILABLE, message);
            };
            match tokio::time::timeout(timeout, next.run(request)).await {
                Ok(response) => response,
                Err(_) => error(StatusCode::REQUEST_TIMEOUT, format!("the request took over {timeout:?}")),
            }
        }
    }))
}

/// A JSON error with a status code.
fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

/// A JSON error after which the connection closes (its request body was not read to the end).
fn error_closing(status: StatusCode, message: impl std::fmt::Display) -> Response {
    let mut response = error(status, message);
    response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    response
}

/// Reads `request`'s body whole within `http_body_timeout_ms` and `bulk_bytes_max` as the
/// node started, its bytes counted in the node's query buffers until it is complete; the
/// request with its body in memory, or the response to send instead.
async fn read_body(state: &NodeState, request: HttpRequest) -> Result<HttpRequest, Response> {
    let bytes_max = state.config.bulk_bytes_max;
    let too_large = |bytes: u64| {
        let why = format!("a body of {bytes} bytes or more is over bulk_bytes_max ({bytes_max} bytes)");
        error_closing(StatusCode::PAYLOAD_TOO_LARGE, why)
    };
    let (parts, body) = request.into_parts();
    let length = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(length) = length.filter(|&n| n > bytes_max as u64) {
        return Err(too_large(length));
    }
    let addr = parts.extensions.get::<ConnectInfo<SocketAddr>>().map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0);
    let timeout = state.live.http_body_timeout();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut data = body.into_data_stream();
    let mut buf = BytesMut::new();
    // Joined at the first bytes, so that a request without a body costs the ledger nothing.
    let mut share: Option<Share> = None;
    loop {
        let chunk = tokio::select! {
            chunk = data.next() => chunk,
            _ = &mut deadline => {
                let why = format!("the request body was not complete within {timeout:?} (http_body_timeout_ms)");
                tracing::debug!(client = %addr, "HTTP 408: {why}");
                return Err(error_closing(StatusCode::REQUEST_TIMEOUT, why));
            }
            eviction = evicted(&mut share) => return Err(error_closing(StatusCode::SERVICE_UNAVAILABLE, eviction)),
        };
        match chunk {
            None => break,
            Some(Err(e)) => {
                return Err(error_closing(StatusCode::BAD_REQUEST, format!("reading the request body: {e}")))
            }
            Some(Ok(bytes)) => {
                if buf.len() + bytes.len() > bytes_max {
                    return Err(too_large((buf.len() + bytes.len()) as u64));
                }
                buf.extend_from_slice(&bytes);
                let share = share.get_or_insert_with(|| state.query_buffers.join(addr, "HTTP"));
                share.set(buf.len(), state.live.query_buffer_total_bytes_max());
            }
        }
    }
    // Complete: the share leaves the ledger here, and the body counts no more.
    drop(share);
    Ok(HttpRequest::from_parts(parts, Body::from(buf.freeze())))
}

/// Resolves when the body's share is told to close; never while it has none.
async fn evicted(share: &mut Option<Share>) -> Eviction {
    match share {
        Some(share) => share.wait_evicted().await,
        None => std::future::pending().await,
    }
}

/// Sends one request through the runtime and returns its reply, or the response to send when
/// the node cannot answer.
async fn call(state: &NodeState, request: Request) -> Result<Reply, Response> {
    match state.handle.call(vec![request]).await {
        Ok(mut replies) => Ok(replies.remove(0)),
        Err(stopped) => Err(error(StatusCode::SERVICE_UNAVAILABLE, stopped)),
    }
}

/// The request header that carries a session's token in, and the response header that
/// carries it out (see [`crate::sessions`]).
pub const SESSION_HEADER: &str = "x-replikv-session";
/// The request header that names a request's guarantee (the cluster's default otherwise).
pub const GUARANTEE_HEADER: &str = "x-replikv-guarantee";
/// The request header that names where a read goes (`leader`, `follower`, `nearest`).
pub const READ_FROM_HEADER: &str = "x-replikv-read-from";
/// The response header with a session answer's receipt (see [`crate::sessions::Receipt`]).
pub const RECEIPT_HEADER: &str = "x-replikv-receipt";

/// [`call`] in the session the headers describe (a node in a cluster, any family):
/// the reply, and the response headers: the session's token after it and the answer's
/// receipt. Without session
/// headers, or in a cluster without sessions, a plain call (and no token); a bad header is a
/// 400 naming it.
async fn session_call(
    state: &NodeState,
    headers: &HeaderMap,
    request: Request,
) -> Result<(Reply, Vec<(&'static str, HeaderValue)>), Response> {
    let text = |name: &str| headers.get(name).map(|v| v.to_str().map_err(|_| format!("header {name} is not text")));
    let asked = [SESSION_HEADER, GUARANTEE_HEADER, READ_FROM_HEADER].iter().any(|h| headers.contains_key(*h));
    let Some(mut session) = crate::sessions::for_node(&state.config).filter(|_| asked) else {
        if asked {
            return Err(error(StatusCode::BAD_REQUEST, "session headers are for a node in a cluster"));
        }
        return call(state, request).await.map(|reply| (reply, Vec::new()));
    };
    let bad = |why: String| error(StatusCode::BAD_REQUEST, why);
    if let Some(token) = text(SESSION_HEADER) {
        session.resume(token.map_err(bad)?).map_err(|why| bad(format!("{SESSION_HEADER}: {why}")))?;
    }
    if let Some(guarantee) = text(GUARANTEE_HEADER) {
        crate::sessions::Guarantee::parse(guarantee.map_err(bad)?)
            .and_then(|guarantee| session.set_guarantee(guarantee))
            .map_err(|why| bad(format!("{GUARANTEE_HEADER}: {why}")))?;
    }
    if let Some(from) = text(READ_FROM_HEADER) {
        crate::sessions::ReadFrom::parse(from.map_err(bad)?)
            .and_then(|from| session.set_read_from(from))
            .map_err(|why| bad(format!("{READ_FROM_HEADER}: {why}")))?;
    }
    let request = session.wrap(request, crate::clock::now_ms());
    let asked = session.asked(&request);
    let reply = call(state, request).await?;
    let reply = match asked {
        Some(asked) => session.observe(reply, &asked, crate::clock::now_ms()),
        None => reply,
    };
    let mut out = Vec::new();
    if let Ok(token) = HeaderValue::from_str(&session.token()) {
        out.push((SESSION_HEADER, token));
    }
    let receipt = session.last_receipt.as_ref().filter(|_| asked.is_some());
    if let Some(receipt) = receipt.and_then(|r| HeaderValue::from_str(&r.header(&state.config.id)).ok()) {
        out.push((RECEIPT_HEADER, receipt));
    }
    Ok((reply, out))
}

/// `response` with the session's headers (its token, the answer's receipt), if any.
fn with_token(mut response: Response, headers: Vec<(&'static str, HeaderValue)>) -> Response {
    for (name, value) in headers {
        response.headers_mut().insert(name, value);
    }
    response
}

/// The quorums of a leaderless request (`?w=&r=`).
#[derive(Deserialize, Default)]
struct QuorumParams {
    /// Replicas a write waits for.
    w: Option<usize>,
    /// Replicas a read waits for.
    r: Option<usize>,
}

impl QuorumParams {
    /// `request` with the quorums asked for, or as it is when none were; the reason for a 400
    /// when they were and the cluster is not leaderless.
    fn apply(&self, state: &NodeState, request: Request) -> Result<Request, &'static str> {
        if self.w.is_none() && self.r.is_none() {
            return Ok(request);
        }
        let cluster = state.config.cluster.as_ref();
        let leaderless = cluster.filter(|c| c.replication.mode == crate::config::ReplicationMode::Leaderless);
        let Some(nwr) = leaderless.and_then(|c| c.replication.nwr(c.nodes.len()).ok()) else {
            return Err("w and r are for a leaderless cluster");
        };
        let consistency = replikv_core::kv::Consistency::Nwr { w: self.w.unwrap_or(nwr.w), r: self.r.unwrap_or(nwr.r) };
        Ok(Request::WithConsistency { consistency, request: Box::new(request) })
    }
}

/// The response to an error reply: 503 for what a retry may get past (a quorum that did not
/// answer, `NOQUORUM`; a follower that restarted and waits for its leader's word, `TRYAGAIN`),
/// 400 for the rest.
fn error_reply(e: String) -> Response {
    error(error_status(&e), e)
}

/// The status of an error reply's response (see [`error_reply`]).
fn error_status(e: &str) -> StatusCode {
    match e.starts_with("NOQUORUM") || e.starts_with("TRYAGAIN") {
        true => StatusCode::SERVICE_UNAVAILABLE,
        false => StatusCode::BAD_REQUEST,
    }
}

async fn get_key(
    State(state): State<Arc<NodeState>>,
    Path(key): Path<String>,
    Query(params): Query<QuorumParams>,
    headers: HeaderMap,
) -> Response {
    let request = match params.apply(&state, Request::Get { key: key.clone().into() }) {
        Ok(request) => request,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let (reply, token) = match session_call(&state, &headers, request).await {
        Ok(answer) => answer,
        Err(response) => return response,
    };
    let response = match reply {
        Reply::Bulk(value) => ([(header::CONTENT_TYPE, "application/octet-stream")], value).into_response(),
        Reply::Nil => error(StatusCode::NOT_FOUND, format!("no key {key:?}")),
        // Listed in the same session (a plain listing could come from a replica without the
        // session's writes): its token, taken after the listing, replaces the GET's.
        Reply::Error(e) if e.starts_with("SIBLINGS") => return siblings(&state, &params, &headers, key, e).await,
        Reply::Error(e) => error_reply(e),
        other => error(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected reply {other:?}")),
    };
    with_token(response, token)
}

/// 300 with every concurrent value of `key` and the context that replaces them, listed in
/// the session the headers describe (if any).
async fn siblings(state: &NodeState, params: &QuorumParams, headers: &HeaderMap, key: String, why: String) -> Response {
    let request = match params.apply(state, Request::Siblings { key: key.into() }) {
        Ok(request) => request,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let (listed, token) = match session_call(state, headers, request).await {
        Ok((Reply::Array(listed), token)) => (listed, token),
        Ok((Reply::Error(e), token)) => return with_token(error_reply(e), token),
        Ok(_) => return error(StatusCode::SERVICE_UNAVAILABLE, why),
        Err(response) => return response,
    };
    with_token(siblings_listed(&listed, why), token)
}

/// The 300 of a REPLIKV.SIBLINGS listing, for a GET answered `why`.
fn siblings_listed(listed: &[Reply], why: String) -> Response {
    let [Reply::Bulk(context), Reply::Array(values)] = listed else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected siblings {listed:?}"));
    };
    let values: Vec<Value> = values
        .iter()
        .filter_map(|v| match v {
            Reply::Bulk(bytes) => Some(match std::str::from_utf8(bytes) {
                Ok(text) => json!(text),
                Err(_) => json!({ "hex": bytes.iter().map(|b| format!("{b:02x}")).collect::<String>() }),
            }),
            Reply::Nil => Some(Value::Null),
            _ => None,
        })
        .collect();
    let body = json!({ "error": why, "context": String::from_utf8_lossy(context), "values": values });
    (StatusCode::MULTIPLE_CHOICES, Json(body)).into_response()
}

/// Query parameters of a PUT.
#[derive(Deserialize)]
struct PutParams {
    /// Milliseconds until the key expires.
    ttl_ms: Option<i64>,
    /// Leaderless: replicas the write waits for.
    w: Option<usize>,
    /// Leaderless: replicas a read waits for (no use to a PUT, accepted for symmetry).
    r: Option<usize>,
    /// Leaderless: the context of a 300, whose values this write replaces.
    context: Option<String>,
}

async fn put_key(
    State(state): State<Arc<NodeState>>,
    Path(key): Path<String>,
    Query(params): Query<PutParams>,
    headers: HeaderMap,
    value: Bytes,
) -> Response {
    let expiry = match params.ttl_ms {
        None => Expiry::Clear,
        Some(ms) if ms > 0 => Expiry::InMs(ms),
        Some(ms) => return error(StatusCode::BAD_REQUEST, format!("ttl_ms must be positive, got {ms}")),
    };
    // The router's body limit is bulk_bytes_max as the node started; CONFIG SET may lower it.
    let bulk_bytes_max = state.live.bulk_bytes_max();
    if value.len() > bulk_bytes_max {
        let why = format!("a value of {} bytes is over bulk_bytes_max ({bulk_bytes_max} bytes)", value.len());
        return error(StatusCode::PAYLOAD_TOO_LARGE, why);
    }
    let request = match params.context {
        Some(context) if expiry == Expiry::Clear => {
            Request::SetContext { key: key.into(), value, context: context.into() }
        }
        Some(_) => return error(StatusCode::BAD_REQUEST, "context and ttl_ms cannot go together"),
        None => Request::Set { key: key.into(), value, condition: SetCondition::Always, get: false, expiry },
    };
    let request = match (QuorumParams { w: params.w, r: params.r }).apply(&state, request) {
        Ok(request) => request,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let (reply, token) = match session_call(&state, &headers, request).await {
        Ok(answer) => answer,
        Err(response) => return response,
    };
    let response = match reply {
        Reply::Ok => Json(json!({ "ok": true })).into_response(),
        Reply::Error(e) => error_reply(e),
        other => error(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected reply {other:?}")),
    };
    with_token(response, token)
}

/// Query parameters of `GET /api/v1/log`.
#[derive(Deserialize)]
struct LogParams {
    /// The records after this position.
    after: Option<u64>,
    /// The records from this position on (`after` plus one; give one of the two).
    from: Option<u64>,
    /// Records at most.
    limit: Option<u64>,
    /// Only the changes of client keys starting with this.
    prefix: Option<String>,
    /// Every record the log holds, as `{"lsn", "epoch", "keys"}` (physical keys), the open
    /// and unacknowledged ones included: what a failover would lose.
    #[serde(default)]
    keys_only: bool,
}

/// Records `GET /api/v1/log` lists when no limit is given.
const LOG_LISTED_DEFAULT: u64 = 100;

/// `GET /api/v1/log`: the records after `after` (or from `from`), each with its transaction
/// and its changes in full, old and new values and versions (REPLIKV.LOG ... CHANGES), and
/// `keys`: its changes' keys. 410 when the log no longer holds them.
async fn log_records(State(state): State<Arc<NodeState>>, Query(params): Query<LogParams>) -> Response {
    let after = match (params.after, params.from) {
        (Some(_), Some(_)) => return error(StatusCode::BAD_REQUEST, "give after or from, not both"),
        (_, Some(0)) => return error(StatusCode::BAD_REQUEST, "from counts from 1, the log's first position"),
        (after, from) => after.or(from.map(|f| f - 1)).unwrap_or(0),
    };
    let count = params.limit.unwrap_or(LOG_LISTED_DEFAULT);
    if count == 0 {
        return error(StatusCode::BAD_REQUEST, "limit must be at least 1");
    }
    let prefix = Bytes::from(params.prefix.unwrap_or_default());
    let keys_only = params.keys_only;
    let request = Request::Log { after, count, changes: !keys_only, prefix };
    let records = match call(&state, request).await {
        Ok(Reply::Array(records)) => records,
        Ok(Reply::Error(e)) => return error(StatusCode::GONE, e),
        Ok(other) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected reply {other:?}")),
        Err(response) => return response,
    };
    if keys_only {
        let entries: Vec<Value> = records
            .iter()
            .filter_map(|r| match r {
                Reply::Array(parts) => match parts.as_slice() {
                    [Reply::Int(lsn), Reply::Int(epoch), keys] => {
                        Some(json!({ "lsn": lsn, "epoch": epoch, "keys": list_json(keys) }))
                    }
                    _ => None,
                },
                _ => None,
            })
            .collect();
        return Json(Value::Array(entries)).into_response();
    }
    let entries: Vec<Value> = records
        .iter()
        .map(|r| {
            let mut record = record_json(r);
            let statement_keys = record["statement"]["keys"].as_array().cloned().unwrap_or_default();
            let keys: Vec<Value> = record["changes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c["key"].clone())
                .chain(statement_keys)
                .collect();
            record["keys"] = Value::Array(keys);
            record
        })
        .collect();
    Json(Value::Array(entries)).into_response()
}

/// Query parameters of `GET /api/v1/changes`.
#[derive(Deserialize)]
struct ChangesParams {
    /// The first position to stream (the log's end when absent).
    from: Option<u64>,
    /// Only records with a change of a client key starting with this.
    prefix: Option<String>,
}

/// `GET /api/v1/changes?from=&prefix=`: the log's changes as server-sent events (see
/// [`crate::changes`]): first `event: from` (`{"from": N}`), then one `event: record` per
/// record, its `id` its position and its data the record as `GET /api/v1/log` shows it; an
/// `event: error` (`{"error": ...}`) ends the stream. A `Last-Event-ID` header resumes after
/// that position (over `from`); a start the log no longer holds is 410.
async fn changes(
    State(state): State<Arc<NodeState>>,
    Query(params): Query<ChangesParams>,
    headers: axum::http::HeaderMap,
) -> Response {
    use crate::changes::{field, Feed, Start};
    use axum::response::sse::{Event, KeepAlive, Sse};
    // An EventSource that reconnects sends the last id it got: that wins over the `from` of
    // its URL, which would replay what it has.
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(|v| v.trim().parse::<u64>());
    let start = match (resume, params.from) {
        (Some(Ok(id)), _) => Start::From(id.saturating_add(1)),
        (Some(Err(_)), _) => return error(StatusCode::BAD_REQUEST, "Last-Event-ID is not a log position"),
        (None, Some(0)) => return error(StatusCode::BAD_REQUEST, "from counts from 1, the log's first position"),
        (None, Some(from)) => Start::From(from),
        (None, None) => Start::End,
    };
    // A start the log no longer holds is refused before the stream opens (410): an
    // EventSource stops there, where an error event would have it reconnect for ever.
    if let Start::From(from) = start {
        let probe = Request::Log { after: from - 1, count: 1, changes: true, prefix: Bytes::new() };
        match call(&state, probe).await {
            Ok(Reply::Error(e)) if e.contains("are gone") => return error(StatusCode::GONE, e),
            Ok(Reply::Error(e)) => return error(StatusCode::CONFLICT, e),
            Ok(_) => {}
            Err(response) => return response,
        }
    }
    let feed = Feed::new(state.clone(), start, Bytes::from(params.prefix.unwrap_or_default()));
    let first = Event::default().event("from").data(json!({ "from": feed.position() + 1 }).to_string());
    let stopping = state.watch_stopping();
    let events = futures::stream::unfold(Some((feed, stopping)), |open| async move {
        let (mut feed, mut stopping) = open?;
        let next = tokio::select! {
            next = feed.next() => next,
            _ = stopping.wait_for(|stop| *stop) => Err("ERR the node is shutting down".into()),
        };
        match next {
            Ok(records) => {
                let events: Vec<Event> = records
                    .iter()
                    .map(|r| {
                        let id = field(r, "lsn").unwrap_or(0).to_string();
                        Event::default().event("record").id(id).data(record_json(r).to_string())
                    })
                    .collect();
                Some((events, Some((feed, stopping))))
            }
            Err(reason) => {
                let data = json!({ "error": reason.trim_start_matches("ERR ") }).to_string();
                Some((vec![Event::default().event("error").data(data)], None))
            }
        }
    });
    use futures::StreamExt;
    let events = futures::stream::once(async move { vec![first] })
        .chain(events)
        .flat_map(futures::stream::iter)
        .map(Ok::<Event, std::convert::Infallible>);
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

/// Query parameters of `GET /api/v1/conflicts`.
#[derive(Deserialize)]
struct ConflictsParams {
    /// Keys starting with this (every key when absent).
    prefix: Option<String>,
    /// Entries at most.
    count: Option<u64>,
}

/// `GET /api/v1/conflicts`: the newest entries of the conflict log (REPLIKV.CONFLICTS), each
/// an object of its fields.
async fn conflicts(State(state): State<Arc<NodeState>>, Query(params): Query<ConflictsParams>) -> Response {
    let count = params.count.unwrap_or(replikv_core::kv::CONFLICTS_LISTED_DEFAULT);
    if count == 0 {
        return error(StatusCode::BAD_REQUEST, "count must be at least 1".to_string());
    }
    let request = Request::Conflicts { prefix: params.prefix.unwrap_or_default().into(), count };
    match call(&state, request).await {
        Ok(Reply::Array(entries)) => Json(Value::Array(entries.iter().map(reply_json).collect())).into_response(),
        Ok(Reply::Error(e)) => error_reply(e),
        Ok(other) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected reply {other:?}")),
        Err(response) => response,
    }
}

/// A log record (REPLIKV.LOG's CHANGES form) as JSON: [`reply_json`], its statement built by
/// [`statement_json`].
fn record_json(record: &Reply) -> Value {
    let mut json = reply_json(record);
    if json.is_object() {
        json["statement"] = statement_json(record);
    }
    json
}

/// A list of values (keys) as a JSON array, never taken for pairs.
fn list_json(list: &Reply) -> Value {
    match list {
        Reply::Array(items) => Value::Array(items.iter().map(reply_json).collect()),
        other => reply_json(other),
    }
}

/// The `statement` of a log record (REPLIKV.LOG's CHANGES form) as JSON, built field by field:
/// its `keys`, a list of client keys, must not be taken for pairs by [`reply_json`].
fn statement_json(record: &Reply) -> Value {
    let Reply::Array(items) = record else { return Value::Null };
    let Some([_, Reply::Array(fields)]) =
        items.chunks(2).find(|pair| matches!(&pair[0], Reply::Bulk(name) if name.as_ref() == b"statement"))
    else {
        return Value::Null;
    };
    let mut object = serde_json::Map::new();
    for pair in fields.chunks(2) {
        let [Reply::Bulk(name), value] = pair else { continue };
        let value = list_json(value);
        object.insert(String::from_utf8_lossy(name).into_owned(), value);
    }
    Value::Object(object)
}

/// The first field names of the pairs [`reply_json`] turns into objects: a conflict entry, a
/// lecture record, a log record, a log change and a logged statement.
const OBJECT_FIRST_FIELDS: [&[u8]; 5] = [b"time_ms", b"table", b"lsn", b"key", b"command"];

/// A reply as JSON: an array of field and value pairs (names first, as XINFO's) as an object,
/// other arrays as arrays, values as text (or `{"hex"}` when not UTF-8), nil as null.
fn reply_json(reply: &Reply) -> Value {
    match reply {
        Reply::Nil | Reply::NullArray => Value::Null,
        Reply::Int(n) => json!(n),
        Reply::Ok => json!("OK"),
        Reply::Status(s) => json!(s),
        Reply::Error(e) => json!({ "error": e }),
        Reply::Bulk(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => json!(text),
            Err(_) => json!({ "hex": bytes.iter().map(|b| format!("{b:02x}")).collect::<String>() }),
        },
        Reply::Array(items) => {
            let named = items.len() % 2 == 0
                && !items.is_empty()
                && items.chunks(2).all(|pair| {
                    matches!(&pair[0], Reply::Bulk(name) if !name.is_empty() && name.iter().all(|b| b.is_ascii_lowercase() || *b == b'_'))
                });
            if named && matches!(&items[0], Reply::Bulk(first) if OBJECT_FIRST_FIELDS.contains(&first.as_ref())) {
                let mut object = serde_json::Map::new();
                for pair in items.chunks(2) {
                    let Reply::Bulk(name) = &pair[0] else { unreachable!("checked above") };
                    object.insert(String::from_utf8_lossy(name).into_owned(), reply_json(&pair[1]));
                }
                Value::Object(object)
            } else {
                Value::Array(items.iter().map(reply_json).collect())
            }
        }
        Reply::Watched(_) => Value::Null,
        // The session keeps the position; the client sees the answer.
        Reply::InSession { reply, .. } | Reply::InKeySession { reply, .. } => reply_json(reply),
    }
}

/// The body of `POST /api/v1/failover`: FAILOVER's options.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailoverBody {
    /// The follower to hand over to, as `host:port` of its client address.
    to: Option<String>,
    /// Milliseconds to wait for it to catch up; 0 or absent: no limit.
    #[serde(default)]
    timeout_ms: u64,
    /// Hand over at the timeout even if it has not caught up.
    #[serde(default)]
    force: bool,
    /// Cancel a handover under way.
    #[serde(default)]
    abort: bool,
}

/// `POST /api/v1/failover`: FAILOVER on this node (its leader answers `{"ok":true}` at once and
/// hands over; see `replikv failover`).
async fn failover(State(state): State<Arc<NodeState>>, body: Bytes) -> Response {
    let body: FailoverBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad failover body: {e}")),
    };
    if body.force && (body.to.is_none() || body.timeout_ms == 0) {
        return error(StatusCode::BAD_REQUEST, "force needs both a target and a timeout");
    }
    let request = Request::Failover { to: body.to, force: body.force, abort: body.abort, timeout_ms: body.timeout_ms };
    match call(&state, request).await {
        Ok(Reply::Ok) => Json(json!({ "ok": true })).into_response(),
        Ok(Reply::Error(e)) => error(StatusCode::CONFLICT, e),
        Ok(other) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected reply {other:?}")),
        Err(response) => response,
    }
}

async fn delete_key(
    State(state): State<Arc<NodeState>>,
    Path(key): Path<String>,
    Query(params): Query<QuorumParams>,
    headers: HeaderMap,
) -> Response {
    let request = match params.apply(&state, Request::Del { keys: vec![key.into()] }) {
        Ok(request) => request,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let (reply, token) = match session_call(&state, &headers, request).await {
        Ok(answer) => answer,
        Err(response) => return response,
    };
    let response = match reply {
        Reply::Int(n) => Json(json!({ "deleted": n })).into_response(),
        Reply::Error(e) => error_reply(e),
        other => error(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected reply {other:?}")),
    };
    with_token(response, token)
}

async fn status(State(state): State<Arc<NodeState>>) -> Response {
    let stats = state.handle.stats();
    Json(json!({
        "id": state.config.id,
        "role": state.handle.replication().role,
        "replication": crate::replication::json(&state),
        "version": env!("CARGO_PKG_VERSION"),
        "redis_version_compat": REDIS_VERSION_COMPAT,
        "resp_addr": state.config.resp_addr.to_string(),
        "http_addr": state.config.http_addr.to_string(),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "connections": state.connections_open.load(Ordering::Relaxed),
        "http_connections": state.http_connections.len(),
        "query_buffer_bytes": state.query_buffers.total_bytes(),
        "commands_total": state.commands_total.load(Ordering::Relaxed),
        "storage": stats,
        "peers": state.peers.as_ref().map(|p| p.status()).unwrap_or_default(),
        "stopped": state.handle.failure(),
    }))
    .into_response()
}

/// A reply's text, for the digest's JSON.
fn text(reply: &Reply) -> String {
    match reply {
        Reply::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
        Reply::Int(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

async fn digest(State(state): State<Arc<NodeState>>) -> Response {
    match call(&state, Request::Digest { bucket: None }).await {
        Ok(Reply::Array(parts)) if parts.len() == 4 => {
            let buckets: Vec<String> = match &parts[3] {
                Reply::Array(b) => b.iter().map(text).collect(),
                _ => Vec::new(),
            };
            let (lsn, keys) = match (&parts[0], &parts[1]) {
                (Reply::Int(l), Reply::Int(k)) => (*l, *k),
                _ => (0, 0),
            };
            Json(
                json!({ "id": state.config.id, "lsn": lsn, "keys": keys, "root": text(&parts[2]), "buckets": buckets }),
            )
            .into_response()
        }
        Ok(Reply::Error(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Ok(other) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected reply {other:?}")),
        Err(response) => response,
    }
}

async fn digest_bucket(State(state): State<Arc<NodeState>>, Path(bucket): Path<usize>) -> Response {
    if bucket >= replikv_core::digest::DIGEST_BUCKETS {
        let why = format!("bucket {bucket}: buckets are 0..{}", replikv_core::digest::DIGEST_BUCKETS - 1);
        return error(StatusCode::BAD_REQUEST, why);
    }
    match call(&state, Request::Digest { bucket: Some(bucket) }).await {
        Ok(Reply::Array(parts)) if parts.len() == 2 => {
            let entries: Vec<_> = match &parts[1] {
                Reply::Array(e) => e
                    .iter()
                    .filter_map(|pair| match pair {
                        Reply::Array(kv) if kv.len() == 2 => Some(json!({ "key": text(&kv[0]), "hash": text(&kv[1]) })),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let lsn = if let Reply::Int(l) = parts[0] { l } else { 0 };
            Json(json!({ "id": state.config.id, "lsn": lsn, "bucket": bucket, "entries": entries })).into_response()
        }
        Ok(Reply::Error(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Ok(other) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected reply {other:?}")),
        Err(response) => response,
    }
}

async fn config(State(state): State<Arc<NodeState>>) -> Response {
    Json(state.live.json()).into_response()
}

async fn ready(State(state): State<Arc<NodeState>>) -> Response {
    match state.handle.failure() {
        None => Json(json!({ "ready": true })).into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "ready": false, "reason": why }))).into_response(),
    }
}

/// The answer of the test endpoints on a node started without `--test-faults`.
const NO_TEST_FAULTS: &str =
    "this node was not started with --test-faults (set REPLIKV_TEST_FAULTS=1 when starting it)";

/// The node's link fault table (`None` for a node without peers), or the reason for a 404 on a
/// node started without `--test-faults`.
fn link_faults(state: &NodeState) -> Result<Option<&Arc<crate::faults::LinkFaults>>, &'static str> {
    if !state.config.test_faults {
        return Err(NO_TEST_FAULTS);
    }
    // A node with no peers has no links, hence an empty table.
    Ok(state.peers.as_ref().and_then(|p| p.faults()))
}

/// The fault table as the test endpoints answer it.
fn faults_json(state: &NodeState, faults: Option<&Arc<crate::faults::LinkFaults>>) -> Response {
    let table = faults.map(|f| f.table()).unwrap_or_default();
    Json(json!({ "id": state.config.id, "peers": table })).into_response()
}

async fn get_faults(State(state): State<Arc<NodeState>>) -> Response {
    match link_faults(&state) {
        Ok(faults) => faults_json(&state, faults),
        Err(why) => error(StatusCode::NOT_FOUND, why),
    }
}

/// The body of `PUT /api/v1/test/faults`: one peer's fault, or `clear`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultChange {
    /// Clear every link's fault (the other fields are then ignored).
    #[serde(default)]
    clear: bool,
    /// The peer whose link the fault is for.
    peer: Option<String>,
    /// Every message to the peer is discarded; unchanged if absent.
    blocked: Option<bool>,
    /// Each message to the peer is held this many milliseconds after it was queued; unchanged
    /// if absent.
    delay_ms: Option<u64>,
    /// The probability that a message to the peer is discarded; unchanged if absent.
    drop: Option<f64>,
}

async fn put_faults(State(state): State<Arc<NodeState>>, body: Bytes) -> Response {
    let faults = match link_faults(&state) {
        Ok(faults) => faults,
        Err(why) => return error(StatusCode::NOT_FOUND, why),
    };
    let change: FaultChange = match serde_json::from_slice(&body) {
        Ok(change) => change,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("fault body: {e}")),
    };
    match (change.clear, change.peer, faults) {
        (true, _, faults) => faults.iter().for_each(|f| f.clear()),
        (false, None, _) => {
            return error(StatusCode::BAD_REQUEST, "fault body: name a \"peer\" or set \"clear\": true")
        }
        (false, Some(peer), None) => {
            return error(StatusCode::BAD_REQUEST, format!("no link to peer {peer:?}: this node has no peers"))
        }
        (false, Some(peer), Some(faults)) => {
            let mut fault = faults.table().get(&peer).copied().unwrap_or_default();
            fault.blocked = change.blocked.unwrap_or(fault.blocked);
            fault.delay_ms = change.delay_ms.unwrap_or(fault.delay_ms);
            fault.drop = change.drop.unwrap_or(fault.drop);
            if let Err(e) = faults.set(&peer, fault) {
                return error(StatusCode::BAD_REQUEST, e);
            }
            tracing::warn!("test fault on the link to {peer}: {fault:?}");
        }
    }
    faults_json(&state, faults)
}

async fn metrics(State(state): State<Arc<NodeState>>) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], state.metrics.encode()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves `router` on a free port; returns its address.
    async fn serve(router: Router) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        addr
    }

    /// The status code of `GET path`.
    async fn status_of(addr: std::net::SocketAddr, path: &str) -> u16 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response.split(' ').nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn errors_a_retry_may_get_past_are_503_and_the_rest_400() {
        assert_eq!(error_status("NOQUORUM 1 of 2 replicas answered"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error_status("TRYAGAIN this replica restarted holding records"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error_status("READONLY You can't write against a read only replica."), StatusCode::BAD_REQUEST);
        assert_eq!(error_status("ERR value is not an integer"), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn requests_over_the_limit_get_503_and_slow_ones_408() {
        let routes = Router::new()
            .route("/slow", get(|| async { tokio::time::sleep(Duration::from_secs(5)).await }))
            .route("/quick", get(|| async { "ok" }));
        let config = crate::config::NodeConfig::resolve(&crate::config::NodeArgs::default()).unwrap();
        let (state, runtime) = crate::state::testing::state(config);
        let addr = serve(limited(routes, state, 2, Duration::from_millis(300))).await;
        let started = std::time::Instant::now();
        let slow = [tokio::spawn(status_of(addr, "/slow")), tokio::spawn(status_of(addr, "/slow"))];
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(status_of(addr, "/quick").await, 503, "a third request while two run");
        for task in slow {
            assert_eq!(task.await.unwrap(), 408, "cut off at the timeout");
        }
        assert!(started.elapsed() < Duration::from_secs(3), "the timeout cut the 5 s handlers short");
        assert_eq!(status_of(addr, "/quick").await, 200, "permits came back");
        runtime.shutdown().await;
    }
}
