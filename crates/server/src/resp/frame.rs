//! RESP framing: requests out of a connection's bytes, replies into bytes.
//!
//! This module knows the shape of the Redis protocol and nothing of its meaning. A request comes
//! out as a list of byte-string arguments; whether `SET` takes two of them is decided elsewhere.
//! A reply goes in as a [`Frame`] and comes out as bytes for the protocol version the client
//! chose with `HELLO`.
//!
//! # Requests
//!
//! [`RequestParser::parse`] (or [`parse_request`], the same without memory between calls) looks
//! at the start of a connection's read buffer. A request has one of two forms, told apart by its
//! first byte, as Redis does:
//!
//! - **Multibulk** (first byte `*`), what every client library sends:
//!
//!   ```text
//!   *<count>\r\n                 count of arguments, -1 ..= multibulk_len_max
//!   $<len>\r\n<len bytes>\r\n    one per argument, len 0 ..= bulk_bytes_max, any bytes
//!   ```
//!
//!   Numbers are written as Redis's `string2ll` reads them: an optional `-`, then `0` alone or
//!   digits without a leading zero; no `+`, no spaces. `*0` and `*-1` are empty requests.
//!
//! - **Inline** (any other first byte), what a person types into `telnet`: one line ending in
//!   `\n` (a `\r` before it is dropped), split into arguments as Redis's `sdssplitargs` does.
//!   Spaces and tabs separate arguments. `"..."` takes the escapes `\n \r \t \b \a \\ \"` and
//!   `\xHH`; any other escaped byte stands for itself. `'...'` takes only `\'`. A quote may open
//!   in the middle of an argument (`a"b c"` is `ab c`), but a closing quote must be followed by
//!   white space or the end of the line. A blank line is an empty request.
//!
//! An empty request parses to an empty argument list, which the caller skips, as Redis does.
//!
//! # Replies
//!
//! [`Frame::encode`] writes one reply. RESP3 has types that RESP2 lacks; in RESP2 they fall back
//! to what Redis sends a RESP2 client:
//!
//! | Frame       | RESP2                         | RESP3                          |
//! |-------------|-------------------------------|--------------------------------|
//! | `Simple`    | `+OK\r\n`                     | same                           |
//! | `Error`     | `-ERR msg\r\n`                | same                           |
//! | `Integer`   | `:42\r\n`                     | same                           |
//! | `Bulk`      | `$3\r\nabc\r\n`               | same                           |
//! | `Null`      | `$-1\r\n`                     | `_\r\n`                        |
//! | `NullArray` | `*-1\r\n`                     | `_\r\n`                        |
//! | `Array`     | `*<n>\r\n` then n frames      | same                           |
//! | `Map`       | `*<2n>\r\n` keys and values   | `%<n>\r\n` keys and values     |
//! | `Set`       | `*<n>\r\n`                    | `~<n>\r\n`                     |
//! | `Push`      | `*<n>\r\n`                    | `><n>\r\n`                     |
//! | `Double`    | bulk of [`format_double`]     | `,<format_double>\r\n`         |
//! | `Boolean`   | `:1\r\n` / `:0\r\n`           | `#t\r\n` / `#f\r\n`            |
//! | `Verbatim`  | bulk of the text              | `=<4+len>\r\ntxt:<text>\r\n`   |
//! | `Attributed`| the reply alone               | `|<n>\r\n` pairs, then the reply |
//!
//! # Promises
//!
//! - **Nothing is consumed until a whole request is there.** `Ok(None)` means "read more": the
//!   buffer is left exactly as it was. A request is removed from the buffer in one `split_to`,
//!   after its completeness and validity are established.
//! - **Errors are found early.** A byte that cannot start a bulk header fails as soon as it
//!   arrives; a length over a limit fails as soon as its header line is complete, without waiting
//!   for the bytes it announces; a bulk's terminator fails on its first wrong byte.
//! - **Each byte is looked at about once.** A header line is looked at for at most
//!   [`LENGTH_LINE_BYTES_MAX`] bytes; a bulk's payload is skipped by its length, never scanned, so
//!   a 512 MiB argument costs the same to check as a 5-byte one; an inline line is searched for
//!   `\n` in at most `inline_bytes_max + 1` bytes. A [`RequestParser`] remembers how far it got
//!   in an incomplete request (the arguments checked, or the bytes of an inline line searched),
//!   so a request trickling in over many reads is not rescanned: only the header of the argument
//!   in progress is read again, at most [`LENGTH_LINE_BYTES_MAX`] bytes per call.
//! - **Arguments of a multibulk request are not copied.** They are slices of one frozen
//!   [`Bytes`] cut from the buffer.
//! - **Error texts are Redis's**: the caller sends `-ERR Protocol error: <Display>` and closes the
//!   connection, like Redis's `setProtocolError`.
//!
//! # CAVEATS
//!
//! - [`parse_request`] keeps no state between calls: with it, a request of many arguments
//!   trickling in over many reads is rescanned from its first header on each call, quadratic in
//!   the worst case (a million 1-byte arguments in 16 KiB reads took 3 s of CPU where a
//!   [`RequestParser`] took 0.2 s). Connections keep a [`RequestParser`]; `parse_request` is for
//!   tests and one-shot buffers.
//! - A [`RequestParser`] trusts that the caller only appends to the buffer between calls. It
//!   catches a buffer that shrank, but not one whose bytes were rewritten in place.
//! - Nothing here bounds the total size of a request: `multibulk_len_max` × `bulk_bytes_max` is
//!   far beyond any memory. The caller must cap its read buffer (Redis's
//!   `client-query-buffer-limit`, 1 GiB by default) and close a connection that exceeds it.
//! - Stricter than Redis where Redis is loose, each time failing a request Redis would accept
//!   with a confused result: a bulk must end in `\r\n` (Redis skips any two bytes); a header line
//!   must end in `\r\n` (Redis skips the byte after `\r`); `*<n>` with n below -1 is an error
//!   (Redis treats it as empty); a header line longer than [`LENGTH_LINE_BYTES_MAX`] without `\r`
//!   fails at once (Redis waits for 64 KiB).
//! - The same error may get a different text than Redis's in a corner: a bulk header that starts
//!   with a byte other than `$` is reported at once as `expected '$', got 'X'`, where Redis
//!   first waits for `\r` and may report `too big bulk count string` instead.
//! - An inline line ends at its first NUL byte, because `sdssplitargs` reads a C string; the
//!   rest of the line is dropped, as in Redis. Inline arguments are copied (escapes rewrite
//!   them); the inline form is for people at a terminal, not for throughput.
//! - Redis's inline length check looks at the whole read buffer; ours looks at the line, so a
//!   line longer than `inline_bytes_max` fails even when it arrived whole in one read.
//! - The `X` in `expected '$', got 'X'` is the byte as a Latin-1 character, so a byte above 127
//!   prints as two bytes of UTF-8 where Redis prints the raw byte.
//! - [`format_double`] prints the shortest digits that read back as the same `f64`; Redis's
//!   Grisu2 does too in all but rare cases, where it prints one more digit than needed.

