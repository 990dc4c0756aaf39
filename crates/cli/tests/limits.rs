//! End-to-end tests of a node's limits on clients: HTTP connections, HTTP head and body
//! timeouts, and the node-wide bound on bytes of incomplete requests. Real `replikv`
//! processes on 127.0.0.1, plain TCP clients that misbehave on purpose. Every timeout is
//! set short by a flag, and every wait is bounded.

mod common;

use common::Node;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// How long a test waits for something the node must do soon, at most.
const WAIT: Duration = Duration::from_secs(10);

/// A TCP connection to `port` whose reads give up after `WAIT`.
fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
}

/// Everything the node sends on `stream` until it closes it (bounded by the read timeout).
fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let result = stream.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if let Err(e) = result {
        assert!(e.kind() == ErrorKind::ConnectionReset, "not closed within {WAIT:?} ({e}); got {text:?}");
    }
    text
}

/// One HTTP/1.1 response on a keep-alive connection: its status and body.
fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "closed inside a response head: {bytes:?}");
        bytes.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
    let length: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length: ")).map_or(0, |n| n.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    (head.split(' ').nth(1).unwrap().parse().unwrap(), String::from_utf8_lossy(&body).into_owned())
}

/// The node's `/api/v1/status`.
fn status(node: &Node) -> serde_json::Value {
    let (code, body) = node.http("GET", "/api/v1/status", b"");
    assert_eq!(code, 200);
    serde_json::from_slice(&body).unwrap()
}

/// Waits (bounded) until the node's bytes of incomplete requests satisfy `done`.
fn wait_buffered(node: &Node, what: &str, done: impl Fn(u64) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let bytes = status(node)["query_buffer_bytes"].as_u64().expect("query_buffer_bytes in the status");
        if done(bytes) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: the node buffers {bytes} bytes after {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_http_client_trickling_its_head_is_closed_at_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n1"), &["--http-header-timeout-ms", "500"]);
    // About 13 s of head at one byte per 100 ms: the node must not wait for the end of it.
    let head = format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(100));
    let started = Instant::now();
    let mut slow = connect(node.http_port());
    slow.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut sent = 0;
    let closed = loop {
        if sent == head.len() || slow.write_all(&head.as_bytes()[sent..sent + 1]).is_err() {
            break sent < head.len();
        }
        sent += 1;
        let mut reply = [0u8; 256];
        match slow.read(&mut reply) {
            Ok(0) => break true,
            Ok(n) => panic!("answered after {sent} bytes: {:?}", String::from_utf8_lossy(&reply[..n])),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {} // still open
            Err(_) => break true,                                                           // reset
        }
    };
    assert!(closed, "the whole {}-byte head went through", head.len());
    assert!(started.elapsed() >= Duration::from_millis(500), "closed before the timeout: {:?}", started.elapsed());
    assert_eq!(node.http("GET", "/health", b"").0, 200, "a prompt client is served");
}

#[test]
fn a_stalled_http_body_gets_408_and_its_connection_closes() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n1"), &["--http-body-timeout-ms", "500"]);
    let mut stalled = connect(node.http_port());
    let head = "PUT /api/v1/kv/stalled HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n";
    stalled.write_all(head.as_bytes()).unwrap();
    stalled.write_all(&[b'x'; 10]).unwrap();
    let answer = read_until_closed(&mut stalled);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains("http_body_timeout_ms"), "the error names the setting: {answer}");
    assert_eq!(node.http("GET", "/api/v1/kv/stalled", b"").0, 404, "nothing was stored");
    assert_eq!(node.http("PUT", "/api/v1/kv/prompt", b"value").0, 200, "a whole body in time is stored");
    assert_eq!(node.http("GET", "/api/v1/kv/prompt", b""), (200, b"value".to_vec()));
}

