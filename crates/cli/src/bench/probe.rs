//! `replikv bench probe`: the physical limits a benchmark figure should be read against.
//!
//! - **fsync**: a durable write cannot be acknowledged sooner than the disk makes it durable. The
//!   probe appends [`FSYNC_BLOCK_BYTES`] to a new file in the given directory and calls
//!   `fdatasync`, again and again, as a log does with one write per batch; it reports the latency
//!   of each append-and-sync and how many it managed per second. With group commit, durable
//!   throughput is roughly that rate times the writes one fsync covers.
//! - **loopback round trip**: no request over TCP on 127.0.0.1 is answered sooner than a round
//!   trip. A thread echoes [`RTT_MESSAGE_BYTES`] back on a socket bound to `127.0.0.1:0`; the
//!   probe times each send-and-receive.
//!
//! Each probe stops at its operation count or its time, whichever comes first, and the file is
//! removed afterwards.
//!
//! CAVEATS
//! - The probe measures the directory's disk as it is now, with whatever else is using it; run it
//!   next to the benchmark it explains.
//! - The fsync file grows to at most [`FSYNC_OPS_MAX`] blocks; preallocated or overwritten blocks
//!   (which skip the metadata update an append needs) would sync faster.

use super::report::{LATENCY_NS_MAX, LATENCY_SIGNIFICANT_DIGITS};
use crate::output::outln;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bytes appended before each fsync: one page.
pub const FSYNC_BLOCK_BYTES: usize = 4096;
/// The most append-and-syncs one probe makes (64 MiB of file).
pub const FSYNC_OPS_MAX: u64 = 16_384;
/// Bytes sent and echoed per round trip.
pub const RTT_MESSAGE_BYTES: usize = 16;
/// The most round trips one probe makes.
pub const RTT_OPS_MAX: u64 = 100_000;
/// How long a socket read may block before the probe gives up, in milliseconds.
const RTT_READ_TIMEOUT_MS: u64 = 5000;

/// Flags of `replikv bench probe`.
#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    /// Print help.
    // `replikv bench` gives up -h to the host and clap passes that on; this command has no host.
    #[arg(short = 'h', long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Directory whose disk to probe (the data directory); a temporary file is written there.
    #[arg(long)]
    pub dir: PathBuf,
    /// Seconds each probe may run.
    #[arg(long = "seconds", default_value_t = 2.0)]
    pub seconds: f64,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One probe's figures.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeReport {
    /// What was measured.
    pub name: String,
    /// Operations made.
    pub ops: u64,
    /// Operations per second.
    pub ops_s: f64,
    /// Median latency in microseconds.
    pub p50_us: f64,
    /// 99th percentile latency in microseconds.
    pub p99_us: f64,
    /// Largest latency in microseconds.
    pub max_us: f64,
}

/// Runs both probes and prints their figures.
pub fn main(args: ProbeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.seconds > 0.0 && args.seconds <= 600.0, "--seconds must be in (0, 600]");
    let budget = Duration::from_secs_f64(args.seconds);
    let reports = [fsync(&args.dir, budget)?, loopback(budget)?];
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            outln!(
                "{:<44} {:>7} ops {:>9.0} ops/s   p50 {:>9.1} µs   p99 {:>9.1} µs   max {:>9.1} µs",
                r.name,
                r.ops,
                r.ops_s,
                r.p50_us,
                r.p99_us,
                r.max_us
            );
        }
    }
    Ok(())
}

/// Appends and fdatasyncs in `dir` until `budget` or [`FSYNC_OPS_MAX`].
pub fn fsync(dir: &Path, budget: Duration) -> anyhow::Result<ProbeReport> {
    let path = dir.join(format!(".replikv-probe-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new().create_new(true).write(true).open(&path)?;
    let block = vec![0x5au8; FSYNC_BLOCK_BYTES];
    let result = timed(FSYNC_OPS_MAX, budget, || {
        file.write_all(&block)?;
        file.sync_data()
    });
    std::fs::remove_file(&path)?;
    let name = format!("fsync: {FSYNC_BLOCK_BYTES} B append + fdatasync in {}", dir.display());
    Ok(summary(name, result?))
}

/// Round trips to an echo thread on 127.0.0.1 until `budget` or [`RTT_OPS_MAX`].
pub fn loopback(budget: Duration) -> anyhow::Result<ProbeReport> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_millis(RTT_READ_TIMEOUT_MS)))?;
        let mut buf = [0u8; RTT_MESSAGE_BYTES];
        // Ends when the prober closes its socket (read_exact then fails) or stops writing.
        while stream.read_exact(&mut buf).is_ok() {
            stream.write_all(&buf)?;
        }
        Ok(())
    });
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_millis(RTT_READ_TIMEOUT_MS)))?;
    let result = timed(RTT_OPS_MAX, budget, || {
        let mut buf = [7u8; RTT_MESSAGE_BYTES];
        stream.write_all(&buf)?;
        stream.read_exact(&mut buf)
    });
    drop(stream);
    echo.join().map_err(|_| anyhow::anyhow!("the echo thread panicked"))??;
    Ok(summary(format!("loopback TCP round trip, {RTT_MESSAGE_BYTES} B"), result?))
}

/// Runs `op` until `ops_max` runs or `budget` passes; the latencies and the time taken.
fn timed(
    ops_max: u64,
    budget: Duration,
    mut op: impl FnMut() -> std::io::Result<()>,
) -> std::io::Result<(Histogram<u64>, Duration)> {
    let mut h = Histogram::new_with_bounds(1, LATENCY_NS_MAX, LATENCY_SIGNIFICANT_DIGITS).expect("valid bounds");
    let start = Instant::now();
    while h.len() < ops_max && start.elapsed() < budget {
        let t = Instant::now();
        op()?;
        h.saturating_record(t.elapsed().as_nanos() as u64);
    }
    Ok((h, start.elapsed()))
}

/// The report of a probe.
fn summary(name: String, (h, elapsed): (Histogram<u64>, Duration)) -> ProbeReport {
    ProbeReport {
        name,
        ops: h.len(),
        ops_s: h.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        p50_us: h.value_at_quantile(0.5) as f64 / 1e3,
        p99_us: h.value_at_quantile(0.99) as f64 / 1e3,
        max_us: h.max() as f64 / 1e3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_bounded_and_clean_up() {
        let dir = tempfile::tempdir().unwrap();
        let r = fsync(dir.path(), Duration::from_millis(50)).unwrap();
        assert!(r.ops >= 1 && r.ops <= FSYNC_OPS_MAX, "{r:?}");
        assert!(r.p50_us > 0.0 && r.p50_us <= r.p99_us && r.p99_us <= r.max_us, "{r:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the probe file is removed");
        let r = loopback(Duration::from_millis(50)).unwrap();
        assert!(r.ops >= 1 && r.ops <= RTT_OPS_MAX, "{r:?}");
    }

    #[test]
    fn timed_stops_at_the_count() {
        let mut calls = 0;
        let (h, _) = timed(5, Duration::from_secs(60), || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!((h.len(), calls), (5, 5));
    }
}
