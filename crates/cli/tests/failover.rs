//! End-to-end failover with three real processes under a write load from the `redis` crate
//! (issue 6): the leader killed with SIGKILL, paused with SIGSTOP past the election timeout,
//! and cut off from both followers by the test-fault links. Each time a new leader is
//! elected, writes resume on it, every acknowledged write is on it, the old leader
//! acknowledges nothing after it lost its majority, and it comes back as a follower.
//!
//! Each test prints the time from the fault to the first write acknowledged by the new leader
//! (`cargo test -p replikv --test failover -- --nocapture`): the figures in the note.

mod common;

use common::trio::Trio;
use redis::Commands;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Replication settings of every test: semi-sync:1 (a write on two of the three nodes, a
/// majority, so it survives any failover; sync would wait for the dead node), and fast
/// failure detection.
const SETTINGS: &str = "acks = \"semi-sync:1\"\nack_timeout_ms = 2000\nheartbeat_ms = 50\nelection_timeout_ms = 300";

/// The election timeout above, for the printed figures.
const ELECTION_TIMEOUT_MS: u64 = 300;

/// Writes one writer issues at most.
const WRITES_PER_WRITER_MAX: usize = 20_000;

/// One acknowledged write.
#[derive(Clone, Debug)]
struct Acked {
    key: String,
    value: String,
    /// The node that acknowledged it.
    node: usize,
    /// When it was sent.
    sent: Instant,
    /// When the acknowledgement came.
    at: Instant,
}

/// What the writers saw.
#[derive(Default)]
struct Seen {
    acked: Vec<Acked>,
    /// Error replies, by text.
    errors: Vec<String>,
}

/// The node a READONLY error names (`The leader is n2 at ...`).
fn named_leader(error: &str) -> Option<usize> {
    let rest = error.split("The leader is n").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse::<usize>().ok().map(|n| n - 1)
}

/// A writer: sets `tag:w:n` keys on the node it believes leads, following READONLY
/// redirects, trying the next node on a refusal without a leader, a broken connection or a
/// reply that takes over a second (a stopped node), until `stop`.
fn writer(urls: &[String], w: usize, tag: &str, stop: &AtomicBool, seen: &Mutex<Seen>) {
    let mut target = 0;
    let mut con: Option<redis::Connection> = None;
    for n in 0..WRITES_PER_WRITER_MAX {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if con.is_none() {
            let client = redis::Client::open(urls[target].as_str()).unwrap();
            match client.get_connection_with_timeout(Duration::from_secs(1)) {
                Ok(c) => {
                    c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                    con = Some(c);
                }
                Err(_) => {
                    target = (target + 1) % urls.len();
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
        }
        let (key, value) = (format!("{tag}:{w}:{n}"), format!("v{n}"));
        let sent = Instant::now();
        match con.as_mut().expect("connected").set::<_, _, String>(&key, &value) {
            Ok(_) => seen.lock().unwrap().acked.push(Acked { key, value, node: target, sent, at: Instant::now() }),
            Err(e) => {
                let text = e.to_string();
                let next = named_leader(&text).unwrap_or((target + 1) % urls.len());
                if next != target || e.is_io_error() || e.is_timeout() {
                    con = None;
                    target = next;
                }
                seen.lock().unwrap().errors.push(text);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Runs `writers` writers while `during` injects a fault; returns what they saw. `during`
/// gets the time the load started and returns once the test has seen enough.
fn under_load(trio: &Trio, tag: &str, during: impl FnOnce(&Mutex<Seen>)) -> Seen {
    let urls: Vec<String> = trio.nodes.iter().map(|n| n.url()).collect();
    let stop = AtomicBool::new(false);
    let seen = Mutex::new(Seen::default());
    /// Stops the writers however `during` ends, a failed assertion included.
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    std::thread::scope(|scope| {
        for w in 0..2 {
            let (urls, stop, seen) = (&urls, &stop, &seen);
            scope.spawn(move || writer(urls, w, tag, stop, seen));
        }
        let _stop = StopOnDrop(&stop);
        during(&seen);
    });
    seen.into_inner().unwrap()
}

/// Waits (bounded) until a write is acknowledged after `since` by a node other than `old`;
/// returns how long after `since` that was.
fn first_write_elsewhere(trio: &Trio, seen: &Mutex<Seen>, old: usize, since: Instant) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(a) = seen.lock().unwrap().acked.iter().find(|a| a.node != old && a.at > since) {
            return a.at - since;
        }
        if Instant::now() >= deadline {
            let errors = seen.lock().unwrap().errors.iter().rev().take(5).cloned().collect::<Vec<_>>();
            let statuses: Vec<String> =
                (0..3).map(|i| format!("{:?}", trio.try_status(i).map(|s| s["replication"].clone()))).collect();
            let logs: Vec<String> = (0..3).map(|i| trio.nodes[i].log_text()).collect();
            panic!("no write was acknowledged by a new leader within 30 s; last errors {errors:?}\nstatuses {statuses:#?}\nlogs:\n{}", logs.join("\n-----\n"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every acknowledged write is on node `i`.
fn assert_has_every_acked(trio: &Trio, i: usize, acked: &[Acked]) {
    let mut con = trio.con(i);
    for a in acked {
        let got: Option<String> = con.get(&a.key).unwrap();
        assert_eq!(
            got.as_deref(),
            Some(a.value.as_str()),
            "n{} lacks acknowledged {} (acked by n{})",
            i + 1,
            a.key,
            a.node + 1
        );
    }
}

/// After the old leader is back: one leader, every replica the same (`replikv check`), the old
/// leader a follower of the new one.
fn assert_rejoined(trio: &Trio, old: usize, new: usize) {
    assert_eq!(trio.leader(), new, "the new leader keeps leading when the old one returns");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, stdout, stderr) = trio.replikv(&["check", "--timeout-secs", "20"]);
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "replicas never became the same:\n{stdout}{stderr}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = trio.status(old);
    assert_eq!(status["replication"]["role"], "follower", "{status}");
    assert_eq!(status["replication"]["leader"]["id"], format!("n{}", new + 1), "{status}");
}

/// The writes of `seen` sent after `since` and acknowledged by node `node`.
fn acked_by_after(seen: &Seen, node: usize, since: Instant) -> Vec<&Acked> {
    seen.acked.iter().filter(|a| a.node == node && a.sent > since).collect()
}

#[test]
fn the_leader_killed_with_sigkill_is_replaced_and_nothing_acknowledged_is_lost() {
    let mut trio = Trio::start(SETTINGS, &[]);
    let old = trio.leader();
    let mut killed_at = Instant::now();
    let mut failover = Duration::ZERO;
    let seen = under_load(&trio, "kill", |seen| {
        std::thread::sleep(Duration::from_millis(500));
        killed_at = Instant::now();
        trio.nodes[old].signal(libc::SIGKILL);
        failover = first_write_elsewhere(&trio, seen, old, killed_at);
        std::thread::sleep(Duration::from_millis(500));
    });
    eprintln!(
        "failover after SIGKILL: first write on the new leader {} ms after the kill (election timeout {ELECTION_TIMEOUT_MS} ms)",
        failover.as_millis()
    );
    trio.nodes[old].wait_exit(Duration::from_secs(10));
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let new = trio.leader_among(&others);
    assert!(seen.acked.len() > 20, "the load got work done: {} writes", seen.acked.len());
    assert_has_every_acked(&trio, new, &seen.acked);
    trio.nodes[old].restart();
    assert_rejoined(&trio, old, new);
    assert_has_every_acked(&trio, old, &seen.acked);
}

#[test]
fn the_leader_paused_past_the_election_timeout_steps_down_when_it_resumes() {
    let trio = Trio::start(SETTINGS, &[]);
    let old = trio.leader();
    let mut stopped_at = Instant::now();
    let mut failover = Duration::ZERO;
    let seen = under_load(&trio, "stop", |seen| {
        std::thread::sleep(Duration::from_millis(500));
        stopped_at = Instant::now();
        trio.nodes[old].signal(libc::SIGSTOP);
        failover = first_write_elsewhere(&trio, seen, old, stopped_at);
        std::thread::sleep(Duration::from_millis(1_000));
        trio.nodes[old].signal(libc::SIGCONT);
        std::thread::sleep(Duration::from_millis(1_000));
    });
    eprintln!(
        "failover after SIGSTOP: first write on the new leader {} ms after the stop (election timeout {ELECTION_TIMEOUT_MS} ms)",
        failover.as_millis()
    );
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let new = trio.leader_among(&others);
    // The paused leader lost its majority when it stopped: it acknowledges no write sent after.
    // (One sent before may still be acknowledged after it resumes, by acknowledgements its
    // followers sent before the new election: it is on a majority, and checked below.)
    let late = acked_by_after(&seen, old, stopped_at);
    assert!(late.is_empty(), "the old leader acknowledged writes after it was paused: {late:?}");
    assert_has_every_acked(&trio, new, &seen.acked);
    assert_rejoined(&trio, old, new);
    assert_has_every_acked(&trio, old, &seen.acked);
}

#[test]
fn the_leader_cut_off_from_both_followers_is_replaced_and_rejoins_after_heal() {
    let trio = Trio::start(SETTINGS, &["--test-faults"]);
    let old = trio.leader();
    let name = format!("n{}", old + 1);
    let mut cut_at = Instant::now();
    let mut failover = Duration::ZERO;
    let seen = under_load(&trio, "cut", |seen| {
        std::thread::sleep(Duration::from_millis(500));
        let (ok, out, err) = trio.replikv(&["fault", "partition", &name]);
        assert!(ok, "partition: {out}{err}");
        cut_at = Instant::now(); // every link is cut once the command returns
        failover = first_write_elsewhere(&trio, seen, old, cut_at);
        // The old leader steps down on its own, unable to reach a majority.
        let deadline = Instant::now() + Duration::from_secs(30);
        while trio.status(old)["replication"]["role"] == "leader" {
            assert!(Instant::now() < deadline, "the cut-off leader never stepped down");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        let (ok, out, err) = trio.replikv(&["fault", "heal"]);
        assert!(ok, "heal: {out}{err}");
        std::thread::sleep(Duration::from_millis(500));
    });
    eprintln!(
        "failover after a partition: first write on the new leader {} ms after the cut (election timeout {ELECTION_TIMEOUT_MS} ms)",
        failover.as_millis()
    );
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let new = trio.leader_among(&others);
    let late = acked_by_after(&seen, old, cut_at);
    assert!(late.is_empty(), "the cut-off leader acknowledged writes: {late:?}");
    assert_has_every_acked(&trio, new, &seen.acked);
    assert_rejoined(&trio, old, new);
    assert_has_every_acked(&trio, old, &seen.acked);
}

#[test]
fn replikv_failover_hands_over_under_load_and_forwarding_clients_see_a_pause_not_errors() {
    // A planned handover needs no election timeout this short: a longer one keeps a busy
    // machine from electing someone else while the command runs.
    let settings = SETTINGS.replace("election_timeout_ms = 300", "election_timeout_ms = 1500");
    assert_ne!(settings, SETTINGS);
    let trio = Trio::start(&format!("{settings}\nforward_writes = true"), &[]);
    let old = trio.leader();
    let (ok, out, err) = trio.replikv(&["failover", "--dry-run"]);
    assert!(ok, "dry run: {out}{err}");
    assert!(out.contains("would win the election") && out.contains("replikv failover --to"), "{out}");
    let target = (old + 2) % 3;
    let name = format!("n{}", target + 1);
    let mut handed_over = Duration::ZERO;
    let seen = under_load(&trio, "handover", |_| {
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        let (ok, out, err) = trio.replikv(&["failover", "--to", &name, "--timeout-ms", "5000"]);
        handed_over = started.elapsed();
        assert!(ok, "failover: {out}{err}");
        assert!(out.contains(&format!("{name} leads epoch")), "{out}");
        std::thread::sleep(Duration::from_millis(300));
    });
    eprintln!("replikv failover --to {name}: {} ms from the command to the new leader", handed_over.as_millis());
    assert_eq!(trio.leader(), target);
    assert!(seen.errors.is_empty(), "with forward_writes the writers see a pause, not errors: {:?}", seen.errors);
    assert!(seen.acked.iter().any(|a| a.at > Instant::now() - Duration::from_millis(250)), "writes go on after");
    assert_has_every_acked(&trio, target, &seen.acked);
    assert_rejoined(&trio, old, target);
    let status = trio.status(old);
    assert_eq!(status["replication"]["rolled_back"], 0, "a planned handover cuts nothing: {status}");
}

#[test]
fn a_dry_run_names_the_follower_that_would_win_and_the_acknowledged_writes_it_lacks() {
    // Elections slow enough that none happens during the test.
    let trio = Trio::start("acks = \"async\"\nheartbeat_ms = 50\nelection_timeout_ms = 60000", &["--test-faults"]);
    let mut con = trio.con(0);
    let _: String = con.set("before", "1").unwrap();
    for i in [1, 2] {
        trio.wait_follower(i, "caught up", |f| f["lag_records"] == 0 && f["acked_lsn"].as_u64() > Some(0));
    }
    let (ok, out, err) = trio.replikv(&["fault", "partition", "n1", "--one-way"]);
    assert!(ok, "{out}{err}");
    for key in ["lost-a", "lost-b"] {
        let ok: String = con.set(key, "1").unwrap();
        assert_eq!(ok, "OK", "async: acknowledged by the leader alone");
    }
    let (ok, out, err) = trio.replikv(&["failover", "--dry-run"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("would win the election") && out.contains("lacks records"), "{out}");
    assert!(out.contains("lost-a") && out.contains("lost-b") && out.contains("rollback log"), "{out}");
    assert!(!out.contains("before"), "what the followers hold is not at risk: {out}");
    let (ok, out, err) = trio.replikv(&["fault", "heal"]);
    assert!(ok, "{out}{err}");
}

#[test]
fn replikv_check_compares_against_the_new_leader_names_the_dead_one_and_needs_a_leader() {
    let mut trio = Trio::start(SETTINGS, &[]);
    assert_eq!(trio.leader(), 0, "n1 leads a new cluster");
    let mut con = trio.con(0);
    for i in 0..50 {
        let _: String = con.set(format!("before:{i}"), i).unwrap();
    }
    trio.nodes[0].kill9();
    let new = trio.leader_among(&[1, 2]);
    let _: String = trio.con(new).set("after", "1").unwrap();
    let (ok, out, err) = trio.replikv(&["check", "--timeout-secs", "20"]);
    assert!(ok, "with n1 down, n2 and n3 are compared and the same:\n{out}{err}");
    let leader = format!("n{}", new + 1);
    let follower = format!("n{}", (3 - new) + 1); // the other of indexes 1 and 2
    let line = |id: &str| out.lines().find(|l| l.starts_with(&format!("{id} "))).unwrap_or_default().to_string();
    assert!(line(&leader).ends_with("reference"), "the new leader is the reference:\n{out}");
    assert!(line(&follower).ends_with("same"), "the other follower is compared with it:\n{out}");
    assert!(line("n1").ends_with("down"), "n1 is named as down:\n{out}");
    assert!(out.contains("n1 did not answer"), "{out}");
    let (ok, json, err) = trio.replikv(&["check", "-o", "json"]);
    assert!(ok, "{json}{err}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!((json["ok"].as_bool(), json["leader"].as_str()), (Some(true), Some(leader.as_str())), "{json}");
    // The new leader down too: one node of three cannot elect, and nothing is compared.
    trio.nodes[new].kill9();
    let (code, out, err) = trio.replikv_code(&["check", "--timeout-secs", "1"]);
    assert_eq!(code, Some(2), "no leader: the check could not be made:\n{out}{err}");
    assert!(err.contains("no node leads"), "{err}");
}

/// Sends SIGCONT to the nodes it holds when dropped, also when an assertion failed.
struct Resume<'a>(&'a Trio, Vec<usize>);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        for &i in &self.1 {
            self.0.nodes[i].signal(libc::SIGCONT);
        }
    }
}

#[test]
fn leader_reads_under_a_lease_skip_the_round_trip_and_the_lease_ends_with_the_followers() {
    // Without auto_failover the leader never steps down: only the lease's own end stops it.
    let trio = Trio::start(&format!("{SETTINGS}\nread_lease = true\nauto_failover = false"), &[]);
    let leader = trio.leader();
    let mut con = trio.con(leader);
    let _: () = con.set("leased", "1").unwrap();
    let reads = 200;
    for _ in 0..reads {
        let value: String = con.get("leased").unwrap();
        assert_eq!(value, "1");
    }
    let status = trio.status(leader);
    let lease_reads = status["replication"]["lease_reads"].as_u64().unwrap();
    // Nearly all: a heartbeat held up past the lease (a loaded machine) sends a read the
    // read-index way.
    assert!(lease_reads >= reads / 2, "{lease_reads} of {reads} reads under the lease: {status}");
    let info: String = redis::cmd("INFO").arg("replication").query(&mut con).unwrap();
    assert!(info.contains("replikv_lease_reads:") && info.contains("replikv_read_lease_ms_left:"), "{info}");

    // Both followers stop answering: the lease runs out within the election timeout, and a
    // read waits for a round no majority echoes, then fails.
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let _resume = Resume(&trio, others.clone());
    for &f in &others {
        trio.nodes[f].signal(libc::SIGSTOP);
    }
    std::thread::sleep(Duration::from_millis(2 * ELECTION_TIMEOUT_MS));
    let status = trio.status(leader);
    assert_eq!(status["replication"]["role"], "leader", "{status}");
    assert_eq!(status["replication"]["read_lease_ms_left"], 0, "{status}");
    let read: redis::RedisResult<String> = con.get("leased");
    let error = read.expect_err("no lease and no majority: no answer").to_string();
    assert!(error.contains("could not confirm"), "{error}");
}
