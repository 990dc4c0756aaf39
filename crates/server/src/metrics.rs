//! Prometheus metrics, one registry per node (so that a process holding several nodes, as a
//! test or a simulator may, keeps their figures apart).
//!
//! Names follow Prometheus conventions: a `replikv_` prefix, the unit last, `_total` on
//! counters. The runtime updates the storage gauges after every batch; connections count
//! commands and their latency as they reply.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use replikv_core::leaderless::AntiEntropyStatus;
use replikv_core::node::ReplicationStatus;
use replikv_core::storage::EngineStats;
use replikv_core::version::NodeId;

/// The label of per-command metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabel {
    /// The command's name, lowercase (`get`, `set`, ...); unknown commands count as `unknown`.
    pub command: String,
}

/// The label of per-follower metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FollowerLabel {
    /// The follower's node id.
    pub follower: String,
}

/// The label of `replikv_leaderless_events`: what was counted.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    /// `writes_coordinated`, `read_repairs_sent`, ...
    pub event: &'static str,
}

/// The label of per-peer leaderless metrics (anti-entropy, hinted handoff).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    /// The peer's node id, as the cluster file names it.
    pub peer: String,
}

/// The label of per-datacenter multi-leader metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DatacenterLabel {
    /// The other datacenter's name.
    pub datacenter: String,
}

/// The label of `replikv_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabel {
    version: String,
}

