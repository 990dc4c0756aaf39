//! What a benchmark counted: latency histograms per operation kind, errors by kind, commands sent,
//! and the text table or JSON document they become.
//!
//! Each connection task keeps its own [`Recorder`] (no sharing on the hot path); the phase merges
//! them when every task is done. An operation ends one of two ways:
//!
//! - **answered**: every reply came back. Its latency goes into the histogram of its kind whatever
//!   the replies said, because an error reply or a `WAIT` that timed out short took real time and
//!   hiding it would flatter the tail. If a reply was an error, the operation is also counted as an
//!   error of that kind: the error reply's first word (`ERR`, `WRONGTYPE`, `READONLY`, ...), or
//!   `WAIT_SHORT` when `WAIT` answered fewer replicas than asked, `UNEXPECTED` when its reply was
//!   not a number.
//! - **lost**: its connection failed first (`io`: the socket failed or closed; `timeout`: no reply
//!   within the request timeout; `protocol`: bytes that are not RESP). It has no latency, and
//!   counts as an error of that kind. The connection stops there.
//!
//! Histograms hold nanoseconds from 1 ns to [`LATENCY_NS_MAX`] with [`LATENCY_SIGNIFICANT_DIGITS`]
//! significant digits (HdrHistogram), so any percentile is within 0.1% of the true value; each
//! grows only as far as the largest latency it has seen. Reports
//! give microseconds (JSON) or milliseconds (text).
//!
//! Commands are counted as they are written to a socket, per command name, so that a run against a
//! server can be checked against the server's own per-command counters.
//!
//! CAVEATS
//! - Throughput counts answered operations, error replies included: read it with the errors.
//! - A command written just before its connection failed may or may not have reached the server;
//!   only runs without lost operations match the server's counters exactly.

use super::workload::{Cmd, OpKind};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

/// The longest latency a histogram holds: an hour (longer ones are recorded as an hour).
pub const LATENCY_NS_MAX: u64 = 3_600_000_000_000;
/// Significant decimal digits the histograms keep.
pub const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

/// The error kind of an operation whose `WAIT` answered fewer replicas than asked.
pub const WAIT_SHORT: &str = "WAIT_SHORT";

/// One operation kind's counts in one connection.
struct OpRecord {
    /// Latencies of answered operations, in nanoseconds.
    latency: Histogram<u64>,
    /// Answered operations with an error reply.
    errors: u64,
    /// Operations lost with their connection.
    lost: u64,
}

impl OpRecord {
    /// Nothing counted yet.
    fn new() -> OpRecord {
        // Grows to the largest latency recorded (~100 KiB for milliseconds), instead of holding
        // buckets up to an hour in every connection from the start (~270 KiB each).
        let latency = Histogram::new(LATENCY_SIGNIFICANT_DIGITS).expect("a valid number of digits");
        OpRecord { latency, errors: 0, lost: 0 }
    }
}

/// What one connection, or a merged phase, counted.
pub struct Recorder {
    /// Per operation kind.
    ops: BTreeMap<OpKind, OpRecord>,
    /// Errors by kind, lost operations included.
    errors: BTreeMap<String, u64>,
    /// Commands written, indexed by [`Cmd::index`].
    commands: [u64; Cmd::ALL.len()],
    /// `GET`s answered with a null: the record was not there.
    misses: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder { ops: BTreeMap::new(), errors: BTreeMap::new(), commands: [0; Cmd::ALL.len()], misses: 0 }
    }
}

impl Recorder {
    /// Counts an answered operation; `error` is the kind of its first error reply, if any.
    pub fn answered(&mut self, kind: OpKind, latency_ns: u64, error: Option<&str>) {
        let op = self.ops.entry(kind).or_insert_with(OpRecord::new);
        op.latency.record(latency_ns.clamp(1, LATENCY_NS_MAX)).expect("a growing histogram takes any value");
        if let Some(error) = error {
            op.errors += 1;
            *self.errors.entry(error.to_string()).or_insert(0) += 1;
        }
    }

    /// Counts an operation lost with its connection, for `error` (`io`, `timeout`, `protocol`).
    pub fn lost(&mut self, kind: OpKind, error: &str) {
        self.ops.entry(kind).or_insert_with(OpRecord::new).lost += 1;
        *self.errors.entry(error.to_string()).or_insert(0) += 1;
    }

