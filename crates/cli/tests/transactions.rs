//! End-to-end tests of transactions and databases: real `replikv` processes on 127.0.0.1,
//! driven by the `redis` crate as a program written for Redis would drive them.

mod common;

use common::trio::Trio;
use common::Node;
use redis::{Commands, Connection};
use std::time::{Duration, Instant};

/// A connection to `node` in database `db` (the crate sends SELECT when it connects).
fn con(node: &Node, db: u32) -> Connection {
    let client = redis::Client::open(format!("{}/{db}", node.url())).unwrap();
    let con = client.get_connection_with_timeout(Duration::from_secs(10)).unwrap();
    con.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    con
}

#[test]
fn a_pipeline_transaction_is_atomic_and_discard_and_watch_behave_as_redis() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n1"), &[]);
    let mut a = con(&node, 0);
    let mut b = con(&node, 0);

    // redis-rs `pipe().atomic()`: MULTI, the commands, EXEC, one array of replies.
    let (set, incr, get): (String, i64, String) =
        redis::pipe().atomic().set("k", 5).incr("k", 1).get("k").query(&mut a).unwrap();
    assert_eq!((set.as_str(), incr, get.as_str()), ("OK", 6, "6"));

    // DISCARD applies nothing.
    let _: () = redis::cmd("MULTI").query(&mut a).unwrap();
    let queued: String = redis::cmd("SET").arg("d").arg(1).query(&mut a).unwrap();
    assert_eq!(queued, "QUEUED");
    let _: () = redis::cmd("DISCARD").query(&mut a).unwrap();
    assert_eq!(a.get::<_, Option<String>>("d").unwrap(), None);

    // WATCH: another connection's write between WATCH and EXEC aborts the transaction.
    let _: () = redis::cmd("WATCH").arg("k").query(&mut a).unwrap();
    let _: () = b.set("k", "theirs").unwrap();
    let aborted: Option<(String,)> = redis::pipe().atomic().set("k", "mine").query(&mut a).unwrap();
    assert_eq!(aborted, None, "EXEC answers nil");
    assert_eq!(a.get::<_, String>("k").unwrap(), "theirs", "and applies nothing");

    // Without a conflicting write the watched transaction commits.
    let _: () = redis::cmd("WATCH").arg("k").query(&mut a).unwrap();
    let done: Option<(String,)> = redis::pipe().atomic().set("k", "mine").query(&mut a).unwrap();
    assert_eq!(done, Some(("OK".to_string(),)));

    // A queueing error aborts the whole transaction.
    let _: () = redis::cmd("MULTI").query(&mut a).unwrap();
    let _: String = redis::cmd("SET").arg("q").arg(1).query(&mut a).unwrap();
    let err = redis::cmd("NOSUCH").query::<()>(&mut a).unwrap_err();
    assert!(err.to_string().contains("unknown command"), "{err}");
    let err = redis::cmd("EXEC").query::<()>(&mut a).unwrap_err();
    assert_eq!(err.kind(), redis::ErrorKind::ExecAbortError, "{err}");
    assert_eq!(a.get::<_, Option<String>>("q").unwrap(), None);
}

#[test]
fn a_race_of_watched_increments_loses_no_increment() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n1"), &[]);
    let url = node.url();
    // Each of two clients adds 1 to a counter 100 times by read, WATCH, MULTI/SET/EXEC,
    // retrying when EXEC aborts: every increment must land exactly once.
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
                let mut retries = 0;
                for _ in 0..100 {
                    loop {
                        let _: () = redis::cmd("WATCH").arg("counter").query(&mut con).unwrap();
                        let n: i64 = con.get::<_, Option<i64>>("counter").unwrap().unwrap_or(0);
                        let done: Option<(String,)> =
                            redis::pipe().atomic().set("counter", n + 1).query(&mut con).unwrap();
                        if done.is_some() {
                            break;
                        }
                        retries += 1;
                        assert!(retries < 10_000, "a transaction never got through");
                    }
                }
                retries
            })
        })
        .collect();
    let retries: i32 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let mut c = con(&node, 0);
    assert_eq!(c.get::<_, i64>("counter").unwrap(), 200, "{retries} aborted transactions were retried");
}

