//! End-to-end single-leader replication between real processes on 127.0.0.1: every mode
//! replicates what it acknowledged; lag shows while a follower is paused; sync refuses to
//! acknowledge without its followers; a killed follower catches up; a follower behind the
//! retained log catches up through a snapshot; nodes whose batches owe no fsync (`engine =
//! "memory"`) replicate all the same.

mod common;

use common::trio::Trio;
use common::{hinted_segments, Node};
use redis::Commands;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Runs `replikv check` on the cluster: (exit success, stdout, stderr).
fn check(trio: &Trio) -> (bool, String, String) {
    trio.replikv(&["check", "--timeout-secs", "20"])
}

/// Waits until every follower has every record the leader has; returns the leader.
fn wait_caught_up(trio: &Trio) -> usize {
    let leader = trio.leader();
    let last = trio.status(leader)["replication"]["last_lsn"].as_u64().unwrap();
    for i in (0..3).filter(|&i| i != leader) {
        trio.wait_follower(i, "caught up", |f| f["acked_lsn"].as_u64() >= Some(last) && f["lag_records"] == 0);
        trio.wait_applied(i, last);
    }
    leader
}

/// Every key and value of node `i`, by SCAN and GET through RESP.
fn dump(trio: &Trio, i: usize) -> BTreeMap<String, String> {
    let mut con = trio.con(i);
    let keys: Vec<String> = con.scan().unwrap().collect();
    let mut out = BTreeMap::new();
    for key in keys {
        let value: Option<String> = con.get(&key).unwrap();
        out.insert(key, value.unwrap_or_default());
    }
    out
}

/// Writes `count` keys from each of `clients` threads to the leader; returns every write that
/// was acknowledged OK, and every error reply.
fn write_load(trio: &Trio, clients: usize, count: usize, tag: &str) -> (BTreeMap<String, String>, Vec<String>) {
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..clients)
            .map(|c| {
                scope.spawn(move || {
                    let mut con = trio.con(0);
                    let mut acked = BTreeMap::new();
                    let mut errors = Vec::new();
                    for n in 0..count {
                        let (key, value) = (format!("{tag}:{c}:{n}"), format!("v{n}-{}", "x".repeat(n % 50)));
                        match con.set::<_, _, String>(&key, &value) {
                            Ok(_) => {
                                acked.insert(key, value);
                            }
                            Err(e) => errors.push(e.to_string()),
                        }
                    }
                    (acked, errors)
                })
            })
            .collect();
        let mut acked = BTreeMap::new();
        let mut errors = Vec::new();
        for t in threads {
            let (a, e) = t.join().unwrap();
            acked.extend(a);
            errors.extend(e);
        }
        (acked, errors)
    })
}

/// Every acknowledged write is on every follower.
fn assert_followers_have(trio: &Trio, acked: &BTreeMap<String, String>) {
    let leader = wait_caught_up(trio);
    for i in 0..3 {
        let mut con = trio.con(i);
        for (key, value) in acked {
            let got: Option<String> = con.get(key).unwrap();
            assert_eq!(got.as_deref(), Some(value.as_str()), "n{} lacks acknowledged {key}", i + 1);
        }
    }
    let on_leader = dump(trio, leader);
    for i in (0..3).filter(|&i| i != leader) {
        assert_eq!(dump(trio, i), on_leader, "n{} differs from the leader n{}", i + 1, leader + 1);
    }
    let (ok, stdout, stderr) = check(trio);
    assert!(ok, "replikv check finds no difference:\n{stdout}{stderr}");
    assert_eq!(stdout.matches(" same").count(), 2, "{stdout}");
}

fn each_mode(acks: &str) {
    let trio = Trio::start(&format!("acks = \"{acks}\""), &[]);
    let (acked, errors) = write_load(&trio, 4, 100, acks);
    assert!(errors.is_empty(), "{acks}: no errors with every follower up: {errors:?}");
    assert_eq!(acked.len(), 400);
    assert_followers_have(&trio, &acked);
    // Followers refuse writes, naming the leader.
    let err = trio.con(1).set::<_, _, String>("k", "v").unwrap_err().to_string();
    assert!(err.contains("read only replica") && err.contains("The leader is n1 at 127.0.0.1:"), "{err}");
}

