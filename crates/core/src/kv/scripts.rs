//! Lua scripts: `EVAL`, `EVALSHA`, `SCRIPT LOAD|EXISTS|FLUSH`, as Redis has them, run by a
//! vendored Lua 5.4 (the `mlua` crate).
//!
//! A script gets `KEYS` and `ARGV`, and `redis.call` / `redis.pcall` over the string
//! commands (in the caller's database), `redis.error_reply`, `redis.status_reply` and
//! `redis.sha1hex`. It runs on the node that executes the request, between two other requests,
//! so nothing interleaves with it; and it is *atomic*: when it raises an error (its own, or
//! one `redis.call` raised), runs over its budget or out of memory, every write it made is
//! undone and the client gets the error. (Redis keeps the writes a failed script made; replikv
//! does not.) A script that *returns* an error reply (`return redis.error_reply(...)`) has not
//! failed: its writes stay.
//!
//! Replies convert as Redis converts them: an integer is a Lua integer, a value a string,
//! nil is `false`, an array a table, a status `{ok = ...}`, an error `{err = ...}` (raised by
//! `redis.call`, returned by `redis.pcall`); back, a Lua number is an integer (truncated), a
//! string a value, `true` is 1, `false` and nil are nil, a table an array up to its first nil,
//! `{ok}` a status (`OK`) or a value, `{err}` an error.
//!
//! Determinism: the core reads no clock and draws no randomness of its own. `redis.call('TIME')`
//! answers the request's `now`, `math.random` is seeded from the node's generator (itself
//! seeded from the node id), and the libraries that reach the world (`os`, `io`, `package`,
//! `debug`, `dofile`, `loadfile`, `print`) are not loaded. The same script over the same
//! state and inputs writes the same values on any replica; a script that reads the time or
//! draws a number gives different answers on different replicas, which is what makes it
//! unsafe to replicate as a statement.
//!
//! Limits, each named: [`SCRIPT_INSTRUCTIONS_MAX`] Lua instructions (past it: Redis's `BUSY`
//! error, nothing applied), [`SCRIPT_MEMORY_BYTES_MAX`] of Lua memory (past it: `OOM`, nothing
//! applied), [`SCRIPT_UNDO_BYTES_MAX`] of old values kept to undo it (past it: an error,
//! nothing applied); [`SCRIPTS_CACHED_MAX`] scripts and [`SCRIPTS_CACHED_BYTES_MAX`] bytes in
//! a node's cache (`SCRIPT LOAD` past them is refused; `EVAL` then runs without caching).
//!
//! Not there: `pcall` and `xpcall` (they would catch the budget's error and run on;
//! `redis.pcall` catches a command's error), `load` and `string.dump` (bytecode is not
//! verified, and a chunk is loaded as text only), `math.randomseed`, `collectgarbage`.
//!
//! CAVEATS
//! - The budget counts Lua instructions, not the work inside a C function: a pattern match
//!   over a long string (`string.find` with a backtracking pattern) can hold the node past
//!   it. A time-based stop (Redis's SCRIPT KILL) needs a clock the core does not read.
//! - `pairs` visits a table's keys in an order that differs between runs (Lua seeds its
//!   string hashes at random), as does `tostring` of a table: a script whose effects depend
//!   on either is not deterministic.
//! - A failed script's keys that had no record are left with a tombstone of version 0 (the
//!   engine cannot forget a key): it reads, counts, watches and logs as no record, but it
//!   takes a place in the index until the key is written again.
//! - The script cache is each node's, in memory, as in Redis: after a restart or a failover,
//!   `EVALSHA` answers `NOSCRIPT` until the script is loaded again (or sent with `EVAL`).
//! - A script is a write: a follower refuses it (`READONLY`), even one that only reads.
//! - A script's source is compiled afresh at each call.

use super::command::parse_command;
use super::request::{Reply, Request};
use super::store::Store;
use crate::error::{Error, Result};
use crate::storage::Engine;
use bytes::Bytes;
use mlua::{Lua, LuaOptions, StdLib, Value};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Lua instructions one script may run; past it the script is stopped (`BUSY`) and nothing it
/// wrote is applied. About a second of work.
pub const SCRIPT_INSTRUCTIONS_MAX: u64 = 100_000_000;

