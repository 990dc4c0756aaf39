//! The peer handshake: the first frame each way, before any replication message.
//!
//! The dialing side sends [`Handshake::Hello`] with its cluster id, node id, peer protocol
//! version and storage format version, then [`Handshake::Mode`] with the replication mode it
//! runs (`single-leader`). The accepting side checks the Hello with [`check_hello`] and the
//! mode with [`check_mode`] (the mode frame is read only from a peer that speaks this
//! node's protocol version: an older one never sends it) and answers
//! [`Handshake::Welcome`] with its own node id, or [`Handshake::Refused`] with a reason that
//! names both sides' values, and then closes. The dialer checks that the node that welcomed
//! it is the node it meant to dial. Only then do replication messages flow, from dialer to
//! acceptor. The handshake is its own small vocabulary, apart from the replication messages, so
//! that a peer speaking another version is refused before any of its messages is decoded.
//!
//! # On the wire
//!
//! Each handshake message is one frame ([`super::frame`]) of at most
//! [`HANDSHAKE_FRAME_BYTES_MAX`] bytes, postcard-encoded. `Hello` from `n1` of cluster `demo`:
//!
//! ```text
//! 00 00 00 0b       frame length: 11
//! 00                variant 0: Hello
//! 04 64 65 6d 6f    cluster_id: length 4, "demo"
//! 02 6e 31          node_id: length 2, "n1"
//! 01                protocol_version: varint 1
//! 01                storage_format_version: varint 1
//! ```
//!
//! `Welcome` is variant 1 with a string, `Refused` variant 2 with a string, `Mode` variant 3
//! with a string (`03 0d` then `single-leader`).
//!
//! # Invariants
//!
//! - The layout of `Hello`, and the variant numbers of all four, never change, whatever the
//!   protocol version: they are how two versions find out that they differ. New fields go into
//!   their own handshake frame after the Hello (as the mode did, in version 5), read only from
//!   a peer of the same version, or into the replication messages, which only flow once both
//!   sides agreed on the version.
//! - An accepting node never welcomes a peer of another cluster, protocol version or
//!   replication mode (a physical log's segment size included), one that claims the accepting
//!   node's own id, or, with an allow-list, one not on it; nor, when its log is physical
//!   (`log_format = "physical"`), one of another storage format version, since it ships its
//!   segment files' bytes, which only the same format reads (the lecture's "closely coupled to
//!   the storage engine"). Nodes of another log format exchange records, so they may differ in
//!   storage format: that is how a cluster upgrades its storage format, through a logical log.
//!
//! # CAVEATS
//!
//! - No authentication: a node id is taken on its word. Anything that can reach the peer port
//!   and knows the cluster id can join the conversation. Keep peer ports on a private network.
//! - The versions must be equal; there is no range of versions both sides could agree on. A
//!   rolling upgrade across a protocol version is not possible yet.

use super::frame::{decode_message, encode_frame, read_frame};
use crate::error::{Error, Result};
use bytes::BytesMut;
use replikv_core::node::Mode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// The version of the peer protocol: the handshake and the replication messages. Raise it with any
/// change to a message sent between peers; nodes of different versions refuse each other.
pub const PEER_PROTOCOL_VERSION: u32 = 14;

/// The default time a handshake may take, in milliseconds, from dialing (or accepting) to the
/// answer; a peer that is silent longer is dropped.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;

/// The largest handshake frame, in bytes: a peer not yet known gets no more buffer than this.
pub const HANDSHAKE_FRAME_BYTES_MAX: usize = 4 * 1024;

/// The most bytes of a value a peer sent that are quoted in a refusal, so that a long or
/// hostile value cannot make the reason itself too large to send.
const QUOTED_BYTES_MAX: usize = 64;

/// The most allowed node ids a refusal lists.
const LISTED_IDS_MAX: usize = 16;

/// What a node says about itself when it opens a peer connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The cluster the node belongs to; nodes of different clusters never talk.
    pub cluster_id: String,
    /// The node's id, as in the cluster configuration (`n1`).
    pub node_id: String,
    /// The peer protocol version the node speaks ([`PEER_PROTOCOL_VERSION`]).
    pub protocol_version: u32,
    /// The node's storage format version (`replikv_core::storage::STORAGE_FORMAT_VERSION`).
    pub storage_format_version: u32,
}

