//! A leaderless session's contexts: what the session wrote and read, per key, as causal
//! contexts (version vectors), since a leaderless cluster has no log to name positions of.
//!
//! For each key it used last (at most [`SESSION_KEYS_MAX`], fewer when their contexts are long:
//! the token stays under [`LEADERLESS_TOKEN_BYTES_MAX`]) the session keeps two contexts:
//! `written`, the join of the contexts of the states its acknowledged writes of the key made,
//! and `seen`, the join of those and (under `monotonic-reads`) of the contexts its reads were
//! answered from. Every request of one key goes to the coordinator as a
//! [`Request::KeySession`]. A write carries `seen`, and replaces what it names as well as what
//! the coordinator holds (and is stamped above it), so a session's write never loses to its
//! own earlier write, or one it read, on a coordinator that has not heard of it yet; except a
//! write of a key the session forgot, and `SET ... CONTEXT`, which replaces exactly what its
//! token names. A read's floor is what the guarantee needs:
//!
//! - `read-your-writes`: `written`, so the read reflects the session's writes of the key (or
//!   later writes that replaced them);
//! - `monotonic-reads`: `seen`, so the read never reflects an older state of the key than one
//!   the session read, or wrote. Per key is all a read of one key can be held to: it reflects
//!   only writes of its key.
//! - `consistent-prefix` and `all` are refused ([`super::Guarantee::leaderless_refusal`]).
//!
//! The coordinator waits for replies that cover the floor (more replicas, then every replica
//! asked again) and after `session_wait_ms` answers `-TRYAGAIN` naming the missing writes (see
//! `replikv_core::leaderless::session`).
//!
//! A session that used more keys forgets the one it used longest ago (the token stays
//! bounded). Its reads of a key it does not track, once it forgot one, go to every replica of
//! the key (r = n): a state a session saw was on some replica of the key (its own writes are
//! on their coordinator, a replica, at least), and a replica's state only grows, so the merge
//! of every replica covers it.
//!
//! # The receipt
//!
//! A leaderless answer's receipt names the coordinator (`node`), the `replicas` that answered
//! (a write: that hold it), those whose reply was older and get a `read_repair`, how long the
//! read was held for the floor (`waited_ms`), and how often the replicas were asked again.
//!
//! # The token
//!
//! `rkv1l-CLUSTER-FORGOT` then, per key, `-KEY~WRITTEN~SEEN`: lowercase hex, a fingerprint of
//! the cluster's name, `1` once the session forgot a key (else `0`), a 64-bit fingerprint of
//! the key (FNV-1a), and each context as `NODE.COUNTER` entries joined by `_` (node ids and dot
//! counters as the cluster's version vectors hold them; `=` for `SEEN` when it equals
//! `WRITTEN`). At most [`SESSION_KEYS_MAX`] keys and [`LEADERLESS_TOKEN_BYTES_MAX`] bytes;
//! `REPLIKV.SESSION RESUME` joins each key's contexts with the session's own and refuses a
//! token of another cluster, of a log-based family, or a malformed one.

use super::{Asked, Guarantee, Receipt, Session};
use replikv_core::causality::VersionVector;
use replikv_core::kv::{Reply, Request};
use replikv_core::version::NodeId;
use std::sync::Arc;

/// The first field of a leaderless token.
pub const TOKEN_PREFIX: &str = "rkv1l";

/// Keys a leaderless session keeps contexts for.
pub const SESSION_KEYS_MAX: usize = 16;

/// The longest leaderless token, in bytes.
pub const LEADERLESS_TOKEN_BYTES_MAX: usize = 4_096;

/// A leaderless answer's receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumReceipt {
    /// The replicas that answered (a write: that hold it), by name.
    pub replicas: Vec<String>,
    /// The replicas whose reply was older: read repair sends them the answer.
    pub repaired: Vec<String>,
    /// How long the read was held for the session's floor, in ms.
    pub waited_ms: u64,
    /// How often the replicas were asked again.
    pub asked_again: u32,
    /// It was a write.
    pub write: bool,
    /// The guarantee in force.
    pub guarantee: Guarantee,
}

