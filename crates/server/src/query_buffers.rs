//! Bytes buffered for requests not yet complete, node-wide (`query_buffer_total_bytes_max`).
//!
//! Each RESP connection bounds its own read buffer (`query_buffer_bytes_max`), but many
//! connections each under their bound can still hold more than the node can spare: four
//! unfinished 300 MiB uploads took a node from 0.7 to 1.9 GiB. This module keeps the sum, and
//! when it goes over the node's bound it closes the connection holding the most.
//!
//! Whoever buffers an incomplete request holds a [`Share`] of the ledger: a RESP connection
//! for its whole life, an HTTP request while its body is being read. After each read it
//! publishes the bytes it holds now ([`Share::set`]): one swap of its own counter and one
//! add to the node's total, both atomics, and no lock. Only when the total is over the bound
//! does the publisher take the ledger's lock, pick the holder with the most bytes (the oldest
//! of equals), write its bytes off the total, raise its eviction signal and log it with the
//! client's address; it repeats until the total is within the bound. The evicted holder sees
//! the signal while it waits for bytes ([`Share::wait_evicted`]) or after its round
//! ([`Share::eviction`]), answers an error naming the limit (RESP `-ERR`, HTTP 503) and
//! closes. Its later publications count for nothing, so a holder already told to close is
//! never picked twice and never makes another one go. Dropping a share takes its bytes off
//! the total, however its holder ended.
//!
//! Invariant: the total is the sum of the holders' published bytes, each moved only by a
//! swap of the holder's own counter and the matching change to the total.
//!
//! CAVEATS
//! - What counts is what a holder publishes: the length of a RESP read buffer (after the
//!   complete requests were cut out of it) and of an HTTP body read so far; not the
//!   buffers' spare capacity, nor requests being answered, nor replies being written.
//! - A RESP connection that cut its `PIPELINE_REQUESTS_MAX` requests for a round still
//!   counts the complete requests left behind them until its next round.
//! - The total may pass the bound by one read's worth between a publication and the
//!   eviction it triggers; the eviction is what bounds memory, not a refusal to read.
//! - An evicted holder busy with the runtime answers its round first, then closes.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// The node's bytes of incomplete requests, and who holds them.
pub struct QueryBuffers {
    inner: Arc<Inner>,
}

/// What [`QueryBuffers`] and every [`Share`] hold.
struct Inner {
    /// The sum of every holder's published bytes.
    total_bytes: AtomicUsize,
    /// The holders by id, for picking the biggest.
    holders: Mutex<BTreeMap<u64, Arc<Holder>>>,
    /// The next holder's id: ids grow, so a lower one is an older holder.
    next_id: AtomicU64,
}

/// One holder: a RESP connection or an HTTP body being read.
struct Holder {
    /// Its client's address, for the log.
    addr: SocketAddr,
    /// `RESP` or `HTTP`, for the log.
    front: &'static str,
    /// Bytes it holds as it last published.
    bytes: AtomicUsize,
    /// Set once it was told to close; from then on its publications count for nothing.
    evicted: AtomicBool,
    /// Why it must close, once it must.
    eviction: watch::Sender<Option<Eviction>>,
}

/// Why a holder was told to close: what it held and where the node stood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eviction {
    /// The bytes the closed connection held.
    pub held_bytes: usize,
    /// The node's bytes of incomplete requests when it was picked, its own included.
    pub total_bytes: usize,
    /// `query_buffer_total_bytes_max` at the time.
    pub total_bytes_max: usize,
}

impl fmt::Display for Eviction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "closing this connection: it buffers {} bytes of incomplete requests, the most of any, and the node's \
             {} bytes are over query_buffer_total_bytes_max of {} bytes",
            self.held_bytes, self.total_bytes, self.total_bytes_max
        )
    }
}

/// One holder's place in the ledger; dropping it takes its bytes off the total.
pub struct Share {
    id: u64,
    holder: Arc<Holder>,
    inner: Arc<Inner>,
    eviction: watch::Receiver<Option<Eviction>>,
}