    /// Counts a command written to a socket.
    pub fn sent(&mut self, cmd: Cmd) {
        self.commands[cmd.index()] += 1;
    }

    /// Counts a `GET` answered with a null.
    pub fn miss(&mut self) {
        self.misses += 1;
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: Recorder) {
        for (kind, op) in other.ops {
            let mine = self.ops.entry(kind).or_insert_with(OpRecord::new);
            mine.latency.add(&op.latency).expect("histograms with the same bounds");
            mine.errors += op.errors;
            mine.lost += op.lost;
        }
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_insert(0) += n;
        }
        for (mine, theirs) in self.commands.iter_mut().zip(other.commands) {
            *mine += theirs;
        }
        self.misses += other.misses;
    }

    /// The report of a phase called `name` that took `elapsed`.
    pub fn into_report(self, name: String, distribution: &str, elapsed: Duration) -> PhaseReport {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let latency: Vec<OpReport> = self.ops.iter().map(|(kind, op)| op_report(kind.name(), op, seconds)).collect();
        let mut all = OpRecord::new();
        for op in self.ops.values() {
            all.latency.add(&op.latency).expect("histograms with the same bounds");
            all.errors += op.errors;
            all.lost += op.lost;
        }
        let all = op_report("all", &all, seconds);
        PhaseReport {
            name,
            distribution: distribution.to_string(),
            elapsed_s: elapsed.as_secs_f64(),
            ops: all.ops,
            ops_lost: all.lost,
            throughput_ops_s: all.throughput_ops_s,
            errors_total: self.errors.values().sum(),
            errors: self.errors,
            misses: self.misses,
            commands: commands_by_name(&self.commands),
            all,
            latency,
        }
    }
}

/// The figures of one operation kind (or of `all`) over a phase of `seconds`.
fn op_report(name: &str, op: &OpRecord, seconds: f64) -> OpReport {
    OpReport {
        op: name.to_string(),
        ops: op.latency.len(),
        errors: op.errors + op.lost,
        lost: op.lost,
        throughput_ops_s: op.latency.len() as f64 / seconds,
        mean_us: op.latency.mean() / 1e3,
        p50_us: quantile_us(&op.latency, 0.5),
        p95_us: quantile_us(&op.latency, 0.95),
        p99_us: quantile_us(&op.latency, 0.99),
        p999_us: quantile_us(&op.latency, 0.999),
        max_us: op.latency.max() as f64 / 1e3,
    }
}

/// The value at quantile `q` in microseconds.
fn quantile_us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e3
}

/// Nonzero command counts by name.
fn commands_by_name(counts: &[u64; Cmd::ALL.len()]) -> BTreeMap<String, u64> {
    Cmd::ALL.iter().filter(|c| counts[c.index()] > 0).map(|c| (c.name().to_string(), counts[c.index()])).collect()
}

/// One operation kind's figures in a phase.
#[derive(Clone, Debug, Serialize)]
pub struct OpReport {
    /// The operation kind (`read`, `update`, `set`, ...).
    pub op: String,
    /// Operations answered.
    pub ops: u64,
    /// Operations answered with an error, plus operations lost.
    pub errors: u64,
    /// Operations lost with their connection.
    pub lost: u64,
    /// Operations answered per second of the phase.
    pub throughput_ops_s: f64,
    /// Mean latency in microseconds.
    pub mean_us: f64,
    /// Median latency in microseconds.
    pub p50_us: f64,
    /// 95th percentile latency in microseconds.
    pub p95_us: f64,
    /// 99th percentile latency in microseconds.
    pub p99_us: f64,
    /// 99.9th percentile latency in microseconds.
    pub p999_us: f64,
    /// Largest latency in microseconds.
    pub max_us: f64,
}

/// One phase's figures.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseReport {
    /// `load`, `workload a`, `test set`, ...
    pub name: String,
    /// The key distribution.
    pub distribution: String,
    /// Seconds from the first operation to the last reply.
    pub elapsed_s: f64,
    /// Operations answered.
    pub ops: u64,
    /// Operations lost with their connection.
    pub ops_lost: u64,
    /// Operations answered per second.
    pub throughput_ops_s: f64,
    /// Errors of every kind.
    pub errors_total: u64,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// `GET`s answered with a null.
    pub misses: u64,
    /// Commands written, by name.
    pub commands: BTreeMap<String, u64>,
    /// Every operation kind together.
    pub all: OpReport,
    /// Latency per operation kind.
    pub latency: Vec<OpReport>,
}

