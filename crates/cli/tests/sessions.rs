//! End-to-end session guarantees, 3 processes, async, n3's links slowed by the test fault
//! table: without a guarantee a read on n3 right after a write on the leader is stale (the
//! lecture's replication lag); with read-your-writes it never is; a client alternating between
//! n2 and n3 under monotonic reads never goes back in time, and without it does. The same in
//! a leaderless trio (n3 w1 r1): a coordinator holds a session's read until replicas' replies
//! cover the key's context the session wrote or saw.

mod common;

use common::trio::Trio;
use redis::{Commands, Connection};

const FAULTS: &[&str] = &["--test-faults"];

fn token(con: &mut Connection) -> String {
    redis::cmd("REPLIKV.SESSION").query(con).unwrap()
}

fn resume(con: &mut Connection, token: &str) {
    let ok: String = redis::cmd("REPLIKV.SESSION").arg("RESUME").arg(token).query(con).unwrap();
    assert_eq!(ok, "OK");
}

fn guarantee(con: &mut Connection, guarantee: &str) {
    let ok: String = redis::cmd("REPLIKV.GUARANTEE").arg(guarantee).query(con).unwrap();
    assert_eq!(ok, "OK");
}

/// Five writes of `k` on `writer`, each read back at once on `reader`: how many reads missed
/// the write just made.
fn stale_reads(writer: &mut Connection, reader: &mut Connection) -> usize {
    let mut stale = 0;
    for i in 0..5 {
        let _: () = writer.set("k", format!("none{i}")).unwrap();
        let got: Option<String> = reader.get("k").unwrap();
        stale += usize::from(got.as_deref() != Some(&format!("none{i}")[..]));
    }
    stale
}

fn slow_n3(trio: &Trio) {
    let (ok, out, err) = trio.replikv(&["fault", "delay", "n3", "300ms"]);
    assert!(ok, "delay: {out}{err}");
}

#[test]
fn read_your_writes_on_a_lagging_follower_waits_where_none_reads_stale() {
    let trio = Trio::start("acks = \"async\"", FAULTS);
    trio.wait_streaming(&[1, 2]);
    slow_n3(&trio);
    let mut leader = trio.con(0);
    let mut n3 = trio.con(2);
    // No guarantee: the lecture's stale read.
    assert!(
        stale_reads(&mut leader, &mut n3) > 0,
        "n3, 300 ms behind, never answered stale: the fault did not slow it"
    );
    // Read-your-writes, the session carried from the leader to n3 by its token (a session
    // keeps positions while it has a guarantee).
    guarantee(&mut leader, "read-your-writes");
    guarantee(&mut n3, "read-your-writes");
    for i in 0..5 {
        let _: () = leader.set("k", format!("ryw{i}")).unwrap();
        resume(&mut n3, &token(&mut leader));
        let got: Option<String> = n3.get("k").unwrap();
        assert_eq!(got.as_deref(), Some(&format!("ryw{i}")[..]), "read {i} on n3 did not see the session's write");
    }
}

#[test]
fn a_client_alternating_between_followers_never_goes_back_under_monotonic_reads() {
    let trio = Trio::start("acks = \"async\"", FAULTS);
    trio.wait_streaming(&[1, 2]);
    slow_n3(&trio);
    let mut leader = trio.con(0);
    // Reads of a counter the leader keeps raising, alternately on n2 (current) and n3 (300 ms
    // behind), the session's token carried between the two connections.
    let run = |monotonic: bool, leader: &mut Connection| -> Vec<i64> {
        let (mut n2, mut n3) = (trio.con(1), trio.con(2));
        if monotonic {
            guarantee(&mut n2, "monotonic-reads");
            guarantee(&mut n3, "monotonic-reads");
        }
        let mut seen = Vec::new();
        for i in 0..20 {
            let _: i64 = leader.incr("counter", 1).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            let (from, to) = if i % 2 == 0 { (&mut n3, &mut n2) } else { (&mut n2, &mut n3) };
            let got: Option<i64> = to.get("counter").unwrap();
            seen.push(got.unwrap_or(0));
            resume(from, &token(to));
        }
        seen
    };
    let plain = run(false, &mut leader);
    assert!(plain.windows(2).any(|w| w[1] < w[0]), "without the guarantee, no read went back: {plain:?}");
    let monotonic = run(true, &mut leader);
    assert!(monotonic.windows(2).all(|w| w[1] >= w[0]), "a read went back in time: {monotonic:?}");
}

