//! A minimal RESP client: commands out as multibulk arrays, replies in, pipelined.
//!
//! A command is encoded as RESP's array of bulk strings, the form every server accepts:
//!
//! ```text
//! *<argc>\r\n  then for each argument  $<len>\r\n<bytes>\r\n
//! ```
//!
//! Replies are parsed by their first byte: `+` simple string, `-` error, `:` integer, `$` bulk
//! string (`$-1` is RESP2's null), `*` array (`*-1` is RESP2's null array, elements parsed
//! recursively), `_` RESP3's null. The client never sends `HELLO 3`, so the connection stays on
//! RESP2 and other RESP3 types are a protocol error. [`parse_reply`] looks at buffered bytes only:
//! an incomplete reply is `Ok(None)` (read more and try again), never an error, and it returns how
//! many bytes the reply took so the caller can drop them.
//!
//! Pipelining is the caller's: [`Client::push`] appends commands to the write buffer,
//! [`Client::flush`] sends them all in one write, and [`Client::read_reply`] returns replies in
//! order. The caller bounds every call with a deadline; this module has no clock.
//!
//! CAVEATS
//! - No RESP3 maps, sets, doubles, booleans or pushes: a server that sends them unasked is not
//!   speaking RESP2, and the connection fails with a protocol error.
//! - Parsing an incomplete array starts over when more bytes arrive; replies here are short.

use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest bulk string accepted in a reply, Redis's `proto-max-bulk-len`.
pub const BULK_BYTES_MAX: usize = 512 * 1024 * 1024;
/// The most elements accepted in one reply array.
pub const ARRAY_LEN_MAX: usize = 1 << 20;
/// How deeply reply arrays may nest.
pub const DEPTH_MAX: usize = 16;
/// The longest line (simple string, error, length) accepted before its `\r\n`.
pub const LINE_BYTES_MAX: usize = 64 * 1024;
/// Free space made in the read buffer before each read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// A parsed reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Simple(Vec<u8>),
    /// `-ERR ...`: the whole message.
    Error(Vec<u8>),
    /// `:42`.
    Integer(i64),
    /// `$3\r\nabc`.
    Bulk(Vec<u8>),
    /// `*2\r\n...`.
    Array(Vec<Reply>),
    /// `$-1`, `*-1` or `_`.
    Null,
}

/// Why a connection cannot go on.
#[derive(Debug)]
pub enum ClientError {
    /// The socket failed, or the server closed it.
    Io(io::Error),
    /// The server sent bytes that are not a RESP2 reply.
    Protocol(String),
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

/// Appends `args` to `out` as a RESP multibulk command.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    use std::io::Write;
    write!(out, "*{}\r\n", args.len()).expect("writing to a Vec cannot fail");
    for arg in args {
        write!(out, "${}\r\n", arg.len()).expect("writing to a Vec cannot fail");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses one reply from the front of `buf`: the reply and the bytes it took, `None` if `buf`
/// holds only part of one, or an error if the bytes cannot be a reply.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    parse_at(buf, 0, 0)
}

/// Parses the reply starting at `pos`; returns it and the position after it.
fn parse_at(buf: &[u8], pos: usize, depth: usize) -> Result<Option<(Reply, usize)>, String> {
    let Some(&kind) = buf.get(pos) else { return Ok(None) };
    let Some((line, after)) = line(buf, pos + 1)? else { return Ok(None) };
    let reply = match kind {
        b'+' => Reply::Simple(line.to_vec()),
        b'-' => Reply::Error(line.to_vec()),
        b':' => Reply::Integer(integer(line)?),
        b'_' if line.is_empty() => Reply::Null,
        b'$' => return bulk(buf, after, integer(line)?),
        b'*' => return array(buf, after, integer(line)?, depth),
        _ => return Err(format!("unexpected reply type byte 0x{kind:02x}")),
    };
    Ok(Some((reply, after)))
}

/// The line starting at `pos` (without its `\r\n`) and the position after the `\r\n`.
fn line(buf: &[u8], pos: usize) -> Result<Option<(&[u8], usize)>, String> {
    let rest = &buf[pos.min(buf.len())..];
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(end) if end > LINE_BYTES_MAX => Err(format!("reply line of {end} bytes")),
        Some(end) => Ok(Some((&rest[..end], pos + end + 2))),
        None if rest.len() > LINE_BYTES_MAX + 1 => Err(format!("reply line over {LINE_BYTES_MAX} bytes")),
        None => Ok(None),
    }
}

