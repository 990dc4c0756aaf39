//! The simulated leaderless client's session (`--sessions`): the front end's per-key
//! bookkeeping (`replikv-server`'s leaderless sessions), redone here so that the simulator
//! does not depend on the server.
//!
//! A leaderless cluster has no log whose positions a session could keep. What a session
//! keeps instead, per key, is two causal contexts: `written`, the join of the contexts its
//! acknowledged writes of the key made, and `seen`, the join of those and of the context of
//! every answer its reads of the key got. Each request goes out as a
//! [`Request::KeySession`] whose floor (`seen`) is what the session's [`Guarantee`] needs; the
//! coordinator answers a read only from replicas whose merged state covers it
//! (`replikv_core::leaderless::session`):
//!
//! | guarantee          | floor     |
//! |--------------------|-----------|
//! | none               | empty     |
//! | read-your-writes   | `written` |
//! | monotonic-reads    | `seen`    |
//!
//! Consistent prefix is not offered (the front end refuses it: a leaderless cluster has no
//! single order of writes whose prefixes a session could be kept to), so a leaderless
//! session draws among [`GUARANTEES`].
//!
//! Writes go out in session too, so that their answers ([`Reply::InKeySession`]) carry the
//! context of the state they made; under a guarantee a write carries the key's floor, and the
//! coordinator makes it replace what the floor names (as the front end does). Contexts move only
//! with such an answer: errors (`-TRYAGAIN` naming the gap, `NOQUORUM`) are not wrapped and
//! teach the session nothing.
//!
//! The checkers never look at these contexts: they judge the values in the history
//! ([`super::checks::sessions`]). The contexts are the protocol under test.
//!
//! CAVEATS
//! - The front end keeps a bounded number of keys and reads a key it forgot from every
//!   replica (`every_replica`); the simulated clients use a few keys, so none is forgotten
//!   and `every_replica` is never set.
//! - REPLIKV.SIBLINGS (the reads under `siblings`) goes out in session as GET does: the
//!   coordinator takes any one-key read in session.
//! - No `REPLIKV.SESSION RESET`: a floor no replica can cover in time (its write's holders
//!   down or cut off) refuses the session's reads with `-TRYAGAIN` until one can.

use crate::session::Guarantee;
use replikv_core::causality::VersionVector;
use replikv_core::kv::{Reply, Request};
use std::collections::BTreeMap;

/// The guarantees a leaderless session draws from (the order a seed draws in).
pub const GUARANTEES: [Guarantee; 3] = [Guarantee::None, Guarantee::ReadYourWrites, Guarantee::MonotonicReads];

/// How long a coordinator asks the replicas again for a session's floor, in virtual
/// milliseconds (the server's session wait): shorter than a client's timeout, so that a read
/// no replica can serve is refused before its client gives up.
pub const SESSION_WAIT_MS: u64 = 300;

const _: () = assert!(SESSION_WAIT_MS < super::clients::CLIENT_TIMEOUT_MS);

/// What a session saw of one key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Contexts {
    /// The join of the contexts its acknowledged writes made.
    written: VersionVector,
    /// The join of `written` and the contexts its reads' answers reflected.
    seen: VersionVector,
}

/// One client's session.
#[derive(Clone, Debug)]
pub struct KeySessions {
    /// Its guarantee.
    pub guarantee: Guarantee,
    /// What it saw, per key.
    keys: BTreeMap<String, Contexts>,
    /// The `TokenForgetsRead` canary: `seen` never takes a read's context.
    forgets_reads: bool,
}

impl KeySessions {
    /// A fresh session; `forgets_reads` plants the `TokenForgetsRead` canary.
    pub fn new(guarantee: Guarantee, forgets_reads: bool) -> KeySessions {
        assert!(GUARANTEES.contains(&guarantee), "a leaderless session is never promised {guarantee:?}");
        KeySessions { guarantee, keys: BTreeMap::new(), forgets_reads }
    }

