//! The fixed offered load of `--rate`: when each operation should start, and what its latency is.
//!
//! A closed-loop benchmark (send, wait for the reply, send the next) slows down with the server:
//! while one request is stuck, the requests that should have been sent meanwhile are not, and their
//! waiting is never measured ("coordinated omission", Gil Tene). With `--rate R` each of the `c`
//! connections instead follows a schedule of intended start times, one every `c / R` seconds,
//! connection `i` offset by `i / R` so that together they are evenly spaced `1 / R` apart. An
//! operation is sent once its intended time has come, and its latency is counted from that
//! intended time, not from when it was sent: an operation that had to wait behind a slow one is
//! charged for the wait.
//!
//! A connection that has fallen behind sends every operation already due at once, up to the
//! pipeline depth, so `-P` is the most a late connection may batch to catch up.
//!
//! tokio's timer ticks in milliseconds and wakes late, never early. Waiting for the exact intended
//! time would charge operations for a millisecond or more of the client's own oversleeping, so an operation may be sent up to [`EARLY_NS_MAX`] before its intended time;
//! one sent early is timed from when it was sent (never from before it left), one sent late from
//! its intended time. The rate over the phase is unchanged.
//!
//! Times here are nanoseconds from the phase's start; the caller reads the clock.
//!
//! CAVEATS
//! - Within a couple of milliseconds the offered load is not smooth: operations leave up to
//!   [`EARLY_NS_MAX`] early, and a connection whose interval is shorter sends small batches.
//! - The offered load is at most what `c` connections with pipeline `P` can carry; when the server
//!   is slower, latencies grow without bound instead of the rate dropping, which is the point.

/// How long before its intended start an operation may be sent, in nanoseconds: tokio's timer
/// ticks in milliseconds and may wake up to a tick late, so two ticks.
pub const EARLY_NS_MAX: u64 = 2_000_000;

/// The intended start times of one connection's operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Nanoseconds between two of this connection's operations.
    interval_ns: u64,
    /// Nanoseconds from the phase's start to this connection's first operation.
    offset_ns: u64,
}

impl Schedule {
    /// The schedule of connection `index` of `connections` sharing `rate` operations per second.
    pub fn new(rate: f64, connections: usize, index: usize) -> Schedule {
        assert!(rate > 0.0 && connections > 0 && index < connections, "rate {rate}, {index} of {connections}");
        let gap_ns = 1e9 / rate;
        Schedule { interval_ns: (gap_ns * connections as f64) as u64, offset_ns: (gap_ns * index as f64) as u64 }
    }

    /// When this connection's operation number `k` (from 0) should start.
    pub fn intended_ns(&self, k: u64) -> u64 {
        self.offset_ns + k * self.interval_ns
    }

    /// How many operations from number `next` on are due at `now_ns` (intended no later than
    /// [`EARLY_NS_MAX`] from now), at most `max`.
    pub fn due(&self, next: u64, now_ns: u64, max: usize) -> usize {
        let horizon_ns = now_ns + EARLY_NS_MAX;
        if horizon_ns < self.intended_ns(next) {
            return 0;
        }
        let due = (horizon_ns - self.intended_ns(next)) / self.interval_ns.max(1) + 1;
        due.min(max as u64) as usize
    }

    /// When to wake to send operation `k`: as early as it may be sent.
    pub fn wake_ns(&self, k: u64) -> u64 {
        self.intended_ns(k).saturating_sub(EARLY_NS_MAX)
    }
}

/// When operation `k`, sent at `sent_ns`, is timed from: under a schedule its intended start,
/// however late it was sent (but not before it was sent); without one, when it was sent.
pub fn start_ns(schedule: Option<&Schedule>, k: u64, sent_ns: u64) -> u64 {
    schedule.map_or(sent_ns, |s| s.intended_ns(k).min(sent_ns))
}

/// The latency of an operation timed from `start_ns` and answered at `completed_ns`.
pub fn latency_ns(start_ns: u64, completed_ns: u64) -> u64 {
    completed_ns.saturating_sub(start_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_together_start_evenly_spaced() {
        // 1000 ops/s over 4 connections: one start every millisecond overall.
        let schedules: Vec<Schedule> = (0..4).map(|i| Schedule::new(1000.0, 4, i)).collect();
        let mut starts: Vec<u64> = schedules.iter().flat_map(|s| (0..25).map(|k| s.intended_ns(k))).collect();
        starts.sort_unstable();
        for (i, w) in starts.windows(2).enumerate() {
            assert_eq!(w[1] - w[0], 1_000_000, "gap after start {i}");
        }
        assert_eq!(starts[0], 0);
        assert_eq!(schedules[1].intended_ns(1) - schedules[1].intended_ns(0), 4_000_000);
    }

    #[test]
    fn due_counts_what_is_late_up_to_the_pipeline() {
        let s = Schedule::new(100.0, 1, 0); // every 10 ms from 0
        let table = [
            // (next, now, max, due)
            (0, 0, 8, 1),
            (1, 7_999_999, 8, 0),
            (1, 8_000_000, 8, 1), // two milliseconds early at most
            (1, 10_000_000, 8, 1),
            (1, 35_000_000, 8, 3), // ops 1, 2, 3 are due
            (1, 35_000_000, 2, 2),
            (5, 1_000_000_000, 4, 4),
        ];
        for (next, now, max, want) in table {
            assert_eq!(s.due(next, now, max), want, "next {next}, now {now}, max {max}");
        }
    }

    #[test]
    fn a_late_completion_is_charged_from_the_intended_time() {
        let s = Schedule::new(1000.0, 1, 0);
        // Op 5 was due at 5 ms; a slow op before it held the connection until 12 ms, when op 5
        // was sent, and its reply came at 13 ms: 8 ms of latency, not the 1 ms the server took.
        let (sent, completed) = (12_000_000, 13_000_000);
        assert_eq!(latency_ns(start_ns(Some(&s), 5, sent), completed), 8_000_000);
        assert_eq!(latency_ns(start_ns(None, 5, sent), completed), 1_000_000, "closed loop: from the send");
        assert_eq!(latency_ns(start_ns(Some(&s), 5, 5_000_000), 5_250_000), 250_000, "on time");
        assert_eq!(latency_ns(start_ns(Some(&s), 5, 4_500_000), 4_750_000), 250_000, "early: from the send");
        assert_eq!(latency_ns(6_000_000, 5_000_000), 0, "never negative");
    }
}
