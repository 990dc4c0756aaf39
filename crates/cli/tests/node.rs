//! End-to-end tests of one node: real `replikv` processes on 127.0.0.1, real clients.

mod common;

use common::{hinted_segments, Node};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Writers hitting the node while it is killed.
const WRITERS: usize = 4;

/// Writes each writer attempts at most, so that the load is bounded whatever the timing.
const WRITES_PER_WRITER_MAX: usize = 20_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

async fn connect(node: &Node) -> redis::aio::MultiplexedConnection {
    redis::Client::open(node.url()).unwrap().get_multiplexed_async_connection().await.unwrap()
}

/// What one writer saw acknowledged: key -> value, and its counter's last acknowledged value
/// and number of INCRs attempted.
#[derive(Default)]
struct Acked {
    values: BTreeMap<String, String>,
    counter_acked: i64,
    counter_attempts: i64,
}

#[test]
fn kill_9_during_writes_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments so that the kill also exercises segment rotation and hint files.
    let mut node = Node::start(&dir.path().join("n1"), &["--fsync", "always", "--segment-bytes-max", "65536"]);
    let rt = runtime();
    let acked: Vec<Acked> = rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let mut con = connect(&node).await;
            tasks.push(tokio::spawn(async move {
                let mut acked = Acked::default();
                for i in 0..WRITES_PER_WRITER_MAX {
                    let key = format!("w{w}.k{i}");
                    let value = format!("v{i}-{}", "x".repeat(i % 50));
                    let set: redis::RedisResult<()> =
                        redis::cmd("SET").arg(&key).arg(&value).query_async(&mut con).await;
                    if set.is_err() {
                        break;
                    }
                    acked.values.insert(key, value);
                    acked.counter_attempts += 1;
                    let incr: redis::RedisResult<i64> =
                        redis::cmd("INCR").arg(format!("w{w}.counter")).query_async(&mut con).await;
                    match incr {
                        Ok(n) => acked.counter_acked = n,
                        Err(_) => break,
                    }
                }
                acked
            }));
        }
        // Let the writers run, then kill the node under them.
        let deadline = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        node.kill9();
        let mut all = Vec::new();
        for task in tasks {
            all.push(task.await.unwrap());
        }
        all
    });
    let total: usize = acked.iter().map(|a| a.values.len()).sum();
    assert!(total > 0, "no write was acknowledged before the kill; log:\n{}", node.log_text());

    node.restart();
    rt.block_on(async {
        let mut con = connect(&node).await;
        for (w, writer) in acked.iter().enumerate() {
            for (key, value) in &writer.values {
                let got: Option<String> = redis::cmd("GET").arg(key).query_async(&mut con).await.unwrap();
                assert_eq!(got.as_deref(), Some(value.as_str()), "acknowledged write of {key} lost");
            }
            let counter: i64 = redis::cmd("GET")
                .arg(format!("w{w}.counter"))
                .query_async::<Option<i64>>(&mut con)
                .await
                .unwrap()
                .unwrap_or(0);
            assert!(
                counter >= writer.counter_acked && counter <= writer.counter_attempts,
                "writer {w}: counter {counter} outside [{}, {}]",
                writer.counter_acked,
                writer.counter_attempts
            );
        }
    });
    eprintln!("{total} acknowledged writes survived SIGKILL");
}

#[test]
fn sigterm_stops_cleanly_and_data_survives() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(&dir.path().join("n1"), &[]);
    let rt = runtime();
    rt.block_on(async {
        let mut con = connect(&node).await;
        let _: () = redis::cmd("SET").arg("greeting").arg("hello").query_async(&mut con).await.unwrap();
        let _: () = redis::cmd("SET").arg("short").arg("lived").arg("PX").arg(100).query_async(&mut con).await.unwrap();
    });
    let status = node.terminate();
    assert!(status.success(), "SIGTERM exit status {status}; log:\n{}", node.log_text());
    assert!(node.log_text().contains("stopped cleanly"), "log:\n{}", node.log_text());
    std::thread::sleep(Duration::from_millis(150));
    node.restart();
    rt.block_on(async {
        let mut con = connect(&node).await;
        let got: Option<String> = redis::cmd("GET").arg("greeting").query_async(&mut con).await.unwrap();
        assert_eq!(got.as_deref(), Some("hello"));
        let gone: Option<String> = redis::cmd("GET").arg("short").query_async(&mut con).await.unwrap();
        assert_eq!(gone, None, "a key past its deadline stays expired across a restart");
    });
}

