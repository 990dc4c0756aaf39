//! The store: executes key-value requests against an engine, with a clock for versions.

use super::damage::{Corruption, Damage, DamagedKeys};
use super::databases::{
    count_namespaces, counted_namespace, logical, physical, recount, DbMap, Keys, Namespace, CLIENT_KEY_BYTES_MAX,
    DATABASES_DEFAULT, DATABASES_MAX, DB_MAP_KEY,
};
use super::glob::glob_match_within;
use super::number::{format_float, parse_float, parse_int};
use super::request::{ExpireCondition, Expiry, Reply, Request, SetCondition, Watched};
use super::strings::{expire_allowed, object_help, Xorshift};
use crate::error::{Error, Result};
use crate::replication::record::{OLD_VALUES_LOGGED_BYTES_PER_REQUEST_MAX, OLD_VALUE_LOGGED_BYTES_MAX};
use crate::replication::{Change, Old};
use crate::storage::{Engine, Meta, Record, VALUE_BYTES_MAX};
use crate::version::{Hlc, NodeId, Version};
use bytes::{Bytes, BytesMut};
use std::collections::BTreeMap;

/// Expired keys deleted per tick at most, so that a mass expiry spreads over ticks instead of
/// stalling one batch.
pub const EXPIRE_PER_TICK_MAX: usize = 1000;

/// SCAN cursors remembered at most; the least recently used is forgotten first.
pub const SCAN_CURSORS_MAX: usize = 4096;

/// Keys one SCAN call examines at most, whatever COUNT asks.
pub const SCAN_COUNT_MAX: usize = 100_000;

/// Pattern-matching steps one KEYS or SCAN request may take, so that a hostile pattern
/// over many keys cannot hold the node (about a tenth of a second of work).
pub const GLOB_STEPS_PER_REQUEST_MAX: u64 = 100_000_000;

/// Keys one KEYS or FLUSHALL pass reads from the engine at a time.
pub(super) const WALK_CHUNK_KEYS: usize = 1024;

/// Why a request that consulted a key with a deadline is nondeterministic.
const DEADLINE_READ: &str = "it reads a key with a deadline, which each replica expires by its own clock";

/// Executes requests against an engine; owns the node's clock.
#[derive(Debug)]
pub struct Store<E> {
    /// Where the keys live.
    pub(super) engine: E,
    /// The clock that versions every write.
    clock: Hlc,
    /// This node, the origin of its writes' versions.
    node: NodeId,
    /// SCAN cursor number -> the key after which the scan resumes.
    cursors: BTreeMap<u64, Cursor>,
    /// Counts cursor uses, to find the least recently used.
    cursor_clock: u64,
    /// The next cursor number to hand out (never 0, which means "start" and "done").
    next_cursor: u64,
    /// Every write since the last `take_changes`, when capture is on (a replicating leader
    /// logs them); `None` when off.
    changes: Option<Vec<Change>>,
    /// What each captured write's key held before it, in the order of `changes`.
    olds: Vec<Old>,
    /// Bytes of old values in `olds`.
    olds_bytes: usize,
    /// True while this replica's segment files are not the leader's (physical replication):
    /// the last extent could not be written at its place.
    physical_left: bool,
    /// Extents of the leader's bytes stored as this replica's own writes.
    physical_diverged: u64,
    /// This store replicates a physical log.
    physical_log: bool,
    /// While a script runs: what each key it wrote held before, to undo it if it fails.
    undo: Option<Undo>,
    /// While a replica executes a logged statement: the version its next write takes (the
    /// leader's), instead of one from this node's clock.
    pinned: Option<Version>,
    /// Why the request being executed is nondeterministic, when it is known to be (a script
    /// read the clock or drew a random number): the statement log's judgement.
    nondeterministic: std::cell::Cell<Option<&'static str>>,
    /// While a recovery executes a logged statement again: a write whose key already holds
    /// its version or a newer one is skipped (it reached the engine before the crash).
    replaying: bool,
    /// Writes made while a statement executes (those a failed script undid taken off).
    statement_writes: usize,
    /// The scripts this node has cached (`SCRIPT LOAD`, `EVAL`).
    pub(super) scripts: super::scripts::ScriptCache,
    /// The largest value a write may store (VALUE_BYTES_MAX unless lowered).
    pub(super) value_bytes_max: usize,
    /// RANDOMKEY's generator, seeded from the node id: the core draws no OS randomness.
    pub(super) random: Xorshift,
    /// Databases a request may name (`SELECT 0` to this minus one).
    pub(super) databases: u32,
    /// Which namespace each database uses (see [`super::databases`]).
    pub(super) db_map: DbMap,
    /// The namespace of the request being executed.
    pub(super) ns: Namespace,
    /// Keys per escaped namespace (1 to 254, and 255 for replikv's own records), kept as writes
    /// land, so that DBSIZE and INFO keyspace cost no walk.
    pub(super) ns_keys: BTreeMap<Namespace, Keys>,
    /// What a read that finds a damaged record does.
    corruption: Corruption,
    /// The keys found damaged and not yet rewritten (see [`super::damage`]).
    damaged: DamagedKeys,
}

/// The old records of a script's writes, oldest first, to put back when it fails.
#[derive(Debug, Default)]
struct Undo {
    /// Each written key (physical), the record it held before (`None`: no record), and its
    /// damage if it was listed as damaged (listed again when undone).
    entries: Vec<(Bytes, Option<Record>, Option<Damage>)>,
    /// Bytes of keys and old values in `entries`.
    bytes: usize,
    /// Bytes of keys and new values the script wrote.
    written: usize,
}

/// Where the captured writes stood when a script began: a failed script's are cut off there.
#[derive(Debug)]
pub(super) struct UndoMark {
    changes: usize,
    olds: usize,
    olds_bytes: usize,
}

/// A SCAN cursor: where it resumes, and when it was last used.
#[derive(Debug)]
struct Cursor {
    /// The scan resumes after this key (which may since have been deleted: that is fine).
    after: Bytes,
    /// `cursor_clock` at its last use.
    used: u64,
}

/// A key's value if it exists and has not expired at `now_ms`.
pub(super) struct Live {
    /// The value.
    pub(super) value: Bytes,
    /// Its deadline in Unix milliseconds, if any.
    pub(super) expire_at_ms: Option<u64>,
}

