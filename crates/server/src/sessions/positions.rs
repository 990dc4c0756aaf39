//! A single-leader session's positions (and a multi-leader datacenter's, whose log is its
//! own): what the session wrote and read, as positions of the leader's log.
//!
//! The session remembers the newest position of the leader's history it wrote (each write's
//! record) and read (the state each read saw, under a guarantee that needs it), and when it
//! last wrote. Every read goes to the replica as a [`Request::Session`] whose floor is what the
//! guarantee needs:
//!
//! - `read-your-writes`: the session's newest write. With `read_your_writes = "wait"` (the
//!   default) a follower waits until it holds it; with `"leader"`, every read goes to the
//!   leader for `read_your_writes_leader_ms` after the session's last write (the lecture's
//!   second variant), and waits as above after that. The token keeps no keys (it would grow
//!   with them), so reads of keys the session never wrote wait too.
//! - `monotonic-reads`: the newest state the session read (its writes' states included).
//! - `consistent-prefix`: the same floor. A replica serves only prefixes of the leader's log,
//!   so a session never sees an effect before its cause as long as it never reads an older
//!   prefix than one it saw.
//! - `all`: every floor at once.
//!
//! A replica behind the floor waits up to `session_wait_ms`, then answers `-TRYAGAIN` naming
//! the gap and the leader (see `replikv_core::single_leader::session`).
//!
//! # The token
//!
//! `REPLIKV.SESSION` returns `rkv1-CLUSTER-WLSN-WEPOCH-RLSN-REPOCH-WMS`, lowercase hex
//! fields: a fingerprint of the cluster's name, the written and read positions (record and
//! epoch), and the wall-clock milliseconds of the last write. It is at most
//! [`TOKEN_BYTES_MAX`] bytes; `REPLIKV.SESSION RESUME token` takes the newer of each position
//! and refuses a token of another cluster (in a multi-leader cluster, of another datacenter:
//! positions are of each datacenter's own log) or form. `REPLIKV.SESSION RESET` forgets the
//! positions: for a session whose positions an `async` failover cut, which every replica
//! refuses from then on.

use super::{Guarantee, ReadFrom, ReadYourWrites, Receipt, Session};
use replikv_core::kv::{Reply, Request, SessionPosition};

/// The longest token: seven fields of at most 16 hex digits and their dashes.
pub const TOKEN_BYTES_MAX: usize = 128;

/// A log replica's receipt: who answered, from which position, how stale it may be, and how
/// the guarantee was met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogReceipt {
    /// The position of the leader's history the answer reflects.
    pub at: SessionPosition,
    /// Answered by the leader (this node, or the leader a follower forwarded it to).
    pub by_leader: bool,
    /// How long the replica waited for the session's position, in ms.
    pub waited_ms: u64,
    /// Records of the leader's log the replica knew of and had not applied.
    pub behind_records: u64,
    /// Ms since the replica last held all it had been told of (`u64::MAX`: never).
    pub behind_ms: u64,
    /// The guarantee in force.
    pub guarantee: Guarantee,
}

impl LogReceipt {
    /// How the guarantee was met.
    fn met_by(&self) -> String {
        match (self.guarantee, self.waited_ms, self.by_leader) {
            (Guarantee::None, ..) => "no guarantee asked".to_string(),
            (_, 0, true) => "the leader".to_string(),
            (_, 0, false) => "held already".to_string(),
            (_, ms, _) => format!("waiting {ms} ms"),
        }
    }

    /// Its fields, names first, as a receipt shows them (the node the client asked is `node`).
    pub fn fields(&self, node: &str) -> Vec<(&'static str, String)> {
        let behind_ms = match self.behind_ms {
            u64::MAX => "unknown".to_string(),
            ms => ms.to_string(),
        };
        vec![
            ("node", node.to_string()),
            ("role", if self.by_leader { "leader" } else { "follower" }.to_string()),
            ("at", format!("{}@{}", self.at.lsn, self.at.epoch)),
            ("behind_records", self.behind_records.to_string()),
            ("behind_ms", behind_ms),
            ("guarantee", self.guarantee.to_string()),
            ("met_by", self.met_by()),
        ]
    }
}

/// What a log session has seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Positions {
    written: SessionPosition,
    read: SessionPosition,
    /// Wall-clock ms of its last write (0: none).
    last_write_ms: u64,
}

impl Positions {
    /// `request` (a write, or a read of keys) in `session`, positioned.
    pub(super) fn wrap(&self, session: &Session, request: Request, write: bool, now_ms: u64) -> Request {
        let mut after = SessionPosition::default();
        let mut on_leader = false;
        let guarantee = session.guarantee;
        if !write {
            on_leader = session.read_from == ReadFrom::Leader;
            if guarantee.own_writes() {
                after = after.max(self.written);
                let recent = now_ms.saturating_sub(self.last_write_ms) < session.settings.leader_ms;
                if session.settings.read_your_writes == ReadYourWrites::Leader && self.last_write_ms > 0 && recent {
                    on_leader = true;
                }
            }
            if guarantee.monotonic() {
                after = newer(after, self.read);
            }
            if guarantee == Guarantee::None && !on_leader && !session.receipts {
                return request;
            }
        }
        Request::Session { after, wait_ms: session.settings.wait_ms, on_leader, request: Box::new(request) }
    }

