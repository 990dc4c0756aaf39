//! Asking a node whether it is up: a RESP `PING`, and a tiny HTTP/1.1 `GET` (and `PUT`) client, both over
//! `std::net` with timeouts, so the launcher needs no async runtime and no HTTP dependency.
//!
//! A request sends `Connection: close` and reads until the node closes the connection, at most
//! [`RESPONSE_BYTES_MAX`]; it understands a `Content-Length` body, a chunked body, and a body
//! that ends with the connection.
//!
//! CAVEATS
//! - No TLS, no redirects, no keep-alive: enough for a node's own `/api/v1/status`, not a
//!   general client.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Milliseconds a connection may take to open.
pub const CONNECT_TIMEOUT_MS: u64 = 1000;
/// Milliseconds a read or a write may block.
pub const IO_TIMEOUT_MS: u64 = 2000;
/// Bytes of an HTTP response read at most.
pub const RESPONSE_BYTES_MAX: u64 = 1024 * 1024;

/// Opens a connection with the module's timeouts.
fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(CONNECT_TIMEOUT_MS))?;
    stream.set_read_timeout(Some(Duration::from_millis(IO_TIMEOUT_MS)))?;
    stream.set_write_timeout(Some(Duration::from_millis(IO_TIMEOUT_MS)))?;
    Ok(stream)
}

/// Whether a RESP server at `addr` answers an inline `PING` with `+PONG`.
pub fn ping(addr: SocketAddr) -> bool {
    let answer = || -> std::io::Result<bool> {
        let mut stream = connect(addr)?;
        stream.write_all(b"PING\r\n")?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply)?;
        Ok(&reply == b"+PONG\r\n")
    };
    answer().unwrap_or(false)
}

/// `GET path` from the HTTP server at `addr`: the status code and the body.
pub fn get(addr: SocketAddr, path: &str) -> Result<(u16, Vec<u8>)> {
    request(addr, "GET", path, None)
}

/// `PUT path` with a JSON `body` to the HTTP server at `addr`: the status code and the body.
pub fn put(addr: SocketAddr, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
    request(addr, "PUT", path, Some(body))
}

/// `POST path` with a JSON `body` to the HTTP server at `addr`: the status code and the body.
pub fn post(addr: SocketAddr, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
    request(addr, "POST", path, Some(body))
}

/// One request, with a JSON body if `body` is given: the status code and the response's body.
fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&[u8]>) -> Result<(u16, Vec<u8>)> {
    let mut stream = connect(addr).with_context(|| format!("connecting to {addr}"))?;
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n")
            .into_bytes();
    if let Some(body) = body {
        let head = format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len());
        request.extend_from_slice(head.as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body.unwrap_or_default());
    stream.write_all(&request).with_context(|| format!("sending to {addr}"))?;
    let mut response = Vec::new();
    if let Err(e) = (&mut stream).take(RESPONSE_BYTES_MAX + 1).read_to_end(&mut response) {
        if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
            bail!("{addr} accepted the connection but sent no answer within {IO_TIMEOUT_MS} ms (a paused or busy process?)");
        }
        return Err(e).with_context(|| format!("reading from {addr}"));
    }
    if response.len() as u64 > RESPONSE_BYTES_MAX {
        bail!("{addr}: response over {RESPONSE_BYTES_MAX} bytes");
    }
    parse_response(&response).with_context(|| format!("{addr}: bad HTTP response"))
}

/// Splits a whole HTTP/1.1 response into its status code and body.
fn parse_response(response: &[u8]) -> Result<(u16, Vec<u8>)> {
    let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("no end of headers in {} bytes", response.len());
    };
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let status_line = head.lines().next().unwrap_or_default();
    let status = match status_line.split(' ').collect::<Vec<_>>()[..] {
        [version, code, ..] if version.starts_with("http/1.") => code.parse().ok(),
        _ => None,
    };
    let Some(status) = status else { bail!("status line {status_line:?}") };
    let body = &response[split + 4..];
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| l.split_once(':').filter(|(k, _)| k.trim() == name).map(|(_, v)| v.trim()))
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk(body)?
    } else if let Some(length) = header("content-length") {
        let length: usize = length.parse().with_context(|| format!("content-length {length:?}"))?;
        match body.get(..length) {
            Some(body) => body.to_vec(),
            None => bail!("body of {} bytes, content-length {length}", body.len()),
        }
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

/// Decodes a chunked body.
fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") else { bail!("chunk size line unfinished") };
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).with_context(|| format!("chunk size {size_text:?}"))?;
        if size == 0 {
            return Ok(out);
        }
        let start = line_end + 2;
        let end = start.checked_add(size).filter(|end| *end <= data.len());
        let Some(end) = end else { bail!("chunk of {size} bytes cut short") };
        out.extend_from_slice(&data[start..end]);
        data = data.get(end.saturating_add(2)..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A response, and its status and body or a phrase of the error.
    type Case = (&'static [u8], Result<(u16, &'static [u8]), &'static str>);

    #[test]
    fn responses_parse_by_length_chunks_or_close() {
        let table: &[Case] = &[
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", Ok((200, b"{}"))),
            (b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n", Ok((404, b""))),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
                Ok((200, b"abcde")),
            ),
            (b"HTTP/1.0 200 OK\r\n\r\nuntil close", Ok((200, b"until close"))),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", Err("content-length 9")),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2", Err("no end of headers")),
            (b"SSH-2.0\r\n\r\n", Err("status line")),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nab", Err("cut short")),
        ];
        for (response, want) in table {
            let text = String::from_utf8_lossy(response);
            match (parse_response(response), want) {
                (Ok((status, body)), Ok((want_status, want_body))) => {
                    assert_eq!((status, body.as_slice()), (*want_status, *want_body), "{text}")
                }
                (Err(e), Err(want)) => assert!(format!("{e:#}").contains(want), "{text}: {e:#}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn get_and_ping_talk_to_real_sockets() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for reply in [&b"+PONG\r\n"[..], b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody"] {
                let (mut stream, _) = listener.accept().unwrap();
                // Read the whole request (PING's 6 bytes, or up to the end of the headers), so
                // that closing does not reset the connection over unread bytes.
                let mut request = Vec::new();
                let mut byte = [0u8; 1];
                while !(request == b"PING\r\n" || request.ends_with(b"\r\n\r\n")) {
                    stream.read_exact(&mut byte).unwrap();
                    request.push(byte[0]);
                }
                stream.write_all(reply).unwrap();
            }
        });
        assert!(ping(addr));
        assert_eq!(get(addr, "/api/v1/status").unwrap(), (200, b"body".to_vec()));
        server.join().unwrap();
        assert!(!ping(addr), "nothing listens any more");
        assert!(get(addr, "/").is_err());
    }

    #[test]
    fn put_sends_its_body_with_its_length() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") {
                stream.read_exact(&mut byte).unwrap();
                request.push(byte[0]);
            }
            let mut body = [0u8; 14];
            stream.read_exact(&mut body).unwrap();
            stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").unwrap();
            (String::from_utf8(request).unwrap(), body)
        });
        assert_eq!(put(addr, "/x", br#"{"clear":true}"#).unwrap(), (200, b"{}".to_vec()));
        let (head, body) = server.join().unwrap();
        assert!(head.starts_with("PUT /x HTTP/1.1\r\n") && head.contains("Content-Length: 14\r\n"), "{head}");
        assert_eq!(&body, br#"{"clear":true}"#);
    }
}
