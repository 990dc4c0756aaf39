//! A client connection's state in the key-value layer: the database it selected, and its
//! transaction (`MULTI` / `EXEC` / `DISCARD` / `WATCH` / `UNWATCH`), with Redis's semantics
//! and error texts.
//!
//! A front end (the RESP connection, a golden script) keeps one [`Session`] per client and
//! hands it every command first. The session answers the transaction commands and `SELECT`
//! itself, queues commands between `MULTI` and `EXEC`, and wraps every other request in the
//! selected database ([`Request::in_db`]). What reaches the replica is ordinary requests:
//!
//! - `WATCH k...` becomes [`Request::Watch`]: the replica answers with the keys' states
//!   ([`Reply::Watched`]), which the session keeps ([`Session::watched`]) and the client sees
//!   as `OK`.
//! - `EXEC` becomes one [`Request::Exec`] holding the queued requests and the watched keys:
//!   the store executes them in order within one step, so nothing runs between them, and
//!   their writes are one request of the replication log, which every replica applies whole.
//!   If a watched key changed since its WATCH (a write by anyone, an expiry, a SWAPDB), the
//!   store executes nothing and EXEC answers a null array.
//!
//! While queuing, a command with wrong arguments, an unknown command, or one that cannot run
//! inside a transaction is refused at once and marks the transaction failed: EXEC then
//! answers `EXECABORT` and executes nothing, as Redis does. Commands the front end answers
//! itself (`PING`, `INFO`, ...) are queued as *local* entries, which the front end runs when
//! it assembles EXEC's reply ([`ExecPlan`]).
//!
//! CAVEATS
//! - WATCH compares versions, so a key that had expired before WATCH and is then deleted by
//!   expiry aborts the EXEC (Redis does not); a SWAPDB of any two databases aborts every
//!   transaction watching keys (Redis: only those watching keys in the swapped databases).
//!   Both only abort more often; a client retries an aborted transaction anyway.
//! - Local entries run when EXEC's reply is assembled, after the queued requests: an `INFO`
//!   inside a transaction sees the node after it.
//! - Errors inside an executed transaction do not undo its other writes, as in Redis.
//! - A command the front end answers itself (`CLIENT`, `CONFIG`, `ECHO`, ...) is queued
//!   without an arity check, so its wrong arguments show in EXEC's reply instead of aborting
//!   the transaction, as Redis's would.
//! - The queue is bounded by its arguments, not by what its commands write: a transaction of
//!   many `SETRANGE`s at large offsets makes one request of as many large values, which the
//!   leader holds in memory at once. Its reply is not bounded either: one forwarded by a
//!   follower over a peer frame (64 MiB) is lost, and the client is told the transaction may
//!   or may not have been applied.

use super::command::parse_named;
use super::databases::DB_MAP_KEY;
use super::request::{Reply, Request, Watched};
use bytes::Bytes;

/// Commands one transaction queues at most; past it the transaction fails.
pub const MULTI_QUEUED_MAX: usize = 100_000;

/// Bytes of arguments one transaction queues at most, so that it fits in one peer frame when a
/// follower forwards it to its leader (32 MiB; the server checks the sum against its frame).
pub const MULTI_QUEUED_BYTES_MAX: usize = 32 * 1024 * 1024;

/// Keys one connection watches at most.
pub const WATCHED_KEYS_MAX: usize = 10_000;

/// Bytes of keys one connection watches at most: the watched keys travel with the EXEC, so
/// they count toward what a follower forwards in one frame.
pub const WATCHED_BYTES_MAX: usize = 1024 * 1024;

/// Bytes an EXEC's request may take encoded beyond its arguments and watched keys: a few per
/// queued request (its variant, a database).
pub const EXEC_OVERHEAD_BYTES_MAX: usize = 64 * MULTI_QUEUED_MAX;

/// What each argument or watched key counts toward its bound beyond its own bytes: its length
/// when encoded, and a watched key's version, so that many empty arguments still count.
pub const ARG_OVERHEAD_BYTES: usize = 32;