/// Bytes of memory one script's Lua state may hold; past it the script is stopped (`OOM`).
pub const SCRIPT_MEMORY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Bytes of old values kept to undo one script's writes; past it the script is stopped and
/// undone.
pub const SCRIPT_UNDO_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Bytes of keys and new values one script may write; past it the script is stopped and
/// undone (what it wrote is held in memory until it is logged).
pub const SCRIPT_WRITES_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Levels of nested tables a script's result may have; past it the result is an error (a
/// table that holds itself has no end).
pub const SCRIPT_REPLY_DEPTH_MAX: usize = 64;

/// Scripts one node caches at most.
pub const SCRIPTS_CACHED_MAX: usize = 10_000;

/// Bytes of scripts one node caches at most.
pub const SCRIPTS_CACHED_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Instructions between two checks of the budget.
const BUDGET_CHECK_EVERY: u32 = 10_000;

/// The commands a script may not run: they wait, hold the connection, change its state, or
/// are scripts themselves.
/// FLUSHALL, FLUSHDB and SWAPDB rewrite whole databases, more than a script's undo may hold.
const REFUSED_IN_SCRIPTS: &[&str] = &[
    "eval", "evalsha", "script", "multi", "exec", "discard", "watch", "unwatch", "wait", "failover", "select",
    "flushall", "flushdb", "swapdb",
];

/// A node's cached scripts, by SHA1.
#[derive(Debug, Default)]
pub struct ScriptCache {
    scripts: BTreeMap<String, Bytes>,
    bytes: usize,
}

impl ScriptCache {
    /// Caches `script`; its SHA1, or the refusal when the cache is full.
    pub fn load(&mut self, script: &Bytes) -> std::result::Result<String, Reply> {
        let sha = sha1_hex(script);
        if self.scripts.contains_key(&sha) {
            return Ok(sha);
        }
        if self.scripts.len() >= SCRIPTS_CACHED_MAX || self.bytes + script.len() > SCRIPTS_CACHED_BYTES_MAX {
            return Err(Reply::err(format!(
                "the script cache is full ({SCRIPTS_CACHED_MAX} scripts or {SCRIPTS_CACHED_BYTES_MAX} bytes): \
                 SCRIPT FLUSH, or send the script with EVAL"
            )));
        }
        self.bytes += script.len();
        self.scripts.insert(sha.clone(), script.clone());
        Ok(sha)
    }

    /// The cached script whose SHA1 is `sha` (hex, any case).
    pub fn get(&self, sha: &[u8]) -> Option<Bytes> {
        let sha = String::from_utf8_lossy(sha).to_ascii_lowercase();
        self.scripts.get(&sha).cloned()
    }

    /// Forgets every script.
    pub fn flush(&mut self) {
        self.scripts.clear();
        self.bytes = 0;
    }
}

/// The SHA1 of `script`, in lowercase hex, as Redis names scripts.
pub fn sha1_hex(script: &[u8]) -> String {
    sha1_smol::Sha1::from(script).digest().to_string()
}

impl<E: Engine> Store<E> {
    /// SCRIPT LOAD, EXISTS and FLUSH.
    pub(super) fn script_command(&mut self, request: Request) -> Reply {
        match request {
            Request::ScriptLoad { script } => match self.scripts.load(&script) {
                Ok(sha) => Reply::Bulk(Bytes::from(sha)),
                Err(refusal) => refusal,
            },
            Request::ScriptExists { shas } => {
                Reply::Array(shas.iter().map(|sha| Reply::Int(i64::from(self.scripts.get(sha).is_some()))).collect())
            }
            Request::ScriptFlush => {
                self.scripts.flush();
                Reply::Ok
            }
            _ => Reply::err("not a SCRIPT command"),
        }
    }

