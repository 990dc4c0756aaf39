//! Starting and stopping a node: open the engine, start the runtime, listen for RESP and
//! HTTP, and on Ctrl-C or SIGTERM stop accepting, let open connections finish their round,
//! flush, and return.

use crate::config::{Acks, ClusterNode, ReplicationConfig, ReplicationMode};
use crate::config::{EngineKind, NodeConfig};
use crate::error::{Error, Result};
use crate::faults::FailingEngine;
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::state::NodeState;
use replikv_core::node::Replica;
use replikv_core::replication::{ReplicationLog, ReplogOptions};
use replikv_core::single_leader::rollback::ROLLBACK_DIR;
use replikv_core::single_leader::{ReplicaFiles, Role, RollbackLog, Settings, SingleLeader, VoteStore};
use replikv_core::storage::{Engine, Executor, LogEngine, LogOptions, MemoryEngine};
use replikv_core::version::NodeId;
use std::fs::{File, TryLockError};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long a stopping node waits for its RESP connections and HTTP requests to finish
/// before it drops them, so that a client that trickles a request in cannot hold shutdown.
pub const SHUTDOWN_DRAIN_SECS: u64 = 10;

/// Runs a node until `stop` resolves (a signal) or the runtime fails. Returns an error if the
/// node stopped on a failure (a failed fsync, a damaged file), so the process exits non-zero.
pub async fn run(config: NodeConfig, stop: impl std::future::Future<Output = ()>) -> Result<()> {
    let _lock = lock_data_dir(&config.data_dir)?;
    let engine = open_engine(&config)?;
    let resp = TcpListener::bind(config.resp_addr)
        .await
        .map_err(|e| Error::start(format!("listening for RESP on {}", config.resp_addr), e))?;
    let http = TcpListener::bind(config.http_addr)
        .await
        .map_err(|e| Error::start(format!("listening for HTTP on {}", config.http_addr), e))?;
    let stats = engine.stats();
    if config.engine == EngineKind::Log {
        check_mode(&config, stats.keys)?;
    }
    let mut replica = open_replica(&config, engine)?;
    replica.set_databases(config.databases);
    replica.set_corruption(config.corruption);
    let metrics = Arc::new(Metrics::new());
    if let Some(cluster) = &config.cluster {
        metrics.set_node_names(cluster.nodes.iter().map(|n| (NodeId::from_name(&n.id), n.id.clone())));
    }
    let (failed_tx, mut failed) = watch::channel(false);
    let (shutdown_tx, shutdown) = watch::channel(false);
    // The peer links outlive the client drain: writes in flight still need their followers'
    // acknowledgements to be answered.
    let (peers_shutdown_tx, peers_shutdown) = watch::channel(false);
    let peers = crate::peers::Peers::start(&config, peers_shutdown).await?;
    let sender: crate::runtime::PeerSender = match &peers {
        Some((peers, _)) => peers.sender(),
        None => Arc::new(|to, _| tracing::warn!("no peers: a message for {to:?} is dropped")),
    };
    let runtime = Runtime::start(
        replica,
        metrics.clone(),
        config.batch_requests_max,
        crate::config::PENDING_CALLS_MAX_DEFAULT,
        sender,
        failed_tx,
    );
    let peers = peers.map(|(peers, listener)| {
        listener.serve(runtime.handle());
        peers
    });
    let state = Arc::new(NodeState::new(config.clone(), metrics, runtime.handle(), peers));
    tracing::info!(
        id = %config.id, resp = %config.resp_addr, http = %config.http_addr, data_dir = %config.data_dir.display(),
        engine = ?config.engine, fsync = %config.fsync, keys = stats.keys, segments = stats.segments,
        "replikv node ready"
    );
    if let Some(cluster) = &config.cluster {
        warn_cluster(cluster);
    }
    let resp_task = tokio::spawn(crate::resp::connection::serve(resp, state.clone(), shutdown.clone()));
    let http_task = tokio::spawn(crate::http_serve::serve(http, state.clone(), shutdown));
    // A cluster node ticks at least twice per heartbeat, so that heartbeats keep their pace.
    let tick_ms = match &config.cluster {
        Some(cluster) if cluster.nodes.len() > 1 => config.tick_ms.min((cluster.replication.heartbeat_ms / 2).max(1)),
        _ => config.tick_ms,
    };
    let ticker = tokio::spawn(tick(runtime.handle(), tick_ms));

    tokio::select! {
        _ = stop => tracing::info!("stopping: finishing requests in flight"),
        // An error here means the runtime is gone without saying why: a failure too.
        _ = failed.wait_for(|f| *f) => tracing::error!("stopping after a storage failure"),
    }
    let _ = shutdown_tx.send(true);
    state.stop_streams();
    let drain = std::time::Duration::from_secs(SHUTDOWN_DRAIN_SECS);
    for (name, task) in [("RESP", resp_task), ("HTTP", http_task)] {
        let abort = task.abort_handle();
        if tokio::time::timeout(drain, task).await.is_err() {
            tracing::warn!("{name} clients still busy after {SHUTDOWN_DRAIN_SECS} s: dropping them");
            abort.abort();
        }
    }
    ticker.abort();
    let failure = runtime.handle().failure();
    runtime.shutdown().await;
    let _ = peers_shutdown_tx.send(true);
    match failure {
        Some(why) => Err(Error::Stopped(why)),
        None => {
            tracing::info!("stopped cleanly");
            Ok(())
        }
    }
}

