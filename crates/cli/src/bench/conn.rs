//! One benchmark connection: a socket per endpoint, and the rounds that carry a batch of
//! operations over them.
//!
//! A batch is up to `-P` operations. Round `r` sends step `r` of every operation that has one
//! (a read-modify-write has two steps, everything else one): each command is pushed to the socket
//! of its endpoint (writes to the first endpoint, reads to the next one in round-robin order),
//! followed by `WAIT n timeout` after a write when `--wait` is given; then every socket with
//! commands is flushed in one write, and the replies are read back in the order sent. So a
//! pipelined batch is one write and one stream of replies per socket, and the second step of a
//! read-modify-write leaves only after the reply to its first.
//!
//! An operation is answered when the reply to its last command is read; its latency is from its
//! start (the batch's send time, or its intended start under `--rate`) to that moment. Replies are
//! judged by [`judge`]: an error reply, or a `WAIT` answering fewer replicas than asked, makes
//! the operation an error of that kind; a null `GET` is a miss, not an error.
//!
//! Every flush and read of a round must finish before the round's deadline, the request timeout
//! after the round began. A socket error, a closed socket, a missed deadline or bytes that are not
//! RESP end the connection: the batch's unanswered operations are lost with that kind, and the
//! caller stops its loop.
//!
//! CAVEATS
//! - The request timeout covers a whole round of up to `-P` requests, not each one.
//! - With several endpoints, replies are read in the order the commands were queued, across
//!   endpoints; a slow endpoint delays the reading, and so the timing, of later operations of the
//!   same batch on the others.

use super::args::WaitSpec;
use super::client::{Client, ClientError, Reply};
use super::report::{error_kind, Recorder, WAIT_SHORT};
use super::schedule;
use super::workload::{self, Cmd, OpKind, Step, Target, MSET_KEYS};
use std::time::{Duration, Instant};
use tokio::time::timeout_at;

/// One operation to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    /// What it does.
    pub kind: OpKind,
    /// The record it touches (the first of `mset`'s).
    pub record: u64,
}

/// What every connection of a phase uses to encode operations.
pub struct Encoding {
    /// The value every write stores.
    value: Vec<u8>,
    /// `WAIT` after writes.
    wait: Option<WaitSpec>,
    /// `WAIT`'s two arguments, formatted once.
    wait_args: [Vec<u8>; 2],
    /// Records, for `mset`'s consecutive keys.
    records: u64,
    /// How long a round may take.
    timeout: Duration,
}

impl Encoding {
    /// The encoding of a phase.
    pub fn new(value: Vec<u8>, wait: Option<WaitSpec>, records: u64, timeout: Duration) -> Encoding {
        let wait_args = match wait {
            Some(w) => [w.replicas.to_string().into_bytes(), w.timeout_ms.to_string().into_bytes()],
            None => [Vec::new(), Vec::new()],
        };
        Encoding { value, wait, wait_args, records, timeout }
    }
}

/// How a reply judges its operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// As expected.
    Ok,
    /// A `GET` of a record that is not there.
    Miss,
    /// An error of this kind.
    Error(String),
}

/// Why a connection stopped.
#[derive(Debug)]
pub struct Failure {
    /// `io`, `timeout` or `protocol`.
    pub kind: &'static str,
    /// What happened.
    pub message: String,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Io(e) => Failure { kind: "io", message: e.to_string() },
            ClientError::Protocol(message) => Failure { kind: "protocol", message },
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        ClientError::Io(e).into()
    }
}

/// Judges `reply` to `cmd`.
pub fn judge(reply: &Reply, cmd: Cmd, wait: Option<WaitSpec>) -> Verdict {
    match (reply, cmd) {
        (Reply::Error(message), _) => Verdict::Error(error_kind(message)),
        (Reply::Integer(n), Cmd::Wait) => {
            let replicas = wait.map_or(0, |w| w.replicas);
            if u64::try_from(*n).is_ok_and(|n| n >= replicas) {
                Verdict::Ok
            } else {
                Verdict::Error(WAIT_SHORT.to_string())
            }
        }
        (_, Cmd::Wait) => Verdict::Error("UNEXPECTED".to_string()),
        (Reply::Null, Cmd::Get) => Verdict::Miss,
        _ => Verdict::Ok,
    }
}