#[test]
fn bad_input_gets_an_error_and_closes_only_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n1"), &["--bulk-bytes-max", "1024", "--query-buffer-bytes-max", "65536"]);
    let wait = Duration::from_secs(5);
    let cases: &[(&[u8], &str)] = &[
        (b"*1\r\n$-5\r\n", "-ERR Protocol error: invalid bulk length\r\n"),
        (b"*2\r\n$3\r\nGET\r\n$2000\r\n", "-ERR Protocol error: invalid bulk length\r\n"),
        (b"*x\r\n", "-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*1\r\n:5\r\n", "-ERR Protocol error: expected '$', got ':'\r\n"),
        (b"SET \"a b\r\n", "-ERR Protocol error: unbalanced quotes in request\r\n"),
        // Requests before the bad one are answered first.
        (b"PING\r\n*1\r\n$-5\r\n", "+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"),
    ];
    for (input, want) in cases {
        let got = node.raw(input, wait);
        assert_eq!(String::from_utf8_lossy(&got), *want, "input {:?}", String::from_utf8_lossy(input));
    }
    // Over the query buffer: a bulk that fits bulk_bytes_max... is not possible with 1024, so
    // use many small incomplete arguments instead.
    let mut big = b"*100000\r\n".to_vec();
    for _ in 0..20_000 {
        big.extend_from_slice(b"$3\r\nabc\r\n");
    }
    let got = String::from_utf8_lossy(&node.raw(&big, wait)).to_string();
    assert!(got.starts_with("-ERR Protocol error: query buffer of"), "{got}");

    let unknown = node.raw(b"FROB a b\r\nQUIT\r\n", wait);
    assert_eq!(
        String::from_utf8_lossy(&unknown),
        "-ERR unknown command 'FROB', with args beginning with: 'a' 'b' \r\n+OK\r\n"
    );
    let arity = node.raw(b"GET\r\nQUIT\r\n", wait);
    assert_eq!(String::from_utf8_lossy(&arity), "-ERR wrong number of arguments for 'get' command\r\n+OK\r\n");
    let too_long = node.raw(&[b"SET k ".as_slice(), &vec![b'v'; 70_000]].concat(), wait);
    assert_eq!(String::from_utf8_lossy(&too_long), "-ERR Protocol error: too big inline request\r\n");

    // The node is still fine for everyone else, and for binary data.
    let rt = runtime();
    rt.block_on(async {
        let mut con = connect(&node).await;
        let value: Vec<u8> = (0..=255).collect();
        let _: () = redis::cmd("SET").arg(b"bin\r\nkey".as_slice()).arg(&value).query_async(&mut con).await.unwrap();
        let got: Vec<u8> = redis::cmd("GET").arg(b"bin\r\nkey".as_slice()).query_async(&mut con).await.unwrap();
        assert_eq!(got, value);
    });
}

#[test]
fn pipelines_resp3_and_tool_commands_work() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n1"), &["--engine", "memory"]);
    let wait = Duration::from_secs(2);
    // A pipeline in one write: replies in order, HELLO switching the protocol mid-way.
    let got = node.raw(b"SET a 1\r\nGET nope\r\nHELLO 3\r\nGET nope\r\nINCR a\r\nQUIT\r\n", wait);
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(text.starts_with("+OK\r\n$-1\r\n%"), "{text}");
    assert!(text.contains("$5\r\nproto\r\n:3\r\n"), "{text}");
    assert!(text.ends_with("_\r\n:2\r\n+OK\r\n"), "RESP3 null after HELLO 3: {text}");

    let rt = runtime();
    rt.block_on(async {
        let mut con = connect(&node).await;
        let mut pipe = redis::pipe();
        for i in 0..500 {
            pipe.cmd("SET").arg(format!("p{i}")).arg(i).ignore();
        }
        pipe.cmd("DBSIZE");
        let (size,): (i64,) = pipe.query_async(&mut con).await.unwrap();
        assert_eq!(size, 501);
        let info: String = redis::cmd("INFO").query_async(&mut con).await.unwrap();
        for field in ["redis_version:", "# Replication", "role:master", "db0:keys=501", "# Persistence", "# Clients"] {
            assert!(info.contains(field), "INFO lacks {field}:\n{info}");
        }
        let config: Vec<String> =
            redis::cmd("CONFIG").arg("GET").arg("appendonly").query_async(&mut con).await.unwrap();
        assert_eq!(config, ["appendonly", "no"], "the memory engine is not durable");
        let count: i64 = redis::cmd("COMMAND").arg("COUNT").query_async(&mut con).await.unwrap();
        assert!(count > 30);
        let id: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut con).await.unwrap();
        assert!(id > 0);
        let (cursor, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(0)
            .arg("MATCH")
            .arg("p1*")
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!((cursor, keys.len()), (0, 111), "p1, p10-p19, p100-p199");
    });
}

