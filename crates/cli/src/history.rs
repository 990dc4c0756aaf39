//! Histories of a real cluster, and their verdicts: `replikv bench --history FILE` records
//! every operation a few clients make against the cluster's nodes, and `replikv verify FILE
//! --model M` judges it with the simulator's own checkers (`replikv_sim::check`), naming the
//! first operations that break the model.
//!
//! # The workload
//!
//! `--history-clients` clients (threads, blocking connections, one per endpoint each), each
//! a session with the guarantee `--guarantee` (none by default). Each operation is on one of
//! `--history-keys` keys (`hRUN.i`, RUN the run's start in ms, so that no run reads another's
//! values): a write (`SET key value`, half of them) on the first endpoint (the
//! leader; every endpoint with `--spread-writes`), or a read (`GET key`) on the next endpoint
//! in turn, so a client moves between nodes. Its session moves with it: before an operation
//! on another node than the last, the client resumes its token there
//! (`REPLIKV.SESSION RESUME`). Values are unique (`client << 32 | sequence`), so a read names
//! the write it saw.
//!
//! # The file
//!
//! JSON lines, one per operation, in the order they ended:
//! `{"client":1,"guarantee":"monotonic-reads","node":2,"op":"read","key":"h1764.1","value":4294967299,
//! "invoke_ms":12,"complete_ms":14}`. `node` is the endpoint's index, `value` is what a write
//! wrote or a read saw (`null`: absent), times are milliseconds since the run began, and
//! `complete_ms` is `null` for a write whose outcome is unknown (an error that does not say,
//! a timeout): it may or may not have taken effect. An operation that certainly did not take
//! effect (a read refused with `-TRYAGAIN`, a write refused with `-READONLY`) is not
//! recorded.
//!
//! # The models
//!
//! `linearizable`: every key's operations, from every client, can be ordered consistently
//! with real time (Jepsen's register check). `read-your-writes`, `monotonic-reads`,
//! `consistent-prefix`: each client is judged as a session with that guarantee (whatever
//! it ran with), from the history alone; see `replikv_sim::check::sessions` for what is
//! certainly a violation.
//!
//! CAVEATS
//! - The session checkers assume one leader's log and acknowledged writes that survive: a
//!   single-leader cluster without a failover during the run (under `acks = async` a
//!   failover may cut acknowledged writes, and a later read is then "stale" legitimately),
//!   not a multi-leader one with `--spread-writes`, nor a leaderless one (there clock skew
//!   can rank writes against real time under `lww`; the simulator judges leaderless sessions
//!   by causality, `replikv sim --mode leaderless --sessions`).
//! - The linearizability check gives up on a key past about a thousand operations.
//! - `verify` exits 1 when the model fails, 2 when the file cannot be judged.

use crate::output::outln;
use anyhow::{anyhow, bail, Context};
use replikv_sim::check::linearizability;
use replikv_sim::check::sessions;
use replikv_sim::history::{ClientId, Event, History, Op, Outcome};
use replikv_sim::session::Guarantee;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Clients a history run may have at most.
pub const HISTORY_CLIENTS_MAX: usize = 64;

/// The largest node index a history file may name.
pub const HISTORY_NODES_MAX: usize = 1024;

/// Operations a history run may make at most. The linearizability check gives up on a key
/// past about a thousand operations: keep `-n` near that times `--history-keys` for it.
pub const HISTORY_OPS_MAX: u64 = 100_000;

/// How long a client waits for one reply before it counts the operation as unknown (and
/// drops the connection): longer than a session read may wait (`session_wait_ms`, at most
/// 20 s), so that a held read ends with its answer or its refusal, not this timeout.
const REPLY_TIMEOUT: Duration = Duration::from_secs(25);

/// How long a client waits for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One recorded operation: a line of the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// The client (its session).
    pub client: ClientId,
    /// The guarantee its session ran with.
    pub guarantee: String,
    /// The endpoint asked, by index.
    pub node: usize,
    /// `read` or `write`.
    pub op: String,
    /// The key.
    pub key: String,
    /// What a write wrote, or a read saw (`None`: absent).
    pub value: Option<u64>,
    /// Milliseconds since the run began when it was sent.
    pub invoke_ms: u64,
    /// When its reply came; `None` when its outcome is unknown.
    pub complete_ms: Option<u64>,
}