/// A decimal integer, optionally negative.
fn integer(line: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an integer: {:?}", String::from_utf8_lossy(line)))
}

/// A bulk string of `len` bytes starting at `pos`.
fn bulk(buf: &[u8], pos: usize, len: i64) -> Result<Option<(Reply, usize)>, String> {
    if len == -1 {
        return Ok(Some((Reply::Null, pos)));
    }
    let len = usize::try_from(len).map_err(|_| format!("bulk length {len}"))?;
    if len > BULK_BYTES_MAX {
        return Err(format!("bulk of {len} bytes, over {BULK_BYTES_MAX}"));
    }
    if buf.len() < pos + len + 2 {
        return Ok(None);
    }
    if &buf[pos + len..pos + len + 2] != b"\r\n" {
        return Err("bulk string not followed by \\r\\n".to_string());
    }
    Ok(Some((Reply::Bulk(buf[pos..pos + len].to_vec()), pos + len + 2)))
}

/// An array of `len` replies starting at `pos`.
fn array(buf: &[u8], mut pos: usize, len: i64, depth: usize) -> Result<Option<(Reply, usize)>, String> {
    if len == -1 {
        return Ok(Some((Reply::Null, pos)));
    }
    let len = usize::try_from(len).map_err(|_| format!("array length {len}"))?;
    if len > ARRAY_LEN_MAX {
        return Err(format!("array of {len} elements, over {ARRAY_LEN_MAX}"));
    }
    if depth >= DEPTH_MAX {
        return Err(format!("arrays nested deeper than {DEPTH_MAX}"));
    }
    let mut items = Vec::with_capacity(len.min(1024));
    for _ in 0..len {
        let Some((item, after)) = parse_at(buf, pos, depth + 1)? else { return Ok(None) };
        items.push(item);
        pos = after;
    }
    Ok(Some((Reply::Array(items), pos)))
}

/// One TCP connection to a RESP server, with its buffers.
pub struct Client {
    /// The socket.
    stream: TcpStream,
    /// Bytes read and not yet parsed start at `read_pos`.
    read_buf: Vec<u8>,
    /// Where the unparsed bytes of `read_buf` start.
    read_pos: usize,
    /// Commands pushed and not yet flushed.
    write_buf: Vec<u8>,
}