impl Default for QueryBuffers {
    fn default() -> QueryBuffers {
        QueryBuffers::new()
    }
}

impl QueryBuffers {
    /// An empty ledger.
    pub fn new() -> QueryBuffers {
        QueryBuffers {
            inner: Arc::new(Inner {
                total_bytes: AtomicUsize::new(0),
                holders: Mutex::new(BTreeMap::new()),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// A share for a new holder (`front` is `RESP` or `HTTP`) whose client is at `addr`,
    /// holding nothing yet.
    pub fn join(&self, addr: SocketAddr, front: &'static str) -> Share {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (eviction, receiver) = watch::channel(None);
        let holder =
            Arc::new(Holder { addr, front, bytes: AtomicUsize::new(0), evicted: AtomicBool::new(false), eviction });
        self.inner.holders.lock().unwrap().insert(id, holder.clone());
        Share { id, holder, inner: self.inner.clone(), eviction: receiver }
    }

    /// The node's bytes of incomplete requests now.
    pub fn total_bytes(&self) -> usize {
        self.inner.total_bytes.load(Ordering::Relaxed)
    }
}

impl Share {
    /// Publishes that this holder now holds `bytes`; if that takes the node's total over
    /// `total_bytes_max`, tells the biggest holders to close until it is within (see the
    /// module documentation). Nothing once this holder was told to close.
    pub fn set(&self, bytes: usize, total_bytes_max: usize) {
        if self.holder.evicted.load(Ordering::Relaxed) {
            return;
        }
        let total = self.inner.swap(&self.holder, bytes);
        if self.holder.evicted.load(Ordering::Relaxed) {
            // Evicted between the check above and the swap: the eviction wrote this holder's
            // bytes off, so take back what the swap added.
            self.inner.swap(&self.holder, 0);
            return;
        }
        if total > total_bytes_max {
            self.inner.evict(total_bytes_max);
        }
    }

    /// Why this holder must close, once it was told to.
    pub fn eviction(&self) -> Option<Eviction> {
        *self.eviction.borrow()
    }

    /// Resolves once this holder is told to close, with why.
    pub async fn wait_evicted(&mut self) -> Eviction {
        match self.eviction.wait_for(Option::is_some).await {
            Ok(eviction) => eviction.expect("waited for Some"),
            // The share holds the holder, and the holder the sender: it cannot be dropped.
            Err(_) => unreachable!("a share outlived its eviction sender"),
        }
    }
}

impl Inner {
    /// Sets `holder`'s bytes to `bytes` and moves the total by the difference; the total after.
    fn swap(&self, holder: &Holder, bytes: usize) -> usize {
        let before = holder.bytes.swap(bytes, Ordering::Relaxed);
        if bytes >= before {
            self.total_bytes.fetch_add(bytes - before, Ordering::Relaxed) + (bytes - before)
        } else {
            self.total_bytes.fetch_sub(before - bytes, Ordering::Relaxed) - (before - bytes)
        }
    }

    /// Tells the holders with the most bytes to close, biggest first, until the total is at
    /// most `total_bytes_max` or no holder holds anything.
    fn evict(&self, total_bytes_max: usize) {
        let holders = self.holders.lock().unwrap();
        // Each round evicts one holder or stops, so this ends within the holders' count.
        for _ in 0..holders.len() {
            let total_bytes = self.total_bytes.load(Ordering::Relaxed);
            if total_bytes <= total_bytes_max {
                return;
            }
            let biggest = holders
                .iter()
                .filter(|(_, h)| !h.evicted.load(Ordering::Relaxed))
                .max_by_key(|(id, h)| (h.bytes.load(Ordering::Relaxed), std::cmp::Reverse(**id)));
            let Some((_, holder)) = biggest.filter(|(_, h)| h.bytes.load(Ordering::Relaxed) > 0) else { return };
            holder.evicted.store(true, Ordering::Relaxed);
            let held_bytes = holder.bytes.load(Ordering::Relaxed);
            self.swap(holder, 0);
            let eviction = Eviction { held_bytes, total_bytes, total_bytes_max };
            tracing::warn!(
                client = %holder.addr,
                "closing {} client {}: {held_bytes} bytes of incomplete requests, the most of any, and the node's \
                 {total_bytes} bytes are over query_buffer_total_bytes_max ({total_bytes_max} bytes)",
                holder.front,
                holder.addr,
            );
            holder.eviction.send_replace(Some(eviction));
        }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.inner.swap(&self.holder, 0);
        self.inner.holders.lock().unwrap().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn the_total_follows_every_publication_and_drop() {
        let ledger = QueryBuffers::new();
        let a = ledger.join(addr(1), "RESP");
        let b = ledger.join(addr(2), "HTTP");
        // (holder, bytes, the total after)
        let table = [(&a, 100, 100), (&b, 50, 150), (&a, 30, 80), (&a, 0, 50), (&b, 70, 70), (&a, 10, 80)];
        for (share, bytes, total) in table {
            share.set(bytes, usize::MAX);
            assert_eq!(ledger.total_bytes(), total, "after setting {bytes}");
        }
        drop(b);
        assert_eq!(ledger.total_bytes(), 10, "b's 70 left with it");
        drop(a);
        assert_eq!(ledger.total_bytes(), 0);
    }

    #[test]
    fn over_the_bound_the_biggest_is_told_to_close_and_the_rest_are_not() {
        let ledger = QueryBuffers::new();
        let small = ledger.join(addr(1), "RESP");
        let big = ledger.join(addr(2), "RESP");
        let pusher = ledger.join(addr(3), "HTTP");
        small.set(300, 1000);
        big.set(600, 1000);
        assert_eq!((small.eviction(), big.eviction()), (None, None), "900 of 1000");
        pusher.set(200, 1000);
        let want = Eviction { held_bytes: 600, total_bytes: 1100, total_bytes_max: 1000 };
        assert_eq!(big.eviction(), Some(want));
        assert_eq!((small.eviction(), pusher.eviction()), (None, None), "one eviction was enough");
        assert_eq!(ledger.total_bytes(), 500, "the evicted holder's bytes are written off");
        big.set(5000, 1000);
        assert_eq!(ledger.total_bytes(), 500, "an evicted holder's publications count for nothing");
        drop(big);
        assert_eq!(ledger.total_bytes(), 500);
        assert!(want.to_string().contains("600 bytes") && want.to_string().contains("query_buffer_total_bytes_max"));
    }

    #[test]
    fn evictions_go_on_until_the_total_fits_and_ties_go_to_the_oldest() {
        let ledger = QueryBuffers::new();
        let shares: Vec<Share> = (0..4).map(|i| ledger.join(addr(i), "RESP")).collect();
        for share in &shares[..3] {
            share.set(400, usize::MAX);
        }
        // 1200 + 100 over a bound of 500: the two oldest 400s go, then 500 fits.
        shares[3].set(100, 500);
        let evicted: Vec<bool> = shares.iter().map(|s| s.eviction().is_some()).collect();
        assert_eq!(evicted, [true, true, false, false]);
        assert_eq!(ledger.total_bytes(), 500);
        // A holder over the bound alone is evicted too.
        shares[3].set(900, 500);
        assert!(shares[3].eviction().is_some() && shares[2].eviction().is_none(), "900 > 400");
    }

    #[tokio::test]
    async fn a_waiting_holder_wakes_when_told_to_close() {
        let ledger = Arc::new(QueryBuffers::new());
        let mut waiting = ledger.join(addr(1), "RESP");
        waiting.set(10, 10);
        let woke = tokio::spawn(async move { waiting.wait_evicted().await });
        let other = ledger.join(addr(2), "RESP");
        other.set(5, 10);
        let eviction = tokio::time::timeout(Duration::from_secs(5), woke).await.expect("woken").unwrap();
        assert_eq!(eviction, Eviction { held_bytes: 10, total_bytes: 15, total_bytes_max: 10 });
    }
}