#[test]
fn databases_keep_their_keys_apart_and_swapdb_and_move_work() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n1"), &["--databases", "4"]);
    let (mut zero, mut two) = (con(&node, 0), con(&node, 2));
    let _: () = zero.set("k", "zero").unwrap();
    let _: () = two.set("k", "two").unwrap();
    assert_eq!(two.get::<_, String>("k").unwrap(), "two");
    let size: i64 = redis::cmd("DBSIZE").query(&mut two).unwrap();
    assert_eq!(size, 1);
    let err = redis::cmd("SELECT").arg(4).query::<()>(&mut zero).unwrap_err();
    assert!(err.to_string().contains("DB index is out of range"), "{err}");
    let _: () = redis::cmd("SWAPDB").arg(0).arg(2).query(&mut zero).unwrap();
    assert_eq!(zero.get::<_, String>("k").unwrap(), "two", "SWAPDB is seen by every connection");
    assert_eq!(two.get::<_, String>("k").unwrap(), "zero");
    let moved: i64 = redis::cmd("MOVE").arg("k").arg(1).query(&mut zero).unwrap();
    assert_eq!(moved, 1);
    assert_eq!(con(&node, 1).get::<_, String>("k").unwrap(), "two");
    let _: () = redis::cmd("FLUSHDB").query(&mut two).unwrap();
    assert_eq!(two.get::<_, Option<String>>("k").unwrap(), None);
    assert_eq!(con(&node, 1).get::<_, String>("k").unwrap(), "two", "FLUSHDB empties one database");
    let databases: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("databases").query(&mut zero).unwrap();
    assert_eq!(databases, ["databases", "4"]);
    // All of it survives a restart: the database map is data.
    drop((zero, two));
    let mut node = node;
    node.terminate();
    node.restart();
    assert_eq!(con(&node, 1).get::<_, String>("k").unwrap(), "two");
    assert_eq!(con(&node, 2).get::<_, Option<String>>("k").unwrap(), None);
    assert_eq!(con(&node, 0).get::<_, Option<String>>("k").unwrap(), None);
}

#[test]
fn followers_apply_transactions_and_large_requests_whole_while_readers_race_them() {
    // A debug build applies 25,000 keys slowly (over a second): generous timeouts, so that
    // it is neither refused nor taken for a dead node.
    let trio = Trio::start("acks = \"sync\"\nack_timeout_ms = 20000\nelection_timeout_ms = 20000", &[]);
    let leader = trio.leader();
    let follower = (leader + 1) % 3;
    // A reader on a follower, racing the applies: every MGET of the transaction's keys sees
    // one transaction's values or the next's, never a mix, and DBSIZE of database 1 sees the
    // big MSET's keys all or none.
    let keys = ["t.a", "t.b", "t.c"];
    let url = trio.nodes[follower].url();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut con = redis::Client::open(url.as_str()).unwrap().get_connection().unwrap();
            let mut big = redis::Client::open(format!("{url}/1")).unwrap().get_connection().unwrap();
            let (mut reads, mut sizes) = (0, std::collections::BTreeSet::new());
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                let values: Vec<Option<String>> = con.mget(&keys).unwrap();
                let first = &values[0];
                assert!(values.iter().all(|v| v == first), "a reader saw half a transaction: {values:?}");
                let size: i64 = redis::cmd("DBSIZE").query(&mut big).unwrap();
                sizes.insert(size);
                reads += 1;
            }
            (reads, sizes)
        })
    };
    let mut con = trio.con(leader);
    for round in 0..200 {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for key in keys {
            pipe.set(key, round);
        }
        let _: () = pipe.query(&mut con).unwrap();
    }
    // Over 20,000 keys: the request spans several records of the log.
    const BIG_KEYS: usize = 25_005;
    let pairs: Vec<(String, u32)> = (0..BIG_KEYS).map(|i| (format!("big.{i}"), 1)).collect();
    let mut one = redis::Client::open(format!("{}/1", trio.nodes[leader].url())).unwrap().get_connection().unwrap();
    let _: () = one.mset(&pairs).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, sizes) = reader.join().unwrap();
    assert!(reads > 10, "the reader read {reads} times");
    assert!(sizes.iter().all(|&s| s == 0 || s == BIG_KEYS as i64), "DBSIZE saw part of the MSET: {sizes:?}");
    assert!(sizes.contains(&(BIG_KEYS as i64)), "the follower applied the MSET (sync): {sizes:?}");
    let mut f = trio.con(follower);
    let values: Vec<String> = f.mget(&keys).unwrap();
    assert_eq!(values, ["199", "199", "199"]);
    let (ok, out, err) = trio.replikv(&["check"]);
    assert!(ok, "replikv check: {out}{err}");
}