/// Says at start what part the node plays, and what its replication settings do not promise.
fn warn_cluster(cluster: &crate::config::ClusterConfig) {
    if let (ReplicationMode::Leaderless, Ok(nwr)) =
        (cluster.replication.mode, cluster.replication.nwr(cluster.nodes.len()))
    {
        tracing::info!(
            cluster = %cluster.name, nodes = cluster.nodes.len(), mode = "leaderless", n = nwr.n, w = nwr.w,
            r = nwr.r,
            anti_entropy_interval_ms = cluster.replication.anti_entropy_interval_ms
                .unwrap_or(replikv_core::leaderless::ANTI_ENTROPY_INTERVAL_MS_DEFAULT),
            hinted_handoff = cluster.replication.hinted_handoff.unwrap_or(false),
            sloppy_quorum = cluster.replication.sloppy_quorum.unwrap_or(false), "replicating"
        );
        for warning in cluster.durability_warnings() {
            tracing::warn!("{warning}");
        }
        return;
    }
    tracing::info!(
        cluster = %cluster.name, nodes = cluster.nodes.len(), mode = %cluster.replication.mode,
        acks = %cluster.replication.acks, leader = %cluster.nodes.first().map_or("", |n| n.id.as_str()),
        "replicating"
    );
    for warning in cluster.durability_warnings() {
        tracing::warn!("{warning}");
    }
}

/// The replica for this node: standalone, or the leader or a follower of its cluster (the
/// first node listed leads a new cluster; after that, elections decide), with its
/// replication log, vote and rollback files recovered.
fn open_replica(config: &NodeConfig, engine: Box<dyn Engine + Send>) -> Result<Replica<Box<dyn Engine + Send>>> {
    let me = NodeId::from_name(&config.id);
    let member = config.cluster.as_ref().filter(|c| c.node(&config.id).is_some());
    if let Some(cluster) = member.filter(|c| c.replication.mode == ReplicationMode::Leaderless) {
        // Even alone (n = 1): its records are leaderless states.
        return open_leaderless(config, cluster, engine);
    }
    if let Some(cluster) = member.filter(|c| c.replication.mode == ReplicationMode::MultiLeader) {
        return open_multi_leader(config, cluster, engine);
    }
    let Some(cluster) = member.filter(|c| c.nodes.len() > 1) else {
        return Replica::standalone(engine, me).map_err(|e| Error::start("opening the store".to_string(), e));
    };
    let nodes: Vec<&ClusterNode> = cluster.nodes.iter().collect();
    open_single_leader(config, &cluster.replication, &nodes, engine).map(Replica::from)
}