impl Hello {
    /// This build's Hello for node `node_id` of cluster `cluster_id`.
    pub fn new(cluster_id: impl Into<String>, node_id: impl Into<String>) -> Hello {
        Hello {
            cluster_id: cluster_id.into(),
            node_id: node_id.into(),
            protocol_version: PEER_PROTOCOL_VERSION,
            storage_format_version: replikv_core::storage::STORAGE_FORMAT_VERSION,
        }
    }
}

/// The handshake's messages; the variant order is part of the wire format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Handshake {
    /// Sent by the dialing node as its first frame: who it is and what it speaks.
    Hello(Hello),
    /// Sent by the accepting node when the Hello passed its checks; messages may follow.
    Welcome {
        /// The accepting node's id, so the dialer can tell it reached the node it meant to.
        node_id: String,
    },
    /// Sent by the accepting node when the Hello failed a check; it closes the connection next.
    Refused {
        /// Why, naming both sides' values.
        reason: String,
    },
    /// Sent by the dialing node right after its Hello: the replication mode it runs
    /// ([`Mode::as_str`]); nodes of different modes never talk.
    Mode {
        /// `single-leader`, ...
        mode: String,
    },
}

/// Checks a peer's `hello` against this node's own (`local`) and, if given, the node ids this
/// node expects; `Err` holds the reason for a refusal. `addr` is where the peer connected from.
pub fn check_hello(
    local: &Hello,
    allowed: Option<&BTreeSet<String>>,
    hello: &Hello,
    addr: SocketAddr,
) -> Result<(), String> {
    let peer = format!("peer {} at {addr}", shown(&hello.node_id));
    if hello.cluster_id != local.cluster_id {
        return Err(format!(
            "cluster id mismatch: this node is in cluster {}, {peer} says {}",
            quoted(&local.cluster_id),
            quoted(&hello.cluster_id)
        ));
    }
    if hello.protocol_version != local.protocol_version {
        return Err(format!(
            "peer protocol version mismatch: this node speaks version {}, {peer} speaks version {}",
            local.protocol_version, hello.protocol_version
        ));
    }
    if hello.node_id.is_empty() {
        return Err(format!("empty node id: the peer at {addr} gave none"));
    }
    if hello.node_id == local.node_id {
        return Err(format!(
            "node id clash: {peer} says it is {}, which is this node's own id",
            quoted(&hello.node_id)
        ));
    }
    match allowed {
        Some(allowed) if !allowed.contains(&hello.node_id) => {
            let listed: Vec<String> = allowed.iter().take(LISTED_IDS_MAX).map(|id| quoted(id)).collect();
            let more = if allowed.len() > LISTED_IDS_MAX { ", ..." } else { "" };
            Err(format!(
                "unknown node id: {peer} says it is {}; this node ({}) expects one of {}{more}",
                quoted(&hello.node_id),
                shown(&local.node_id),
                listed.join(", ")
            ))
        }
        _ => Ok(()),
    }
}

/// Checks a peer's replication `mode` against this node's own (`local`); `Err` holds the
/// reason for a refusal, naming both. `peer` names the peer (`n2 at 127.0.0.1:7202`).
///
/// A node whose log is physical (`physical`: its `segment_bytes_max`) also refuses a peer
/// whose storage format version (`storage_versions`: this node's, then the peer's, from its
/// Hello) differs, naming both: it ships its segments' bytes, which only the same format reads.
/// Nodes of another log format exchange records, whatever their storage formats.
pub fn check_mode(
    (local, rules, physical): (Mode, Option<u64>, Option<u64>),
    mode: &str,
    peer: &str,
    (ours, theirs): (u32, u32),
) -> Result<(), String> {
    let label = mode_label(local, rules, physical);
    if physical.is_some() && ours != theirs {
        return Err(format!(
            "storage format version mismatch: this node has version {ours}, peer {peer} has version {theirs}, and \
             log_format = \"physical\" ships storage segments, which only the same version reads: upgrade through \
             a logical log format"
        ));
    }
    if mode == label {
        return Ok(());
    }
    let theirs = mode.strip_prefix("multi-leader rules:");
    if let (Some(ours), Some(theirs)) = (label.strip_prefix("multi-leader rules:"), theirs) {
        return Err(format!(
            "conflict rules mismatch: this node's resolve, merge_separator and [[conflicts]] hash to {ours}, peer \
             {peer}'s to {}: leaders with different rules never converge, so every node must read the same cluster file",
            shown(theirs)
        ));
    }
    Err(format!("replication mode mismatch: this node runs {label}, peer {peer} runs {}", shown(mode)))
}