#[test]
fn bad_tokens_and_names_are_refused_and_readfrom_leader_reads_on_the_leader() {
    let trio = Trio::start("acks = \"async\"", FAULTS);
    trio.wait_streaming(&[1, 2]);
    let (ok, out, err) = trio.replikv(&["fault", "delay", "n2", "300ms"]);
    assert!(ok, "delay: {out}{err}");
    let mut con = trio.con(1);
    let err = redis::cmd("REPLIKV.SESSION").arg("RESUME").arg("nonsense").query::<String>(&mut con).unwrap_err();
    assert!(err.to_string().contains("is not a session token"), "{err}");
    let err = redis::cmd("REPLIKV.GUARANTEE").arg("strong").query::<String>(&mut con).unwrap_err();
    assert!(err.to_string().contains("use none, read-your-writes"), "{err}");
    let now: String = redis::cmd("REPLIKV.GUARANTEE").query(&mut con).unwrap();
    assert_eq!(now, "none", "the cluster's default");
    let ok: String = redis::cmd("REPLIKV.READFROM").arg("leader").query(&mut con).unwrap();
    assert_eq!(ok, "OK");
    let mut leader = trio.con(0);
    for i in 0..5 {
        let _: () = leader.set("x", i).unwrap();
        let got: Option<i64> = con.get("x").unwrap();
        assert_eq!(got, Some(i), "a read on n2, 300 ms behind, answered by the leader");
    }
}

#[test]
fn a_read_pipelined_after_a_forwarded_write_sees_it_under_read_your_writes() {
    let trio = Trio::start("acks = \"async\"\nforward_writes = true", FAULTS);
    trio.wait_streaming(&[1, 2]);
    slow_n3(&trio);
    let mut n3 = trio.con(2);
    guarantee(&mut n3, "read-your-writes");
    for i in 0..5 {
        // One round: the write goes to the leader through n3, the read waits for it.
        let (ok, got, token): (String, Option<String>, String) = redis::pipe()
            .cmd("SET")
            .arg("k")
            .arg(format!("v{i}"))
            .cmd("GET")
            .arg("k")
            .cmd("REPLIKV.SESSION")
            .query(&mut n3)
            .unwrap();
        assert_eq!(ok, "OK");
        assert_eq!(got.as_deref(), Some(&format!("v{i}")[..]), "the pipelined read missed the write");
        assert!(!token.ends_with("-0-0-0-0-0"), "the token holds the write: {token}");
    }
}

/// An HTTP/1.1 request with extra header lines to 127.0.0.1:`port`: (status, the session
/// header's value if any, body).
fn http_with(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Option<String>, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a header end");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let token = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().starts_with("x-replikv-session:").then(|| l[18..].trim().to_string()));
    (status, token, body.to_string())
}

#[test]
fn http_carries_the_session_in_a_header_in_and_out() {
    let trio = Trio::start("acks = \"async\"", FAULTS);
    trio.wait_streaming(&[1, 2]);
    slow_n3(&trio);
    let (leader, n3) = (trio.nodes[0].http_port(), trio.nodes[2].http_port());
    for i in 0..3 {
        let value = format!("h{i}");
        let ryw = ("x-replikv-guarantee", "read-your-writes");
        let (status, token, body) = http_with(leader, "PUT", "/api/v1/kv/hk", &[ryw], value.as_bytes());
        assert_eq!(status, 200, "{body}");
        let token = token.expect("the response carries the session's token");
        let (status, _, body) = http_with(n3, "GET", "/api/v1/kv/hk", &[ryw, ("x-replikv-session", &token)], b"");
        assert_eq!((status, body.as_str()), (200, value.as_str()), "n3 waited for the session's write");
    }
    let (status, _, body) = http_with(n3, "GET", "/api/v1/kv/hk", &[("x-replikv-session", "garbage")], b"");
    assert!(status == 400 && body.contains("is not a session token"), "{status} {body}");
}

