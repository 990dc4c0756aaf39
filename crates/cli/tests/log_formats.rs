//! The replication log as the lecture's logical log, end to end (issue 18): three real
//! processes in sync mode, writes from the `redis` crate, and the log read back with
//! `replikv log show` and `GET /api/v1/log` from the leader and from a follower, also after
//! the follower restarts (its log file holds the old values too); and the statement and mixed
//! formats, whose nondeterministic requests `replikv check` finds leaving replicas different.

mod common;

use common::trio::Trio;
use redis::Commands;
use serde_json::Value;

/// Node `i`'s `GET /api/v1/log` answer to `query`, which must be 200.
fn log(trio: &Trio, i: usize, query: &str) -> Vec<Value> {
    let (code, body) = trio.nodes[i].http("GET", &format!("/api/v1/log?{query}"), b"");
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice::<Value>(&body).unwrap().as_array().unwrap().clone()
}

#[test]
fn the_log_shows_old_and_new_values_and_transactions_on_every_replica() {
    let mut trio = Trio::start("acks = \"sync\"", &[]);
    let mut con = trio.con(0);
    let _: () = con.set("users.1234.picture_url", "me-old.jpg").unwrap();
    let _: () = con.set("users.1234.picture_url", "me-new.jpg").unwrap();
    let _: () = con.set("other", "x").unwrap();
    // A transaction over two keys: one record, one transaction.
    let _: () =
        redis::pipe().atomic().set("users.1.name", "ann").del("users.1234.picture_url").query(&mut con).unwrap();
    let last = trio.status(0)["replication"]["last_lsn"].as_u64().unwrap();
    trio.wait_applied(2, last);

    let records = log(&trio, 0, "from=1&prefix=users.");
    assert_eq!(log(&trio, 2, "from=1&prefix=users."), records, "the follower's log is the leader's");
    let with_changes: Vec<&Value> = records.iter().filter(|r| !r["changes"].as_array().unwrap().is_empty()).collect();
    assert_eq!(with_changes.len(), 3, "two SETs and the transaction under users.: {records:?}");
    let update = with_changes[1];
    let change = &update["changes"][0];
    assert_eq!(
        (&change["old"], &change["old_value"], &change["new_value"]),
        (&"value".into(), &"me-old.jpg".into(), &"me-new.jpg".into())
    );
    assert_eq!(
        change["old_version"], with_changes[0]["changes"][0]["new_version"],
        "the old version is the first write's"
    );
    let transaction = update["transaction"].as_u64().unwrap();
    assert_eq!(Some(transaction), update["lsn"].as_u64(), "a write's transaction id is its position");
    let multi = with_changes[2];
    assert_eq!((&multi["begins"], &multi["ends"], &multi["parts"]), (&1.into(), &1.into(), &1.into()));
    let keys: Vec<&str> = multi["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(keys, ["users.1.name", "users.1234.picture_url"], "both writes of the transaction");
    assert_eq!(
        (&multi["changes"][1]["old_value"], &multi["changes"][1]["new_value"]),
        (&"me-new.jpg".into(), &Value::Null)
    );

    // The lecture's record, from a follower, by the command line; and again after it restarts.
    let expected = format!(
        "  table: users  key: 1234  column: picture_url  old_value: me-old.jpg  new_value: me-new.jpg  transaction: {transaction}"
    );
    let show = |trio: &Trio| {
        let (ok, out, err) = trio.replikv(&["log", "show", "--node", "n3", "--key", "users.1234."]);
        assert!(ok, "log show failed: {err}");
        out
    };
    let out = show(&trio);
    assert!(out.lines().any(|l| l == expected), "no lecture record in:\n{out}");
    assert!(out.contains("@n1"), "versions name their node:\n{out}");
    assert!(out.contains("old_value: me-new.jpg  new_value: (deleted)"), "the delete in the transaction:\n{out}");
    assert!(!out.contains("users.1.name") && !out.contains("key: other"), "only keys under the prefix:\n{out}");
    trio.nodes[2].terminate();
    trio.nodes[2].restart();
    assert_eq!(show(&trio), out, "the follower's log file kept the old values");

    // Bad positions are refused with the reason.
    for (query, reason) in [("from=0", "from counts from 1"), ("after=1&from=2", "not both"), ("limit=0", "at least 1")]
    {
        let (code, body) = trio.nodes[0].http("GET", &format!("/api/v1/log?{query}"), b"");
        assert_eq!(code, 400, "{query}");
        assert!(String::from_utf8_lossy(&body).contains(reason), "{query}: {}", String::from_utf8_lossy(&body));
    }
}

/// A RESP connection streaming REPLIKV.CHANGES, read frame by frame.
struct Stream {
    reader: std::io::BufReader<std::net::TcpStream>,
    writer: std::net::TcpStream,
}

impl Stream {
    /// Connects to RESP port `port` and sends `command` (inline).
    fn open(port: u16, command: &str) -> Stream {
        let writer = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        writer.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        let reader = std::io::BufReader::new(writer.try_clone().unwrap());
        let mut stream = Stream { reader, writer };
        stream.send(command);
        stream
    }

    fn send(&mut self, command: &str) {
        use std::io::Write;
        self.writer.write_all(format!("{command}\r\n").as_bytes()).unwrap();
    }

    /// The next frame (RESP2). Read here, not with the `redis` crate's parser, which reads
    /// ahead into a buffer of its own and drops what follows the frame.
    fn next(&mut self) -> redis::Value {
        use std::io::{BufRead, Read};
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let (kind, rest) = line.trim_end().split_at(1);
        match kind {
            "+" if rest == "OK" => redis::Value::Okay,
            "+" => redis::Value::SimpleString(rest.into()),
            "-" => redis::Value::SimpleString(format!("error: {rest}")),
            ":" => redis::Value::Int(rest.parse().unwrap()),
            "$" if rest == "-1" => redis::Value::Nil,
            "$" => {
                let mut bytes = vec![0; rest.parse::<usize>().unwrap() + 2];
                self.reader.read_exact(&mut bytes).unwrap();
                bytes.truncate(bytes.len() - 2);
                redis::Value::BulkString(bytes)
            }
            "*" => redis::Value::Array((0..rest.parse::<usize>().unwrap()).map(|_| self.next()).collect()),
            other => panic!("unexpected frame type {other:?} in {line:?}"),
        }
    }

    /// The next push: its kind (`from`, `record`) and its payload.
    fn push(&mut self) -> (String, redis::Value) {
        match self.next() {
            redis::Value::Array(mut items) if items.len() == 3 => {
                let payload = items.pop().unwrap();
                assert_eq!(items[0], redis::Value::BulkString(b"replikv.changes".to_vec()), "{items:?}");
                (text(&items[1]), payload)
            }
            other => panic!("not a change push: {other:?}"),
        }
    }
}

/// A bulk string's text.
fn text(value: &redis::Value) -> String {
    match value {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// Field `name` of a reply of field and value pairs.
fn pair<'a>(value: &'a redis::Value, name: &str) -> &'a redis::Value {
    let redis::Value::Array(items) = value else { panic!("pairs: {value:?}") };
    let at = items.chunks(2).position(|p| text(&p[0]) == name).unwrap_or_else(|| panic!("no {name} in {value:?}"));
    &items[at * 2 + 1]
}

/// The client keys of a streamed record's changes.
fn keys(record: &redis::Value) -> Vec<String> {
    let redis::Value::Array(changes) = pair(record, "changes") else { panic!("changes") };
    changes.iter().map(|c| text(pair(c, "key"))).collect()
}

fn int(value: &redis::Value) -> i64 {
    match value {
        redis::Value::Int(n) => *n,
        other => panic!("not an integer: {other:?}"),
    }
}

#[test]
fn a_change_stream_delivers_new_records_under_its_prefix_resumes_and_refuses_a_gap() {
    let trio = Trio::start("acks = \"sync\"\nlog_retain_bytes = 131072\nlog_segment_bytes = 65536", &[]);
    let n2 = trio.nodes[1].url().rsplit(':').next().unwrap().trim_end_matches('/').parse::<u16>().unwrap();
    let mut con = trio.con(0);
    let _: () = con.set("users.0.name", "before").unwrap();
    // From the log's end, on a follower: only what comes after.
    let mut stream = Stream::open(n2, "REPLIKV.CHANGES PREFIX users.");
    let (kind, from) = stream.push();
    assert_eq!(kind, "from");
    let start = int(&from);
    let _: () = con.set("other", "x").unwrap();
    let _: () = con.set("users.1.name", "ann").unwrap();
    let _: () = con.mset(&[("users.2.name", "bob"), ("users.3.name", "cy")]).unwrap();
    let (kind, first) = stream.push();
    assert_eq!(
        (kind.as_str(), keys(&first)),
        ("record", vec!["users.1.name".to_string()]),
        "not `other`, not the write before"
    );
    assert!(int(pair(&first, "lsn")) >= start);
    let change = match pair(&first, "changes") {
        redis::Value::Array(c) => c[0].clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!((text(pair(&change, "old")), text(pair(&change, "new_value"))), ("absent".into(), "ann".into()));
    let (_, second) = stream.push();
    assert_eq!(keys(&second), ["users.2.name", "users.3.name"], "one transaction, one record");
    // PING is answered in the stream, another command refused, QUIT closes.
    stream.send("PING");
    assert!(matches!(stream.next(), redis::Value::Array(items) if text(&items[0]) == "pong"));
    stream.send("GET users.1.name");
    let refused = format!("{:?}", stream.next());
    assert!(refused.contains("only PING and QUIT"), "{refused}");
    stream.send("QUIT");
    assert_eq!(stream.next(), redis::Value::Okay);

    // Resumed from the position after the first record: the second comes first.
    let resume = int(pair(&first, "lsn")) + 1;
    let mut again = Stream::open(n2, &format!("REPLIKV.CHANGES FROM {resume} PREFIX users."));
    assert_eq!(int(&again.push().1), resume);
    assert_eq!(keys(&again.push().1), ["users.2.name", "users.3.name"]);

    // The same as server-sent events.
    let (code, head_and_events) =
        sse(trio.nodes[1].http_port(), &format!("/api/v1/changes?from={resume}&prefix=users."), 1, None);
    assert_eq!(code, 200, "{head_and_events}");
    assert!(
        head_and_events.contains(&format!("event: record\nid: {}\n", int(pair(&second, "lsn")))),
        "{head_and_events}"
    );
    assert!(head_and_events.contains("\"key\":\"users.2.name\""), "{head_and_events}");

    // Past retention: the start of the log is gone, and a stream from there is refused.
    for n in 0..200 {
        let _: () = con.set(format!("big:{n}"), "y".repeat(2000)).unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while trio.status(1)["replication"]["first_lsn"].as_u64() <= Some(1) {
        assert!(std::time::Instant::now() < deadline, "retention never dropped the start of n2's log");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mut gone = Stream::open(n2, "REPLIKV.CHANGES FROM 1");
    assert_eq!(int(&gone.push().1), 1);
    let refusal = format!("{:?}", gone.next());
    assert!(refusal.contains("are gone") && refusal.contains("FROM a position the log holds"), "{refusal}");
    let (code, body) = sse(trio.nodes[1].http_port(), "/api/v1/changes?from=1", 0, None);
    assert!(code == 410 && body.contains("are gone"), "refused before the stream opens: {body}");
    // An EventSource's reconnection resumes after its Last-Event-ID, not at the URL's from
    // (which is gone here: it would be refused).
    let first = trio.status(1)["replication"]["first_lsn"].as_i64().unwrap();
    let (code, events) = sse(trio.nodes[1].http_port(), "/api/v1/changes?prefix=big:&from=1", 1, Some(first));
    assert_eq!(code, 200, "{events}");
    assert!(events.contains(&format!("{{\"from\":{}}}", first + 1)), "{events}");
    // REPLIKV.CHANGES inside MULTI, even in the same round as the MULTI, is queued and refused
    // at EXEC, not streamed.
    let mut multi = Stream::open(n2, "MULTI\r\nREPLIKV.CHANGES");
    assert_eq!(multi.next(), redis::Value::Okay);
    assert_eq!(text(&multi.next()), "QUEUED");
    multi.send("EXEC");
    let exec = format!("{:?}", multi.next());
    assert!(exec.contains("must be the last command"), "{exec}");
}

/// `GET path` on HTTP port `port` as server-sent events, with `Last-Event-ID: last` if given:
/// the status code and the text read until `records` record events came, or an error event or
/// the end (`records` 0), or 20 s passed.
fn sse(port: u16, path: &str, records: usize, last: Option<i64>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_millis(200))).unwrap();
    let resume = last.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n{resume}Connection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut text = String::new();
    let mut buf = [0u8; 65536];
    while std::time::Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => {}
        }
        if text.matches("event: record").count() >= records && (records > 0 || text.contains("event: error")) {
            break;
        }
    }
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text)
}