/// The single-leader replica of this node among `nodes` (the first leads a new cluster), with
/// its replication log, vote and rollback files recovered.
fn open_single_leader(
    config: &NodeConfig,
    r: &ReplicationConfig,
    nodes: &[&ClusterNode],
    engine: Box<dyn Engine + Send>,
) -> Result<SingleLeader<Box<dyn Engine + Send>>> {
    let me = NodeId::from_name(&config.id);
    let leader = nodes[0];
    let role = if leader.id == config.id {
        Role::Leader { followers: nodes[1..].iter().map(|n| NodeId::from_name(&n.id)).collect() }
    } else {
        Role::Follower {
            leader: Some(NodeId::from_name(&leader.id)),
            leader_hint: format!("{} at {}", leader.id, leader.resp_addr),
        }
    };
    let followers = nodes.len() - 1;
    let mut settings = Settings::new(me, role);
    settings.common.corruption = config.corruption;
    settings.common.peers = nodes.iter().filter(|n| n.id != config.id).map(|n| NodeId::from_name(&n.id)).collect();
    settings.common.hints =
        nodes.iter().map(|n| (NodeId::from_name(&n.id), format!("{} at {}", n.id, n.resp_addr))).collect();
    settings.auto_failover = r.auto_failover;
    settings.election_timeout_ms = r.election_timeout_ms;
    settings.common.seed = random_seed();
    settings.acks_needed = match r.acks {
        Acks::Sync => followers,
        Acks::SemiSync(k) => k,
        Acks::Async => 0,
    };
    settings.acks_label = r.acks.to_string();
    settings.ack_timeout_ms = r.ack_timeout_ms;
    settings.heartbeat_ms = r.heartbeat_ms;
    settings.resend_ms = (10 * r.heartbeat_ms).max(1_000);
    settings.link_timeout_ms = (10 * r.heartbeat_ms).max(1_000);
    settings.forward_writes = r.forward_writes;
    settings.read_lease = r.read_lease;
    settings.read_lease_drift_ppm = r.read_lease_drift_ppm;
    settings.log_format = r.log_format;
    settings.forward_timeout_ms = r.forward_timeout_ms();
    let options = ReplogOptions {
        retain_bytes_max: r.log_retain_bytes,
        segment_bytes_max: r.log_segment_bytes,
        unreplicated_bytes_max: r.log_unreplicated_bytes,
        ..ReplogOptions::default()
    };
    let files = match config.engine {
        EngineKind::Log => {
            let dir = config.data_dir.join("replog");
            let log = ReplicationLog::open(&dir, options)
                .map_err(|e| Error::start(format!("opening the replication log {}", dir.display()), e))?;
            let votes = VoteStore::open(&dir)
                .map_err(|e| Error::start(format!("reading the vote file in {}", dir.display()), e))?;
            let rollback_dir = config.data_dir.join(ROLLBACK_DIR);
            let rollback = RollbackLog::open(&rollback_dir)
                .map_err(|e| Error::start(format!("reading the rollback files in {}", rollback_dir.display()), e))?;
            ReplicaFiles { log, votes, rollback }
        }
        EngineKind::Memory if r.auto_failover => {
            return Err(Error::Config(
                "engine = \"memory\" cannot join a cluster with auto_failover = true: a node must keep its \
                 replication log and its votes across a restart, or it could vote twice in one epoch (two leaders) \
                 or elect a node missing acknowledged writes; use engine = \"log\", or auto_failover = false"
                    .into(),
            ))
        }
        // No election cuts what a memory node holds (it runs without auto_failover, and loses
        // its log at a restart anyway): no room kept for records no majority holds.
        EngineKind::Memory => ReplicaFiles::in_memory(ReplogOptions { unreplicated_bytes_max: 0, ..options }),
    };
    SingleLeader::replicated(engine, files, settings, now_ms())
        .map_err(|e| Error::start("recovering the replica from its log".to_string(), e))
}

/// A multi-leader node of `cluster`: a single-leader replica among its datacenter's nodes,
/// exchanging changes with the other datacenters' leaders.
fn open_multi_leader(
    config: &NodeConfig,
    cluster: &crate::config::ClusterConfig,
    engine: Box<dyn Engine + Send>,
) -> Result<Replica<Box<dyn Engine + Send>>> {
    use replikv_core::multi_leader::{Datacenter, MultiLeader, Settings as MultiLeaderSettings};
    let datacenters = cluster.datacenters();
    let Some((_, mine)) = datacenters.iter().find(|(_, nodes)| nodes.iter().any(|n| n.id == config.id)) else {
        return Err(Error::Config(format!("node {} is in no datacenter of the cluster file", config.id)));
    };
    let r = &cluster.replication;
    let inner = open_single_leader(config, r, mine, engine)?;
    let mut local = inner.settings().clone();
    local.common.hints =
        cluster.nodes.iter().map(|n| (NodeId::from_name(&n.id), format!("{} at {}", n.id, n.resp_addr))).collect();
    let settings = MultiLeaderSettings {
        local,
        datacenters: datacenters
            .iter()
            .map(|(name, nodes)| Datacenter {
                name: name.clone(),
                nodes: nodes.iter().map(|n| NodeId::from_name(&n.id)).collect(),
            })
            .collect(),
        rules: cluster.rules()?,
        max_clock_skew_ms: r.max_clock_skew_ms.unwrap_or(crate::config::MAX_CLOCK_SKEW_MS_DEFAULT),
        resend_ms: (10 * r.heartbeat_ms).max(1_000),
        link_timeout_ms: (10 * r.heartbeat_ms).max(1_000),
        store_position_every: replikv_core::multi_leader::POSITION_STORE_EVERY_RECORDS,
        conflicts_kept_max: replikv_core::multi_leader::CONFLICTS_KEPT_MAX,
        canary: Default::default(),
    };
    MultiLeader::new(inner, settings)
        .map(Replica::from)
        .map_err(|e| Error::start("opening the multi-leader node".to_string(), e))
}