/// Sends one command as a RESP array and returns what arrives until `until` is in it (10 s).
fn raw(stream: &mut std::net::TcpStream, args: &[&str], until: &str) -> String {
    use std::io::{Read, Write};
    let mut frame = format!("*{}\r\n", args.len());
    for a in args {
        frame += &format!("${}\r\n{a}\r\n", a.len());
    }
    stream.write_all(frame.as_bytes()).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(until) {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed; got {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).to_string()
}

#[test]
fn receipts_say_who_answered_from_where_and_how_stale_over_resp3_resp2_and_http() {
    let trio = Trio::start("acks = \"async\"", FAULTS);
    trio.wait_streaming(&[1, 2]);
    let _: () = trio.con(0).set("k", "v").unwrap();
    trio.wait_applied(2, trio.status(0)["replication"]["last_lsn"].as_u64().unwrap());
    // RESP3: an attribute before the reply, which ordinary clients skip.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", trio.nodes[2].resp_port)).unwrap();
    raw(&mut s, &["HELLO", "3"], "proto");
    raw(&mut s, &["REPLIKV.RECEIPTS", "ON"], "+OK\r\n");
    let got = raw(&mut s, &["GET", "k"], "$1\r\nv\r\n");
    assert!(got.starts_with("|1\r\n$7\r\nreceipt\r\n%7\r\n"), "{got:?}");
    for field in
        ["$4\r\nnode\r\n$2\r\nn3\r\n", "$4\r\nrole\r\n$8\r\nfollower\r\n", "behind_records", "behind_ms", "met_by"]
    {
        assert!(got.contains(field), "{field:?} in {got:?}");
    }
    // RESP2: no attributes; REPLIKV.RECEIPT gives the last one.
    let mut con = trio.con(2);
    let ok: String = redis::cmd("REPLIKV.RECEIPTS").arg("ON").query(&mut con).unwrap();
    assert_eq!(ok, "OK");
    guarantee(&mut con, "read-your-writes");
    let _: Option<String> = con.get("k").unwrap();
    let receipt: Vec<String> = redis::cmd("REPLIKV.RECEIPT").query(&mut con).unwrap();
    let field = |name: &str| receipt.iter().position(|f| f == name).map(|i| receipt[i + 1].clone()).unwrap();
    assert_eq!(
        (field("node"), field("role"), field("guarantee")),
        ("n3".into(), "follower".into(), "read-your-writes".into())
    );
    assert_eq!(field("met_by"), "held already");
    // HTTP: a response header.
    let port = trio.nodes[2].http_port();
    let (status, head) = http_head(port, "/api/v1/kv/k", &[("x-replikv-guarantee", "monotonic-reads")]);
    assert_eq!(status, 200);
    assert!(head.contains("x-replikv-receipt: node=n3; role=follower; at="), "{head}");
}

/// A GET with extra headers: (status, the response lowercased: its head, then the body).
fn http_head(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response).to_string();
    let (head, _) = text.split_once("\r\n\r\n").expect("a header end");
    (head.split(' ').nth(1).unwrap().parse().unwrap(), text.to_ascii_lowercase())
}