#[test]
fn string_and_keyspace_commands_work_through_a_real_client() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n1"), &["--engine", "memory"]);
    let rt = runtime();
    rt.block_on(async {
        let mut con = connect(&node).await;
        async fn cmd<T: redis::FromRedisValue>(con: &mut redis::aio::MultiplexedConnection, args: &[&str]) -> T {
            let mut command = redis::cmd(args[0]);
            for arg in &args[1..] {
                command.arg(*arg);
            }
            command.query_async(con).await.unwrap_or_else(|e| panic!("{args:?}: {e}"))
        }
        // RENAME carries the deadline to the new name.
        let _: () = cmd(&mut con, &["SET", "session", "abc", "EX", "100"]).await;
        let _: () = cmd(&mut con, &["RENAME", "session", "session:old"]).await;
        let ttl: i64 = cmd(&mut con, &["TTL", "session:old"]).await;
        assert!((99..=100).contains(&ttl), "the renamed key keeps its deadline: TTL {ttl}");
        let gone: i64 = cmd(&mut con, &["EXISTS", "session"]).await;
        assert_eq!(gone, 0);
        // GETEX PERSIST answers the value and removes the deadline.
        let value: String = cmd(&mut con, &["GETEX", "session:old", "PERSIST"]).await;
        assert_eq!(value, "abc");
        let ttl: i64 = cmd(&mut con, &["TTL", "session:old"]).await;
        assert_eq!(ttl, -1, "GETEX PERSIST removed the deadline");
        // EXPIRE's options: GT never applies to a key without deadline, NX does.
        let gt: i64 = cmd(&mut con, &["EXPIRE", "session:old", "50", "GT"]).await;
        let nx: i64 = cmd(&mut con, &["EXPIRE", "session:old", "50", "NX"]).await;
        assert_eq!((gt, nx), (0, 1));
        let at: i64 = cmd(&mut con, &["EXPIRETIME", "session:old"]).await;
        assert!(at > 1_700_000_000, "EXPIRETIME is a Unix time: {at}");
        // SETRANGE grows with zero bytes; GETRANGE and BITCOUNT read ranges.
        let len: i64 = cmd(&mut con, &["SETRANGE", "bytes", "3", "ab"]).await;
        assert_eq!(len, 5);
        let value: Vec<u8> = cmd(&mut con, &["GET", "bytes"]).await;
        assert_eq!(value, b"\0\0\0ab");
        let tail: String = cmd(&mut con, &["GETRANGE", "bytes", "-2", "-1"]).await;
        assert_eq!(tail, "ab");
        let _: () = cmd(&mut con, &["SET", "word", "foobar"]).await;
        let bits: i64 = cmd(&mut con, &["BITCOUNT", "word", "5", "30", "BIT"]).await;
        assert_eq!(bits, 17);
        let old: i64 = cmd(&mut con, &["SETBIT", "word", "7", "1"]).await;
        assert_eq!(old, 0);
        // LCS, COPY, OBJECT, TOUCH, RANDOMKEY.
        let _: () = cmd(&mut con, &["MSET", "key1", "ohmytext", "key2", "mynewtext"]).await;
        let lcs: String = cmd(&mut con, &["LCS", "key1", "key2"]).await;
        assert_eq!(lcs, "mytext");
        let copied: i64 = cmd(&mut con, &["COPY", "key1", "key3"]).await;
        assert_eq!(copied, 1);
        let encoding: String = cmd(&mut con, &["OBJECT", "ENCODING", "key3"]).await;
        assert_eq!(encoding, "embstr");
        let touched: i64 = cmd(&mut con, &["TOUCH", "key1", "key3", "nope"]).await;
        assert_eq!(touched, 2);
        let random: String = cmd(&mut con, &["RANDOMKEY"]).await;
        let exists: i64 = cmd(&mut con, &["EXISTS", &random]).await;
        assert_eq!(exists, 1, "RANDOMKEY drew {random:?}, which does not exist");
        // The other types stay unknown.
        let list: redis::RedisResult<i64> = redis::cmd("LPUSH").arg("l").arg("a").query_async(&mut con).await;
        let error = list.expect_err("LPUSH is unknown").to_string();
        assert!(error.contains("unknown command"), "{error}");
    });
}

