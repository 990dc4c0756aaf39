//! Starting real `replikv` processes on 127.0.0.1 for end-to-end tests.

#![allow(dead_code)] // each test file uses a different part of this module

pub mod trio;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a node may take to start listening before a test gives up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `replikv ARGS` with its standard output a pipe whose read end is already closed, as
/// the writes after `| head` has exited find it: every write fails with EPIPE. Returns (exit
/// status, standard error).
pub fn replikv_into_closed_pipe(args: &[&str]) -> (ExitStatus, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_replikv"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// How many ports below the kernel's ephemeral range the tests draw from.
const PORT_SPAN: u16 = 8_000;
/// The ephemeral range's low end when `/proc` does not say (Linux's default).
const EPHEMERAL_LOW_DEFAULT: u16 = 32_768;

/// The ports tests draw from: the [`PORT_SPAN`] ports just below the kernel's ephemeral range.
/// A port from inside that range can be taken between the test's check and the node's bind by
/// the local end of any outgoing connection (another test's client, a node dialling a peer),
/// and was: a node failed to start with "Address already in use". Below the range only a
/// listener binds a port, and every test in this process draws from [`free_ports`].
fn port_range() -> std::ops::Range<u16> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(EPHEMERAL_LOW_DEFAULT);
    low.saturating_sub(PORT_SPAN).max(1_024)..low
}

/// A port free now, that no other caller in this process is handed until the range wraps.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct ports free now, from [`port_range`]. A counter shared by the whole process
/// (starting at an offset drawn from the process id, so that test binaries run one after
/// another start in different places) walks the range, so two tests of one binary are never
/// handed the same port while they run; each port is bound and held until all `n` are chosen.
pub fn free_ports(n: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static START: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let range = port_range();
    let span = u32::from(range.end - range.start);
    let start = *START.get_or_init(|| std::process::id().wrapping_mul(2_654_435_761) % span);
    let mut held = Vec::with_capacity(n);
    for _ in 0..span {
        if held.len() == n {
            break;
        }
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = range.start + u16::try_from(offset).unwrap();
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(listener);
        }
    }
    assert_eq!(held.len(), n, "fewer than {n} free ports in {range:?}");
    held.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// Three distinct (peer, RESP, HTTP) port triples for a 3-node cluster.
pub fn cluster_ports() -> Vec<(u16, u16, u16)> {
    free_ports(9).chunks(3).map(|c| (c[0], c[1], c[2])).collect()
}

/// One `replikv node` process and what it needs to be restarted the same way.
pub struct Node {
    /// The running process, if any.
    child: Option<Child>,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its RESP port.
    pub resp_port: u16,
    /// Its HTTP port.
    pub http_port: u16,
    /// Extra flags it was started with.
    extra: Vec<String>,
    /// Extra environment variables it was started with.
    env: Vec<(String, String)>,
    /// Where its log goes.
    log: PathBuf,
}

impl Node {
    /// Starts a node on fresh ports with `data_dir` and `extra` flags, and waits until it
    /// answers PING.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Node {
        Node::start_with_env(data_dir, extra, &[])
    }

    /// As `start`, with environment variables set for the process.
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Node {
        let ports = free_ports(2);
        let mut node = Node {
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            child: None,
            data_dir: data_dir.to_path_buf(),
            resp_port: ports[0],
            http_port: ports[1],
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log: data_dir.with_extension("log"),
        };
        node.restart();
        node
    }

    /// Starts a node on the given ports (a cluster file names them) and waits for PING.
    pub fn start_on(data_dir: &Path, resp_port: u16, http_port: u16, extra: &[&str]) -> Node {
        let mut node = Node {
            env: Vec::new(),
            child: None,
            data_dir: data_dir.to_path_buf(),
            resp_port,
            http_port,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log: data_dir.with_extension("log"),
        };
        node.restart();
        node
    }

    /// Waits for a process killed by a signal sent with `signal`, so that it can be restarted.
    pub fn reap(&mut self) {
        self.child.take().expect("node running").wait().unwrap();
    }

    /// Changes the flags the next `restart` passes.
    pub fn set_flags(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|s| s.to_string()).collect();
    }

    /// Starts the process again on the same data directory and ports.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "node already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_replikv"))
            .arg("node")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--resp-addr")
            .arg(format!("127.0.0.1:{}", self.resp_port))
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{}", self.http_port))
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting replikv");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until the node answers PING on its RESP port.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("replikv exited at start with {status}; log:\n{}", self.log_text());
            }
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.resp_port)) {
                stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let _ = stream.write_all(b"PING\r\n");
                let mut reply = [0u8; 7];
                if stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n" {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("replikv did not answer PING within {START_TIMEOUT:?}; log:\n{}", self.log_text());
    }

    /// The node's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The RESP URL for the redis crate.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.resp_port)
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        let pid = self.child.as_ref().expect("node running").id() as i32;
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill({pid}, {signal})");
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        self.child.take().unwrap().wait().unwrap();
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(Duration::from_secs(30))
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("node running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "replikv did not exit within {timeout:?}; log:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends raw bytes on a new connection and reads until the node closes it or `timeout`.
    pub fn raw(&self, bytes: &[u8], timeout: Duration) -> Vec<u8> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.resp_port)).unwrap();
        stream.set_read_timeout(Some(timeout)).unwrap();
        stream.write_all(bytes).unwrap();
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(_) => break, // timeout: the connection stayed open
            }
        }
        out
    }

    /// The node's HTTP port.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// True while the process runs (not killed or exited).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// A plain HTTP/1.1 request; returns (status, body).
    pub fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        http(self.http_port, method, path, body)
    }
}

/// A GET to 127.0.0.1:`port`, `None` if the node does not answer within `timeout` (down, or
/// stopped).
pub fn try_get(port: u16, path: &str, timeout: Duration) -> Option<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let mut body = response[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Some((status, body))
}

/// A plain HTTP/1.1 request to 127.0.0.1:`port`; returns (status, body).
pub fn http(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("HTTP header end");
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = response[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, body)
}

/// Decodes an HTTP chunked body.
fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[line_end + 2 + size + 2..];
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The sealed segments of the log engine in `data`, oldest first, that have their hint files
/// (a node writes them between batches, when idle).
pub fn hinted_segments(data: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(data)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    segments.sort();
    segments.pop(); // the active one
    segments.retain(|s| s.with_extension("hint").exists());
    segments
}