/// What a node says of its replication mode in the handshake: the mode's name, and for a
/// multi-leader node the fingerprint of its conflict rules (`multi-leader rules:<16 hex>`),
/// which every node must share.
/// A node with a physical log (`physical`: its `segment_bytes_max`) says so, and its segment
/// size (`single-leader physical segment_bytes_max:67108864`): its followers' segments must end
/// where its own do.
pub fn mode_label(mode: Mode, rules: Option<u64>, physical: Option<u64>) -> String {
    match (rules, physical) {
        (Some(fingerprint), _) => format!("{} rules:{fingerprint:016x}", mode.as_str()),
        (None, Some(segment_bytes_max)) => format!("{} physical segment_bytes_max:{segment_bytes_max}", mode.as_str()),
        (None, None) => mode.as_str().to_string(),
    }
}

/// A value quoted for a message: in double quotes, escaped, cut to `QUOTED_BYTES_MAX` bytes.
fn quoted(value: &str) -> String {
    format!("{:?}", cut(value))
}

/// An id as it appears in a message: as it is when it is short and plain, else quoted.
pub(crate) fn shown(id: &str) -> String {
    let plain = !id.is_empty() && id.len() <= QUOTED_BYTES_MAX && id.bytes().all(|b| b.is_ascii_graphic());
    if plain {
        id.to_string()
    } else {
        quoted(id)
    }
}

/// The longest prefix of `value` of at most `QUOTED_BYTES_MAX` bytes that ends on a character.
fn cut(value: &str) -> &str {
    let mut end = value.len().min(QUOTED_BYTES_MAX);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// Writes one handshake message to `stream`. `peer` names the other side in errors.
pub async fn write_handshake<S: AsyncWrite + Unpin>(stream: &mut S, message: &Handshake, peer: &str) -> Result<()> {
    write_handshakes(stream, std::slice::from_ref(message), peer).await
}

/// Writes handshake messages to `stream` in one write, so that a peer that reads only the
/// first (an older version refusing the Hello) finds the rest already in its buffer rather
/// than arriving after it closed, which would reset the connection and hide its reason.
async fn write_handshakes<S: AsyncWrite + Unpin>(stream: &mut S, messages: &[Handshake], peer: &str) -> Result<()> {
    let mut out = BytesMut::new();
    for message in messages {
        encode_frame(message, HANDSHAKE_FRAME_BYTES_MAX, &mut out).map_err(|e| Error::peer_protocol(peer, e))?;
    }
    stream.write_all(&out).await.map_err(|e| Error::peer_io(peer, "writing the handshake", e))
}

/// Reads the peer's first frame into `buf`, which must be a `Hello`. Bytes after it stay in `buf`.
pub async fn read_hello<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut BytesMut, peer: &str) -> Result<Hello> {
    let payload = read_frame(stream, buf, HANDSHAKE_FRAME_BYTES_MAX, peer).await?.ok_or_else(|| {
        Error::peer_io(peer, "waiting for its Hello", closed("closed the connection before its Hello"))
    })?;
    match decode_message::<Handshake>(&payload).map_err(|e| Error::peer_protocol(peer, e))? {
        Handshake::Hello(hello) => Ok(hello),
        other => Err(Error::peer_protocol(peer, format!("sent {} as its first frame, not a Hello", name(&other)))),
    }
}

