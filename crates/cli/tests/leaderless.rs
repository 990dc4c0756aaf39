//! Leaderless replication end to end (issue 13 point 18): three real `replikv node` processes
//! with n = 3, w = 2, r = 2, driven through the `redis` crate, with nodes killed (SIGKILL) and
//! paused (SIGSTOP).

mod common;

use common::trio::Trio;
use redis::{Connection, Value};
use std::time::{Duration, Instant};

/// The `[replication]` table of every test here, plus `extra` lines. Anti-entropy starts no
/// rounds: these tests watch reads repair what a replica missed, which rounds would repair
/// first (`leaderless_anti_entropy.rs` tests them).
fn leaderless(extra: &str) -> String {
    format!("mode = \"leaderless\"\nn = 3\nw = 2\nr = 2\nack_timeout_ms = 1500\nanti_entropy_interval_ms = 0\n{extra}")
}

/// Starts the trio (with test faults on) and waits (bounded) until every node coordinates a
/// quorum read, which needs its peer links up.
fn start(extra: &str) -> Trio {
    let trio = Trio::launch(&leaderless(extra), &["--test-faults"]);
    for i in 0..3 {
        retry(&format!("n{} reads with its quorum", i + 1), || {
            let mut con = trio.con(i);
            redis::cmd("GET").arg("warm-up").query::<Option<String>>(&mut con).map_err(|e| e.to_string())
        });
    }
    trio
}

/// Runs `f` until it succeeds, for 30 s at most.
fn retry<T>(what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f() {
            Ok(value) => return value,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("{what}: still failing after 30 s: {e}"),
        }
    }
}

fn set(con: &mut Connection, key: &str, value: &str) -> Result<(), String> {
    redis::cmd("SET").arg(key).arg(value).query::<()>(con).map_err(|e| e.to_string())
}

fn get(con: &mut Connection, key: &str) -> Result<Option<String>, String> {
    redis::cmd("GET").arg(key).query::<Option<String>>(con).map_err(|e| e.to_string())
}

/// Makes node `i`'s link to node `peer` discard every message (`blocked`), or clears it.
fn block(trio: &Trio, i: usize, peer: usize, blocked: bool) {
    let body = format!(r#"{{"peer": "n{}", "blocked": {blocked}}}"#, peer + 1);
    let (code, answer) = trio.nodes[i].http("PUT", "/api/v1/test/faults", body.as_bytes());
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&answer));
}

/// Waits (bounded) until node `i`'s link to node `peer` is connected and its queue empty: what
/// it queued while `peer` was down has left the queue (discarded, while blocked), so that
/// unblocking it delivers none of it.
fn drained(trio: &Trio, i: usize, peer: usize) {
    let id = format!("n{}", peer + 1);
    retry(&format!("n{}'s link to {id} up and drained", i + 1), || {
        let status = trio.status(i);
        let link = status["peers"].as_array().unwrap().iter().find(|p| p["id"] == id.as_str()).cloned().unwrap();
        (link["state"] == "connected" && link["queued"] == 0).then_some(()).ok_or(link.to_string())
    });
}

/// Node `i`'s digest root (REPLIKV.DIGEST's third element), asked again (bounded) while a
/// node just restarted answers BUSY, rebuilding its Merkle trees.
fn root(trio: &Trio, i: usize) -> String {
    let digest: Vec<Value> = retry(&format!("n{}'s digest", i + 1), || {
        let mut con = trio.con(i);
        redis::cmd("REPLIKV.DIGEST").query(&mut con).map_err(|e| {
            assert!(e.to_string().contains("rebuilding its Merkle trees"), "n{}'s digest: {e}", i + 1);
            e.to_string()
        })
    });
    match &digest[2] {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).unwrap(),
        other => panic!("a digest root, not {other:?}"),
    }
}

/// Node `i`'s leaderless counter `name` from its status.
fn counter(trio: &Trio, i: usize, name: &str) -> u64 {
    trio.status(i)["replication"]["leaderless"][name].as_u64().unwrap_or_else(|| panic!("no counter {name}"))
}

