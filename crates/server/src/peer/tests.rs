//! The transport over real TCP on 127.0.0.1: links, listeners and hand-made peers.

use super::frame::encode_frame;
use super::handshake;
use super::*;
use crate::error::Error;
use bytes::BytesMut;
use replikv_core::node::Mode;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// The replication messages stand-in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Msg {
    Seq(u64),
    Blob(Vec<u8>),
}

/// Runs `f`, failing the test if it takes more than 20 s.
async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f).await.expect("the test step timed out")
}

/// Polls `ready` every 5 ms until it holds.
async fn until(mut ready: impl FnMut() -> bool) {
    bounded(async {
        while !ready() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// A listener serving in a task, as node n1 of cluster demo.
struct Node {
    addr: SocketAddr,
    stats: ListenerStats,
    inbox: mpsc::Receiver<Inbound<Msg>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Node {
    /// Starts a listener on `addr` (port 0 for any) with `config`, delivering into a channel of
    /// `inbox_max` messages.
    async fn start(addr: &str, config: ListenerConfig, inbox_max: usize) -> Node {
        let tcp = TcpListener::bind(addr).await.unwrap();
        let listener = Listener::new(tcp, config);
        let addr = listener.local_addr().unwrap();
        let stats = listener.stats();
        let (tx, inbox) = mpsc::channel(inbox_max);
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(listener.serve(tx, shutdown));
        Node { addr, stats, inbox, stop, task }
    }

    /// Receives the next message, which must come from `from`.
    async fn recv_from(&mut self, from: &str) -> Msg {
        let (peer, message) = bounded(self.inbox.recv()).await.expect("the listener is gone");
        assert_eq!(&*peer, from);
        message
    }

    /// Stops the listener and waits for it.
    async fn stop(self) {
        self.stop.send(true).unwrap();
        bounded(self.task).await.unwrap();
    }

    /// The listener's last error, once it has one.
    async fn last_error(&self) -> String {
        until(|| self.stats.snapshot().last_error.is_some()).await;
        self.stats.snapshot().last_error.unwrap()
    }
}

/// n1's listener configuration, with a short handshake timeout.
fn n1() -> ListenerConfig {
    let mut config = ListenerConfig::new(Hello::new("demo", "n1"));
    config.handshake_timeout_ms = 1_000;
    config
}

/// A link from n2 to n1 at `addr`, with `local` as n2's Hello.
fn link_to(addr: SocketAddr, local: Hello) -> (Link<Msg>, watch::Sender<bool>) {
    let (stop, shutdown) = watch::channel(false);
    (Link::spawn(LinkConfig::new(local, "n1", addr.to_string()), shutdown), stop)
}

/// A hand-made peer `node_id` that has passed the handshake with n1 at `addr`.
async fn raw_peer(addr: SocketAddr, node_id: &str) -> TcpStream {
    let mut stream = bounded(TcpStream::connect(addr)).await.unwrap();
    bounded(handshake::dial(&mut stream, &Hello::new("demo", node_id), (Mode::SingleLeader, None, None), "n1", "test"))
        .await
        .unwrap();
    stream
}

/// `message` as a frame.
fn frame(message: &Msg) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_frame(message, FRAME_BYTES_MAX, &mut out).unwrap();
    out.to_vec()
}

/// Waits until the other side closed `stream` (end of stream or a reset).
async fn closed(stream: &mut TcpStream) {
    let mut byte = [0u8; 1];
    match bounded(stream.read(&mut byte)).await {
        Ok(0) | Err(_) => {}
        Ok(_) => panic!("a closed connection sent a byte"),
    }
}

/// The test's own end of a peer connection, as the listener names it.
fn named(node_id: &str, stream: &TcpStream) -> String {
    format!("{node_id} at {}", stream.local_addr().unwrap())
}

#[tokio::test]
async fn a_link_delivers_10000_messages_in_order() {
    let mut node = Node::start("127.0.0.1:0", n1(), 64).await;
    let (link, _stop) = link_to(node.addr, Hello::new("demo", "n2"));
    let sender = async {
        for seq in 0..10_000 {
            link.send(Msg::Seq(seq)).await.unwrap();
        }
    };
    let receiver = async {
        for seq in 0..10_000 {
            assert_eq!(node.recv_from("n2").await, Msg::Seq(seq));
        }
    };
    bounded(async { tokio::join!(sender, receiver) }).await;
    until(|| link.snapshot().frames_sent == 10_000).await;
    let (sent, received) = (link.snapshot(), node.stats.snapshot());
    assert_eq!(received.messages_received, 10_000);
    assert_eq!(sent.bytes_sent, received.bytes_received);
    assert_eq!((sent.dials, sent.reconnects, sent.messages_lost), (1, 0, 0));
    assert!(matches!(sent.state, LinkState::Connected { .. }), "{:?}", sent.state);
    assert_eq!(received.peers, vec!["n2".to_string()]);
}

#[tokio::test]
async fn an_oversized_length_closes_the_connection_before_its_bytes_arrive() {
    let mut config = n1();
    config.frame_bytes_max = 1024;
    let node = Node::start("127.0.0.1:0", config, 8).await;
    let mut peer = raw_peer(node.addr, "n3").await;
    // The header alone: the 1025 bytes it announces never come.
    peer.write_all(&1025u32.to_be_bytes()).await.unwrap();
    closed(&mut peer).await;
    let expected = format!("peer {}: frame of 1025 bytes exceeds the frame limit of 1024 bytes", named("n3", &peer));
    assert_eq!(node.last_error().await, expected);
    assert_eq!(node.stats.snapshot().failed, 1);
}

#[tokio::test]
async fn garbage_closes_only_its_own_connection() {
    let mut node = Node::start("127.0.0.1:0", n1(), 8).await;
    let mut good = raw_peer(node.addr, "n3").await;
    let mut bad = raw_peer(node.addr, "n2").await;
    good.write_all(&frame(&Msg::Seq(1))).await.unwrap();
    assert_eq!(node.recv_from("n3").await, Msg::Seq(1));
    // A whole frame whose payload names a variant Msg does not have.
    bad.write_all(&[0, 0, 0, 2, 9, 9]).await.unwrap();
    closed(&mut bad).await;
    let error = node.last_error().await;
    let prefix = format!("peer {}: frame of 2 bytes does not decode: ", named("n2", &bad));
    assert!(error.starts_with(&prefix), "{error}");
    good.write_all(&frame(&Msg::Blob(b"still here".to_vec()))).await.unwrap();
    assert_eq!(node.recv_from("n3").await, Msg::Blob(b"still here".to_vec()));
    until(|| node.stats.snapshot().peers == vec!["n3".to_string()]).await;
}

#[tokio::test]
async fn a_stream_cut_inside_a_frame_is_an_error() {
    let node = Node::start("127.0.0.1:0", n1(), 8).await;
    let mut peer = raw_peer(node.addr, "n2").await;
    peer.write_all(&[0, 0, 0, 10, 1, 2]).await.unwrap();
    peer.shutdown().await.unwrap();
    let expected =
        format!("peer {}: stream ended inside a frame: its header announced 10 bytes, 2 arrived", named("n2", &peer));
    assert_eq!(node.last_error().await, expected);
}

#[tokio::test]
async fn mismatched_handshakes_are_refused_with_both_values_and_the_link_backs_off() {
    /// A change to n2's Hello, and how the refusal starts and ends (the middle is n2's port).
    type Case = (fn(&mut Hello), &'static str, &'static str);
    let cases: [Case; 3] = [
        (
            |h| h.cluster_id = "other".into(),
            r#"cluster id mismatch: this node is in cluster "demo", peer n2 at "#,
            r#" says "other""#,
        ),
        (
            |h| h.protocol_version += 1,
            "peer protocol version mismatch: this node speaks version 14, peer n2 at ",
            " speaks version 15",
        ),
        (
            |h| h.storage_format_version += 1,
            "storage format version mismatch: this node has version 1, peer n2 at ",
            " has version 2, and log_format = \"physical\" ships storage segments, which only the same version \
             reads: upgrade through a logical log format",
        ),
    ];
    for (change, starts, ends) in cases {
        // A physical log's node: only it needs its peers' storage format to be its own.
        let mut config = n1();
        config.physical = Some(4096);
        let node = Node::start("127.0.0.1:0", config, 8).await;
        let mut hello = Hello::new("demo", "n2");
        change(&mut hello);
        let (link, _stop) = link_to(node.addr, hello);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let snapshot = link.snapshot();
        let LinkState::Refused { reason, .. } = &snapshot.state else {
            panic!("expected a refusal, got {:?}", snapshot.state)
        };
        assert!(reason.starts_with(starts) && reason.ends_with(ends), "{reason}");
        // Backoff 50, 50-100, 100-200, 200-400 ms: at most 5 dials in 500 ms, never a tight loop.
        assert!((2..=6).contains(&snapshot.dials), "{} dials in 500 ms", snapshot.dials);
        let refused = node.stats.snapshot().refused;
        assert!(refused >= snapshot.dials - 1 && refused <= snapshot.dials, "{refused} of {}", snapshot.dials);
        assert_eq!(node.stats.snapshot().welcomed, 0);
    }
}

#[tokio::test]
async fn nodes_of_a_logical_log_talk_across_storage_formats() {
    // The upgrade path of a physical cluster: logical nodes exchange records, not segments.
    let mut node = Node::start("127.0.0.1:0", n1(), 8).await;
    let mut hello = Hello::new("demo", "n2");
    hello.storage_format_version += 1;
    let (link, _stop) = link_to(node.addr, hello);
    link.try_send(Msg::Seq(7)).unwrap();
    assert_eq!(node.recv_from("n2").await, Msg::Seq(7));
    assert_eq!(node.stats.snapshot().welcomed, 1);
}

#[tokio::test]
async fn a_link_reconnects_after_the_listener_restarts_and_sends_what_was_queued() {
    let mut node = Node::start("127.0.0.1:0", n1(), 256).await;
    let addr = node.addr;
    let (link, _stop) = link_to(addr, Hello::new("demo", "n2"));
    for seq in 0..100 {
        link.try_send(Msg::Seq(seq)).unwrap();
    }
    for seq in 0..100 {
        assert_eq!(node.recv_from("n2").await, Msg::Seq(seq));
    }
    node.stop().await;
    // Queue only once the link saw the close: a message written into a dying connection is lost.
    until(|| !matches!(link.snapshot().state, LinkState::Connected { .. } | LinkState::Connecting)).await;
    for seq in 100..200 {
        link.try_send(Msg::Seq(seq)).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(link.snapshot().queued, 100, "the queue holds while the peer is down");
    let mut node = Node::start(&addr.to_string(), n1(), 256).await;
    for seq in 100..200 {
        assert_eq!(node.recv_from("n2").await, Msg::Seq(seq));
    }
    let snapshot = link.snapshot();
    assert_eq!((snapshot.reconnects, snapshot.messages_lost, snapshot.queued), (1, 0, 0));
    assert!(snapshot.dials >= 2);
}

#[tokio::test]
async fn try_send_on_a_full_queue_fails_at_once_and_send_waits() {
    // A port that is bound but never accepts: dials hang in its backlog, nothing leaves the queue.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = LinkConfig::new(Hello::new("demo", "n2"), "n1", silent.local_addr().unwrap().to_string());
    config.queue_messages_max = 4;
    let (_stop, shutdown) = watch::channel(false);
    let link = Link::<Msg>::spawn(config, shutdown);
    for seq in 0..4 {
        link.try_send(Msg::Seq(seq)).unwrap();
    }
    let error = bounded(async { link.try_send(Msg::Seq(4)) }).await.unwrap_err();
    assert!(matches!(error, Error::PeerQueueFull { messages_max: 4, .. }), "{error}");
    assert!(error.to_string().starts_with("peer n1 at 127.0.0.1:"), "{error}");
    assert_eq!(link.snapshot().queued, 4);
    let waited = tokio::time::timeout(Duration::from_millis(100), link.send(Msg::Seq(4))).await;
    assert!(waited.is_err(), "send must wait for room");
}

#[tokio::test]
async fn a_full_inbox_stops_the_reading_of_that_socket() {
    let mut node = Node::start("127.0.0.1:0", n1(), 2).await;
    let (link, _stop) = link_to(node.addr, Hello::new("demo", "n2"));
    for seq in 0..50 {
        link.try_send(Msg::Seq(seq)).unwrap();
    }
    until(|| link.snapshot().frames_sent == 50).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(node.stats.snapshot().messages_received, 2, "only what the channel holds is delivered");
    for seq in 0..50 {
        assert_eq!(node.recv_from("n2").await, Msg::Seq(seq));
    }
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_with_the_limit() {
    let mut config = n1();
    config.connections_max = 1;
    let node = Node::start("127.0.0.1:0", config, 8).await;
    let _first = raw_peer(node.addr, "n2").await;
    until(|| node.stats.snapshot().welcomed == 1).await;
    let mut second = TcpStream::connect(node.addr).await.unwrap();
    let refused = bounded(handshake::dial(
        &mut second,
        &Hello::new("demo", "n3"),
        (Mode::SingleLeader, None, None),
        "n1",
        "n1 at test",
    ))
    .await;
    let error = refused.unwrap_err();
    assert_eq!(
        error.to_string(),
        "peer n1 at test: handshake refused: too many peer connections: this node holds 1, its limit"
    );
    assert_eq!(node.stats.snapshot().refused, 1);
}

#[tokio::test]
async fn a_peer_of_another_replication_mode_is_refused_with_both_modes_named() {
    let node = Node::start("127.0.0.1:0", n1(), 8).await;
    let mut stream = bounded(TcpStream::connect(node.addr)).await.unwrap();
    let local = stream.local_addr().unwrap();
    handshake::write_handshake(&mut stream, &handshake::Handshake::Hello(Hello::new("demo", "n2")), "n1")
        .await
        .unwrap();
    let mode = handshake::Handshake::Mode { mode: "leaderless".into() };
    handshake::write_handshake(&mut stream, &mode, "n1").await.unwrap();
    let mut buf = BytesMut::new();
    let answer = bounded(super::frame::read_frame(&mut stream, &mut buf, handshake::HANDSHAKE_FRAME_BYTES_MAX, "n1"))
        .await
        .unwrap()
        .expect("an answer");
    let answer: handshake::Handshake = super::frame::decode_message(&answer).unwrap();
    let expected =
        format!("replication mode mismatch: this node runs single-leader, peer n2 at {local} runs leaderless");
    assert_eq!(answer, handshake::Handshake::Refused { reason: expected });
    assert_eq!(node.stats.snapshot().refused, 1);
    assert_eq!(node.stats.snapshot().welcomed, 0);
}

#[tokio::test]
async fn a_peer_that_sends_no_mode_after_its_hello_is_dropped_at_the_handshake_timeout() {
    let node = Node::start("127.0.0.1:0", n1(), 8).await;
    let mut stream = bounded(TcpStream::connect(node.addr)).await.unwrap();
    handshake::write_handshake(&mut stream, &handshake::Handshake::Hello(Hello::new("demo", "n2")), "n1")
        .await
        .unwrap();
    bounded(closed(&mut stream)).await;
    assert_eq!(node.stats.snapshot().welcomed, 0);
}

#[tokio::test]
async fn a_silent_peer_is_dropped_after_the_handshake_timeout() {
    let mut config = n1();
    config.handshake_timeout_ms = 200;
    let node = Node::start("127.0.0.1:0", config, 8).await;
    let mut silent = TcpStream::connect(node.addr).await.unwrap();
    let started = std::time::Instant::now();
    closed(&mut silent).await;
    assert!(started.elapsed() >= Duration::from_millis(150), "closed after {:?}", started.elapsed());
    let error = node.last_error().await;
    let expected =
        format!("peer at {}: waiting for its Hello: no progress within 200 ms", silent.local_addr().unwrap());
    assert_eq!(error, expected);
}

#[tokio::test]
async fn a_newer_connection_from_the_same_node_replaces_the_older() {
    let mut node = Node::start("127.0.0.1:0", n1(), 8).await;
    let mut older = raw_peer(node.addr, "n2").await;
    let started = std::time::Instant::now();
    let mut newer = raw_peer(node.addr, "n2").await;
    // Welcomed once the older connection closed on request, not after the 1 s handshake timeout.
    assert!(started.elapsed() < Duration::from_millis(500), "welcomed after {:?}", started.elapsed());
    closed(&mut older).await;
    newer.write_all(&frame(&Msg::Seq(7))).await.unwrap();
    assert_eq!(node.recv_from("n2").await, Msg::Seq(7));
    let snapshot = node.stats.snapshot();
    assert_eq!((snapshot.peers, snapshot.welcomed, snapshot.failed), (vec!["n2".to_string()], 2, 0));
    until(|| node.stats.snapshot().connections_open == 1).await;
}

#[tokio::test]
async fn shutdown_stops_the_listener_and_the_link() {
    let mut node = Node::start("127.0.0.1:0", n1(), 8).await;
    let (link, stop) = link_to(node.addr, Hello::new("demo", "n2"));
    link.send(Msg::Seq(1)).await.unwrap();
    assert_eq!(node.recv_from("n2").await, Msg::Seq(1));
    stop.send(true).unwrap();
    until(|| link.snapshot().state == LinkState::Stopped).await;
    let error = link.try_send(Msg::Seq(2)).unwrap_err();
    assert!(matches!(error, Error::PeerLinkStopped { .. }), "{error}");
    let addr = node.addr;
    node.stop().await;
    assert!(TcpStream::connect(addr).await.is_err(), "the port is closed once serve returns");
}

#[tokio::test]
async fn a_link_under_test_faults_discards_while_blocked_and_holds_while_delayed() {
    let mut node = Node::start("127.0.0.1:0", n1(), 64).await;
    let faults = std::sync::Arc::new(crate::faults::LinkFaults::new(["n1"]));
    let (_stop, shutdown) = watch::channel(false);
    let mut config = LinkConfig::new(Hello::new("demo", "n2"), "n1", node.addr.to_string());
    config.faults = Some(faults.clone());
    let link = Link::spawn(config, shutdown);
    link.send(Msg::Seq(0)).await.unwrap();
    assert_eq!(node.recv_from("n2").await, Msg::Seq(0));

    let blocked = crate::faults::LinkFault { blocked: true, ..Default::default() };
    faults.set("n1", blocked).unwrap();
    for seq in 1..=5 {
        link.send(Msg::Seq(seq)).await.unwrap();
    }
    until(|| link.snapshot().messages_lost == 5).await;

    faults.set("n1", crate::faults::LinkFault { delay_ms: 300, ..Default::default() }).unwrap();
    let sent = std::time::Instant::now();
    for seq in 6..=8 {
        link.send(Msg::Seq(seq)).await.unwrap();
    }
    for seq in 6..=8 {
        assert_eq!(node.recv_from("n2").await, Msg::Seq(seq), "held messages keep their order");
    }
    let held = sent.elapsed();
    assert!(held >= Duration::from_millis(300), "held only {held:?}");
    assert!(held < Duration::from_millis(900), "each held from its own queueing, not one after another: {held:?}");

    faults.clear();
    link.send(Msg::Seq(9)).await.unwrap();
    assert_eq!(node.recv_from("n2").await, Msg::Seq(9), "the blocked messages never arrive");
    assert_eq!((link.snapshot().messages_lost, link.snapshot().reconnects), (5, 0), "the connection stayed up");
}