/// Writes `bytes` on `stream` and reads until `want` replies' worth of bytes arrived (`\r\n`
/// lines counted), bounded by the stream's read timeout.
fn exchange(stream: &mut std::net::TcpStream, bytes: &[u8], lines: usize) -> String {
    use std::io::{Read, Write};
    stream.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while out.windows(2).filter(|w| w == b"\r\n").count() < lines {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn unwatch_and_discard_pipelined_after_watch_forget_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n1"), &[]);
    let mut other = con(&node, 0);
    for forget in ["UNWATCH\r\n", "MULTI\r\nDISCARD\r\n"] {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", node.resp_port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // WATCH and what forgets it in one write: one round of the connection.
        let replies = forget.matches("\r\n").count() + 1;
        let got = exchange(&mut stream, format!("WATCH k\r\n{forget}").as_bytes(), replies);
        assert!(got.starts_with("+OK\r\n"), "{got:?}");
        let _: () = other.set("k", "theirs").unwrap();
        let got = exchange(&mut stream, b"MULTI\r\nSET k mine\r\nEXEC\r\n", 4);
        assert_eq!(got, "+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n", "after {forget:?} nothing is watched");
        let info: String = redis::cmd("CLIENT").arg("LIST").query(&mut other).unwrap();
        assert!(info.lines().all(|l| l.contains(" watch=0 ")), "{info}");
    }
}

#[test]
fn a_redis_program_runs_unchanged_against_a_cluster() {
    let trio = Trio::start("acks = \"sync\"", &[]);
    let leader = trio.leader();
    let follower = (leader + 1) % 3;
    let mut app = con(&trio.nodes[leader], 2);
    // A session store: SETEX, GETEX refreshing the deadline, EXPIRE NX, TTL.
    let _: () = redis::cmd("SETEX").arg("session:1").arg(60).arg("ann").query(&mut app).unwrap();
    let name: String = redis::cmd("GETEX").arg("session:1").arg("EX").arg(120).query(&mut app).unwrap();
    assert_eq!(name, "ann");
    let set: i64 = redis::cmd("EXPIRE").arg("session:1").arg(5).arg("NX").query(&mut app).unwrap();
    assert_eq!(set, 0, "NX: it already has a deadline");
    let ttl: i64 = app.ttl("session:1").unwrap();
    assert!((118..=120).contains(&ttl), "{ttl}");
    // Counters and a transfer done in a transaction, retried under WATCH.
    let _: () = app.mset(&[("acct:a", 100), ("acct:b", 0)]).unwrap();
    loop {
        let _: () = redis::cmd("WATCH").arg("acct:a").query(&mut app).unwrap();
        let balance: i64 = app.get("acct:a").unwrap();
        let done: Option<(i64, i64)> =
            redis::pipe().atomic().decr("acct:a", 30).incr("acct:b", 30).query(&mut app).unwrap();
        if let Some((a, b)) = done {
            assert_eq!((a, b), (balance - 30, 30));
            break;
        }
    }
    // Keys renamed and copied into another database.
    let _: () = app.rename("acct:b", "acct:c").unwrap();
    let copied: i64 = redis::cmd("COPY").arg("acct:c").arg("acct:c").arg("DB").arg(3).query(&mut app).unwrap();
    assert_eq!(copied, 1);
    let _: () = redis::cmd("SETRANGE").arg("note").arg(6).arg("world").query(&mut app).unwrap();
    let note: Vec<u8> = app.get("note").unwrap();
    assert_eq!(note, b"\0\0\0\0\0\0world");
    // The follower has it all, database by database (sync: acknowledged means it is durable
    // there, and applied once the leader's durable end reaches it).
    let last = trio.status(trio.leader())["replication"]["last_lsn"].as_u64().unwrap();
    trio.wait_applied(follower, last);
    let mut two = con(&trio.nodes[follower], 2);
    let values: Vec<Option<i64>> = two.mget(&["acct:a", "acct:b", "acct:c"]).unwrap();
    assert_eq!(values, [Some(70), None, Some(30)]);
    assert_eq!(con(&trio.nodes[follower], 3).get::<_, i64>("acct:c").unwrap(), 30);
    assert_eq!(con(&trio.nodes[follower], 0).get::<_, Option<i64>>("acct:c").unwrap(), None);
    let info: String = redis::cmd("INFO").arg("keyspace").query(&mut two).unwrap();
    assert!(info.contains("db2:keys=4,expires=1") && info.contains("db3:keys=1,expires=0"), "{info}");
    let (ok, out, err) = trio.replikv(&["check"]);
    assert!(ok, "replikv check: {out}{err}");
}

#[test]
fn commands_pipelined_after_an_exec_that_selects_run_in_its_database() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n1"), &[]);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", node.resp_port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let got = exchange(&mut stream, b"MULTI\r\nSELECT 5\r\nSET a 1\r\nEXEC\r\nGET a\r\nSELECT 0\r\nGET a\r\n", 10);
    assert_eq!(
        got, "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n+OK\r\n$1\r\n1\r\n+OK\r\n$-1\r\n",
        "GET a ran in database 5"
    );
}