#[test]
fn writes_and_reads_go_on_with_any_one_node_killed_and_a_read_repairs_what_it_missed() {
    let mut trio = start("");
    for down in 0..3 {
        let (writer, reader) = ((down + 1) % 3, (down + 2) % 3);
        // The others discard what they send to the node while it is down (their links would
        // otherwise hold the write and deliver it when it comes back).
        block(&trio, writer, down, true);
        block(&trio, reader, down, true);
        trio.nodes[down].kill9();
        let key = format!("key-{down}");
        let mut w = trio.con(writer);
        set(&mut w, &key, &format!("written while n{} was down", down + 1)).unwrap();
        let mut r = trio.con(reader);
        assert_eq!(
            get(&mut r, &key).unwrap().as_deref(),
            Some(format!("written while n{} was down", down + 1).as_str())
        );
        trio.nodes[down].restart();
        drained(&trio, writer, down);
        drained(&trio, reader, down);
        block(&trio, writer, down, false);
        block(&trio, reader, down, false);
        // The restarted node missed the write: its digest differs until a read repairs it.
        retry("the restarted node answers", || trio.try_status(down).ok_or("not yet".to_string()));
        assert_ne!(root(&trio, down), root(&trio, writer), "n{} should have missed {key}", down + 1);
        let before = counter(&trio, down, "read_repairs_received");
        retry(&format!("a read of {key} through n{}", down + 1), || {
            let mut con = trio.con(down);
            match get(&mut con, &key)? {
                Some(_) => Ok(()),
                None => Err("nil".into()),
            }
        });
        retry("the read repair reaches the restarted node", || {
            let received = counter(&trio, down, "read_repairs_received");
            let same = root(&trio, down) == root(&trio, writer) && root(&trio, writer) == root(&trio, reader);
            (received > before && same).then_some(()).ok_or(format!("repairs received {received}, roots equal {same}"))
        });
    }
}

#[test]
fn a_partial_write_says_how_many_replicas_took_it_and_that_it_may_still_be_there() {
    let trio = start("");
    let mut con = trio.con(0);
    set(&mut con, "k", "before").unwrap();
    trio.nodes[1].signal(libc::SIGSTOP);
    trio.nodes[2].signal(libc::SIGSTOP);
    let error = set(&mut con, "k", "during").unwrap_err();
    trio.nodes[1].signal(libc::SIGCONT);
    trio.nodes[2].signal(libc::SIGCONT);
    assert!(error.contains("NOQUORUM"), "{error}");
    assert!(error.contains("the write reached 1 of 3 replicas (w = 2 needed) within 1500 ms"), "{error}");
    assert!(error.contains("it may still be there"), "{error}");
    retry("the partial write is counted", || match counter(&trio, 0, "partial_writes") {
        1 => Ok(()),
        other => Err(format!("partial_writes = {other}")),
    });
    // It is still there: a quorum read that includes n1 returns it (newest version wins).
    let value = retry("a read after the partial write", || get(&mut con, "k"));
    assert_eq!(value.as_deref(), Some("during"));
}

#[test]
fn siblings_made_by_two_clients_during_a_partition_are_listed_and_resolved_with_their_context() {
    let trio = start("conflicts = \"siblings\"");
    // n1 and n3 cannot hear each other; both still reach n2.
    block(&trio, 0, 2, true);
    block(&trio, 2, 0, true);
    let mut a = trio.con(0);
    set(&mut a, "cart", "milk").unwrap();
    // Another client writes through n3, which never saw the first write: both are
    // acknowledged (n2 takes each), and n2 now holds both, concurrent.
    let mut b = trio.con(2);
    set(&mut b, "cart", "eggs").unwrap();
    block(&trio, 0, 2, false);
    block(&trio, 2, 0, false);
    let mut c = trio.con(1);
    let error = retry("a GET that sees both", || match get(&mut c, "cart") {
        Err(e) if e.contains("SIBLINGS") => Ok(e),
        other => Err(format!("{other:?}")),
    });
    assert!(error.contains("2 concurrent values"), "{error}");
    let listed: (String, Vec<String>) = redis::cmd("REPLIKV.SIBLINGS").arg("cart").query(&mut c).unwrap();
    let (token, mut values) = listed;
    values.sort();
    assert_eq!(values, ["eggs", "milk"]);
    redis::cmd("SET").arg("cart").arg("eggs,milk").arg("CONTEXT").arg(&token).query::<()>(&mut c).unwrap();
    for i in 0..3 {
        let mut con = trio.con(i);
        assert_eq!(get(&mut con, "cart").unwrap().as_deref(), Some("eggs,milk"), "read through n{}", i + 1);
    }
    // A context is bound to its key.
    let error = redis::cmd("SET").arg("other").arg("x").arg("CONTEXT").arg(&token).query::<()>(&mut c).unwrap_err();
    assert!(error.to_string().contains("made for another key"), "{error}");
}