impl QuorumReceipt {
    /// How the guarantee was met.
    fn met_by(&self) -> String {
        match (self.guarantee, self.write, self.waited_ms, self.asked_again) {
            (Guarantee::None, ..) => "no guarantee asked".to_string(),
            (_, true, ..) => "a write".to_string(),
            (_, _, 0, _) => "the first replies".to_string(),
            (_, _, ms, 0) => format!("waiting {ms} ms for more replicas"),
            (_, _, ms, again) => format!("asking again {again} times over {ms} ms"),
        }
    }

    /// Its fields, names first, as a receipt shows them (the node the client asked is `node`).
    pub fn fields(&self, node: &str) -> Vec<(&'static str, String)> {
        let list = |names: &[String]| if names.is_empty() { "none".to_string() } else { names.join(",") };
        vec![
            ("node", node.to_string()),
            ("role", "coordinator".to_string()),
            ("replicas", list(&self.replicas)),
            ("read_repair", list(&self.repaired)),
            ("waited_ms", self.waited_ms.to_string()),
            ("asked_again", self.asked_again.to_string()),
            ("guarantee", self.guarantee.to_string()),
            ("met_by", self.met_by()),
        ]
    }
}

/// What the session saw of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
struct KeyFloor {
    /// The key's fingerprint.
    key: u64,
    /// The join of its writes' contexts.
    written: VersionVector,
    /// The join of `written` and its reads' contexts.
    seen: VersionVector,
    /// When it was last used (the session's own count).
    used: u64,
}

/// What a leaderless session has seen.
#[derive(Clone, Debug)]
pub(super) struct Contexts {
    keys: Vec<KeyFloor>,
    /// It forgot a key: reads of keys it does not track go to every replica.
    forgot: bool,
    /// Counts uses, for `KeyFloor::used`.
    clock: u64,
    /// The cluster's node ids and names, for receipts.
    names: Arc<[(NodeId, String)]>,
}

impl Contexts {
    /// Nothing seen, in a cluster of the nodes `names`.
    pub(super) fn new(names: &[String]) -> Contexts {
        let names = names.iter().map(|name| (NodeId::from_name(name), name.clone())).collect();
        Contexts { keys: Vec::new(), forgot: false, clock: 0, names }
    }

    fn find(&self, key: u64) -> Option<&KeyFloor> {
        self.keys.iter().find(|k| k.key == key)
    }

    /// `request` (a write, or a read of keys) in `session`, with its key's floor.
    pub(super) fn wrap(&self, session: &Session, request: Request, write: bool) -> Request {
        let Some(key) = key_of(&request).map(fingerprint) else {
            return request; // several keys, or none: the coordinator refuses or answers it alone
        };
        let wait_ms = session.settings.wait_ms;
        let guarantee = session.guarantee;
        let (seen, every_replica) = match (write, self.find(key)) {
            // A write replaces what the session saw of the key, so that it never loses to the
            // session's own earlier write (or one it read) on a coordinator that has not heard
            // of it yet.
            (true, Some(floor)) => (floor.seen.clone(), false),
            (true, None) => (VersionVector::new(), false),
            (false, Some(floor)) if guarantee.monotonic() => (floor.seen.clone(), false),
            (false, Some(floor)) if guarantee.own_writes() => (floor.written.clone(), false),
            (false, Some(_)) => (VersionVector::new(), false),
            (false, None) => (VersionVector::new(), self.forgot && guarantee != Guarantee::None),
        };
        Request::KeySession { seen, wait_ms, every_replica, request: Box::new(request) }
    }

    /// Keeps the context of an answer in session (unless it is an error): the client's reply
    /// and the answer's receipt.
    pub(super) fn observe(&mut self, reply: Reply, asked: &Asked, guarantee: Guarantee) -> (Reply, Option<Receipt>) {
        let Reply::InKeySession { context, replicas, repaired, waited_ms, asked_again, reply } = reply else {
            return (reply, None); // refused or answered before any coordination
        };
        let receipt = QuorumReceipt {
            replicas: replicas.iter().map(|id| self.name(*id)).collect(),
            repaired: repaired.iter().map(|id| self.name(*id)).collect(),
            waited_ms,
            asked_again,
            write: asked.write,
            guarantee,
        };
        if let (false, Some(key)) = (matches!(*reply, Reply::Error(_)), asked.key) {
            let written = if asked.write { context.clone() } else { VersionVector::new() };
            // A read under read-your-writes alone raises nothing: its floor is the writes.
            let seen = if asked.write || guarantee.monotonic() { context } else { VersionVector::new() };
            self.learn(key, &written, &seen);
        }
        (*reply, Some(Receipt::Quorum(receipt)))
    }