/// A leaderless node of `cluster`: every node of the file is a peer, and the file's n, w and
/// r are its quorums.
fn open_leaderless(
    config: &NodeConfig,
    cluster: &crate::config::ClusterConfig,
    engine: Box<dyn Engine + Send>,
) -> Result<Replica<Box<dyn Engine + Send>>> {
    use crate::config::{ConflictsSetting, ReadRepairSetting};
    use replikv_core::leaderless::{Conflicts, Leaderless, ReadRepair, Settings as LeaderlessSettings};
    let r = &cluster.replication;
    let nwr = r.nwr(cluster.nodes.len())?;
    let mut settings = LeaderlessSettings::new(NodeId::from_name(&config.id), nwr);
    settings.common.corruption = config.corruption;
    settings.common.peers =
        cluster.nodes.iter().filter(|n| n.id != config.id).map(|n| NodeId::from_name(&n.id)).collect();
    settings.common.hints =
        cluster.nodes.iter().map(|n| (NodeId::from_name(&n.id), format!("{} at {}", n.id, n.resp_addr))).collect();
    settings.common.seed = random_seed();
    settings.conflicts = match r.conflicts {
        Some(ConflictsSetting::Siblings) => Conflicts::Siblings,
        Some(ConflictsSetting::Lww) | None => Conflicts::Lww,
    };
    settings.read_repair = match r.read_repair {
        Some(ReadRepairSetting::Blocking) => ReadRepair::Blocking,
        Some(ReadRepairSetting::Async) | None => ReadRepair::Async,
    };
    settings.request_timeout_ms = r.ack_timeout_ms;
    if let Some(ms) = r.anti_entropy_interval_ms {
        settings.anti_entropy_interval_ms = ms;
    }
    if let Some(style) = r.anti_entropy_style {
        settings.anti_entropy_style = style.core();
    }
    if let Some(ms) = r.tombstone_grace_ms {
        settings.tombstone_grace_ms = ms;
    }
    settings.hinted_handoff = r.hinted_handoff.unwrap_or(false);
    settings.sloppy_quorum = r.sloppy_quorum.unwrap_or(false);
    settings.dot_id = dot_id(config)?;
    if config.fsync != replikv_core::storage::FsyncPolicy::Always {
        tracing::warn!(
            "fsync = {}: a crash can lose writes this node counted as durable, and with them the version-vector dots it \
             handed out; replicas may then drop its next writes of those keys as ones they have seen",
            config.fsync
        );
    }
    Leaderless::open(engine, settings, now_ms())
        .map(Replica::from)
        .map_err(|e| Error::start("opening the leaderless store".to_string(), e))
}

/// 64 random bits from the operating system (std's hasher keys come from it), for the
/// replica's election timeouts.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(now_ms());
    hasher.finish()
}

/// The node's clock (see [`crate::clock`]).
fn now_ms() -> u64 {
    crate::clock::now_ms()
}

/// Runs the log engine's background jobs (a commit, closing removed files) each on a thread
/// of its own, or here if no thread can start.
struct EngineThreads;

impl Executor for EngineThreads {
    fn execute(&self, job: Box<dyn FnOnce() + Send>) {
        let slot = Arc::new(std::sync::Mutex::new(Some(job)));
        let on_thread = slot.clone();
        let spawned = std::thread::Builder::new().name("replikv-engine-io".into()).spawn(move || {
            let job = on_thread.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
            if let Some(job) = job {
                job();
            }
        });
        if let Err(error) = spawned {
            tracing::warn!("no thread for the storage engine's background work ({error}): it runs here");
            let job = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
            if let Some(job) = job {
                job();
            }
        }
    }
}

/// Opens the configured engine, wrapped in the test-only fault if one is switched on.
fn open_engine(config: &NodeConfig) -> Result<Box<dyn Engine + Send>> {
    let engine: Box<dyn Engine + Send> = match config.engine {
        EngineKind::Log => {
            let options = LogOptions {
                fsync: config.fsync,
                segment_bytes_max: config.segment_bytes_max,
                value_cache_bytes_max: config.value_cache_bytes_max,
                ..LogOptions::default()
            };
            let mut engine = LogEngine::open(&config.data_dir, options)
                .map_err(|e| Error::start(format!("opening the data directory {}", config.data_dir.display()), e))?;
            // The runtime's stepper must not wait for a compaction's or a seal's fsyncs.
            engine.set_executor(Arc::new(EngineThreads));
            Box::new(engine)
        }
        EngineKind::Memory => Box::new(MemoryEngine::new()),
    };
    Ok(match config.test_fail_fsync_after {
        Some(n) => {
            tracing::warn!("test fault on: flush number {n} will fail");
            Box::new(FailingEngine::new(engine, n))
        }
        None => engine,
    })
}