    /// EVAL or EVALSHA in database `db` at `now_ms`: runs the script, and undoes what it wrote
    /// when it fails. An `Err` is an engine failure.
    pub(super) fn eval(&mut self, now_ms: u64, db: u32, request: Request) -> Result<Reply> {
        let (script, keys, args) = match request {
            Request::Eval { script, keys, args } => {
                // Cached as Redis caches what EVAL ran; a full cache runs it anyway.
                let _ = self.scripts.load(&script);
                (script, keys, args)
            }
            Request::EvalSha { sha, keys, args } => match self.scripts.get(&sha) {
                Some(script) => (script, keys, args),
                None => return Ok(Reply::Error("NOSCRIPT No matching script. Please use EVAL.".into())),
            },
            _ => return Ok(Reply::err("not a script")),
        };
        let seed = self.random.next();
        let undo = self.begin_undo();
        let (reply, failed) = match run(self, now_ms, db, &script, keys, args, seed) {
            Ok(outcome) => outcome,
            Err(error) => {
                // The node stops; undo what can be undone first, so that a restart's recovery
                // finds no write of the script newer than the log.
                let _ = self.rollback_undo(undo);
                return Err(error);
            }
        };
        if failed {
            self.rollback_undo(undo)?;
        } else {
            self.commit_undo(undo);
        }
        Ok(reply)
    }
}

