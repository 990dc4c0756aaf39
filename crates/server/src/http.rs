//! The HTTP/JSON front end: key operations, status, configuration, health and Prometheus
//! metrics.
//!
//! | method and path | answer |
//! | --- | --- |
//! | `GET /api/v1/kv/{key}` | 200 with the value as the body (bytes, as stored), or 404 |
//! | `PUT /api/v1/kv/{key}[?ttl_ms=N]` | stores the request body as the value; 200 `{"ok":true}` |
//! | `DELETE /api/v1/kv/{key}` | 200 `{"deleted":0 or 1}` |
//! | `GET /api/v1/status` | the node's id, role, uptime, storage counters, connections |
//! | `GET /api/v1/config` | the effective configuration |
//! | `GET /health` | 200 while the process runs |
//! | `GET /ready` | 200 while the node serves requests; 503 with the reason once it stopped |
//! | `GET /metrics` | Prometheus/OpenMetrics text |
//!
//! Values travel as raw bodies rather than JSON strings because they are binary-safe bytes;
//! everything else, errors included, is JSON (`{"error": "..."}`). A key is the rest of the
//! path after `/api/v1/kv/`, percent-decoded, so it may contain `/`.
//!
//! CAVEATS
//! - Keys must be valid UTF-8 over HTTP; binary keys need RESP.
//! - HTTP has no connection limit and no request timeout of its own (`connections_max`
//!   counts RESP clients); a PUT body is bounded by `bulk_bytes_max`. At shutdown, requests
//!   still running after `SHUTDOWN_DRAIN_SECS` are dropped.

use crate::resp::admin::REDIS_VERSION_COMPAT;
use crate::state::NodeState;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use replikv_core::kv::{Expiry, Reply, Request, SetCondition};
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The HTTP routes of a node.
pub fn router(state: Arc<NodeState>) -> Router {
    let body_limit = state.config.bulk_bytes_max;
    Router::new()
        .route("/api/v1/kv/{*key}", get(get_key).put(put_key).delete(delete_key))
        .route("/api/v1/status", get(status))
        .route("/api/v1/config", get(config))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// A JSON error with a status code.
fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

/// Sends one request through the runtime and returns its reply, or the response to send when
/// the node cannot answer.
async fn call(state: &NodeState, request: Request) -> Result<Reply, Response> {
    match state.handle.call(vec![request]).await {
        Ok(mut replies) => Ok(replies.remove(0)),
        Err(stopped) => Err(error(StatusCode::SERVICE_UNAVAILABLE, stopped)),
    }
}

async fn get_key(State(state): State<Arc<NodeState>>, Path(key): Path<String>) -> Response {
    match call(&state, Request::Get { key: key.clone().into() }).await {
        Ok(Reply::Bulk(value)) => ([(header::CONTENT_TYPE, "application/octet-stream")], value).into_response(),
        Ok(Reply::Nil) => error(StatusCode::NOT_FOUND, format!("no key {key:?}")),
        Ok(other) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected reply {other:?}")),
        Err(response) => response,
    }
}

/// Query parameters of a PUT.
#[derive(Deserialize)]
struct PutParams {
    /// Milliseconds until the key expires.
    ttl_ms: Option<i64>,
}

async fn put_key(
    State(state): State<Arc<NodeState>>,
    Path(key): Path<String>,
    Query(params): Query<PutParams>,
    value: Bytes,
) -> Response {
    let expiry = match params.ttl_ms {
        None => Expiry::Clear,
        Some(ms) if ms > 0 => Expiry::InMs(ms),
        Some(ms) => return error(StatusCode::BAD_REQUEST, format!("ttl_ms must be positive, got {ms}")),
    };
    let request = Request::Set { key: key.into(), value, condition: SetCondition::Always, get: false, expiry };
    match call(&state, request).await {
        Ok(Reply::Ok) => Json(json!({ "ok": true })).into_response(),
        Ok(Reply::Error(e)) => error(StatusCode::BAD_REQUEST, e),
        Ok(other) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected reply {other:?}")),
        Err(response) => response,
    }
}

async fn delete_key(State(state): State<Arc<NodeState>>, Path(key): Path<String>) -> Response {
    match call(&state, Request::Del { keys: vec![key.into()] }).await {
        Ok(Reply::Int(n)) => Json(json!({ "deleted": n })).into_response(),
        Ok(other) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected reply {other:?}")),
        Err(response) => response,
    }
}

async fn status(State(state): State<Arc<NodeState>>) -> Response {
    let stats = state.handle.stats();
    Json(json!({
        "id": state.config.id,
        "role": "standalone",
        "version": env!("CARGO_PKG_VERSION"),
        "redis_version_compat": REDIS_VERSION_COMPAT,
        "resp_addr": state.config.resp_addr.to_string(),
        "http_addr": state.config.http_addr.to_string(),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "connections": state.connections_open.load(Ordering::Relaxed),
        "commands_total": state.commands_total.load(Ordering::Relaxed),
        "storage": stats,
        "stopped": state.handle.failure(),
    }))
    .into_response()
}

async fn config(State(state): State<Arc<NodeState>>) -> Response {
    Json(&state.config).into_response()
}

async fn ready(State(state): State<Arc<NodeState>>) -> Response {
    match state.handle.failure() {
        None => Json(json!({ "ready": true })).into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "ready": false, "reason": why }))).into_response(),
    }
}

async fn metrics(State(state): State<Arc<NodeState>>) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], state.metrics.encode()).into_response()
}
