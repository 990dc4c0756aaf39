//! How a node shows its replication state: `INFO replication` and `ROLE` with Redis's field
//! names, and the `replication` object of `/api/v1/status`.
//!
//! The replica publishes a [`ReplicationStatus`] (fresh when idle, at most 20 ms old under
//! load) in terms of node ids; this module names the nodes and their addresses from the
//! cluster file.
//!
//! Redis's offsets count bytes of its replication stream; replikv's count log records (LSNs),
//! so `master_repl_offset`, `slaveN:offset` and `slave_repl_offset` are record positions.
//! `slaveN:lag` is whole seconds, as Redis's; `/api/v1/status` has the milliseconds.
//!
//! A leaderless node has no followers: its INFO gives its quorums and counters as
//! `replikv_*` fields, then anti-entropy's (`replikv_anti_entropy_trees:ready|rebuilding`,
//! rounds, ranges and keys exchanged, bytes sent, `replikv_anti_entropy_last_exchange_ms_ago:
//! n2=120,n3=80`), tombstones awaiting purge, and hinted handoff (`replikv_hint_backlog:n2=0`).
//! The core names peers by id; INFO and `/api/v1/status` give the cluster file's names.

use crate::state::NodeState;
use replikv_core::leaderless::AntiEntropyStatus;
use replikv_core::node::ReplicationStatus;
use replikv_core::version::NodeId;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write;

/// A node's name and RESP address, from the cluster file.
fn node_of(state: &NodeState, id: NodeId) -> (String, String, u16) {
    let node = state.config.cluster.as_ref().and_then(|c| c.nodes.iter().find(|n| NodeId::from_name(&n.id) == id));
    match node {
        Some(n) => (n.id.clone(), n.resp_addr.ip().to_string(), n.resp_addr.port()),
        None => (format!("{:016x}", id.0), "?".into(), 0),
    }
}

/// A follower's `state=` as Redis names them.
fn follower_state(mode: &str, up: bool) -> &'static str {
    match (mode, up) {
        (_, false) => "down",
        ("stream", true) => "online",
        ("snapshot", true) => "send_bulk",
        _ => "wait_bgsave",
    }
}

/// The cluster-file name of the node that the core names by its id in hex (the keys of the
/// anti-entropy status's per-peer maps); the hex itself when no entry has it.
pub fn name_of_hex(state: &NodeState, hex: &str) -> String {
    match u64::from_str_radix(hex, 16) {
        Ok(id) => node_of(state, NodeId(id)).0,
        Err(_) => hex.to_string(),
    }
}

/// A per-peer map as one INFO value: `n2=120,n3=80`, peers by name.
fn per_peer(state: &NodeState, map: &BTreeMap<String, u64>) -> String {
    let named: BTreeMap<String, u64> = map.iter().map(|(hex, v)| (name_of_hex(state, hex), *v)).collect();
    named.iter().map(|(name, v)| format!("{name}={v}")).collect::<Vec<_>>().join(",")
}