#[test]
fn http_api_serves_keys_status_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n1"), &[]);
    assert_eq!(node.http("PUT", "/api/v1/kv/users.1.name", b"ann").0, 200);
    assert_eq!(node.http("PUT", "/api/v1/kv/a%2Fslash", b"s").0, 200);
    assert_eq!(node.http("GET", "/api/v1/kv/users.1.name", b""), (200, b"ann".to_vec()));
    assert_eq!(node.http("GET", "/api/v1/kv/a%2Fslash", b"").1, b"s");
    assert_eq!(node.http("GET", "/api/v1/kv/nope", b"").0, 404);
    assert_eq!(node.http("DELETE", "/api/v1/kv/users.1.name", b""), (200, br#"{"deleted":1}"#.to_vec()));
    assert_eq!(node.http("GET", "/api/v1/kv/users.1.name", b"").0, 404);
    assert_eq!(node.http("PUT", "/api/v1/kv/t?ttl_ms=-1", b"x").0, 400);
    let (status, body) = node.http("GET", "/api/v1/status", b"");
    let body = String::from_utf8(body).unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("\"keys\":1") && body.contains("\"id\":\"n1\""), "{body}");
    let (_, config) = node.http("GET", "/api/v1/config", b"");
    assert!(String::from_utf8_lossy(&config).contains("\"fsync\":\"always\""));
    assert_eq!(node.http("GET", "/health", b"").0, 200);
    assert_eq!(node.http("GET", "/ready", b"").0, 200);
    let metrics = String::from_utf8(node.http("GET", "/metrics", b"").1).unwrap();
    for name in ["replikv_fsync_total", "replikv_keys 1", "replikv_build_info", "replikv_fsync_duration_seconds"] {
        assert!(metrics.contains(name), "metrics lack {name}:\n{metrics}");
    }
}

/// redis-cli and redis-benchmark, when installed (`.ci/run` installs them), drive the node
/// unmodified.
#[test]
fn redis_cli_and_redis_benchmark_drive_the_node() {
    let have =
        |tool: &str| std::process::Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    if !have("redis-cli") || !have("redis-benchmark") {
        assert!(
            std::env::var_os("REPLIKV_REQUIRE_REDIS_TOOLS").is_none(),
            "REPLIKV_REQUIRE_REDIS_TOOLS is set but redis-cli or redis-benchmark is missing"
        );
        eprintln!("SKIPPED: redis-cli or redis-benchmark not installed (apt-get install redis-tools)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n1"), &[]);
    let port = node.resp_port.to_string();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli").args(["-p", &port]).args(args).output().unwrap();
        assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    assert_eq!(cli(&["SET", "tool", "cli"]), "OK");
    assert_eq!(cli(&["GET", "tool"]), "cli");
    assert_eq!(cli(&["INCRBY", "n", "5"]), "5");
    assert_eq!(cli(&["-3", "PING"]), "PONG");
    assert!(cli(&["INFO", "replication"]).contains("role:master"));
    let requests = 2000;
    let out = std::process::Command::new("redis-benchmark")
        .args([
            "-p",
            &port,
            "-t",
            "set,get,incr,mset",
            "-n",
            &requests.to_string(),
            "-r",
            "1000",
            "-c",
            "8",
            "-P",
            "4",
            "-q",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "redis-benchmark failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    for test in ["SET", "GET", "INCR", "MSET"] {
        let line = if test == "MSET" { "MSET (10 keys): ".to_string() } else { format!("{test}: ") };
        assert!(
            text.split(['\r', '\n']).any(|l| l.trim_start().starts_with(&line) && l.contains("requests per second")),
            "no {test} line in:\n{text}"
        );
    }
    // What redis-benchmark counted is what the node served.
    let info = cli(&["INFO", "stats"]);
    let served: u64 =
        info.lines().find_map(|l| l.strip_prefix("total_commands_processed:")).unwrap().trim().parse().unwrap();
    assert!(served >= 4 * requests, "node served {served} commands, fewer than the benchmark sent");
    assert!(cli(&["DBSIZE"]).parse::<u64>().unwrap() > 0);
}

#[test]
fn failed_fsync_stops_the_node_and_acknowledges_nothing_after() {
    let dir = tempfile::tempdir().unwrap();
    // The 40th flush fails; the node must not acknowledge the writes it carried, nor any later.
    let mut node = Node::start(&dir.path().join("n1"), &["--test-fail-fsync-after", "40"]);
    let rt = runtime();
    let acked: Vec<u32> = rt.block_on(async {
        let mut con = connect(&node).await;
        let mut acked = Vec::new();
        for i in 0..1000u32 {
            let set: redis::RedisResult<()> = redis::cmd("SET").arg(format!("k{i}")).arg(i).query_async(&mut con).await;
            match set {
                Ok(()) => acked.push(i),
                Err(e) => {
                    eprintln!("write {i} refused: {e}");
                    break;
                }
            }
        }
        acked
    });
    assert!(acked.len() < 1000, "writes kept being acknowledged after the failed fsync");
    let status = node.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "a node whose fsync failed exits 1; log:\n{}", node.log_text());
    assert!(node.log_text().contains("fsync failed"), "the log says why; log:\n{}", node.log_text());
    // The first flushes (the listener's PING and the writes before the failure) made it.
    assert!(acked.len() >= 30, "only {} writes acknowledged before the failure", acked.len());
}

