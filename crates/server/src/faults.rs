//! Faults a test can switch on in a real node process, off unless asked for.
//!
//! [`FailingEngine`] wraps a real engine and makes its n-th flush (or write-out) fail as a disk whose fsync
//! returns EIO would, so that an end-to-end test can check what a failed fsync does to a
//! running node: the write in flight is not acknowledged, nothing after it is, and the node
//! exits. It is switched on by the hidden flag `--test-fail-fsync-after N`.
//!
//! [`LinkFaults`] is a network between real processes that misbehaves on demand, as the userspace
//! proxies of etcd's robustness tests do, without netem or iptables: each node's outbound peer
//! link is its own proxy. The table holds one [`LinkFault`] per peer this node sends to: the link
//! to a `blocked` peer discards every message, the link to a peer with `drop` p discards each
//! message with probability p, and the link to a peer with `delay_ms` d holds each message until
//! d milliseconds after it was queued, in order (a message behind a held one waits for it). A
//! partition of n1 is therefore two halves, set on every node: n1 blocks all its links, and every
//! other node blocks its link to n1; `replikv fault` sets both. Connections stay up while
//! blocked, as they do behind a proxy that swallows packets: what notices is the replication
//! protocol's heartbeats, not the link.
//!
//! The table is switched on by the hidden flag `--test-faults` (or `REPLIKV_TEST_FAULTS=1`) and
//! driven through `GET` and `PUT /api/v1/test/faults`; without the flag the links carry no table
//! and the endpoints answer 404.
//!
//! Drops are drawn from one RNG per peer, seeded from [`FAULT_DROP_SEED`] and the peer's id
//! and reseeded whenever that peer's fault is set, so that the same messages on the same link
//! meet the same fate run after run.
//!
//! CAVEATS
//! - Faults act on this node's sending side only; what a peer sends here is the peer's table's
//!   business. A message already written to the socket is beyond reach.
//! - A delay holds the link, not only the message: its queue fills behind it, and `try_send`
//!   then fails as it would for a slow peer.
//! - The drop draws are reproducible per link, but which messages a link carries depends on the
//!   timing of real processes, so a run as a whole is not (the simulator's is).

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use replikv_core::storage::{Engine, EngineStats, Flushed, Meta, Record, WrittenOut};
use replikv_core::version::Timestamp;
use replikv_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;

/// An engine whose flush number `fail_at` (counting from 1) fails, and every call after it.
pub struct FailingEngine<E> {
    /// The real engine.
    inner: E,
    /// Flushes so far.
    flushes: u64,
    /// The flush that fails.
    fail_at: u64,
}

impl<E> FailingEngine<E> {
    /// Wraps `inner` so that its flush number `fail_at` fails.
    pub fn new(inner: E, fail_at: u64) -> FailingEngine<E> {
        FailingEngine { inner, flushes: 0, fail_at }
    }

    /// The error every call returns once the injected failure happened.
    fn failed(&self) -> Result<()> {
        if self.flushes >= self.fail_at {
            return Err(Error::Stopped("fsync failed: injected by --test-fail-fsync-after".into()));
        }
        Ok(())
    }
}

impl<E: Engine> Engine for FailingEngine<E> {
    fn get(&self, key: &[u8]) -> Result<Option<Record>> {
        self.inner.get(key)
    }
    fn meta(&self, key: &[u8]) -> Option<Meta> {
        self.inner.meta(key)
    }
    fn put(&mut self, key: Bytes, record: Record) -> Result<()> {
        self.failed()?;
        self.inner.put(key, record)
    }
    fn scan(&self, from: Bound<&[u8]>, limit: usize) -> Vec<(Bytes, Meta)> {
        self.inner.scan(from, limit)
    }
    fn expiring(&self, until_ms: u64, limit: usize) -> Vec<Bytes> {
        self.inner.expiring(until_ms, limit)
    }
    fn flush(&mut self, now_ms: u64) -> Result<Flushed> {
        self.failed()?;
        self.flushes += 1;
        self.failed()?;
        self.inner.flush(now_ms)
    }
    fn write_out(&mut self, now_ms: u64) -> Result<WrittenOut> {
        self.failed()?;
        self.flushes += 1;
        self.failed()?;
        self.inner.write_out(now_ms)
    }
    fn write_out_unsynced(&mut self, now_ms: u64) -> Result<u64> {
        self.failed()?;
        self.flushes += 1;
        self.failed()?;
        self.inner.write_out_unsynced(now_ms)
    }
    fn sync_written(&mut self, now_ms: u64) -> Result<()> {
        self.failed()?;
        self.inner.sync_written(now_ms)
    }
    fn maintain(&mut self, budget_bytes: u64) -> Result<()> {
        self.failed()?;
        self.inner.maintain(budget_bytes)
    }
    // Forwarded: the default would swallow the damage the wrapped engine found.
    fn take_damaged(&mut self) -> Vec<(Bytes, Error)> {
        self.inner.take_damaged()
    }
    fn stats(&self) -> EngineStats {
        self.inner.stats()
    }
    fn last_timestamp(&self) -> Timestamp {
        self.inner.last_timestamp()
    }
    fn log_engine(&mut self) -> Option<&mut replikv_core::storage::LogEngine> {
        self.inner.log_engine()
    }
}