/// What the front end does with a command.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Answer the client with this reply.
    Reply(Reply),
    /// A command the front end answers itself, outside a transaction: do so.
    Local,
    /// Send this request to the replica and answer the client with its reply.
    Call(Request),
    /// WATCH: send this request to the replica and hand its reply to [`Session::watched`]
    /// before the next WATCH, UNWATCH, DISCARD or EXEC (they read or clear what is watched).
    Watch(Request),
    /// EXEC: send this request to the replica and assemble the reply with
    /// [`Session::executed`].
    Exec(Request, ExecPlan),
}

/// How EXEC's reply is put together from the store's array and the local entries.
#[derive(Debug, Default, PartialEq)]
pub struct ExecPlan {
    /// One per queued command, in order.
    entries: Vec<Entry>,
    /// The connection's database once the transaction ran (SELECT inside it holds after it).
    db: u32,
}

/// One queued command's place in EXEC's reply.
#[derive(Debug, PartialEq)]
enum Entry {
    /// The next reply of the store's array.
    Stored,
    /// A command the front end runs itself, with its arguments.
    Local(Vec<Bytes>),
    /// A reply known when the command was queued (SELECT, UNWATCH).
    Fixed(Reply),
}

/// One piece of EXEC's reply, in order.
#[derive(Debug, PartialEq)]
pub enum ExecItem {
    /// The reply of a queued request.
    Reply(Reply),
    /// Run this command as the front end would outside a transaction, and use its answer.
    Local(Vec<Bytes>),
}

impl ExecPlan {
    /// The connection's database once the transaction has run: when it differs from the one
    /// selected now, the front end must hand EXEC's reply back before the next command.
    pub fn db(&self) -> u32 {
        self.db
    }

    /// EXEC's reply from the store's: `Ok` with the items in order, or `Err` with the whole
    /// reply when the store executed nothing (a null array when a watched key changed, an
    /// error such as READONLY or a lost leadership).
    fn assemble(self, reply: Reply) -> Result<Vec<ExecItem>, Reply> {
        let Reply::Array(stored) = reply else { return Err(reply) };
        let mut stored = stored.into_iter();
        let mut items = Vec::with_capacity(self.entries.len());
        for entry in self.entries {
            items.push(match entry {
                Entry::Stored => ExecItem::Reply(stored.next().expect("the store answers every queued request")),
                Entry::Local(args) => ExecItem::Local(args),
                Entry::Fixed(reply) => ExecItem::Reply(reply),
            });
        }
        assert!(stored.next().is_none(), "the store answered more requests than were queued");
        Ok(items)
    }
}

/// A transaction being queued.
#[derive(Debug)]
struct Multi {
    /// The requests for the store, in order.
    requests: Vec<Request>,
    /// Every queued command's place in the reply.
    plan: ExecPlan,
    /// The database queued requests run in (SELECT inside MULTI changes it for the rest).
    db: u32,
    /// Bytes of arguments queued.
    bytes: usize,
    /// True once a command was refused: EXEC answers EXECABORT.
    failed: bool,
}

/// One connection's database and transaction state.
#[derive(Debug)]
pub struct Session {
    /// The selected database.
    db: u32,
    /// Databases a client may select.
    databases: u32,
    /// The transaction being queued, after MULTI.
    multi: Option<Multi>,
    /// The watched keys, as WATCH saw them.
    watched: Watching,
}

/// The watched keys, with running totals so that each WATCH costs only its own keys.
#[derive(Debug, Default)]
struct Watching {
    /// As WATCH saw them, with one entry for the database map (the first).
    keys: Vec<Watched>,
    /// Their bytes as they count toward [`WATCHED_BYTES_MAX`].
    bytes: usize,
    /// True once the database map's entry is held.
    map: bool,
}