    /// Joins `written` and `seen` into what the session saw of `key`, then keeps the bounds.
    /// Nothing to join tracks nothing (a read under read-your-writes alone, or of a key no one
    /// wrote, must not push a key out).
    fn learn(&mut self, key: u64, written: &VersionVector, seen: &VersionVector) {
        if written.is_empty() && seen.is_empty() {
            return;
        }
        self.clock += 1;
        let used = self.clock;
        let index = match self.keys.iter().position(|k| k.key == key) {
            Some(index) => index,
            None => {
                self.keys.push(KeyFloor { key, written: VersionVector::new(), seen: VersionVector::new(), used });
                self.keys.len() - 1
            }
        };
        let floor = &mut self.keys[index];
        floor.used = used;
        let joined =
            floor.written.merge(written).and_then(|()| floor.seen.merge(written)).and_then(|()| floor.seen.merge(seen));
        if joined.is_err() {
            // Past the version vector's bound: the key is forgotten rather than half kept.
            self.keys.remove(index);
            self.forgot = true;
        }
        self.keep_bounds();
    }

    /// Forgets the keys used longest ago while the session keeps too many, or its token
    /// would be too long.
    fn keep_bounds(&mut self) {
        while self.keys.len() > SESSION_KEYS_MAX || self.encoded_len() > LEADERLESS_TOKEN_BYTES_MAX {
            let oldest = self.keys.iter().enumerate().min_by_key(|(_, k)| k.used).map(|(i, _)| i).expect("not empty");
            self.keys.remove(oldest);
            self.forgot = true;
        }
    }

    /// The token's length, at most (every hex number at its longest).
    fn encoded_len(&self) -> usize {
        let header = TOKEN_PREFIX.len() + 1 + 8 + 2;
        let entry = 16 + 1 + 16 + 1;
        header + self.keys.iter().map(|k| 1 + 16 + 2 + entry * (k.written.len() + k.seen.len()) + 1).sum::<usize>()
    }

    /// A node's name for receipts (its id in hex if the cluster file does not list it).
    fn name(&self, id: NodeId) -> String {
        self.names.iter().find(|(n, _)| *n == id).map_or_else(|| id.to_string(), |(_, name)| name.clone())
    }

    /// Forgets everything seen.
    pub(super) fn reset(&mut self) {
        self.keys.clear();
        self.forgot = false;
    }

    /// The token (see the module documentation).
    pub(super) fn token(&self, cluster: u32) -> String {
        let vector = |v: &VersionVector| {
            v.entries().map(|(node, counter)| format!("{:x}.{counter:x}", node.0)).collect::<Vec<_>>().join("_")
        };
        let mut keys: Vec<&KeyFloor> = self.keys.iter().collect();
        keys.sort_by_key(|k| k.used);
        let mut token = format!("{TOKEN_PREFIX}-{cluster:08x}-{}", u8::from(self.forgot));
        for k in keys {
            let seen = if k.seen == k.written { "=".to_string() } else { vector(&k.seen) };
            token.push_str(&format!("-{:x}~{}~{seen}", k.key, vector(&k.written)));
        }
        token
    }