impl<E: Engine> Store<E> {
    /// A store over `engine` whose writes are versioned as `node`. The clock resumes after the
    /// newest version in the engine. Panics where [`Store::open`] fails: for tests and
    /// engines that cannot be damaged.
    pub fn new(engine: E, node: NodeId) -> Store<E> {
        Store::open(engine, node).unwrap_or_else(|e| panic!("opening a store: {e}"))
    }

    /// A store over `engine` whose writes are versioned as `node`; fails with
    /// [`Error::Corrupt`] when its database map is damaged on disk.
    pub fn open(mut engine: E, node: NodeId) -> Result<Store<E>> {
        let physical_left = engine.log_engine().is_some_and(|e| e.physical_left());
        if physical_left {
            tracing::warn!(
                "physical replication: this node's segment files left the leader's before it stopped \
                 (PHYSICAL_LEFT): it stores the leader's records as its own writes; empty its data directory and \
                 start it again to take the leader's files"
            );
        }
        let clock = Hlc::new(engine.last_timestamp());
        let db_map = load_db_map(&engine)?;
        let ns_keys = count_namespaces(&engine);
        Ok(Store {
            engine,
            clock,
            node,
            cursors: BTreeMap::new(),
            cursor_clock: 0,
            next_cursor: 1,
            changes: None,
            olds: Vec::new(),
            olds_bytes: 0,
            physical_left,
            physical_diverged: 0,
            physical_log: false,
            undo: None,
            pinned: None,
            nondeterministic: std::cell::Cell::new(None),
            replaying: false,
            statement_writes: 0,
            scripts: Default::default(),
            value_bytes_max: VALUE_BYTES_MAX,
            random: Xorshift::seeded(node.0),
            databases: DATABASES_DEFAULT,
            db_map,
            ns: 0,
            ns_keys,
            corruption: Corruption::default(),
            damaged: DamagedKeys::default(),
        })
    }

    /// Sets what a read that finds a damaged record does.
    pub fn set_corruption(&mut self, corruption: Corruption) {
        self.corruption = corruption;
    }

    /// The keys found damaged and not yet rewritten.
    pub fn damaged(&self) -> &DamagedKeys {
        &self.damaged
    }

    /// Notes damage a read outside a request found (a digest, a snapshot): under
    /// `corruption = "repair"` the key is listed and the caller carries on without it;
    /// returns the error to stop with otherwise. `error` is not damage: returned as it is.
    pub fn note_damage(&mut self, key: &Bytes, error: Error) -> Result<()> {
        match Damage::of(&error) {
            Some(damage) if self.corruption == Corruption::Repair => {
                self.list_damaged(key, damage);
                Ok(())
            }
            _ => Err(error),
        }
    }

    /// Lists `key` (physical) as damaged, logging it the first time: reads refuse it until it
    /// is written. Also for a key whose record here is whole but not trusted (one a snapshot
    /// left out because it was damaged on the leader).
    pub fn list_damaged(&mut self, key: &Bytes, damage: Damage) {
        if self.damaged.insert(key, damage.clone()) {
            tracing::error!(
                key = %String::from_utf8_lossy(key).escape_debug(), path = %damage.path.display(),
                offset = damage.offset, reason = %damage.reason,
                "a damaged record: its key is refused until it is repaired; the node is degraded"
            );
        }
    }

    /// Sets how many databases requests may name (1..=[`DATABASES_MAX`]).
    pub fn set_databases(&mut self, databases: u32) {
        assert!((1..=DATABASES_MAX).contains(&databases), "databases = {databases} outside 1..={DATABASES_MAX}");
        self.databases = databases;
    }

    /// Lowers the largest value a write may store (a cluster keeps one change within a peer
    /// frame); never above [`VALUE_BYTES_MAX`].
    pub fn limit_values(&mut self, bytes_max: usize) {
        self.value_bytes_max = bytes_max.min(VALUE_BYTES_MAX);
    }

    /// Turns on the capture of every write, for `take_changes`.
    pub fn capture_changes(&mut self) {
        self.changes.get_or_insert_with(Vec::new);
    }

    /// The writes made since the last call, in order (empty when capture is off).
    pub fn take_changes(&mut self) -> Vec<Change> {
        self.take_logged().0
    }

    /// The writes made since the last call, in order, and what each one's key held before it
    /// (the logical log's old values; both empty when capture is off).
    pub fn take_logged(&mut self) -> (Vec<Change>, Vec<Old>) {
        self.olds_bytes = 0;
        (self.changes.as_mut().map(std::mem::take).unwrap_or_default(), std::mem::take(&mut self.olds))
    }

    /// Applies a change that another replica made (a follower applying the leader's log, or
    /// a snapshot): stores it as is and moves the clock past its version.
    pub fn apply(&mut self, change: Change) -> Result<()> {
        self.clock.observe(change.record.version.ts);
        let map = change.key == DB_MAP_KEY;
        let counted = counted_namespace(&change.key).map(|_| (change.key.clone(), self.engine.meta(&change.key)));
        let new = counted.as_ref().map(|_| change.record.clone());
        // A record put over a damaged one replaces it: the damaged one is dead.
        self.damaged.rewritten(&change.key);
        self.engine.put(change.key, change.record)?;
        if let (Some((key, old)), Some(new)) = (counted, new) {
            recount(&mut self.ns_keys, &key, old, &new);
        }
        if map {
            self.db_map = load_db_map(&self.engine)?;
        }
        Ok(())
    }