impl Watching {
    /// Keeps `key`, unless it is a second entry for the database map.
    fn push(&mut self, key: Watched) {
        if key.key == DB_MAP_KEY {
            if self.map {
                return;
            }
            self.map = true;
        }
        self.bytes += key.key.len() + ARG_OVERHEAD_BYTES;
        self.keys.push(key);
    }

    /// Client keys watched (the map's entry not counted).
    fn count(&self) -> usize {
        self.keys.len() - usize::from(self.map)
    }

    /// Forgets every key, handing them over.
    fn take(&mut self) -> Vec<Watched> {
        let keys = std::mem::take(&mut self.keys);
        *self = Watching::default();
        keys
    }
}

impl Session {
    /// A session in database 0 of `databases`.
    pub fn new(databases: u32) -> Session {
        Session { db: 0, databases, multi: None, watched: Watching::default() }
    }

    /// The selected database.
    pub fn db(&self) -> u32 {
        self.db
    }

    /// Commands queued since MULTI; `None` outside a transaction.
    pub fn queued(&self) -> Option<usize> {
        self.multi.as_ref().map(|m| m.plan.entries.len())
    }

    /// Keys watched (the database map's entry not counted).
    pub fn watching(&self) -> usize {
        self.watched.count()
    }

    /// EXEC's reply, from the store's reply to the [`Action::Exec`] request and its plan: `Ok`
    /// with the items in order, or `Err` with the whole reply when the store executed nothing
    /// (a null array when a watched key changed; an error such as READONLY or a lost
    /// leadership). A SELECT inside the transaction holds afterwards only if it ran.
    pub fn executed(&mut self, plan: ExecPlan, reply: Reply) -> Result<Vec<ExecItem>, Reply> {
        let db = plan.db;
        let items = plan.assemble(reply)?;
        self.db = db;
        Ok(items)
    }

    /// Takes a command: `name` is `args[0]` in lowercase; `local` says whether the front end
    /// answers it itself.
    pub fn command(&mut self, name: &str, args: &[Bytes], local: bool) -> Action {
        let arity_ok = match name {
            "multi" | "exec" | "discard" => args.len() == 1,
            "watch" => args.len() >= 2,
            "select" => args.len() == 2,
            _ => true,
        };
        if let (false, Some(multi)) = (arity_ok, &mut self.multi) {
            // Redis checks arity before anything else, and flags the transaction.
            return Action::Reply(refuse(multi, arity(name)));
        }
        match name {
            "multi" => return Action::Reply(self.multi(args)),
            "exec" => return self.exec(args),
            "discard" => return Action::Reply(self.discard(args)),
            "watch" if self.multi.is_some() => return Action::Reply(Reply::err("WATCH inside MULTI is not allowed")),
            _ => {}
        }
        if self.multi.is_some() {
            return Action::Reply(self.queue(name, args, local));
        }
        match name {
            "select" => Action::Reply(self.select(args).map_or_else(
                |e| e,
                |db| {
                    self.db = db;
                    Reply::Ok
                },
            )),
            "unwatch" if args.len() == 1 => {
                self.watched.take();
                Action::Reply(Reply::Ok)
            }
            "unwatch" => Action::Reply(arity("unwatch")),
            _ if local => Action::Local,
            _ => match parse_named(name, args) {
                None => Action::Reply(Reply::Error(unknown_command(args))),
                Some(Err(reply)) => Action::Reply(reply),
                Some(Ok(request @ Request::Watch { .. })) => {
                    // The front end hands WATCH's answers back before the next WATCH, so that
                    // these counts hold everything watched.
                    let bytes = self.watched.bytes + args_bytes(&args[1..]);
                    if self.watched.count() + args.len() - 1 > WATCHED_KEYS_MAX || bytes > WATCHED_BYTES_MAX {
                        return Action::Reply(Reply::err(format!(
                            "too many watched keys: this connection may watch {WATCHED_KEYS_MAX} keys and \
                             {WATCHED_BYTES_MAX} bytes of keys at most"
                        )));
                    }
                    Action::Watch(request.in_db(self.db))
                }
                Some(Ok(request)) => Action::Call(request.in_db(self.db)),
            },
        }
    }

