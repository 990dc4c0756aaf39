//! The statement and mixed log formats on a leader and two followers in one process: the
//! lecture's nondeterministic functions leave followers different under `statement`, and
//! under `mixed` they do not.

use super::tests::Cluster;
use super::*;
use crate::replication::LogFormat;
use crate::storage::MemoryEngine;
use bytes::Bytes;

/// A request from its words (a script's text may hold spaces).
fn request(words: &[&str]) -> Request {
    let args: Vec<Bytes> = words.iter().map(|w| Bytes::from(w.to_string())).collect();
    crate::kv::parse_command(&args).expect("a known command").expect("valid arguments")
}

/// A trio in `format`, its followers caught up.
fn cluster(format: LogFormat) -> Cluster {
    let mut c = Cluster::new(2, 0, ReplogOptions::default());
    for node in &mut c.nodes {
        node.settings_mut().log_format = format;
    }
    c.run_for(300);
    c
}

/// Sends `words` to the leader, then lets `later_ms` pass before the followers get it: they
/// execute a statement at their own clock, that much later than the leader did.
fn write(c: &mut Cluster, words: &[&str], later_ms: u64) {
    c.next_id += 1;
    let id = c.next_id;
    c.step(0, Input::Request { id, request: request(words) });
    c.now += later_ms;
    c.settle();
    assert!(!matches!(c.reply(id), Some(Reply::Error(_)) | None), "{words:?}: {:?}", c.reply(id));
}

/// Every record of node `i`, by key: value, version and deadline.
fn records(c: &Cluster, i: usize) -> Vec<(Bytes, crate::storage::Record)> {
    let engine = c.nodes[i].store().engine();
    engine
        .scan(std::ops::Bound::Unbounded, usize::MAX)
        .into_iter()
        .map(|(k, _)| (k.clone(), engine.get(&k).unwrap().unwrap()))
        .collect()
}

/// The leader's log: how many records hold statements, and how many changes.
fn kinds(c: &mut Cluster) -> (usize, usize) {
    let records = c.nodes[0].read_log(0, usize::MAX).unwrap().unwrap_or_default();
    (records.iter().filter(|r| r.statement.is_some()).count(), records.iter().filter(|r| !r.changes.is_empty()).count())
}

const DETERMINISTIC: &[&[&str]] = &[
    &["SET", "a", "1"],
    &["INCR", "n"],
    &["INCRBY", "n", "41"],
    &["MSET", "x", "1", "y", "2"],
    &["APPEND", "a", "-more"],
    &["EVAL", "redis.call('SET', KEYS[1], ARGV[1] .. redis.call('GET', KEYS[2])) return 1", "2", "s", "a", "v:"],
    &["DEL", "y"],
];

const NONDETERMINISTIC: &[&[&str]] = &[
    &["SET", "ttl", "v", "EX", "100"],
    &["EVAL", "local t = redis.call('TIME') redis.call('SET', KEYS[1], t[1] .. '.' .. t[2]) return 1", "1", "clock"],
    &["EVAL", "redis.call('SET', KEYS[1], tostring(math.random(1, 1000000000))) return 1", "1", "dice"],
    &["EVAL", "redis.call('SET', KEYS[1], 'v', 'EX', 100) return 1", "1", "scripted_ttl"],
];

#[test]
fn deterministic_statements_leave_every_replica_as_the_leader_versions_included() {
    let mut c = cluster(LogFormat::Statement);
    for words in DETERMINISTIC {
        write(&mut c, words, 700);
    }
    let leader = records(&c, 0);
    assert_eq!(leader.len(), 5, "a, n, s, x and y's tombstone: {leader:?}");
    for i in 1..3 {
        assert_eq!(records(&c, i), leader, "n{} executed the statements as the leader did", i + 1);
    }
    assert_eq!(kinds(&mut c), (DETERMINISTIC.len(), 0), "every write a statement");
    assert_eq!(c.nodes[0].statements.nondeterministic, 0);
}