    /// Applies the leader's storage bytes (`log_format = "physical"`): each extent written
    /// verbatim at its place in the log engine's segments, as [`Store::apply`] would store its
    /// records otherwise. A replica whose files have left the leader's (see
    /// `storage/log/physical.rs`), or whose engine is not the log engine, stores the records
    /// through `put` instead: the same data, in files of its own; it warns the first time, and
    /// counts every such extent ([`Store::physical_diverged`]).
    pub fn apply_physical(&mut self, physical: &crate::replication::Physical) -> Result<()> {
        for extent in &physical.extents {
            let records = crate::storage::decode_extent(extent)?;
            // What each counted key held before, for the namespace counts: a key written twice
            // in the extent has its first write as the second's old record.
            let mut counts: Vec<(Bytes, Option<Meta>, Record)> = Vec::new();
            for (key, record) in &records {
                self.clock.observe(record.version.ts);
                self.damaged.rewritten(key);
                if counted_namespace(key).is_some() {
                    let earlier = counts.iter().rev().find(|(k, ..)| k == key).map(|(.., r)| r.meta());
                    counts.push((key.clone(), earlier.or_else(|| self.engine.meta(key)), record.clone()));
                }
            }
            let map = records.iter().any(|(key, _)| key == DB_MAP_KEY);
            let why = match self.engine.log_engine() {
                _ if self.physical_left => Some("its files left the leader's before".to_string()),
                Some(engine) => engine.append_extent(extent, records.clone())?,
                None => Some("this node's engine is not the log engine".to_string()),
            };
            match why {
                None => {}
                Some(why) => {
                    self.leave_physical(&why)?;
                    for (key, record) in records {
                        self.engine.put(key, record)?;
                    }
                }
            }
            for (key, old, new) in counts {
                recount(&mut self.ns_keys, &key, old, &new);
            }
            if map {
                self.db_map = load_db_map(&self.engine)?;
            }
        }
        // A replica whose files left the leader's compacts its own, on its own (see
        // `physical_left`).
        if !physical.compact.is_empty() && !self.physical_left {
            let compacted = match self.engine.log_engine() {
                Some(engine) => engine.compact_whole(&physical.compact, physical.active)?,
                None => crate::storage::Compacted::Gone,
            };
            if compacted == crate::storage::Compacted::Gone {
                self.leave_physical("the leader compacts segments this node does not have")?;
            }
        }
        Ok(())
    }

    /// Notes that this replica's segment files have left the leader's (`why`): it warns the
    /// first time, counts every time, and from here on stores the leader's records as its own
    /// writes and compacts on its own, for good (files that differ never come back by
    /// themselves).
    ///
    /// It is recorded in the engine's directory (`PHYSICAL_LEFT`), so that a restart knows it
    /// too: recovery then replays the log by version, not by place.
    pub fn leave_physical(&mut self, why: &str) -> Result<()> {
        if !self.physical_left {
            tracing::warn!(
                "physical replication: this node's segment files have left the leader's ({why}); storing the \
                 leader's records as its own writes from here on: the same data, in other files; empty its data \
                 directory and start it again to take the leader's files"
            );
            if let Some(engine) = self.engine.log_engine() {
                engine.mark_physical_left()?;
            }
        }
        self.physical_left = true;
        self.physical_diverged += 1;
        Ok(())
    }

    /// True while this replica's segment files are not the leader's: the last extent of the
    /// leader's bytes it was sent could not be written at its place. Its engine then seals and
    /// compacts on its own, as under a logical log.
    pub fn physical_left(&self) -> bool {
        self.physical_left
    }

    /// Says that this store replicates a physical log (`log_format = "physical"`): writes of
    /// its own (emptying it, a snapshot's keys) then mark it as having left the leader's files
    /// before they are made.
    pub fn set_physical_log(&mut self, on: bool) {
        self.physical_log = on;
    }

    /// True when this store replicates a physical log ([`Store::set_physical_log`]).
    pub fn physical_log(&self) -> bool {
        self.physical_log
    }

    /// Extents of the leader's bytes this replica stored as its own writes, its files having
    /// left the leader's (`log_format = "physical"`).
    pub fn physical_diverged(&self) -> u64 {
        self.physical_diverged
    }

    /// The newest timestamp the clock has issued or seen.
    pub fn last_timestamp(&self) -> crate::version::Timestamp {
        self.clock.last()
    }

    /// The engine, for flushing and maintenance.
    pub fn engine_mut(&mut self) -> &mut E {
        &mut self.engine
    }

    /// The engine, taking the store apart.
    pub fn into_engine(self) -> E {
        self.engine
    }

    /// The engine, for reading counters.
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// Executes one request at wall-clock `now_ms`. An `Err` is an engine failure that must
    /// stop the node; a request the client got wrong is an `Ok(Reply::Error(..))`.
    pub fn execute(&mut self, now_ms: u64, request: Request) -> Result<Reply> {
        let (db, mut request) = match request {
            Request::InDb { db, request } => (db, *request),
            request => (0, request),
        };
        if db >= self.databases {
            return Ok(Reply::err("DB index is out of range"));
        }
        match request {
            request @ (Request::Eval { .. } | Request::EvalSha { .. }) => return self.eval(now_ms, db, request),
            request @ (Request::ScriptLoad { .. } | Request::ScriptExists { .. } | Request::ScriptFlush) => {
                return Ok(self.script_command(request))
            }
            _ => {}
        }
        if let Some(reply) = check_sizes(&request, self.value_bytes_max) {
            return Ok(reply);
        }
        // Every key, read or written, is checked so that its physical form (up to two bytes
        // longer) fits the engine in every database; one pass over the keys.
        let ns = self.db_map.namespace(db as u8);
        let mut keys = request.keys_mut();
        if let Some(key) = keys.iter().find(|key| key.len() > CLIENT_KEY_BYTES_MAX) {
            let len = key.len();
            return Ok(Reply::err(format!("key is {len} bytes, over the limit of {CLIENT_KEY_BYTES_MAX} bytes")));
        }
        for key in &mut keys {
            **key = physical(ns, key);
        }
        self.ns = ns;
        match self.run(now_ms, request) {
            // A read met a damaged record: that request fails, whole (a read comes before the
            // writes that depend on it), and the node carries on.
            Err(Error::Damaged { key, path, offset, reason }) if self.corruption == Corruption::Repair => {
                let damage = Damage { path, offset, reason };
                self.list_damaged(&key, damage.clone());
                let shown = logical(&key).map_or(key, |(_, key)| key);
                Ok(damage.reply(&shown))
            }
            Err(Error::Damaged { path, offset, reason, .. }) => Err(Error::Corrupt { path, offset, reason }),
            result => result,
        }
    }

