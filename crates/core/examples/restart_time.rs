//! How long the log engine takes to open, with hint files and without.
//!
//! `cargo run --release -p replikv-core --example restart_time -- [keys]` writes that many
//! keys (default 1 000 000; 16-byte keys, 100-byte values) into a temporary directory, then
//! times `LogEngine::open` reading the hint files and again scanning every segment (the newest
//! segment is scanned either way), best of three each. All opens run with the files in the
//! page cache: they measure decoding and indexing, not the disk.

use bytes::Bytes;
use replikv_core::storage::{Engine, FsyncPolicy, LogEngine, LogOptions, Record};
use replikv_core::version::{NodeId, Timestamp, Version};
use std::time::{Duration, Instant};

/// Keys written when the command line names no count.
const KEYS_DEFAULT: u64 = 1_000_000;

/// Bytes in each value.
const VALUE_BYTES: usize = 100;

/// Opens timed per variant; the fastest is reported, the others being other work's noise.
const OPEN_RUNS: u32 = 3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keys = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => KEYS_DEFAULT,
    };
    let dir = tempfile::tempdir()?;
    let options = LogOptions { fsync: FsyncPolicy::Never, ..LogOptions::default() };
    let mut engine = LogEngine::open(dir.path(), options)?;
    let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
    for i in 0..keys {
        let version = Version { ts: Timestamp { millis: i + 1, logical: 0 }, node: NodeId(1) };
        let record = Record { version, value: Some(value.clone()), expire_at_ms: None };
        engine.put(Bytes::from(format!("key-{i:012}")), record)?;
    }
    engine.flush(0)?;
    // Hint files are written between batches, by maintain: let it finish them.
    engine.maintain(u64::MAX)?;
    let stats = engine.stats();
    drop(engine);
    println!("{keys} keys, {} segments, {} bytes", stats.segments, stats.bytes_written);

    for hint_files in [true, false] {
        let mut best = Duration::MAX;
        for _ in 0..OPEN_RUNS {
            let (elapsed, engine) = timed(|| LogEngine::open(dir.path(), LogOptions { hint_files, ..options }));
            assert_eq!(engine?.stats().keys, keys, "every key is back");
            best = best.min(elapsed);
        }
        let how = if hint_files { "with hint files" } else { "scanning segments" };
        println!("open {how}: {:.0} ms (best of {OPEN_RUNS})", best.as_secs_f64() * 1000.0);
    }
    Ok(())
}

/// Runs `f`, returning how long it took and what it returned.
#[allow(clippy::disallowed_methods)] // an example measures wall time; the engine itself never reads a clock
fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let result = f();
    (start.elapsed(), result)
}
