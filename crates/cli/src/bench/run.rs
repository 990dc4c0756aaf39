//! A benchmark run: phases one after the other, each with `-c` connection tasks.
//!
//! A phase opens its connections first (a failure to connect stops the run with an error after
//! reporting the phases before: there is nothing more to measure), then starts its clock and spawns one task per connection. Each task
//! owns its connection, its seeded generator (the run's seed plus the phase's number, one ChaCha
//! stream per connection) and its [`Recorder`], so the hot path shares nothing but two counters:
//! the insert horizon ([`super::horizon`], advanced by workload D's inserts and kept across
//! phases) and the operations started, which the progress bar reads. The phase ends when
//! every task has ended; its time is from the clock's start to the last task's end, and the
//! recorders are merged into its report.
//!
//! What bounds each loop:
//!
//! - **load phase**: every record once, connection `i` storing records `i`, `i + c`, `i + 2c`, ...;
//!   neither `--duration` nor `--rate` applies.
//! - **other phases**: connection `i` runs its share of `-n` (`n / c`, the first `n mod c`
//!   connections one more), and stops early at `--duration`. With `--rate`, each operation waits
//!   for its intended start ([`super::schedule`]) and its latency counts from that time.
//! - always: a connection whose socket fails or whose reply does not come within the request
//!   timeout stops (its unanswered operations are lost); the others go on.
//!
//! The operations a phase sends are therefore exactly `n` (or the records, for the load phase)
//! unless a duration cut it short or connections failed; the report's command counts say what was
//! actually written.
//!
//! CAVEATS
//! - Connections are opened anew for each phase; their opening is not timed.
//! - Under `--duration` each connection checks the time between batches, so a phase can overrun
//!   by one batch's latency.

use super::args::{BenchArgs, BenchCommand, PhaseSpec, Plan};
use super::conn::{Conn, Encoding, Op};
use super::dist::KeyChooser;
use super::horizon::Horizon;
use super::report::{PhaseReport, Recorder, Report};
use super::schedule::{start_ns, Schedule};
use super::workload::OpKind;
use crate::output::{out, outln};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::distributions::Alphanumeric;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the progress bar is redrawn, in milliseconds.
const PROGRESS_INTERVAL_MS: u64 = 100;

/// Runs `replikv bench` with `args`.
pub fn main(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(BenchCommand::Probe(probe)) = args.command {
        return super::probe::main(probe);
    }
    if let Some(file) = &args.history {
        let endpoints = match args.endpoints.is_empty() {
            true => vec![format!("{}:{}", args.host, args.port)],
            false => args.endpoints.clone(),
        };
        return crate::history::record(&crate::history::Plan {
            endpoints,
            spread_writes: args.spread_writes,
            clients: args.history_clients,
            ops: args.ops.unwrap_or(2_000),
            keys: args.history_keys.max(1),
            guarantee: args.guarantee.to_ascii_lowercase(),
            file: file.clone(),
            seed: args.seed,
        });
    }
    let plan = Plan::from_args(&args).map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (report, result) = runtime.block_on(run(&plan));
    if !report.phases.is_empty() {
        if plan.json {
            outln!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            out!("{}", report.text());
        }
    }
    result
}

/// Runs every phase of `plan`; the report of the phases that ran, and why the others did not.
pub async fn run(plan: &Plan) -> (Report, anyhow::Result<()>) {
    let horizon = Arc::new(Horizon::new(plan.records));
    let mut phases = Vec::with_capacity(plan.phases.len());
    let mut result = Ok(());
    for (number, spec) in plan.phases.iter().enumerate() {
        match run_phase(plan, spec, number as u64, &horizon).await {
            Ok(phase) => phases.push(phase),
            Err(e) => {
                result = Err(e.context(format!("phase {}", spec.name())));
                break;
            }
        }
    }
    (Report::new(plan.settings(), phases), result)
}