#[test]
fn sync_replicates_every_acknowledged_write() {
    each_mode("sync");
}

#[test]
fn semi_sync_replicates_every_acknowledged_write() {
    each_mode("semi-sync:1");
}

#[test]
fn async_replicates_every_acknowledged_write() {
    each_mode("async");
}

#[test]
fn async_lag_shows_while_a_follower_is_paused_and_goes_after() {
    let trio = Trio::start("acks = \"async\"", &[]);
    let idle = trio.follower(2);
    assert_eq!((idle["lag_records"].as_u64(), idle["lag_ms"].as_u64()), (Some(0), Some(0)), "idle: no lag: {idle}");
    trio.nodes[2].signal(libc::SIGSTOP);
    let (acked, errors) = write_load(&trio, 2, 50, "lag");
    assert!(errors.is_empty(), "async does not wait for the paused follower: {errors:?}");
    // SIGSTOP takes effect when the kernel next schedules n3: on a loaded machine it may
    // still take the first few writes.
    let first = trio.wait_follower(2, "lagging", |f| f["lag_records"].as_u64() >= Some(50) && f["up"] == false);
    std::thread::sleep(Duration::from_millis(600));
    let later = trio.follower(2);
    assert!(later["lag_ms"].as_u64() > first["lag_ms"].as_u64(), "lag in time grows: {first} then {later}");
    let info: String = redis::cmd("INFO").arg("replication").query(&mut trio.con(0)).unwrap();
    assert!(info.contains("role:master") && info.contains("connected_slaves:1"), "{info}");
    assert!(info.contains("state=down") && info.contains("state=online"), "{info}");
    trio.nodes[2].signal(libc::SIGCONT);
    assert_followers_have(&trio, &acked);
    let back = trio.follower(2);
    assert_eq!((back["lag_records"].as_u64(), back["lag_ms"].as_u64()), (Some(0), Some(0)), "{back}");
    let info: String = redis::cmd("INFO").arg("replication").query(&mut trio.con(2)).unwrap();
    assert!(info.contains("role:slave") && info.contains("master_link_status:up"), "{info}");
    let role: redis::Value = redis::cmd("ROLE").query(&mut trio.con(0)).unwrap();
    assert!(format!("{role:?}").contains("master"), "{role:?}");
}