use std::fmt::Write as _;
use std::ops::Range;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The default for [`Limits::bulk_bytes_max`]: 512 MiB, Redis's `proto-max-bulk-len`.
pub const BULK_BYTES_MAX_DEFAULT: usize = 512 * 1024 * 1024;

/// The default for [`Limits::multibulk_len_max`]: 1 Mi arguments, Redis's long-standing cap.
pub const MULTIBULK_LEN_MAX_DEFAULT: usize = 1024 * 1024;

/// The default for [`Limits::inline_bytes_max`]: 64 KiB, Redis's `PROTO_INLINE_MAX_SIZE`.
pub const INLINE_BYTES_MAX_DEFAULT: usize = 64 * 1024;

/// The longest header line (`*<count>` or `$<len>`, before its `\r\n`) that may be waited for.
///
/// A valid one is at most 21 bytes (`$` and `-9223372036854775808`); more is either garbage or
/// a client that never sends `\r`, and neither deserves a buffer.
pub const LENGTH_LINE_BYTES_MAX: usize = 32;

/// The smallest number of bytes one bulk takes on the wire: `$0\r\n\r\n`.
const BULK_FRAME_BYTES_MIN: usize = 6;

/// How large a request may be, per request; chosen by configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest argument of a multibulk request, in bytes.
    pub bulk_bytes_max: usize,
    /// The most arguments of a multibulk request.
    pub multibulk_len_max: usize,
    /// The longest inline request line, in bytes, counting a `\r` before its `\n`.
    pub inline_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            bulk_bytes_max: BULK_BYTES_MAX_DEFAULT,
            multibulk_len_max: MULTIBULK_LEN_MAX_DEFAULT,
            inline_bytes_max: INLINE_BYTES_MAX_DEFAULT,
        }
    }
}

/// A request that breaks the protocol; the caller replies `-ERR Protocol error: <this>` and
/// closes the connection, since nothing after it in the stream can be trusted to be aligned.
///
/// Every variant's text is Redis's, except [`ProtocolError::BulkNotTerminated`], which Redis
/// does not check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// `*<count>` is not a number, is below -1, or is over `multibulk_len_max`.
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    /// A multibulk argument starts with this byte instead of `$`.
    #[error("expected '$', got '{}'", char::from(*.0))]
    ExpectedDollar(u8),
    /// `$<len>` is not a number, is negative, or is over `bulk_bytes_max`.
    #[error("invalid bulk length")]
    InvalidBulkLength,
    /// The `*<count>` line runs past [`LENGTH_LINE_BYTES_MAX`] bytes without a `\r`.
    #[error("too big mbulk count string")]
    MultibulkCountTooBig,
    /// A `$<len>` line runs past [`LENGTH_LINE_BYTES_MAX`] bytes without a `\r`.
    #[error("too big bulk count string")]
    BulkCountTooBig,
    /// An inline request line runs past `inline_bytes_max` bytes without a `\n`.
    #[error("too big inline request")]
    InlineTooBig,
    /// An inline request has a quote that is never closed, or a closing quote followed by
    /// something other than white space.
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A bulk's payload is not followed by `\r\n`: its length was a lie.
    #[error("expected CRLF after bulk string")]
    BulkNotTerminated,
}

/// If `buf` starts with a whole request, removes it and returns its arguments.
///
/// Returns `Ok(None)`, with `buf` untouched, when the request is not complete yet; an empty list
/// for an empty request (a blank inline line, `*0`, `*-1`); and `Err` for a protocol error, after
/// which the connection must be closed (`buf` is then left untouched too).
///
/// This is [`RequestParser::parse`] with no memory of earlier calls; a connection should keep a
/// [`RequestParser`] instead, so that a request arriving over many reads is scanned once.
pub fn parse_request(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    RequestParser::default().parse(buf, limits)
}

/// A connection's request parser, which remembers how far it has checked an incomplete request
/// so that the next call resumes there instead of rescanning from the start.
///
/// Between calls the caller may only append to the buffer; the parser panics if the buffer
/// shrank, since its remembered offsets would then point at the wrong bytes.
#[derive(Debug, Default)]
pub struct RequestParser {
    /// The request at the start of the buffer, checked up to a point, if any.
    partial: Option<Partial>,
    /// How long the buffer was at the end of the previous call.
    seen_len: usize,
}

/// How far an incomplete request has been checked.
#[derive(Debug)]
enum Partial {
    /// A multibulk request whose arguments are checked up to one.
    Multibulk(Scan),
    /// An inline line searched for its `\n` up to this many bytes.
    Inline(usize),
}

impl RequestParser {
    /// A parser with nothing checked yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// As [`parse_request`], resuming where the previous call on the same buffer stopped.
    pub fn parse(&mut self, buf: &mut BytesMut, limits: &Limits) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let partial = self.partial.take();
        assert!(
            partial.is_none() || buf.len() >= self.seen_len,
            "read buffer shrank under a partial request: from {} to {} bytes",
            self.seen_len,
            buf.len(),
        );
        self.seen_len = buf.len();
        match partial {
            Some(Partial::Multibulk(scan)) => self.resume_multibulk(scan, buf, limits),
            Some(Partial::Inline(searched)) => self.resume_inline(searched, buf, limits),
            None => match buf.first() {
                None => Ok(None),
                Some(b'*') => match start_multibulk(buf, limits)? {
                    Some(scan) => self.resume_multibulk(scan, buf, limits),
                    None => Ok(None),
                },
                Some(_) => self.resume_inline(0, buf, limits),
            },
        }
    }

    /// Checks a multibulk request from where `scan` stopped, and cuts it out if complete, its
    /// arguments sharing the buffer's bytes.
    fn resume_multibulk(
        &mut self,
        mut scan: Scan,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        if !continue_multibulk(&mut scan, buf, limits)? {
            self.partial = Some(Partial::Multibulk(scan));
            return Ok(None);
        }
        let request = buf.split_to(scan.pos).freeze();
        Ok(Some(scan.args.into_iter().map(|r| request.slice(r)).collect()))
    }

    /// Searches an inline line for its `\n` from byte `searched` on, and if found cuts the line
    /// out and splits it into arguments.
    fn resume_inline(
        &mut self,
        searched: usize,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let window_end = buf.len().min(limits.inline_bytes_max.saturating_add(1));
        let from = searched.min(window_end);
        let Some(newline) = buf[from..window_end].iter().position(|&b| b == b'\n') else {
            if buf.len() > limits.inline_bytes_max {
                return Err(ProtocolError::InlineTooBig);
            }
            self.partial = Some(Partial::Inline(window_end));
            return Ok(None);
        };
        let line = &buf[..from + newline];
        let args = split_args(line.strip_suffix(b"\r").unwrap_or(line))?;
        buf.advance(from + newline + 1);
        Ok(Some(args))
    }
}