/// The anti-entropy lines of a leaderless `INFO replication`: the trees, the rounds' counters,
/// tombstones awaiting purge, hinted handoff.
fn anti_entropy_info(state: &NodeState, a: &AntiEntropyStatus, tombstones_purged: u64) -> String {
    let c = &a.counters;
    let mut out = String::new();
    let _ = write!(
        out,
        "replikv_anti_entropy_trees:{}\r\nreplikv_anti_entropy_tree_keys:{}\r\nreplikv_anti_entropy_ranges:{}\r\n\
         replikv_anti_entropy_interval_ms:{}\r\nreplikv_anti_entropy_style:{}\r\nreplikv_anti_entropy_rounds:{}\r\n\
         replikv_anti_entropy_ranges_differing:{}\r\nreplikv_anti_entropy_ranges_same:{}\r\n\
         replikv_anti_entropy_keys_sent:{}\r\nreplikv_anti_entropy_keys_received:{}\r\n\
         replikv_anti_entropy_keys_repaired:{}\r\nreplikv_anti_entropy_bytes_sent:{}\r\n\
         replikv_anti_entropy_refused:{}\r\nreplikv_anti_entropy_truncated:{}\r\n\
         replikv_anti_entropy_last_exchange_ms_ago:{}\r\nreplikv_tombstones_pending:{}\r\n\
         replikv_tombstones_remembered:{}\r\nreplikv_tombstones_untracked:{}\r\nreplikv_tombstones_purged:{}\r\nreplikv_hints_stored:{}\r\n\
         replikv_hints_delivered:{}\r\nreplikv_hints_dropped:{}\r\nreplikv_hint_backlog:{}\r\n",
        a.trees,
        a.tree_keys,
        a.ranges,
        a.interval_ms,
        a.style,
        c.rounds,
        c.ranges_differing,
        c.ranges_same,
        c.keys_sent,
        c.keys_received,
        c.keys_repaired,
        a.bytes_sent,
        c.refused,
        c.truncated,
        per_peer(state, &a.last_exchange_ms_ago),
        a.tombstones_pending,
        a.tombstones_remembered,
        a.tombstones_untracked,
        tombstones_purged,
        a.hints_stored,
        a.hints_delivered,
        a.hints_dropped,
        per_peer(state, &a.hint_backlog),
    );
    out
}