    /// Adopts `token`: joins each key's contexts with the session's own.
    pub(super) fn resume(&mut self, token: &str, this_cluster: u32) -> Result<(), String> {
        if token.len() > LEADERLESS_TOKEN_BYTES_MAX {
            return Err(format!(
                "a leaderless session token is at most {LEADERLESS_TOKEN_BYTES_MAX} bytes, this one {}",
                token.len()
            ));
        }
        let malformed = |why: &str| {
            format!(
                "{token:?} is not a leaderless session token ({why}; REPLIKV.SESSION gives one: {TOKEN_PREFIX}-...)"
            )
        };
        let fields: Vec<&str> = token.split('-').collect();
        match fields.first() {
            Some(&TOKEN_PREFIX) => {}
            Some(&"rkv1") => {
                return Err(
                    "this session token is of a single-leader or multi-leader cluster: it names log positions, \
                            which a leaderless cluster has not"
                        .into(),
                )
            }
            _ => return Err(malformed("it does not start with rkv1l")),
        }
        let [_, cluster, forgot, keys @ ..] = &fields[..] else { return Err(malformed("too few fields")) };
        let cluster = u32::from_str_radix(cluster, 16).map_err(|_| malformed("the cluster field is not hex"))?;
        if cluster != this_cluster {
            return Err(format!(
                "this session token is of another cluster (fingerprint {cluster:08x}, this one's {this_cluster:08x})"
            ));
        }
        let forgot = match *forgot {
            "0" => false,
            "1" => true,
            _ => return Err(malformed("the forgot field is neither 0 nor 1")),
        };
        if keys.len() > SESSION_KEYS_MAX {
            return Err(malformed(&format!("it names {} keys, over {SESSION_KEYS_MAX}", keys.len())));
        }
        let mut parsed = Vec::with_capacity(keys.len());
        for entry in keys {
            let [key, written, seen] = entry.split('~').collect::<Vec<_>>()[..] else {
                return Err(malformed("a key entry is not KEY~WRITTEN~SEEN"));
            };
            let key = u64::from_str_radix(key, 16).map_err(|_| malformed("a key fingerprint is not hex"))?;
            let written = parse_vector(written).map_err(|why| malformed(&why))?;
            let seen = if seen == "=" { written.clone() } else { parse_vector(seen).map_err(|why| malformed(&why))? };
            parsed.push((key, written, seen));
        }
        // Checked whole before anything is taken.
        self.forgot |= forgot;
        for (key, written, seen) in parsed {
            self.learn(key, &written, &seen);
        }
        Ok(())
    }
}

/// A context as the token writes it.
fn parse_vector(text: &str) -> Result<VersionVector, String> {
    if text.is_empty() {
        return Ok(VersionVector::new());
    }
    let mut entries = Vec::new();
    for pair in text.split('_') {
        let Some((node, counter)) = pair.split_once('.') else {
            return Err(format!("context entry {pair:?} is not NODE.COUNTER"));
        };
        let hex = |s: &str| u64::from_str_radix(s, 16).map_err(|_| format!("context entry {pair:?} is not hex"));
        entries.push((NodeId(hex(node)?), hex(counter)?));
    }
    VersionVector::from_entries(entries).map_err(|e| e.to_string())
}

/// The one key a leaderless request names (through REPLIKV.CONSISTENCY's wrapper), if it
/// names exactly one.
pub fn key_of(request: &Request) -> Option<&bytes::Bytes> {
    match request {
        Request::Get { key }
        | Request::Siblings { key }
        | Request::Set { key, .. }
        | Request::SetContext { key, .. } => Some(key),
        Request::Del { keys } | Request::Exists { keys } if keys.len() == 1 => keys.first(),
        Request::WithConsistency { request, .. } => key_of(request),
        _ => None,
    }
}

/// A key's fingerprint in tokens (FNV-1a, 64 bits).
pub fn fingerprint(key: &bytes::Bytes) -> u64 {
    super::fnv64(key)
}

#[cfg(test)]
mod tests {
    use super::super::{cluster_fingerprint, Guarantee, ReadYourWrites, SessionSettings};
    use super::*;
    use bytes::Bytes;

    fn session() -> Session {
        let settings = SessionSettings {
            guarantee: Guarantee::None,
            wait_ms: 1_000,
            read_your_writes: ReadYourWrites::Wait,
            leader_ms: 0,
            cluster: cluster_fingerprint("demo"),
        };
        Session::leaderless(settings, &["n1".into(), "n2".into(), "n3".into()])
    }

    fn vv(entries: &[(&str, u64)]) -> VersionVector {
        let mut pairs: Vec<(NodeId, u64)> = entries.iter().map(|(n, c)| (NodeId::from_name(n), *c)).collect();
        pairs.sort();
        VersionVector::from_entries(pairs).unwrap()
    }