/// A multibulk request at the start of a buffer, checked from its start up to `pos`.
#[derive(Debug)]
struct Scan {
    /// How many arguments the `*<count>` line announced.
    count: usize,
    /// Where the first argument not yet checked starts; the request's length once complete.
    pos: usize,
    /// Where each checked argument's payload lies, relative to the start of the buffer.
    args: Vec<Range<usize>>,
}

/// Reads the `*<count>` line at the start of `buf`.
fn start_multibulk(buf: &[u8], limits: &Limits) -> Result<Option<Scan>, ProtocolError> {
    let Some((count, pos)) = read_header_line(buf, 0, Header::Multibulk)? else {
        return Ok(None);
    };
    let count = match parse_length(count) {
        Some(-1) => 0,
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|&n| n <= limits.multibulk_len_max)
            .ok_or(ProtocolError::InvalidMultibulkLength)?,
        None => return Err(ProtocolError::InvalidMultibulkLength),
    };
    // A complete request holds at least this many bytes per argument, so this bounds the
    // allocation by what the peer has actually sent, not by what it claims.
    let args = Vec::with_capacity(count.min((buf.len() - pos) / BULK_FRAME_BYTES_MIN));
    Ok(Some(Scan { count, pos, args }))
}

/// Checks the arguments of `scan` from where it stopped; returns whether all are there.
fn continue_multibulk(scan: &mut Scan, buf: &[u8], limits: &Limits) -> Result<bool, ProtocolError> {
    while scan.args.len() < scan.count {
        let Some(payload) = scan_bulk(buf, scan.pos, limits)? else {
            return Ok(false);
        };
        scan.pos = payload.end + 2;
        scan.args.push(payload);
    }
    Ok(true)
}

/// Checks the bulk `$<len>\r\n<payload>\r\n` starting at `pos`, returning where its payload is.
fn scan_bulk(buf: &[u8], pos: usize, limits: &Limits) -> Result<Option<Range<usize>>, ProtocolError> {
    match buf.get(pos) {
        None => return Ok(None),
        Some(b'$') => {}
        Some(&other) => return Err(ProtocolError::ExpectedDollar(other)),
    }
    let Some((len, start)) = read_header_line(buf, pos, Header::Bulk)? else {
        return Ok(None);
    };
    let len = parse_length(len)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n <= limits.bulk_bytes_max)
        .ok_or(ProtocolError::InvalidBulkLength)?;
    // Only reachable with a bulk_bytes_max near usize::MAX; such a length is not a real one.
    let end =
        start.checked_add(len).filter(|end| end.checked_add(2).is_some()).ok_or(ProtocolError::InvalidBulkLength)?;
    // The payload itself is never looked at: completeness is known from its length alone.
    for (i, &expected) in b"\r\n".iter().enumerate() {
        match buf.get(end + i) {
            None => return Ok(None),
            Some(&b) if b != expected => return Err(ProtocolError::BulkNotTerminated),
            Some(_) => {}
        }
    }
    Ok(Some(start..end))
}

/// Which header line is being read, so that its errors carry Redis's text.
#[derive(Clone, Copy)]
enum Header {
    /// `*<count>`, the first line of a multibulk request.
    Multibulk,
    /// `$<len>`, the first line of one argument.
    Bulk,
}

impl Header {
    /// The error for a line that is complete but not a valid number.
    fn invalid(self) -> ProtocolError {
        match self {
            Header::Multibulk => ProtocolError::InvalidMultibulkLength,
            Header::Bulk => ProtocolError::InvalidBulkLength,
        }
    }

    /// The error for a line that runs on without `\r`.
    fn too_big(self) -> ProtocolError {
        match self {
            Header::Multibulk => ProtocolError::MultibulkCountTooBig,
            Header::Bulk => ProtocolError::BulkCountTooBig,
        }
    }
}

/// Reads the header line starting at `pos` (its type byte already checked), returning the bytes
/// between the type byte and `\r\n`, and the position after `\r\n`.
fn read_header_line(buf: &[u8], pos: usize, header: Header) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let rest = &buf[pos..];
    let window = &rest[..rest.len().min(LENGTH_LINE_BYTES_MAX + 1)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        return if rest.len() > LENGTH_LINE_BYTES_MAX { Err(header.too_big()) } else { Ok(None) };
    };
    match rest.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((&rest[1..cr], pos + cr + 2))),
        Some(_) => Err(header.invalid()),
    }
}

/// Reads a length the way Redis's `string2ll` does: `0`, or an optional `-` and digits without a
/// leading zero, fitting an `i64`; anything else (`+1`, `01`, `-0`, ` 1`, empty) is `None`.
fn parse_length(digits: &[u8]) -> Option<i64> {
    let (negative, magnitude) = match digits {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, digits),
    };
    match magnitude {
        [b'0'] if !negative => return Some(0),
        [b'1'..=b'9', ..] => {}
        _ => return None,
    }
    magnitude.iter().try_fold(0i64, |acc, &b| {
        let digit = i64::from(b.checked_sub(b'0').filter(|d| *d <= 9)?);
        let acc = acc.checked_mul(10)?;
        if negative {
            acc.checked_sub(digit)
        } else {
            acc.checked_add(digit)
        }
    })
}

/// Splits an inline line into arguments, as Redis's `sdssplitargs`.
fn split_args(line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    // sdssplitargs reads a C string: a NUL ends the line.
    let line = line.split(|&b| b == 0).next().unwrap_or_default();
    let mut args = Vec::new();
    let mut pos = 0;
    loop {
        while line.get(pos).is_some_and(|&b| is_c_space(b)) {
            pos += 1;
        }
        if pos == line.len() {
            return Ok(args);
        }
        let (arg, next) = split_arg(line, pos)?;
        args.push(Bytes::from(arg));
        pos = next;
    }
}

/// Reads one argument starting at `pos` (not white space), returning it and where it ended.
fn split_arg(line: &[u8], mut pos: usize) -> Result<(Vec<u8>, usize), ProtocolError> {
    let mut arg = Vec::new();
    while let Some(&b) = line.get(pos) {
        match b {
            // Only these end an unquoted argument; \v and \f are part of it, as in Redis,
            // though they count as white space between arguments.
            b' ' | b'\t' | b'\r' | b'\n' => break,
            // A closing quote ends the argument: what follows is white space or the end.
            b'"' => {
                let end = double_quoted(line, pos + 1, &mut arg)?;
                return Ok((arg, end));
            }
            b'\'' => {
                let end = single_quoted(line, pos + 1, &mut arg)?;
                return Ok((arg, end));
            }
            _ => {
                arg.push(b);
                pos += 1;
            }
        }
    }
    Ok((arg, pos))
}

