//! What a node shows of its replication: `INFO replication`, `ROLE`, `/api/v1/status`,
//! `/metrics` and `replikv status` all read one [`ReplicationStatus`].

use crate::replication::{Epoch, Lsn};
use crate::single_leader::{FollowerProgress, FollowerView};
use crate::version::NodeId;
use serde::Serialize;

/// What `INFO replication`, `ROLE`, `/api/v1/status` and `replikv status` show.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplicationStatus {
    /// The replication mode: `single-leader`, `leaderless` or `multi-leader`.
    pub mode: &'static str,
    /// `standalone`, `leader`, `follower` or `candidate`; `leaderless` on a leaderless node.
    pub role: &'static str,
    /// The epoch.
    pub epoch: Epoch,
    /// Whom this node voted for in `epoch`, if anyone.
    pub voted_for: Option<NodeId>,
    /// Elections this node stood in (past a pre-vote) since start.
    pub elections: u64,
    /// Elections it won since start.
    pub elections_won: u64,
    /// Changes this node cut from its log and saved to its rollback log, in all.
    pub rolled_back: u64,
    /// Records of the leader's storage bytes this node stored as its own writes, its segment
    /// files having left the leader's (`log_format = "physical"`; 0 otherwise).
    pub physical_diverged: u64,
    /// Automatic failover is on.
    pub auto_failover: bool,
    /// A FAILOVER's state, as Redis's `master_failover_state` names it: `no-failover`,
    /// `waiting-for-sync`, `failover-in-progress`.
    pub failover_state: &'static str,
    /// The newest record in this node's log.
    pub last_lsn: Lsn,
    /// The newest record durable here (the leader's shipping limit; a follower's applied).
    pub durable_lsn: Lsn,
    /// The oldest record the log still holds.
    pub first_lsn: Lsn,
    /// Bytes the log holds.
    pub log_bytes: u64,
    /// Segments the retention bound deleted since start.
    pub log_dropped_segments: u64,
    /// The acknowledgement mode.
    pub acks: String,
    /// Writes waiting for acknowledgements now.
    pub pending_writes: usize,
    /// Writes that failed with `-NOREPLICAS` since start.
    pub noreplicas: u64,
    /// On a leader with `read_lease`: milliseconds its lease still holds (0: none now).
    pub read_lease_ms_left: u64,
    /// On a leader: reads it took under its lease in this term (answered, or failed if it
    /// stepped down before their commit).
    pub lease_reads: u64,
    /// On a leader: each follower's progress.
    pub followers: Vec<FollowerProgress>,
    /// On a follower: what it knows of its leader.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<FollowerView>,
    /// Keys whose records were found damaged on disk and are not yet repaired: the node is
    /// degraded while this is not 0 (see `kv::damage`).
    pub damaged_keys: u64,
    /// The first [`DAMAGED_SHOWN_MAX`] of them, with where each damaged record is.
    pub damaged: Vec<DamagedRecord>,
    /// On a leaderless node: its quorums and counters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaderless: Option<crate::leaderless::LeaderlessStatus>,
    /// On a multi-leader node: its datacenter and the exchange with the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multi_leader: Option<crate::multi_leader::MultiLeaderStatus>,
}

/// Damaged keys a status lists at most (they are all counted).
pub const DAMAGED_SHOWN_MAX: usize = 16;

/// One damaged key in a status.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DamagedRecord {
    /// The key as the store names it (a key of database 1 or more starts with its escape).
    pub key: String,
    /// The file that holds the damaged record.
    pub path: String,
    /// The record's byte offset in it.
    pub offset: u64,
    /// The check it failed.
    pub reason: String,
}