#[test]
fn sync_fails_with_noreplicas_while_a_follower_is_paused() {
    let trio = Trio::start("acks = \"sync\"\nack_timeout_ms = 300", &[]);
    trio.nodes[2].signal(libc::SIGSTOP);
    let started = Instant::now();
    let err = trio.con(0).set::<_, _, String>("k", "v").unwrap_err().to_string();
    assert!(err.contains("NOREPLICAS") && err.contains("1 of the 2 followers"), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(300), "not before the timeout");
    // The status is published after the batch whose replies it counts: wait for it (bounded).
    let deadline = Instant::now() + Duration::from_secs(5);
    while trio.status(0)["replication"]["noreplicas"] != 1 {
        assert!(Instant::now() < deadline, "noreplicas never counted: {}", trio.status(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    let waited: i64 = redis::cmd("WAIT").arg(2).arg(200).query(&mut trio.con(0)).unwrap();
    assert_eq!(waited, 1, "WAIT counts the follower that has it");
    trio.nodes[2].signal(libc::SIGCONT);
    trio.wait_streaming(&[2]);
    let ok: String = trio.con(0).set("k2", "v2").unwrap();
    assert_eq!(ok, "OK", "writes succeed again once the follower is back");
}

#[test]
fn config_set_ack_timeout_ms_reaches_the_running_leader() {
    let trio = Trio::start("acks = \"sync\"\nack_timeout_ms = 300", &[]);
    let leader = trio.leader();
    let mut con = trio.con(leader);
    let _: () = redis::cmd("CONFIG").arg("SET").arg("ack_timeout_ms").arg(1500).query(&mut con).unwrap();
    let paused = (leader + 1) % 3;
    trio.nodes[paused].signal(libc::SIGSTOP);
    let started = Instant::now();
    let err = con.set::<_, _, String>("k", "v").unwrap_err().to_string();
    trio.nodes[paused].signal(libc::SIGCONT);
    assert!(err.contains("NOREPLICAS") && err.contains("within 1500 ms"), "the new timeout, by name: {err}");
    assert!(started.elapsed() >= Duration::from_millis(1500), "not at the old 300 ms: {:?}", started.elapsed());
    trio.wait_streaming(&[0, 1, 2].into_iter().filter(|&i| i != leader).collect::<Vec<_>>());
}

#[test]
fn semi_sync_keeps_accepting_writes_with_one_follower_paused() {
    let trio = Trio::start("acks = \"semi-sync:1\"\nack_timeout_ms = 300", &[]);
    trio.nodes[2].signal(libc::SIGSTOP);
    let (acked, errors) = write_load(&trio, 2, 50, "semi");
    assert!(errors.is_empty(), "one follower is enough: {errors:?}");
    assert_eq!(acked.len(), 100);
    trio.nodes[2].signal(libc::SIGCONT);
    assert_followers_have(&trio, &acked);
}

#[test]
fn a_follower_killed_during_writes_catches_up_after_restart() {
    let mut trio = Trio::start("acks = \"semi-sync:1\"", &[]);
    let acked = std::thread::scope(|scope| {
        let load = scope.spawn(|| write_load(&trio, 3, 300, "kill"));
        std::thread::sleep(Duration::from_millis(300));
        trio.nodes[2].signal(libc::SIGKILL);
        load.join().unwrap()
    });
    let (acked, errors) = acked;
    assert!(errors.is_empty(), "semi-sync:1 keeps going on one follower: {errors:?}");
    trio.nodes[2].reap();
    trio.nodes[2].restart();
    assert_followers_have(&trio, &acked);
    let leader_lsn = trio.status(0)["replication"]["last_lsn"].as_u64().unwrap();
    let n3 = trio.status(2);
    assert_eq!(n3["replication"]["last_lsn"].as_u64(), Some(leader_lsn), "{n3}");
}

#[test]
fn a_follower_behind_the_truncated_log_catches_up_through_a_snapshot() {
    let mut trio = Trio::start("acks = \"async\"\nlog_retain_bytes = 131072\nlog_segment_bytes = 65536", &[]);
    // Killed, not paused: a paused follower would find the leader's messages still queued
    // in its socket when it resumes.
    trio.nodes[2].kill9();
    let mut con = trio.con(0);
    let mut acked = BTreeMap::new();
    for n in 0..400 {
        let (key, value) = (format!("big:{n}"), format!("{n}:{}", "y".repeat(2000)));
        let _: String = con.set(&key, &value).unwrap();
        acked.insert(key, value);
    }
    for n in (0..400).step_by(10) {
        let _: i64 = con.del(format!("big:{n}")).unwrap();
        acked.remove(&format!("big:{n}"));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while trio.status(0)["replication"]["first_lsn"].as_u64() <= Some(1) {
        assert!(Instant::now() < deadline, "retention never dropped the start of the log");
        std::thread::sleep(Duration::from_millis(100));
    }
    trio.nodes[2].restart();
    assert_followers_have(&trio, &acked);
    let f = trio.follower(2);
    assert_eq!(f["snapshots"], 1, "one snapshot, not a loop: {f}");
    let n3 = trio.status(2);
    assert_eq!(n3["replication"]["leader"]["snapshots_installed"], 1, "{n3}");
    assert_eq!(dump(&trio, 2).len(), 360);
}

#[test]
fn followers_forward_writes_when_asked_to() {
    let trio = Trio::start("acks = \"sync\"\nforward_writes = true", &[]);
    let mut con = trio.con(1);
    let ok: String = con.set("fwd", "1").unwrap();
    assert_eq!(ok, "OK", "a follower forwards the write to the leader");
    let n: i64 = trio.con(2).incr("counter", 5).unwrap();
    assert_eq!(n, 5);
    let on_leader: Option<String> = trio.con(0).get("fwd").unwrap();
    assert_eq!(on_leader.as_deref(), Some("1"));
    let mut acked = BTreeMap::new();
    acked.insert("fwd".to_string(), "1".to_string());
    acked.insert("counter".to_string(), "5".to_string());
    assert_followers_have(&trio, &acked);
}

#[test]
fn check_names_the_replica_and_the_key_that_differ() {
    let mut trio = Trio::start("acks = \"sync\"", &[]);
    let (acked, _) = write_load(&trio, 1, 50, "chk");
    assert_followers_have(&trio, &acked);
    // Make n3 diverge behind replication's back: empty its replication log (so that it has
    // no record to date its keys by, and cannot undo a write its log lacks), run it once as a
    // lone node on its data directory and write a key there.
    trio.nodes[2].terminate();
    let dir = trio.nodes[2].data_dir.clone();
    std::fs::remove_dir_all(dir.join("replog")).unwrap();
    let lone = Node::start(&dir, &[]);
    let _: String = redis::Client::open(lone.url()).unwrap().get_connection().unwrap().set("stray", "x").unwrap();
    drop(lone);
    trio.nodes[2].restart();
    trio.wait_streaming(&[2]);
    let (code, stdout, stderr) = trio.replikv_code(&["check", "--timeout-secs", "20"]);
    assert_eq!(code, Some(1), "check exits 1 when a replica differs:\n{stdout}{stderr}");
    assert!(stdout.contains("differs") && stdout.contains("\"stray\": only on n3"), "{stdout}");
    assert!(stderr.contains("n3 differs from n1"), "{stderr}");
}

#[test]
fn after_the_leader_restarts_a_leader_ships_what_it_holds_without_waiting_for_a_write() {
    let mut trio = Trio::start("acks = \"semi-sync:1\"", &[]);
    trio.nodes[2].kill9();
    let (acked, errors) = write_load(&trio, 1, 50, "restart");
    assert!(errors.is_empty(), "{errors:?}");
    let status = trio.nodes[0].terminate();
    assert!(status.success(), "the leader stops cleanly: {status}");
    trio.nodes[0].restart();
    trio.nodes[2].restart();
    // No write after the restart: whoever leads (n1 restarts as a follower and an election
    // decides) must ship n3's missing records on its own.
    assert_followers_have(&trio, &acked);
}

/// A SET on the leader of a cluster started with `flags` (and no automatic failover, which an
/// in-memory node may not have) reaches both followers within a bounded wait, and the leader
/// then shows each of them with no lag.
fn replicates_a_set(flags: &[&str]) {
    let trio = Trio::start("acks = \"async\"\nauto_failover = false", flags);
    let ok: String = trio.con(0).set("k", "v").unwrap();
    assert_eq!(ok, "OK");
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 1..3 {
        let mut con = trio.con(i);
        while con.get::<_, Option<String>>("k").unwrap().as_deref() != Some("v") {
            assert!(Instant::now() < deadline, "n{} never got the write: {}", i + 1, trio.follower(i));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let last = trio.status(0)["replication"]["last_lsn"].as_u64().unwrap();
    assert!(last >= 1, "the SET was logged");
    for i in 1..3 {
        let f = trio.wait_follower(i, "caught up", |f| f["acked_lsn"].as_u64() >= Some(last));
        assert_eq!(f["lag_records"], 0, "{f}");
    }
}

#[test]
fn a_cluster_in_memory_replicates_without_an_fsync_to_wait_for() {
    replicates_a_set(&["--engine", "memory"]);
}

#[test]
fn a_cluster_that_never_fsyncs_its_engine_replicates() {
    replicates_a_set(&["--fsync", "never"]);
}

/// Flips a bit at the end of `value` in the first hinted segment of node `i`, while it runs
/// (its values are not cached, so its next read of them goes to the disk); waits (bounded)
/// for the hint, which the node writes when idle. Returns the segment.
fn rot_on(trio: &Trio, i: usize, value: &[u8]) -> std::path::PathBuf {
    let data = &trio.nodes[i].data_dir;
    let deadline = Instant::now() + Duration::from_secs(20);
    while hinted_segments(data).is_empty() {
        assert!(Instant::now() < deadline, "n{} wrote no hint file", i + 1);
        std::thread::sleep(Duration::from_millis(50));
    }
    let segment = &hinted_segments(data)[0];
    let mut bytes = std::fs::read(segment).unwrap();
    let at = bytes.windows(value.len()).position(|w| w == value).expect("the value is in the first segment");
    bytes[at + value.len() - 1] ^= 0x01;
    std::fs::write(segment, bytes).unwrap();
    segment.clone()
}

/// Waits (bounded) until `segment` is gone: the engine rewrote it once it was repaired.
fn wait_rewritten(segment: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while segment.exists() {
        assert!(Instant::now() < deadline, "{} was never rewritten", segment.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (bounded) until node `i` has no damaged key and serves `key` as `value`.
fn wait_repaired(trio: &Trio, i: usize, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let damaged = trio.try_status(i).map(|s| s["replication"]["damaged_keys"].clone());
        let got: redis::RedisResult<Option<String>> = trio.con(i).get(key);
        if damaged == Some(0.into()) && got.as_ref().ok() == Some(&Some(value.to_string())) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "n{} was not repaired: damaged {damaged:?}, {key} = {got:?}\nlog:\n{}",
            i + 1,
            trio.nodes[i].log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_damaged_follower_and_a_damaged_leader_take_their_keys_back_from_a_healthy_replica() {
    let flags = ["--segment-bytes-max", "65536", "--value-cache-bytes-max", "0"];
    let trio = Trio::start("acks = \"semi-sync:1\"\nheartbeat_ms = 50\nelection_timeout_ms = 1000", &flags);
    let leader = trio.leader();
    let value = |i: usize| format!("value {i} {}", "v".repeat(60));
    let mut pipe = redis::pipe();
    for i in 0..3_000 {
        pipe.cmd("SET").arg(format!("key{i}")).arg(value(i)).ignore();
    }
    pipe.query::<()>(&mut trio.con(leader)).unwrap();
    for i in (0..3).filter(|&i| i != leader) {
        trio.wait_follower(i, "caught up", |f| f["lag_records"] == 0);
    }
    // A follower: its read of the damaged key is refused, then it takes the key back.
    let follower = (leader + 1) % 3;
    let damaged = rot_on(&trio, follower, b"value 5 vvvv");
    let refused: redis::RedisResult<Option<String>> = trio.con(follower).get("key5");
    let text = format!("{:?}", refused.unwrap_err());
    assert!(text.contains("DAMAGED"), "{text}");
    wait_repaired(&trio, follower, "key5", &value(5));
    wait_rewritten(&damaged);
    // The leader: it hands leadership over, then does the same as a follower.
    let damaged = rot_on(&trio, leader, b"value 9 vvvv");
    let refused: redis::RedisResult<Option<String>> = trio.con(leader).get("key9");
    assert!(format!("{:?}", refused.unwrap_err()).contains("DAMAGED"));
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while trio.try_status(leader).is_none_or(|s| s["replication"]["role"] == "leader") {
        assert!(Instant::now() < deadline, "the damaged leader never handed over:\n{}", trio.nodes[leader].log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let new = trio.leader_among(&others);
    wait_repaired(&trio, leader, "key9", &value(9));
    wait_rewritten(&damaged);
    assert_eq!(trio.status(leader)["replication"]["rolled_back"], 0, "a handover cuts nothing");
    let (ok, out, err) = trio.replikv(&["check", "--timeout-secs", "20"]);
    assert!(ok, "the replicas hold the same data after both repairs (leader n{}):\n{out}{err}", new + 1);
}