    /// Keeps the position of a positioned reply (unless it is an error): the client's reply
    /// and the answer's receipt.
    pub(super) fn observe(
        &mut self,
        reply: Reply,
        write: bool,
        guarantee: Guarantee,
        now_ms: u64,
    ) -> (Reply, Option<Receipt>) {
        let Reply::InSession { at, by_leader, waited_ms, behind_records, behind_ms, reply } = reply else {
            return (reply, None); // refused before any replica took it in the session
        };
        let receipt = LogReceipt { at, by_leader, waited_ms, behind_records, behind_ms, guarantee };
        if !matches!(*reply, Reply::Error(_)) {
            if write {
                self.written = newer(self.written, at);
                self.last_write_ms = now_ms;
            }
            // A write's reply may carry what it read too (INCR, SET ... GET, EXEC).
            if guarantee.monotonic() {
                self.read = newer(self.read, at);
            }
        }
        (*reply, Some(Receipt::Log(receipt)))
    }

    /// The token (see the module documentation).
    pub(super) fn token(&self, cluster: u32) -> String {
        format!(
            "rkv1-{:08x}-{:x}-{:x}-{:x}-{:x}-{:x}",
            cluster, self.written.lsn, self.written.epoch, self.read.lsn, self.read.epoch, self.last_write_ms
        )
    }

    /// Adopts `token`: the newer of each position. Refused: another cluster's, or a malformed one.
    pub(super) fn resume(&mut self, token: &str, this_cluster: u32) -> Result<(), String> {
        if token.starts_with(&format!("{}-", super::contexts::TOKEN_PREFIX)) {
            return Err(
                "this session token is a leaderless cluster's: positions of a leader's log are not in it".into()
            );
        }
        if token.len() > TOKEN_BYTES_MAX {
            return Err(format!("a session token is at most {TOKEN_BYTES_MAX} bytes, this one {}", token.len()));
        }
        let fields: Vec<&str> = token.split('-').collect();
        let malformed = || format!("{token:?} is not a session token (REPLIKV.SESSION gives one: rkv1-...)");
        let [version, cluster, wl, we, rl, re, wms] = fields[..] else { return Err(malformed()) };
        if version != "rkv1" {
            return Err(malformed());
        }
        if fields.iter().skip(1).any(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(malformed());
        }
        let hex = |s: &str| u64::from_str_radix(s, 16).map_err(|_| malformed());
        let cluster = u32::from_str_radix(cluster, 16).map_err(|_| malformed())?;
        if cluster != this_cluster {
            return Err(format!(
                "this session token is of another cluster (fingerprint {cluster:08x}, this one's {this_cluster:08x})"
            ));
        }
        let written = SessionPosition { lsn: hex(wl)?, epoch: hex(we)? };
        let read = SessionPosition { lsn: hex(rl)?, epoch: hex(re)? };
        self.written = newer(self.written, written);
        self.read = newer(self.read, read);
        self.last_write_ms = self.last_write_ms.max(hex(wms)?);
        Ok(())
    }
}