#[test]
fn a_script_runs_on_the_leader_atomically_and_its_effects_replicate_as_one_transaction() {
    let trio = Trio::start("acks = \"sync\"", &[]);
    let mut con = trio.con(0);
    let script =
        "redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[1]); return redis.call('INCR', KEYS[3])";
    let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(script).query(&mut con).unwrap();
    let n: i64 = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(3)
        .arg("users.1.name")
        .arg("users.2.name")
        .arg("counter")
        .arg("ann")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 1);
    // A script that fails half way applies nothing, on the leader or anywhere.
    let failed: redis::RedisResult<()> = redis::cmd("EVAL")
        .arg("redis.call('SET', KEYS[1], 'bob'); redis.call('INCR', KEYS[1])")
        .arg(1)
        .arg("users.1.name")
        .query(&mut con);
    let error = failed.expect_err("INCR of a name fails").to_string();
    assert!(error.contains("not an integer"), "{error}");
    let last = trio.status(0)["replication"]["last_lsn"].as_u64().unwrap();
    trio.wait_applied(2, last);
    for i in [0, 2] {
        let names: Vec<Option<String>> =
            redis::cmd("MGET").arg("users.1.name").arg("users.2.name").query(&mut trio.con(i)).unwrap();
        assert_eq!(names, [Some("ann".to_string()), Some("ann".to_string())], "n{}", i + 1);
    }
    // The script's three writes are one record, one transaction, in the log.
    let records = log(&trio, 2, "from=1");
    let with_changes: Vec<&Value> = records.iter().filter(|r| !r["changes"].as_array().unwrap().is_empty()).collect();
    assert_eq!(with_changes.len(), 1, "one transaction, nothing of the failed script: {records:?}");
    assert_eq!(with_changes[0]["keys"], serde_json::json!(["users.1.name", "users.2.name", "counter"]));
    // A follower refuses a script: it may write.
    let refused: redis::RedisResult<i64> = redis::cmd("EVAL").arg("return 1").arg(0).query(&mut trio.con(1));
    let refused = refused.expect_err("READONLY").to_string();
    assert!(refused.contains("read only replica"), "{refused}");
}