/// Runs `fut` unless `deadline` passes first.
async fn within<T, E: Into<Failure>>(
    deadline: tokio::time::Instant,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, Failure> {
    match timeout_at(deadline, fut).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(Failure { kind: "timeout", message: "no reply within the request timeout".to_string() }),
    }
}

/// A connection: one client per endpoint.
pub struct Conn {
    /// Clients in endpoint order; the first takes writes.
    clients: Vec<Client>,
    /// The endpoint of the next read.
    next_reader: usize,
    /// Writes go round-robin too (see `next_writer`).
    spread_writes: bool,
    /// The endpoint of the next write, when they are spread.
    next_writer: usize,
    /// Scratch space for keys.
    keys: Vec<Vec<u8>>,
}

/// A command waiting for its replies in the current round.
struct Sent {
    /// Index of the operation in the batch.
    op: usize,
    /// The client it went to.
    endpoint: usize,
    /// The command.
    cmd: Cmd,
    /// Whether `WAIT` follows it.
    waits: bool,
}

/// A batch in progress.
struct Batch<'a> {
    /// The operations.
    ops: &'a [Op],
    /// Their starts, in nanoseconds since `epoch`.
    starts_ns: &'a [u64],
    /// The phase's start.
    epoch: Instant,
    /// The first error of each operation.
    errors: Vec<Option<String>>,
    /// Which operations are answered.
    answered: Vec<bool>,
}

impl Batch<'_> {
    /// Applies a reply's verdict to operation `op`: its first error wins.
    fn judge(&mut self, op: usize, verdict: Verdict, rec: &mut Recorder) {
        match verdict {
            Verdict::Ok => {}
            Verdict::Miss => rec.miss(),
            Verdict::Error(kind) => {
                self.errors[op].get_or_insert(kind);
            }
        }
    }

    /// Records operation `op` as answered now.
    fn finish(&mut self, op: usize, rec: &mut Recorder) {
        let latency_ns = schedule::latency_ns(self.starts_ns[op], self.epoch.elapsed().as_nanos() as u64);
        rec.answered(self.ops[op].kind, latency_ns, self.errors[op].as_deref());
        self.answered[op] = true;
    }
}

