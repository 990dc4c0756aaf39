//! A request as the command line a client would type: how the statement log and its warnings
//! name a request (`SET k v EX 10`, `EVAL "..." 1 k`, `SELECT 2; MSET a 1 b 2`).

use super::request::{Expiry, GetExExpiry, Request, SetCondition};
use bytes::Bytes;

/// `request` as a command line: Redis's command and arguments for the writes (and the reads
/// that scripts and transactions hold), its parsed form for the rest. An argument that is not
/// plain printable text without spaces is quoted, with escapes, as `redis-cli` prints it.
pub fn command_text(request: &Request) -> String {
    let words: Vec<String> = match request {
        Request::InDb { db, request } => return format!("SELECT {db}; {}", command_text(request)),
        Request::Exec { requests, .. } => {
            let inner: Vec<String> = requests.iter().map(command_text).collect();
            return format!("MULTI; {}; EXEC", inner.join("; "));
        }
        Request::Set { key, value, condition, get, expiry } => {
            let mut words = vec!["SET".into(), arg(key), arg(value)];
            match condition {
                SetCondition::Always => {}
                SetCondition::IfAbsent => words.push("NX".into()),
                SetCondition::IfPresent => words.push("XX".into()),
            }
            if *get {
                words.push("GET".into());
            }
            match expiry {
                Expiry::Clear => {}
                Expiry::Keep => words.push("KEEPTTL".into()),
                Expiry::InMs(ms) => words.extend(["PX".into(), ms.to_string()]),
                Expiry::AtMs(ms) => words.extend(["PXAT".into(), ms.to_string()]),
            }
            words
        }
        Request::SetNx { key, value } => vec!["SETNX".into(), arg(key), arg(value)],
        Request::SetEx { key, value, ttl_ms, .. } => vec!["PSETEX".into(), arg(key), ttl_ms.to_string(), arg(value)],
        Request::GetDel { key } => vec!["GETDEL".into(), arg(key)],
        Request::Del { keys } => named("DEL", keys),
        Request::MSet { pairs, if_none_exist } => {
            let mut words = vec![if *if_none_exist { "MSETNX" } else { "MSET" }.to_string()];
            for (key, value) in pairs {
                words.extend([arg(key), arg(value)]);
            }
            words
        }
        Request::IncrBy { key, delta } => vec!["INCRBY".into(), arg(key), delta.to_string()],
        Request::IncrByFloat { key, delta } => {
            vec!["INCRBYFLOAT".into(), arg(key), super::number::format_float(*delta)]
        }
        Request::Append { key, value } => vec!["APPEND".into(), arg(key), arg(value)],
        Request::Expire { key, expiry, .. } => expire(key, expiry),
        Request::ExpireIf { key, expiry, condition, .. } => {
            let mut words = expire(key, expiry);
            for (flag, set) in [("NX", condition.nx), ("XX", condition.xx), ("GT", condition.gt), ("LT", condition.lt)]
            {
                if set {
                    words.push(flag.into());
                }
            }
            words
        }
        Request::SetRange { key, offset, value } => vec!["SETRANGE".into(), arg(key), offset.to_string(), arg(value)],
        Request::SetBit { key, offset, bit } => {
            vec!["SETBIT".into(), arg(key), offset.to_string(), u8::from(*bit).to_string()]
        }
        Request::Rename { source, destination, if_absent } => {
            vec![if *if_absent { "RENAMENX" } else { "RENAME" }.into(), arg(source), arg(destination)]
        }
        Request::Copy { source, destination, db, replace } => {
            let mut words = vec!["COPY".into(), arg(source), arg(destination)];
            if let Some(db) = db {
                words.extend(["DB".into(), db.to_string()]);
            }
            if *replace {
                words.push("REPLACE".into());
            }
            words
        }
        Request::Move { key, db } => vec!["MOVE".into(), arg(key), db.to_string()],
        Request::SwapDb { a, b } => vec!["SWAPDB".into(), a.to_string(), b.to_string()],
        Request::GetEx { key, expiry } => {
            let mut words = vec!["GETEX".into(), arg(key)];
            match expiry {
                GetExExpiry::Keep => {}
                GetExExpiry::Persist => words.push("PERSIST".into()),
                GetExExpiry::Set { amount, seconds, absolute } => {
                    let flag = match (seconds, absolute) {
                        (true, false) => "EX",
                        (false, false) => "PX",
                        (true, true) => "EXAT",
                        (false, true) => "PXAT",
                    };
                    words.extend([flag.into(), arg(amount)]);
                }
            }
            words
        }
        Request::Persist { key } => vec!["PERSIST".into(), arg(key)],
        Request::Eval { script, keys, args } => {
            let mut words = vec!["EVAL".into(), quoted(script), keys.len().to_string()];
            words.extend(keys.iter().chain(args).map(arg));
            words
        }
        Request::EvalSha { sha, keys, args } => {
            let mut words = vec!["EVALSHA".into(), arg(sha), keys.len().to_string()];
            words.extend(keys.iter().chain(args).map(arg));
            words
        }
        Request::FlushAll => vec!["FLUSHALL".into()],
        Request::FlushDb => vec!["FLUSHDB".into()],
        Request::Get { key } => vec!["GET".into(), arg(key)],
        Request::MGet { keys } => named("MGET", keys),
        other => return format!("{other:?}"),
    };
    words.join(" ")
}