    /// `request`, on `key`, as the session sends it.
    pub fn wrap(&self, key: &str, request: Request) -> Request {
        let contexts = self.keys.get(key);
        let seen = match (self.guarantee, contexts) {
            // A write replaces what the session saw of the key (the front end's rule), so
            // that it never loses to the session's own earlier write.
            (Guarantee::MonotonicReads, Some(c)) if request.is_write() => c.seen.clone(),
            (Guarantee::ReadYourWrites, Some(c)) if request.is_write() => c.written.clone(),
            _ if request.is_write() => VersionVector::new(),
            (Guarantee::ReadYourWrites, Some(c)) => c.written.clone(),
            (Guarantee::MonotonicReads, Some(c)) => c.seen.clone(),
            _ => VersionVector::new(),
        };
        Request::KeySession { seen, wait_ms: SESSION_WAIT_MS, every_replica: false, request: Box::new(request) }
    }

    /// Takes the reply to a request on `key` that [`KeySessions::wrap`] made: keeps its
    /// context, and returns what the client sees with the context the answer reflected
    /// (`None`: an error, not in session).
    pub fn observe(&mut self, key: &str, reply: Reply, write: bool) -> (Reply, Option<VersionVector>) {
        let Reply::InKeySession { context, reply, .. } = reply else { return (reply, None) };
        let contexts = self.keys.entry(key.to_string()).or_default();
        let join = |into: &mut VersionVector| {
            into.merge(&context).expect("a simulated cluster's contexts hold a few entries, far below the bound")
        };
        if write {
            join(&mut contexts.written);
        }
        if write || !self.forgets_reads {
            join(&mut contexts.seen);
        }
        (*reply, Some(context))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use replikv_core::version::NodeId;

    fn get() -> Request {
        Request::Get { key: Bytes::from_static(b"k") }
    }

    fn del() -> Request {
        Request::Del { keys: vec![Bytes::from_static(b"k")] }
    }

    /// A context with `counter` for node "n1".
    fn at(counter: u64) -> VersionVector {
        VersionVector::from_entries(vec![(NodeId::from_name("n1"), counter)]).unwrap()
    }

    fn answer(counter: u64, reply: Reply) -> Reply {
        Reply::InKeySession {
            context: at(counter),
            replicas: Vec::new(),
            repaired: Vec::new(),
            waited_ms: 0,
            asked_again: 0,
            reply: Box::new(reply),
        }
    }

    fn floor(session: &KeySessions, key: &str, request: Request) -> VersionVector {
        match session.wrap(key, request) {
            Request::KeySession { seen, wait_ms, every_replica: false, .. } => {
                assert_eq!(wait_ms, SESSION_WAIT_MS);
                seen
            }
            other => panic!("not a session request: {other:?}"),
        }
    }

    #[test]
    fn each_guarantee_sets_its_floor_per_key_and_errors_teach_nothing() {
        // (guarantee, forgets reads, floor of k after a write at 5 and a read at 7, then an error)
        for (guarantee, forgets, expected) in [
            (Guarantee::None, false, VersionVector::new()),
            (Guarantee::ReadYourWrites, false, at(5)),
            (Guarantee::MonotonicReads, false, at(7)),
            (Guarantee::MonotonicReads, true, at(5)),
        ] {
            let mut s = KeySessions::new(guarantee, forgets);
            assert_eq!(s.observe("k", answer(5, Reply::Int(1)), true), (Reply::Int(1), Some(at(5))));
            assert_eq!(s.observe("k", answer(7, Reply::Nil), false), (Reply::Nil, Some(at(7))));
            let refused = Reply::Error("TRYAGAIN behind".into());
            assert_eq!(s.observe("k", refused.clone(), false), (refused, None));
            assert_eq!(floor(&s, "k", get()), expected, "{guarantee:?} forgets {forgets}");
            assert_eq!(floor(&s, "other", get()), VersionVector::new(), "{guarantee:?}: another key has no floor");
            // A write carries the floor too: it replaces what the session saw.
            assert_eq!(floor(&s, "k", del()), expected, "{guarantee:?}: a write's floor");
        }
    }

    #[test]
    #[should_panic(expected = "never promised ConsistentPrefix")]
    fn a_leaderless_session_is_never_consistent_prefix() {
        KeySessions::new(Guarantee::ConsistentPrefix, false);
    }
}
