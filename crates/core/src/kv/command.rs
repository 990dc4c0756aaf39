//! Parsing a client's command (its arguments as bytes) into a [`Request`], with Redis's error
//! texts for wrong arity and bad options. Framing (RESP, inline) happens before this, in the
//! front end; what a command means happens after, in the store.

use super::number::{parse_float, parse_int};
use super::parse_strings::{
    parse_bitcount, parse_copy, parse_expire, parse_getbit, parse_getex, parse_getrange, parse_lcs, parse_object,
    parse_rename, parse_setbit, parse_setex, parse_setrange,
};
use super::request::{Expiry, Reply, Request, SetCondition};
use bytes::Bytes;

/// SCAN's COUNT when the client gives none, as Redis.
const SCAN_COUNT_DEFAULT: usize = 10;

/// Parses a key-value command. `None` when `args[0]` names no key-value command (the front
/// end then tries its own commands, or answers "unknown command"); `Some(Err(reply))` when
/// the command is known but its arguments are wrong.
pub fn parse_command(args: &[Bytes]) -> Option<Result<Request, Reply>> {
    let name = String::from_utf8_lossy(args.first()?).to_ascii_lowercase();
    parse_named(&name, args)
}

/// As [`parse_command`], for a caller that has already lowercased the name (`args[0]`).
pub fn parse_named(name: &str, args: &[Bytes]) -> Option<Result<Request, Reply>> {
    let (min, max) = arity(name)?;
    let count = args.len() - 1;
    if count < min || max.is_some_and(|max| count > max) {
        return Some(Err(Reply::err(format!("wrong number of arguments for '{name}' command"))));
    }
    Some(parse_known(name, &args[1..]))
}

/// True when `name` (lowercase) is a key-value command: one [`parse_named`] parses, or one a
/// [`super::Session`] answers.
pub fn is_command(name: &str) -> bool {
    arity(name).is_some() || matches!(name, "multi" | "exec" | "discard" | "unwatch" | "select")
}

/// The (least, most) number of arguments after the name, for each key-value command.
fn arity(name: &str) -> Option<(usize, Option<usize>)> {
    Some(match name {
        "get" | "getdel" | "incr" | "decr" | "strlen" | "type" | "ttl" | "pttl" | "persist" | "keys" => (1, Some(1)),
        "set" => (2, None),
        "setnx" | "getset" | "append" | "incrby" | "decrby" | "incrbyfloat" => (2, Some(2)),
        "expire" | "pexpire" | "expireat" | "pexpireat" => (2, None),
        "del" | "unlink" | "exists" | "mget" => (1, None),
        "mset" | "msetnx" => (2, None),
        "scan" => (1, None),
        "dbsize" => (0, Some(0)),
        "wait" => (2, Some(2)),
        "failover" => (0, Some(7)),
        "replikv.log" => (2, Some(5)),
        "eval" | "evalsha" => (2, None),
        "script" => (1, None),
        "replikv.digest" => (0, Some(2)),
        "flushall" | "flushdb" => (0, Some(1)),
        "watch" => (1, None),
        "move" | "swapdb" => (2, Some(2)),
        "getex" | "bitcount" => (1, None),
        "setex" | "psetex" | "setrange" | "getrange" | "substr" | "setbit" => (3, Some(3)),
        "getbit" | "rename" | "renamenx" => (2, Some(2)),
        "lcs" | "copy" => (2, None),
        "expiretime" | "pexpiretime" => (1, Some(1)),
        "touch" | "object" => (1, None),
        "randomkey" => (0, Some(0)),
        "replikv.siblings" => (1, Some(1)),
        "replikv.conflicts" => (0, Some(3)),
        _ => return None,
    })
}