/// A node's metrics.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    registry: Registry,
    /// Commands served, by command.
    pub commands: Family<CommandLabel, Counter>,
    /// Seconds from a command's arrival to its reply, by command.
    pub command_seconds: Family<CommandLabel, Histogram>,
    /// fsync calls.
    pub fsyncs: Counter,
    /// Seconds each group fsync took.
    pub fsync_seconds: Histogram,
    /// Seconds each batch's write-out held the stepper (a segment seal included).
    pub write_out_seconds: Histogram,
    /// Seconds each slice of maintenance (compaction, hint files) held the stepper.
    pub maintain_seconds: Histogram,
    /// Bytes handed to the operating system by flushes.
    pub bytes_written: Counter,
    /// Requests per batch (group commit).
    pub batch_requests: Histogram,
    /// Keys holding a value.
    pub keys: Gauge,
    /// Keys whose newest record is a tombstone.
    pub tombstones: Gauge,
    /// Segment files.
    pub segments: Gauge,
    /// Bytes compaction could reclaim.
    pub dead_bytes: Gauge,
    /// Compactions finished since start.
    pub compactions: Gauge,
    /// Bytes of values in the log engine's value cache.
    pub value_cache_bytes: Gauge,
    /// Client connections open.
    pub connections: Gauge,
    /// Connections refused because `connections_max` were open.
    pub connections_refused: Counter,
    /// Connections closed for a protocol error or a limit.
    pub protocol_errors: Counter,
    /// The newest record in this node's replication log.
    pub log_last_lsn: Gauge,
    /// Bytes the replication log holds (retention bounds it).
    pub log_bytes: Gauge,
    /// Writes failed with NOREPLICAS since start.
    pub noreplicas: Gauge,
    /// Reads the leader answered under its lease in its current term.
    pub lease_reads: Gauge,
    /// Changes cut from the log into rollback files, in all.
    pub rolled_back: Gauge,
    /// Keys found damaged on disk and not yet repaired.
    pub damaged_keys: Gauge,
    /// The epoch.
    pub epoch: Gauge,
    /// 1 when this node leads, 0 otherwise.
    pub is_leader: Gauge,
    /// Each follower's lag in records, on the leader.
    pub lag_records: Family<FollowerLabel, Gauge>,
    /// Each follower's lag in bytes, on the leader.
    pub lag_bytes: Family<FollowerLabel, Gauge>,
    /// Each follower's lag in seconds, on the leader.
    pub lag_seconds: Family<FollowerLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Snapshots sent to each follower since start, on the leader.
    pub snapshots: Family<FollowerLabel, Gauge>,
    /// A leaderless node's counters since start, by event.
    pub leaderless: Family<EventLabel, Gauge>,
    /// A leaderless node's anti-entropy and hinted-handoff counters since start, by event.
    pub anti_entropy: Family<EventLabel, Gauge>,
    /// Bytes of anti-entropy messages sent since start.
    pub anti_entropy_bytes: Gauge,
    /// 1 when the Merkle trees are ready, 0 while they are rebuilt from the store.
    pub trees_ready: Gauge,
    /// Tombstones kept until every replica holds them and the grace period passed.
    pub tombstones_pending: Gauge,
    /// Purged tombstones still remembered, for a grace period after their purge.
    pub tombstones_remembered: Gauge,
    /// Hints held for each node, by the node they are for.
    pub hint_backlog: Family<PeerLabel, Gauge>,
    /// Seconds since each peer's last anti-entropy message.
    pub last_exchange_seconds: Family<PeerLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// A multi-leader node's exchange counters since start, by event.
    pub multi_leader: Family<EventLabel, Gauge>,
    /// Conflict log entries held (once counted) on a multi-leader node.
    pub conflicts_held: Gauge,
    /// On a multi-leader datacenter's leader: each other datacenter's lag in records.
    pub datacenter_lag_records: Family<DatacenterLabel, Gauge>,
    /// On a multi-leader datacenter's leader: each other datacenter's lag in seconds.
    pub datacenter_lag_seconds: Family<DatacenterLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// The nodes `hint_backlog` has had a label for: the status lists only nodes with hints
    /// held, so a backlog that emptied is set back to 0 by this list.
    hint_targets: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Node names by id, for labels.
    names: std::sync::Mutex<std::collections::BTreeMap<NodeId, String>>,
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let latency = || Histogram::new(exponential_buckets(0.000_01, 2.0, 22));
        let m = Metrics {
            commands: Family::default(),
            command_seconds: Family::new_with_constructor(latency),
            fsyncs: Counter::default(),
            fsync_seconds: latency(),
            write_out_seconds: latency(),
            maintain_seconds: latency(),
            bytes_written: Counter::default(),
            batch_requests: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            keys: Gauge::default(),
            tombstones: Gauge::default(),
            segments: Gauge::default(),
            dead_bytes: Gauge::default(),
            compactions: Gauge::default(),
            value_cache_bytes: Gauge::default(),
            connections: Gauge::default(),
            connections_refused: Counter::default(),
            protocol_errors: Counter::default(),
            log_last_lsn: Gauge::default(),
            log_bytes: Gauge::default(),
            noreplicas: Gauge::default(),
            lease_reads: Gauge::default(),
            rolled_back: Gauge::default(),
            damaged_keys: Gauge::default(),
            epoch: Gauge::default(),
            is_leader: Gauge::default(),
            lag_records: Family::default(),
            lag_bytes: Family::default(),
            lag_seconds: Family::default(),
            snapshots: Family::default(),
            leaderless: Family::default(),
            anti_entropy: Family::default(),
            anti_entropy_bytes: Gauge::default(),
            trees_ready: Gauge::default(),
            tombstones_pending: Gauge::default(),
            tombstones_remembered: Gauge::default(),
            hint_backlog: Family::default(),
            last_exchange_seconds: Family::default(),
            multi_leader: Family::default(),
            conflicts_held: Gauge::default(),
            datacenter_lag_records: Family::default(),
            datacenter_lag_seconds: Family::default(),
            hint_targets: Default::default(),
            names: Default::default(),
            registry: Registry::default(),
        };
        registry.register("replikv_commands", "Commands served, by command", m.commands.clone());
        registry.register(
            "replikv_command_duration_seconds",
            "Seconds from a command's arrival to its reply",
            m.command_seconds.clone(),
        );
        registry.register("replikv_fsync", "fsync calls", m.fsyncs.clone());
        registry.register("replikv_fsync_duration_seconds", "Seconds each group fsync took", m.fsync_seconds.clone());
        registry.register(
            "replikv_write_out_duration_seconds",
            "Seconds each batch's write-out held the stepper thread (segment seals included)",
            m.write_out_seconds.clone(),
        );
        registry.register(
            "replikv_maintain_duration_seconds",
            "Seconds each slice of maintenance (compaction, hint files) held the stepper thread",
            m.maintain_seconds.clone(),
        );
        registry.register("replikv_written_bytes", "Bytes handed to the operating system", m.bytes_written.clone());
        registry.register("replikv_batch_requests", "Requests per group-commit batch", m.batch_requests.clone());
        registry.register("replikv_keys", "Keys holding a value", m.keys.clone());
        registry.register("replikv_tombstones", "Keys whose newest record is a tombstone", m.tombstones.clone());
        registry.register("replikv_segments", "Storage segment files", m.segments.clone());
        registry.register(
            "replikv_dead_bytes",
            "Bytes of replaced records compaction could reclaim",
            m.dead_bytes.clone(),
        );
        registry.register("replikv_compactions", "Compactions finished since start", m.compactions.clone());
        registry.register(
            "replikv_value_cache_bytes",
            "Bytes of values the log engine caches for reads",
            m.value_cache_bytes.clone(),
        );
        registry.register("replikv_connections", "Client connections open", m.connections.clone());
        registry.register(
            "replikv_connections_refused",
            "Connections refused at connections_max",
            m.connections_refused.clone(),
        );
        registry.register(
            "replikv_protocol_errors",
            "Connections closed for a protocol error or a limit",
            m.protocol_errors.clone(),
        );
        registry.register("replikv_log_last_lsn", "The newest record in the replication log", m.log_last_lsn.clone());
        registry.register("replikv_log_bytes", "Bytes the replication log holds", m.log_bytes.clone());
        registry.register("replikv_noreplicas", "Writes failed with NOREPLICAS since start", m.noreplicas.clone());
        registry.register(
            "replikv_lease_reads",
            "Reads the leader answered under its lease (read_lease) in its current term",
            m.lease_reads.clone(),
        );
        registry.register(
            "replikv_rolled_back_changes",
            "Changes cut from the replication log and saved under rollback/, in all",
            m.rolled_back.clone(),
        );
        registry.register(
            "replikv_damaged_keys",
            "Keys whose records were found damaged on disk and are not yet repaired (the node is degraded)",
            m.damaged_keys.clone(),
        );
        registry.register("replikv_epoch", "The replication epoch this node is in", m.epoch.clone());
        registry.register("replikv_is_leader", "1 when this node leads its cluster", m.is_leader.clone());
        registry.register("replikv_follower_lag_records", "A follower's lag in log records", m.lag_records.clone());
        registry.register("replikv_follower_lag_bytes", "A follower's lag in bytes of log", m.lag_bytes.clone());
        registry.register("replikv_follower_lag_seconds", "A follower's lag in seconds", m.lag_seconds.clone());
        registry.register(
            "replikv_follower_snapshots",
            "Snapshots sent to a follower since start",
            m.snapshots.clone(),
        );
        registry.register(
            "replikv_leaderless_events",
            "A leaderless node's counts since start: requests coordinated, partial writes, failed reads, read \
             repairs sent and received, reads of siblings, siblings dropped, writes forwarded",
            m.leaderless.clone(),
        );
        registry.register(
            "replikv_anti_entropy_events",
            "A leaderless node's anti-entropy counts since start: rounds started, ranges differing and the same, \
             keys sent, received and repaired, messages refused and truncated, tombstones purged, hints stored, \
             delivered and dropped",
            m.anti_entropy.clone(),
        );
        registry.register(
            "replikv_multi_leader_events",
            "A multi-leader node's exchange counts since start: changes shipped and received, conflicts detected, \
             shipments held back by the clock-skew bound and refused, conflict log entries deleted by retention",
            m.multi_leader.clone(),
        );
        registry.register(
            "replikv_conflict_log_entries",
            "Entries a multi-leader node's conflict log holds (at most CONFLICTS_KEPT_MAX, 10000)",
            m.conflicts_held.clone(),
        );
        registry.register(
            "replikv_datacenter_lag_records",
            "On a datacenter's leader: records of its log another datacenter has not applied",
            m.datacenter_lag_records.clone(),
        );
        registry.register(
            "replikv_datacenter_lag_seconds",
            "On a datacenter's leader: seconds since the oldest change another datacenter lacks was durable here",
            m.datacenter_lag_seconds.clone(),
        );
        registry.register(
            "replikv_anti_entropy_sent_bytes",
            "Bytes of anti-entropy messages sent since start",
            m.anti_entropy_bytes.clone(),
        );
        registry.register(
            "replikv_anti_entropy_trees_ready",
            "1 when the Merkle trees are ready, 0 while they are rebuilt from the store",
            m.trees_ready.clone(),
        );
        registry.register(
            "replikv_tombstones_pending_purge",
            "Tombstones kept until every replica of the key holds them and the grace period passed",
            m.tombstones_pending.clone(),
        );
        registry.register(
            "replikv_tombstones_remembered",
            "Purged tombstones still remembered (tree entry and state) for a grace period after their purge",
            m.tombstones_remembered.clone(),
        );
        registry.register(
            "replikv_hint_backlog",
            "Hints this node holds for another node (hinted handoff), by that node",
            m.hint_backlog.clone(),
        );
        registry.register(
            "replikv_anti_entropy_last_exchange_seconds",
            "Seconds since a peer's last anti-entropy message, by peer",
            m.last_exchange_seconds.clone(),
        );
        let build = Family::<BuildLabel, Gauge>::default();
        build.get_or_create(&BuildLabel { version: env!("CARGO_PKG_VERSION").to_string() }).set(1);
        registry.register("replikv_build_info", "Always 1; the label names the build", build);
        Metrics { registry, ..m }
    }

    /// Sets the storage gauges from the engine's counters.
    pub fn set_engine(&self, stats: &EngineStats) {
        self.keys.set(stats.keys as i64);
        self.tombstones.set(stats.tombstones as i64);
        self.segments.set(stats.segments as i64);
        self.dead_bytes.set(stats.dead_bytes as i64);
        self.compactions.set(stats.compactions as i64);
        self.value_cache_bytes.set(stats.cached_bytes as i64);
    }

    /// Names the cluster's nodes, for the follower labels.
    pub fn set_node_names(&self, names: impl IntoIterator<Item = (NodeId, String)>) {
        self.names.lock().unwrap().extend(names);
    }

    /// Sets the replication gauges from the replica's status.
    pub fn set_replication(&self, status: &ReplicationStatus) {
        self.log_last_lsn.set(status.last_lsn as i64);
        self.log_bytes.set(status.log_bytes as i64);
        self.noreplicas.set(status.noreplicas as i64);
        self.lease_reads.set(status.lease_reads as i64);
        self.rolled_back.set(status.rolled_back as i64);
        self.damaged_keys.set(status.damaged_keys as i64);
        self.epoch.set(status.epoch as i64);
        self.is_leader.set(i64::from(status.role == "leader"));
        if let Some(l) = &status.leaderless {
            let c = &l.counters;
            for (event, value) in [
                ("writes_coordinated", c.writes_coordinated),
                ("reads_coordinated", c.reads_coordinated),
                ("partial_writes", c.partial_writes),
                ("failed_reads", c.failed_reads),
                ("read_repairs_sent", c.read_repairs_sent),
                ("read_repairs_received", c.read_repairs_received),
                ("sibling_reads", c.sibling_reads),
                ("siblings_dropped", c.siblings_dropped),
                ("forwarded", c.forwarded),
            ] {
                self.leaderless.get_or_create(&EventLabel { event }).set(value as i64);
            }
            self.set_anti_entropy(&l.anti_entropy, c.tombstones_purged);
        }
        if let Some(ml) = &status.multi_leader {
            let c = &ml.counters;
            for (event, value) in [
                ("shipped", c.shipped),
                ("received", c.received),
                ("conflicts", c.conflicts),
                ("held_back", c.held_back),
                ("refused", c.refused),
                ("conflicts_dropped", ml.conflicts_dropped),
            ] {
                self.multi_leader.get_or_create(&EventLabel { event }).set(value as i64);
            }
            if let Some(held) = ml.conflicts_held {
                self.conflicts_held.set(held as i64);
            }
            for dc in &ml.datacenters {
                let label = DatacenterLabel { datacenter: dc.name.clone() };
                self.datacenter_lag_records.get_or_create(&label).set(dc.lag_records as i64);
                self.datacenter_lag_seconds.get_or_create(&label).set(dc.lag_ms as f64 / 1000.0);
            }
        }
        let names = self.names.lock().unwrap();
        for f in &status.followers {
            let follower = names.get(&f.node).cloned().unwrap_or_else(|| format!("{:016x}", f.node.0));
            let label = FollowerLabel { follower };
            self.lag_records.get_or_create(&label).set(f.lag_records as i64);
            self.lag_bytes.get_or_create(&label).set(f.lag_bytes as i64);
            self.lag_seconds.get_or_create(&label).set(f.lag_ms as f64 / 1000.0);
            self.snapshots.get_or_create(&label).set(f.snapshots as i64);
        }
    }

    /// Sets the anti-entropy and hinted-handoff metrics from a leaderless node's status.
    fn set_anti_entropy(&self, a: &AntiEntropyStatus, tombstones_purged: u64) {
        let c = &a.counters;
        for (event, value) in [
            ("rounds", c.rounds),
            ("ranges_differing", c.ranges_differing),
            ("ranges_same", c.ranges_same),
            ("keys_sent", c.keys_sent),
            ("keys_received", c.keys_received),
            ("keys_repaired", c.keys_repaired),
            ("refused", c.refused),
            ("truncated", c.truncated),
            ("tombstones_purged", tombstones_purged),
            ("hints_stored", a.hints_stored),
            ("hints_delivered", a.hints_delivered),
            ("hints_dropped", a.hints_dropped),
        ] {
            self.anti_entropy.get_or_create(&EventLabel { event }).set(value as i64);
        }
        self.anti_entropy_bytes.set(a.bytes_sent as i64);
        self.trees_ready.set(i64::from(a.trees == "ready"));
        self.tombstones_pending.set(a.tombstones_pending as i64);
        self.tombstones_remembered.set(a.tombstones_remembered as i64);
        let backlog: std::collections::BTreeMap<String, u64> =
            a.hint_backlog.iter().map(|(hex, n)| (self.name_of_hex(hex), *n)).collect();
        let mut targets = self.hint_targets.lock().unwrap();
        targets.extend(backlog.keys().cloned());
        for peer in targets.iter() {
            let held = backlog.get(peer).copied().unwrap_or(0);
            self.hint_backlog.get_or_create(&PeerLabel { peer: peer.clone() }).set(held as i64);
        }
        for (hex, ms) in &a.last_exchange_ms_ago {
            let label = PeerLabel { peer: self.name_of_hex(hex) };
            self.last_exchange_seconds.get_or_create(&label).set(*ms as f64 / 1000.0);
        }
    }

    /// The name of the node the core names by its id in hex; the hex when none is known.
    fn name_of_hex(&self, hex: &str) -> String {
        let id = u64::from_str_radix(hex, 16).ok().map(NodeId);
        id.and_then(|id| self.names.lock().unwrap().get(&id).cloned()).unwrap_or_else(|| hex.to_string())
    }

    /// The registry in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_names_every_metric() {
        let m = Metrics::new();
        m.commands.get_or_create(&CommandLabel { command: "get".into() }).inc();
        m.set_engine(&EngineStats { keys: 3, cached_bytes: 1024, ..EngineStats::default() });
        let text = m.encode();
        for name in [
            "replikv_commands_total{command=\"get\"} 1",
            "replikv_keys 3",
            "replikv_fsync_total",
            "replikv_build_info{version=",
            "replikv_fsync_duration_seconds_bucket",
            "replikv_written_bytes_total",
            "replikv_segments",
            "replikv_compactions",
            "replikv_value_cache_bytes 1024",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }

    #[test]
    fn a_leaderless_status_sets_the_anti_entropy_metrics_with_peers_by_name() {
        use replikv_core::leaderless::LeaderlessStatus;
        let m = Metrics::new();
        m.set_node_names([(NodeId::from_name("n2"), "n2".to_string())]);
        let n2 = NodeId::from_name("n2").to_string();
        let mut status = ReplicationStatus::default();
        let mut l = LeaderlessStatus::default();
        l.counters.tombstones_purged = 4;
        l.anti_entropy.trees = "ready".into();
        l.anti_entropy.counters.rounds = 7;
        l.anti_entropy.counters.keys_repaired = 5;
        l.anti_entropy.bytes_sent = 1234;
        l.anti_entropy.tombstones_pending = 2;
        l.anti_entropy.hint_backlog.insert(n2.clone(), 3);
        l.anti_entropy.last_exchange_ms_ago.insert(n2, 1500);
        l.anti_entropy.last_exchange_ms_ago.insert("00000000000000ff".into(), 250);
        status.leaderless = Some(l);
        m.set_replication(&status);
        let text = m.encode();
        for line in [
            "replikv_anti_entropy_events{event=\"rounds\"} 7",
            "replikv_anti_entropy_events{event=\"keys_repaired\"} 5",
            "replikv_anti_entropy_events{event=\"tombstones_purged\"} 4",
            "replikv_anti_entropy_sent_bytes 1234",
            "replikv_anti_entropy_trees_ready 1",
            "replikv_tombstones_pending_purge 2",
            "replikv_hint_backlog{peer=\"n2\"} 3",
            "replikv_anti_entropy_last_exchange_seconds{peer=\"n2\"} 1.5",
            "replikv_anti_entropy_last_exchange_seconds{peer=\"00000000000000ff\"} 0.25",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        // The status stops listing a target once its hints are delivered: its backlog is 0.
        if let Some(l) = status.leaderless.as_mut() {
            l.anti_entropy.hint_backlog.clear();
        }
        m.set_replication(&status);
        let text = m.encode();
        assert!(text.contains("replikv_hint_backlog{peer=\"n2\"} 0"), "{text}");
    }
}