/// What the tasks of one phase share.
struct Phase {
    /// The phase.
    spec: PhaseSpec,
    /// Record chooser.
    chooser: KeyChooser,
    /// Where inserts go and reads may look.
    horizon: Arc<Horizon>,
    /// Command encoding.
    encoding: Encoding,
    /// Connections.
    connections: usize,
    /// Pipeline depth.
    pipeline: usize,
    /// Operations in this phase.
    ops: u64,
    /// When to stop, from the phase's start.
    duration: Option<Duration>,
    /// Offered load.
    rate_ops_s: Option<f64>,
    /// Seed of this phase's generators.
    seed: u64,
    /// Operations started, for the progress bar.
    started: AtomicU64,
}

impl Phase {
    /// Operations connection `index` runs.
    fn share(&self, index: usize) -> u64 {
        if self.ops == u64::MAX {
            return u64::MAX;
        }
        share(self.ops, self.connections, index)
    }

    /// Operation number `k` of connection `index`.
    fn op(&self, rng: &mut ChaCha8Rng, index: usize, k: u64) -> Op {
        let Some(mix) = self.spec.mix else {
            return Op { kind: OpKind::Load, record: load_record(self.connections, index, k) };
        };
        let kind = mix.choose(rng.gen());
        let record = match kind {
            OpKind::Insert => self.horizon.claim(),
            _ => self.chooser.next(rng, self.horizon.readable()),
        };
        Op { kind, record }
    }
}

/// Runs one phase.
async fn run_phase(plan: &Plan, spec: &PhaseSpec, number: u64, horizon: &Arc<Horizon>) -> anyhow::Result<PhaseReport> {
    let seed = plan.seed.wrapping_add(number);
    let value: Vec<u8> = ChaCha8Rng::seed_from_u64(seed).sample_iter(Alphanumeric).take(plan.value_bytes).collect();
    let timeout = Duration::from_millis(plan.timeout_ms);
    let load = spec.mix.is_none();
    let phase = Arc::new(Phase {
        spec: *spec,
        chooser: KeyChooser::new(spec.distribution, plan.records),
        horizon: horizon.clone(),
        encoding: Encoding::new(value, plan.wait, plan.records, timeout),
        connections: plan.connections,
        pipeline: plan.pipeline,
        ops: if load { plan.records } else { plan.ops },
        duration: plan.duration_s.filter(|_| !load).map(Duration::from_secs_f64),
        rate_ops_s: plan.rate_ops_s.filter(|_| !load),
        seed,
        started: AtomicU64::new(0),
    });
    let mut conns = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        conns.push(Conn::connect(&plan.endpoints, timeout, plan.spread_writes).await?);
    }
    let progress = Progress::start(&phase, plan.json);
    let epoch = Instant::now();
    let tasks: Vec<_> =
        conns.into_iter().enumerate().map(|(i, conn)| tokio::spawn(drive(conn, phase.clone(), i, epoch))).collect();
    let mut rec = Recorder::default();
    for task in tasks {
        rec.merge(task.await?);
    }
    let elapsed = epoch.elapsed();
    progress.finish();
    Ok(rec.into_report(spec.name(), spec.distribution.name(), elapsed))
}