fn parse_known(name: &str, a: &[Bytes]) -> Result<Request, Reply> {
    let key = || a[0].clone();
    Ok(match name {
        "get" => Request::Get { key: key() },
        "set" => parse_set(a)?,
        "setnx" => Request::SetNx { key: key(), value: a[1].clone() },
        "getset" => Request::Set {
            key: key(),
            value: a[1].clone(),
            condition: SetCondition::Always,
            get: true,
            expiry: Expiry::Clear,
        },
        "getdel" => Request::GetDel { key: key() },
        "del" | "unlink" => Request::Del { keys: a.to_vec() },
        "exists" => Request::Exists { keys: a.to_vec() },
        "mget" => Request::MGet { keys: a.to_vec() },
        "mset" | "msetnx" => {
            if !a.len().is_multiple_of(2) {
                return Err(Reply::err(format!("wrong number of arguments for '{name}' command")));
            }
            let pairs = a.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();
            Request::MSet { pairs, if_none_exist: name == "msetnx" }
        }
        "incr" => Request::IncrBy { key: key(), delta: 1 },
        "decr" => Request::IncrBy { key: key(), delta: -1 },
        "incrby" => Request::IncrBy { key: key(), delta: int(&a[1])? },
        "decrby" => {
            let delta = int(&a[1])?.checked_neg().ok_or_else(|| Reply::err("decrement would overflow"))?;
            Request::IncrBy { key: key(), delta }
        }
        "incrbyfloat" => {
            let delta = parse_float(&a[1]).ok_or_else(|| Reply::err("value is not a valid float"))?;
            Request::IncrByFloat { key: key(), delta }
        }
        "append" => Request::Append { key: key(), value: a[1].clone() },
        "strlen" => Request::Strlen { key: key() },
        "type" => Request::Type { key: key() },
        "keys" => Request::Keys { pattern: key() },
        "scan" => parse_scan(a)?,
        "expire" | "pexpire" | "expireat" | "pexpireat" => parse_expire(name, a)?,
        "ttl" | "pttl" => Request::Ttl { key: key(), millis: name == "pttl" },
        "persist" => Request::Persist { key: key() },
        "dbsize" => Request::DbSize,
        "replikv.digest" => match a {
            [] => Request::Digest { bucket: None },
            [word, n] if word.eq_ignore_ascii_case(b"bucket") => {
                let bucket = usize::try_from(int(n)?)
                    .ok()
                    .filter(|b| *b < crate::digest::DIGEST_BUCKETS)
                    .ok_or_else(|| Reply::err(format!("bucket must be 0..{}", crate::digest::DIGEST_BUCKETS - 1)))?;
                Request::Digest { bucket: Some(bucket) }
            }
            _ => return Err(syntax()),
        },
        "failover" => parse_failover(a)?,
        "replikv.log" => {
            let (after, count) = (int(&a[0])?, int(&a[1])?);
            if after < 0 || count < 0 {
                return Err(Reply::err("REPLIKV.LOG after and count must not be negative"));
            }
            let (mut changes, mut prefix) = (false, Bytes::new());
            let mut rest = a[2..].iter();
            while let Some(option) = rest.next() {
                if option.eq_ignore_ascii_case(b"changes") {
                    changes = true;
                } else if option.eq_ignore_ascii_case(b"prefix") {
                    prefix = rest.next().ok_or_else(syntax)?.clone();
                } else {
                    return Err(syntax());
                }
            }
            Request::Log { after: after as u64, count: count as u64, changes, prefix }
        }
        "wait" => {
            let replicas = int(&a[0])?;
            let timeout_ms = int(&a[1])?;
            if timeout_ms < 0 {
                return Err(Reply::err("timeout is negative"));
            }
            Request::Wait { replicas: replicas.max(0) as u64, timeout_ms: timeout_ms as u64 }
        }
        "flushall" | "flushdb" => {
            if let Some(mode) = a.first() {
                if !mode.eq_ignore_ascii_case(b"sync") && !mode.eq_ignore_ascii_case(b"async") {
                    return Err(syntax());
                }
            }
            if name == "flushdb" {
                Request::FlushDb
            } else {
                Request::FlushAll
            }
        }
        "watch" => Request::Watch { keys: a.to_vec() },
        "move" => Request::Move { key: key(), db: int(&a[1])? },
        "swapdb" => {
            let a_db = parse_int(&a[0]).ok_or_else(|| Reply::err("invalid first DB index"))?;
            let b_db = parse_int(&a[1]).ok_or_else(|| Reply::err("invalid second DB index"))?;
            Request::SwapDb { a: a_db, b: b_db }
        }
        "getex" => parse_getex(a)?,
        "setex" | "psetex" => parse_setex(name, a)?,
        "setrange" => parse_setrange(a)?,
        "getrange" | "substr" => parse_getrange(a)?,
        "setbit" => parse_setbit(a)?,
        "getbit" => parse_getbit(a)?,
        "bitcount" => parse_bitcount(a)?,
        "lcs" => parse_lcs(a)?,
        "eval" | "evalsha" => {
            let count = int(&a[1])?;
            if count < 0 {
                return Err(Reply::err("Number of keys can't be negative"));
            }
            let count = count as usize;
            if count > a.len() - 2 {
                return Err(Reply::err("Number of keys can't be greater than number of args"));
            }
            let (keys, args) = (a[2..2 + count].to_vec(), a[2 + count..].to_vec());
            match name {
                "eval" => Request::Eval { script: a[0].clone(), keys, args },
                _ => Request::EvalSha { sha: a[0].clone(), keys, args },
            }
        }
        "script" => {
            let sub = String::from_utf8_lossy(&a[0]).to_ascii_lowercase();
            match (sub.as_str(), a.len()) {
                ("load", 2) => Request::ScriptLoad { script: a[1].clone() },
                ("exists", n) if n >= 2 => Request::ScriptExists { shas: a[1..].to_vec() },
                ("flush", 1) => Request::ScriptFlush,
                ("flush", 2) if a[1].eq_ignore_ascii_case(b"async") || a[1].eq_ignore_ascii_case(b"sync") => {
                    Request::ScriptFlush
                }
                ("load" | "exists" | "flush", _) => {
                    return Err(Reply::err(format!("wrong number of arguments for 'script|{sub}' command")))
                }
                _ => {
                    return Err(Reply::err(format!(
                        "unknown subcommand '{}'. Try SCRIPT LOAD, EXISTS or FLUSH.",
                        String::from_utf8_lossy(&a[0])
                    )))
                }
            }
        }
        "rename" | "renamenx" => parse_rename(name, a),
        "copy" => parse_copy(a)?,
        "expiretime" | "pexpiretime" => Request::ExpireTime { key: key(), millis: name == "pexpiretime" },
        "object" => parse_object(a)?,
        "touch" => Request::Touch { keys: a.to_vec() },
        "randomkey" => Request::RandomKey,
        "replikv.siblings" => Request::Siblings { key: key() },
        "replikv.conflicts" => parse_conflicts(a)?,
        _ => unreachable!("arity() knows {name} but parse_known does not"),
    })
}

