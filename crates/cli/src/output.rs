//! Standard output that ends quietly when its reader goes away (`replikv status | head`).
//!
//! `println!` panics when a write fails ("failed printing to stdout: Broken pipe"): the Rust
//! runtime ignores SIGPIPE, so a reader that closed the pipe shows up as an `EPIPE` error on
//! the next write. Every command prints through this module instead (`clippy.toml` forbids
//! `print!` and `println!` in this crate), in one of two ways, chosen by what the command is
//! for:
//!
//! - [`outln!`] and [`out!`], for a command whose output is its work (`status`, `check`, `sim`,
//!   `bench`, a dry run): on a closed pipe the rest of the output is dropped, quietly, and the
//!   command ends with its own status: `replikv check | head -1` still exits 1 when replicas
//!   differ, and a sweep whose reader left still exits 1 if a seed failed.
//! - [`progressln!`], for a command whose work is a change it must finish (`cluster start` and
//!   `stop`, `fault partition`, a failover): on a closed pipe the line is dropped and the
//!   command carries on to its own exit status, since stopping half-way would leave nodes
//!   half-stopped or a partition half-made. The merged log stream of `cluster start` (see
//!   `cluster::logs`) does the same.
//!
//! Why not restore SIGPIPE's default action at the start of `main` (`libc::signal(SIGPIPE,
//! SIG_DFL)`), as C programs have it? The same `main` runs nodes and a foreground cluster's
//! supervisor. SIGPIPE would kill the supervisor when its standard output closes, without
//! stopping the nodes it started; and it would kill a node on a write to a client that went
//! away through a call that cannot pass `MSG_NOSIGNAL` (`writev` on a socket). Restoring it
//! for the reporting commands only would work, but would end them with status 141, which fails
//! a `set -o pipefail` script, and nothing would keep the next `println!` out of the others;
//! here the lint does.
//!
//! Any other write error (a full disk under `> file`) ends the process with a message on
//! standard error, where `println!` would have panicked, and the status a command's failure
//! has: 1, or what [`fail_with`] set (`replikv check` sets 2, "could not check", since its
//! 1 means "a replica differs").
//!
//! CAVEATS
//! - A command whose reader left runs to its end (a long `sim` sweep or `bench` included).
//! - Standard error is written with `eprintln!`, which still panics if standard error is a
//!   closed pipe; logs (`tracing`) ignore such errors.

use std::fmt::Arguments;
use std::io::{ErrorKind, Write};

/// What a write to standard output does when the reader has closed the pipe.
#[derive(Clone, Copy, Debug)]
pub enum OnClosed {
    /// Drop this and every later output, quietly; the command ends with its own status.
    Exit,
    /// Drop the text and carry on.
    Drop,
}

/// The exit status of a write error other than a closed pipe (see [`fail_with`]).
static FAILURE_STATUS: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);

/// Makes a write error other than a closed pipe end the process with `status` (1 until set).
pub fn fail_with(status: u8) {
    FAILURE_STATUS.store(status, std::sync::atomic::Ordering::Relaxed);
}

/// Set once the reader of standard output has gone: later output is dropped unwritten.
static CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Prints to standard output as `print!` does; on a closed pipe, the output is dropped (see
/// the module documentation).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write(format_args!($($arg)*), $crate::output::OnClosed::Exit)
    };
}

/// Prints a line to standard output as `println!` does; on a closed pipe, the output is
/// dropped (see the module documentation).
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write(format_args!("{}\n", format_args!($($arg)*)), $crate::output::OnClosed::Exit)
    };
}

/// Prints a line of progress to standard output; on a closed pipe, the line is dropped and
/// the command carries on (see the module documentation).
macro_rules! progressln {
    ($($arg:tt)*) => {
        $crate::output::write(format_args!("{}\n", format_args!($($arg)*)), $crate::output::OnClosed::Drop)
    };
}

pub(crate) use {out, outln, progressln};

/// Writes `text` to the locked standard output; a closed pipe does what `closed` says, and
/// any other error ends the process with the status [`fail_with`] set.
pub fn write(text: Arguments<'_>, closed: OnClosed) {
    if CLOSED.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    match (stdout.write_fmt(text), closed) {
        (Ok(()), _) => {}
        (Err(e), OnClosed::Exit) if e.kind() == ErrorKind::BrokenPipe => {
            CLOSED.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        (Err(e), OnClosed::Drop) if e.kind() == ErrorKind::BrokenPipe => {}
        (Err(e), _) => {
            eprintln!("replikv: writing to standard output: {e}");
            std::process::exit(FAILURE_STATUS.load(std::sync::atomic::Ordering::Relaxed).into());
        }
    }
}