/// Runs `script` over `store`: its reply, and whether it failed (its writes are to be undone);
/// an `Err` is an engine failure, which stops the node.
fn run<E: Engine>(
    store: &mut Store<E>,
    now_ms: u64,
    db: u32,
    script: &Bytes,
    keys: Vec<Bytes>,
    args: Vec<Bytes>,
    seed: u64,
) -> Result<(Reply, bool)> {
    let lua = match Lua::new_with(StdLib::STRING | StdLib::TABLE | StdLib::MATH, LuaOptions::new()) {
        Ok(lua) => lua,
        Err(e) => return Ok((Reply::err(format!("cannot start Lua: {e}")), true)),
    };
    let _ = lua.set_memory_limit(SCRIPT_MEMORY_BYTES_MAX);
    let ran = Arc::new(AtomicU64::new(0));
    let counter = ran.clone();
    lua.set_hook(mlua::HookTriggers::new().every_nth_instruction(BUDGET_CHECK_EVERY), move |_, _| {
        if counter.fetch_add(u64::from(BUDGET_CHECK_EVERY), Ordering::Relaxed) >= SCRIPT_INSTRUCTIONS_MAX {
            return Err(mlua::Error::RuntimeError(format!(
                "BUSY the script ran over its budget of {SCRIPT_INSTRUCTIONS_MAX} Lua instructions \
                 (SCRIPT_INSTRUCTIONS_MAX): it was stopped, and nothing it wrote was applied"
            )));
        }
        Ok(mlua::VmState::Continue)
    });
    let store = RefCell::new(store);
    let fatal: RefCell<Option<Error>> = RefCell::new(None);
    let result = lua.scope(|scope| {
        prepare(&lua, seed)?;
        let call = |lua: &Lua, args: mlua::Variadic<Value>, protected: bool| -> mlua::Result<Value> {
            let reply = match command(&args) {
                Err(refusal) => refusal,
                Ok(Command::Time) => {
                    store.borrow_mut().note_nondeterministic("its script reads the clock (TIME)");
                    let (secs, micros) = (now_ms / 1000, (now_ms % 1000) * 1000);
                    Reply::Array(vec![Reply::Bulk(secs.to_string().into()), Reply::Bulk(micros.to_string().into())])
                }
                Ok(Command::Run(request)) => {
                    let mut store = store.borrow_mut();
                    if matches!(request, Request::RandomKey) {
                        store.note_nondeterministic("its script draws a random key (RANDOMKEY)");
                    } else if matches!(request, Request::Ttl { .. } | Request::ExpireTime { .. }) {
                        store.note_nondeterministic("its script reads a deadline (TTL, PTTL, EXPIRETIME)");
                    } else if matches!(request, Request::Scan { .. } | Request::Keys { .. }) {
                        store.note_nondeterministic(
                            "its script lists keys (SCAN, KEYS), which each replica expires by its own clock",
                        );
                    } else if request.relative_ttl() {
                        store
                            .note_nondeterministic("its script sets a deadline relative to the clock (a relative TTL)");
                    }
                    match store.execute(now_ms, request.in_db(db)) {
                        Ok(reply) => {
                            if store.undo_overflowed() {
                                return Err(mlua::Error::RuntimeError(format!(
                                    "ERR the script wrote over {SCRIPT_WRITES_BYTES_MAX} bytes, or replaced over \
                                     {SCRIPT_UNDO_BYTES_MAX} bytes of old values (SCRIPT_WRITES_BYTES_MAX, \
                                     SCRIPT_UNDO_BYTES_MAX): it was stopped, and nothing it wrote was applied"
                                )));
                            }
                            reply
                        }
                        Err(error) => {
                            *fatal.borrow_mut() = Some(error);
                            return Err(mlua::Error::RuntimeError("ERR the node's storage failed".into()));
                        }
                    }
                }
            };
            match reply {
                Reply::Error(text) if !protected => Err(mlua::Error::RuntimeError(text)),
                reply => to_lua(lua, reply),
            }
        };
        let redis = lua.create_table()?;
        redis.set("call", scope.create_function(move |lua, args| call(lua, args, false))?)?;
        redis.set("pcall", scope.create_function(move |lua, args| call(lua, args, true))?)?;
        let globals = lua.globals();
        // Functions whose answers differ between replicas, wrapped so that a statement log
        // notes the script as nondeterministic when it calls one: math.random draws from the
        // replica's generator, and pairs and next visit a table in an order of the replica's own
        // (Lua seeds its string hashes at random).
        let math: mlua::Table = globals.get("math")?;
        let wrapped = [
            (&math, "random", "its script draws a random number (math.random)"),
            (&globals, "pairs", "its script visits a table with pairs or next, in an order of its own"),
            (&globals, "next", "its script visits a table with pairs or next, in an order of its own"),
        ];
        for (table, name, why) in wrapped {
            let original: mlua::Function = table.get(name)?;
            let noted = &store;
            let wrapper = scope.create_function(move |_, args: mlua::Variadic<Value>| {
                noted.borrow().note_nondeterministic(why);
                original.call::<mlua::MultiValue>(args)
            })?;
            table.set(name, wrapper)?;
        }
        globals.set("redis", redis)?;
        let redis: mlua::Table = globals.get("redis")?;
        // redis.error_reply(text) is {err = text}, redis.status_reply(text) {ok = text}.
        for (name, field) in [("error_reply", "err"), ("status_reply", "ok")] {
            let reply = lua.create_function(move |lua, text: mlua::String| {
                let t = lua.create_table()?;
                t.set(field, text)?;
                Ok(t)
            })?;
            redis.set(name, reply)?;
        }
        redis.set("sha1hex", lua.create_function(|_, text: mlua::String| Ok(sha1_hex(&text.as_bytes())))?)?;
        globals.set(
            "KEYS",
            lua.create_sequence_from(keys.iter().map(|k| lua.create_string(k)).collect::<mlua::Result<Vec<_>>>()?)?,
        )?;
        globals.set(
            "ARGV",
            lua.create_sequence_from(args.iter().map(|a| lua.create_string(a)).collect::<mlua::Result<Vec<_>>>()?)?,
        )?;
        // Source text only: precompiled bytecode is not verified by Lua and could corrupt
        // the node's memory.
        let function =
            lua.load(script.as_ref()).set_name("@user_script").set_mode(mlua::ChunkMode::Text).into_function()?;
        let value: Value = function.call(())?;
        // A result that nests too deep (a table that holds itself) fails the script.
        nested(&value, 0).map_err(|()| {
            mlua::Error::RuntimeError(format!(
                "ERR the script's result nests tables over {SCRIPT_REPLY_DEPTH_MAX} deep (SCRIPT_REPLY_DEPTH_MAX): \
                 nothing it wrote was applied"
            ))
        })
    });
    if let Some(error) = fatal.into_inner() {
        return Err(error);
    }
    Ok(match result {
        Ok(reply) => (reply, false),
        Err(error) => (Reply::Error(error_text(&error)), true),
    })
}

/// Removes from the base library what reaches the world (`dofile`, `loadfile`, `print`,
/// `require`), what loads code unchecked (`load`, `string.dump`: bytecode), what would catch
/// the budget's error and run on (`pcall`, `xpcall`: `redis.pcall` catches command errors),
/// and `collectgarbage`; seeds `math.random` and removes `math.randomseed` (without an
/// argument it seeds from the time).
fn prepare(lua: &Lua, seed: u64) -> mlua::Result<()> {
    let globals = lua.globals();
    for name in ["dofile", "loadfile", "load", "print", "collectgarbage", "require", "pcall", "xpcall"] {
        globals.set(name, Value::Nil)?;
    }
    let string: mlua::Table = globals.get("string")?;
    string.set("dump", Value::Nil)?;
    let math: mlua::Table = globals.get("math")?;
    let randomseed: mlua::Function = math.get("randomseed")?;
    randomseed.call::<()>((seed as i64,))?;
    math.set("randomseed", Value::Nil)?;
    Ok(())
}