    /// WATCH's reply from the replica: the keys are kept and the client gets `OK`; an error
    /// passes through and nothing is watched.
    pub fn watched(&mut self, reply: Reply) -> Reply {
        match reply {
            Reply::Watched(keys) => {
                for key in keys {
                    // One entry for the database map: the first, which the most changes since.
                    self.watched.push(key);
                }
                Reply::Ok
            }
            other => other,
        }
    }

    fn multi(&mut self, args: &[Bytes]) -> Reply {
        if args.len() != 1 {
            return arity("multi");
        }
        if self.multi.is_some() {
            return Reply::err("MULTI calls can not be nested");
        }
        let db = self.db;
        self.multi = Some(Multi { requests: Vec::new(), plan: ExecPlan::default(), db, bytes: 0, failed: false });
        Reply::Ok
    }

    fn discard(&mut self, args: &[Bytes]) -> Reply {
        if args.len() != 1 {
            return arity("discard");
        }
        if self.multi.take().is_none() {
            return Reply::err("DISCARD without MULTI");
        }
        self.watched.take();
        Reply::Ok
    }

    fn exec(&mut self, args: &[Bytes]) -> Action {
        if args.len() != 1 {
            return Action::Reply(arity("exec"));
        }
        let Some(multi) = self.multi.take() else { return Action::Reply(Reply::err("EXEC without MULTI")) };
        let watched = self.watched.take();
        if multi.failed {
            return Action::Reply(Reply::Error(
                "EXECABORT Transaction discarded because of previous errors.".to_string(),
            ));
        }
        let plan = ExecPlan { db: multi.db, ..multi.plan };
        Action::Exec(Request::Exec { requests: multi.requests, watched }, plan)
    }

    /// Queues a command after MULTI; its immediate answer.
    fn queue(&mut self, name: &str, args: &[Bytes], local: bool) -> Reply {
        let bytes = args_bytes(args);
        let databases = self.databases;
        let selected = (name == "select").then(|| select_index(args, databases));
        let multi = self.multi.as_mut().expect("queue is called inside MULTI");
        if multi.plan.entries.len() >= MULTI_QUEUED_MAX || multi.bytes + bytes > MULTI_QUEUED_BYTES_MAX {
            multi.failed = true;
            return Reply::err(format!(
                "transaction too large: at most {MULTI_QUEUED_MAX} commands and {MULTI_QUEUED_BYTES_MAX} bytes of \
                 arguments"
            ));
        }
        let entry = match (name, selected) {
            (_, Some(Ok(db))) => {
                multi.db = db;
                Entry::Fixed(Reply::Ok)
            }
            // Redis checks SELECT's index when it runs; it is known now, so answered in place.
            (_, Some(Err(reply))) => Entry::Fixed(reply),
            ("unwatch", None) if args.len() == 1 => Entry::Fixed(Reply::Ok),
            ("unwatch", None) => return refuse(multi, arity("unwatch")),
            _ if local => Entry::Local(args.to_vec()),
            _ => match parse_named(name, args) {
                None => return refuse(multi, Reply::Error(unknown_command(args))),
                Some(Err(reply)) => return refuse(multi, reply),
                Some(Ok(
                    Request::Wait { .. }
                    | Request::Failover { .. }
                    | Request::Digest { .. }
                    | Request::Log { .. }
                    | Request::Watch { .. },
                )) => return refuse(multi, Reply::err("Command not allowed inside a transaction")),
                Some(Ok(request)) => {
                    multi.requests.push(request.in_db(multi.db));
                    Entry::Stored
                }
            },
        };
        multi.bytes += bytes;
        multi.plan.entries.push(entry);
        Reply::Status("QUEUED")
    }

    fn select(&self, args: &[Bytes]) -> Result<u32, Reply> {
        select_index(args, self.databases)
    }
}