#[test]
fn a_recorded_history_fails_monotonic_reads_without_the_guarantee_and_passes_with_it() {
    let trio = Trio::start("acks = \"async\"", FAULTS);
    trio.wait_streaming(&[1, 2]);
    slow_n3(&trio);
    let endpoints: Vec<String> = trio.nodes.iter().map(|n| format!("127.0.0.1:{}", n.resp_port)).collect();
    let endpoints = endpoints.join(",");
    let dir = tempfile::tempdir().unwrap();
    let mut verdicts = Vec::new();
    for guarantee in ["none", "monotonic-reads"] {
        let file = dir.path().join(format!("{guarantee}.jsonl"));
        let file = file.to_str().unwrap();
        let args = ["bench", "--endpoints", &endpoints, "--history", file, "-n", "200", "--guarantee", guarantee];
        let run = |args: &[&str]| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_replikv")).args(args).output().unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
            )
        };
        let (code, out) = run(&args);
        assert!(code == Some(0) && out.contains("history: "), "{out}");
        verdicts.push(run(&["verify", file, "--model", "monotonic-reads"]));
    }
    let (none, with) = (&verdicts[0], &verdicts[1]);
    assert!(none.0 == Some(1) && none.1.contains("monotonic-reads FAILS") && none.1.contains("on n3"), "{none:?}");
    assert!(with.0 == Some(0) && with.1.contains("monotonic-reads holds"), "{with:?}");
}