    /// Executes a request whose keys are physical, in namespace `self.ns`.
    fn run(&mut self, now_ms: u64, request: Request) -> Result<Reply> {
        Ok(match request {
            Request::Get { key } => bulk_or_nil(self.live(&key, now_ms)?.map(|l| l.value)),
            Request::Set { key, value, condition, get, expiry } => {
                self.set(now_ms, key, value, condition, get, expiry)?
            }
            Request::SetNx { key, value } => {
                let set = self.set(now_ms, key, value, SetCondition::IfAbsent, false, Expiry::Clear)?;
                Reply::Int(i64::from(set == Reply::Ok))
            }
            Request::GetDel { key } => {
                let old = self.live(&key, now_ms)?;
                if old.is_some() {
                    self.delete(now_ms, key)?;
                }
                bulk_or_nil(old.map(|l| l.value))
            }
            Request::Del { keys } => {
                let mut deleted = 0;
                for key in keys {
                    if self.exists(&key, now_ms) {
                        self.delete(now_ms, key)?;
                        deleted += 1;
                    }
                }
                Reply::Int(deleted)
            }
            Request::Exists { keys } => Reply::Int(keys.iter().filter(|k| self.exists(k, now_ms)).count() as i64),
            Request::MGet { keys } => {
                let mut values = Vec::with_capacity(keys.len());
                for key in keys {
                    values.push(bulk_or_nil(self.live(&key, now_ms)?.map(|l| l.value)));
                }
                Reply::Array(values)
            }
            Request::MSet { pairs, if_none_exist } => self.mset(now_ms, pairs, if_none_exist)?,
            Request::IncrBy { key, delta } => self.incr_by(now_ms, key, delta)?,
            Request::IncrByFloat { key, delta } => self.incr_by_float(now_ms, key, delta)?,
            Request::Append { key, value } => self.append(now_ms, key, value)?,
            Request::Strlen { key } => Reply::Int(self.live(&key, now_ms)?.map_or(0, |l| l.value.len() as i64)),
            Request::Type { key } => Reply::Status(if self.exists(&key, now_ms) { "string" } else { "none" }),
            Request::Keys { pattern } => self.keys(now_ms, &pattern),
            Request::Scan { cursor, pattern, count } => self.scan(now_ms, cursor, pattern, count),
            Request::Expire { key, expiry, command } => {
                self.expire(now_ms, key, expiry, command, ExpireCondition::default())?
            }
            Request::Ttl { key, millis } => self.ttl(now_ms, &key, millis),
            Request::Persist { key } => self.persist(now_ms, key)?,
            Request::DbSize => Reply::Int(self.db_size() as i64),
            Request::FlushAll => self.flush(now_ms, None)?,
            Request::FlushDb => self.flush(now_ms, Some(self.ns))?,
            Request::Move { key, db } => self.move_key(now_ms, key, db)?,
            Request::SwapDb { a, b } => self.swap_db(now_ms, a, b)?,
            Request::InDb { .. } => Reply::err("a request names its database once"),
            Request::Wait { .. } | Request::Digest { .. } | Request::Failover { .. } | Request::Log { .. } => {
                Reply::err("this command is answered by the replica, not the store")
            }
            Request::Watch { keys } => {
                // The database map too: a SWAPDB changes what every key names.
                let map = Bytes::from_static(DB_MAP_KEY);
                Reply::Watched(keys.into_iter().chain([map]).map(|key| self.watched(key, now_ms)).collect())
            }
            Request::Exec { requests, watched } => self.exec(now_ms, requests, &watched)?,
            Request::GetEx { key, expiry } => self.getex(now_ms, key, expiry)?,
            Request::SetEx { key, value, ttl_ms, command } => self.setex(now_ms, key, value, ttl_ms, command)?,
            Request::SetRange { key, offset, value } => self.setrange(now_ms, key, offset, value)?,
            Request::GetRange { key, start, end } => self.getrange(now_ms, &key, start, end)?,
            Request::SetBit { key, offset, bit } => self.setbit(now_ms, key, offset, bit)?,
            Request::GetBit { key, offset } => self.getbit(now_ms, &key, offset)?,
            Request::BitCount { key, range } => self.bitcount(now_ms, &key, range)?,
            Request::Lcs { a, b, answer } => self.lcs(now_ms, &a, &b, answer)?,
            Request::Rename { source, destination, if_absent } => {
                self.rename(now_ms, source, destination, if_absent)?
            }
            Request::Copy { source, destination, db, replace } => {
                self.copy(now_ms, source, destination, db, replace)?
            }
            Request::ExpireTime { key, millis } => self.expire_time(now_ms, &key, millis),
            Request::Object { field, key } => self.object(now_ms, field, &key)?,
            Request::ObjectHelp => object_help(),
            Request::Touch { keys } => self.touch(now_ms, &keys),
            Request::RandomKey => self.random_key(now_ms),
            Request::SetContext { .. } => Reply::err(
                "SET with CONTEXT is for a leaderless or multi-leader cluster: this node keeps one value per key, and every write replaces it",
            ),
            Request::WithConsistency { .. } => Reply::err(
                "REPLIKV.CONSISTENCY is for a leaderless cluster: this node has one leader, and every write waits for the acknowledgements its acks setting names",
            ),
            Request::Siblings { .. } => Reply::err(
                "REPLIKV.SIBLINGS is for a leaderless or multi-leader cluster: this node keeps one value per key, never siblings",
            ),
            Request::Conflicts { .. } => Reply::err(
                "REPLIKV.CONFLICTS is for a multi-leader cluster: this node has one leader, so no two writes conflict",
            ),
            Request::Session { request, .. } | Request::KeySession { request, .. } => self.execute(now_ms, *request)?,
            Request::ExpireIf { key, expiry, command, condition } => {
                self.expire(now_ms, key, expiry, command, condition)?
            }
            // `execute` runs scripts before the keys are made physical (a script's KEYS are
            // the client's).
            Request::Eval { .. }
            | Request::EvalSha { .. }
            | Request::ScriptLoad { .. }
            | Request::ScriptExists { .. }
            | Request::ScriptFlush => Reply::err("a script request reached the store's inner loop"),
        })
    }

    /// `key` as WATCH sees it now.
    fn watched(&self, key: Bytes, now_ms: u64) -> Watched {
        let meta = self.engine.meta(&key);
        let live = meta.is_some_and(|m| !m.tombstone && m.expire_at_ms.is_none_or(|at| at > now_ms));
        // A copy: the key may share the connection's read buffer, which the session would keep
        // alive for as long as it watches.
        // The version-0 tombstone an undone script leaves is no record at all.
        let version = meta.map(|m| m.version).filter(|v| *v != Version::default());
        Watched { key: Bytes::copy_from_slice(&key), version, live }
    }