/// A command a script asked for.
enum Command {
    /// TIME: answered from the request's `now`.
    Time,
    /// A key-value command.
    Run(Request),
}

/// The command `args` (Lua values) name, or the error reply that refuses it.
fn command(args: &[Value]) -> std::result::Result<Command, Reply> {
    if args.is_empty() {
        return Err(Reply::err("Please specify at least one argument for this redis lib call"));
    }
    let mut words = Vec::with_capacity(args.len());
    for arg in args {
        words.push(match arg {
            Value::String(s) => Bytes::copy_from_slice(&s.as_bytes()),
            Value::Integer(n) => Bytes::from(n.to_string()),
            Value::Number(n) => Bytes::from(super::number::format_float(*n)),
            _ => return Err(Reply::err("Lua redis lib command arguments must be strings or integers")),
        });
    }
    let name = String::from_utf8_lossy(&words[0]).to_ascii_lowercase();
    if name == "time" && words.len() == 1 {
        return Ok(Command::Time);
    }
    if REFUSED_IN_SCRIPTS.contains(&name.as_str()) || name.starts_with("replikv.") {
        return Err(Reply::err("This Redis command is not allowed from script"));
    }
    match parse_command(&words) {
        None => Err(Reply::Error(super::session::unknown_command(&words))),
        Some(Err(refusal)) => Err(refusal),
        Some(Ok(request)) => Ok(Command::Run(request)),
    }
}

/// A reply as Lua sees it.
fn to_lua(lua: &Lua, reply: Reply) -> mlua::Result<Value> {
    Ok(match reply {
        Reply::Ok => status(lua, "OK")?,
        Reply::Status(s) => status(lua, s)?,
        Reply::Nil | Reply::NullArray => Value::Boolean(false),
        Reply::Int(n) => Value::Integer(n),
        Reply::Bulk(b) => Value::String(lua.create_string(&b)?),
        Reply::Array(items) => {
            let table = lua.create_table()?;
            for (i, item) in items.into_iter().enumerate() {
                table.raw_set(i + 1, to_lua(lua, item)?)?;
            }
            Value::Table(table)
        }
        Reply::Error(e) => {
            let table = lua.create_table()?;
            table.set("err", e)?;
            Value::Table(table)
        }
        Reply::Watched(_) => Value::Boolean(false),
        Reply::InSession { reply, .. } | Reply::InKeySession { reply, .. } => to_lua(lua, *reply)?,
    })
}

/// A status table `{ok = text}`.
fn status(lua: &Lua, text: &str) -> mlua::Result<Value> {
    let table = lua.create_table()?;
    table.set("ok", text)?;
    Ok(Value::Table(table))
}

/// A value `depth` tables deep as a reply, or `Err` past [`SCRIPT_REPLY_DEPTH_MAX`].
fn nested(value: &Value, depth: usize) -> std::result::Result<Reply, ()> {
    if depth > SCRIPT_REPLY_DEPTH_MAX {
        return Err(());
    }
    Ok(match value {
        Value::Nil | Value::Boolean(false) => Reply::Nil,
        Value::Boolean(true) => Reply::Int(1),
        Value::Integer(n) => Reply::Int(*n),
        Value::Number(n) => Reply::Int(*n as i64),
        Value::String(s) => Reply::Bulk(Bytes::copy_from_slice(&s.as_bytes())),
        Value::Table(table) => {
            if let Ok(Value::String(err)) = table.raw_get::<Value>("err") {
                return Ok(Reply::Error(err.to_string_lossy()));
            }
            if let Ok(Value::String(ok)) = table.raw_get::<Value>("ok") {
                let text = ok.to_string_lossy();
                return Ok(if text == "OK" { Reply::Ok } else { Reply::Bulk(Bytes::from(text)) });
            }
            let mut items = Vec::new();
            for i in 1.. {
                match table.raw_get::<Value>(i) {
                    Ok(Value::Nil) | Err(_) => break,
                    Ok(item) => items.push(nested(&item, depth + 1)?),
                }
            }
            Reply::Array(items)
        }
        _ => Reply::Nil,
    })
}

