//! The log engine's options: when to fsync, how large segments grow, when to compact, how
//! many value bytes to cache.

use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// The smallest `segment_bytes_max` accepted, in bytes: smaller segments would make a file of
/// every few records.
pub(super) const SEGMENT_BYTES_MIN: u64 = 1024;

/// The default `value_cache_bytes_max`, in bytes.
pub const VALUE_CACHE_BYTES_MAX_DEFAULT: u64 = 256 * 1024 * 1024;

/// When `flush` calls fsync (fdatasync) on the active segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// On every flush that wrote something since the last fsync: nothing acknowledged is lost.
    Always,
    /// On a flush at least this many milliseconds (by `flush`'s `now_ms`) after the last
    /// fsync: a power loss may lose that long of acknowledged writes.
    IntervalMs(u64),
    /// Never from `flush` (sealing and compaction still do): the kernel decides when.
    Never,
}

impl FsyncPolicy {
    /// True when a flush at `now_ms` must fsync, the last fsync having been at `last_ms`.
    pub(super) fn is_due(self, now_ms: u64, last_ms: u64) -> bool {
        match self {
            FsyncPolicy::Always => true,
            // A wall clock that stepped back must not hold fsyncs off until it catches up.
            FsyncPolicy::IntervalMs(interval) => now_ms < last_ms || now_ms - last_ms >= interval,
            FsyncPolicy::Never => false,
        }
    }
}

impl FromStr for FsyncPolicy {
    type Err = Error;

    /// Parses `always`, `never`, or an interval in milliseconds such as `100`.
    fn from_str(s: &str) -> Result<FsyncPolicy> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                let interval = s.parse().map_err(|_| parse_error(s))?;
                Ok(FsyncPolicy::IntervalMs(interval))
            }
            _ => Err(parse_error(s)),
        }
    }
}

/// The error for an fsync policy that does not parse.
fn parse_error(s: &str) -> Error {
    Error::InvalidInput(format!(
        "invalid fsync policy {s:?}: expected \"always\", \"never\" or an interval in \
         milliseconds such as \"100\""
    ))
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::IntervalMs(interval) => write!(f, "{interval}"),
            FsyncPolicy::Never => f.write_str("never"),
        }
    }
}

/// How a [`LogEngine`](super::LogEngine) writes, syncs and compacts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogOptions {
    /// When `flush` calls fsync.
    pub fsync: FsyncPolicy,
    /// The size at which the active segment is sealed and a new one started, in bytes (a
    /// single larger record still gets a segment of its own).
    pub segment_bytes_max: u64,
    /// Compaction starts when dead bytes exceed this share of the sealed segments' bytes...
    pub compaction_dead_ratio: f64,
    /// ...and exceed this many bytes.
    pub compaction_dead_bytes_min: u64,
    /// Write a hint file for each sealed segment, and read them on open instead of scanning.
    pub hint_files: bool,
    /// Bytes of values kept in memory at most, so that reading them needs no system call (a
    /// value counts its length); 0 caches nothing. See "Value cache" in the module docs.
    pub value_cache_bytes_max: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            fsync: FsyncPolicy::Always,
            segment_bytes_max: 64 * 1024 * 1024,
            compaction_dead_ratio: 0.5,
            compaction_dead_bytes_min: 16 * 1024 * 1024,
            hint_files: true,
            value_cache_bytes_max: VALUE_CACHE_BYTES_MAX_DEFAULT,
        }
    }
}

impl LogOptions {
    /// Refuses options the engine cannot work with.
    pub(super) fn validate(&self) -> Result<()> {
        if self.segment_bytes_max < SEGMENT_BYTES_MIN {
            return Err(Error::InvalidInput(format!(
                "segment_bytes_max {} is below the minimum of {SEGMENT_BYTES_MIN} bytes",
                self.segment_bytes_max
            )));
        }
        if !(0.0..=1.0).contains(&self.compaction_dead_ratio) {
            return Err(Error::InvalidInput(format!(
                "compaction_dead_ratio {} is not between 0 and 1",
                self.compaction_dead_ratio
            )));
        }
        Ok(())
    }
}