/// One connection's loop.
async fn drive(mut conn: Conn, phase: Arc<Phase>, index: usize, epoch: Instant) -> Recorder {
    let mut rec = Recorder::default();
    let mut rng = ChaCha8Rng::seed_from_u64(phase.seed);
    rng.set_stream(index as u64);
    let schedule = phase.rate_ops_s.map(|rate| Schedule::new(rate, phase.connections, index));
    let share = phase.share(index);
    let (mut ops, mut starts) = (Vec::with_capacity(phase.pipeline), Vec::with_capacity(phase.pipeline));
    let mut done = 0;
    while done < share {
        let now_ns = epoch.elapsed().as_nanos() as u64;
        if phase.duration.is_some_and(|d| now_ns >= d.as_nanos() as u64) {
            break;
        }
        let most = phase.pipeline.min(usize::try_from(share - done).unwrap_or(usize::MAX));
        let batch = match &schedule {
            None => most,
            Some(s) => s.due(done, now_ns, most),
        };
        if batch == 0 {
            let schedule = schedule.expect("only a schedule holds operations back");
            let wake = Duration::from_nanos(schedule.wake_ns(done));
            tokio::time::sleep_until((epoch + phase.duration.map_or(wake, |d| wake.min(d))).into()).await;
            continue;
        }
        ops.clear();
        starts.clear();
        for k in done..done + batch as u64 {
            ops.push(phase.op(&mut rng, index, k));
            starts.push(start_ns(schedule.as_ref(), k, now_ns));
        }
        done += batch as u64;
        phase.started.fetch_add(batch as u64, Ordering::Relaxed);
        let result = conn.execute(&ops, &starts, epoch, &phase.encoding, &mut rec).await;
        if let Err(failure) = result {
            tracing::warn!(connection = index, kind = failure.kind, "connection stopped: {}", failure.message);
            // Release the inserts this batch claimed, answered or not: a claimed record that is
            // never released would hold the horizon back, and every later insert in its set,
            // for the rest of the run. Reads of a lost one count as misses.
            for op in ops.iter().filter(|op| op.kind == OpKind::Insert) {
                phase.horizon.acknowledge(op.record);
            }
            break;
        }
        for op in ops.iter().filter(|op| op.kind == OpKind::Insert) {
            phase.horizon.acknowledge(op.record);
        }
    }
    rec
}

/// Operations connection `index` of `connections` runs out of `total`: in the load phase, records
/// `index`, `index + connections`, ...
fn share(total: u64, connections: usize, index: usize) -> u64 {
    let (c, i) = (connections as u64, index as u64);
    total / c + u64::from(i < total % c)
}

/// The record that operation `k` of connection `index` stores in the load phase.
fn load_record(connections: usize, index: usize, k: u64) -> u64 {
    index as u64 + k * connections as u64
}

/// The progress bar on standard error, redrawn by a task of its own.
struct Progress {
    /// The bar (hidden when standard error is not a terminal or the output is JSON).
    bar: ProgressBar,
    /// The task that redraws it.
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Starts the bar for `phase`.
    fn start(phase: &Arc<Phase>, json: bool) -> Progress {
        let target = if json || !std::io::stderr().is_terminal() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bounded = phase.ops != u64::MAX;
        let bar = ProgressBar::with_draw_target(bounded.then_some(phase.ops), target);
        let template = if bounded {
            "{prefix:>14} [{bar:30}] {pos}/{len} {msg} eta {eta}"
        } else {
            "{prefix:>14} {spinner} {pos} ops {msg} {elapsed}"
        };
        bar.set_style(ProgressStyle::with_template(template).expect("a valid template").progress_chars("=> "));
        bar.set_prefix(phase.spec.name());
        let (ticking, shared) = (bar.clone(), phase.clone());
        let ticker = tokio::spawn(async move {
            let start = Instant::now();
            let mut interval = tokio::time::interval(Duration::from_millis(PROGRESS_INTERVAL_MS));
            loop {
                interval.tick().await;
                let started = shared.started.load(Ordering::Relaxed);
                ticking.set_position(started);
                ticking.set_message(format!("{:.0} ops/s", started as f64 / start.elapsed().as_secs_f64().max(1e-3)));
            }
        });
        Progress { bar, ticker }
    }

    /// Stops redrawing and clears the bar.
    fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_total() {
        for (total, c) in [(2000, 4), (10, 3), (2, 5), (100_000, 50)] {
            let sum: u64 = (0..c).map(|i| share(total, c, i)).sum();
            assert_eq!(sum, total, "{total} over {c}");
        }
    }

    #[test]
    fn the_load_phase_stores_every_record_once() {
        let (records, c) = (103u64, 4usize);
        let mut stored: Vec<u64> =
            (0..c).flat_map(|i| (0..share(records, c, i)).map(move |k| load_record(c, i, k))).collect();
        stored.sort_unstable();
        assert_eq!(stored, (0..records).collect::<Vec<_>>());
    }
}