/// The longest a test fault may hold a message, in milliseconds.
pub const FAULT_DELAY_MS_MAX: u64 = 10_000;

/// The seed of the drop draws, mixed with each peer's id.
pub const FAULT_DROP_SEED: u64 = 0x7265_706c_696b_7600;

/// What this node's link to one peer does to the messages it carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkFault {
    /// Every message is discarded: this side of a partition.
    #[serde(default)]
    pub blocked: bool,
    /// Each message is held until this many milliseconds after it was queued.
    #[serde(default)]
    pub delay_ms: u64,
    /// The probability, within 0..=1, that a message is discarded.
    #[serde(default)]
    pub drop: f64,
}

impl LinkFault {
    /// Refuses a delay over [`FAULT_DELAY_MS_MAX`] and a drop probability outside 0..=1.
    pub fn check(&self) -> crate::error::Result<()> {
        if self.delay_ms > FAULT_DELAY_MS_MAX {
            let why = format!("delay_ms {}: at most {FAULT_DELAY_MS_MAX}", self.delay_ms);
            return Err(crate::error::Error::Config(why));
        }
        if !(0.0..=1.0).contains(&self.drop) {
            return Err(crate::error::Error::Config(format!("drop {}: a probability within 0..=1", self.drop)));
        }
        Ok(())
    }

    /// True when the fault changes nothing.
    pub fn is_clear(&self) -> bool {
        *self == LinkFault::default()
    }
}

/// One peer's fault and the RNG its drops are drawn from.
#[derive(Debug)]
struct Entry {
    /// The fault.
    fault: LinkFault,
    /// The drop draws.
    rng: StdRng,
}

/// The RNG of `peer`'s drops: [`FAULT_DROP_SEED`] mixed with the peer's id (FNV-1a).
fn drop_rng(peer: &str) -> StdRng {
    let hash = peer.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    StdRng::seed_from_u64(FAULT_DROP_SEED ^ hash)
}

/// A node's table of link faults, one entry per peer it sends to, shared by its links and its
/// HTTP front end. Only the peers named at creation have entries, so the table is bounded by
/// the cluster's size.
#[derive(Debug)]
pub struct LinkFaults {
    /// Each peer's entry, by node id.
    entries: Mutex<BTreeMap<String, Entry>>,
}

impl LinkFaults {
    /// A clear table for links to `peers`.
    pub fn new<S: Into<String>>(peers: impl IntoIterator<Item = S>) -> LinkFaults {
        let entries = peers
            .into_iter()
            .map(|p| {
                let peer = p.into();
                let entry = Entry { fault: LinkFault::default(), rng: drop_rng(&peer) };
                (peer, entry)
            })
            .collect();
        LinkFaults { entries: Mutex::new(entries) }
    }

    /// Sets the fault of the link to `peer`, reseeding its drops; refuses a peer not in the
    /// table and a fault out of bounds.
    pub fn set(&self, peer: &str, fault: LinkFault) -> crate::error::Result<()> {
        fault.check()?;
        let mut entries = self.entries.lock().unwrap();
        let known = entries.keys().cloned().collect::<Vec<_>>().join(", ");
        let Some(entry) = entries.get_mut(peer) else {
            return Err(crate::error::Error::Config(format!("no link to peer {peer:?}: this node links to {known}")));
        };
        *entry = Entry { fault, rng: drop_rng(peer) };
        Ok(())
    }

    /// Clears every link's fault.
    pub fn clear(&self) {
        for (peer, entry) in self.entries.lock().unwrap().iter_mut() {
            *entry = Entry { fault: LinkFault::default(), rng: drop_rng(peer) };
        }
    }

    /// Every peer's fault now.
    pub fn table(&self) -> BTreeMap<String, LinkFault> {
        self.entries.lock().unwrap().iter().map(|(peer, entry)| (peer.clone(), entry.fault)).collect()
    }

    /// How long the link to `peer` holds each message, in milliseconds (0: not at all).
    pub fn delay_ms(&self, peer: &str) -> u64 {
        self.entries.lock().unwrap().get(peer).map_or(0, |e| e.fault.delay_ms)
    }

    /// Whether the link to `peer` discards the message in hand: always when blocked, with the
    /// drop probability otherwise. Draws from the peer's RNG only when the probability is
    /// strictly between 0 and 1, so that a clear link leaves the sequence alone.
    pub fn discards(&self, peer: &str) -> bool {
        let mut entries = self.entries.lock().unwrap();
        let Some(entry) = entries.get_mut(peer) else { return false };
        let drop = entry.fault.drop;
        entry.fault.blocked || drop >= 1.0 || (drop > 0.0 && entry.rng.gen_bool(drop))
    }
}