/// SELECT's database, or its error.
fn select_index(args: &[Bytes], databases: u32) -> Result<u32, Reply> {
    let [_, index] = args else { return Err(arity("select")) };
    let index = super::number::parse_int(index).ok_or_else(|| Reply::err("value is not an integer or out of range"))?;
    u32::try_from(index).ok().filter(|db| *db < databases).ok_or_else(|| Reply::err("DB index is out of range"))
}

/// What `args` count toward a bound of bytes: their own, and [`ARG_OVERHEAD_BYTES`] each.
fn args_bytes(args: &[Bytes]) -> usize {
    args.iter().map(|a| a.len() + ARG_OVERHEAD_BYTES).sum()
}

/// Marks the transaction failed and answers `reply`.
fn refuse(multi: &mut Multi, reply: Reply) -> Reply {
    multi.failed = true;
    reply
}

fn arity(name: &str) -> Reply {
    Reply::err(format!("wrong number of arguments for '{name}' command"))
}

/// Redis 7's text for an unknown command, with its first arguments quoted.
pub fn unknown_command(args: &[Bytes]) -> String {
    /// Bytes of arguments quoted at most, as Redis.
    const QUOTED_BYTES_MAX: usize = 128;
    let cut = |arg: &[u8]| String::from_utf8_lossy(&arg[..arg.len().min(QUOTED_BYTES_MAX)]).into_owned();
    let mut text = format!("ERR unknown command '{}', with args beginning with: ", cut(&args[0]));
    let mut quoted = String::new();
    for arg in &args[1..] {
        if quoted.len() >= QUOTED_BYTES_MAX {
            break;
        }
        quoted.push_str(&format!("'{}' ", cut(arg)));
    }
    text.push_str(&quoted);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<Bytes> {
        line.split(' ').map(|a| Bytes::copy_from_slice(a.as_bytes())).collect()
    }

    fn say(session: &mut Session, line: &str) -> Action {
        let args = args(line);
        let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
        session.command(&name, &args, matches!(name.as_str(), "ping" | "info"))
    }

    #[test]
    fn a_transaction_past_its_limit_fails_whole() {
        let mut s = Session::new(16);
        assert_eq!(say(&mut s, "MULTI"), Action::Reply(Reply::Ok));
        for _ in 0..MULTI_QUEUED_MAX {
            assert_eq!(say(&mut s, "SET k v"), Action::Reply(Reply::Status("QUEUED")));
        }
        let Action::Reply(Reply::Error(e)) = say(&mut s, "SET k v") else { panic!("refused") };
        assert!(e.contains("transaction too large"), "{e}");
        let Action::Reply(Reply::Error(e)) = say(&mut s, "EXEC") else { panic!("aborted") };
        assert!(e.starts_with("EXECABORT"), "{e}");
        assert_eq!(s.queued(), None, "the transaction is over");
        let big = format!("SET k {}", "x".repeat(MULTI_QUEUED_BYTES_MAX));
        assert_eq!(say(&mut s, "MULTI"), Action::Reply(Reply::Ok));
        assert!(matches!(say(&mut s, &big), Action::Reply(Reply::Error(_))), "too many bytes");
        // Empty arguments count too: each costs its encoding.
        let mut s = Session::new(16);
        say(&mut s, "MULTI");
        let empties: Vec<Bytes> = std::iter::once(Bytes::from("MSET"))
            .chain(std::iter::repeat_n(Bytes::new(), MULTI_QUEUED_BYTES_MAX / ARG_OVERHEAD_BYTES))
            .collect();
        let refused = s.command("mset", &empties, false);
        assert!(matches!(refused, Action::Reply(Reply::Error(ref e)) if e.contains("too large")), "{refused:?}");
    }

    #[test]
    fn exec_places_local_and_fixed_replies_among_the_stored_ones() {
        let mut s = Session::new(16);
        say(&mut s, "MULTI");
        for line in ["PING", "SET k v", "SELECT 2", "UNWATCH", "GET k", "INFO"] {
            assert_eq!(say(&mut s, line), Action::Reply(Reply::Status("QUEUED")), "{line}");
        }
        let Action::Exec(Request::Exec { requests, watched }, plan) = say(&mut s, "EXEC") else { panic!("exec") };
        assert!(watched.is_empty());
        assert_eq!(requests.len(), 2);
        assert!(matches!(&requests[1], Request::InDb { db: 2, .. }), "GET after SELECT 2: {:?}", requests[1]);
        assert_eq!(s.db(), 0, "not before the transaction ran");
        let items = s.executed(plan, Reply::Array(vec![Reply::Ok, Reply::Nil])).unwrap();
        assert_eq!(s.db(), 2, "SELECT inside the transaction holds after it");
        let want = vec![
            ExecItem::Local(args("PING")),
            ExecItem::Reply(Reply::Ok),
            ExecItem::Reply(Reply::Ok),
            ExecItem::Reply(Reply::Ok),
            ExecItem::Reply(Reply::Nil),
            ExecItem::Local(args("INFO")),
        ];
        assert_eq!(items, want);
        // An aborted transaction's SELECT does not hold.
        say(&mut s, "MULTI");
        say(&mut s, "SELECT 5");
        let Action::Exec(_, plan) = say(&mut s, "EXEC") else { panic!("exec") };
        assert_eq!(s.executed(plan, Reply::NullArray), Err(Reply::NullArray));
        assert_eq!(s.db(), 2, "still the database before the aborted transaction");
    }

    #[test]
    fn the_transaction_commands_with_wrong_arity_inside_multi_abort_it() {
        for line in ["MULTI x", "DISCARD x", "WATCH", "EXEC x", "SELECT"] {
            let mut s = Session::new(16);
            say(&mut s, "MULTI");
            let Action::Reply(Reply::Error(e)) = say(&mut s, line) else { panic!("{line}: an error") };
            assert!(e.contains("wrong number of arguments"), "{line}: {e}");
            let Action::Reply(Reply::Error(e)) = say(&mut s, "EXEC") else { panic!("{line}: aborted") };
            assert!(e.starts_with("EXECABORT"), "{line}: {e}");
        }
        let mut s = Session::new(16);
        say(&mut s, "MULTI");
        say(&mut s, "WATCH k");
        assert!(matches!(say(&mut s, "EXEC"), Action::Exec(..)), "WATCH inside MULTI is refused, not a queueing error");
    }

    #[test]
    fn watched_keys_are_bounded_and_forgotten_by_exec() {
        let mut s = Session::new(16);
        let Action::Watch(request) = say(&mut s, "WATCH a b") else { panic!("a call") };
        assert_eq!(request, Request::Watch { keys: vec![Bytes::from("a"), Bytes::from("b")] });
        let seen = Watched { key: Bytes::from("a"), version: None, live: false };
        assert_eq!(s.watched(Reply::Watched(vec![seen.clone(); 2])), Reply::Ok);
        assert_eq!(s.watching(), 2);
        // The database map's entry comes with every WATCH; it is kept once and not counted.
        let map = Watched { key: Bytes::from_static(DB_MAP_KEY), version: None, live: false };
        s.watched(Reply::Watched(vec![seen.clone(), map.clone()]));
        s.watched(Reply::Watched(vec![map]));
        assert_eq!((s.watching(), s.watched.keys.len()), (3, 4));
        s.watched.take();
        for _ in 0..WATCHED_KEYS_MAX {
            s.watched.push(seen.clone());
        }
        assert!(matches!(say(&mut s, "WATCH c"), Action::Reply(Reply::Error(_))), "past the limit");
        say(&mut s, "MULTI");
        let Action::Exec(Request::Exec { watched, .. }, _) = say(&mut s, "EXEC") else { panic!("exec") };
        assert_eq!(watched.len(), WATCHED_KEYS_MAX, "EXEC carries them");
        assert_eq!(s.watching(), 0, "and forgets them");
    }
}
