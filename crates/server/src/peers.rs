//! A node's connections to the other nodes of its cluster, opened and checked at start.
//!
//! When the configuration names a cluster with other nodes, the node listens on its own
//! `peer_addr` and keeps one outbound link to every other node. Each connection begins with
//! the peer handshake (see [`crate::peer`]): a node of another cluster, another protocol
//! version or another storage format is refused, with a reason naming both sides' values, and
//! the refusal shows in `/api/v1/status` and `replikv cluster status`. The links carry the
//! replication protocol's [`Message`]s: the runtime's outputs go out through
//! [`Peers::sender`], and what the listener receives goes from each peer's connection task
//! straight into the runtime's queue ([`PeerListener::serve`], [`RuntimeSink`]): a full queue
//! holds that peer's socket (backpressure, not loss).
//!
//! With `--test-faults`, every link obeys one shared [`LinkFaults`] table, which the HTTP front
//! end reaches through [`Peers::faults`] (see [`crate::faults`]).
//!
//! CAVEATS
//! - A link's state says whether the peer answered the handshake; whether replication is
//!   flowing is the replica's to say (heartbeats and acknowledgements, in `INFO replication`).

use crate::config::NodeConfig;
use crate::error::{Error, Result};
use crate::faults::LinkFaults;
use crate::peer::{Gone, Hello, Link, LinkConfig, LinkState, Listener, ListenerConfig, ListenerStats, Sink};
use crate::runtime::{Handle, PeerSender};
use replikv_core::node::PeerMessage as Message;
use replikv_core::version::NodeId;
use serde::Serialize;
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A node's peer listener and links.
pub struct Peers {
    /// One link per other node, in the cluster file's order.
    links: Arc<Vec<(NodeId, Link<Message>)>>,
    /// The listener's counters.
    listener: ListenerStats,
    /// The links' test faults, when the node runs with `--test-faults`.
    faults: Option<Arc<LinkFaults>>,
}

/// The peer listener, bound but not yet serving: it serves once the runtime it delivers to
/// exists ([`PeerListener::serve`]). Dropped unserved, its port stays bound and accepts
/// nothing, so peers would wait out their handshake timeout.
#[must_use = "a peer listener accepts nothing until it is served"]
pub struct PeerListener {
    listener: Listener,
    shutdown: watch::Receiver<bool>,
}

impl PeerListener {
    /// Serves peers in a task, delivering their messages into `runtime`.
    pub fn serve(self, runtime: Handle) {
        tokio::spawn(self.listener.serve(RuntimeSink(runtime), self.shutdown));
    }
}

/// The runtime as a peer listener's [`Sink`].
#[derive(Clone)]
pub struct RuntimeSink(pub Handle);

impl Sink<Message> for RuntimeSink {
    async fn deliver(&self, from: &Arc<str>, message: Message) -> std::result::Result<(), Gone> {
        self.0.deliver(NodeId::from_name(from), message).await.map_err(|_| Gone)
    }
}

/// One peer as `/api/v1/status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct PeerStatus {
    /// The peer's node id.
    pub id: String,
    /// Its peer address.
    pub addr: String,
    /// `connected`, `connecting`, `refused`, `down` or `stopped`.
    pub state: &'static str,
    /// Why it is refused or down, if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// True when the peer has a connection to this node open (its own link, inbound here).
    pub inbound: bool,
    /// Messages waiting in the link's queue (they wait while the link is down).
    pub queued: usize,
    /// Messages taken from the queue and dropped (a failed write, or a test fault's discard).
    pub messages_lost: u64,
}

impl Peers {
    /// Listens on this node's peer address and links to every other node of its cluster;
    /// `None` when the configuration names no other node.
    pub async fn start(config: &NodeConfig, shutdown: watch::Receiver<bool>) -> Result<Option<(Peers, PeerListener)>> {
        let Some(cluster) = &config.cluster else { return Ok(None) };
        let Some(me) = cluster.nodes.iter().find(|n| n.id == config.id) else { return Ok(None) };
        let others: Vec<_> = cluster.nodes.iter().filter(|n| n.id != config.id).collect();
        if others.is_empty() {
            return Ok(None);
        }
        let local = Hello::new(cluster.name.clone(), config.id.clone());
        let tcp = TcpListener::bind(me.peer_addr)
            .await
            .map_err(|e| Error::start(format!("listening for peers on {}", me.peer_addr), e))?;
        let mode = cluster.replication.mode.core();
        let rules = match cluster.replication.mode {
            crate::config::ReplicationMode::MultiLeader => Some(cluster.rules()?.fingerprint()),
            _ => None,
        };
        let physical = (cluster.replication.log_format == replikv_core::replication::LogFormat::Physical)
            .then_some(config.segment_bytes_max);
        let mut listener_config = ListenerConfig::new(local.clone());
        listener_config.physical = physical;
        listener_config.mode = mode;
        listener_config.rules = rules;
        listener_config.allowed_node_ids = Some(others.iter().map(|n| n.id.clone()).collect::<BTreeSet<_>>());
        let listener = Listener::new(tcp, listener_config);
        let stats = listener.stats();
        let listener = PeerListener { listener, shutdown: shutdown.clone() };
        let faults = config.test_faults.then(|| {
            tracing::warn!("test faults on: peer links obey PUT /api/v1/test/faults");
            Arc::new(LinkFaults::new(others.iter().map(|n| n.id.clone())))
        });
        let links = others
            .iter()
            .map(|n| {
                let mut config = LinkConfig::new(local.clone(), n.id.clone(), n.peer_addr.to_string());
                config.mode = mode;
                config.rules = rules;
                config.physical = physical;
                config.faults = faults.clone();
                (NodeId::from_name(&n.id), Link::spawn(config, shutdown.clone()))
            })
            .collect();
        Ok(Some((Peers { links: Arc::new(links), listener: stats, faults }, listener)))
    }

    /// Sends a message to a node through its link; a full queue drops it (the replication
    /// protocol resends what is not acknowledged).
    pub fn sender(&self) -> PeerSender {
        let links = self.links.clone();
        Arc::new(move |to: NodeId, message: Message| {
            let Some((_, link)) = links.iter().find(|(id, _)| *id == to) else {
                tracing::warn!("no link to node {to:?}: message dropped");
                return;
            };
            if let Err(e) = link.try_send(message) {
                tracing::debug!("message dropped: {e}");
            }
        })
    }

    /// The links' test faults, when the node runs with `--test-faults`.
    pub fn faults(&self) -> Option<&Arc<LinkFaults>> {
        self.faults.as_ref()
    }

    /// Every peer's state now.
    pub fn status(&self) -> Vec<PeerStatus> {
        let inbound = self.listener.snapshot().peers;
        self.links
            .iter()
            .map(|(_, link)| {
                let snapshot = link.snapshot();
                let (state, reason) = match snapshot.state {
                    LinkState::Connected { .. } => ("connected", None),
                    LinkState::Connecting => ("connecting", None),
                    LinkState::Refused { reason, .. } => ("refused", Some(reason)),
                    LinkState::BackingOff { error, .. } => ("down", Some(error)),
                    LinkState::Stopped => ("stopped", None),
                };
                PeerStatus {
                    inbound: inbound.contains(&snapshot.peer_node_id),
                    id: snapshot.peer_node_id,
                    addr: snapshot.peer_addr,
                    state,
                    reason,
                    queued: snapshot.queued,
                    messages_lost: snapshot.messages_lost,
                }
            })
            .collect()
    }
}