/// What a history run does.
#[derive(Clone, Debug)]
pub struct Plan {
    /// `host:port` of each node; writes go to the first (or every one, with `spread_writes`).
    pub endpoints: Vec<String>,
    /// Writes round-robin over every endpoint.
    pub spread_writes: bool,
    /// Clients.
    pub clients: usize,
    /// Operations in all.
    pub ops: u64,
    /// Keys.
    pub keys: usize,
    /// The sessions' guarantee (`none` for none).
    pub guarantee: String,
    /// Where the history goes.
    pub file: PathBuf,
    /// Seed of the operation mix.
    pub seed: u64,
}

/// A blocking RESP2 connection, enough for the history's commands.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// A reply, as the history needs it.
#[derive(Debug)]
enum Resp {
    Ok(Option<Vec<u8>>),
    Int,
    Error(String),
}

impl Conn {
    fn open(addr: &str) -> anyhow::Result<Conn> {
        let socket = addr.to_socket_addrs()?.next().ok_or_else(|| anyhow!("{addr} names no address"))?;
        let stream =
            TcpStream::connect_timeout(&socket, CONNECT_TIMEOUT).with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn { reader: BufReader::new(stream.try_clone()?), writer: stream })
    }

    /// Sends `args`; an error unless the reply is `+OK`.
    fn expect_ok(&mut self, args: &[&str]) -> anyhow::Result<()> {
        match self.call(args)? {
            Resp::Ok(Some(ok)) if ok == b"OK" => Ok(()),
            other => bail!("{} answered {other:?}", args.join(" ")),
        }
    }

    /// Sends `args` and reads the reply; `Err` when none came (a timeout, a closed link).
    fn call(&mut self, args: &[&str]) -> anyhow::Result<Resp> {
        let mut frame = format!("*{}\r\n", args.len());
        for a in args {
            frame += &format!("${}\r\n{a}\r\n", a.len());
        }
        self.writer.write_all(frame.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let line = line.trim_end();
        match line.as_bytes().first() {
            Some(b'+') => Ok(Resp::Ok(Some(line.as_bytes()[1..].to_vec()))),
            Some(b'-') => Ok(Resp::Error(line[1..].to_string())),
            Some(b':') => Ok(Resp::Int),
            Some(b'$') if line == "$-1" => Ok(Resp::Ok(None)),
            Some(b'$') => {
                let len: usize = line[1..].parse().context("a bulk length")?;
                let mut body = vec![0; len + 2];
                self.reader.read_exact(&mut body)?;
                body.truncate(len);
                Ok(Resp::Ok(Some(body)))
            }
            _ => bail!("unexpected reply {line:?}"),
        }
    }
}