impl Conn {
    /// Connects to every endpoint within `timeout`; with `spread_writes`, writes go
    /// round-robin over them as reads do.
    pub async fn connect(endpoints: &[String], timeout: Duration, spread_writes: bool) -> anyhow::Result<Conn> {
        let mut clients = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let client = tokio::time::timeout(timeout, Client::connect(endpoint))
                .await
                .map_err(|_| anyhow::anyhow!("connecting to {endpoint}: no answer within {timeout:?}"))?
                .map_err(|e| anyhow::anyhow!("connecting to {endpoint}: {e}"))?;
            clients.push(client);
        }
        Ok(Conn { clients, next_reader: 0, spread_writes, next_writer: 0, keys: vec![Vec::new(); MSET_KEYS as usize] })
    }

    /// Runs a batch; `starts_ns[i]` is operation `i`'s start in nanoseconds since `epoch`. Every
    /// operation ends in `rec`, answered or lost; a failure ends the connection.
    pub async fn execute(
        &mut self,
        ops: &[Op],
        starts_ns: &[u64],
        epoch: Instant,
        enc: &Encoding,
        rec: &mut Recorder,
    ) -> Result<(), Failure> {
        let mut batch =
            Batch { ops, starts_ns, epoch, errors: vec![None; ops.len()], answered: vec![false; ops.len()] };
        let rounds = ops.iter().map(|op| op.kind.steps().len()).max().unwrap_or(0);
        for round in 0..rounds {
            let sent = self.push_round(ops, round, enc, rec);
            if let Err(failure) = self.read_round(&mut batch, &sent, round, enc, rec).await {
                for (op, _) in ops.iter().zip(&batch.answered).filter(|(_, answered)| !**answered) {
                    rec.lost(op.kind, failure.kind);
                }
                return Err(failure);
            }
        }
        Ok(())
    }

    /// Queues step `round` of every operation that has one; returns what was queued, in order.
    fn push_round(&mut self, ops: &[Op], round: usize, enc: &Encoding, rec: &mut Recorder) -> Vec<Sent> {
        let mut sent = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let Some(&step) = op.kind.steps().get(round) else { continue };
            let endpoint = self.endpoint(step);
            self.push(endpoint, step.cmd, op.record, enc);
            rec.sent(step.cmd);
            let waits = enc.wait.is_some() && step.cmd.writes() && op.kind.waits();
            if waits {
                let [replicas, timeout] = &enc.wait_args;
                self.clients[endpoint].push(&[b"WAIT", replicas, timeout]);
                rec.sent(Cmd::Wait);
            }
            sent.push(Sent { op: i, endpoint, cmd: step.cmd, waits });
        }
        sent
    }

    /// Sends what `push_round` queued and reads every reply, finishing operations whose last step
    /// this round is.
    async fn read_round(
        &mut self,
        batch: &mut Batch<'_>,
        sent: &[Sent],
        round: usize,
        enc: &Encoding,
        rec: &mut Recorder,
    ) -> Result<(), Failure> {
        let deadline = tokio::time::Instant::now() + enc.timeout;
        for client in self.clients.iter_mut().filter(|c| c.has_pending()) {
            within(deadline, client.flush()).await?;
        }
        for s in sent {
            let reply = within(deadline, self.clients[s.endpoint].read_reply()).await?;
            batch.judge(s.op, judge(&reply, s.cmd, enc.wait), rec);
            if s.waits {
                let reply = within(deadline, self.clients[s.endpoint].read_reply()).await?;
                batch.judge(s.op, judge(&reply, Cmd::Wait, enc.wait), rec);
            }
            if batch.ops[s.op].kind.steps().len() == round + 1 {
                batch.finish(s.op, rec);
            }
        }
        Ok(())
    }

    /// The endpoint a step goes to.
    fn endpoint(&mut self, step: Step) -> usize {
        match step.target {
            Target::Writer if self.spread_writes => {
                let endpoint = self.next_writer;
                self.next_writer = (self.next_writer + 1) % self.clients.len();
                endpoint
            }
            Target::Writer => 0,
            Target::Reader => {
                let endpoint = self.next_reader;
                self.next_reader = (self.next_reader + 1) % self.clients.len();
                endpoint
            }
        }
    }

    /// Queues `cmd` on `record` to `endpoint`.
    fn push(&mut self, endpoint: usize, cmd: Cmd, record: u64, enc: &Encoding) {
        let Conn { clients, keys, .. } = self;
        let client = &mut clients[endpoint];
        let key = &mut keys[0];
        workload::key(key, cmd, record);
        match cmd {
            Cmd::Get => client.push(&[b"GET", key]),
            Cmd::Set => client.push(&[b"SET", key, &enc.value]),
            Cmd::Incr => client.push(&[b"INCR", key]),
            Cmd::Mset => {
                for (j, key) in keys.iter_mut().enumerate().skip(1) {
                    workload::key(key, cmd, (record + j as u64) % enc.records);
                }
                let mut args: Vec<&[u8]> = vec![b"MSET"];
                for key in keys.iter() {
                    args.push(key);
                    args.push(&enc.value);
                }
                client.push(&args);
            }
            Cmd::Wait => unreachable!("WAIT is queued after the write it follows"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server that reads one chunk, answers `reply`, and then closes the socket or, with
    /// `hang`, keeps it open without answering more.
    async fn fake_server(reply: &'static [u8], hang: bool) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 65536];
            let _ = socket.read(&mut buf).await;
            socket.write_all(reply).await.unwrap();
            if hang {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        });
        addr
    }

    async fn run_batch(addr: String, timeout: Duration, wait: Option<WaitSpec>) -> (Result<(), Failure>, Recorder) {
        let mut conn = Conn::connect(&[addr], Duration::from_secs(5), false).await.unwrap();
        let enc = Encoding::new(b"v".to_vec(), wait, 100, timeout);
        let ops: Vec<Op> = (0..3).map(|record| Op { kind: OpKind::Set, record }).collect();
        let mut rec = Recorder::default();
        let result = conn.execute(&ops, &[0, 0, 0], Instant::now(), &enc, &mut rec).await;
        (result, rec)
    }

    #[tokio::test]
    async fn a_closed_connection_loses_the_unanswered_operations() {
        let addr = fake_server(b"+OK\r\n", false).await;
        let (result, rec) = run_batch(addr, Duration::from_secs(5), None).await;
        assert_eq!(result.unwrap_err().kind, "io");
        let report = rec.into_report("t".into(), "uniform", Duration::from_secs(1));
        assert_eq!((report.ops, report.ops_lost), (1, 2));
        assert_eq!(report.errors.get("io"), Some(&2));
        assert_eq!(report.commands.get("set"), Some(&3));
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let addr = fake_server(b"", true).await;
        let (result, rec) = run_batch(addr, Duration::from_millis(100), None).await;
        assert_eq!(result.unwrap_err().kind, "timeout");
        let report = rec.into_report("t".into(), "uniform", Duration::from_secs(1));
        assert_eq!((report.ops, report.ops_lost), (0, 3));
    }

    #[tokio::test]
    async fn wait_follows_each_write_and_short_answers_are_errors() {
        let addr = fake_server(b"+OK\r\n:1\r\n+OK\r\n:0\r\n-ERR no\r\n:1\r\n", true).await;
        let wait = Some(WaitSpec { replicas: 1, timeout_ms: 10 });
        let (result, rec) = run_batch(addr, Duration::from_secs(5), wait).await;
        result.unwrap();
        let report = rec.into_report("t".into(), "uniform", Duration::from_secs(1));
        assert_eq!(report.ops, 3);
        assert_eq!(report.errors.get(WAIT_SHORT), Some(&1));
        assert_eq!(report.errors.get("ERR"), Some(&1));
        assert_eq!((report.commands.get("set"), report.commands.get("wait")), (Some(&3), Some(&3)));
    }

    #[test]
    fn replies_judge_their_operations() {
        let wait = Some(WaitSpec { replicas: 2, timeout_ms: 10 });
        let err = |s: &str| Verdict::Error(s.to_string());
        let table = [
            (Reply::Simple(b"OK".to_vec()), Cmd::Set, Verdict::Ok),
            (Reply::Error(b"ERR value is not an integer".to_vec()), Cmd::Incr, err("ERR")),
            (Reply::Error(b"READONLY You can't write".to_vec()), Cmd::Set, err("READONLY")),
            (Reply::Bulk(b"v".to_vec()), Cmd::Get, Verdict::Ok),
            (Reply::Null, Cmd::Get, Verdict::Miss),
            (Reply::Integer(2), Cmd::Wait, Verdict::Ok),
            (Reply::Integer(3), Cmd::Wait, Verdict::Ok),
            (Reply::Integer(1), Cmd::Wait, err(WAIT_SHORT)),
            (Reply::Integer(0), Cmd::Wait, err(WAIT_SHORT)),
            (Reply::Integer(-1), Cmd::Wait, err(WAIT_SHORT)),
            (Reply::Simple(b"OK".to_vec()), Cmd::Wait, err("UNEXPECTED")),
            (Reply::Integer(5), Cmd::Incr, Verdict::Ok),
        ];
        for (reply, cmd, want) in table {
            assert_eq!(judge(&reply, cmd, wait), want, "{reply:?} to {cmd:?}");
        }
    }
}