/// Appends the inside of a `"..."` starting at `pos` to `arg`, returning the position after the
/// closing quote.
fn double_quoted(line: &[u8], mut pos: usize, arg: &mut Vec<u8>) -> Result<usize, ProtocolError> {
    loop {
        match line.get(pos) {
            None => return Err(ProtocolError::UnbalancedQuotes),
            Some(b'"') => return closing_quote(line, pos),
            Some(b'\\') => match (line.get(pos + 1), hex_pair(line.get(pos + 2..pos + 4))) {
                (Some(b'x'), Some(byte)) => {
                    arg.push(byte);
                    pos += 4;
                }
                (Some(&escaped), _) => {
                    arg.push(unescape(escaped));
                    pos += 2;
                }
                (None, _) => return Err(ProtocolError::UnbalancedQuotes),
            },
            Some(&b) => {
                arg.push(b);
                pos += 1;
            }
        }
    }
}

/// Appends the inside of a `'...'` starting at `pos` to `arg`, returning the position after the
/// closing quote; only `\'` is an escape.
fn single_quoted(line: &[u8], mut pos: usize, arg: &mut Vec<u8>) -> Result<usize, ProtocolError> {
    loop {
        match line.get(pos) {
            None => return Err(ProtocolError::UnbalancedQuotes),
            Some(b'\\') if line.get(pos + 1) == Some(&b'\'') => {
                arg.push(b'\'');
                pos += 2;
            }
            Some(b'\'') => return closing_quote(line, pos),
            Some(&b) => {
                arg.push(b);
                pos += 1;
            }
        }
    }
}

/// Checks that the closing quote at `pos` is followed by white space or the end of the line.
fn closing_quote(line: &[u8], pos: usize) -> Result<usize, ProtocolError> {
    match line.get(pos + 1) {
        Some(&b) if !is_c_space(b) => Err(ProtocolError::UnbalancedQuotes),
        _ => Ok(pos + 1),
    }
}

/// The byte a backslash escape inside `"..."` stands for.
fn unescape(escaped: u8) -> u8 {
    match escaped {
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'b' => 0x08,
        b'a' => 0x07,
        other => other,
    }
}

/// The byte written by two hex digits, if `pair` is two hex digits.
fn hex_pair(pair: Option<&[u8]>) -> Option<u8> {
    let [high, low] = pair? else { return None };
    let high = char::from(*high).to_digit(16)?;
    let low = char::from(*low).to_digit(16)?;
    u8::try_from(high * 16 + low).ok()
}

/// Whether C's `isspace` holds for `b` in the "C" locale, as `sdssplitargs` uses it.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The protocol version a connection speaks, chosen by the client with `HELLO`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// RESP2, what every connection starts with.
    #[default]
    Resp2,
    /// RESP3, after `HELLO 3`: typed nulls, maps, sets, doubles, booleans, pushes.
    Resp3,
}

/// One reply, encoded by [`Frame::encode`] for the connection's [`Protocol`].
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// A short status line such as `OK`; `\r` and `\n` become spaces on the wire.
    Simple(String),
    /// An error line starting with its code, such as `ERR unknown command`; `\r` and `\n`
    /// become spaces on the wire.
    Error(String),
    /// A signed 64-bit integer.
    Integer(i64),
    /// A binary-safe string.
    Bulk(Bytes),
    /// No value where a string was expected (`GET` of a missing key).
    Null,
    /// No value where an array was expected (`BLPOP` timing out).
    NullArray,
    /// An ordered list of replies.
    Array(Vec<Frame>),
    /// Key-value pairs, in the order given.
    Map(Vec<(Frame, Frame)>),
    /// Unordered distinct replies, in the order given.
    Set(Vec<Frame>),
    /// Out-of-band data such as a pub/sub message.
    Push(Vec<Frame>),
    /// A floating-point number, written by [`format_double`].
    Double(f64),
    /// True or false.
    Boolean(bool),
    /// Text with a three-byte format tag (`txt`, `mkd`) for a client to show as is.
    Verbatim {
        /// The format tag, such as `*b"txt"`.
        format: [u8; 3],
        /// The text itself.
        text: Bytes,
    },
    /// A reply with attributes (RESP3's `|`, which ordinary clients skip): a session's receipt.
    /// RESP2 has no attributes: the reply goes alone.
    Attributed(Vec<(Frame, Frame)>, Box<Frame>),
}

impl Frame {
    /// The status reply `+OK`.
    pub fn ok() -> Frame {
        Frame::Simple("OK".to_owned())
    }

    /// An error reply; `message` starts with its code, such as `ERR` or `WRONGTYPE`.
    pub fn error(message: impl Into<String>) -> Frame {
        Frame::Error(message.into())
    }

    /// A bulk string reply.
    pub fn bulk(value: impl Into<Bytes>) -> Frame {
        Frame::Bulk(value.into())
    }

    /// Appends this reply to `out`, in the form `proto` calls for.
    pub fn encode(&self, proto: Protocol, out: &mut BytesMut) {
        let resp3 = proto == Protocol::Resp3;
        match self {
            Frame::Simple(text) => put_line(out, b'+', text),
            Frame::Error(text) => put_line(out, b'-', text),
            Frame::Integer(n) => put_header(out, b':', *n),
            Frame::Bulk(bytes) => put_bulk(out, bytes),
            Frame::Null if resp3 => out.put_slice(b"_\r\n"),
            Frame::Null => out.put_slice(b"$-1\r\n"),
            Frame::NullArray if resp3 => out.put_slice(b"_\r\n"),
            Frame::NullArray => out.put_slice(b"*-1\r\n"),
            Frame::Array(items) => put_aggregate(out, b'*', items, proto),
            Frame::Set(items) => put_aggregate(out, if resp3 { b'~' } else { b'*' }, items, proto),
            Frame::Push(items) => put_aggregate(out, if resp3 { b'>' } else { b'*' }, items, proto),
            Frame::Map(pairs) => put_map(out, pairs, proto),
            Frame::Double(value) if resp3 => {
                out.put_u8(b',');
                out.put_slice(format_double(*value).as_bytes());
                out.put_slice(b"\r\n");
            }
            Frame::Double(value) => put_bulk(out, format_double(*value).as_bytes()),
            Frame::Boolean(value) if resp3 => out.put_slice(if *value { b"#t\r\n" } else { b"#f\r\n" }),
            Frame::Boolean(value) => put_header(out, b':', i64::from(*value)),
            Frame::Verbatim { format, text } if resp3 => {
                put_header(out, b'=', len_i64(text.len() + 4));
                out.put_slice(format);
                out.put_u8(b':');
                out.put_slice(text);
                out.put_slice(b"\r\n");
            }
            Frame::Verbatim { text, .. } => put_bulk(out, text),
            Frame::Attributed(pairs, reply) if resp3 => {
                put_header(out, b'|', len_i64(pairs.len()));
                for (key, value) in pairs {
                    key.encode(proto, out);
                    value.encode(proto, out);
                }
                reply.encode(proto, out);
            }
            Frame::Attributed(_, reply) => reply.encode(proto, out),
        }
    }
}