/// The settings a run used, echoed in its report.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// Endpoints; the first takes the writes.
    pub endpoints: Vec<String>,
    /// Connections (each a task with one socket per endpoint).
    pub connections: usize,
    /// Operations in flight per connection.
    pub pipeline: usize,
    /// Records loaded and drawn from.
    pub records: u64,
    /// Bytes per value.
    pub value_bytes: usize,
    /// Operations per phase, if bounded by a count.
    pub ops_per_phase: Option<u64>,
    /// Seconds per phase, if bounded by time.
    pub duration_s: Option<f64>,
    /// Offered load in operations per second, if fixed.
    pub rate_ops_s: Option<f64>,
    /// `WAIT` after writes: `replicas,timeout_ms`.
    pub wait: Option<String>,
    /// The seed of every random draw.
    pub seed: u64,
    /// Per-request timeout in milliseconds.
    pub timeout_ms: u64,
    /// Whether the load phase ran.
    pub load: bool,
}

/// A whole run's report: the `--json` document.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The tool and its version.
    pub tool: String,
    /// The run's settings.
    pub settings: Settings,
    /// Phases in the order they ran, the load phase first.
    pub phases: Vec<PhaseReport>,
    /// Commands written over every phase, by name.
    pub commands: BTreeMap<String, u64>,
    /// Errors over every phase.
    pub errors_total: u64,
}

impl Report {
    /// A report of `phases`, with totals.
    pub fn new(settings: Settings, phases: Vec<PhaseReport>) -> Report {
        let mut commands = BTreeMap::new();
        for phase in &phases {
            for (name, n) in &phase.commands {
                *commands.entry(name.clone()).or_insert(0) += n;
            }
        }
        let errors_total = phases.iter().map(|p| p.errors_total).sum();
        let tool = format!("replikv bench {}", env!("CARGO_PKG_VERSION"));
        Report { tool, settings, phases, commands, errors_total }
    }

    /// The report as a text table.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let s = &self.settings;
        let _ = writeln!(
            out,
            "replikv bench: {} | {} connections, pipeline {} | {} records of {} bytes | seed {}",
            s.endpoints.join(","),
            s.connections,
            s.pipeline,
            s.records,
            s.value_bytes,
            s.seed
        );
        if let Some(rate) = s.rate_ops_s {
            let _ = writeln!(out, "offered load {rate:.0} ops/s: latency counts from each operation's intended start");
        }
        if let Some(wait) = &s.wait {
            let _ = writeln!(out, "WAIT {} after every write", wait.replace(',', " "));
        }
        for phase in &self.phases {
            out.push('\n');
            phase_text(&mut out, phase);
        }
        out
    }
}

/// Appends one phase's table to `out`.
fn phase_text(out: &mut String, p: &PhaseReport) {
    let _ = writeln!(
        out,
        "{} ({}): {} ops in {:.3} s, {:.0} ops/s",
        p.name, p.distribution, p.ops, p.elapsed_s, p.throughput_ops_s
    );
    let _ = writeln!(
        out,
        "  {:<18} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "op", "ops", "ops/s", "p50 ms", "p95 ms", "p99 ms", "p99.9 ms", "max ms", "errors"
    );
    let all = (p.latency.len() > 1).then_some(&p.all);
    for o in p.latency.iter().chain(all) {
        let _ = writeln!(
            out,
            "  {:<18} {:>10} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>8}",
            o.op,
            o.ops,
            o.throughput_ops_s,
            o.p50_us / 1e3,
            o.p95_us / 1e3,
            o.p99_us / 1e3,
            o.p999_us / 1e3,
            o.max_us / 1e3,
            o.errors
        );
    }
    let list = |m: &BTreeMap<String, u64>| m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ");
    let errors = if p.errors.is_empty() { "none".to_string() } else { list(&p.errors) };
    let _ = writeln!(out, "  errors: {errors}; lost: {}; misses: {}", p.ops_lost, p.misses);
    let _ = writeln!(out, "  commands sent: {}", list(&p.commands));
}