/// Reads a delay as `replikv fault delay` takes it: `50ms`, `2s` or a bare number of
/// milliseconds, at most [`FAULT_DELAY_MS_MAX`].
pub fn parse_delay_ms(text: &str) -> crate::error::Result<u64> {
    let text = text.trim();
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1000)
    } else {
        (text, 1)
    };
    let bad = || crate::error::Error::Config(format!("delay {text:?}: a number of milliseconds, as 50ms, 2s or 50"));
    let ms = number.trim().parse::<u64>().map_err(|_| bad())?.checked_mul(scale).ok_or_else(bad)?;
    LinkFault { delay_ms: ms, ..LinkFault::default() }.check()?;
    Ok(ms)
}

/// Reads a drop probability, within 0..=1.
pub fn parse_drop(text: &str) -> crate::error::Result<f64> {
    let drop: f64 = text
        .trim()
        .parse()
        .map_err(|_| crate::error::Error::Config(format!("drop {text:?}: a probability, as 0.3")))?;
    LinkFault { drop, ..LinkFault::default() }.check()?;
    Ok(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_parse_with_or_without_a_unit_and_within_bounds() {
        let table: &[(&str, Option<u64>)] = &[
            ("50ms", Some(50)),
            ("50", Some(50)),
            (" 2s ", Some(2000)),
            ("0", Some(0)),
            ("10000ms", Some(FAULT_DELAY_MS_MAX)),
            ("10001", None),
            ("11s", None),
            ("-5ms", None),
            ("1.5s", None),
            ("fast", None),
            ("", None),
            ("99999999999999999999s", None),
        ];
        for (text, want) in table {
            assert_eq!(parse_delay_ms(text).ok(), *want, "{text:?}");
        }
        let err = parse_delay_ms("10001").unwrap_err().to_string();
        assert!(err.contains("at most 10000"), "{err}");
    }

    #[test]
    fn drops_parse_as_probabilities() {
        let table: &[(&str, Option<f64>)] =
            &[("0.3", Some(0.3)), ("0", Some(0.0)), ("1", Some(1.0)), ("1.01", None), ("-0.1", None), ("NaN", None)];
        for (text, want) in table {
            assert_eq!(parse_drop(text).ok(), *want, "{text:?}");
        }
    }

    #[test]
    fn the_table_knows_its_peers_and_refuses_out_of_bounds_faults() {
        let faults = LinkFaults::new(["n2", "n3"]);
        assert!(faults.table().values().all(LinkFault::is_clear));
        let err = faults.set("n9", LinkFault { blocked: true, ..LinkFault::default() }).unwrap_err().to_string();
        assert!(err.contains("n9") && err.contains("n2, n3"), "{err}");
        let err = faults.set("n2", LinkFault { drop: 2.0, ..LinkFault::default() }).unwrap_err().to_string();
        assert!(err.contains("0..=1"), "{err}");
        assert!(faults.set("n2", LinkFault { delay_ms: FAULT_DELAY_MS_MAX + 1, ..LinkFault::default() }).is_err());
        assert!(faults.table()["n2"].is_clear(), "a refused fault changes nothing");

        faults.set("n2", LinkFault { blocked: true, delay_ms: 50, drop: 0.0 }).unwrap();
        assert!(faults.discards("n2") && !faults.discards("n3"));
        assert_eq!((faults.delay_ms("n2"), faults.delay_ms("n3"), faults.delay_ms("n9")), (50, 0, 0));
        faults.clear();
        assert!(!faults.discards("n2"));
        assert_eq!(faults.delay_ms("n2"), 0);
    }

    #[test]
    fn drops_are_drawn_reproducibly_at_about_their_rate() {
        let draws = || {
            let faults = LinkFaults::new(["n2", "n3"]);
            faults.set("n2", LinkFault { drop: 0.3, ..LinkFault::default() }).unwrap();
            faults.set("n3", LinkFault { drop: 0.3, ..LinkFault::default() }).unwrap();
            let n2: Vec<bool> = (0..1000).map(|_| faults.discards("n2")).collect();
            let n3: Vec<bool> = (0..1000).map(|_| faults.discards("n3")).collect();
            (n2, n3)
        };
        let (n2, n3) = draws();
        assert_eq!((n2.clone(), n3.clone()), draws(), "the same seed, the same fates");
        assert_ne!(n2, n3, "each peer draws from its own sequence");
        let dropped = n2.iter().filter(|d| **d).count();
        assert!((230..=370).contains(&dropped), "{dropped} of 1000 dropped at 0.3");
        let faults = LinkFaults::new(["n2"]);
        faults.set("n2", LinkFault { drop: 1.0, ..LinkFault::default() }).unwrap();
        assert!((0..100).all(|_| faults.discards("n2")), "drop 1 drops everything");
    }
}