/// REPLIKV.CONFLICTS \[prefix\] \[COUNT n\]: a prefix, then COUNT; `COUNT n` alone is the count
/// (a prefix spelled COUNT needs a count after it).
fn parse_conflicts(a: &[Bytes]) -> Result<Request, Reply> {
    let is_count = |word: &Bytes| word.eq_ignore_ascii_case(b"count");
    let (prefix, rest) = match a {
        [] => (Bytes::new(), a),
        [word, _] if is_count(word) => (Bytes::new(), a),
        [prefix, rest @ ..] => (prefix.clone(), rest),
    };
    let count = match rest {
        [] => super::request::CONFLICTS_LISTED_DEFAULT,
        [word, n] if is_count(word) => match int(n)? {
            n if n >= 1 => n as u64,
            _ => return Err(Reply::err("COUNT must be at least 1")),
        },
        _ => return Err(syntax()),
    };
    Ok(Request::Conflicts { prefix, count })
}

/// FAILOVER \[TO host port \[FORCE\]\] \[ABORT\] \[TIMEOUT ms\], with Redis's errors.
fn parse_failover(a: &[Bytes]) -> Result<Request, Reply> {
    let (mut to, mut force, mut abort, mut timeout_ms) = (None, false, false, None);
    let mut rest = a.iter();
    while let Some(word) = rest.next() {
        match String::from_utf8_lossy(word).to_ascii_uppercase().as_str() {
            "TO" if to.is_none() => {
                let (Some(host), Some(port)) = (rest.next(), rest.next()) else { return Err(syntax()) };
                let port = int(port)?;
                if !(1..=65535).contains(&port) {
                    return Err(Reply::err("Invalid port"));
                }
                to = Some(format!("{}:{port}", String::from_utf8_lossy(host)));
            }
            "FORCE" if !force => force = true,
            "ABORT" if !abort => abort = true,
            "TIMEOUT" if timeout_ms.is_none() => {
                let ms = rest.next().map(int).transpose()?.ok_or_else(syntax)?;
                if ms <= 0 {
                    return Err(Reply::err("FAILOVER timeout must be greater than 0"));
                }
                timeout_ms = Some(ms as u64);
            }
            _ => return Err(syntax()),
        }
    }
    if abort && (to.is_some() || force || timeout_ms.is_some()) {
        return Err(Reply::err("FAILOVER with abort option can't have other options"));
    }
    if force && (to.is_none() || timeout_ms.is_none()) {
        return Err(Reply::err("FAILOVER with force option requires both a timeout and target HOST and IP."));
    }
    Ok(Request::Failover { to, force, abort, timeout_ms: timeout_ms.unwrap_or(0) })
}