#[test]
fn http_connections_past_the_limit_get_503_while_open_ones_work_and_a_freed_slot_serves_again() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n1"), &["--http-connections-max", "2"]);
    let get = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let mut open: Vec<TcpStream> = (0..2).map(|_| connect(node.http_port())).collect();
    for stream in &mut open {
        stream.write_all(get).unwrap();
        assert_eq!(read_response(stream), (200, "ok\n".to_string()), "admitted");
    }
    let refused = read_until_closed(&mut connect(node.http_port()));
    assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
    assert!(refused.contains("http_connections_max"), "the error names the setting: {refused}");
    for stream in &mut open {
        stream.write_all(get).unwrap();
        assert_eq!(read_response(stream).0, 200, "the open connections still work");
    }
    assert!(node.log_text().contains("HTTP connections are open (http_connections_max)"), "the refusal is logged");
    drop(open.pop());
    // The node sees the close when its task reads the end of the stream: retry until then.
    let deadline = Instant::now() + WAIT;
    loop {
        let mut stream = connect(node.http_port());
        stream.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
        let answer = read_until_closed(&mut stream);
        if answer.starts_with("HTTP/1.1 200 ") {
            break;
        }
        assert!(answer.starts_with("HTTP/1.1 503 ") || answer.is_empty(), "{answer}");
        assert!(Instant::now() < deadline, "the freed slot was not usable within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The start of a RESP `SET key <value of value_bytes>` whose value is still to come.
fn set_head(key: &str, value_bytes: usize) -> Vec<u8> {
    format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${value_bytes}\r\n", key.len()).into_bytes()
}

#[test]
fn past_the_node_wide_bound_the_connection_buffering_the_most_is_closed_and_the_rest_work() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n1"), &["--query-buffer-total-bytes-max", "1000000"]);
    let mut normal = redis::Client::open(node.url()).unwrap().get_connection().unwrap();
    let _: () = redis::cmd("SET").arg("before").arg("1").query(&mut normal).unwrap();

    // The big one: 700 kB of a 10 MB value (each under its own 1 GiB bound).
    let mut big = connect(node.resp_port);
    let mut sent = set_head("big", 10_000_000);
    sent.extend_from_slice(&[b'a'; 700_000]);
    big.write_all(&sent).unwrap();
    let big_bytes = sent.len() as u64;
    wait_buffered(&node, "the big request", |n| n == big_bytes);
    // The small one: 250 kB of a 400 kB value, 950 kB in all: within the bound.
    let mut small = connect(node.resp_port);
    let mut head = set_head("small", 400_000);
    head.extend_from_slice(&[b'b'; 250_000]);
    small.write_all(&head).unwrap();
    wait_buffered(&node, "both requests", |n| n == big_bytes + head.len() as u64);
    // 100 kB more of the small one takes the node over; the small one is still incomplete
    // (350 kB of 400 kB), and the big one holds twice as much.
    small.write_all(&[b'b'; 100_000]).unwrap();
    let answer = read_until_closed(&mut big);
    assert!(answer.starts_with("-ERR closing this connection"), "{answer}");
    assert!(answer.contains("query_buffer_total_bytes_max of 1000000 bytes"), "names the limit: {answer}");
    let log = node.log_text();
    let big_addr = big.local_addr().unwrap().to_string();
    assert!(log.contains("query_buffer_total_bytes_max") && log.contains(&big_addr), "logged with {big_addr}:\n{log}");

    small.write_all(&[b'b'; 50_000]).unwrap();
    small.write_all(b"\r\n").unwrap();
    let mut reply = [0u8; 5];
    small.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"+OK\r\n", "the smaller request went through");
    let stored: Vec<u8> = redis::cmd("GET").arg("small").query(&mut normal).unwrap();
    assert_eq!(stored, vec![b'b'; 400_000]);
    let before: String = redis::cmd("GET").arg("before").query(&mut normal).unwrap();
    assert_eq!(before, "1", "the normal client is unaffected");
    wait_buffered(&node, "nothing incomplete left", |n| n == 0);
}

#[test]
fn an_http_body_being_read_counts_in_the_node_wide_bound() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n1"), &["--query-buffer-total-bytes-max", "1000000"]);
    let mut upload = connect(node.http_port());
    let head = "PUT /api/v1/kv/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 900000\r\n\r\n";
    upload.write_all(head.as_bytes()).unwrap();
    upload.write_all(&[b'u'; 700_000]).unwrap();
    wait_buffered(&node, "the upload", |n| n == 700_000);
    let mut small = connect(node.resp_port);
    let mut sent = set_head("small", 400_000);
    sent.extend_from_slice(&[b'b'; 350_000]);
    small.write_all(&sent).unwrap();
    let answer = read_until_closed(&mut upload);
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("query_buffer_total_bytes_max"), "names the limit: {answer}");
    small.write_all(&[b'b'; 50_000]).unwrap();
    small.write_all(b"\r\n").unwrap();
    let mut reply = [0u8; 5];
    small.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"+OK\r\n");
    assert_eq!(node.http("GET", "/api/v1/kv/upload", b"").0, 404, "the upload was not stored");
}

#[test]
fn sigterm_closes_idle_http_connections_at_once_and_answers_a_request_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(&dir.path().join("n1"), &[]);
    let mut idle = connect(node.http_port());
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut idle).0, 200);
    // A PUT whose body is half sent when the node is told to stop.
    let mut busy = connect(node.http_port());
    busy.write_all(b"PUT /api/v1/kv/late HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\n\r\nla").unwrap();
    wait_buffered(&node, "the half body", |n| n == 2);
    node.signal(libc::SIGTERM);
    assert_eq!(read_until_closed(&mut idle), "", "the idle connection closes without a word");
    busy.write_all(b"te").unwrap();
    let answer = read_until_closed(&mut busy);
    assert!(answer.starts_with("HTTP/1.1 200 "), "the request in flight is answered: {answer}");
    assert!(node.wait_exit(WAIT).success(), "clean exit");
    assert!(!node.log_text().contains("HTTP clients still busy"), "nothing held the drain:\n{}", node.log_text());
}
