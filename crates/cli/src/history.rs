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

use crate::output::outln;
use anyhow::{anyhow, bail, Context};
use replikv_sim::check::linearizability;
use replikv_sim::check::sessions;
use replikv_sim::history::{ClientId, Event, History, Op, Outcome};
use replikv_sim::session::Guarantee;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Clients a history run may have at most.
pub const HISTORY_CLIENTS_MAX: usize = 64;

/// Operations a history run may record at most (a file a checker can judge).
pub const HISTORY_OPS_MAX: u64 = 1_000_000;

/// How long a client waits for one reply before it counts the operation as unknown.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

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
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn { reader: BufReader::new(stream.try_clone()?), writer: stream })
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
    let per_client = plan.ops.div_ceil(plan.clients as u64);
    let mut threads = Vec::new();
    for client in 0..plan.clients {
        let (plan, lines) = (plan.clone(), lines.clone());
        threads.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let mut conns: Vec<Conn> = plan.endpoints.iter().map(|e| Conn::open(e)).collect::<anyhow::Result<_>>()?;
            for conn in &mut conns {
                if plan.guarantee != "none" {
                    conn.call(&["REPLIKV.GUARANTEE", &plan.guarantee])?;
                }
            }
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
                if node != last_node && plan.guarantee != "none" {
                    let token = match conns[last_node].call(&["REPLIKV.SESSION"])? {
                        Resp::Ok(Some(token)) => String::from_utf8_lossy(&token).into_owned(),
                        other => bail!("REPLIKV.SESSION answered {other:?}"),
                    };
                    conns[node].call(&["REPLIKV.SESSION", "RESUME", &token])?;
                }
                last_node = node;
                let value = ((client as u64) << 32) | (seq + 1);
                let invoke_ms = start.elapsed().as_millis() as u64;
                let reply = match write {
                    true => conns[node].call(&["SET", &key, &value.to_string()]),
                    false => conns[node].call(&["GET", &key]),
                };
                let complete_ms = start.elapsed().as_millis() as u64;
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
                    (true, Ok(Resp::Ok(_))) => Some(line(Some(value), Some(complete_ms))),
                    (true, Ok(Resp::Error(e))) if e.starts_with("READONLY") => None,
                    (true, _) => Some(line(Some(value), None)), // may or may not have taken effect
                    (false, Ok(Resp::Ok(seen))) => {
                        let seen = seen.map(|v| String::from_utf8_lossy(&v).parse::<u64>()).transpose();
                        Some(line(seen.context("a value this history did not write")?, Some(complete_ms)))
                    }
                    (false, _) => None, // refused (TRYAGAIN) or lost: it took no effect
                };
                if let Some(line) = recorded {
                    lines.lock().expect("no client panics holding it").push(line);
                }
            }
            Ok(())
        }));
    }
    for thread in threads {
        thread.join().map_err(|_| anyhow!("a history client panicked"))??;
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
    outln!(
        "history: {} operations of {} clients ({} unknown) in {:.1} s -> {}",
        lines.len(),
        plan.clients,
        lines.iter().filter(|l| l.complete_ms.is_none()).count(),
        start.elapsed().as_secs_f64(),
        plan.file.display()
    );
    Ok(())
}

/// Reads a history file into the simulator's form.
pub fn read(path: &Path) -> anyhow::Result<History> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut events = Vec::new();
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