    fn get(key: &str) -> Request {
        Request::Get { key: Bytes::copy_from_slice(key.as_bytes()) }
    }

    fn set(key: &str) -> Request {
        Request::Set {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from_static(b"v"),
            condition: replikv_core::kv::SetCondition::Always,
            get: false,
            expiry: replikv_core::kv::Expiry::Clear,
        }
    }

    fn answered(context: VersionVector, reply: Reply) -> Reply {
        Reply::InKeySession {
            context,
            replicas: vec![NodeId::from_name("n1"), NodeId::from_name("n2")],
            repaired: vec![NodeId::from_name("n2")],
            waited_ms: 0,
            asked_again: 0,
            reply: Box::new(reply),
        }
    }

    /// Sends `request` through the session, answered with `context`; returns the floor sent.
    fn round(s: &mut Session, request: Request, context: VersionVector, reply: Reply) -> (VersionVector, bool) {
        let wrapped = s.wrap(request, 0);
        let asked = s.asked(&wrapped).expect("in session");
        let Request::KeySession { seen, every_replica, .. } = wrapped else { panic!("not in session") };
        s.observe(answered(context, reply), &asked, 0);
        (seen, every_replica)
    }

    fn floor(s: &Session, request: Request) -> Option<(VersionVector, bool)> {
        match s.wrap(request, 0) {
            Request::KeySession { seen, every_replica, .. } => Some((seen, every_replica)),
            _ => None,
        }
    }

    #[test]
    fn each_guarantee_sends_its_keys_floor_and_the_receipt_names_replicas() {
        let mut s = session();
        assert_eq!(floor(&s, get("k")), None, "no guarantee: passed through");
        s.set_guarantee(Guarantee::ReadYourWrites).unwrap();
        round(&mut s, set("k"), vv(&[("n1", 5)]), Reply::Ok);
        round(&mut s, get("k"), vv(&[("n1", 5), ("n2", 9)]), Reply::Nil);
        assert_eq!(floor(&s, get("k")), Some((vv(&[("n1", 5)]), false)), "read-your-writes: the writes only");
        assert_eq!(floor(&s, get("other")), Some((VersionVector::new(), false)), "a key never written");
        s.set_guarantee(Guarantee::MonotonicReads).unwrap();
        round(&mut s, get("k"), vv(&[("n1", 5), ("n2", 9)]), Reply::Nil);
        round(&mut s, get("k"), vv(&[("n3", 2)]), Reply::Error("ERR x".into()));
        assert_eq!(floor(&s, get("k")), Some((vv(&[("n1", 5), ("n2", 9)]), false)), "an error moves nothing");
        let Some(Receipt::Quorum(receipt)) = &s.last_receipt else { panic!("a quorum receipt") };
        assert_eq!((receipt.replicas.join(","), receipt.repaired.join(",")), ("n1,n2".into(), "n2".into()));
        assert!(s.set_guarantee(Guarantee::ConsistentPrefix).unwrap_err().contains("no single order of writes"));
        assert!(s.set_guarantee(Guarantee::All).is_err());
        assert!(s.set_read_from(super::super::ReadFrom::Leader).unwrap_err().contains("no leader"));
        assert_eq!(s.guarantee(), Guarantee::MonotonicReads, "a refused guarantee changes nothing");
    }

    #[test]
    fn reads_that_raise_no_floor_track_nothing_and_writes_carry_what_the_session_saw() {
        let mut s = session();
        s.set_guarantee(Guarantee::ReadYourWrites).unwrap();
        for i in 0..2 * SESSION_KEYS_MAX {
            round(&mut s, get(&format!("r{i}")), vv(&[("n2", 3)]), Reply::Nil);
        }
        assert!(s.token().ends_with("-0"), "read-your-writes reads keep nothing: {}", s.token());
        assert_eq!(floor(&s, get("r0")), Some((VersionVector::new(), false)), "nothing forgotten: r = the cluster's");
        s.set_guarantee(Guarantee::MonotonicReads).unwrap();
        round(&mut s, get("k"), vv(&[("n2", 3)]), Reply::Nil);
        let (sent, _) = round(&mut s, set("k"), vv(&[("n1", 1), ("n2", 3)]), Reply::Ok);
        assert_eq!(sent, vv(&[("n2", 3)]), "the write replaces what the session read");
    }