/// A leaderless trio of `replication`, once every node coordinates a read (bounded).
fn leaderless_launch(replication: &str) -> Trio {
    let trio = Trio::launch(replication, FAULTS);
    for i in 0..3 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while redis::cmd("GET").arg("warm-up").query::<Option<String>>(&mut trio.con(i)).is_err() {
            assert!(std::time::Instant::now() < deadline, "n{} never coordinated a read", i + 1);
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    trio
}

/// A leaderless trio, n3 w1 r1 (so a read on n3 answers from n3's own copy), no anti-entropy
/// rounds, n3's links slowed by 300 ms; waits (bounded) until every node coordinates a read.
fn leaderless_trio() -> Trio {
    let trio = leaderless_launch("mode = \"leaderless\"\nn = 3\nw = 1\nr = 1\nanti_entropy_interval_ms = 0");
    slow_n3(&trio);
    trio
}

#[test]
fn leaderless_read_your_writes_waits_for_a_replica_with_the_write_and_its_receipt_says_which() {
    let trio = leaderless_trio();
    let (mut n1, mut n3) = (trio.con(0), trio.con(2));
    // No guarantee: w = 1 acknowledges on n1 alone, r = 1 answers from n3's stale copy.
    assert!(stale_reads(&mut n1, &mut n3) > 0, "n3, 300 ms behind, never answered stale: the fault did not slow it");
    guarantee(&mut n1, "read-your-writes");
    guarantee(&mut n3, "read-your-writes");
    let ok: String = redis::cmd("REPLIKV.RECEIPTS").arg("ON").query(&mut n3).unwrap();
    assert_eq!(ok, "OK");
    let mut waited = 0;
    for i in 0..5 {
        let _: () = n1.set("k", format!("ryw{i}")).unwrap();
        let token = token(&mut n1);
        assert!(token.starts_with("rkv1l-"), "{token}");
        resume(&mut n3, &token);
        let got: Option<String> = n3.get("k").unwrap();
        assert_eq!(got.as_deref(), Some(&format!("ryw{i}")[..]), "read {i} on n3 did not see the session's write");
        let receipt: Vec<String> = redis::cmd("REPLIKV.RECEIPT").query(&mut n3).unwrap();
        let field = |name: &str| receipt.iter().position(|f| f == name).map(|i| receipt[i + 1].clone()).unwrap();
        assert_eq!((field("node"), field("role")), ("n3".into(), "coordinator".into()));
        // Held until a replica had the write: n1 or n2 answered, or n3's own copy caught up.
        assert!(field("replicas").starts_with('n'), "{receipt:?}");
        if field("waited_ms") != "0" {
            waited += 1;
            assert!(
                field("met_by").starts_with("asking again") || field("met_by").starts_with("waiting"),
                "{receipt:?}"
            );
        }
    }
    assert!(waited > 0, "no read was held for the session's write");
    // Over HTTP: the token in a header, the receipt in another.
    let _: () = n1.set("k", "http").unwrap();
    let token = token(&mut n1);
    let headers = [("x-replikv-session", token.as_str()), ("x-replikv-guarantee", "read-your-writes")];
    let (status, head) = http_head(trio.nodes[2].http_port(), "/api/v1/kv/k", &headers);
    assert_eq!(status, 200, "{head}");
    assert!(head.ends_with("\r\n\r\nhttp"), "the session's write, as the body: {head}");
    assert!(head.contains("x-replikv-receipt: node=n3; role=coordinator; replicas="), "{head}");
    assert!(head.contains("x-replikv-session: rkv1l-"), "{head}");
    let (status, head) = http_head(trio.nodes[2].http_port(), "/api/v1/kv/k", &[("x-replikv-guarantee", "all")]);
    assert_eq!(status, 400, "{head}");
    // What a leaderless cluster cannot keep is refused, with the reason.
    let err = redis::cmd("REPLIKV.GUARANTEE").arg("consistent-prefix").query::<String>(&mut n3).unwrap_err();
    assert!(err.to_string().contains("no single order of writes"), "{err}");
    let err = redis::cmd("REPLIKV.READFROM").arg("leader").query::<String>(&mut n3).unwrap_err();
    assert!(err.to_string().contains("no leader"), "{err}");
    let err = redis::cmd("REPLIKV.SESSION").arg("RESUME").arg("rkv1-0-0-0-0-0-0").query::<String>(&mut n3);
    assert!(err.unwrap_err().to_string().contains("names log positions"));
}

#[test]
fn leaderless_monotonic_reads_never_go_back_between_a_current_and_a_lagging_coordinator() {
    let trio = leaderless_trio();
    let mut n1 = trio.con(0);
    // A value n1 keeps raising (w = 1), read alternately through n2 (current) and n3 (300 ms
    // behind; r = 1 answers from its own copy), the session's token carried between the two.
    let run = |monotonic: bool, n1: &mut Connection, key: &str| -> Vec<i64> {
        let (mut n2, mut n3) = (trio.con(1), trio.con(2));
        if monotonic {
            guarantee(&mut n2, "monotonic-reads");
            guarantee(&mut n3, "monotonic-reads");
        }
        let mut seen = Vec::new();
        for i in 1..=20 {
            let _: () = n1.set(key, i).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            let (from, to) = if i % 2 == 0 { (&mut n3, &mut n2) } else { (&mut n2, &mut n3) };
            let got: Option<i64> = to.get(key).unwrap();
            seen.push(got.unwrap_or(0));
            resume(from, &token(to));
        }
        seen
    };
    let plain = run(false, &mut n1, "plain");
    assert!(plain.windows(2).any(|w| w[1] < w[0]), "without the guarantee, no read went back: {plain:?}");
    let monotonic = run(true, &mut n1, "monotonic");
    assert!(monotonic.windows(2).all(|w| w[1] >= w[0]), "a read went back in time: {monotonic:?}");
    // A token asked for in the same pipeline as a read holds what the read saw.
    let mut n2 = trio.con(1);
    guarantee(&mut n2, "monotonic-reads");
    let (value, token): (Option<i64>, String) =
        redis::pipe().cmd("GET").arg("monotonic").cmd("REPLIKV.SESSION").query(&mut n2).unwrap();
    assert!(value.is_some(), "the key was written");
    assert!(token.contains('~'), "the pipelined token misses the read's context: {token}");
}

/// Waits (bounded) until node `i`'s link to node `peer` has nothing queued (what it queued
/// while blocked was discarded), so that clearing the block delivers none of it.
fn drained(trio: &Trio, i: usize, peer: usize) {
    let id = format!("n{}", peer + 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = trio.status(i);
        let link = status["peers"].as_array().unwrap().iter().find(|p| p["id"] == id.as_str()).cloned().unwrap();
        if link["queued"] == 0 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "n{}'s link to {id} never drained: {link}", i + 1);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Waits (bounded) until node `i`'s link to node `peer` is connected.
fn connected(trio: &Trio, i: usize, peer: usize) {
    let id = format!("n{}", peer + 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = trio.status(i);
        let link = status["peers"].as_array().unwrap().iter().find(|p| p["id"] == id.as_str()).cloned().unwrap();
        if link["state"] == "connected" {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "n{}'s link to {id} never connected: {link}", i + 1);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Makes node `i`'s link to node `peer` discard every message, or clears it.
fn block(trio: &Trio, i: usize, peer: usize, blocked: bool) {
    let body = format!(r#"{{"peer": "n{}", "blocked": {blocked}}}"#, peer + 1);
    let (code, answer) = trio.nodes[i].http("PUT", "/api/v1/test/faults", body.as_bytes());
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&answer));
}

#[test]
fn leaderless_http_lists_siblings_in_the_session_not_from_a_stale_replica() {
    let replication =
        "mode = \"leaderless\"\nn = 3\nw = 1\nr = 1\nconflicts = \"siblings\"\nanti_entropy_interval_ms = 0";
    let trio = leaderless_launch(replication);
    // Every link up (r = 1 answers without them), so that what is not blocked arrives.
    for i in 0..3 {
        for peer in (0..3).filter(|p| *p != i) {
            connected(&trio, i, peer);
        }
    }
    // n1 and n2 write k concurrently (their links to each other cut): the session's "a" on
    // n1, another client's "b" on n2, which reaches n3 too. n1 never reaches n3.
    block(&trio, 0, 1, true);
    block(&trio, 1, 0, true);
    block(&trio, 0, 2, true);
    let mut n1 = trio.con(0);
    guarantee(&mut n1, "read-your-writes");
    let _: () = n1.set("k", "a").unwrap();
    let token = token(&mut n1);
    let _: () = trio.con(1).set("k", "b").unwrap();
    drained(&trio, 1, 2);
    block(&trio, 0, 1, false);
    block(&trio, 1, 0, false);
    // A read through n1 merges both and repairs n2; n3 keeps "b" alone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let _ = redis::cmd("GET").arg("k").query::<Option<String>>(&mut trio.con(0));
        // Looked at through n2 with its repairs to n3 discarded: n3 must keep "b" alone.
        block(&trio, 1, 2, true);
        let mut n2 = trio.con(1);
        let _: String = redis::cmd("REPLIKV.CONSISTENCY").arg("1,1").query(&mut n2).unwrap();
        let (_, values): (String, Vec<Option<String>>) =
            redis::cmd("REPLIKV.SIBLINGS").arg("k").query(&mut n2).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200)); // its repair leaves, discarded
        drained(&trio, 1, 2);
        block(&trio, 1, 2, false);
        if values.contains(&Some("a".into())) && values.contains(&Some("b".into())) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "n2 never held both values: {values:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (_, on_n3): (String, Vec<Option<String>>) = {
        let mut n3 = trio.con(2);
        let _: String = redis::cmd("REPLIKV.CONSISTENCY").arg("1,1").query(&mut n3).unwrap();
        redis::cmd("REPLIKV.SIBLINGS").arg("k").query(&mut n3).unwrap()
    };
    assert_eq!(on_n3, vec![Some("b".to_string())], "n3 was to keep the stale state");
    // GET over HTTP on n3 in the session: the read waits for a replica with "a", finds
    // siblings, and lists them in the session too (a plain listing answers from n3: "b" alone).
    let headers = [("x-replikv-session", token.as_str()), ("x-replikv-guarantee", "read-your-writes")];
    let (status, response) = http_head(trio.nodes[2].http_port(), "/api/v1/kv/k", &headers);
    assert_eq!(status, 300, "{response}");
    assert!(response.contains(r#""a""#) && response.contains(r#""b""#), "both values: {response}");
    assert!(response.contains("x-replikv-session: rkv1l-"), "{response}");
}
