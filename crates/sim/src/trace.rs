//! A run's trace: every delivery, crash, restart, partition and reply as a line stamped with
//! virtual time, hashed as it is written (two runs of one seed compare by hash), with the
//! last [`TRACE_TAIL_LINES`] kept for a failure report.

use std::collections::VecDeque;

/// Lines of trace kept for a failure report.
pub const TRACE_TAIL_LINES: usize = 60;

/// The trace of one run.
pub(crate) struct Trace {
    /// The hash of every line so far.
    hash: xxhash_rust::xxh3::Xxh3,
    /// The last lines.
    tail: VecDeque<String>,
    /// Every line also goes to stderr (`REPLIKV_SIM_TRACE=1`, for debugging a seed).
    print: bool,
}

impl Trace {
    /// An empty trace; printed too when `REPLIKV_SIM_TRACE` is set.
    pub(crate) fn new() -> Trace {
        Trace {
            hash: xxhash_rust::xxh3::Xxh3::new(),
            tail: VecDeque::new(),
            print: std::env::var_os("REPLIKV_SIM_TRACE").is_some(),
        }
    }

    /// Writes `line`, stamped with virtual time `now`.
    pub(crate) fn line(&mut self, now: u64, line: String) {
        let line = format!("t={now} {line}");
        if self.print {
            eprintln!("{line}");
        }
        self.hash.update(line.as_bytes());
        self.hash.update(b"\n");
        if self.tail.len() == TRACE_TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    /// The hash of the whole trace so far.
    pub(crate) fn hash(&self) -> u64 {
        self.hash.digest()
    }

    /// The last lines.
    pub(crate) fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }
}