/// Reads the frame after a peer's Hello into `buf`, which must be its `Mode`, and returns the
/// mode it names. Bytes after it stay in `buf`.
pub async fn read_mode<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut BytesMut, peer: &str) -> Result<String> {
    let payload = read_frame(stream, buf, HANDSHAKE_FRAME_BYTES_MAX, peer).await?.ok_or_else(|| {
        Error::peer_io(peer, "waiting for its replication mode", closed("closed the connection after its Hello"))
    })?;
    match decode_message::<Handshake>(&payload).map_err(|e| Error::peer_protocol(peer, e))? {
        Handshake::Mode { mode } => Ok(mode),
        other => Err(Error::peer_protocol(peer, format!("sent {} after its Hello, not its mode", name(&other)))),
    }
}

/// The dialing side of the handshake on a fresh connection: sends `local` and `mode`, reads the
/// answer, and checks that it comes from node `peer_node_id`. A refusal is
/// [`Error::PeerRefused`].
pub async fn dial<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    local: &Hello,
    (mode, rules, physical): (Mode, Option<u64>, Option<u64>),
    peer_node_id: &str,
    peer: &str,
) -> Result<()> {
    let mode = Handshake::Mode { mode: mode_label(mode, rules, physical) };
    write_handshakes(stream, &[Handshake::Hello(local.clone()), mode], peer).await?;
    let mut buf = BytesMut::new();
    let answer = read_frame(stream, &mut buf, HANDSHAKE_FRAME_BYTES_MAX, peer).await?.ok_or_else(|| {
        Error::peer_io(peer, "waiting for the handshake answer", closed("closed the connection before answering"))
    })?;
    match decode_message::<Handshake>(&answer).map_err(|e| Error::peer_protocol(peer, e))? {
        Handshake::Welcome { node_id } if node_id == peer_node_id => {}
        Handshake::Welcome { node_id } => {
            let reason = format!(
                "wrong node: this node dialed {}, the node there says it is {}",
                shown(peer_node_id),
                quoted(&node_id)
            );
            return Err(Error::PeerRefused { peer: peer.to_string(), reason });
        }
        Handshake::Refused { reason } => return Err(Error::PeerRefused { peer: peer.to_string(), reason }),
        other @ (Handshake::Hello(_) | Handshake::Mode { .. }) => {
            return Err(Error::peer_protocol(peer, format!("answered a Hello with {}", name(&other))))
        }
    }
    if !buf.is_empty() {
        return Err(Error::peer_protocol(peer, format!("sent {} bytes after its Welcome", buf.len())));
    }
    Ok(())
}

/// The name of a handshake message, for errors.
fn name(message: &Handshake) -> &'static str {
    match message {
        Handshake::Hello(_) => "a Hello",
        Handshake::Welcome { .. } => "a Welcome",
        Handshake::Refused { .. } => "a Refused",
        Handshake::Mode { .. } => "a Mode",
    }
}

