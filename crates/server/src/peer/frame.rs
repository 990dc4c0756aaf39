//! Peer framing: messages into length-prefixed frames, and frames out of a stream's bytes.
//!
//! This module knows how a frame is cut and nothing of what it means: [`decode_frame`] hands back
//! a payload without looking inside it, and [`decode_message`] turns a payload into a message
//! without knowing where it came from. The handshake and the replication messages both ride on it.
//!
//! # On the wire
//!
//! ```text
//! +----------------+------------------------------+
//! | length: u32 BE | payload: `length` bytes      |
//! +----------------+------------------------------+
//!   4 bytes          0 ..= frame_bytes_max bytes of postcard
//! ```
//!
//! The length counts the payload only, not its own 4 bytes. The payload is one message in
//! postcard's encoding (varint integers, length-prefixed strings and sequences, enum variants as a
//! varint index), and nothing else: bytes left over after the message are an error.
//!
//! # Promises
//!
//! - **Nothing is consumed until a whole frame is there.** `Ok(None)` means "read more", and the
//!   buffer is left exactly as it was; every proper prefix of a valid frame gives `Ok(None)`.
//! - **A length over the limit fails as soon as its 4 bytes arrive**, before any of the bytes it
//!   announces, so a peer cannot make this side buffer more than `frame_bytes_max`.
//! - **A message over the limit is refused while it is encoded**, once its bytes pass the limit,
//!   and the output buffer is left as it was.
//! - **Errors name what and how large**: the frame's length, the limit, the bytes that arrived;
//!   the caller adds where (the peer and its address). Nothing here panics on any input.
//!
//! # CAVEATS
//!
//! - No checksum: TCP's is trusted, as by every TCP protocol here. A flipped bit that TCP misses
//!   shows up as an undecodable payload at best, a wrong message at worst.
//! - postcard's encoding has no field names and no schema: a peer built with a different message
//!   type decodes garbage or fails. The handshake's protocol version is what keeps such peers
//!   apart; raise `PEER_PROTOCOL_VERSION` with every change to a message sent between peers.