/// `replikv bench --history`: runs the workload and writes the file.
pub fn record(plan: &Plan) -> anyhow::Result<()> {
    if plan.clients == 0 || plan.clients > HISTORY_CLIENTS_MAX {
        bail!("--history-clients must be 1 to {HISTORY_CLIENTS_MAX}");
    }
    if plan.ops == 0 || plan.ops > HISTORY_OPS_MAX {
        bail!("-n must be 1 to {HISTORY_OPS_MAX} with --history (a history a checker can judge)");
    }
    let guarantee = plan.guarantee.clone();
    if !matches!(guarantee.as_str(), "none" | "read-your-writes" | "monotonic-reads" | "consistent-prefix" | "all") {
        bail!("--guarantee {guarantee}: use none, read-your-writes, monotonic-reads, consistent-prefix or all");
    }
    let start = Instant::now();
    // Keys of this run alone: values number from 1 in every run, and a read must not name a
    // write of an earlier run.
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let lines = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(AtomicU64::new(0));
    let per_client = plan.ops.div_ceil(plan.clients as u64);
    let mut threads = Vec::new();
    for client in 0..plan.clients {
        let (plan, lines, refused) = (plan.clone(), lines.clone(), refused.clone());
        threads.push(std::thread::spawn(move || -> anyhow::Result<()> {
            // A connection per endpoint, opened when needed and dropped after any error (a
            // late reply must never be read as the next command's): reopened, it takes the
            // session's guarantee and its last token again.
            let mut conns: Vec<Option<Conn>> = plan.endpoints.iter().map(|_| None).collect();
            let mut token: Option<String> = None;
            let session = plan.guarantee != "none";
            let connect = |node: usize, token: &Option<String>| -> anyhow::Result<Conn> {
                let mut conn = Conn::open(&plan.endpoints[node])?;
                if session {
                    conn.expect_ok(&["REPLIKV.GUARANTEE", &plan.guarantee])?;
                    if let Some(token) = token {
                        conn.expect_ok(&["REPLIKV.SESSION", "RESUME", token])?;
                    }
                }
                Ok(conn)
            };
            let mut random = plan.seed ^ (client as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let mut next = || {
                random ^= random << 13;
                random ^= random >> 7;
                random ^= random << 17;
                random
            };
            let (mut last_node, mut turn) = (0usize, client);
            for seq in 0..per_client {
                let key = format!("h{run}.{}", next() % plan.keys as u64);
                let write = next() % 2 == 0;
                let node = match (write, plan.spread_writes) {
                    (true, false) => 0,
                    _ => {
                        turn += 1;
                        turn % conns.len()
                    }
                };
                if node != last_node && session {
                    // The session moves: its token (taken after its last answer) is adopted
                    // where it goes.
                    if let (Some(conn), Some(t)) = (conns[node].as_mut(), &token) {
                        if conn.expect_ok(&["REPLIKV.SESSION", "RESUME", t]).is_err() {
                            conns[node] = None;
                        }
                    }
                }
                last_node = node;
                if conns[node].is_none() {
                    conns[node] = connect(node, &token).ok();
                }
                let value = ((client as u64) << 32) | (seq + 1);
                let invoke_ms = start.elapsed().as_millis() as u64;
                let reply = match (conns[node].as_mut(), write) {
                    (None, _) => Err(anyhow!("{} cannot be reached", plan.endpoints[node])),
                    (Some(conn), true) => conn.call(&["SET", &key, &value.to_string()]),
                    (Some(conn), false) => conn.call(&["GET", &key]),
                };
                if reply.is_err() {
                    conns[node] = None;
                }
                let complete_ms = start.elapsed().as_millis() as u64;
                // The token after every answer, so that a connection dropped later (after an
                // error) never takes with it what the session saw here.
                if let (true, Ok(Resp::Ok(_)), Some(conn)) = (session, &reply, conns[node].as_mut()) {
                    match conn.call(&["REPLIKV.SESSION"]) {
                        Ok(Resp::Ok(Some(t))) => token = Some(String::from_utf8_lossy(&t).into_owned()),
                        Ok(other) => bail!("REPLIKV.SESSION answered {other:?}"),
                        Err(_) => conns[node] = None,
                    }
                }
                let line = |value: Option<u64>, complete_ms: Option<u64>| Line {
                    client: client as ClientId,
                    guarantee: plan.guarantee.clone(),
                    node,
                    op: if write { "write" } else { "read" }.to_string(),
                    key: key.clone(),
                    value,
                    invoke_ms,
                    complete_ms,
                };
                let recorded = match (write, reply) {
                    (true, Ok(Resp::Ok(Some(_)))) => Some(line(Some(value), Some(complete_ms))),
                    (true, Ok(Resp::Error(e))) if e.starts_with("READONLY") => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                    (true, _) => Some(line(Some(value), None)), // may or may not have taken effect
                    (false, Ok(Resp::Ok(seen))) => match seen.map(|v| String::from_utf8_lossy(&v).parse::<u64>()) {
                        None => Some(line(None, Some(complete_ms))),
                        Some(Ok(seen)) => Some(line(Some(seen), Some(complete_ms))),
                        Some(Err(_)) => bail!("a read of {key} returned a value this history did not write"),
                    },
                    // Refused (TRYAGAIN), or no reply: a read takes no effect either way.
                    (false, _) => None,
                };
                if let Some(line) = recorded {
                    lines.lock().expect("no client panics holding it").push(line);
                }
            }
            Ok(())
        }));
    }
    // Every client ends before the file is written; the first failure is reported after.
    let mut failure = None;
    for thread in threads {
        let ended = thread.join().map_err(|_| anyhow!("a history client panicked")).and_then(|r| r);
        if let Err(e) = ended {
            failure.get_or_insert(e);
        }
    }
    let mut lines = std::mem::take(&mut *lines.lock().expect("every client ended"));
    lines.sort_by_key(|l| (l.complete_ms.unwrap_or(u64::MAX), l.invoke_ms));
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&plan.file).with_context(|| format!("creating {}", plan.file.display()))?,
    );
    for line in &lines {
        serde_json::to_writer(&mut out, line)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    let refused = refused.load(Ordering::Relaxed);
    outln!(
        "history: {} operations of {} clients ({} unknown, {} writes refused) in {:.1} s -> {}",
        lines.len(),
        plan.clients,
        lines.iter().filter(|l| l.complete_ms.is_none()).count(),
        refused,
        start.elapsed().as_secs_f64(),
        plan.file.display()
    );
    if let Some(e) = failure {
        return Err(e.context("a history client stopped (what it recorded before is in the file)"));
    }
    if !lines.iter().any(|l| l.op == "write" && l.complete_ms.is_some()) {
        bail!("no write was acknowledged ({refused} refused): is the first endpoint the leader?");
    }
    Ok(())
}
/// Reads a history file into the simulator's form.
pub fn read(path: &Path) -> anyhow::Result<History> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut events = Vec::new();
    // The checkers name a write by its value: each must be unique, and a read must name a
    // write of its own key (or none).
    let mut written: BTreeMap<u64, String> = BTreeMap::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let l: Line =
            serde_json::from_str(&line).with_context(|| format!("{}:{}: not a history line", path.display(), i + 1))?;
        let op = match (l.op.as_str(), l.value) {
            ("write", Some(value)) => Op::Write { key: l.key, value },
            ("read", _) => Op::Read { key: l.key },
            _ => bail!("{}:{}: op {:?} (a write needs its value)", path.display(), i + 1, l.op),
        };
        if l.complete_ms.is_some_and(|c| c < l.invoke_ms) {
            bail!("{}:{}: completes before it was invoked", path.display(), i + 1);
        }
        if l.node > HISTORY_NODES_MAX {
            bail!("{}:{}: node {} (at most {HISTORY_NODES_MAX})", path.display(), i + 1, l.node);
        }
        if let Op::Write { key, value } = &op {
            if written.insert(*value, key.clone()).is_some() {
                bail!("{}:{}: value {value} is written twice (values name writes)", path.display(), i + 1);
            }
        }
        let outcome = match (&op, l.complete_ms) {
            (Op::Read { .. }, None) => bail!("{}:{}: a read without its reply", path.display(), i + 1),
            (_, None) => Outcome::Indeterminate,
            (Op::Read { .. }, Some(_)) => Outcome::Ok(l.value),
            (Op::Write { .. }, Some(_)) => Outcome::Ok(None),
        };
        events.push(Event {
            client: l.client,
            node: Some(l.node),
            op,
            invoke_ms: l.invoke_ms,
            complete_ms: l.complete_ms,
            outcome,
        });
    }
    for (i, event) in events.iter().enumerate() {
        if let (Op::Read { key }, Outcome::Ok(Some(value))) = (&event.op, &event.outcome) {
            if written.get(value).is_some_and(|k| k != key) {
                bail!(
                    "{}: read {} of {key} names value {value}, which another key's write wrote",
                    path.display(),
                    i + 1
                );
            }
        }
    }
    Ok(History { events })
}