#[test]
fn a_second_node_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n1");
    let _first = Node::start(&data, &[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_replikv"))
        .args(["node", "--resp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("in use by another replikv process (pid "), "{stderr}");
}

#[test]
fn a_segment_deleted_while_the_node_was_down_stops_it_at_start_naming_the_file() {
    // Issue 12, as reported: a deleted sealed segment was taken for a leftover of a
    // compaction, its hint removed, and the node served the other keys with no error.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n1");
    let flags = ["--segment-bytes-max", "65536"];
    let mut node = Node::start(&data, &flags);
    let mut con = sync_con(&node);
    let mut pipe = redis::pipe();
    for i in 0..10_000 {
        pipe.cmd("SET").arg(format!("key{i}")).arg(format!("value {i} {}", "v".repeat(60))).ignore();
    }
    pipe.query::<()>(&mut con).unwrap();
    drop(con);
    let status = node.terminate();
    assert!(status.success(), "SIGTERM exit status {status}; log:\n{}", node.log_text());
    let mut segments: Vec<std::path::PathBuf> = std::fs::read_dir(&data)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "several segments: {segments:?}");
    let deleted = &segments[1];
    std::fs::remove_file(deleted).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_replikv"))
        .args(["node", "--resp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(flags)
        .arg("--data-dir")
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A node that starts anyway would run until killed: give it a bounded time to refuse.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the node started without {}", deleted.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let named = format!("{} is listed in", deleted.display());
    assert!(stderr.contains(&named), "the error names the deleted segment: {stderr}");
}

#[test]
fn connection_limit_refuses_with_an_error_and_settings_follow_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "id = \"from-file\"\nconnections_max = 50\ntick_ms = 250\n").unwrap();
    // File says 50 connections, the environment 2, the flag names the file: env beats file.
    let node = Node::start_with_env(
        &dir.path().join("n1"),
        &["--config", config.to_str().unwrap(), "--tick-ms", "300"],
        &[("REPLIKV_CONNECTIONS_MAX", "2"), ("REPLIKV_TICK_MS", "400")],
    );
    let info = node.raw(b"CONFIG GET *\r\nQUIT\r\n", Duration::from_secs(2));
    let info = String::from_utf8_lossy(&info).to_string();
    let value = |name: &str| {
        let lines: Vec<&str> = info.split("\r\n").collect();
        let at = lines.iter().position(|l| *l == name).unwrap_or_else(|| panic!("no {name} in {info}"));
        lines[at + 2].to_string()
    };
    assert_eq!(value("id"), "from-file", "file over default");
    assert_eq!(value("connections_max"), "2", "environment over file");
    assert_eq!(value("tick_ms"), "300", "flag over environment");

    use std::io::{Read, Write};
    // The connections above (CONFIG GET's, the start's readiness probes) must be gone first.
    std::thread::sleep(Duration::from_millis(300));
    let first = std::net::TcpStream::connect(("127.0.0.1", node.resp_port)).unwrap();
    let second = std::net::TcpStream::connect(("127.0.0.1", node.resp_port)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = std::net::TcpStream::connect(("127.0.0.1", node.resp_port)).unwrap();
    third.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut refused = String::new();
    let _ = third.read_to_string(&mut refused);
    assert_eq!(refused, "-ERR max number of clients reached\r\n");
    drop((first, second));
    std::thread::sleep(Duration::from_millis(200));
    let mut again = std::net::TcpStream::connect(("127.0.0.1", node.resp_port)).unwrap();
    again.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    again.write_all(b"PING\r\n").unwrap();
    let mut pong = [0u8; 7];
    again.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"+PONG\r\n", "a freed slot is usable again");
}

/// A plain (blocking) RESP connection to `node`.
fn sync_con(node: &Node) -> redis::Connection {
    let con = redis::Client::open(node.url()).unwrap().get_connection_with_timeout(Duration::from_secs(10)).unwrap();
    con.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    con
}

/// `CONFIG GET name`'s value.
fn config_get(con: &mut redis::Connection, name: &str) -> String {
    let found: BTreeMap<String, String> = redis::cmd("CONFIG").arg("GET").arg(name).query(con).unwrap();
    found.get(name).cloned().unwrap_or_else(|| panic!("CONFIG GET {name}: {found:?}"))
}

/// `CONFIG SET` with `pairs`: OK, or the error's text.
fn config_set(con: &mut redis::Connection, pairs: &[&str]) -> Result<(), String> {
    redis::cmd("CONFIG").arg("SET").arg(pairs).query::<()>(con).map_err(|e| e.to_string())
}

#[test]
fn config_set_changes_running_settings_all_or_nothing_and_refuses_fixed_ones() {
    let dir = tempfile::tempdir().unwrap();
    // A cluster of one: it has replication settings, so ack_timeout_ms is one.
    let node = Node::start(&dir.path().join("n1"), &["--cluster", "solo"]);
    let mut con = sync_con(&node);
    let mut other = sync_con(&node); // open before the change: it must see it too
    let twenty = "0123456789abcdefghij";
    let _: () = redis::cmd("SET").arg("k").arg(twenty).query(&mut other).unwrap();

    assert_eq!(config_get(&mut con, "ack_timeout_ms"), "1000");
    // 20 bytes still fits every argument this test sends while the limit holds.
    config_set(&mut con, &["ack_timeout_ms", "250", "proto-max-bulk-len", "20"]).unwrap();
    assert_eq!(config_get(&mut con, "ack_timeout_ms"), "250");
    assert_eq!(config_get(&mut con, "proto-max-bulk-len"), "20");
    assert_eq!(config_get(&mut con, "bulk_bytes_max"), "20", "both names show the change");
    let (code, body) = node.http("GET", "/api/v1/config", b"");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((code, &json["cluster"]["replication"]["ack_timeout_ms"]), (200, &serde_json::json!(250)), "{json}");
    assert_eq!(json["bulk_bytes_max"], 20, "{json}");

    // The connection opened before the change is judged by the new limit at its next request.
    let _: () = redis::cmd("SET").arg("k").arg(twenty).query(&mut other).unwrap();
    let err = redis::cmd("SET").arg("k").arg(format!("{twenty}+")).query::<()>(&mut other).unwrap_err().to_string();
    assert!(err.contains("invalid bulk length"), "{err}");
    config_set(&mut con, &["proto-max-bulk-len", "536870912"]).unwrap();

    let err = config_set(&mut con, &["maxclients", "10", "multibulk_len_max", "0"]).unwrap_err();
    assert!(err.contains("argument 'multibulk_len_max'") && err.contains("multibulk_len_max must be greater than 0"));
    assert_eq!(config_get(&mut con, "maxclients"), "10000", "all or nothing: the good pair did not apply");
    let err = config_set(&mut con, &["acks", "sync"]).unwrap_err();
    let want = "CONFIG SET failed (possibly related to argument 'acks') - 'acks' cannot change while the node runs: \
                it is fixed at start (restart the node with the new value)";
    assert!(err.contains(want), "{err}");
    let err = config_set(&mut con, &["no-such-option", "1"]).unwrap_err();
    assert!(err.contains("Unknown option or number of arguments for CONFIG SET - 'no-such-option'"), "{err}");
    let err = redis::cmd("CONFIG").arg("REWRITE").query::<()>(&mut con).unwrap_err().to_string();
    assert!(err.contains("never writes its configuration file"), "{err}");

    // The log level changes the running filter: CONFIG SET's own info line shows only at notice.
    let logged = |node: &Node| node.log_text().matches("CONFIG SET settings=").count();
    assert_eq!(config_get(&mut con, "loglevel"), "notice", "RUST_LOG=info");
    let before = logged(&node);
    config_set(&mut con, &["loglevel", "warning"]).unwrap();
    config_set(&mut con, &["maxclients", "50"]).unwrap();
    assert_eq!((config_get(&mut con, "loglevel"), logged(&node)), ("warning".to_string(), before), "not logged");
    config_set(&mut con, &["loglevel", "notice"]).unwrap();
    assert_eq!(logged(&node), before + 1, "logged again at notice:\n{}", node.log_text());
}

#[test]
fn config_set_maxclients_refuses_new_connections_and_keeps_open_ones() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n1"), &[]);
    let mut first = sync_con(&node);
    // The start's readiness probe may not be closed on the node's side yet: it would count.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let info: String = redis::cmd("INFO").arg("clients").query(&mut first).unwrap();
        if info.contains("connected_clients:1\r\n") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "other clients stay connected: {info}");
        std::thread::sleep(Duration::from_millis(20));
    }
    config_set(&mut first, &["maxclients", "2"]).unwrap();
    let mut second = sync_con(&node);
    let refused = |node: &Node| {
        let mut third = std::net::TcpStream::connect(("127.0.0.1", node.resp_port)).unwrap();
        third.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut text = String::new();
        let _ = third.read_to_string(&mut text);
        text
    };
    assert_eq!(refused(&node), "-ERR max number of clients reached\r\n");
    config_set(&mut first, &["maxclients", "1"]).unwrap();
    for con in [&mut first, &mut second] {
        let pong: String = redis::cmd("PING").query(con).unwrap();
        assert_eq!(pong, "PONG", "open connections stay open under a lowered limit");
    }
    drop(second);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(refused(&node), "-ERR max number of clients reached\r\n", "one open, one at most");
    config_set(&mut first, &["maxclients", "3"]).unwrap();
    let pong: String = redis::cmd("PING").query(&mut sync_con(&node)).unwrap();
    assert_eq!(pong, "PONG", "a raised limit admits again");
}

