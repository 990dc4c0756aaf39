//! The simulated client's session (single-leader, and multi-leader inside a datacenter,
//! `--follower-reads`): the front end's bookkeeping (`replikv-server`'s `sessions.rs`), redone
//! here so that the simulator does not depend on the server.
//!
//! A multi-leader datacenter runs the single-leader protocol inside, so its sessions are the
//! same, with positions of that datacenter's own log; a session never leaves its datacenter.
//!
//! A session keeps two positions of the leader's history: `written`, the newest record its
//! acknowledged writes made, and `read`, the newest state its reads (and, under a monotonic
//! guarantee, its writes) reflected. Each read goes out as a [`Request::Session`] whose floor
//! (`after`) is what the session's [`Guarantee`] needs:
//!
//! | guarantee          | floor     |
//! |--------------------|-----------|
//! | none               | the start |
//! | read-your-writes   | `written` |
//! | monotonic-reads    | `read`    |
//! | consistent-prefix  | `read`    |
//!
//! Writes go out as session requests too (floor at the start), so that their replies carry
//! the record they made. Positions move only on a reply that is not an error
//! ([`Reply::InSession`] around a value): a `-TRYAGAIN` from a lagging follower teaches the
//! session nothing.
//!
//! The checkers never look at these positions: they judge the values in the history
//! ([`crate::check::sessions`]). The positions are the protocol under test.
//!
//! CAVEATS
//! - No `all` guarantee and no read-your-writes "leader for X ms" variant: each guarantee is
//!   drawn alone, so a failure names the one that broke.
//! - No `REPLIKV.SESSION RESET`: a session whose position a failover cut stays refused by
//!   every replica for the rest of the run (it keeps writing).

use crate::history::ClientId;
use rand::Rng;
use replikv_core::kv::{Reply, Request, SessionPosition};
use serde::Serialize;
use std::collections::BTreeMap;

/// How long a follower that does not hold a session's position waits for it, in virtual
/// milliseconds (the server's `session_wait_ms`); shorter than a client's timeout.
pub const SESSION_WAIT_MS: u64 = 300;

/// What a session is promised (one per simulated client, drawn from the seed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Guarantee {
    /// Nothing: reads are as stale as the replica asked.
    None,
    /// A read reflects every write the session had acknowledged before it.
    ReadYourWrites,
    /// A read never reflects an older state than one the session read before.
    MonotonicReads,
    /// A session never sees an effect without its cause.
    ConsistentPrefix,
}

impl Guarantee {
    /// Every guarantee, in the order a seed draws from.
    pub const ALL: [Guarantee; 4] =
        [Guarantee::None, Guarantee::ReadYourWrites, Guarantee::MonotonicReads, Guarantee::ConsistentPrefix];

    /// Its name, as `REPLIKV.GUARANTEE` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Guarantee::None => "none",
            Guarantee::ReadYourWrites => "read-your-writes",
            Guarantee::MonotonicReads => "monotonic-reads",
            Guarantee::ConsistentPrefix => "consistent-prefix",
        }
    }

    /// True when its floor is the session's read position.
    fn monotonic(self) -> bool {
        matches!(self, Guarantee::MonotonicReads | Guarantee::ConsistentPrefix)
    }
}

/// One client's session.
#[derive(Clone, Debug)]
pub struct Session {
    /// Its guarantee.
    pub guarantee: Guarantee,
    /// The newest record its acknowledged writes made.
    written: SessionPosition,
    /// The newest state it read.
    read: SessionPosition,
    /// The `TokenForgetsRead` canary: `read` never moves.
    forgets_reads: bool,
}

impl Session {
    /// A fresh session; `forgets_reads` plants the `TokenForgetsRead` canary.
    pub fn new(guarantee: Guarantee, forgets_reads: bool) -> Session {
        Session { guarantee, written: SessionPosition::default(), read: SessionPosition::default(), forgets_reads }
    }

    /// `request` as the session sends it.
    pub fn wrap(&self, request: Request) -> Request {
        let mut after = SessionPosition::default();
        if !request.is_write() {
            if self.guarantee == Guarantee::ReadYourWrites {
                after = self.written;
            }
            if self.guarantee.monotonic() {
                after = self.read;
            }
        }
        Request::Session { after, wait_ms: SESSION_WAIT_MS, on_leader: false, request: Box::new(request) }
    }

    /// Takes the reply to a request [`Session::wrap`] made: keeps its position (unless it is
    /// an error) and returns what the client sees.
    pub fn observe(&mut self, reply: Reply, write: bool) -> Reply {
        let Reply::InSession { at, reply, .. } = reply else { return reply };
        if !matches!(*reply, Reply::Error(_)) {
            if write {
                self.written = newer(self.written, at);
            }
            if self.guarantee.monotonic() && !self.forgets_reads {
                self.read = newer(self.read, at);
            }
        }
        *reply
    }
}

/// The newer of two positions (by record, then epoch), as the front end compares them.
fn newer(a: SessionPosition, b: SessionPosition) -> SessionPosition {
    if (b.lsn, b.epoch) > (a.lsn, a.epoch) {
        b
    } else {
        a
    }
}

/// A guarantee for each of `clients`, drawn from an RNG of `seed`'s own, so that a world's
/// stream of choices does not depend on it (every family's session clients draw here).
pub fn draw_guarantees(seed: u64, clients: std::ops::Range<ClientId>) -> BTreeMap<ClientId, Guarantee> {
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed ^ 0x5345_5353_494f_4e53);
    clients.map(|id| (id, Guarantee::ALL[rng.gen_range(0..Guarantee::ALL.len())])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn get() -> Request {
        Request::Get { key: Bytes::from_static(b"k") }
    }

    fn at(lsn: u64) -> SessionPosition {
        SessionPosition { lsn, epoch: 1 }
    }

    fn answer(lsn: u64, reply: Reply) -> Reply {
        Reply::InSession {
            at: at(lsn),
            by_leader: false,
            waited_ms: 0,
            behind_records: 0,
            behind_ms: 0,
            reply: Box::new(reply),
        }
    }

    fn floor(session: &Session) -> u64 {
        match session.wrap(get()) {
            Request::Session { after, .. } => after.lsn,
            other => panic!("not a session request: {other:?}"),
        }
    }

    #[test]
    fn each_guarantee_sets_its_floor_and_errors_teach_nothing() {
        // (guarantee, forgets reads, floor after a write at 5 and a read at 7, then an error at 9)
        for (guarantee, forgets, expected) in [
            (Guarantee::None, false, 0),
            (Guarantee::ReadYourWrites, false, 5),
            (Guarantee::MonotonicReads, false, 7),
            (Guarantee::ConsistentPrefix, false, 7),
            (Guarantee::MonotonicReads, true, 0),
        ] {
            let mut s = Session::new(guarantee, forgets);
            assert_eq!(s.observe(answer(5, Reply::Ok), true), Reply::Ok);
            s.observe(answer(7, Reply::Nil), false);
            s.observe(answer(9, Reply::Error("TRYAGAIN behind".into())), false);
            assert_eq!(floor(&s), expected, "{guarantee:?} forgets {forgets}");
        }
    }
}
