//! The HTTP accept loop: how many connections, how long a client may take to send a request
//! head, and a graceful stop.
//!
//! axum's own `serve` has neither a connection limit nor a header timeout: 200 connections
//! sending one byte a second were never closed. So the node runs its own loop over hyper's
//! HTTP/1.1 connection builder, with the routes of [`crate::http`] as the service:
//!
//! - **Connections.** The loop admits a connection while fewer than `http_connections_max`
//!   are open (read at each accept, so `CONFIG SET` applies to the next one). One more is
//!   accepted, answered `503` with a JSON error naming the limit, and closed at once: the
//!   answer is written without waiting (a fresh socket's send buffer takes it whole) so a
//!   client that does not read cannot hold the loop. The first refusal of a spell is logged
//!   as a warning, the rest at debug level, and the loop logs when it admits again. A slot
//!   is held from accept until the connection's task ends, however it ends.
//! - **Request heads.** hyper's `header_read_timeout`, from `http_header_timeout_ms` as it is
//!   when the connection is accepted: a client that has not sent a whole request line and
//!   headers within it is closed without an answer, the slow-loris defence. hyper starts the
//!   clock whenever the connection waits for a head, so an idle keep-alive connection is
//!   closed after as long.
//! - **Bodies** are bounded per request by the route layer ([`crate::http`]:
//!   `http_body_timeout_ms`, `bulk_bytes_max`, and the node-wide
//!   `query_buffer_total_bytes_max` through [`crate::query_buffers`]).
//! - **Stopping.** When `shutdown` turns true the loop stops accepting and tells every
//!   connection to close gracefully: an idle one closes at once, one mid-request answers it
//!   first. The loop returns once every connection has ended; the node bounds that wait
//!   (`SHUTDOWN_DRAIN_SECS`).
//!
//! CAVEATS
//! - HTTP/1.1 only (as before): no HTTP/2, no TLS.
//! - A refused client that had already sent its request may see a reset rather than the 503:
//!   closing a socket with unread bytes resets it.
//! - A head timeout closes without a `408`: hyper has no response to send at that point.
//! - Lowering `http_connections_max` closes no open connection, and a changed
//!   `http_header_timeout_ms` applies to connections accepted after the change.

use crate::state::NodeState;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Milliseconds to wait after a failed accept (out of file descriptors, say) before the next.
const ACCEPT_RETRY_MS: u64 = 50;

/// The HTTP connections open now.
pub struct HttpConnections {
    /// How many are open; a watch, so that shutdown can wait for none.
    open: watch::Sender<usize>,
}

/// One admitted connection's slot; dropping it frees the slot.
pub struct HttpSlot {
    open: watch::Sender<usize>,
}

impl Default for HttpConnections {
    fn default() -> HttpConnections {
        HttpConnections::new()
    }
}

impl HttpConnections {
    /// No connection open.
    pub fn new() -> HttpConnections {
        HttpConnections { open: watch::Sender::new(0) }
    }

    /// A slot for one more connection; `None` when `connections_max` are open already.
    pub fn admit(&self, connections_max: usize) -> Option<HttpSlot> {
        let admitted = self.open.send_if_modified(|open| {
            let room = *open < connections_max;
            *open += usize::from(room);
            room
        });
        admitted.then(|| HttpSlot { open: self.open.clone() })
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        *self.open.borrow()
    }

    /// True when no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until every connection has ended.
    pub async fn wait_empty(&self) {
        let mut open = self.open.subscribe();
        // `self` holds the sender, so the channel cannot close while this waits.
        let _ = open.wait_for(|n| *n == 0).await;
    }
}

impl Drop for HttpSlot {
    fn drop(&mut self) {
        self.open.send_modify(|open| *open -= 1);
    }
}

/// Serves HTTP on `listener` until `shutdown` turns true, then lets the requests in flight
/// finish and returns once every connection has ended.
pub async fn serve(listener: TcpListener, state: Arc<NodeState>, mut shutdown: watch::Receiver<bool>) {
    let router = crate::http::router(state.clone());
    let mut refusing = false;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, addr) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!("accepting an HTTP connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
                continue;
            }
        };
        let connections_max = state.live.http_connections_max();
        let Some(slot) = state.http_connections.admit(connections_max) else {
            if refusing {
                tracing::debug!(client = %addr, "HTTP connection refused: {connections_max} open (http_connections_max)");
            } else {
                tracing::warn!(
                    client = %addr,
                    "{connections_max} HTTP connections are open (http_connections_max): new ones get 503 and are \
                     closed until one ends"
                );
            }
            refusing = true;
            refuse(&stream, connections_max);
            continue;
        };
        if std::mem::take(&mut refusing) {
            tracing::info!("HTTP connections below http_connections_max ({connections_max}) again: accepting");
        }
        let _ = stream.set_nodelay(true);
        let header_timeout = state.live.http_header_timeout();
        tokio::spawn(serve_connection(stream, addr, router.clone(), header_timeout, shutdown.clone(), slot));
    }
    state.http_connections.wait_empty().await;
}

/// Answers a connection over the limit with 503, without waiting; the caller drops it.
fn refuse(stream: &TcpStream, connections_max: usize) {
    let why = format!("{connections_max} HTTP connections are open, the most this node serves (http_connections_max)");
    let body = serde_json::json!({ "error": why }).to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    // Best effort: a fresh socket's send buffer takes these few bytes whole, and a client
    // that is not reading must not hold the accept loop.
    let _ = stream.try_write(response.as_bytes());
}

/// Serves one connection's requests with `router` until the client leaves, a head takes
/// over `header_timeout`, or the node stops; `_slot` frees its place when this ends.
async fn serve_connection(
    stream: TcpStream,
    addr: SocketAddr,
    router: Router,
    header_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
    _slot: HttpSlot,
) {
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        // The routes read the client's address from here (the body's share of the node's
        // query buffers is logged by it).
        request.extensions_mut().insert(ConnectInfo(addr));
        let mut router = router.clone();
        async move { tower_service::Service::call(&mut router, request).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let stopping = async {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stopping => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    match result {
        Ok(()) => {}
        Err(e) if e.is_timeout() => {
            tracing::debug!(client = %addr, "HTTP connection closed: no complete request head within {header_timeout:?}")
        }
        Err(e) => tracing::debug!(client = %addr, "HTTP connection: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_is_bounded_and_a_dropped_slot_frees_its_place() {
        let connections = HttpConnections::new();
        let first = connections.admit(2).unwrap();
        let second = connections.admit(2).unwrap();
        assert!(connections.admit(2).is_none(), "two open, two at most");
        assert_eq!(connections.len(), 2, "a refusal takes no slot");
        assert!(connections.admit(3).is_some(), "a raised limit admits one more (dropped at once)");
        drop(first);
        let third = connections.admit(2).expect("the freed slot");
        drop((second, third));
        assert!(connections.is_empty());
    }
}