#[test]
fn nondeterministic_statements_leave_followers_different_and_the_leader_names_them() {
    let mut c = cluster(LogFormat::Statement);
    for words in NONDETERMINISTIC {
        write(&mut c, words, 1_500);
    }
    let (leader, follower) = (records(&c, 0), records(&c, 1));
    let get = |records: &[(Bytes, crate::storage::Record)], key: &str| {
        records.iter().find(|(k, _)| k.as_ref() == key.as_bytes()).map(|(_, r)| r.clone()).expect(key)
    };
    let (ttl, ttl_here) = (get(&leader, "ttl"), get(&follower, "ttl"));
    assert_eq!((ttl.value.clone(), ttl.version), (ttl_here.value.clone(), ttl_here.version));
    assert_eq!(ttl_here.expire_at_ms.unwrap() - ttl.expire_at_ms.unwrap(), 1_500, "the follower's own deadline");
    assert_ne!(get(&leader, "clock").value, get(&follower, "clock").value, "TIME read on each replica");
    assert_ne!(get(&leader, "dice").value, get(&follower, "dice").value, "each replica's own draw");
    assert_ne!(get(&leader, "scripted_ttl").expire_at_ms, get(&follower, "scripted_ttl").expire_at_ms);
    assert_eq!(kinds(&mut c), (4, 0));
    assert_eq!(c.nodes[0].statements.nondeterministic, 4, "each judged and counted");
    let logged = c.nodes[0].read_log(0, usize::MAX).unwrap().unwrap();
    let why: Vec<String> = logged.iter().filter_map(|r| r.statement.as_ref()?.nondeterministic.clone()).collect();
    assert_eq!(
        why,
        [
            "it sets a deadline relative to the clock (a relative TTL)",
            "its script reads the clock (TIME)",
            "its script draws a random number (math.random)",
            "its script sets a deadline relative to the clock (a relative TTL)"
        ]
    );
}

#[test]
fn mixed_logs_the_nondeterministic_requests_as_their_effects_and_no_replica_differs() {
    let mut c = cluster(LogFormat::Mixed);
    for words in DETERMINISTIC.iter().chain(NONDETERMINISTIC) {
        write(&mut c, words, 1_500);
    }
    // A write to a key with a deadline: expired on a follower's clock but not the leader's,
    // it would append to nothing there.
    write(&mut c, &["SET", "short", "x", "PX", "1000"], 0);
    write(&mut c, &["APPEND", "short", "y"], 1_500);
    let leader = records(&c, 0);
    for i in 1..3 {
        assert_eq!(records(&c, i), leader, "n{} holds what the leader holds", i + 1);
    }
    assert_eq!(kinds(&mut c), (DETERMINISTIC.len(), NONDETERMINISTIC.len() + 2));
    assert_eq!(c.nodes[0].statements.nondeterministic, 0, "none logged as a statement");
}

#[test]
fn a_leader_whose_engine_lost_the_writes_executes_its_statements_again_at_recovery() {
    let mut c = cluster(LogFormat::Statement);
    for words in DETERMINISTIC {
        write(&mut c, words, 0);
    }
    let before = records(&c, 0);
    // The process restarts with its log and an engine that kept nothing.
    let settings = c.nodes[0].settings().clone();
    let placeholder = SingleLeader::new(MemoryEngine::new(), settings.common.node);
    let (_, files) = std::mem::replace(&mut c.nodes[0], placeholder).into_parts();
    c.nodes[0] = SingleLeader::replicated(MemoryEngine::new(), files, settings, c.now + 60_000).unwrap();
    assert_eq!(records(&c, 0), before, "the statements' writes again, at their versions");
}

#[test]
fn a_cut_statement_is_saved_to_the_rollback_log_as_its_command_line() {
    let mut rollback = rollback::RollbackLog::in_memory();
    let first = crate::version::Version { ts: crate::version::Timestamp { millis: 5, logical: 0 }, node: NodeId(1) };
    let statement = crate::replication::Statement::new(
        request(&["SET", "k", "v", "EX", "10"]),
        first,
        first.ts,
        vec![Bytes::from("k")],
        None,
    );
    assert!(statement.request_bytes > 5, "{}", statement.request_bytes);
    let record = LogRecord { statement: Some(statement), ..LogRecord::whole(9, 2, Vec::new()) };
    assert_eq!(rollback.save(&[record], 77).unwrap(), 1);
    let entry = &rollback.memory_entries()[0];
    assert_eq!(entry.statement, Some(("SET k v PX 10000".to_string(), vec![Bytes::from("k")])));
    assert_eq!((entry.lsn, entry.key.as_ref(), entry.value.as_ref()), (9, &b"k"[..], None));
}

