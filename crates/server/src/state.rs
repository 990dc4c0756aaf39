//! What every front end of a node shares: its configuration (as it started and as it is
//! now), metrics, runtime handle, open connections, bytes of incomplete requests and
//! counters.

use crate::clients::Clients;
use crate::config::NodeConfig;
use crate::http_serve::HttpConnections;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::query_buffers::QueryBuffers;
use crate::runtime::Handle;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A node's shared state, behind an `Arc`.
pub struct NodeState {
    /// The configuration the node started with. The settings `CONFIG SET` changes
    /// (`connections_max`, the request limits, the HTTP limits, `ack_timeout_ms`) are read
    /// from `live`; every other setting is fixed, and is read here.
    pub config: NodeConfig,
    /// The configuration now, and the settings that change while the node runs.
    pub live: Live,
    /// The open RESP connections.
    pub clients: Clients,
    /// The open HTTP connections.
    pub http_connections: HttpConnections,
    /// The bytes of incomplete requests every RESP connection and HTTP body holds.
    pub query_buffers: QueryBuffers,
    /// The node's metrics registry.
    pub metrics: Arc<Metrics>,
    /// Where requests go.
    pub handle: Handle,
    /// When the node started, for uptime.
    pub started: Instant,
    /// The next client id (`CLIENT ID`), starting at 1.
    next_client_id: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Commands served since start.
    pub commands_total: AtomicU64,
    /// Client connections open now.
    pub connections_open: AtomicU64,
    /// The node's links to its cluster's other nodes, if it has any.
    pub peers: Option<crate::peers::Peers>,
    /// Turns true when the node stops: change streams end then, so that no endless response
    /// holds the HTTP drain.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl NodeState {
    /// Shared state for a node that has just started.
    pub fn new(
        config: NodeConfig,
        metrics: Arc<Metrics>,
        handle: Handle,
        peers: Option<crate::peers::Peers>,
    ) -> NodeState {
        NodeState {
            live: Live::new(&config),
            clients: Clients::new(),
            http_connections: HttpConnections::new(),
            query_buffers: QueryBuffers::new(),
            config,
            metrics,
            handle,
            started: Instant::now(),
            next_client_id: AtomicU64::new(1),
            connections_total: AtomicU64::new(0),
            commands_total: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            peers,
            stopping: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Tells every change stream the node stops.
    pub fn stop_streams(&self) {
        self.stopping.send_replace(true);
    }

    /// A watch that turns true when the node stops.
    pub fn watch_stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// A fresh client id.
    pub fn client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Shared state for unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A standalone node's state with `config`, over an in-memory replica, and its runtime
    /// (which the test shuts down).
    pub(crate) fn state(config: NodeConfig) -> (Arc<NodeState>, crate::runtime::Runtime) {
        let replica = replikv_core::node::Replica::new(
            replikv_core::storage::MemoryEngine::new(),
            replikv_core::version::NodeId(1),
        );
        let metrics = Arc::new(Metrics::new());
        let peers: crate::runtime::PeerSender = Arc::new(|_, _| {});
        let (failed, _) = tokio::sync::watch::channel(false);
        let runtime = crate::runtime::Runtime::start(replica, metrics.clone(), 16, 16, peers, failed);
        (Arc::new(NodeState::new(config, metrics, runtime.handle(), None)), runtime)
    }
}