/// The body of `INFO replication`.
pub fn info(state: &NodeState) -> String {
    let status = state.handle.replication();
    let mut out = String::new();
    if let Some(l) = &status.leaderless {
        // Every replica takes writes: Redis's master role is the nearest name for it.
        let c = &l.counters;
        let _ = write!(
            out,
            "role:master\r\nconnected_slaves:0\r\nreplikv_mode:leaderless\r\nreplikv_role:leaderless\r\n\
             replikv_n:{}\r\nreplikv_w:{}\r\nreplikv_r:{}\r\nreplikv_conflicts:{}\r\nreplikv_read_repair:{}\r\n\
             replikv_in_flight:{}\r\nreplikv_writes_coordinated:{}\r\nreplikv_reads_coordinated:{}\r\n\
             replikv_partial_writes:{}\r\nreplikv_failed_reads:{}\r\nreplikv_read_repairs_sent:{}\r\n\
             replikv_read_repairs_received:{}\r\nreplikv_sibling_reads:{}\r\nreplikv_siblings_dropped:{}\r\n\
             replikv_forwarded:{}\r\n",
            l.n,
            l.w,
            l.r,
            l.conflicts,
            l.read_repair,
            l.in_flight,
            c.writes_coordinated,
            c.reads_coordinated,
            c.partial_writes,
            c.failed_reads,
            c.read_repairs_sent,
            c.read_repairs_received,
            c.sibling_reads,
            c.siblings_dropped,
            c.forwarded,
        );
        let handoff = state.config.cluster.as_ref().map(|c| &c.replication);
        let _ = write!(
            out,
            "replikv_hinted_handoff:{}\r\nreplikv_sloppy_quorum:{}\r\n",
            u8::from(handoff.and_then(|r| r.hinted_handoff).unwrap_or(false)),
            u8::from(handoff.and_then(|r| r.sloppy_quorum).unwrap_or(false)),
        );
        out.push_str(&anti_entropy_info(state, &l.anti_entropy, c.tombstones_purged));
        let _ = write!(
            out,
            "replikv_degraded:{}\r\nreplikv_damaged_keys:{}\r\n",
            u8::from(status.damaged_keys > 0),
            status.damaged_keys
        );
        return out;
    }
    match status.role {
        "follower" | "candidate" => {
            let view = status.leader.as_ref().expect("a follower has a view of its leader");
            let (name, host, port) = match view.leader {
                Some(leader) => node_of(state, leader),
                None => ("?".into(), "?".into(), 0),
            };
            let _ = write!(
                out,
                "role:slave\r\nmaster_host:{host}\r\nmaster_port:{port}\r\nmaster_link_status:{}\r\n\
                 master_last_io_seconds_ago:{}\r\nmaster_sync_in_progress:{}\r\nslave_read_repl_offset:{}\r\n\
                 slave_repl_offset:{}\r\nslave_priority:100\r\nslave_read_only:1\r\nreplica_announced:1\r\n\
                 connected_slaves:0\r\nmaster_repl_offset:{}\r\nreplikv_leader:{name}\r\nreplikv_leader_lsn:{}\r\n\
                 replikv_lag_records:{}\r\nreplikv_snapshots_installed:{}\r\nreplikv_role:{}\r\nreplikv_epoch:{}\r\n\
                 replikv_matched_lsn:{}\r\nreplikv_rebuilds:{}\r\nreplikv_tail_cuts:{}\r\n\
                 replikv_unconfirmed_lsn:{}\r\nreplikv_rolled_back:{}\r\nreplikv_physical_diverged:{}\r\n",
                if view.link_up { "up" } else { "down" },
                view.last_io_ms_ago.map_or(-1, |ms| (ms / 1000) as i64),
                u8::from(view.installing_snapshot),
                // Received (in its log) and processed (applied: its leader holds it durably).
                status.last_lsn,
                view.applied_lsn,
                view.applied_lsn,
                view.leader_lsn,
                view.lag_records,
                view.snapshots_installed,
                status.role,
                status.epoch,
                view.matched_lsn,
                view.rebuilds,
                view.tail_cuts,
                view.unconfirmed_lsn,
                status.rolled_back,
                status.physical_diverged,
            );
        }
        _ => {
            let connected = status.followers.iter().filter(|f| f.up).count();
            let _ = write!(out, "role:master\r\nconnected_slaves:{connected}\r\n");
            for (i, f) in status.followers.iter().enumerate() {
                let (name, host, port) = node_of(state, f.node);
                let _ = write!(
                    out,
                    "slave{i}:ip={host},port={port},state={},offset={},lag={},replikv_id={name},lag_records={},\
                     lag_bytes={},lag_ms={},snapshots={}\r\n",
                    follower_state(f.mode, f.up),
                    f.acked_lsn,
                    f.lag_ms / 1000,
                    f.lag_records,
                    f.lag_bytes,
                    f.lag_ms,
                    f.snapshots,
                );
            }
            let _ = write!(
                out,
                "master_failover_state:{}\r\nmaster_repl_offset:{}\r\nrepl_backlog_active:{}\r\n\
                 repl_backlog_first_byte_offset:{}\r\nrepl_backlog_histlen:{}\r\nreplikv_epoch:{}\r\n\
                 replikv_acks:{}\r\nreplikv_durable_lsn:{}\r\nreplikv_pending_writes:{}\r\nreplikv_noreplicas:{}\r\n\
                 replikv_role:{}\r\nreplikv_elections_won:{}\r\nreplikv_rolled_back:{}\r\n\
                 replikv_read_lease_ms_left:{}\r\nreplikv_lease_reads:{}\r\n",
                status.failover_state,
                status.last_lsn,
                u8::from(status.role == "leader"),
                status.first_lsn,
                status.log_bytes,
                status.epoch,
                status.acks,
                status.durable_lsn,
                status.pending_writes,
                status.noreplicas,
                status.role,
                status.elections_won,
                status.rolled_back,
                status.read_lease_ms_left,
                status.lease_reads,
            );
        }
    }
    if let Some(ml) = &status.multi_leader {
        // Each other datacenter as its leader is seen from this one's, as a follower is.
        let _ = write!(
            out,
            "replikv_mode:multi-leader\r\nreplikv_datacenter:{}\r\nreplikv_datacenters_seen:{}\r\n\
             replikv_changes_shipped:{}\r\nreplikv_changes_received:{}\r\nreplikv_conflicts:{}\r\n\
             replikv_changes_held_back:{}\r\nreplikv_shipments_refused:{}\r\nreplikv_conflicts_dropped:{}\r\n",
            ml.datacenter,
            ml.datacenters.len(),
            ml.counters.shipped,
            ml.counters.received,
            ml.counters.conflicts,
            ml.counters.held_back,
            ml.counters.refused,
            ml.conflicts_dropped,
        );
        for (i, dc) in ml.datacenters.iter().enumerate() {
            let _ = write!(
                out,
                "datacenter{i}:name={},leader={},state={},applied={},lag_records={},lag_ms={}\r\n",
                dc.name,
                dc.target.split(' ').next().unwrap_or(""),
                if dc.up { "online" } else { "down" },
                dc.applied_lsn,
                dc.lag_records,
                dc.lag_ms,
            );
        }
    }
    let _ = write!(
        out,
        "replikv_degraded:{}\r\nreplikv_damaged_keys:{}\r\n",
        u8::from(status.damaged_keys > 0),
        status.damaged_keys
    );
    out
}