/// Writes the lecture's nondeterministic requests, and deterministic ones, to the leader of
/// `trio` while its follower n3 is paused for over a second, so that n3 executes any statement
/// later than the leader did, at another clock; then waits until n3 has every record.
fn write_while_n3_is_paused(trio: &Trio) {
    trio.nodes[2].signal(libc::SIGSTOP);
    let mut con = trio.con(0);
    let _: () = con.set("a", "1").unwrap();
    let _: i64 = con.incr("n", 41).unwrap();
    let _: () = con.mset(&[("x", "1"), ("y", "2")]).unwrap();
    let _: () = redis::cmd("SET").arg("ttl").arg("v").arg("EX").arg(1000).query(&mut con).unwrap();
    let script = "local t = redis.call('TIME') redis.call('SET', KEYS[1], t[1] .. '.' .. t[2]) return 1";
    let _: i64 = redis::cmd("EVAL").arg(script).arg(1).arg("clock").query(&mut con).unwrap();
    let script = "redis.call('SET', KEYS[1], tostring(math.random(1, 1000000000))) return 1";
    let _: i64 = redis::cmd("EVAL").arg(script).arg(1).arg("dice").query(&mut con).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1_200));
    trio.nodes[2].signal(libc::SIGCONT);
    let last = trio.status(0)["replication"]["last_lsn"].as_u64().unwrap();
    trio.wait_applied(2, last);
}