impl Client {
    /// Connects to `addr` (`host:port`), with Nagle's algorithm off.
    pub async fn connect(addr: &str) -> io::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Client { stream, read_buf: Vec::with_capacity(READ_CHUNK_BYTES), read_pos: 0, write_buf: Vec::new() })
    }

    /// Queues a command; nothing is sent before [`Client::flush`].
    pub fn push(&mut self, args: &[&[u8]]) {
        encode_command(&mut self.write_buf, args);
    }

    /// Whether commands are queued.
    pub fn has_pending(&self) -> bool {
        !self.write_buf.is_empty()
    }

    /// Sends every queued command.
    pub async fn flush(&mut self) -> io::Result<()> {
        self.stream.write_all(&self.write_buf).await?;
        self.write_buf.clear();
        Ok(())
    }

    /// The next reply, reading from the socket as needed.
    pub async fn read_reply(&mut self) -> Result<Reply, ClientError> {
        loop {
            match parse_reply(&self.read_buf[self.read_pos..]).map_err(ClientError::Protocol)? {
                Some((reply, used)) => {
                    self.read_pos += used;
                    if self.read_pos == self.read_buf.len() {
                        self.read_buf.clear();
                        self.read_pos = 0;
                    }
                    return Ok(reply);
                }
                None => self.fill().await?,
            }
        }
    }

    /// Reads more bytes, dropping parsed ones first.
    async fn fill(&mut self) -> Result<(), ClientError> {
        if self.read_pos > 0 {
            self.read_buf.drain(..self.read_pos);
            self.read_pos = 0;
        }
        self.read_buf.reserve(READ_CHUNK_BYTES);
        match self.stream.read_buf(&mut self.read_buf).await? {
            0 => Err(ClientError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection"))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }

    #[test]
    fn complete_replies_parse_and_report_their_length() {
        let table: &[(&[u8], Reply)] = &[
            (b"+OK\r\n", Reply::Simple(b"OK".to_vec())),
            (b"-ERR unknown command 'x'\r\n", Reply::Error(b"ERR unknown command 'x'".to_vec())),
            (b":42\r\n", Reply::Integer(42)),
            (b":-7\r\n", Reply::Integer(-7)),
            (b"$3\r\nabc\r\n", bulk("abc")),
            (b"$0\r\n\r\n", bulk("")),
            (b"$4\r\na\r\nb\r\n", bulk("a\r\nb")),
            (b"$-1\r\n", Reply::Null),
            (b"*-1\r\n", Reply::Null),
            (b"_\r\n", Reply::Null),
            (b"*0\r\n", Reply::Array(vec![])),
            (b"*2\r\n$1\r\na\r\n:1\r\n", Reply::Array(vec![bulk("a"), Reply::Integer(1)])),
            (
                b"*2\r\n*1\r\n+x\r\n$-1\r\n",
                Reply::Array(vec![Reply::Array(vec![Reply::Simple(b"x".to_vec())]), Reply::Null]),
            ),
        ];
        for (bytes, want) in table {
            let (got, used) = parse_reply(bytes).unwrap().unwrap_or_else(|| panic!("incomplete: {bytes:?}"));
            assert_eq!(&got, want, "{:?}", String::from_utf8_lossy(bytes));
            assert_eq!(used, bytes.len(), "{:?}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn every_prefix_of_a_reply_is_incomplete_not_an_error() {
        let replies: &[&[u8]] = &[b"+OK\r\n", b"$3\r\nabc\r\n", b"*2\r\n$1\r\na\r\n:1\r\n", b"$-1\r\n", b"_\r\n"];
        for bytes in replies {
            for cut in 0..bytes.len() {
                assert_eq!(parse_reply(&bytes[..cut]), Ok(None), "{:?} cut at {cut}", String::from_utf8_lossy(bytes));
            }
        }
    }

    #[test]
    fn pipelined_replies_parse_one_at_a_time() {
        let bytes = b"+OK\r\n$1\r\nv\r\n:3\r\n";
        let mut pos = 0;
        let mut got = Vec::new();
        while let Some((reply, used)) = parse_reply(&bytes[pos..]).unwrap() {
            got.push(reply);
            pos += used;
        }
        assert_eq!(got, vec![Reply::Simple(b"OK".to_vec()), bulk("v"), Reply::Integer(3)]);
        assert_eq!(pos, bytes.len());
    }

    #[test]
    fn malformed_replies_are_errors() {
        let nested = "*1\r\n".repeat(DEPTH_MAX + 1) + ":1\r\n";
        let table: Vec<&[u8]> = vec![
            b"?what\r\n",
            b":12x\r\n",
            b"$abc\r\n",
            b"$-2\r\n",
            b"$3\r\nabcXY",
            b"*-5\r\n",
            b"%1\r\n",
            b"_x\r\n",
            nested.as_bytes(),
        ];
        for bytes in table {
            assert!(parse_reply(bytes).is_err(), "{:?} parsed", String::from_utf8_lossy(bytes));
        }
        let huge = format!("${}\r\n", BULK_BYTES_MAX + 1);
        assert!(parse_reply(huge.as_bytes()).is_err());
        let endless = vec![b'+'; LINE_BYTES_MAX + 10];
        assert!(parse_reply(&endless).is_err());
    }

    #[test]
    fn commands_encode_as_multibulk() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"SET", b"k", b""]);
        encode_command(&mut out, &[b"WAIT", b"1", b"10"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$2\r\n10\r\n");
    }
}