/// EXPIRE's words for `expiry` (in milliseconds).
fn expire(key: &Bytes, expiry: &Expiry) -> Vec<String> {
    match expiry {
        Expiry::InMs(ms) => vec!["PEXPIRE".into(), arg(key), ms.to_string()],
        Expiry::AtMs(ms) => vec!["PEXPIREAT".into(), arg(key), ms.to_string()],
        Expiry::Clear | Expiry::Keep => vec!["PERSIST".into(), arg(key)],
    }
}

/// A command name and its keys.
fn named(name: &str, keys: &[Bytes]) -> Vec<String> {
    std::iter::once(name.to_string()).chain(keys.iter().map(arg)).collect()
}

/// One argument: as it is when it is plain printable text without spaces or quotes.
fn arg(bytes: &Bytes) -> String {
    let plain = !bytes.is_empty() && bytes.iter().all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\'');
    match plain {
        true => String::from_utf8_lossy(bytes).into_owned(),
        false => quoted(bytes),
    }
}

/// An argument in double quotes, with `\"`, `\\`, `\n`, `\r`, `\t` and `\xHH` escapes.
fn quoted(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            b if b == b' ' || b.is_ascii_graphic() => out.push(b as char),
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::parse_command;

    fn text(line: &[&str]) -> String {
        let args: Vec<Bytes> = line.iter().map(|w| Bytes::from(w.to_string())).collect();
        command_text(&parse_command(&args).expect("a command").expect("parsed"))
    }

    #[test]
    fn writes_print_as_the_command_lines_that_make_them() {
        let table = [
            (vec!["SET", "k", "v", "EX", "10"], "SET k v PX 10000"),
            (vec!["set", "k", "two words", "NX", "GET"], "SET k \"two words\" NX GET"),
            (vec!["SETEX", "k", "5", "v"], "PSETEX k 5000 v"),
            (vec!["MSET", "a", "1", "b", "2"], "MSET a 1 b 2"),
            (vec!["INCR", "n"], "INCRBY n 1"),
            (vec!["EXPIRE", "k", "10"], "PEXPIRE k 10000"),
            (vec!["DEL", "a", "b"], "DEL a b"),
            (vec!["EVAL", "return redis.call('TIME')", "1", "k", "x"], "EVAL \"return redis.call('TIME')\" 1 k x"),
            (vec!["APPEND", "k", "a\nb"], "APPEND k \"a\\nb\""),
            (vec!["EXPIRE", "k", "10", "NX"], "PEXPIRE k 10000 NX"),
            (vec!["SETRANGE", "k", "3", "xy"], "SETRANGE k 3 xy"),
            (vec!["RENAMENX", "a", "b"], "RENAMENX a b"),
            (vec!["COPY", "a", "b", "DB", "2", "REPLACE"], "COPY a b DB 2 REPLACE"),
            (vec!["GETEX", "k", "EX", "5"], "GETEX k EX 5"),
            (vec!["SWAPDB", "0", "1"], "SWAPDB 0 1"),
        ];
        for (line, want) in table {
            assert_eq!(text(&line), want, "{line:?}");
        }
        let in_db = parse_command(&[Bytes::from("GETDEL"), Bytes::from("k")]).unwrap().unwrap().in_db(2);
        assert_eq!(command_text(&in_db), "SELECT 2; GETDEL k");
    }
}
