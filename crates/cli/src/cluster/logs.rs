//! The merged log stream of a cluster in the foreground: every node's standard error, line by
//! line, prefixed with its id (`n1 | ...`) on the launcher's standard output, and copied whole
//! to the node's log file.
//!
//! One thread per node reads its pipe. Lines that arrive before the launcher has printed how to
//! connect are held back by a [`Gate`] and printed, in arrival order, when it opens, so the
//! connect commands come first and no line is lost; at most [`HELD_LINES_MAX`] are held, and
//! the count of any dropped is printed in their place. All threads print under one lock, so
//! lines from different nodes never interleave within a line.
//!
//! CAVEATS
//! - A line longer than [`LINE_BYTES_MAX`] is cut into pieces, each printed with the prefix.
//! - If standard output is closed (`| head`), printing stops silently; the log files still
//!   get everything.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Lines held back before the gate opens, at most; older ones are dropped first.
pub const HELD_LINES_MAX: usize = 10_000;
/// Bytes of one line read at once, at most.
pub const LINE_BYTES_MAX: u64 = 64 * 1024;

/// Holds lines back until the launcher is ready to show them, then prints as they come.
#[derive(Default)]
pub struct Gate {
    /// What the printing threads share.
    state: Mutex<GateState>,
}

/// A gate's shared state.
#[derive(Default)]
struct GateState {
    /// Whether lines go straight to standard output.
    open: bool,
    /// Lines waiting for the gate to open.
    held: VecDeque<String>,
    /// Lines dropped from `held` because it was full.
    dropped: usize,
}

impl Gate {
    /// Prints the lines held so far and every later line as it comes.
    pub fn open(&self) {
        let mut state = self.state.lock().expect("log gate lock");
        let mut out = std::io::stdout().lock();
        if state.dropped > 0 {
            let _ = writeln!(out, "... {} earlier log lines dropped (see the log files)", state.dropped);
        }
        for line in state.held.drain(..) {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
        state.open = true;
    }

    /// Prints `line` now if the gate is open, else holds it.
    pub fn emit(&self, line: String) {
        let mut state = self.state.lock().expect("log gate lock");
        if state.open {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
            return;
        }
        if state.held.len() == HELD_LINES_MAX {
            state.held.pop_front();
            state.dropped += 1;
        }
        state.held.push_back(line);
    }
}

/// Reads `from` line by line until it closes, appending each line to `log` and emitting it
/// through `gate` with `prefix`.
pub fn follow(gate: Arc<Gate>, prefix: String, from: impl Read + Send + 'static, mut log: File) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(from);
        let mut line = Vec::new();
        loop {
            line.clear();
            match (&mut reader).take(LINE_BYTES_MAX).read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let _ = log.write_all(&line);
            let text = String::from_utf8_lossy(&line);
            gate.emit(format!("{prefix} | {}", text.trim_end_matches(['\n', '\r'])));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_lines_are_bounded_and_counted() {
        let gate = Gate::default();
        for i in 0..HELD_LINES_MAX + 3 {
            gate.emit(format!("line {i}"));
        }
        let state = gate.state.lock().unwrap();
        assert_eq!((state.held.len(), state.dropped), (HELD_LINES_MAX, 3));
        assert_eq!(state.held.front().map(String::as_str), Some("line 3"));
    }

    #[test]
    fn follow_copies_every_line_to_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n1.log");
        let log = File::create(&path).unwrap();
        let gate = Arc::new(Gate::default());
        let input: &'static [u8] = b"first\nsecond\nno newline";
        follow(gate.clone(), "n1".into(), input, log).join().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first\nsecond\nno newline");
        let held: Vec<String> = gate.state.lock().unwrap().held.iter().cloned().collect();
        assert_eq!(held, ["n1 | first", "n1 | second", "n1 | no newline"]);
    }
}