/// Writes `<type><text>\r\n`, with `\r` and `\n` in `text` turned into spaces: a line break
/// inside would end the line early and the client would read the rest as a next reply, so one
/// stray newline in an error message would desynchronise the connection (Redis does the same).
fn put_line(out: &mut BytesMut, kind: u8, text: &str) {
    out.put_u8(kind);
    out.extend(text.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
    out.put_slice(b"\r\n");
}

/// Writes `<type><n>\r\n`, the header of integers and of every sized type.
fn put_header(out: &mut BytesMut, kind: u8, n: i64) {
    out.put_u8(kind);
    write!(out, "{n}").expect("BytesMut grows on write and does not fail");
    out.put_slice(b"\r\n");
}

/// Writes `$<len>\r\n<bytes>\r\n`.
fn put_bulk(out: &mut BytesMut, bytes: &[u8]) {
    put_header(out, b'$', len_i64(bytes.len()));
    out.put_slice(bytes);
    out.put_slice(b"\r\n");
}

/// Writes an aggregate header and its items.
fn put_aggregate(out: &mut BytesMut, kind: u8, items: &[Frame], proto: Protocol) {
    put_header(out, kind, len_i64(items.len()));
    for item in items {
        item.encode(proto, out);
    }
}

/// Writes a map: `%<n>` in RESP3, a flat array of keys and values in RESP2.
fn put_map(out: &mut BytesMut, pairs: &[(Frame, Frame)], proto: Protocol) {
    match proto {
        Protocol::Resp3 => put_header(out, b'%', len_i64(pairs.len())),
        Protocol::Resp2 => put_header(out, b'*', len_i64(pairs.len() * 2)),
    }
    for (key, value) in pairs {
        key.encode(proto, out);
        value.encode(proto, out);
    }
}

/// A length as the protocol writes it; no buffer in memory is longer than `i64::MAX` bytes.
fn len_i64(len: usize) -> i64 {
    i64::try_from(len).expect("an in-memory length fits an i64")
}

/// Writes a double as Redis 7.2+ does (`fpconv_dtoa`): the shortest digits that read back as the
/// same value, `3` for 3.0, `10.5`, `0.0001`, `1e+20`, `1.5e-7`, `inf`, `-inf`, `nan`.
///
/// Like Redis, it writes plain digits while the decimal exponent is small (an integer up to 7
/// trailing zeros past its digits, a fraction down to 6 leading zeros or with an exponent
/// under 4 in size) and scientific notation otherwise, with an unpadded exponent.
pub fn format_double(value: f64) -> String {
    let sign = if value.is_sign_negative() { "-" } else { "" };
    if value.is_nan() {
        // The sign of a NaN depends on the CPU that made it; one spelling keeps replies stable.
        return "nan".to_owned();
    }
    if value.is_infinite() {
        return format!("{sign}inf");
    }
    if value == 0.0 {
        return format!("{sign}0");
    }
    // `{:e}` gives the shortest round-trip digits as `d.ddde<exp>`.
    let scientific = format!("{:e}", value.abs());
    let (mantissa, exponent) = scientific.split_once('e').expect("{:e} always writes an exponent");
    let exponent: i32 = exponent.parse().expect("{:e} writes a decimal exponent");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    format!("{sign}{}", place_digits(&digits, exponent))
}

/// Places significant `digits` (no sign, first one nonzero) whose first digit has the decimal
/// `exponent`, following `emit_digits` in Redis's `fpconv_dtoa.c`.
fn place_digits(digits: &str, exponent: i32) -> String {
    let count = i32::try_from(digits.len()).expect("an f64 has at most 17 significant digits");
    // The exponent of the last digit: the value is digits × 10^last.
    let last = exponent - (count - 1);
    let magnitude = exponent.abs();
    if last >= 0 && magnitude < count + 7 {
        return format!("{digits}{}", "0".repeat(last.unsigned_abs() as usize));
    }
    if last < 0 && (last > -7 || magnitude < 4) {
        let point = count + last;
        if point <= 0 {
            return format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize));
        }
        let (whole, fraction) = digits.split_at(point.unsigned_abs() as usize);
        return format!("{whole}.{fraction}");
    }
    let (first, rest) = digits.split_at(1);
    let point = if rest.is_empty() { "" } else { "." };
    let exponent_sign = if exponent < 0 { '-' } else { '+' };
    format!("{first}{point}{rest}e{exponent_sign}{magnitude}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The limits used where a test wants its boundaries small enough to write out.
    const SMALL: Limits = Limits { bulk_bytes_max: 4, multibulk_len_max: 2, inline_bytes_max: 8 };

    /// What [`parse_request`] returns.
    type Outcome = Result<Option<Vec<Bytes>>, ProtocolError>;

    /// Parses `input` as one read buffer, returning the outcome and what is left in the buffer.
    fn parse_with(input: &[u8], limits: &Limits) -> (Outcome, Vec<u8>) {
        let mut buf = BytesMut::from(input);
        let outcome = parse_request(&mut buf, limits);
        (outcome, buf.to_vec())
    }

    /// Parses `input` with the default limits.
    fn parse(input: &[u8]) -> (Outcome, Vec<u8>) {
        parse_with(input, &Limits::default())
    }

    /// Builds an argument list from byte strings.
    fn args(list: &[&[u8]]) -> Vec<Bytes> {
        list.iter().map(|a| Bytes::copy_from_slice(a)).collect()
    }

    /// Encodes `frame` alone for `proto`.
    fn encoded(frame: &Frame, proto: Protocol) -> Vec<u8> {
        let mut out = BytesMut::new();
        frame.encode(proto, &mut out);
        out.to_vec()
    }

    #[test]
    fn every_prefix_of_a_request_is_incomplete_and_untouched() {
        let cases: &[(&[u8], &[&[u8]])] = &[
            (b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n", &[b"SET", b"k", b"hello"]),
            (b"*1\r\n$0\r\n\r\n", &[b""]),
            (b"*2\r\n$4\r\na\r\nb\r\n$2\r\n\r\n\r\n", &[b"a\r\nb", b"\r\n"]),
            (b"*0\r\n", &[]),
            (b"*-1\r\n", &[]),
            (b"SET k \"a b\"\r\n", &[b"SET", b"k", b"a b"]),
            (b"PING\n", &[b"PING"]),
        ];
        for (request, expected) in cases {
            for cut in 0..request.len() {
                let prefix = &request[..cut];
                assert_eq!(parse(prefix), (Ok(None), prefix.to_vec()), "prefix {prefix:?}");
            }
            assert_eq!(parse(request), (Ok(Some(args(expected))), vec![]), "{request:?}");
        }
    }

    #[test]
    fn pipelined_requests_parse_one_after_another() {
        let mut buf =
            BytesMut::from(&b"*1\r\n$4\r\nPING\r\nECHO hi\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*2\r\n$3\r\nDEL"[..]);
        let limits = Limits::default();
        let expected: [&[&[u8]]; 3] = [&[b"PING"], &[b"ECHO", b"hi"], &[b"GET", b"k"]];
        for request in expected {
            assert_eq!(parse_request(&mut buf, &limits), Ok(Some(args(request))));
        }
        assert_eq!(parse_request(&mut buf, &limits), Ok(None));
        assert_eq!(&buf[..], b"*2\r\n$3\r\nDEL");
    }

    #[test]
    fn bulk_payload_is_binary_safe() {
        let (outcome, rest) = parse(b"*3\r\n$4\r\na\r\nb\r\n$3\r\n\0\xff*\r\n$2\r\n$1\r\n");
        assert_eq!(outcome, Ok(Some(args(&[b"a\r\nb", b"\0\xff*", b"$1"]))));
        assert!(rest.is_empty());
    }

    #[test]
    fn multibulk_arguments_share_the_read_buffer() {
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n"[..]);
        let base = buf.as_ptr() as usize;
        let request = parse_request(&mut buf, &Limits::default()).unwrap().unwrap();
        let offsets: Vec<usize> = request.iter().map(|a| a.as_ptr() as usize - base).collect();
        assert_eq!(offsets, [8, 17]);
    }

    #[test]
    fn large_bulk_is_complete_only_with_its_last_byte() {
        let len = 1 << 20;
        let mut request = format!("*1\r\n${len}\r\n").into_bytes();
        request.resize(request.len() + len, b'x');
        request.extend_from_slice(b"\r\n");
        for cut in [request.len() - 3, request.len() - 2, request.len() - 1] {
            assert_eq!(parse(&request[..cut]).0, Ok(None), "cut at {cut}");
        }
        let parsed = parse(&request).0.unwrap().unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].len(), len);
    }

    #[test]
    fn empty_requests_parse_to_no_arguments() {
        let cases: &[(&[u8], usize)] =
            &[(b"*0\r\n+", 4), (b"*-1\r\n+", 5), (b"\n+", 1), (b"\r\n+", 2), (b" \t \r\n+", 5), (b"\0 junk\n+", 7)];
        for (input, consumed) in cases {
            let (outcome, rest) = parse(input);
            assert_eq!(outcome, Ok(Some(vec![])), "{input:?}");
            assert_eq!(rest, &input[*consumed..], "{input:?}");
        }
    }

    #[test]
    fn inline_splits_like_sdssplitargs() {
        let cases: &[(&[u8], &[&[u8]])] = &[
            (b"PING\r\n", &[b"PING"]),
            (b"PING\n", &[b"PING"]),
            (b"set \"a b\" 'c d'\r\n", &[b"set", b"a b", b"c d"]),
            (b"\"\\x41\"\n", &[b"A"]),
            (b"\"\\x4a\\x4A\"\n", &[b"JJ"]),
            (b"\"\\x4\"\n", &[b"x4"]),
            (b"\"\\x4g\"\n", &[b"x4g"]),
            (b"\"\\X41\"\n", &[b"X41"]),
            (b"\"a\\nb\"\n", &[b"a\nb"]),
            (b"\"\\r\\t\\b\\a\\\\\\\"\"\n", &[b"\r\t\x08\x07\\\""]),
            (b"\"\\q\"\n", &[b"q"]),
            (b"\"\\x00z\"\n", &[b"\0z"]),
            (b"'it\\'s'\n", &[b"it's"]),
            (b"'a\\\\b'\n", &[b"a\\\\b"]),
            (b"'a\\nb'\n", &[b"a\\nb"]),
            (b"'a\"b'\n", &[b"a\"b"]),
            (b"\"a'b\"\n", &[b"a'b"]),
            (b"a\"b c\"\n", &[b"ab c"]),
            (b"a'b c'\n", &[b"ab c"]),
            (b"\"\"\n", &[b""]),
            (b"'' x\n", &[b"", b"x"]),
            (b"  a   b\t\tc  \n", &[b"a", b"b", b"c"]),
            (b"a\x0bb\n", &[b"a\x0bb"]),
            (b"\x0c\x0ba\n", &[b"a"]),
            (b"\"a\"\x0bb\n", &[b"a", b"b"]),
            (b"a\0b c\n", &[b"a"]),
            (b"a\rb\n", &[b"a", b"b"]),
            (b"GET k\r\r\n", &[b"GET", b"k"]),
            (b"$3\r\n", &[b"$3"]),
            (b"caf\xc3\xa9 \xff\n", &[b"caf\xc3\xa9", b"\xff"]),
        ];
        for (line, expected) in cases {
            assert_eq!(parse(line), (Ok(Some(args(expected))), vec![]), "{line:?}");
        }
    }

    #[test]
    fn protocol_errors_are_found_as_redis_finds_them() {
        use ProtocolError::*;
        let long = "1".repeat(LENGTH_LINE_BYTES_MAX);
        let mbulk_too_long = format!("*{long}");
        let bulk_too_long = format!("*1\r\n${long}");
        let cases: &[(&[u8], ProtocolError)] = &[
            (b"*abc\r\n", InvalidMultibulkLength),
            (b"*-2\r\n", InvalidMultibulkLength),
            (b"*+1\r\n", InvalidMultibulkLength),
            (b"*01\r\n", InvalidMultibulkLength),
            (b"*-0\r\n", InvalidMultibulkLength),
            (b"*\r\n", InvalidMultibulkLength),
            (b"*1 \r\n", InvalidMultibulkLength),
            (b"*1\rX", InvalidMultibulkLength),
            (b"*99999999999999999999\r\n", InvalidMultibulkLength),
            (b"*1\r\nX", ExpectedDollar(b'X')),
            (b"*3\r\n$1\r\na\r\n:1\r\n", ExpectedDollar(b':')),
            (b"*1\r\n\r\n", ExpectedDollar(b'\r')),
            (b"*1\r\n$x\r\n", InvalidBulkLength),
            (b"*1\r\n$-1\r\n", InvalidBulkLength),
            (b"*1\r\n$\r\n", InvalidBulkLength),
            (b"*1\r\n$01\r\n", InvalidBulkLength),
            (b"*1\r\n$3\rX", InvalidBulkLength),
            (b"*1\r\n$99999999999999999999\r\n", InvalidBulkLength),
            (b"*1\r\n$3\r\nabcd", BulkNotTerminated),
            (b"*1\r\n$3\r\nabc\rX", BulkNotTerminated),
            (b"*1\r\n$3\r\nabc\n\r", BulkNotTerminated),
            (mbulk_too_long.as_bytes(), MultibulkCountTooBig),
            (bulk_too_long.as_bytes(), BulkCountTooBig),
            (b"\"abc\r\n", UnbalancedQuotes),
            (b"'abc\n", UnbalancedQuotes),
            (b"\"abc\\\"\n", UnbalancedQuotes),
            (b"\"abc\\\n", UnbalancedQuotes),
            (b"'a'b\n", UnbalancedQuotes),
            (b"\"a b\"c\n", UnbalancedQuotes),
            (b"x \"a\"\"b\"\n", UnbalancedQuotes),
        ];
        for (input, error) in cases {
            assert_eq!(parse(input), (Err(*error), input.to_vec()), "{input:?}");
        }
    }

    #[test]
    fn errors_do_not_wait_for_the_rest_of_the_request() {
        use ProtocolError::*;
        let cases: &[(&[u8], ProtocolError)] = &[
            (b"*3\r\nQ", ExpectedDollar(b'Q')),
            (b"*2\r\n$536870913\r\n", InvalidBulkLength),
            (b"*1048577\r\n", InvalidMultibulkLength),
            (b"*2\r\n$3\r\nab\rx", BulkNotTerminated),
            (b"*2\r\n$3\r\nabcX", BulkNotTerminated),
        ];
        for (input, error) in cases {
            assert_eq!(parse(input).0, Err(*error), "{input:?}");
        }
    }

    #[test]
    fn error_texts_are_redis_texts() {
        use ProtocolError::*;
        let cases = [
            (InvalidMultibulkLength, "invalid multibulk length"),
            (ExpectedDollar(b'X'), "expected '$', got 'X'"),
            (InvalidBulkLength, "invalid bulk length"),
            (MultibulkCountTooBig, "too big mbulk count string"),
            (BulkCountTooBig, "too big bulk count string"),
            (InlineTooBig, "too big inline request"),
            (UnbalancedQuotes, "unbalanced quotes in request"),
            (BulkNotTerminated, "expected CRLF after bulk string"),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }

    #[test]
    fn limits_hold_at_the_boundary() {
        use ProtocolError::*;
        let ok = |input: &[u8]| assert!(matches!(parse_with(input, &SMALL).0, Ok(Some(_))));
        let wait = |input: &[u8]| assert_eq!(parse_with(input, &SMALL).0, Ok(None), "{input:?}");
        let fail = |input: &[u8], error| assert_eq!(parse_with(input, &SMALL).0, Err(error));
        ok(b"*1\r\n$4\r\nabcd\r\n");
        fail(b"*1\r\n$5\r\n", InvalidBulkLength);
        ok(b"*2\r\n$1\r\na\r\n$1\r\nb\r\n");
        fail(b"*3\r\n", InvalidMultibulkLength);
        ok(b"abcdefgh\n");
        ok(b"abcdefg\r\n");
        fail(b"abcdefghi\n", InlineTooBig);
        wait(b"abcdefgh");
        fail(b"abcdefghi", InlineTooBig);
        // A header line may be exactly LENGTH_LINE_BYTES_MAX bytes before its \r.
        let digits = "1".repeat(LENGTH_LINE_BYTES_MAX - 1);
        wait(format!("*{digits}").as_bytes());
        fail(format!("*{digits}\r\n").as_bytes(), InvalidMultibulkLength);
        fail(format!("*{digits}1").as_bytes(), MultibulkCountTooBig);
        fail(format!("*{digits}1\r\n").as_bytes(), MultibulkCountTooBig);
        wait(format!("*1\r\n${digits}").as_bytes());
        fail(format!("*1\r\n${digits}1").as_bytes(), BulkCountTooBig);
    }

    #[test]
    fn default_limits_hold_at_the_boundary() {
        use ProtocolError::*;
        let cases: &[(&[u8], Outcome)] = &[
            (b"*1\r\n$536870912\r\n", Ok(None)),
            (b"*1\r\n$536870913\r\n", Err(InvalidBulkLength)),
            (b"*1048576\r\n", Ok(None)),
            (b"*1048577\r\n", Err(InvalidMultibulkLength)),
        ];
        for (input, outcome) in cases {
            assert_eq!(&parse(input).0, outcome, "{input:?}");
        }
        let line = vec![b'a'; INLINE_BYTES_MAX_DEFAULT];
        assert_eq!(parse(&line).0, Ok(None));
        assert_eq!(parse(&[&line[..], b"a"].concat()).0, Err(InlineTooBig));
        assert_eq!(parse(&[&line[..], b"\n"].concat()).0, Ok(Some(vec![Bytes::from(line)])));
    }

    #[test]
    fn default_limits_are_redis_defaults() {
        let limits = Limits::default();
        assert_eq!(limits.bulk_bytes_max, 536_870_912);
        assert_eq!(limits.multibulk_len_max, 1_048_576);
        assert_eq!(limits.inline_bytes_max, 65_536);
    }

    #[test]
    fn frames_encode_in_both_protocols() {
        let kv = || vec![(Frame::bulk("k"), Frame::Integer(1))];
        let cases: Vec<(Frame, &[u8], &[u8])> = vec![
            (Frame::ok(), b"+OK\r\n", b"+OK\r\n"),
            (Frame::error("ERR no"), b"-ERR no\r\n", b"-ERR no\r\n"),
            (Frame::Integer(-42), b":-42\r\n", b":-42\r\n"),
            (Frame::Integer(i64::MIN), b":-9223372036854775808\r\n", b":-9223372036854775808\r\n"),
            (Frame::bulk(""), b"$0\r\n\r\n", b"$0\r\n\r\n"),
            (Frame::bulk("a\r\nb"), b"$4\r\na\r\nb\r\n", b"$4\r\na\r\nb\r\n"),
            (Frame::Null, b"$-1\r\n", b"_\r\n"),
            (Frame::NullArray, b"*-1\r\n", b"_\r\n"),
            (Frame::Array(vec![]), b"*0\r\n", b"*0\r\n"),
            (
                Frame::Array(vec![Frame::Integer(1), Frame::bulk("a"), Frame::Null]),
                b"*3\r\n:1\r\n$1\r\na\r\n$-1\r\n",
                b"*3\r\n:1\r\n$1\r\na\r\n_\r\n",
            ),
            (Frame::Map(kv()), b"*2\r\n$1\r\nk\r\n:1\r\n", b"%1\r\n$1\r\nk\r\n:1\r\n"),
            (Frame::Map(vec![]), b"*0\r\n", b"%0\r\n"),
            (Frame::Set(vec![Frame::bulk("a")]), b"*1\r\n$1\r\na\r\n", b"~1\r\n$1\r\na\r\n"),
            (Frame::Push(vec![Frame::bulk("a")]), b"*1\r\n$1\r\na\r\n", b">1\r\n$1\r\na\r\n"),
            (Frame::Double(3.0), b"$1\r\n3\r\n", b",3\r\n"),
            (Frame::Double(10.5), b"$4\r\n10.5\r\n", b",10.5\r\n"),
            (Frame::Double(f64::INFINITY), b"$3\r\ninf\r\n", b",inf\r\n"),
            (Frame::Double(f64::NEG_INFINITY), b"$4\r\n-inf\r\n", b",-inf\r\n"),
            (Frame::Double(f64::NAN), b"$3\r\nnan\r\n", b",nan\r\n"),
            (Frame::Boolean(true), b":1\r\n", b"#t\r\n"),
            (Frame::Boolean(false), b":0\r\n", b"#f\r\n"),
            (
                Frame::Verbatim { format: *b"txt", text: Bytes::from_static(b"Some string") },
                b"$11\r\nSome string\r\n",
                b"=15\r\ntxt:Some string\r\n",
            ),
            (
                Frame::Array(vec![Frame::Map(vec![(Frame::ok(), Frame::Boolean(true))])]),
                b"*1\r\n*2\r\n+OK\r\n:1\r\n",
                b"*1\r\n%1\r\n+OK\r\n#t\r\n",
            ),
        ];
        for (frame, resp2, resp3) in &cases {
            assert_eq!(encoded(frame, Protocol::Resp2), *resp2, "{frame:?} in RESP2");
            assert_eq!(encoded(frame, Protocol::Resp3), *resp3, "{frame:?} in RESP3");
        }
    }

    #[test]
    fn encode_appends_to_what_is_already_there() {
        let mut out = BytesMut::from(&b"+OK\r\n"[..]);
        Frame::Integer(7).encode(Protocol::Resp2, &mut out);
        assert_eq!(&out[..], b"+OK\r\n:7\r\n");
    }

    #[test]
    fn line_frames_cannot_break_the_stream() {
        let cases = [
            (Frame::error("ERR bad\r\n+OK"), &b"-ERR bad  +OK\r\n"[..]),
            (Frame::Simple("a\nb\rc".to_owned()), b"+a b c\r\n"),
        ];
        for (frame, wire) in cases {
            for proto in [Protocol::Resp2, Protocol::Resp3] {
                assert_eq!(encoded(&frame, proto), wire);
            }
        }
    }

    #[test]
    fn doubles_format_as_redis_formats_them() {
        let cases = [
            (3.0, "3"),
            (10.5, "10.5"),
            (-2.5, "-2.5"),
            (0.1, "0.1"),
            (1.0 / 3.0, "0.3333333333333333"),
            (1e7, "10000000"),
            (1e8, "1e+8"),
            (123_456_789.0, "123456789"),
            (9_007_199_254_740_992.0, "9007199254740992"),
            (1_234_567_800_000_000.0, "1.2345678e+15"),
            (1.5e20, "1.5e+20"),
            (1e-6, "0.000001"),
            (1e-7, "1e-7"),
            (-1.5e-7, "-1.5e-7"),
            (0.001_234_567, "0.001234567"),
            (1.234_567_8, "1.2345678"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (1e100, "1e+100"),
            (0.0, "0"),
            (-0.0, "-0"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
            (-f64::NAN, "nan"),
        ];
        for (value, text) in cases {
            assert_eq!(format_double(value), text, "{value:e}");
            if value.is_finite() {
                assert_eq!(text.parse::<f64>().unwrap(), value, "{text} reads back");
            }
        }
    }

    /// A deterministic xorshift64 generator, so every run checks the same inputs.
    struct XorShift(u64);

    impl XorShift {
        /// The next number of the sequence.
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        /// A number below `bound`.
        fn below(&mut self, bound: usize) -> usize {
            (self.next() % bound as u64) as usize
        }
    }

    /// Parses requests from `buf` with `parse` until one is incomplete or wrong, checking that
    /// each call removes a prefix of the buffer or nothing; returns the call that stopped.
    fn drain(
        parse: &mut dyn FnMut(&mut BytesMut) -> Outcome,
        buf: &mut BytesMut,
        requests: &mut Vec<Vec<Bytes>>,
    ) -> Outcome {
        // Each request consumes at least one byte, so this loop ends.
        loop {
            let before = buf.clone();
            match parse(buf) {
                Ok(Some(request)) => {
                    assert!(buf.len() < before.len(), "no progress on {before:?}");
                    assert!(before.ends_with(buf), "not a prefix cut of {before:?}");
                    requests.push(request);
                }
                stop => {
                    assert_eq!(*buf, before, "buffer changed by {stop:?}");
                    return stop;
                }
            }
        }
    }

    /// Feeds `input` to one [`RequestParser`] in pieces of the given sizes (the last size
    /// repeating), returning the requests parsed and the call that stopped.
    fn feed(input: &[u8], sizes: &mut dyn FnMut() -> usize, limits: &Limits) -> (Vec<Vec<Bytes>>, Outcome) {
        let mut parser = RequestParser::new();
        let mut buf = BytesMut::new();
        let mut requests = Vec::new();
        let mut stop = Ok(None);
        let mut rest = input;
        while !rest.is_empty() && stop.is_ok() {
            let (piece, after) = rest.split_at(sizes().clamp(1, rest.len()));
            buf.extend_from_slice(piece);
            rest = after;
            stop = drain(&mut |b| parser.parse(b, limits), &mut buf, &mut requests);
        }
        (requests, stop)
    }

    #[test]
    fn resumed_parsing_matches_parsing_the_whole_buffer() {
        let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nECHO \"a b\"\r\n\n*1\r\n$4\r\na\r\nb\r\n*1\r\n$2";
        let limits = Limits::default();
        let mut whole = Vec::new();
        let stop = drain(&mut |b| parse_request(b, &limits), &mut BytesMut::from(&input[..]), &mut whole);
        assert_eq!(whole.len(), 4);
        assert_eq!(stop, Ok(None));
        for size in 1..input.len() {
            assert_eq!(feed(input, &mut || size, &limits), (whole.clone(), Ok(None)), "pieces of {size}");
        }
    }

    #[test]
    #[should_panic(expected = "read buffer shrank")]
    fn parser_refuses_a_buffer_that_shrank_under_it() {
        let mut parser = RequestParser::new();
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n"[..]);
        assert_eq!(parser.parse(&mut buf, &Limits::default()), Ok(None));
        buf.clear();
        let _ = parser.parse(&mut buf, &Limits::default());
    }

    #[test]
    fn random_bytes_never_panic_and_never_half_consume() {
        const ALPHABET: &[u8] = b"*$:\r\n0123-4 \"'\\x";
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut parsed = 0;
        for case in 0..10_000 {
            let len = rng.below(65);
            let input: Vec<u8> = (0..len).map(|_| ALPHABET[rng.below(ALPHABET.len())]).collect();
            let limits = if case % 2 == 0 { Limits::default() } else { SMALL };
            let mut whole = Vec::new();
            let mut buf = BytesMut::from(&input[..]);
            let stop = drain(&mut |b| parse_request(b, &limits), &mut buf, &mut whole);
            parsed += whole.len();
            // A parser fed in pieces must see the same requests and stop the same way.
            let pieces = feed(&input, &mut || rng.below(8) + 1, &limits);
            assert_eq!(pieces, (whole, stop), "{input:?} in pieces");
        }
        // The generator must reach the success path too, or the test checks little.
        assert!(parsed > 1_000, "only {parsed} requests parsed");
    }
}