/// `CLIENT LIST` (or `CLIENT INFO`) as one map of fields per line.
fn client_lines(con: &mut redis::Connection, args: &[&str]) -> Vec<BTreeMap<String, String>> {
    let text: String = redis::cmd("CLIENT").arg(args).query(con).unwrap();
    text.lines()
        .map(|line| {
            line.split(' ')
                .map(|field| field.split_once('=').unwrap_or_else(|| panic!("{field} in {line}")))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// `CLIENT LIST` once it shows `count` connections (others may still be closing).
fn wait_client_list(con: &mut redis::Connection, count: usize) -> Vec<BTreeMap<String, String>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = client_lines(con, &["LIST"]);
        if lines.len() == count {
            return lines;
        }
        assert!(Instant::now() < deadline, "CLIENT LIST never showed {count} connections: {lines:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn client_list_shows_every_connection_with_its_name_idle_time_and_last_command() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n1"), &[]);
    let (mut alpha, mut beta) = (sync_con(&node), sync_con(&node));
    let _: () = redis::cmd("CLIENT").arg("SETNAME").arg("alpha").query(&mut alpha).unwrap();
    let _: () = redis::cmd("CLIENT").arg("SETNAME").arg("beta").query(&mut beta).unwrap();
    std::thread::sleep(Duration::from_millis(1_100));
    let lines = wait_client_list(&mut alpha, 2);
    let line = |name: &str| lines.iter().find(|l| l["name"] == name).unwrap_or_else(|| panic!("{name}: {lines:?}"));
    let (a, b) = (line("alpha"), line("beta"));
    assert_eq!((a["cmd"].as_str(), a["idle"].as_str()), ("client|list", "0"), "the caller, now: {a:?}");
    assert_eq!(b["cmd"], "client|setname", "{b:?}");
    assert!(b["idle"].parse::<u64>().unwrap() >= 1, "beta has been idle a second: {b:?}");
    for l in [a, b] {
        assert!(l["age"].parse::<u64>().unwrap() >= l["idle"].parse::<u64>().unwrap(), "{l:?}");
        assert_eq!(l["laddr"], format!("127.0.0.1:{}", node.resp_port));
        assert_eq!((l["flags"].as_str(), l["db"].as_str(), l["multi"].as_str()), ("N", "0", "-1"));
        assert!(l["fd"].parse::<i32>().unwrap() > 0, "{l:?}");
    }
    assert_ne!(a["addr"], b["addr"]);
    let info = client_lines(&mut beta, &["INFO"]);
    assert_eq!((info.len(), info[0]["name"].as_str(), info[0]["cmd"].as_str()), (1, "beta", "client|info"));
    assert_eq!(client_lines(&mut alpha, &["LIST", "ID", &a["id"]]).len(), 1);

    let killed: i64 = redis::cmd("CLIENT").arg("KILL").arg("ID").arg(&b["id"]).query(&mut alpha).unwrap();
    assert_eq!(killed, 1);
    assert!(redis::cmd("PING").query::<String>(&mut beta).is_err(), "beta's connection is closed");
    let left = wait_client_list(&mut alpha, 1);
    assert_eq!(left[0]["name"], "alpha");
}

#[test]
fn idle_clients_are_closed_after_the_timeout_and_config_set_changes_it() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n1"), &["--idle-timeout-s", "1"]);
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", node.resp_port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    idle.write_all(b"PING\r\n").unwrap();
    let mut buf = [0u8; 64];
    let n = idle.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"+PONG\r\n");
    let started = Instant::now();
    assert_eq!(idle.read(&mut buf).unwrap(), 0, "closed by the node");
    assert!(started.elapsed() >= Duration::from_millis(900), "not before the timeout: {:?}", started.elapsed());
    // CONFIG SET timeout 0 (Redis's name): a client idle for longer stays.
    let mut con = redis::Client::open(node.url()).unwrap().get_connection().unwrap();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("timeout").arg(0).query(&mut con).unwrap();
    let shown: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("timeout").query(&mut con).unwrap();
    assert_eq!(shown, ["timeout", "0"]);
    std::thread::sleep(Duration::from_millis(1_500));
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG", "still open after 1.5 s idle");
    // A timeout set while a client already waits idle reaches it too.
    let mut waiting = std::net::TcpStream::connect(("127.0.0.1", node.resp_port)).unwrap();
    waiting.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    waiting.write_all(b"PING\r\n").unwrap();
    let n = waiting.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"+PONG\r\n");
    let _: () = redis::cmd("CONFIG").arg("SET").arg("timeout").arg(1).query(&mut con).unwrap();
    let read = waiting.read(&mut buf);
    assert!(matches!(read, Ok(0)), "the idle client is closed by the new timeout, not left waiting: {read:?}");
}