use crate::error::{Error, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The default largest frame payload, in bytes: 64 MiB, room for a large batch of log records.
pub const FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;

// A follower forwards a whole transaction in one frame: its queued arguments, its watched
// keys and their encoding must fit.
const _: () = assert!(
    replikv_core::kv::MULTI_QUEUED_BYTES_MAX
        + replikv_core::kv::WATCHED_BYTES_MAX
        + replikv_core::kv::EXEC_OVERHEAD_BYTES_MAX
        < FRAME_BYTES_MAX
);

/// The bytes of a frame's length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Bytes a reader asks the socket for per read at least (the buffer grows for large frames).
pub const READ_BYTES_MIN: usize = 16 * 1024;

/// A frame that breaks the framing or a payload that is no message; the connection it came on
/// is closed, since nothing after it in the stream can be trusted to be aligned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A length prefix over the limit.
    TooLarge {
        /// The payload length the header announced, in bytes.
        len: u64,
        /// The limit it broke, in bytes.
        max: usize,
    },
    /// The stream ended inside a frame.
    Truncated {
        /// The payload length the frame's header announced, or `None` if the header itself was cut.
        len: Option<u64>,
        /// The bytes of the frame that did arrive, header included.
        received: usize,
    },
    /// A payload that is not an encoding of the message expected.
    Undecodable {
        /// The payload's length, in bytes.
        len: usize,
        /// postcard's reason.
        reason: String,
    },
    /// A payload that holds a whole message and then more bytes.
    TrailingBytes {
        /// The payload's length, in bytes.
        len: usize,
        /// The bytes the message used.
        used: usize,
    },
    /// A message to send whose encoding passes the limit; it was not encoded to the end.
    MessageTooLarge {
        /// The bytes encoded when the limit was passed: the message takes at least as many.
        len_at_least: u64,
        /// The limit it broke, in bytes.
        max: usize,
    },
    /// A message that cannot be encoded (its `Serialize` failed).
    Unencodable {
        /// postcard's reason.
        reason: String,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the frame limit of {max} bytes")
            }
            FrameError::Truncated { len: Some(len), received } => write!(
                f,
                "stream ended inside a frame: its header announced {len} bytes, {} arrived",
                received - FRAME_HEADER_BYTES
            ),
            FrameError::Truncated { len: None, received } => {
                write!(f, "stream ended inside a frame header: {received} of {FRAME_HEADER_BYTES} bytes arrived")
            }
            FrameError::Undecodable { len, reason } => write!(f, "frame of {len} bytes does not decode: {reason}"),
            FrameError::TrailingBytes { len, used } => {
                write!(f, "frame of {len} bytes holds a message of {used} bytes and {} bytes more", len - used)
            }
            FrameError::MessageTooLarge { len_at_least, max } => {
                write!(f, "message of at least {len_at_least} bytes exceeds the frame limit of {max} bytes")
            }
            FrameError::Unencodable { reason } => write!(f, "message does not encode: {reason}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Appends `message` to `out` as one frame and returns the frame's bytes, header included.
///
/// A message whose payload would pass `frame_bytes_max` (or `u32::MAX`) fails with
/// [`FrameError::MessageTooLarge`] as soon as its encoding passes the limit; `out` is then as it was.
pub fn encode_frame<T: Serialize + ?Sized>(
    message: &T,
    frame_bytes_max: usize,
    out: &mut BytesMut,
) -> Result<usize, FrameError> {
    let start = out.len();
    let max = frame_bytes_max.min(u32::MAX as usize);
    out.put_u32(0);
    let mut writer = BoundedWriter { out: &mut *out, room: max, refused: None };
    let encoded = postcard::to_io(message, &mut writer).map(|_| ());
    let refused = writer.refused;
    let len = out.len() - start - FRAME_HEADER_BYTES;
    if let Err(e) = encoded {
        out.truncate(start);
        if let Some(refused) = refused {
            let len_at_least = (len + refused) as u64;
            return Err(FrameError::MessageTooLarge { len_at_least, max: frame_bytes_max });
        }
        return Err(FrameError::Unencodable { reason: e.to_string() });
    }
    let header = u32::try_from(len).expect("the writer keeps the payload within u32::MAX");
    out[start..start + FRAME_HEADER_BYTES].copy_from_slice(&header.to_be_bytes());
    Ok(FRAME_HEADER_BYTES + len)
}

/// An `io::Write` into a buffer that refuses to take it past `room` bytes.
struct BoundedWriter<'a> {
    /// Where the bytes go.
    out: &'a mut BytesMut,
    /// Bytes it may still take.
    room: usize,
    /// The length of the write refused for want of room, if one was.
    refused: Option<usize>,
}

impl std::io::Write for BoundedWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if bytes.len() > self.room {
            self.refused = Some(bytes.len());
            return Err(std::io::Error::other("frame limit reached"));
        }
        self.room -= bytes.len();
        self.out.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Cuts the first frame off `buf` and returns its payload, or `Ok(None)` (buffer untouched) if
/// the frame is not complete yet. A length prefix over `frame_bytes_max` fails at once.
pub fn decode_frame(buf: &mut BytesMut, frame_bytes_max: usize) -> Result<Option<Bytes>, FrameError> {
    let Some(header) = buf.get(..FRAME_HEADER_BYTES) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(header.try_into().expect("4 bytes")) as usize;
    if len > frame_bytes_max {
        return Err(FrameError::TooLarge { len: len as u64, max: frame_bytes_max });
    }
    if buf.len() < FRAME_HEADER_BYTES + len {
        return Ok(None);
    }
    buf.advance(FRAME_HEADER_BYTES);
    Ok(Some(buf.split_to(len).freeze()))
}

/// The error for a stream that ended with `buf` left over, or `Ok` if nothing was left: a
/// stream may end between frames, never inside one.
pub fn check_end_of_stream(buf: &[u8]) -> Result<(), FrameError> {
    match buf.len() {
        0 => Ok(()),
        received if received < FRAME_HEADER_BYTES => Err(FrameError::Truncated { len: None, received }),
        received => {
            let len = u32::from_be_bytes(buf[..FRAME_HEADER_BYTES].try_into().expect("4 bytes"));
            Err(FrameError::Truncated { len: Some(len.into()), received })
        }
    }
}

/// Decodes one whole message from a frame's payload; bytes left over are an error.
pub fn decode_message<M: DeserializeOwned>(payload: &[u8]) -> Result<M, FrameError> {
    let undecodable = |e: postcard::Error| FrameError::Undecodable { len: payload.len(), reason: e.to_string() };
    let (message, rest) = postcard::take_from_bytes(payload).map_err(undecodable)?;
    if !rest.is_empty() {
        return Err(FrameError::TrailingBytes { len: payload.len(), used: payload.len() - rest.len() });
    }
    Ok(message)
}

/// Reads from `stream` into `buf` until a whole frame is there and returns its payload, or
/// `Ok(None)` when the stream ends cleanly between frames. `peer` names the other side in errors.
///
/// Cancel safe: bytes read before a cancellation stay in `buf` for the next call.
pub async fn read_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    frame_bytes_max: usize,
    peer: &str,
) -> Result<Option<Bytes>> {
    loop {
        if let Some(payload) = decode_frame(buf, frame_bytes_max).map_err(|e| Error::peer_protocol(peer, e))? {
            return Ok(Some(payload));
        }
        buf.reserve(READ_BYTES_MIN);
        let read = stream.read_buf(buf).await.map_err(|e| Error::peer_io(peer, "reading", e))?;
        if read == 0 {
            check_end_of_stream(buf).map_err(|e| Error::peer_protocol(peer, e))?;
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// A message with a little of every shape postcard encodes.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    enum Sample {
        Empty,
        Number(u32),
        Text(String),
        Bytes(Vec<u8>),
        Pair { lsn: u64, flag: bool },
    }

    /// Messages and their exact frames, header included.
    fn table() -> Vec<(Sample, Vec<u8>)> {
        vec![
            (Sample::Empty, vec![0, 0, 0, 1, 0]),
            (Sample::Number(7), vec![0, 0, 0, 2, 1, 7]),
            // 300 is the varint 0xAC 0x02.
            (Sample::Number(300), vec![0, 0, 0, 3, 1, 0xAC, 0x02]),
            (Sample::Text("hé".into()), vec![0, 0, 0, 5, 2, 3, b'h', 0xC3, 0xA9]),
            (Sample::Bytes(vec![]), vec![0, 0, 0, 2, 3, 0]),
            (Sample::Bytes(vec![0xFF; 3]), vec![0, 0, 0, 5, 3, 3, 0xFF, 0xFF, 0xFF]),
            (Sample::Pair { lsn: 1, flag: true }, vec![0, 0, 0, 3, 4, 1, 1]),
        ]
    }

    #[test]
    fn frames_round_trip_byte_for_byte() {
        for (message, bytes) in table() {
            let mut out = BytesMut::new();
            let written = encode_frame(&message, FRAME_BYTES_MAX, &mut out).unwrap();
            assert_eq!(&out[..], &bytes[..], "{message:?}");
            assert_eq!(written, bytes.len());
            let payload = decode_frame(&mut out, FRAME_BYTES_MAX).unwrap().unwrap();
            assert_eq!(decode_message::<Sample>(&payload).unwrap(), message);
            assert!(out.is_empty(), "{message:?} left {out:?}");
        }
    }

    #[test]
    fn every_prefix_of_a_frame_is_incomplete_not_an_error() {
        for (message, bytes) in table() {
            for cut in 0..bytes.len() {
                let mut buf = BytesMut::from(&bytes[..cut]);
                assert_eq!(decode_frame(&mut buf, FRAME_BYTES_MAX), Ok(None), "{message:?} cut at {cut}");
                assert_eq!(&buf[..], &bytes[..cut], "an incomplete frame must leave the buffer alone");
                assert!(check_end_of_stream(&buf).is_err() || cut == 0, "{message:?} cut at {cut} is truncated");
            }
        }
    }

    #[test]
    fn frames_in_one_buffer_come_out_in_order_leaving_the_partial_one() {
        let mut buf = BytesMut::new();
        for (message, _) in table() {
            encode_frame(&message, FRAME_BYTES_MAX, &mut buf).unwrap();
        }
        buf.extend_from_slice(&[0, 0, 0, 9, 1]);
        for (message, _) in table() {
            let payload = decode_frame(&mut buf, FRAME_BYTES_MAX).unwrap().unwrap();
            assert_eq!(decode_message::<Sample>(&payload).unwrap(), message);
        }
        assert_eq!(decode_frame(&mut buf, FRAME_BYTES_MAX), Ok(None));
        assert_eq!(&buf[..], &[0, 0, 0, 9, 1]);
    }

    #[test]
    fn a_length_over_the_limit_fails_from_its_header_alone() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 17][..]);
        assert_eq!(decode_frame(&mut buf, 16), Err(FrameError::TooLarge { len: 17, max: 16 }));
        // At the limit it is only incomplete.
        let mut buf = BytesMut::from(&[0u8, 0, 0, 16][..]);
        assert_eq!(decode_frame(&mut buf, 16), Ok(None));
        // The largest length a header can say, against the default limit.
        let mut buf = BytesMut::from(&[0xFFu8, 0xFF, 0xFF, 0xFF][..]);
        let error = decode_frame(&mut buf, FRAME_BYTES_MAX).unwrap_err();
        assert_eq!(error.to_string(), "frame of 4294967295 bytes exceeds the frame limit of 67108864 bytes");
    }

    #[test]
    fn a_message_over_the_limit_is_refused_and_leaves_the_buffer_alone() {
        let mut out = BytesMut::from(&b"before"[..]);
        let big = Sample::Bytes(vec![1; 100]);
        let error = encode_frame(&big, 64, &mut out).unwrap_err();
        assert!(
            matches!(error, FrameError::MessageTooLarge { len_at_least, max: 64 } if len_at_least > 64),
            "{error:?}"
        );
        assert!(error.to_string().ends_with("exceeds the frame limit of 64 bytes"), "{error}");
        assert_eq!(&out[..], b"before");
        // The same message fits a limit of its own size exactly: 1 tag, 1 length, 100 bytes.
        assert_eq!(encode_frame(&big, 102, &mut out), Ok(106));
    }

    #[test]
    fn payloads_that_are_not_the_message_fail_with_their_length() {
        let cases: Vec<(&[u8], &str)> = vec![
            (&[9], "frame of 1 bytes does not decode: "),
            (&[], "frame of 0 bytes does not decode: "),
            (&[2, 5, b'a'], "frame of 3 bytes does not decode: "),
            (&[2, 2, 0xC3, 0x28], "frame of 4 bytes does not decode: "),
            (&[1, 7, 0], "frame of 3 bytes holds a message of 2 bytes and 1 bytes more"),
        ];
        for (payload, text) in cases {
            let error = decode_message::<Sample>(payload).unwrap_err();
            assert!(error.to_string().starts_with(text), "{payload:?}: {error}");
        }
    }

    #[test]
    fn a_stream_may_end_between_frames_but_not_inside_one() {
        assert_eq!(check_end_of_stream(&[]), Ok(()));
        let error = check_end_of_stream(&[0, 0]).unwrap_err();
        assert_eq!(error.to_string(), "stream ended inside a frame header: 2 of 4 bytes arrived");
        let error = check_end_of_stream(&[0, 0, 0, 10, 1, 2, 3]).unwrap_err();
        assert_eq!(error, FrameError::Truncated { len: Some(10), received: 7 });
        assert_eq!(error.to_string(), "stream ended inside a frame: its header announced 10 bytes, 3 arrived");
    }

    #[tokio::test]
    async fn read_frame_reads_across_chunks_and_names_the_peer_in_errors() {
        let mut bytes = Vec::new();
        for (_, frame) in table() {
            bytes.extend_from_slice(&frame);
        }
        bytes.extend_from_slice(&[0, 0, 0, 5, 1]);
        let (mut client, mut server) = tokio::io::duplex(3);
        let writer = tokio::spawn(async move {
            tokio::io::AsyncWriteExt::write_all(&mut client, &bytes).await.unwrap();
        });
        let mut buf = BytesMut::new();
        for (message, _) in table() {
            let payload = read_frame(&mut server, &mut buf, FRAME_BYTES_MAX, "n2 at test").await.unwrap().unwrap();
            assert_eq!(decode_message::<Sample>(&payload).unwrap(), message);
        }
        writer.await.unwrap();
        let error = read_frame(&mut server, &mut buf, FRAME_BYTES_MAX, "n2 at test").await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "peer n2 at test: stream ended inside a frame: its header announced 5 bytes, 1 arrived"
        );
    }
}