/// The error kind of an error reply: its first word (`ERR`, `WRONGTYPE`, ...).
pub fn error_kind(message: &[u8]) -> String {
    let word = message.split(|&b| b == b' ').next().unwrap_or_default();
    let word = if word.is_empty() { b"ERR".as_slice() } else { word };
    String::from_utf8_lossy(word).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            endpoints: vec!["127.0.0.1:6380".into()],
            connections: 2,
            pipeline: 1,
            records: 10,
            value_bytes: 3,
            ops_per_phase: Some(1000),
            duration_s: None,
            rate_ops_s: None,
            wait: None,
            seed: 1,
            timeout_ms: 5000,
            load: true,
        }
    }

    /// 1000 reads of 1..=1000 µs, split over two recorders and merged.
    fn known_phase() -> PhaseReport {
        let (mut a, mut b) = (Recorder::default(), Recorder::default());
        for us in 1..=1000u64 {
            let r = if us % 2 == 0 { &mut a } else { &mut b };
            r.sent(Cmd::Get);
            r.answered(OpKind::Read, us * 1000, None);
        }
        a.answered(OpKind::Update, 2_000_000, Some("ERR"));
        a.sent(Cmd::Set);
        b.lost(OpKind::Update, "io");
        b.miss();
        a.merge(b);
        a.into_report("workload a".into(), "zipfian", Duration::from_secs(2))
    }

    #[test]
    fn known_latencies_give_known_percentiles() {
        let phase = known_phase();
        let read = phase.latency.iter().find(|o| o.op == "read").unwrap();
        assert_eq!(read.ops, 1000);
        let table = [
            (read.p50_us, 500.0),
            (read.p95_us, 950.0),
            (read.p99_us, 990.0),
            (read.p999_us, 999.0),
            (read.max_us, 1000.0),
            (read.mean_us, 500.5),
        ];
        for (got, want) in table {
            assert!((got - want).abs() <= want * 0.001 + 0.001, "{got} vs {want}");
        }
        assert_eq!(read.throughput_ops_s, 500.0);
        // 1000 reads of 1..=1000 µs and one update of 2 ms.
        assert_eq!((phase.all.ops, phase.all.errors), (1001, 2));
        assert!((phase.all.max_us - 2000.0).abs() <= 2.0, "{}", phase.all.max_us);
        assert!((phase.all.p50_us - 501.0).abs() <= 1.0, "{}", phase.all.p50_us);
    }

    #[test]
    fn errors_and_losses_are_counted_by_kind() {
        let phase = known_phase();
        let update = phase.latency.iter().find(|o| o.op == "update").unwrap();
        assert_eq!((update.ops, update.errors, update.lost), (1, 2, 1));
        assert_eq!(phase.errors, BTreeMap::from([("ERR".to_string(), 1), ("io".to_string(), 1)]));
        assert_eq!((phase.ops, phase.ops_lost, phase.errors_total, phase.misses), (1001, 1, 2, 1));
        assert_eq!(phase.commands, BTreeMap::from([("get".to_string(), 1000), ("set".to_string(), 1)]));
    }

    #[test]
    fn json_has_the_fields_scripts_read() {
        let report = Report::new(settings(), vec![known_phase()]);
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["commands"]["get"], 1000);
        assert_eq!(json["errors_total"], 2);
        assert_eq!(json["settings"]["connections"], 2);
        let phase = &json["phases"][0];
        for field in
            ["name", "distribution", "elapsed_s", "ops", "ops_lost", "throughput_ops_s", "errors", "misses", "all"]
        {
            assert!(!phase[field].is_null(), "phase field {field} missing: {phase}");
        }
        let op = &phase["latency"][0];
        for field in ["op", "ops", "errors", "lost", "p50_us", "p95_us", "p99_us", "p999_us", "max_us", "mean_us"] {
            assert!(op[field].is_number() || op[field].is_string(), "op field {field} missing: {op}");
        }
    }

    #[test]
    fn text_lists_every_operation_and_error() {
        let text = Report::new(settings(), vec![known_phase()]).text();
        for needle in
            ["workload a (zipfian): 1001 ops", "read", "update", "errors: ERR 1, io 1", "commands sent: get 1000"]
        {
            assert!(text.contains(needle), "{needle:?} missing in\n{text}");
        }
    }

    #[test]
    fn error_kinds_are_first_words() {
        let table: &[(&[u8], &str)] = &[
            (b"ERR unknown command", "ERR"),
            (b"WRONGTYPE Operation", "WRONGTYPE"),
            (b"READONLY", "READONLY"),
            (b"", "ERR"),
        ];
        for (message, kind) in table {
            assert_eq!(error_kind(message), *kind);
        }
    }
}