    /// EXEC: nothing when a watched key changed (its newest record is another, or it was live
    /// and has expired); else every request in order, each answered in the array.
    fn exec(&mut self, now_ms: u64, requests: Vec<Request>, watched: &[Watched]) -> Result<Reply> {
        let changed = |w: &Watched| {
            let now = self.watched(w.key.clone(), now_ms);
            now.version != w.version || (w.live && !now.live)
        };
        if watched.iter().any(changed) {
            return Ok(Reply::NullArray);
        }
        let mut replies = Vec::with_capacity(requests.len());
        for request in requests {
            replies.push(match request {
                // The front end never queues these; refused rather than trusted.
                Request::Exec { .. }
                | Request::Watch { .. }
                | Request::Wait { .. }
                | Request::Digest { .. }
                | Request::Failover { .. }
                | Request::Log { .. } => Reply::err("Command not allowed inside a transaction"),
                request => self.execute(now_ms, request)?,
            });
        }
        Ok(Reply::Array(replies))
    }

    /// Deletes up to `EXPIRE_PER_TICK_MAX` keys whose deadline has passed at `now_ms`, each
    /// with a tombstone write. Returns how many it deleted.
    pub fn expire_due(&mut self, now_ms: u64) -> Result<usize> {
        let due = self.engine.expiring(now_ms, EXPIRE_PER_TICK_MAX);
        let count = due.len();
        for key in due {
            self.delete(now_ms, key)?;
        }
        Ok(count)
    }

    /// A fresh version for a write at `now_ms`, after `seen` (the newest version the write
    /// replaces or stands beside, if any): what a family's own commands stamp a write with.
    pub fn stamp(&mut self, now_ms: u64, seen: Option<Version>) -> Version {
        if let Some(seen) = seen {
            self.clock.observe(seen.ts);
        }
        self.version(now_ms)
    }

    /// Stores `record` under `key` (a physical key) as this node's write, captured for the
    /// log when capture is on: what a family's own commands write with.
    pub fn put_record(&mut self, key: Bytes, record: Record) -> Result<()> {
        self.clock.observe(record.version.ts);
        self.put(key, record)
    }

    /// A fresh version for a write at `now_ms` (the pinned one while a statement executes).
    fn version(&mut self, now_ms: u64) -> Version {
        if let Some(pinned) = self.pinned {
            self.clock.observe(pinned.ts);
            self.pinned = Some(Version { ts: pinned.ts.successor(), node: pinned.node });
            return pinned;
        }
        Version { ts: self.clock.tick(now_ms), node: self.node }
    }

    /// Executes a statement its leader logged ([`crate::replication::Statement`]) at this
    /// replica's `now_ms`, its writes versioned as the leader's were, from `first` on, and
    /// moves the clock past `last` (the leader's last write) whatever it wrote. Nothing it
    /// writes is captured for the log (the statement is the record). With `replay` (a
    /// recovery), a write whose key already holds its version or a newer one is skipped, so
    /// that a statement some of whose writes reached the engine before a crash completes
    /// without applying those twice. Its reply, and how many writes it made (those a failed
    /// script undid not counted).
    pub fn execute_statement(
        &mut self,
        now_ms: u64,
        request: Request,
        (first, last): (Version, crate::version::Timestamp),
        replay: bool,
    ) -> Result<(Reply, usize)> {
        (self.pinned, self.replaying, self.statement_writes) = (Some(first), replay, 0);
        let capture = self.changes.take();
        let result = self.execute(now_ms, request);
        self.changes = capture;
        let writes = self.statement_writes;
        (self.pinned, self.replaying) = (None, false);
        self.nondeterministic.set(None);
        self.clock.observe(last);
        Ok((result?, writes))
    }

    /// `request` as a statement log records it: an EVALSHA as the EVAL it ran (a replica may
    /// not hold the script), an EXEC without its watched keys (the leader found them
    /// unchanged: a replica executes the transaction, as the leader did).
    pub fn statement_form(&self, request: Request) -> Request {
        match request {
            Request::InDb { db, request } => Request::InDb { db, request: Box::new(self.statement_form(*request)) },
            Request::EvalSha { sha, keys, args } => match self.scripts.get(&sha) {
                Some(script) => Request::Eval { script, keys, args },
                None => Request::EvalSha { sha, keys, args },
            },
            Request::Exec { requests, .. } => Request::Exec {
                requests: requests.into_iter().map(|r| self.statement_form(r)).collect(),
                watched: Vec::new(),
            },
            request => request,
        }
    }

    /// Notes that the request being executed is nondeterministic, and why (the first reason
    /// noted stays).
    pub(super) fn note_nondeterministic(&self, why: &'static str) {
        if self.nondeterministic.get().is_none() {
            self.nondeterministic.set(Some(why));
        }
    }