#[test]
fn statements_leave_followers_different_on_nondeterministic_requests_and_mixed_does_not() {
    // The lecture's problem, staged: a relative TTL, TIME and math.random, executed again on
    // each replica.
    let trio = Trio::start("acks = \"async\"\nlog_format = \"statement\"", &[]);
    write_while_n3_is_paused(&trio);
    let (code, out, err) = trio.replikv_code(&["check", "--timeout-secs", "20"]);
    assert_eq!(code, Some(1), "check finds the replicas different:\n{out}{err}");
    for key in ["\"ttl\"", "\"clock\"", "\"dice\""] {
        assert!(out.contains(key), "check names {key}:\n{out}");
    }
    for key in ["\"a\"", "\"n\"", "\"x\""] {
        assert!(!out.contains(key), "the deterministic {key} is the same everywhere:\n{out}");
    }
    assert!(out.contains("key range 0x"), "check names the differing key ranges:\n{out}");
    let warned = trio.nodes[0].log_text();
    assert!(warned.contains("logged a nondeterministic statement"), "the leader warns:\n{warned}");
    assert!(warned.contains("SET ttl v PX 1000000"), "naming the request:\n{warned}");
    let (ok, shown, err) = trio.replikv(&["log", "show", "--node", "n3", "--key", "dice"]);
    assert!(ok, "{err}");
    assert!(shown.contains("  statement: EVAL \"redis.call('SET', KEYS[1], tostring(math.random"), "{shown}");
    assert!(shown.contains("nondeterministic: its script draws a random number (math.random)"), "{shown}");
    drop(trio);

    // The same requests in mixed: the nondeterministic ones go as their effects.
    let trio = Trio::start("acks = \"async\"\nlog_format = \"mixed\"", &[]);
    write_while_n3_is_paused(&trio);
    let (ok, out, err) = trio.replikv(&["check", "--timeout-secs", "20"]);
    assert!(ok, "mixed leaves every replica the same:\n{out}{err}");
    let (ok, shown, err) = trio.replikv(&["log", "show", "--node", "n3"]);
    assert!(ok, "{err}");
    assert!(shown.contains("  statement: SET a 1"), "a deterministic write is a statement:\n{shown}");
    assert!(shown.contains("key: dice") && !shown.contains("statement: EVAL"), "the scripts are effects:\n{shown}");
}