/// The error reply for a script that failed with `error`: the error reply a `redis.call`
/// raised, or the budget's, as it is; a Lua error with Redis's prefix.
fn error_text(error: &mlua::Error) -> String {
    match error {
        mlua::Error::CallbackError { cause, .. } => error_text(cause),
        mlua::Error::RuntimeError(text) => {
            let code = text.split(' ').next().unwrap_or("");
            if !code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase()) {
                text.clone()
            } else {
                format!("ERR Error running script: {text}; nothing it wrote was applied")
            }
        }
        mlua::Error::MemoryError(_) => format!(
            "OOM the script used over {SCRIPT_MEMORY_BYTES_MAX} bytes of memory (SCRIPT_MEMORY_BYTES_MAX): it was \
             stopped, and nothing it wrote was applied"
        ),
        mlua::Error::SyntaxError { message, .. } => format!("ERR Error compiling script: {message}"),
        other => format!("ERR Error running script: {other}; nothing it wrote was applied"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryEngine;
    use crate::version::NodeId;

    fn store() -> Store<MemoryEngine> {
        let mut store = Store::new(MemoryEngine::new(), NodeId(7));
        store.capture_changes();
        store
    }

    fn run(store: &mut Store<MemoryEngine>, line: &[&str]) -> Reply {
        let args: Vec<Bytes> = line.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
        match parse_command(&args).expect("a known command") {
            Ok(request) => store.execute(1_700_000_000_123, request).expect("no engine failure"),
            Err(reply) => reply,
        }
    }

    fn bulk(text: &str) -> Reply {
        Reply::Bulk(Bytes::copy_from_slice(text.as_bytes()))
    }

    #[test]
    fn a_script_sees_keys_and_args_and_calls_the_string_commands() {
        let mut s = store();
        let script = "redis.call('SET', KEYS[1], ARGV[1]); return {redis.call('GET', KEYS[1]), \
                      redis.call('INCRBY', KEYS[2], 5), redis.call('GET', 'missing'), #KEYS, #ARGV}";
        let reply = run(&mut s, &["EVAL", script, "2", "a", "n", "hello"]);
        assert_eq!(reply, Reply::Array(vec![bulk("hello"), Reply::Int(5), Reply::Nil, Reply::Int(2), Reply::Int(1)]));
        assert_eq!(run(&mut s, &["GET", "a"]), bulk("hello"));
        assert_eq!(run(&mut s, &["EVAL", "return redis.call('SET', 'x', 1)", "0"]), Reply::Ok, "a status");
        assert_eq!(run(&mut s, &["EVAL", "return 3.9", "0"]), Reply::Int(3), "numbers truncate");
        assert_eq!(run(&mut s, &["EVAL", "return true", "0"]), Reply::Int(1));
        assert_eq!(run(&mut s, &["EVAL", "return redis.status_reply('FINE')", "0"]), bulk("FINE"));
        let returned = run(&mut s, &["EVAL", "redis.call('SET', 'kept', 1); return redis.error_reply('MY oops')", "0"]);
        assert_eq!(returned, Reply::Error("MY oops".into()));
        assert_eq!(run(&mut s, &["GET", "kept"]), bulk("1"), "a returned error reply is not a failure");
        let pcall = run(&mut s, &["EVAL", "return redis.pcall('INCR', KEYS[1])['err']", "1", "a"]);
        assert!(matches!(&pcall, Reply::Bulk(e) if e.starts_with(b"ERR")), "pcall returns the error: {pcall:?}");
    }

    #[test]
    fn a_failed_script_applies_nothing() {
        let mut s = store();
        run(&mut s, &["SET", "a", "old"]);
        s.take_changes();
        let cases = [
            ("redis.call('SET', 'a', 'new'); redis.call('SET', 'b', 'new'); error('boom')", "ERR Error running script"),
            (
                "redis.call('SET', 'a', 'new'); redis.call('SET', 'b', 'new'); redis.call('INCR', 'a')",
                "ERR value is not an integer",
            ),
            ("redis.call('SET', 'a', 'new'); redis.call('SET', 'b', 'new'); while true do end", "BUSY"),
            (
                "redis.call('SET', 'a', 'new'); redis.call('SET', 'b', 'new'); local t = {} \
                 for i = 1, 100000000 do t[i] = string.rep('x', 1000) .. i end",
                "OOM",
            ),
        ];
        for (script, says) in cases {
            let reply = run(&mut s, &["EVAL", script, "0"]);
            assert!(matches!(&reply, Reply::Error(e) if e.starts_with(says)), "{script}: {reply:?}");
            assert_eq!(run(&mut s, &["GET", "a"]), bulk("old"), "{script}: a is back");
            assert_eq!(run(&mut s, &["GET", "b"]), Reply::Nil, "{script}: b is absent again");
            assert_eq!(run(&mut s, &["DBSIZE"]), Reply::Int(1), "{script}: the key count is back");
            assert!(s.take_changes().is_empty(), "{script}: nothing is logged");
        }
        let ok = run(&mut s, &["EVAL", "redis.call('SET', 'a', 'new'); return redis.call('SET', 'b', 'new')", "0"]);
        assert_eq!(ok, Reply::Ok);
        assert_eq!(s.take_changes().len(), 2, "a script that succeeds logs its writes, as one request");
    }

    #[test]
    fn the_budget_and_the_limits_cannot_be_caught_or_escaped() {
        let mut s = store();
        run(&mut s, &["SET", "a", "old"]);
        s.take_changes();
        let cases = [
            // pcall is not there to catch the budget's error and run on.
            (
                "redis.call('SET', 'a', 'new'); while true do pcall(function() while true do end end) end",
                "ERR Error running script",
            ),
            ("redis.call('SET', 'a', 'new'); local t = {} t[1] = t return t", "SCRIPT_REPLY_DEPTH_MAX"),
            (
                "redis.call('SET', 'a', 'new'); local v = string.rep('x', 1000000) \
                 for i = 1, 100 do redis.call('SET', 'k' .. i, v) end",
                "SCRIPT_WRITES_BYTES_MAX",
            ),
            // Bytecode is refused, as source and through load.
            ("redis.call('SET', 'a', 'new'); return load(string.char(27, 76, 117, 97))", "ERR Error running script"),
            ("redis.call('SET', 'a', 'new'); return string.dump(function() end)", "ERR Error running script"),
            ("redis.call('SET', 'a', 'new'); math.randomseed() return 1", "ERR Error running script"),
        ];
        for (script, says) in cases {
            let reply = run(&mut s, &["EVAL", script, "0"]);
            assert!(matches!(&reply, Reply::Error(e) if e.contains(says)), "{script}: {reply:?}");
            assert_eq!(run(&mut s, &["GET", "a"]), bulk("old"), "{script}: undone");
            assert_eq!(run(&mut s, &["GET", "k1"]), Reply::Nil, "{script}: undone");
            assert!(s.take_changes().is_empty(), "{script}: nothing is logged");
        }
        let bytecode = run(&mut s, &["EVAL", "\x1bLua", "0"]);
        assert!(matches!(&bytecode, Reply::Error(e) if e.contains("ERR")), "{bytecode:?}");
        let binary = Bytes::from_static(b"\x1bLuaT\x00\x19\x93\r\n\x1a\n");
        let reply = s.execute(0, Request::Eval { script: binary, keys: vec![], args: vec![] }).unwrap();
        assert!(matches!(&reply, Reply::Error(e) if e.contains("binary") || e.contains("ERR")), "{reply:?}");
    }

    #[test]
    fn an_undone_script_leaves_no_trace_a_reader_or_watcher_sees() {
        let mut s = store();
        let watched = s.execute(0, Request::Watch { keys: vec![Bytes::from_static(b"fresh")] }).unwrap();
        run(&mut s, &["EVAL", "redis.call('SET', 'fresh', 1); error('no')", "0"]);
        let again = s.execute(0, Request::Watch { keys: vec![Bytes::from_static(b"fresh")] }).unwrap();
        assert_eq!(watched, again, "WATCH sees no change: the key still has no record");
        s.take_logged();
        run(&mut s, &["SET", "fresh", "2"]);
        let (_, olds) = s.take_logged();
        assert_eq!(olds, vec![crate::replication::Old::Absent], "logged as a key that had no value");
    }

    #[test]
    fn an_undone_script_lists_a_damaged_key_it_wrote_as_damaged_again() {
        let mut s = store();
        s.set_corruption(super::super::Corruption::Repair);
        let damage = super::super::Damage { path: "seg-1".into(), offset: 7, reason: "checksum".into() };
        s.list_damaged(&Bytes::from_static(b"hurt"), damage);
        let before = run(&mut s, &["GET", "hurt"]);
        assert!(matches!(&before, Reply::Error(_)), "a damaged key is refused: {before:?}");
        run(&mut s, &["EVAL", "redis.call('SET', 'hurt', 'x'); error('no')", "0"]);
        assert_eq!(run(&mut s, &["GET", "hurt"]), before, "still refused as damaged, not read as nil");
    }

    #[test]
    fn scripts_are_cached_by_sha1() {
        let mut s = store();
        let script = "return 'hi'";
        let sha = sha1_hex(script.as_bytes());
        assert_eq!(
            run(&mut s, &["EVALSHA", &sha, "0"]),
            Reply::Error("NOSCRIPT No matching script. Please use EVAL.".into())
        );
        assert_eq!(run(&mut s, &["SCRIPT", "LOAD", script]), bulk(&sha));
        assert_eq!(run(&mut s, &["EVALSHA", &sha.to_uppercase(), "0"]), bulk("hi"));
        assert_eq!(run(&mut s, &["SCRIPT", "EXISTS", &sha, "ffff"]), Reply::Array(vec![Reply::Int(1), Reply::Int(0)]));
        assert_eq!(run(&mut s, &["SCRIPT", "FLUSH"]), Reply::Ok);
        assert_eq!(run(&mut s, &["SCRIPT", "EXISTS", &sha]), Reply::Array(vec![Reply::Int(0)]));
        run(&mut s, &["EVAL", script, "0"]);
        assert_eq!(run(&mut s, &["SCRIPT", "EXISTS", &sha]), Reply::Array(vec![Reply::Int(1)]), "EVAL caches");
        assert_eq!(sha1_hex(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        for (bad, says) in [
            (&["EVAL", script, "-1"][..], "can't be negative"),
            (&["EVAL", script, "2", "a"][..], "greater than number of args"),
            (&["SCRIPT", "KILL"][..], "unknown subcommand"),
            (&["SCRIPT", "LOAD"][..], "wrong number of arguments"),
        ] {
            assert!(matches!(run(&mut s, bad), Reply::Error(e) if e.contains(says)), "{bad:?}");
        }
    }

    #[test]
    fn time_and_randomness_come_from_the_replicas_inputs() {
        let time = run(&mut store(), &["EVAL", "return redis.call('TIME')", "0"]);
        assert_eq!(time, Reply::Array(vec![bulk("1700000000"), bulk("123000")]), "the request's now");
        let draw = |node| {
            let mut s = Store::new(MemoryEngine::new(), NodeId(node));
            run(&mut s, &["EVAL", "return {math.random(1000000), math.random(1000000)}", "0"])
        };
        assert_eq!(draw(1), draw(1), "the same node and inputs draw the same numbers");
        assert_ne!(draw(1), draw(2), "another node draws others");
        let mut s = store();
        for (script, says) in [
            ("return os.time()", "ERR Error running script"),
            ("return io.open('/etc/passwd')", "ERR Error running script"),
            ("return dofile('/etc/passwd')", "ERR Error running script"),
            ("return redis.call('EVAL', 'return 1', 0)", "not allowed from script"),
            ("return redis.call('MULTI')", "not allowed from script"),
            ("return redis.call('REPLIKV.LOG', 0, 1)", "not allowed from script"),
            ("return redis.call('NOSUCH')", "unknown command"),
            ("return redis.call({})", "must be strings or integers"),
            ("return (", "ERR Error compiling script"),
        ] {
            let reply = run(&mut s, &["EVAL", script, "0"]);
            assert!(matches!(&reply, Reply::Error(e) if e.contains(says)), "{script}: {reply:?}");
        }
    }
}