/// The newer of two positions: the later record (at the same record, the newer epoch's,
/// which a failover wrote over the older).
fn newer(a: SessionPosition, b: SessionPosition) -> SessionPosition {
    if (b.lsn, b.epoch) > (a.lsn, a.epoch) {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;
    use bytes::Bytes;

    const WRITE: Asked = Asked { write: true, key: None };
    const READ: Asked = Asked { write: false, key: None };

    fn settings() -> SessionSettings {
        SessionSettings {
            guarantee: Guarantee::None,
            wait_ms: 1_000,
            read_your_writes: ReadYourWrites::Wait,
            leader_ms: 5_000,
            cluster: cluster_fingerprint("demo"),
        }
    }

    fn get() -> Request {
        Request::Get { key: Bytes::from_static(b"k") }
    }

    fn positioned(lsn: u64, reply: Reply) -> Reply {
        Reply::InSession {
            at: SessionPosition { lsn, epoch: 1 },
            by_leader: true,
            waited_ms: 0,
            behind_records: 0,
            behind_ms: 0,
            reply: Box::new(reply),
        }
    }

    fn floor(request: &Request) -> Option<(u64, bool)> {
        match request {
            Request::Session { after, on_leader, .. } => Some((after.lsn, *on_leader)),
            _ => None,
        }
    }

    #[test]
    fn each_guarantee_sets_the_floor_it_needs() {
        let mut s = Session::new(settings());
        let set = Request::Set {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            condition: replikv_core::kv::SetCondition::Always,
            get: false,
            expiry: replikv_core::kv::Expiry::Clear,
        };
        assert_eq!(floor(&s.wrap(set.clone(), 10)), None, "no guarantee: passed through, untouched");
        assert_eq!(floor(&s.wrap(get(), 10)), None, "no guarantee: a plain read");
        s.guarantee = Guarantee::ReadYourWrites;
        assert_eq!(floor(&s.wrap(set.clone(), 10)), Some((0, false)), "a write is positioned");
        assert_eq!(s.observe(positioned(7, Reply::Ok), &WRITE, 10), Reply::Ok);
        assert_eq!(floor(&s.wrap(get(), 10)), Some((7, false)));
        s.guarantee = Guarantee::MonotonicReads;
        assert_eq!(floor(&s.wrap(get(), 10)), Some((0, false)), "nothing read yet");
        s.observe(positioned(9, Reply::Nil), &READ, 10);
        s.observe(positioned(4, Reply::Nil), &READ, 10);
        assert_eq!(floor(&s.wrap(get(), 10)), Some((9, false)), "never back");
        s.observe(positioned(12, Reply::Error("ERR x".into())), &READ, 10);
        assert_eq!(floor(&s.wrap(get(), 10)), Some((9, false)), "an error moves nothing");
        s.guarantee = Guarantee::All;
        s.observe(positioned(20, Reply::Ok), &WRITE, 10);
        assert_eq!(floor(&s.wrap(get(), 10)), Some((20, false)));
        s.read_from = ReadFrom::Leader;
        s.guarantee = Guarantee::None;
        assert_eq!(floor(&s.wrap(get(), 10)), Some((0, true)));
    }

    #[test]
    fn node_commands_are_not_reads_writes_never_go_by_readfrom_and_a_write_raises_the_read_floor() {
        let mut s = Session::new(settings());
        s.guarantee = Guarantee::All;
        s.read_from = ReadFrom::Leader;
        let failover = Request::Failover { to: None, force: false, abort: false, timeout_ms: 0 };
        assert_eq!(floor(&s.wrap(failover, 10)), None, "FAILOVER is about this node, not the keys");
        assert_eq!(floor(&s.wrap(Request::Log { after: 0, count: 1, changes: false, prefix: Bytes::new() }, 10)), None);
        let incr = Request::IncrBy { key: Bytes::from_static(b"k"), delta: 1 };
        assert_eq!(floor(&s.wrap(incr, 10)), Some((0, false)), "READFROM leader moves reads only");
        s.guarantee = Guarantee::MonotonicReads;
        s.observe(positioned(5, Reply::Int(1)), &WRITE, 10);
        assert_eq!(floor(&s.wrap(get(), 10)), Some((5, true)), "an INCR's reply showed state 5");
        // At one record, the newer epoch's position wins; RESET forgets every position.
        s.observe(
            Reply::InSession {
                at: SessionPosition { lsn: 5, epoch: 2 },
                by_leader: true,
                waited_ms: 0,
                behind_records: 0,
                behind_ms: 0,
                reply: Box::new(Reply::Nil),
            },
            &READ,
            10,
        );
        assert!(s.token().contains("-5-2-"), "{}", s.token());
        s.reset();
        assert_eq!(floor(&s.wrap(get(), 10)), Some((0, true)));
    }

    #[test]
    fn read_your_writes_on_the_leader_lasts_its_time_after_each_write() {
        let mut s = Session::new(SessionSettings { read_your_writes: ReadYourWrites::Leader, ..settings() });
        s.guarantee = Guarantee::ReadYourWrites;
        assert_eq!(floor(&s.wrap(get(), 1_000)), Some((0, false)), "no write yet");
        s.observe(positioned(3, Reply::Ok), &WRITE, 1_000);
        assert_eq!(floor(&s.wrap(get(), 5_999)), Some((3, true)));
        assert_eq!(floor(&s.wrap(get(), 6_000)), Some((3, false)), "then it waits where it reads");
    }

    #[test]
    fn a_token_carries_the_session_and_refuses_another_cluster() {
        let mut s = Session::new(settings());
        s.guarantee = Guarantee::All;
        s.observe(positioned(0x2a, Reply::Ok), &WRITE, 77);
        s.observe(positioned(0x30, Reply::Nil), &READ, 78);
        let token = s.token();
        assert!(token.len() <= TOKEN_BYTES_MAX && token.starts_with("rkv1-"), "{token}");
        let mut other = Session::new(settings());
        other.guarantee = Guarantee::All;
        other.resume(&token).unwrap();
        assert_eq!(other.token(), token);
        assert_eq!(floor(&other.wrap(get(), 100)), Some((0x30, false)));
        let mut elsewhere = Session::new(SessionSettings { cluster: cluster_fingerprint("other"), ..settings() });
        assert!(elsewhere.resume(&token).unwrap_err().contains("another cluster"));
        for bad in ["", "rkv1", "rkv2-0-0-0-0-0-0", "rkv1-zz-0-0-0-0-0", "rkv1-+1-0-0-0-0-0", &"a".repeat(200)] {
            assert!(elsewhere.resume(bad).is_err(), "{bad}");
        }
        // A leaderless token is named as one, however long.
        let leaderless = format!("rkv1l-0-0-{}", "1~2.3~=-".repeat(40));
        assert!(elsewhere.resume(&leaderless).unwrap_err().contains("a leaderless cluster's"));
    }
}