/// `replikv verify`: true when the history passes the model; prints the verdict.
pub fn verify(path: &Path, model: &str) -> anyhow::Result<bool> {
    let history = read(path)?;
    let guarantee = match model {
        "linearizable" => None,
        "read-your-writes" => Some(Guarantee::ReadYourWrites),
        "monotonic-reads" => Some(Guarantee::MonotonicReads),
        "consistent-prefix" => Some(Guarantee::ConsistentPrefix),
        other => bail!("--model {other}: use linearizable, read-your-writes, monotonic-reads or consistent-prefix"),
    };
    let operations = history.events.len();
    match guarantee {
        None => match linearizability::check(&history, &linearizability::Limits::default()) {
            linearizability::Verdict::Linearizable => {
                outln!("{operations} operations: linearizable");
                Ok(true)
            }
            linearizability::Verdict::NotLinearizable { key, explanation } => {
                outln!("{operations} operations: NOT linearizable, key {key}: {explanation}");
                Ok(false)
            }
            linearizability::Verdict::GaveUp { key, reason } => {
                bail!("{operations} operations: the check could not decide for key {key}: {reason}")
            }
        },
        Some(guarantee) => {
            let clients: BTreeMap<ClientId, Guarantee> = history.events.iter().map(|e| (e.client, guarantee)).collect();
            let judged = sessions::check(&history, &clients);
            let violations: Vec<&String> = judged.violations.values().flatten().collect();
            if violations.is_empty() {
                outln!("{operations} operations of {} sessions: {model} holds", clients.len());
                return Ok(true);
            }
            outln!(
                "{operations} operations of {} sessions: {model} FAILS ({} violations); the first:",
                clients.len(),
                violations.len()
            );
            for v in violations.iter().take(5) {
                outln!("  {v}");
            }
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(lines: &[&str]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
        f
    }

    const W1: &str =
        r#"{"client":0,"guarantee":"none","node":0,"op":"write","key":"a","value":1,"invoke_ms":0,"complete_ms":1}"#;
    const R1: &str =
        r#"{"client":1,"guarantee":"none","node":1,"op":"read","key":"a","value":1,"invoke_ms":2,"complete_ms":3}"#;

    #[test]
    fn a_file_that_cannot_be_judged_is_refused_with_its_line() {
        assert_eq!(read(file(&[W1, R1]).path()).unwrap().events.len(), 2);
        let twice = r#"{"client":2,"guarantee":"none","node":0,"op":"write","key":"b","value":1,"invoke_ms":4,"complete_ms":5}"#;
        let e = read(file(&[W1, twice]).path()).unwrap_err().to_string();
        assert!(e.contains(":2: value 1 is written twice"), "{e}");
        let other_key =
            r#"{"client":1,"guarantee":"none","node":1,"op":"read","key":"b","value":1,"invoke_ms":2,"complete_ms":3}"#;
        let e = read(file(&[W1, other_key]).path()).unwrap_err().to_string();
        assert!(e.contains("which another key's write wrote"), "{e}");
        let backwards =
            r#"{"client":1,"guarantee":"none","node":1,"op":"read","key":"a","value":1,"invoke_ms":9,"complete_ms":3}"#;
        assert!(read(file(&[W1, backwards]).path()).unwrap_err().to_string().contains("completes before"));
        let far = r#"{"client":1,"guarantee":"none","node":99999,"op":"read","key":"a","value":1,"invoke_ms":2,"complete_ms":3}"#;
        assert!(read(file(&[W1, far]).path()).unwrap_err().to_string().contains("node 99999"));
        assert!(read(file(&["not json"]).path()).unwrap_err().to_string().contains(":1: not a history line"));
    }

    #[test]
    fn a_stale_read_of_its_own_write_fails_read_your_writes() {
        let stale = r#"{"client":0,"guarantee":"none","node":1,"op":"read","key":"a","value":null,"invoke_ms":2,"complete_ms":3}"#;
        let f = file(&[W1, stale]);
        assert!(!verify(f.path(), "read-your-writes").unwrap());
        assert!(verify(f.path(), "monotonic-reads").unwrap(), "nothing read before");
        assert!(verify(file(&[W1, R1]).path(), "linearizable").unwrap());
        assert!(verify(f.path(), "strong").is_err());
    }
}