    /// Why the request just executed was nondeterministic, if it noted why (a script read the
    /// clock, a command consulted a key with a deadline); clears it.
    pub fn take_nondeterministic(&mut self) -> Option<&'static str> {
        self.nondeterministic.take()
    }

    /// Writes `value` under `key` with deadline `expire_at_ms`.
    pub(super) fn write(&mut self, now_ms: u64, key: Bytes, value: Bytes, expire_at_ms: Option<u64>) -> Result<()> {
        let record = Record { version: self.version(now_ms), value: Some(value), expire_at_ms };
        self.put(key, record)
    }

    /// Writes a tombstone for `key`.
    pub(super) fn delete(&mut self, now_ms: u64, key: Bytes) -> Result<()> {
        let record = Record { version: self.version(now_ms), value: None, expire_at_ms: None };
        self.put(key, record)
    }

    /// Stores a write of this node's, capturing it when capture is on.
    fn put(&mut self, key: Bytes, record: Record) -> Result<()> {
        if self.replaying && self.engine.meta(&key).is_some_and(|m| m.version >= record.version) {
            return Ok(()); // a recovery's statement: this write reached the engine
        }
        if self.pinned.is_some() {
            self.statement_writes += 1;
        }
        if let Some(undo) = &mut self.undo {
            // A damaged record cannot be read back: undone, the key holds no value and is
            // listed as damaged again, as it was.
            let damage = self.damaged.get(&key).cloned();
            let held = if damage.is_some() { None } else { self.engine.get(&key).ok().flatten() };
            undo.bytes += key.len() + held.as_ref().and_then(|r| r.value.as_ref()).map_or(0, |v| v.len());
            undo.written += key.len() + record.value.as_ref().map_or(0, |v| v.len());
            undo.entries.push((key.clone(), held, damage));
        }
        if let Some(changes) = &mut self.changes {
            // The old record, for the log's readers: unknown when it cannot be read (a
            // damaged record, which this write replaces); its version and length only when it
            // is large or the request logged enough old values already, read from the index
            // without reading the value.
            let meta = self.engine.meta(&key);
            let old = match meta {
                _ if self.damaged.get(&key).is_some() => Old::Unknown,
                // No record, or the version-0 tombstone an undone script leaves for a key that
                // had none.
                None => Old::Absent,
                Some(meta) if meta.tombstone && meta.version == Version::default() => Old::Absent,
                Some(meta)
                    if meta.value_len as usize > OLD_VALUE_LOGGED_BYTES_MAX
                        || self.olds_bytes + meta.value_len as usize > OLD_VALUES_LOGGED_BYTES_PER_REQUEST_MAX =>
                {
                    Old::Omitted {
                        version: meta.version,
                        expire_at_ms: meta.expire_at_ms,
                        bytes: u64::from(meta.value_len),
                    }
                }
                Some(meta) => {
                    self.olds_bytes += meta.value_len as usize;
                    self.engine.get(&key).map_or(Old::Unknown, Old::of)
                }
            };
            changes.push(Change { key: key.clone(), record: record.clone() });
            self.olds.push(old);
        }
        let counted = counted_namespace(&key).map(|_| (key.clone(), self.engine.meta(&key), record.clone()));
        self.damaged.rewritten(&key);
        self.engine.put(key, record)?;
        // Counted once the engine took it: a put that failed changed nothing.
        if let Some((key, old, new)) = counted {
            recount(&mut self.ns_keys, &key, old, &new);
        }
        Ok(())
    }

    /// Starts keeping what a script's writes replace (see [`super::scripts`]).
    pub(super) fn begin_undo(&mut self) -> UndoMark {
        self.undo = Some(Undo::default());
        UndoMark {
            changes: self.changes.as_ref().map_or(0, Vec::len),
            olds: self.olds.len(),
            olds_bytes: self.olds_bytes,
        }
    }

    /// True when the script's undo has grown past [`super::scripts::SCRIPT_UNDO_BYTES_MAX`],
    /// or what it wrote past [`super::scripts::SCRIPT_WRITES_BYTES_MAX`].
    pub(super) fn undo_overflowed(&self) -> bool {
        self.undo.as_ref().is_some_and(|u| {
            u.bytes > super::scripts::SCRIPT_UNDO_BYTES_MAX || u.written > super::scripts::SCRIPT_WRITES_BYTES_MAX
        })
    }

    /// The script succeeded: its writes stay.
    pub(super) fn commit_undo(&mut self, _mark: UndoMark) {
        self.undo = None;
    }

    /// The script failed: every key it wrote gets back the record it held (a key that held
    /// none gets a tombstone of version 0, older than any write), newest write first, and the
    /// writes it captured for the log are dropped.
    pub(super) fn rollback_undo(&mut self, mark: UndoMark) -> Result<()> {
        let Some(undo) = self.undo.take() else { return Ok(()) };
        if self.pinned.is_some() {
            self.statement_writes = self.statement_writes.saturating_sub(undo.entries.len());
        }
        for (key, held, damage) in undo.entries.into_iter().rev() {
            if let Some(damage) = damage {
                self.damaged.insert(&key, damage);
            }
            let record = held.unwrap_or(Record { version: Version::default(), value: None, expire_at_ms: None });
            let old = self.engine.meta(&key);
            let map = key == DB_MAP_KEY;
            if counted_namespace(&key).is_some() {
                recount(&mut self.ns_keys, &key, old, &record);
            }
            self.engine.put(key, record)?;
            if map {
                self.db_map = load_db_map(&self.engine)?;
            }
        }
        if let Some(changes) = &mut self.changes {
            changes.truncate(mark.changes);
        }
        self.olds.truncate(mark.olds);
        self.olds_bytes = mark.olds_bytes;
        Ok(())
    }

    /// `key`'s value, if it exists and has not expired.
    pub(super) fn live(&self, key: &[u8], now_ms: u64) -> Result<Option<Live>> {
        if let Some(damage) = self.damaged.get(key) {
            // Listed: its record here is damaged, or was never received whole.
            let Damage { path, offset, reason } = damage.clone();
            return Err(Error::Damaged { key: Bytes::copy_from_slice(key), path, offset, reason });
        }
        let Some(record) = self.engine.get(key).map_err(|e| e.reading(key))? else { return Ok(None) };
        if record.expire_at_ms.is_some() && record.value.is_some() {
            self.note_nondeterministic(DEADLINE_READ);
        }
        if record.expire_at_ms.is_some_and(|at| at <= now_ms) {
            return Ok(None);
        }
        Ok(record.value.map(|value| Live { value, expire_at_ms: record.expire_at_ms }))
    }

    /// True when `key` holds a value that has not expired at `now_ms`.
    pub(super) fn exists(&self, key: &[u8], now_ms: u64) -> bool {
        self.live_meta(key, now_ms).is_some()
    }

    /// `key`'s metadata if it holds a value that has not expired at `now_ms`.
    pub(super) fn live_meta(&self, key: &[u8], now_ms: u64) -> Option<Meta> {
        let meta = self.engine.meta(key).filter(|m| !m.tombstone)?;
        if meta.expire_at_ms.is_some() {
            self.note_nondeterministic(DEADLINE_READ);
        }
        Some(meta).filter(|m| m.expire_at_ms.is_none_or(|at| at > now_ms))
    }

    fn set(
        &mut self,
        now_ms: u64,
        key: Bytes,
        value: Bytes,
        condition: SetCondition,
        get: bool,
        expiry: Expiry,
    ) -> Result<Reply> {
        // Only SET ... GET needs the old value; the rest needs whether the key exists and
        // its deadline, which the index knows without reading the value.
        let old = self.live_meta(&key, now_ms);
        let deadline = match resolve(expiry, now_ms, old.and_then(|m| m.expire_at_ms)) {
            Ok(deadline) => deadline,
            Err(()) => return Ok(Reply::err("invalid expire time in 'set' command")),
        };
        let applies = match condition {
            SetCondition::Always => true,
            SetCondition::IfAbsent => old.is_none(),
            SetCondition::IfPresent => old.is_some(),
        };
        let old_value = if get { self.live(&key, now_ms)?.map(|l| l.value) } else { None };
        if applies {
            self.write(now_ms, key, value, deadline)?;
        }
        Ok(match (get, applies) {
            (true, _) => bulk_or_nil(old_value),
            (false, true) => Reply::Ok,
            (false, false) => Reply::Nil,
        })
    }

    fn mset(&mut self, now_ms: u64, pairs: Vec<(Bytes, Bytes)>, if_none_exist: bool) -> Result<Reply> {
        if if_none_exist && pairs.iter().any(|(k, _)| self.exists(k, now_ms)) {
            return Ok(Reply::Int(0));
        }
        for (key, value) in pairs {
            self.write(now_ms, key, value, None)?;
        }
        Ok(if if_none_exist { Reply::Int(1) } else { Reply::Ok })
    }

    fn incr_by(&mut self, now_ms: u64, key: Bytes, delta: i64) -> Result<Reply> {
        let (current, deadline) =
            match self.number(&key, now_ms, parse_int, "value is not an integer or out of range")? {
                Ok(found) => found,
                Err(reply) => return Ok(reply),
            };
        let Some(new) = current.checked_add(delta) else {
            return Ok(Reply::err("increment or decrement would overflow"));
        };
        self.write(now_ms, key, Bytes::from(new.to_string()), deadline)?;
        Ok(Reply::Int(new))
    }

    fn incr_by_float(&mut self, now_ms: u64, key: Bytes, delta: f64) -> Result<Reply> {
        let (current, deadline) = match self.number(&key, now_ms, parse_float, "value is not a valid float")? {
            Ok(found) => found,
            Err(reply) => return Ok(reply),
        };
        let new = current + delta;
        if !new.is_finite() {
            return Ok(Reply::err("increment would produce NaN or Infinity"));
        }
        let text = Bytes::from(format_float(new));
        self.write(now_ms, key, text.clone(), deadline)?;
        Ok(Reply::Bulk(text))
    }

    /// The number `key` holds (zero when absent) and its deadline, or the error reply
    /// `not_a_number` when its value does not `parse`.
    fn number<N: Default>(
        &self,
        key: &[u8],
        now_ms: u64,
        parse: fn(&[u8]) -> Option<N>,
        not_a_number: &str,
    ) -> Result<std::result::Result<(N, Option<u64>), Reply>> {
        Ok(match self.live(key, now_ms)? {
            None => Ok((N::default(), None)),
            Some(live) => match parse(&live.value) {
                Some(n) => Ok((n, live.expire_at_ms)),
                None => Err(Reply::err(not_a_number)),
            },
        })
    }

    fn append(&mut self, now_ms: u64, key: Bytes, value: Bytes) -> Result<Reply> {
        let old = self.live(&key, now_ms)?;
        let old_len = old.as_ref().map_or(0, |l| l.value.len());
        if old_len + value.len() > self.value_bytes_max {
            return Ok(Reply::err("string exceeds maximum allowed size (proto-max-bulk-len)"));
        }
        let mut joined = BytesMut::with_capacity(old_len + value.len());
        if let Some(live) = &old {
            joined.extend_from_slice(&live.value);
        }
        joined.extend_from_slice(&value);
        let len = joined.len() as i64;
        self.write(now_ms, key, joined.freeze(), old.and_then(|l| l.expire_at_ms))?;
        Ok(Reply::Int(len))
    }

    fn keys(&self, now_ms: u64, pattern: &[u8]) -> Reply {
        let mut steps = GLOB_STEPS_PER_REQUEST_MAX;
        let mut found = Vec::new();
        let mut after: Option<Bytes> = None;
        loop {
            let chunk = self.scan_ns(after.as_deref(), WALK_CHUNK_KEYS);
            let Some((last, _)) = chunk.last() else { break };
            after = Some(last.clone());
            for (key, meta) in chunk {
                let live = !meta.tombstone && meta.expire_at_ms.is_none_or(|at| at > now_ms);
                let key = client_key(&key);
                match live.then(|| glob_match_within(pattern, &key, &mut steps)) {
                    Some(Some(true)) => found.push(Reply::Bulk(key)),
                    Some(None) => return too_complex(),
                    _ => {}
                }
            }
        }
        Reply::Array(found)
    }

    fn scan(&mut self, now_ms: u64, cursor: u64, pattern: Option<Bytes>, count: usize) -> Reply {
        let after = match cursor {
            0 => None,
            // A cursor stays valid after use, so a client may retry a call it lost.
            n => match self.cursors.get_mut(&n) {
                Some(cursor) => {
                    self.cursor_clock += 1;
                    cursor.used = self.cursor_clock;
                    Some(cursor.after.clone())
                }
                None => return Reply::err("invalid cursor"),
            },
        };
        let examine = count.clamp(1, SCAN_COUNT_MAX);
        let chunk = self.scan_ns(after.as_deref(), examine + 1);
        let more = chunk.len() > examine;
        let mut keys = Vec::new();
        let mut steps = GLOB_STEPS_PER_REQUEST_MAX;
        for (key, meta) in chunk.iter().take(examine) {
            let live = !meta.tombstone && meta.expire_at_ms.is_none_or(|at| at > now_ms);
            let key = client_key(key);
            let matched = match &pattern {
                _ if !live => Some(false),
                None => Some(true),
                Some(p) => glob_match_within(p, &key, &mut steps),
            };
            match matched {
                Some(true) => keys.push(Reply::Bulk(key)),
                Some(false) => {}
                None => return too_complex(),
            }
        }
        let next = match (more, chunk.get(examine - 1)) {
            (true, Some((last, _))) => self.remember_cursor(last.clone()),
            _ => 0,
        };
        Reply::Array(vec![Reply::Bulk(Bytes::from(next.to_string())), Reply::Array(keys)])
    }

    /// Hands out a cursor number that resumes after `key`, forgetting the least recently
    /// used cursor when the table is full (a linear pass over at most `SCAN_CURSORS_MAX`).
    fn remember_cursor(&mut self, key: Bytes) -> u64 {
        if self.cursors.len() >= SCAN_CURSORS_MAX {
            let stalest = self.cursors.iter().min_by_key(|(_, c)| c.used).map(|(id, _)| *id);
            self.cursors.remove(&stalest.expect("the table is full"));
        }
        let id = self.next_cursor;
        self.next_cursor = self.next_cursor.checked_add(1).unwrap_or(1);
        self.cursor_clock += 1;
        // A copy: the key may share a larger buffer, which the table would keep alive.
        self.cursors.insert(id, Cursor { after: Bytes::copy_from_slice(&key), used: self.cursor_clock });
        id
    }

    /// EXPIRE and friends: the deadline is resolved (and refused if it overflows) before the
    /// key is looked up, as Redis; a deadline already past deletes the key.
    fn expire(
        &mut self,
        now_ms: u64,
        key: Bytes,
        expiry: Expiry,
        command: &str,
        condition: ExpireCondition,
    ) -> Result<Reply> {
        let deadline = match expiry {
            Expiry::InMs(ms) => match (now_ms as i64).checked_add(ms) {
                Some(at) => at,
                None => return Ok(Reply::err(format!("invalid expire time in '{command}' command"))),
            },
            Expiry::AtMs(at) => at,
            Expiry::Clear | Expiry::Keep => unreachable!("EXPIRE always names a deadline"),
        };
        let Some(meta) = self.live_meta(&key, now_ms) else { return Ok(Reply::Int(0)) };
        if !expire_allowed(condition, meta.expire_at_ms, deadline) {
            return Ok(Reply::Int(0));
        }
        if deadline <= now_ms as i64 {
            self.delete(now_ms, key)?;
        } else {
            let live = self.live(&key, now_ms)?.expect("the key is live: checked above, same request");
            self.write(now_ms, key, live.value, Some(deadline as u64))?;
        }
        Ok(Reply::Int(1))
    }

    fn ttl(&self, now_ms: u64, key: &[u8], millis: bool) -> Reply {
        if !self.exists(key, now_ms) {
            return Reply::Int(-2);
        }
        match self.engine.meta(key).and_then(|m| m.expire_at_ms) {
            None => Reply::Int(-1),
            Some(at) if millis => Reply::Int((at - now_ms) as i64),
            // Redis rounds the seconds left to the nearest second.
            Some(at) => Reply::Int(((at - now_ms + 500) / 1000) as i64),
        }
    }

    fn persist(&mut self, now_ms: u64, key: Bytes) -> Result<Reply> {
        match self.live(&key, now_ms)? {
            Some(Live { value, expire_at_ms: Some(_) }) => {
                self.write(now_ms, key, value, None)?;
                Ok(Reply::Int(1))
            }
            _ => Ok(Reply::Int(0)),
        }
    }
}

