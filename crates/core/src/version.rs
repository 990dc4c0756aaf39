//! Versions: a hybrid logical clock timestamp and the node that made the write.
//!
//! Every value replikv stores carries the [`Version`] of the write that made it. Versions
//! totally order writes: first by [`Timestamp`] (physical milliseconds, then a logical
//! counter), then by the origin [`NodeId`]. Last-write-wins and "newest version wins" compare
//! versions and nothing else, so two replicas that hold the same versions agree on the winner
//! whatever order the writes reached them in.
//!
//! The [`Hlc`] (hybrid logical clock, Kulkarni et al. 2014) hands out timestamps that never go
//! backwards on one node, even when the wall clock does, and that stay close to wall-clock time
//! so that a human can read them. The clock reads time only from the `now_ms` its caller hands
//! it: the core never reads a clock of its own.
//!
//! CAVEATS
//! - Timestamps order writes; they do not say whether two writes were concurrent. Where that
//!   matters (multi-leader, leaderless) a version vector is carried beside the version.
//! - A node whose wall clock runs far ahead makes timestamps that win every comparison for as
//!   long as it is ahead; `observe` bounds nothing. Clock drift limits belong to the strategy.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The identity of a node in versions: a 64-bit hash of its configured name (xxh3).
///
/// Names are what operators see; versions hold the hash so that a record's header has a
/// fixed size. Ties between equal timestamps are broken by this number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl NodeId {
    /// The node id for a configured node name such as `n1`.
    pub fn from_name(name: &str) -> NodeId {
        NodeId(xxhash_rust::xxh3::xxh3_64(name.as_bytes()))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A hybrid logical clock reading: physical milliseconds since the Unix epoch, then a counter
/// that orders events within one millisecond.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp {
    /// Milliseconds since the Unix epoch, as the clock that made it knew them.
    pub millis: u64,
    /// Events within the same millisecond, in order.
    pub logical: u32,
}

impl Timestamp {
    /// The smallest timestamp after this one, as a clock hands out within one millisecond: the
    /// logical counter spilling over moves a millisecond ahead rather than wrapping.
    pub fn successor(self) -> Timestamp {
        match self.logical.checked_add(1) {
            Some(logical) => Timestamp { millis: self.millis, logical },
            None => Timestamp { millis: self.millis.saturating_add(1), logical: 0 },
        }
    }
}

/// The version of one write: when (HLC) and where (origin node). Totally ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// When the write was made.
    pub ts: Timestamp,
    /// The node that made it; breaks ties between equal timestamps.
    pub node: NodeId,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.ts.millis, self.ts.logical, self.node)
    }
}

/// A hybrid logical clock for one node.
#[derive(Clone, Debug)]
pub struct Hlc {
    /// The last timestamp handed out or observed.
    last: Timestamp,
}

impl Hlc {
    /// A clock that has handed out nothing yet, or that resumes after `last` (the newest
    /// timestamp found in storage, so that a restarted node never reuses one).
    pub fn new(last: Timestamp) -> Hlc {
        Hlc { last }
    }

    /// A timestamp for a local event at wall-clock time `now_ms`: greater than every timestamp
    /// this clock handed out or observed before.
    pub fn tick(&mut self, now_ms: u64) -> Timestamp {
        self.last = if now_ms > self.last.millis {
            Timestamp { millis: now_ms, logical: 0 }
        } else {
            self.next_after(self.last)
        };
        self.last
    }

    /// Takes a timestamp seen in a message or a record, so that later local timestamps order
    /// after it.
    pub fn observe(&mut self, seen: Timestamp) {
        if seen > self.last {
            self.last = seen;
        }
    }

    /// The last timestamp handed out or observed.
    pub fn last(&self) -> Timestamp {
        self.last
    }

    /// The smallest timestamp after `ts` ([`Timestamp::successor`]).
    fn next_after(&self, ts: Timestamp) -> Timestamp {
        ts.successor()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(millis: u64, logical: u32) -> Timestamp {
        Timestamp { millis, logical }
    }

    #[test]
    fn tick_follows_wall_clock_and_never_goes_back() {
        // (wall clock reading, expected timestamp), applied in order to one clock.
        let table = [
            (100, ts(100, 0)),
            (100, ts(100, 1)),
            (101, ts(101, 0)),
            (90, ts(101, 1)), // wall clock stepped back: stay ahead
            (90, ts(101, 2)),
            (200, ts(200, 0)),
        ];
        let mut clock = Hlc::new(Timestamp::default());
        for (now, want) in table {
            assert_eq!(clock.tick(now), want, "tick({now})");
        }
    }

    #[test]
    fn observe_moves_clock_past_remote_time() {
        let mut clock = Hlc::new(ts(100, 0));
        clock.observe(ts(500, 7));
        assert_eq!(clock.tick(120), ts(500, 8));
        clock.observe(ts(10, 0)); // older: ignored
        assert_eq!(clock.tick(120), ts(500, 9));
    }

    #[test]
    fn logical_overflow_moves_to_next_millisecond() {
        let mut clock = Hlc::new(ts(100, u32::MAX));
        assert_eq!(clock.tick(50), ts(101, 0));
    }

    #[test]
    fn versions_order_by_time_then_node() {
        let a = Version { ts: ts(1, 0), node: NodeId(9) };
        let b = Version { ts: ts(1, 1), node: NodeId(1) };
        let c = Version { ts: ts(1, 1), node: NodeId(2) };
        assert!(a < b && b < c);
        assert_ne!(NodeId::from_name("n1"), NodeId::from_name("n2"));
    }
}
