//! What every simulated node has, whatever family its replica runs: a clock off by its skew
//! and drift, whether it is running, paused or down, and the batches waiting for their fsync.
//!
//! The fault draws here (a node's clock at start, a crash or a pause each millisecond, how long
//! a crashed node stays down, when a batch's fsync completes) take the world's RNG, in the
//! order the world calls them, so a seed replays the same run.
//!
//! CAVEATS
//! - A paused node neither steps nor completes fsyncs; its clock goes on.
//! - A crash is decided by the world (what the disk and the log keep is the family's part).

use crate::faults::Faults;
use rand::Rng;
use replikv_core::node::Output;
use std::collections::VecDeque;

/// Virtual milliseconds a crashed node stays down: drawn from this range.
const DOWN_MS: std::ops::Range<u64> = 50..1_500;

/// Virtual milliseconds a pause lasts: drawn from this range.
const PAUSE_MS: std::ops::Range<u64> = 10..1_000;

/// Virtual milliseconds a batch's fsync takes: drawn from this range (at least 1, so a reply
/// never leaves in the millisecond its write was stepped).
const FSYNC_MS: std::ops::RangeInclusive<u64> = 1..=4;

/// Where a single-leader node's clock stands at virtual time 0, before its skew: far enough
/// above 0 that a clock behind by its skew still advances from the start (a clock held at 0
/// while the others run is a drift no lease allowance covers). Leaderless runs start at 0.
pub(crate) const CLOCK_BASE_MS: u64 = 1_000_000;

/// A node's clock: the virtual clock plus its skew and drift.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Clock {
    /// Milliseconds ahead (negative: behind).
    skew_ms: i64,
    /// Parts per million fast (negative: slow).
    drift_ppm: i64,
}

impl Clock {
    /// A clock off by a skew and a drift drawn within `faults`' bounds (skew first).
    pub(crate) fn draw(rng: &mut impl Rng, faults: &Faults) -> Clock {
        let (skew, drift) = (faults.skew_ms as i64, faults.drift_ppm as i64);
        Clock {
            skew_ms: if skew > 0 { rng.gen_range(-skew..=skew) } else { 0 },
            drift_ppm: if drift > 0 { rng.gen_range(-drift..=drift) } else { 0 },
        }
    }

    /// This clock's reading at virtual time `t`, starting from 0 (held there while its skew
    /// is behind).
    pub(crate) fn at(&self, t: u64) -> u64 {
        self.at_from(0, t)
    }

    /// This clock's reading at virtual time `t`, starting from `base_ms`.
    pub(crate) fn at_from(&self, base_ms: u64, t: u64) -> u64 {
        let drifted = (base_ms + t) as i64 + self.skew_ms + (t as i64) * self.drift_ppm / 1_000_000;
        drifted.max(0) as u64
    }
}

/// Whether a node runs: down (crashed) or paused until a virtual time, or neither.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Health {
    /// Crashed; restarts then.
    pub(crate) down_until: Option<u64>,
    /// Paused; resumes then.
    pub(crate) paused_until: Option<u64>,
}

/// A fault that strikes one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NodeFault {
    /// It crashes (the world decides what its disk keeps and draws [`down_until`]).
    Crash,
    /// It pauses until then.
    Pause {
        /// When it resumes.
        until: u64,
    },
}

impl Health {
    /// Neither down nor paused.
    pub(crate) fn is_running(&self) -> bool {
        self.down_until.is_none() && self.paused_until.is_none()
    }

    /// A crash or a pause starting at `now`, at the run's rates, for a running node.
    pub(crate) fn draw_fault(&mut self, rng: &mut impl Rng, faults: &Faults, now: u64) -> Option<NodeFault> {
        let running = self.is_running();
        if running && faults.crash > 0.0 && rng.gen_bool(faults.crash) {
            Some(NodeFault::Crash)
        } else if running && faults.pause > 0.0 && rng.gen_bool(faults.pause) {
            let until = now + rng.gen_range(PAUSE_MS);
            self.paused_until = Some(until);
            Some(NodeFault::Pause { until })
        } else {
            None
        }
    }

    /// Ends a pause or a crash at `now` (the quiet phase): the node resumes or restarts on
    /// its next millisecond.
    pub(crate) fn heal(&mut self, now: u64) {
        self.paused_until = self.paused_until.map(|_| now);
        self.down_until = self.down_until.map(|_| now);
    }

    /// True (once) when a pause ends at `now`: the node resumes.
    pub(crate) fn maybe_resume(&mut self, now: u64) -> bool {
        if self.paused_until.is_some_and(|until| until <= now) {
            self.paused_until = None;
            return true;
        }
        false
    }

    /// True (once) when a crashed node's time to restart has come at `now`.
    pub(crate) fn maybe_restart(&mut self, now: u64) -> bool {
        if self.down_until.is_some_and(|until| until <= now) {
            self.down_until = None;
            return true;
        }
        false
    }
}

/// When a node that crashed at `now` restarts.
pub(crate) fn down_until(rng: &mut impl Rng, now: u64) -> u64 {
    now + rng.gen_range(DOWN_MS)
}

/// A batch written out, waiting for its fsync.
#[derive(Debug)]
pub(crate) struct Pending {
    /// When the fsync completes.
    pub(crate) done_at: u64,
    /// The disk's journal position it makes durable.
    pub(crate) disk_mark: u64,
    /// The replica's log position (or count of stored states) then.
    pub(crate) lsn: u64,
    /// The log's reset count when the batch was written out.
    pub(crate) resets: u64,
    /// What waits for it.
    pub(crate) outputs: Vec<Output>,
}

/// When the fsync of a batch written out at `now` completes: a few milliseconds later, never
/// before the batches queued ahead of it (one file, fsynced in order).
pub(crate) fn fsync_done_at(rng: &mut impl Rng, fsyncs: &VecDeque<Pending>, now: u64) -> u64 {
    let last = fsyncs.back().map_or(0, |p| p.done_at);
    (now + rng.gen_range(FSYNC_MS)).max(last)
}
