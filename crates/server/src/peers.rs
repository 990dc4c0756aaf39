//! A node's connections to the other nodes of its cluster, opened and checked at start.
//!
//! When the configuration names a cluster with other nodes, the node listens on its own
//! `peer_addr` and keeps one outbound link to every other node. Each connection begins with
//! the peer handshake (see [`crate::peer`]): a node of another cluster, another protocol
//! version or another storage format is refused, with a reason naming both sides' values, and
//! the refusal shows in `/api/v1/status` and `replikv cluster status`. This is the wiring the
//! replication strategies will send their messages over.
//!
//! CAVEATS
//! - No message travels yet: replication is not implemented (issue 4), so the links carry the
//!   empty message type `()` and a link's state says only whether the peer answered the
//!   handshake and is of the same cluster. With nothing written and no TCP keepalive, a peer
//!   whose host vanishes (not a process that exits: its socket closes) stays `connected`
//!   until heartbeats exist.

use crate::config::NodeConfig;
use crate::error::{Error, Result};
use crate::peer::{Hello, Link, LinkConfig, LinkState, Listener, ListenerConfig, ListenerStats};
use serde::Serialize;
use std::collections::BTreeSet;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// Inbound messages waiting to be read at most (none are sent yet: see CAVEATS).
const INBOX_MESSAGES_MAX: usize = 1024;

/// A node's peer listener and links.
pub struct Peers {
    /// One link per other node, in the cluster file's order.
    links: Vec<Link<()>>,
    /// The listener's counters.
    listener: ListenerStats,
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
}

impl Peers {
    /// Listens on this node's peer address and links to every other node of its cluster;
    /// `None` when the configuration names no other node.
    pub async fn start(config: &NodeConfig, shutdown: watch::Receiver<bool>) -> Result<Option<Peers>> {
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
        let mut listener_config = ListenerConfig::new(local.clone());
        listener_config.allowed_node_ids = Some(others.iter().map(|n| n.id.clone()).collect::<BTreeSet<_>>());
        let listener = Listener::new(tcp, listener_config);
        let stats = listener.stats();
        let (inbox_tx, mut inbox) = mpsc::channel::<(std::sync::Arc<str>, ())>(INBOX_MESSAGES_MAX);
        tokio::spawn(listener.serve(inbox_tx, shutdown.clone()));
        // Nothing is sent yet; drain whatever arrives so that a peer is never held up.
        tokio::spawn(async move { while inbox.recv().await.is_some() {} });
        let links = others
            .iter()
            .map(|n| {
                let config = LinkConfig::new(local.clone(), n.id.clone(), n.peer_addr.to_string());
                Link::spawn(config, shutdown.clone())
            })
            .collect();
        Ok(Some(Peers { links, listener: stats }))
    }

    /// Every peer's state now.
    pub fn status(&self) -> Vec<PeerStatus> {
        let inbound = self.listener.snapshot().peers;
        self.links
            .iter()
            .map(|link| {
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
                }
            })
            .collect()
    }
}