#[test]
fn while_a_snapshot_is_in_flight_writes_are_logged_as_effects_and_none_applies_twice() {
    // Snapshot chunks read the engine as it is when they are read, past the snapshot's
    // position: what follows that position must apply harmlessly over them.
    let options = ReplogOptions {
        retain_bytes_max: 2048,
        segment_bytes_max: 512,
        unreplicated_bytes_max: 0,
        ..ReplogOptions::default()
    };
    let mut c = Cluster::new(2, 0, options);
    for node in &mut c.nodes {
        node.settings_mut().log_format = LogFormat::Statement;
    }
    c.run_for(300);
    c.cut.insert(2);
    for i in 0..40 {
        write(&mut c, &["SET", &format!("key{i:02}"), &"v".repeat(100)], 0);
    }
    write(&mut c, &["SET", "n", "0"], 0);
    c.run_for(1_500);
    c.cut.clear();
    let snapshotting = |c: &Cluster| c.nodes[0].status(c.now).followers.iter().any(|f| f.mode == "snapshot");
    let mut incremented = 0;
    for _ in 0..200 {
        c.now += 10;
        for i in 0..3 {
            c.step(i, Input::Tick);
        }
        // One message at a time, so that the snapshot takes several steps.
        if let Some((from, to, message)) = c.net.pop_front() {
            let from = c.ids[from];
            c.step(to, Input::Message { from, message });
        }
        if snapshotting(&c) {
            c.next_id += 1;
            let id = c.next_id;
            c.step(0, Input::Request { id, request: request(&["INCR", "n"]) });
            incremented += 1;
            let end = c.nodes[0].last_lsn();
            let last = c.nodes[0].read_log(end - 1, usize::MAX).unwrap().unwrap();
            let record = last.last().unwrap();
            assert!(record.statement.is_none() && !record.changes.is_empty(), "effects while snapshotting: {record:?}");
        }
    }
    assert!(incremented > 0, "the snapshot was never seen in flight");
    c.run_for(1_000);
    let leader = records(&c, 0);
    assert_eq!(records(&c, 2), leader, "n3 took the snapshot and the writes after it once each");
    let n = leader.iter().find(|(k, _)| k.as_ref() == b"n").unwrap().1.value.clone().unwrap();
    assert_eq!(n, Bytes::from(incremented.to_string()));
    // Once no snapshot is in flight, statements again.
    write(&mut c, &["INCR", "n"], 0);
    let end = c.nodes[0].last_lsn();
    let last = c.nodes[0].read_log(end - 1, usize::MAX).unwrap().unwrap();
    assert!(last.last().unwrap().statement.is_some());
}

#[test]
fn mixed_judges_reads_of_keys_with_deadlines_and_script_inputs_of_each_replica_nondeterministic() {
    let mut c = cluster(LogFormat::Mixed);
    write(&mut c, &["SET", "lock", "1", "PX", "1000"], 0);
    let cases: &[&[&str]] = &[
        // Whether it holds depends on each replica's clock, though it writes no such key.
        &["EVAL", "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('SET', KEYS[2], 'x') end return 1", "2", "lock", "other"],
        &["EVAL", "redis.call('SET', KEYS[1], redis.call('PTTL', KEYS[2])) return 1", "2", "left", "lock"],
        &["EVAL", "local s = '' for k in pairs({a = 1, b = 2, c = 3}) do s = s .. k end redis.call('SET', KEYS[1], s) return 1", "1", "order"],
    ];
    for words in cases {
        write(&mut c, words, 0);
    }
    write(&mut c, &["SET", "plain", "1"], 0);
    let (statements, effects) = kinds(&mut c);
    assert_eq!((statements, effects), (1, 1 + cases.len()), "only the plain SET is a statement");
}

#[test]
fn a_follower_whose_engine_kept_part_of_a_statement_completes_it_at_recovery() {
    let mut c = cluster(LogFormat::Statement);
    write(&mut c, &["SET", "c", "10"], 0);
    let script = "redis.call('INCR', KEYS[1]) redis.call('SET', KEYS[2], redis.call('GET', KEYS[1])) return 1";
    write(&mut c, &["EVAL", script, "2", "c", "d"], 0);
    let leader = records(&c, 0);
    assert_eq!(leader.iter().map(|(_, r)| r.value.clone().unwrap()).collect::<Vec<_>>(), ["11", "11"]);
    assert_eq!(records(&c, 1), leader);
    // n2 restarts with an engine that kept the script's write of c, not of d.
    let settings = c.nodes[1].settings().clone();
    let placeholder = SingleLeader::new(MemoryEngine::new(), settings.common.node);
    let (_, files) = std::mem::replace(&mut c.nodes[1], placeholder).into_parts();
    let mut engine = MemoryEngine::new();
    let (key, record) = leader[0].clone();
    crate::storage::Engine::put(&mut engine, key, record).unwrap();
    c.nodes[1] = SingleLeader::replicated(engine, files, settings, c.now + 60_000).unwrap();
    assert_eq!(records(&c, 1), leader, "c incremented once (its kept write skipped), d written from it");
    c.run_for(1_000);
    assert_eq!(records(&c, 1), leader);
}
