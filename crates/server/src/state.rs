//! What every front end of a node shares: its configuration, metrics, runtime handle and
//! counters.

use crate::config::NodeConfig;
use crate::metrics::Metrics;
use crate::runtime::Handle;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A node's shared state, behind an `Arc`.
pub struct NodeState {
    /// The effective configuration.
    pub config: NodeConfig,
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
            config,
            metrics,
            handle,
            started: Instant::now(),
            next_client_id: AtomicU64::new(1),
            connections_total: AtomicU64::new(0),
            commands_total: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            peers,
        }
    }

    /// A fresh client id.
    pub fn client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }
}