fn parse_set(a: &[Bytes]) -> Result<Request, Reply> {
    let mut condition = SetCondition::Always;
    let mut get = false;
    let mut expiry = Expiry::Clear;
    let mut rest = a[2..].iter();
    while let Some(option) = rest.next() {
        let option = String::from_utf8_lossy(option).to_ascii_uppercase();
        match option.as_str() {
            "NX" if condition == SetCondition::Always => condition = SetCondition::IfAbsent,
            "XX" if condition == SetCondition::Always => condition = SetCondition::IfPresent,
            "GET" => get = true,
            // SET key value CONTEXT token: leaderless mode's resolution of siblings, alone.
            "CONTEXT" if a.len() == 4 => {
                let context = rest.next().ok_or_else(syntax)?.clone();
                return Ok(Request::SetContext { key: a[0].clone(), value: a[1].clone(), context });
            }
            "KEEPTTL" if expiry == Expiry::Clear => expiry = Expiry::Keep,
            "EX" | "PX" | "EXAT" | "PXAT" if expiry == Expiry::Clear => {
                let amount = int(rest.next().ok_or_else(syntax)?)?;
                let invalid = || Reply::err("invalid expire time in 'set' command");
                let ms = match option.as_str() {
                    "EX" | "EXAT" => amount.checked_mul(1000).ok_or_else(invalid)?,
                    _ => amount,
                };
                if ms <= 0 {
                    return Err(invalid());
                }
                expiry = if option.ends_with("AT") { Expiry::AtMs(ms) } else { Expiry::InMs(ms) };
            }
            _ => return Err(syntax()),
        }
    }
    Ok(Request::Set { key: a[0].clone(), value: a[1].clone(), condition, get, expiry })
}

fn parse_scan(a: &[Bytes]) -> Result<Request, Reply> {
    let cursor =
        std::str::from_utf8(&a[0]).ok().and_then(|s| s.parse().ok()).ok_or_else(|| Reply::err("invalid cursor"))?;
    let mut pattern = None;
    let mut count = SCAN_COUNT_DEFAULT;
    let mut rest = a[1..].iter();
    while let Some(option) = rest.next() {
        let value = rest.next().ok_or_else(syntax)?;
        if option.eq_ignore_ascii_case(b"match") {
            pattern = Some(value.clone());
        } else if option.eq_ignore_ascii_case(b"count") {
            count = usize::try_from(int(value)?).ok().filter(|c| *c >= 1).ok_or_else(syntax)?;
        } else {
            return Err(syntax());
        }
    }
    Ok(Request::Scan { cursor, pattern, count })
}

/// An integer argument, with Redis's error when it is not one.
pub(super) fn int(arg: &Bytes) -> Result<i64, Reply> {
    parse_int(arg).ok_or_else(|| Reply::err("value is not an integer or out of range"))
}

/// Redis's reply to a malformed option list.
pub(super) fn syntax() -> Reply {
    Reply::err("syntax error")
}