/// Every segment file (`*.seg`) in node `i`'s data directory, by name, with an FNV-1a 64-bit
/// checksum of its bytes and its length.
fn segment_checksums(trio: &Trio, i: usize) -> std::collections::BTreeMap<String, (u64, u64)> {
    let mut files = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(&trio.nodes[i].data_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "seg") {
            let bytes = std::fs::read(&path).unwrap();
            let sum =
                bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
            files.insert(path.file_name().unwrap().to_string_lossy().into_owned(), (sum, bytes.len() as u64));
        }
    }
    files
}

/// Waits until both followers applied the leader's whole log and hold the leader's segment
/// files byte for byte (the engines write out between batches, and commit seals and
/// compactions on threads of their own); returns the leader's files.
fn wait_identical_segments(trio: &Trio) -> std::collections::BTreeMap<String, (u64, u64)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let last = trio.status(0)["replication"]["last_lsn"].as_u64().unwrap();
        trio.wait_applied(1, last);
        trio.wait_applied(2, last);
        let leader = segment_checksums(trio, 0);
        let followers = [segment_checksums(trio, 1), segment_checksums(trio, 2)];
        if followers.iter().all(|f| *f == leader) {
            return leader;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the followers' segment files are not the leader's:\nleader {leader:?}\nn2 {:?}\nn3 {:?}",
            followers[0],
            followers[1]
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn a_physical_log_leaves_every_replica_with_the_leaders_segment_files_byte_for_byte() {
    // 4 MiB segments, and overwrites of 1 MiB values: past compaction's 16 MiB of dead bytes, so
    // the leader logs a compaction that every replica runs.
    let trio = Trio::start("acks = \"sync\"\nlog_format = \"physical\"", &["--segment-bytes-max", "4194304"]);
    let mut con = trio.con(0);
    for i in 0..40u8 {
        let _: () = con.set(format!("big{}", i % 4), vec![i; 1 << 20]).unwrap();
    }
    for i in 0..200 {
        let _: () = con.set(format!("users.{i}.name"), format!("{i:0>100}")).unwrap();
    }
    let _: () = redis::pipe().atomic().set("users.1.name", "ann").del("users.2.name").query(&mut con).unwrap();
    let _: () = redis::cmd("SET").arg("ttl").arg("v").arg("EX").arg(1000).query(&mut con).unwrap();
    let files = wait_identical_segments(&trio);
    assert!(files.len() >= 3, "writes sealed several segments: {files:?}");
    assert!(
        files.keys().any(|name| !name.ends_with("-00000.seg")),
        "a compaction's outputs (generation 1 and up) are among them: {files:?}"
    );
    let warned = trio.nodes[1].log_text() + &trio.nodes[2].log_text();
    assert!(!warned.contains("have left the leader's"), "no follower fell back to its own writes:\n{warned}");
    let info: String = redis::cmd("INFO").arg("replication").query(&mut trio.con(2)).unwrap();
    assert!(info.contains("replikv_physical_diverged:0\r\n"), "{info}");
    assert_eq!(trio.status(1)["replication"]["physical_diverged"], 0);

    // The log shows a physical record's changes, decoded from its bytes.
    let (ok, shown, err) = trio.replikv(&["log", "show", "--node", "n3", "--from", "200", "--key", "users.1.name"]);
    assert!(ok, "{err}");
    assert!(shown.contains("new_value: ann"), "{shown}");

    // A follower killed and restarted replays its log over its engine and goes on writing the
    // same bytes.
    let mut trio = trio;
    trio.nodes[2].kill9();
    trio.nodes[2].restart();
    trio.wait_streaming(&[1, 2]);
    let mut con = trio.con(0);
    for i in 0..100 {
        let _: () = con.set(format!("later.{i}"), format!("{i:0>100}")).unwrap();
    }
    wait_identical_segments(&trio);
    // One started again on an empty directory takes the leader's whole log, which this leader
    // still holds from its first record, compactions included: the leader's files again.
    trio.nodes[1].terminate();
    std::fs::remove_dir_all(&trio.nodes[1].data_dir).unwrap();
    trio.nodes[1].restart();
    trio.wait_streaming(&[1, 2]);
    let files = wait_identical_segments(&trio);
    assert!(files.keys().any(|name| !name.ends_with("-00000.seg")), "{files:?}");
    assert_eq!(trio.status(1)["replication"]["leader"]["snapshots_installed"], 0, "from the log, not a snapshot");
    let (ok, out, err) = trio.replikv(&["check", "--timeout-secs", "20"]);
    assert!(ok, "the replicas hold the same data:\n{out}{err}");
}

#[test]
fn after_a_failover_every_physical_replica_holds_the_leaders_files_or_says_it_left() {
    let replication = "acks = \"semi-sync:1\"\nlog_format = \"physical\"";
    let mut trio = Trio::start(replication, &["--segment-bytes-max", "65536"]);
    let mut con = trio.con(0);
    for i in 0..300 {
        let _: () = con.set(format!("k{}", i % 50), format!("{i:0>200}")).unwrap();
    }
    // The leader dies; one of its followers, whose files are its files, leads on.
    trio.nodes[0].kill9();
    let leader = trio.leader_among(&[1, 2]);
    let mut con = trio.con(leader);
    for i in 300..600 {
        let _: () = con.set(format!("k{}", i % 50), format!("{i:0>200}")).unwrap();
    }
    trio.nodes[0].restart();
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    trio.wait_streaming(&others);
    let (ok, out, err) = trio.replikv(&["check", "--timeout-secs", "20"]);
    assert!(ok, "the replicas hold the same data:\n{out}{err}");
    // No silent divergence: each follower's segment files are the leader's, byte for byte, or
    // it has said (durably, and counted) that they are its own.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let last = trio.status(leader)["replication"]["last_lsn"].as_u64().unwrap();
        others.iter().for_each(|&i| trio.wait_applied(i, last));
        let files = segment_checksums(&trio, leader);
        let verdicts: Vec<(usize, bool, bool)> = others
            .iter()
            .map(|&i| {
                let left = trio.nodes[i].data_dir.join("PHYSICAL_LEFT").exists();
                (i, segment_checksums(&trio, i) == files, left)
            })
            .collect();
        if verdicts.iter().all(|&(_, same, left)| same || left) {
            for &(i, same, left) in &verdicts {
                let counted = trio.status(i)["replication"]["physical_diverged"].as_u64().unwrap();
                assert_eq!(left, counted > 0 || !same, "n{}: left {left}, counted {counted}", i + 1);
            }
            // The follower that never led nor crashed kept the leader's files.
            let bystander = others.iter().copied().find(|&i| i != 0).unwrap();
            assert!(verdicts.iter().any(|&(i, same, _)| i == bystander && same), "{verdicts:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "silent divergence: {verdicts:?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