/// An I/O error for a connection closed at the wrong time.
fn closed(what: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:7202".parse().unwrap()
    }

    fn hello(cluster: &str, node: &str) -> Hello {
        Hello::new(cluster, node)
    }

    #[test]
    fn hello_is_encoded_as_documented() {
        let mut out = BytesMut::new();
        let hello =
            Hello { cluster_id: "demo".into(), node_id: "n1".into(), protocol_version: 1, storage_format_version: 1 };
        encode_frame(&Handshake::Hello(hello), HANDSHAKE_FRAME_BYTES_MAX, &mut out).unwrap();
        assert_eq!(&out[..], &[0, 0, 0, 0x0b, 0, 4, b'd', b'e', b'm', b'o', 2, b'n', b'1', 1, 1]);
        out.clear();
        encode_frame(&Handshake::Welcome { node_id: "n2".into() }, HANDSHAKE_FRAME_BYTES_MAX, &mut out).unwrap();
        assert_eq!(&out[..], &[0, 0, 0, 4, 1, 2, b'n', b'2']);
        out.clear();
        encode_frame(&Handshake::Refused { reason: "no".into() }, HANDSHAKE_FRAME_BYTES_MAX, &mut out).unwrap();
        assert_eq!(&out[..], &[0, 0, 0, 4, 2, 2, b'n', b'o']);
    }

    /// The refusal of a peer that speaks protocol version 99 (this node's version is spelled
    /// out here: the test must change when the version does).
    const PROTOCOL_MISMATCH_99: &str =
        "peer protocol version mismatch: this node speaks version 14, peer n2 at 127.0.0.1:7202 speaks version 99";

    #[test]
    fn check_mode_refuses_another_mode_naming_both() {
        let check = |terms, mode: &str| check_mode(terms, mode, "n2 at x", (1, 1));
        assert_eq!(check((Mode::SingleLeader, None, None), "single-leader"), Ok(()));
        assert_eq!(
            check((Mode::SingleLeader, None, None), "leaderless"),
            Err("replication mode mismatch: this node runs single-leader, peer n2 at x runs leaderless".to_string())
        );
        let ours = mode_label(Mode::MultiLeader, Some(0xab), None);
        assert_eq!(ours, "multi-leader rules:00000000000000ab");
        assert_eq!(check((Mode::MultiLeader, Some(0xab), None), &ours), Ok(()));
        let err = check((Mode::MultiLeader, Some(0xcd), None), &ours).unwrap_err();
        assert!(err.starts_with("conflict rules mismatch: this node's resolve, merge_separator and [[conflicts]] hash to 00000000000000cd, peer n2 at x's to 00000000000000ab"), "{err}");
        assert_eq!(
            check((Mode::SingleLeader, None, None), ""),
            Err(r#"replication mode mismatch: this node runs single-leader, peer n2 at x runs """#.to_string())
        );
        let mut out = BytesMut::new();
        encode_frame(&Handshake::Mode { mode: "single-leader".into() }, HANDSHAKE_FRAME_BYTES_MAX, &mut out).unwrap();
        assert_eq!(&out[..6], &[0, 0, 0, 15, 3, 13], "variant 3, then the mode's length");
    }

    #[test]
    fn a_physical_log_refuses_another_storage_format_naming_both() {
        let physical = (Mode::SingleLeader, None, Some(4096));
        let label = mode_label(Mode::SingleLeader, None, Some(4096));
        assert_eq!(label, "single-leader physical segment_bytes_max:4096");
        assert_eq!(check_mode(physical, &label, "n2 at x", (1, 1)), Ok(()));
        let err = check_mode(physical, &label, "n2 at x", (1, 7)).unwrap_err();
        assert!(
            err.starts_with("storage format version mismatch: this node has version 1, peer n2 at x has version 7"),
            "{err}"
        );
        assert!(err.contains("upgrade through a logical log format"), "{err}");
        // A logical log ships records: storage formats may differ (the upgrade path).
        assert_eq!(check_mode((Mode::SingleLeader, None, None), "single-leader", "n2 at x", (1, 7)), Ok(()));
        // Physical and logical nodes, or physical ones of other segment sizes, never talk.
        assert_eq!(
            check_mode((Mode::SingleLeader, None, None), &label, "n2 at x", (1, 1)),
            Err("replication mode mismatch: this node runs single-leader, peer n2 at x runs \"single-leader physical \
                 segment_bytes_max:4096\""
                .to_string())
        );
        let err = check_mode((Mode::SingleLeader, None, Some(8192)), &label, "n2 at x", (1, 1)).unwrap_err();
        assert!(err.contains("segment_bytes_max:8192") && err.contains("segment_bytes_max:4096"), "{err}");
    }

    #[test]
    fn check_hello_refuses_with_both_sides_values() {
        let local = hello("demo", "n1");
        let allowed: BTreeSet<String> = ["n2", "n3"].iter().map(|s| s.to_string()).collect();
        let with = |f: fn(&mut Hello)| {
            let mut h = hello("demo", "n2");
            f(&mut h);
            h
        };
        /// A peer's Hello, the allow-list, and the expected verdict.
        type Case<'a> = (Hello, Option<&'a BTreeSet<String>>, Result<(), &'a str>);
        let cases: Vec<Case> = vec![
            (hello("demo", "n2"), None, Ok(())),
            (hello("demo", "n2"), Some(&allowed), Ok(())),
            (hello("demo", "n9"), None, Ok(())),
            (
                hello("other", "n2"),
                None,
                Err(r#"cluster id mismatch: this node is in cluster "demo", peer n2 at 127.0.0.1:7202 says "other""#),
            ),
            (with(|h| h.protocol_version = 99), None, Err(PROTOCOL_MISMATCH_99)),
            // Checked with the mode: only a physical log needs the same storage format.
            (with(|h| h.storage_format_version = 7), None, Ok(())),
            (hello("demo", ""), None, Err("empty node id: the peer at 127.0.0.1:7202 gave none")),
            (
                hello("demo", "n1"),
                None,
                Err(r#"node id clash: peer n1 at 127.0.0.1:7202 says it is "n1", which is this node's own id"#),
            ),
            (
                hello("demo", "n9"),
                Some(&allowed),
                Err(
                    r#"unknown node id: peer n9 at 127.0.0.1:7202 says it is "n9"; this node (n1) expects one of "n2", "n3""#,
                ),
            ),
            (
                hello("demo", "a b"),
                Some(&allowed),
                Err(
                    r#"unknown node id: peer "a b" at 127.0.0.1:7202 says it is "a b"; this node (n1) expects one of "n2", "n3""#,
                ),
            ),
        ];
        for (peer, allowed, expected) in cases {
            let got = check_hello(&local, allowed, &peer, addr());
            assert_eq!(got.as_ref().map(|_| ()).map_err(String::as_str), expected, "{peer:?}");
        }
    }

    #[test]
    fn a_long_value_is_cut_in_a_refusal() {
        let local = hello("demo", "n1");
        let long = "é".repeat(1000);
        let reason = check_hello(&local, None, &hello(&long, "n2"), addr()).unwrap_err();
        assert!(reason.len() < 200, "{reason}");
        assert!(reason.ends_with(&format!("says \"{}\"", "é".repeat(QUOTED_BYTES_MAX / 2))), "{reason}");
    }

    #[tokio::test]
    async fn dial_turns_each_answer_into_its_result() {
        let welcome = |id: &str| Handshake::Welcome { node_id: id.into() };
        let refused = Handshake::Refused { reason: "cluster id mismatch: ...".into() };
        let cases = vec![
            (welcome("n2"), "ok".to_string()),
            (refused, "peer n2 at x: handshake refused: cluster id mismatch: ...".to_string()),
            (
                welcome("n3"),
                r#"peer n2 at x: handshake refused: wrong node: this node dialed n2, the node there says it is "n3""#
                    .into(),
            ),
            (Handshake::Hello(hello("demo", "n2")), "peer n2 at x: answered a Hello with a Hello".into()),
            (Handshake::Mode { mode: "x".into() }, "peer n2 at x: answered a Hello with a Mode".into()),
        ];
        for (answer, expected) in cases {
            let (mut near, mut far) = tokio::io::duplex(1024);
            let acceptor = tokio::spawn(async move {
                let mut buf = BytesMut::new();
                let hello = read_hello(&mut far, &mut buf, "n1 at y").await.unwrap();
                let mode = read_mode(&mut far, &mut buf, "n1 at y").await.unwrap();
                write_handshake(&mut far, &answer, "n1 at y").await.unwrap();
                (hello, mode)
            });
            let got = dial(&mut near, &hello("demo", "n1"), (Mode::SingleLeader, None, None), "n2", "n2 at x").await;
            let got = got.map(|()| "ok".to_string()).unwrap_or_else(|e| e.to_string());
            assert_eq!(got, expected);
            assert_eq!(acceptor.await.unwrap(), (hello("demo", "n1"), "single-leader".to_string()));
        }
    }

    #[tokio::test]
    async fn a_first_frame_that_is_not_a_hello_is_a_protocol_error() {
        let (mut near, mut far) = tokio::io::duplex(1024);
        write_handshake(&mut near, &Handshake::Welcome { node_id: "n2".into() }, "x").await.unwrap();
        let error = read_hello(&mut far, &mut BytesMut::new(), "at 127.0.0.1:9").await.unwrap_err();
        assert_eq!(error.to_string(), "peer at 127.0.0.1:9: sent a Welcome as its first frame, not a Hello");
        drop(near);
        let error = read_hello(&mut far, &mut BytesMut::new(), "at 127.0.0.1:9").await.unwrap_err();
        assert!(error.to_string().contains("closed the connection before its Hello"), "{error}");
    }
}