/// The database map the engine holds (identity when it holds none). A map that cannot be
/// read stops the node: reading every database as its own would show clients other
/// databases' keys, and the record passed its checksum, so it is a bug, not a torn write.
fn load_db_map<E: Engine>(engine: &E) -> Result<DbMap> {
    let map = match engine.get(DB_MAP_KEY) {
        Ok(Some(Record { value: Some(value), .. })) => DbMap::decode(&value),
        Ok(_) => Ok(DbMap::default()),
        // Damaged on disk: without the map no key can be placed in its database, so the
        // store does not open (see the CAVEATS of `kv::damage`).
        Err(Error::Corrupt { path, offset, reason }) => {
            let reason = format!("the database map record is damaged ({reason}): no key can be placed in its database");
            return Err(Error::Corrupt { path, offset, reason });
        }
        Err(e) => return Err(e),
    };
    // The record passed its checksum: one that does not decode was written wrong, a bug.
    Ok(map.unwrap_or_else(|why| panic!("the database map record (key {DB_MAP_KEY:?}) does not decode: {why}")))
}

/// The client's key of a physical key (replikv's own records never reach a client).
fn client_key(physical: &Bytes) -> Bytes {
    logical(physical).map_or_else(Bytes::new, |(_, key)| key)
}

/// The deadline a write should carry: `Err` for a time that is not positive.
pub(super) fn resolve(expiry: Expiry, now_ms: u64, current: Option<u64>) -> std::result::Result<Option<u64>, ()> {
    match expiry {
        Expiry::Clear => Ok(None),
        Expiry::Keep => Ok(current),
        Expiry::InMs(ms) if ms > 0 => {
            now_ms.checked_add(ms as u64).filter(|at| *at <= i64::MAX as u64).map(Some).ok_or(())
        }
        Expiry::AtMs(at) if at > 0 => Ok(Some(at as u64)),
        Expiry::InMs(_) | Expiry::AtMs(_) => Err(()),
    }
}

/// The reply to a KEYS or SCAN whose pattern took more than its step budget.
fn too_complex() -> Reply {
    Reply::err(format!(
        "pattern too complex: matching took over {GLOB_STEPS_PER_REQUEST_MAX} steps; simplify it or SCAN with a smaller COUNT"
    ))
}

/// A bulk reply, or nil.
fn bulk_or_nil(value: Option<Bytes>) -> Reply {
    value.map_or(Reply::Nil, Reply::Bulk)
}

/// An error reply if a value in the request is over the limit (keys are checked in `execute`).
fn check_sizes(request: &Request, value_bytes_max: usize) -> Option<Reply> {
    let check = |value: &Bytes| {
        let len = value.len();
        (len > value_bytes_max)
            .then(|| Reply::err(format!("value is {len} bytes, over the limit of {value_bytes_max} bytes")))
    };
    match request {
        Request::Set { value, .. }
        | Request::SetNx { value, .. }
        | Request::Append { value, .. }
        | Request::SetEx { value, .. } => check(value),
        Request::MSet { pairs, .. } => pairs.iter().find_map(|(_, v)| check(v)),
        _ => None,
    }
}