/// Flips a bit in the value of `value` in `segment`; returns the offset of the flipped byte.
fn rot(segment: &std::path::Path, value: &[u8]) -> usize {
    let mut bytes = std::fs::read(segment).unwrap();
    let at = bytes.windows(value.len()).position(|w| w == value).expect("the value is in the segment");
    bytes[at + value.len() - 1] ^= 0x01;
    std::fs::write(segment, bytes).unwrap();
    at
}

#[test]
fn a_damaged_record_is_refused_naming_its_file_while_the_node_serves_the_rest_and_stop_stops() {
    // Issue 12: one flipped byte in a sealed segment stopped the node at every read of the
    // key, after every restart.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n1");
    let mut node = Node::start(&data, &["--segment-bytes-max", "65536"]);
    let mut con = sync_con(&node);
    let mut pipe = redis::pipe();
    for i in 0..3_000 {
        pipe.cmd("SET").arg(format!("key{i}")).arg(format!("value {i} {}", "v".repeat(60))).ignore();
    }
    pipe.query::<()>(&mut con).unwrap();
    drop(con);
    // Hints are written when the node is idle: wait (bounded) for the first segment's.
    let deadline = Instant::now() + Duration::from_secs(20);
    while hinted_segments(&data).is_empty() {
        assert!(Instant::now() < deadline, "no hint file was written");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(node.terminate().success());
    let segment = hinted_segments(&data)[0].clone();
    rot(&segment, b"value 5 vvvv");
    node.restart();
    let mut con = sync_con(&node);
    let err = redis::cmd("GET").arg("key5").query::<Option<String>>(&mut con).unwrap_err();
    let text = format!("{err}");
    assert!(text.contains("DAMAGED") && text.contains(&segment.display().to_string()), "{text}");
    assert!(text.contains("offset"), "{text}");
    let good: String = redis::cmd("GET").arg("key6").query(&mut con).unwrap();
    assert!(good.starts_with("value 6 "), "the other keys are served: {good}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info: String = redis::cmd("INFO").arg("replication").query(&mut con).unwrap();
        let (code, body) = node.http("GET", "/api/v1/status", b"");
        let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if info.contains("replikv_degraded:1") && status["replication"]["damaged_keys"] == 1 {
            assert_eq!(code, 200);
            assert_eq!(status["replication"]["damaged"][0]["key"], "key5", "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "never said it is degraded: {info}\n{status}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(node.log_text().contains("a damaged record"), "logged: {}", node.log_text());
    // A write over the key repairs it.
    let _: () = redis::cmd("SET").arg("key5").arg("again").query(&mut con).unwrap();
    let value: String = redis::cmd("GET").arg("key5").query(&mut con).unwrap();
    assert_eq!(value, "again");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !redis::cmd("INFO").arg("replication").query::<String>(&mut con).unwrap().contains("replikv_degraded:0") {
        assert!(Instant::now() < deadline, "still degraded after the repair");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The engine then rewrites the damaged segment: its good records move, the file goes.
    let deadline = Instant::now() + Duration::from_secs(20);
    while segment.exists() {
        assert!(Instant::now() < deadline, "{} was never rewritten", segment.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    let moved: String = redis::cmd("GET").arg("key6").query(&mut con).unwrap();
    assert!(moved.starts_with("value 6 "), "a record moved out of the rewritten segment: {moved}");
    drop(con);
    // corruption = stop keeps the old behaviour: the read of a damaged record stops the node.
    assert!(node.terminate().success());
    let segment = hinted_segments(&data)
        .into_iter()
        .find(|s| std::fs::read(s).unwrap().windows(13).any(|w| w == b"value 2000 vv"))
        .expect("key2000 in a hinted segment");
    rot(&segment, b"value 2000 vvvv");
    node.set_flags(&["--segment-bytes-max", "65536", "--corruption", "stop"]);
    node.restart();
    let mut con = sync_con(&node);
    assert!(redis::cmd("GET").arg("key2000").query::<Option<String>>(&mut con).is_err());
    let status = node.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{}", node.log_text());
}
