//! The node's clock: the `now` every replica step runs at, in milliseconds since the Unix
//! epoch.
//!
//! It is the wall clock read once, at the first call, advanced from then on by the kernel's
//! `CLOCK_BOOTTIME`, which never goes back and, unlike `CLOCK_MONOTONIC` (Rust's `Instant`),
//! keeps counting while the machine or VM is suspended. A wall clock that NTP or an operator
//! steps would move every timer the replica keeps: heartbeats stop while it is stepped back,
//! an election timeout or a lease (`read_lease`) stretches or shrinks by the step. This clock
//! only drifts at the rate of the machine's oscillator, which is what the lease's
//! drift allowance is about.
//!
//! CAVEATS
//! - Its reading parts from the wall clock by every step the wall clock takes after the node
//!   started, until the node restarts: TTLs and the times the node logs and shows follow it,
//!   not the stepped wall clock.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// (wall-clock ms, boot-time ms) at the first reading.
static ANCHOR: OnceLock<(u64, u64)> = OnceLock::new();

/// Milliseconds since the Unix epoch, by the node's clock.
pub fn now_ms() -> u64 {
    let &(wall, boot) = ANCHOR.get_or_init(|| (wall_ms(), boot_ms()));
    wall + boot_ms().saturating_sub(boot)
}

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// `CLOCK_BOOTTIME` in milliseconds.
fn boot_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes to it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_BOOTTIME) failed: {}", std::io::Error::last_os_error());
    ts.tv_sec as u64 * 1_000 + ts.tv_nsec as u64 / 1_000_000
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_clock_starts_at_the_wall_clock_and_never_goes_back() {
        let wall = super::wall_ms();
        let mut last = super::now_ms();
        assert!(last.abs_diff(wall) < 5_000, "{last} against the wall clock's {wall}");
        for _ in 0..1_000 {
            let now = super::now_ms();
            assert!(now >= last, "{now} after {last}");
            last = now;
        }
    }
}