    #[test]
    fn one_key_whose_contexts_pass_the_token_bound_is_forgotten_not_kept_past_it() {
        let mut s = session();
        s.set_guarantee(Guarantee::MonotonicReads).unwrap();
        let names: Vec<String> = (0..150).map(|i| format!("node{i}")).collect();
        let wide = vv(&names.iter().map(|n| (n.as_str(), 7)).collect::<Vec<_>>());
        round(&mut s, get("wide"), wide, Reply::Nil);
        let token = s.token();
        assert!(token.len() <= LEADERLESS_TOKEN_BYTES_MAX, "{} bytes", token.len());
        assert_eq!(floor(&s, get("wide")), Some((VersionVector::new(), true)), "forgotten: read from every replica");
        let mut other = session();
        other.resume(&token).unwrap();
    }

    #[test]
    fn a_session_past_its_keys_forgets_the_oldest_and_reads_untracked_keys_from_every_replica() {
        let mut s = session();
        s.set_guarantee(Guarantee::MonotonicReads).unwrap();
        for i in 0..=SESSION_KEYS_MAX {
            round(&mut s, set(&format!("k{i}")), vv(&[("n1", 1 + i as u64)]), Reply::Ok);
        }
        assert_eq!(floor(&s, get("k0")), Some((VersionVector::new(), true)), "k0 forgotten: read every replica");
        assert_eq!(floor(&s, get(&format!("k{SESSION_KEYS_MAX}"))), Some((vv(&[("n1", 17)]), false)));
        let token = s.token();
        assert!(token.starts_with("rkv1l-") && token.contains("-1-"), "{token}");
        assert!(token.len() <= LEADERLESS_TOKEN_BYTES_MAX);
        s.reset();
        assert_eq!(floor(&s, get("k0")), Some((VersionVector::new(), false)), "RESET forgets that it forgot");
    }

    #[test]
    fn a_token_carries_each_keys_contexts_and_refuses_another_cluster_family_or_form() {
        let mut s = session();
        s.set_guarantee(Guarantee::MonotonicReads).unwrap();
        round(&mut s, set("a"), vv(&[("n1", 0x2a)]), Reply::Ok);
        round(&mut s, get("b"), vv(&[("n2", 3), ("n3", 4)]), Reply::Nil);
        let token = s.token();
        let mut other = session();
        other.set_guarantee(Guarantee::MonotonicReads).unwrap();
        round(&mut other, get("a"), vv(&[("n2", 7)]), Reply::Nil);
        other.resume(&token).unwrap();
        assert_eq!(floor(&other, get("a")), Some((vv(&[("n1", 0x2a), ("n2", 7)]), false)), "joined, never forgotten");
        assert_eq!(floor(&other, get("b")), Some((vv(&[("n2", 3), ("n3", 4)]), false)));
        let mut fresh = session();
        fresh.resume(&token).unwrap();
        assert_eq!(fresh.token(), token, "a token read back writes itself again");
        let settings = SessionSettings { cluster: cluster_fingerprint("other"), ..fresh.settings };
        let mut elsewhere = Session::leaderless(settings, &[]);
        assert!(elsewhere.resume(&token).unwrap_err().contains("another cluster"));
        assert!(fresh.resume("rkv1-0-0-0-0-0-0").unwrap_err().contains("single-leader or multi-leader"));
        let cluster = format!("{:08x}", cluster_fingerprint("demo"));
        for bad in [
            "".to_string(),
            "rkv1l".into(),
            format!("rkv1l-{cluster}-2"),
            format!("rkv1l-{cluster}-0-zz~~="),
            format!("rkv1l-{cluster}-0-1~5.0~="),
            format!("rkv1l-{cluster}-0-1~5.1_4.1~="),
            format!("rkv1l-{cluster}-0-1~5.1"),
            "a".repeat(5_000),
        ] {
            assert!(fresh.resume(&bad).is_err(), "{bad}");
        }
        assert_eq!(fresh.token(), token, "a refused token changes nothing");
    }
}