/// The file in a data directory that names the replication family that wrote it.
pub const MODE_FILE: &str = "MODE";

/// Refuses a data directory written by a node of another replication family (a single-leader
/// store holds values, a leaderless one holds version vectors and siblings: neither reads the
/// other's records), and marks a new one, durably, before anything is written. A directory
/// from before the mark existed was written by a single-leader (or lone) node; `keys` says
/// whether it holds anything.
fn check_mode(config: &NodeConfig, keys: u64) -> Result<()> {
    let mode = config.cluster.as_ref().map_or(ReplicationMode::SingleLeader, |c| c.replication.mode);
    let path = config.data_dir.join(MODE_FILE);
    let found = match std::fs::read_to_string(&path) {
        // Empty: a mark whose write did not finish (it is replaced atomically, so only a
        // file system that lost it leaves one).
        Ok(text) => Some(text.trim().to_string()).filter(|t| !t.is_empty()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::start(format!("reading {}", path.display()), e)),
    };
    let written_by = match &found {
        Some(found) => found.clone(),
        None if keys > 0 => ReplicationMode::SingleLeader.to_string(),
        None => mode.to_string(),
    };
    if written_by == mode.to_string() && found.is_none() {
        return write_durably(&config.data_dir, MODE_FILE, &format!("{mode}\n"));
    }
    if written_by != mode.to_string() {
        return Err(Error::Config(format!(
            "the data directory {} was written by a {written_by} node (its {MODE_FILE} file, or its keys), and this \
             node runs {mode}: the two keep their records in different forms; use another data directory",
            config.data_dir.display()
        )));
    }
    Ok(())
}

/// Replaces `dir/name` with `text` atomically and durably: a temporary file, fsynced, renamed
/// over it, then the directory fsynced.
fn write_durably(dir: &Path, name: &str, text: &str) -> Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| Error::start(format!("writing {}", path.display()), e))
}

/// The file in a leaderless node's data directory that holds the id its writes take in
/// version vectors: one per data directory, so that a node that lost its data never reuses one.
pub const DOT_ID_FILE: &str = "DOT_ID";

/// The id a leaderless node's writes take in version vectors: one per data directory, drawn
/// when the directory is new (and at every start with the memory engine, which keeps
/// nothing), so that a node that lost its data never hands a dot out again.
fn dot_id(config: &NodeConfig) -> Result<NodeId> {
    if config.engine == EngineKind::Memory {
        return Ok(NodeId(random_seed()));
    }
    let path = config.data_dir.join(DOT_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => u64::from_str_radix(text.trim(), 16).map(NodeId).map_err(|e| Error::Start {
            what: format!("reading {}", path.display()),
            source: format!("{:?} is not a hex number: {e}", text.trim()).into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = NodeId(random_seed());
            write_durably(&config.data_dir, DOT_ID_FILE, &format!("{id}\n"))?;
            Ok(id)
        }
        Err(e) => Err(Error::start(format!("reading {}", path.display()), e)),
    }
}

/// Asks the runtime to do timed work every `tick_ms`, forever (the caller aborts it).
async fn tick(handle: crate::runtime::Handle, tick_ms: u64) {
    let mut interval = tokio::time::interval(std::time::Duration::from_millis(tick_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        handle.tick();
    }
}

/// Takes the data directory's lock file, so that a second node started on the same
/// directory fails at once instead of interleaving writes with the first. The lock is an
/// advisory `flock` held as long as the returned file is open; the operating system releases
/// it when the process dies, even by SIGKILL, so a stale lock never blocks a restart.
fn lock_data_dir(dir: &Path) -> Result<File> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::start(format!("creating the data directory {}", dir.display()), e))?;
    let path = dir.join("LOCK");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::start(format!("opening {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(Error::Start {
                what: format!("locking the data directory {}", dir.display()),
                source: format!("in use by another replikv process ({})", holder.trim()).into(),
            });
        }
        Err(TryLockError::Error(e)) => return Err(Error::start(format!("locking {}", path.display()), e)),
    }
    let note_pid = |file: &mut File| -> std::io::Result<()> {
        file.set_len(0)?;
        writeln!(file, "pid {}", std::process::id())
    };
    note_pid(&mut file).map_err(|e| Error::start(format!("writing {}", path.display()), e))?;
    Ok(file)
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