#[test]
fn a_node_of_another_mode_is_refused_at_the_handshake_naming_both_modes() {
    // n2's file says single-leader, the others leaderless: their links refuse each other.
    let mut trio = Trio::launch(&leaderless(""), &[]);
    let file = trio.cluster_file();
    let text = std::fs::read_to_string(&file).unwrap();
    let other = file.with_file_name("single-leader.toml");
    let single =
        text.replace("mode = \"leaderless\"\nn = 3\nw = 2\nr = 2\n", "").replace("anti_entropy_interval_ms = 0\n", "");
    assert_ne!(single, text, "the mode lines are where this test expects them");
    std::fs::write(&other, single).unwrap();
    trio.nodes[1].kill9();
    trio.nodes[1].set_flags(&["--config", other.to_str().unwrap(), "--id", "n2"]);
    // A fresh directory: n2's own was written leaderless, which a single-leader node refuses.
    trio.nodes[1].data_dir = file.with_file_name("n2-single-leader");
    trio.nodes[1].restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = trio.nodes[0].log_text();
        if log.contains("replication mode mismatch: this node runs leaderless, peer n2")
            && log.contains("single-leader")
        {
            break;
        }
        assert!(Instant::now() < deadline, "n1 never refused n2:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_connection_chooses_its_quorums_with_replikv_consistency() {
    let trio = start("");
    let mut con = trio.con(0);
    let cmd = |con: &mut Connection, args: &[&str]| -> Result<String, String> {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query::<String>(con).map_err(|e| e.to_string())
    };
    assert_eq!(cmd(&mut con, &["REPLIKV.CONSISTENCY"]).unwrap(), "DEFAULT (2,2)");
    let e = cmd(&mut con, &["REPLIKV.CONSISTENCY", "4,1"]).unwrap_err();
    assert!(e.contains("consistency 4,1: w = 4 must be between 1 and n = 3"), "{e}");
    let e = cmd(&mut con, &["REPLIKV.CONSISTENCY", "MOST"]).unwrap_err();
    assert!(e.contains("use ONE, QUORUM, ALL or w,r"), "{e}");
    assert_eq!(cmd(&mut con, &["REPLIKV.CONSISTENCY", "one"]).unwrap(), "OK");
    assert_eq!(cmd(&mut con, &["REPLIKV.CONSISTENCY"]).unwrap(), "ONE");
    trio.nodes[1].signal(libc::SIGSTOP);
    trio.nodes[2].signal(libc::SIGSTOP);
    // ONE: n1 alone takes and answers them.
    let one = (set(&mut con, "k", "v1"), get(&mut con, "k"));
    // The cluster's quorum again: the write cannot reach w = 2.
    cmd(&mut con, &["REPLIKV.CONSISTENCY", "DEFAULT"]).unwrap();
    let default = set(&mut con, "k", "v2");
    // Over HTTP, ?w=1 chooses the same.
    let (code, body) = trio.nodes[0].http("PUT", "/api/v1/kv/h?w=1", b"v");
    let (quorum_code, quorum_body) = trio.nodes[0].http("PUT", "/api/v1/kv/h", b"v");
    trio.nodes[1].signal(libc::SIGCONT);
    trio.nodes[2].signal(libc::SIGCONT);
    assert_eq!(one, (Ok(()), Ok(Some("v1".to_string()))));
    assert!(default.as_ref().is_err_and(|e| e.contains("NOQUORUM")), "{default:?}");
    assert_eq!((code, String::from_utf8_lossy(&body).as_ref()), (200, r#"{"ok":true}"#));
    let quorum_body = String::from_utf8_lossy(&quorum_body);
    assert_eq!(quorum_code, 503, "{quorum_body}");
    assert!(quorum_body.contains("NOQUORUM the write reached 1 of 3 replicas"), "{quorum_body}");
}

#[test]
fn siblings_over_http_are_a_300_with_every_value_and_a_context_a_put_resolves() {
    let trio = start("conflicts = \"siblings\"");
    block(&trio, 0, 2, true);
    block(&trio, 2, 0, true);
    assert_eq!(trio.nodes[0].http("PUT", "/api/v1/kv/doc", b"left").0, 200);
    assert_eq!(trio.nodes[2].http("PUT", "/api/v1/kv/doc", b"right").0, 200);
    block(&trio, 0, 2, false);
    block(&trio, 2, 0, false);
    let (code, body) = trio.nodes[1].http("GET", "/api/v1/kv/doc", b"");
    assert_eq!(code, 300, "{}", String::from_utf8_lossy(&body));
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut values: Vec<&str> = body["values"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    values.sort();
    assert_eq!(values, ["left", "right"]);
    let context = body["context"].as_str().unwrap();
    let (code, _) = trio.nodes[1].http("PUT", &format!("/api/v1/kv/doc?context={context}"), b"both");
    assert_eq!(code, 200);
    let (code, body) = trio.nodes[0].http("GET", "/api/v1/kv/doc", b"");
    assert_eq!((code, body.as_slice()), (200, b"both".as_slice()));
}

#[test]
fn replikv_consistency_on_a_single_leader_node_says_it_is_for_leaderless_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::Node::start(&dir.path().join("n"), &[]);
    let client = redis::Client::open(node.url()).unwrap();
    let mut con = client.get_connection().unwrap();
    let e = redis::cmd("REPLIKV.CONSISTENCY").arg("ONE").query::<String>(&mut con).unwrap_err();
    assert!(e.to_string().contains("REPLIKV.CONSISTENCY is for a leaderless cluster"), "{e}");
    let e = redis::cmd("REPLIKV.SIBLINGS").arg("k").query::<String>(&mut con).unwrap_err();
    assert!(e.to_string().contains("REPLIKV.SIBLINGS is for a leaderless or multi-leader cluster"), "{e}");
}

#[test]
fn a_data_directory_written_in_one_mode_is_refused_by_a_node_of_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n1");
    // A lone (single-leader) node writes a key, and stops.
    let mut lone = common::Node::start(&data, &[]);
    let client = redis::Client::open(lone.url()).unwrap();
    let mut con = client.get_connection().unwrap();
    set(&mut con, "k", "v").unwrap();
    drop(con);
    assert!(lone.terminate().success());
    assert_eq!(std::fs::read_to_string(data.join("MODE")).unwrap(), "single-leader\n");
    // The same directory as a one-node leaderless cluster's.
    let ports = common::free_ports(3);
    let file = dir.path().join("leaderless.toml");
    std::fs::write(
        &file,
        format!(
            "cluster = \"c\"\n[replication]\nmode = \"leaderless\"\n[[nodes]]\nid = \"n1\"\npeer_addr = \"127.0.0.1:{}\"\n\
             resp_addr = \"127.0.0.1:{}\"\nhttp_addr = \"127.0.0.1:{}\"\n",
            ports[0], ports[1], ports[2]
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_replikv"))
        .args(["node", "--config", file.to_str().unwrap(), "--id", "n1", "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("was written by a single-leader node") && stderr.contains("this node runs leaderless"),
        "{stderr}"
    );
    // A fresh directory is marked leaderless, and a lone node then refuses it.
    let fresh = dir.path().join("fresh");
    let mut node =
        common::Node::start_on(&fresh, ports[1], ports[2], &["--config", file.to_str().unwrap(), "--id", "n1"]);
    assert!(node.terminate().success());
    assert_eq!(std::fs::read_to_string(fresh.join("MODE")).unwrap(), "leaderless\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_replikv"))
        .args([
            "node",
            "--data-dir",
            fresh.to_str().unwrap(),
            "--resp-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("was written by a leaderless node"), "{stderr}");
}