/// What `ROLE` answers, as nested values: `["master", offset, [[ip, port, offset], ...]]` on
/// a leader (and a lone node), `["slave", ip, port, state, offset]` on a follower.
pub enum RoleItem {
    /// A string.
    Text(String),
    /// A number.
    Int(i64),
    /// A list.
    List(Vec<RoleItem>),
}

/// The `ROLE` reply.
pub fn role(state: &NodeState) -> RoleItem {
    let status = state.handle.replication();
    match (status.role, &status.leader) {
        ("follower" | "candidate", Some(view)) => {
            let (host, port) = match view.leader {
                Some(leader) => {
                    let (_, host, port) = node_of(state, leader);
                    (host, port)
                }
                None => ("?".into(), 0),
            };
            let link = if view.installing_snapshot {
                "sync"
            } else if view.link_up {
                "connected"
            } else {
                "connect"
            };
            RoleItem::List(vec![
                RoleItem::Text("slave".into()),
                RoleItem::Text(host),
                RoleItem::Int(i64::from(port)),
                RoleItem::Text(link.into()),
                RoleItem::Int(view.applied_lsn as i64),
            ])
        }
        _ => RoleItem::List(vec![
            RoleItem::Text("master".into()),
            RoleItem::Int(status.last_lsn as i64),
            RoleItem::List(
                status
                    .followers
                    .iter()
                    .filter(|f| f.up)
                    .map(|f| {
                        let (_, host, port) = node_of(state, f.node);
                        RoleItem::List(vec![
                            RoleItem::Text(host),
                            RoleItem::Text(port.to_string()),
                            RoleItem::Text(f.acked_lsn.to_string()),
                        ])
                    })
                    .collect(),
            ),
        ]),
    }
}

/// The `replication` object of `/api/v1/status`: the replica's status with node names.
pub fn json(state: &NodeState) -> Value {
    let status: ReplicationStatus = state.handle.replication();
    let mut value = serde_json::to_value(&status).unwrap_or(Value::Null);
    if let Some(followers) = value.get_mut("followers").and_then(Value::as_array_mut) {
        for (f, status) in followers.iter_mut().zip(&status.followers) {
            let (name, host, port) = node_of(state, status.node);
            f["id"] = json!(name);
            f["resp_addr"] = json!(format!("{host}:{port}"));
        }
    }
    // The core names peers by id in hex; the cluster file's names read better.
    if let Some(a) = value.pointer_mut("/leaderless/anti_entropy").and_then(Value::as_object_mut) {
        for map in ["last_exchange_ms_ago", "hint_backlog"] {
            if let Some(Value::Object(by_hex)) = a.get(map) {
                let named: serde_json::Map<String, Value> =
                    by_hex.iter().map(|(hex, v)| (name_of_hex(state, hex), v.clone())).collect();
                a.insert(map.to_string(), Value::Object(named));
            }
        }
    }
    if let (Some(leader), Some(Some(id))) = (value.get_mut("leader"), status.leader.as_ref().map(|v| v.leader)) {
        let (name, host, port) = node_of(state, id);
        leader["id"] = json!(name);
        leader["resp_addr"] = json!(format!("{host}:{port}"));
    }
    value
}
