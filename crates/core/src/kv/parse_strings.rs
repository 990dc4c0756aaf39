//! Parsing the string and keyspace commands added after the first set (GETEX, SETEX, SETRANGE,
//! the bit commands, LCS, RENAME, COPY, OBJECT, ...) and EXPIRE's options, with Redis 7's
//! error texts and its order of checks: an argument Redis checks before it looks the key up
//! is checked here; one it checks after (GETEX's amount, the limits that depend on the
//! store's `value_bytes_max`) is carried to the store.

use super::command::{int, syntax};
use super::request::{BitRange, ExpireCondition, Expiry, GetExExpiry, LcsAnswer, ObjectField, Reply, Request};
use bytes::Bytes;

/// Redis's error for a BITCOUNT/SETBIT/GETBIT offset that is not a non-negative integer.
pub(super) const BIT_OFFSET_ERROR: &str = "bit offset is not an integer or out of range";

/// The largest value `getIntFromObject` accepts (COPY's DB), as Redis: a C `int`.
const DB_INDEX_MAX: i64 = i32::MAX as i64;

/// GETEX key \[EX s|PX ms|EXAT s|PXAT ms|PERSIST\]. As Redis, the same option may repeat (the
/// last amount wins) but two different ones may not.
pub(super) fn parse_getex(a: &[Bytes]) -> Result<Request, Reply> {
    let mut expiry = GetExExpiry::Keep;
    let mut rest = a[1..].iter();
    while let Some(option) = rest.next() {
        let option = String::from_utf8_lossy(option).to_ascii_uppercase();
        let (seconds, absolute) = match option.as_str() {
            "PERSIST" if matches!(expiry, GetExExpiry::Keep | GetExExpiry::Persist) => {
                expiry = GetExExpiry::Persist;
                continue;
            }
            "EX" => (true, false),
            "PX" => (false, false),
            "EXAT" => (true, true),
            "PXAT" => (false, true),
            _ => return Err(syntax()),
        };
        let same = match &expiry {
            GetExExpiry::Keep => true,
            GetExExpiry::Persist => false,
            GetExExpiry::Set { seconds: s, absolute: at, .. } => (*s, *at) == (seconds, absolute),
        };
        let amount = rest.next().filter(|_| same).ok_or_else(syntax)?.clone();
        expiry = GetExExpiry::Set { amount, seconds, absolute };
    }
    Ok(Request::GetEx { key: a[0].clone(), expiry })
}

/// SETEX key seconds value / PSETEX key milliseconds value.
pub(super) fn parse_setex(name: &str, a: &[Bytes]) -> Result<Request, Reply> {
    let command = if name == "setex" { "setex" } else { "psetex" };
    let amount = int(&a[1])?;
    let invalid = || Reply::err(format!("invalid expire time in '{command}' command"));
    let ttl_ms = if command == "setex" { amount.checked_mul(1000).ok_or_else(invalid)? } else { amount };
    if ttl_ms <= 0 {
        return Err(invalid());
    }
    Ok(Request::SetEx { key: a[0].clone(), value: a[2].clone(), ttl_ms, command })
}

/// SETRANGE key offset value.
pub(super) fn parse_setrange(a: &[Bytes]) -> Result<Request, Reply> {
    let offset = int(&a[1])?;
    let offset = u64::try_from(offset).map_err(|_| Reply::err("offset is out of range"))?;
    Ok(Request::SetRange { key: a[0].clone(), offset, value: a[2].clone() })
}

/// GETRANGE / SUBSTR key start end.
pub(super) fn parse_getrange(a: &[Bytes]) -> Result<Request, Reply> {
    Ok(Request::GetRange { key: a[0].clone(), start: int(&a[1])?, end: int(&a[2])? })
}

/// A bit offset: a non-negative integer. (Its upper limit depends on the store's
/// `value_bytes_max`, so the store checks it.)
fn bit_offset(arg: &Bytes) -> Result<u64, Reply> {
    super::number::parse_int(arg).and_then(|n| u64::try_from(n).ok()).ok_or_else(|| Reply::err(BIT_OFFSET_ERROR))
}

/// SETBIT key offset 0|1.
pub(super) fn parse_setbit(a: &[Bytes]) -> Result<Request, Reply> {
    let offset = bit_offset(&a[1])?;
    let bit = match super::number::parse_int(&a[2]) {
        Some(0) => false,
        Some(1) => true,
        _ => return Err(Reply::err("bit is not an integer or out of range")),
    };
    Ok(Request::SetBit { key: a[0].clone(), offset, bit })
}

/// GETBIT key offset.
pub(super) fn parse_getbit(a: &[Bytes]) -> Result<Request, Reply> {
    Ok(Request::GetBit { key: a[0].clone(), offset: bit_offset(&a[1])? })
}

/// BITCOUNT key \[start end \[BYTE|BIT\]\]: the numbers first, then the unit, as Redis 7.2.
pub(super) fn parse_bitcount(a: &[Bytes]) -> Result<Request, Reply> {
    let range = match a.len() {
        1 => None,
        3 | 4 => {
            let (start, end) = (int(&a[1])?, int(&a[2])?);
            let bits = match a.get(3) {
                None => false,
                Some(unit) if unit.eq_ignore_ascii_case(b"bit") => true,
                Some(unit) if unit.eq_ignore_ascii_case(b"byte") => false,
                Some(_) => return Err(syntax()),
            };
            Some(BitRange { start, end, bits })
        }
        _ => return Err(syntax()),
    };
    Ok(Request::BitCount { key: a[0].clone(), range })
}

/// LCS key1 key2 \[LEN\] \[IDX\] \[MINMATCHLEN n\] \[WITHMATCHLEN\]. MINMATCHLEN and
/// WITHMATCHLEN without IDX are accepted and ignored, as Redis does.
pub(super) fn parse_lcs(a: &[Bytes]) -> Result<Request, Reply> {
    let (mut len, mut idx, mut with_match_len, mut min_match_len) = (false, false, false, 0u64);
    let mut rest = a[2..].iter();
    while let Some(option) = rest.next() {
        match String::from_utf8_lossy(option).to_ascii_uppercase().as_str() {
            "LEN" => len = true,
            "IDX" => idx = true,
            "WITHMATCHLEN" => with_match_len = true,
            "MINMATCHLEN" => {
                let n = int(rest.next().ok_or_else(syntax)?)?;
                min_match_len = n.max(0) as u64;
            }
            _ => return Err(syntax()),
        }
    }
    let answer = match (len, idx) {
        (true, true) => return Err(Reply::err("If you want both the length and indexes, please just use IDX.")),
        (true, false) => LcsAnswer::Len,
        (false, true) => LcsAnswer::Idx { min_match_len, with_match_len },
        (false, false) => LcsAnswer::Text,
    };
    Ok(Request::Lcs { a: a[0].clone(), b: a[1].clone(), answer })
}

/// RENAME / RENAMENX source destination.
pub(super) fn parse_rename(name: &str, a: &[Bytes]) -> Request {
    Request::Rename { source: a[0].clone(), destination: a[1].clone(), if_absent: name == "renamenx" }
}

/// COPY source destination \[DB n\] \[REPLACE\]. DB is an integer within a C `int`, as Redis;
/// the store checks it against the databases it has.
pub(super) fn parse_copy(a: &[Bytes]) -> Result<Request, Reply> {
    let (mut db, mut replace) = (None, false);
    let mut rest = a[2..].iter();
    while let Some(option) = rest.next() {
        if option.eq_ignore_ascii_case(b"replace") {
            replace = true;
        } else if option.eq_ignore_ascii_case(b"db") {
            let n = int(rest.next().ok_or_else(syntax)?)?;
            if !(-DB_INDEX_MAX - 1..=DB_INDEX_MAX).contains(&n) {
                return Err(Reply::err("value is not an integer or out of range"));
            }
            db = Some(n);
        } else {
            return Err(syntax());
        }
    }
    Ok(Request::Copy { source: a[0].clone(), destination: a[1].clone(), db, replace })
}

/// OBJECT subcommand \[key\], with Redis 7's errors for an unknown subcommand and for a
/// subcommand's arity.
pub(super) fn parse_object(a: &[Bytes]) -> Result<Request, Reply> {
    let sub = String::from_utf8_lossy(&a[0]).to_ascii_lowercase();
    let field = match sub.as_str() {
        "encoding" => ObjectField::Encoding,
        "freq" => ObjectField::Freq,
        "idletime" => ObjectField::IdleTime,
        "refcount" => ObjectField::RefCount,
        "help" if a.len() == 1 => return Ok(Request::ObjectHelp),
        "help" => return Err(Reply::err("wrong number of arguments for 'object|help' command")),
        _ => {
            let typed = String::from_utf8_lossy(&a[0]);
            return Err(Reply::err(format!("unknown subcommand '{typed}'. Try OBJECT HELP.")));
        }
    };
    match a {
        [_, key] => Ok(Request::Object { field, key: key.clone() }),
        _ => Err(Reply::err(format!("wrong number of arguments for 'object|{sub}' command"))),
    }
}

/// EXPIRE / PEXPIRE / EXPIREAT / PEXPIREAT key amount \[NX|XX|GT|LT...\]: the options first,
/// then the amount, as Redis. A deadline that overflows once resolved against `now` is the
/// store's to refuse.
pub(super) fn parse_expire(name: &str, a: &[Bytes]) -> Result<Request, Reply> {
    let mut condition = ExpireCondition::default();
    for option in &a[2..] {
        match String::from_utf8_lossy(option).to_ascii_uppercase().as_str() {
            "NX" => condition.nx = true,
            "XX" => condition.xx = true,
            "GT" => condition.gt = true,
            "LT" => condition.lt = true,
            _ => {
                let option = String::from_utf8_lossy(option);
                return Err(Reply::err(format!("Unsupported option {option}")));
            }
        }
    }
    if condition.nx && (condition.xx || condition.gt || condition.lt) {
        return Err(Reply::err("NX and XX, GT or LT options at the same time are not compatible"));
    }
    if condition.gt && condition.lt {
        return Err(Reply::err("GT and LT options at the same time are not compatible"));
    }
    let amount = int(&a[1])?;
    let invalid = || Reply::err(format!("invalid expire time in '{name}' command"));
    let ms = if name.starts_with('p') { amount } else { amount.checked_mul(1000).ok_or_else(invalid)? };
    let expiry = if name.ends_with("at") { Expiry::AtMs(ms) } else { Expiry::InMs(ms) };
    let command = match name {
        "expire" => "expire",
        "pexpire" => "pexpire",
        "expireat" => "expireat",
        _ => "pexpireat",
    };
    let key = a[0].clone();
    Ok(if condition == ExpireCondition::default() {
        Request::Expire { key, expiry, command }
    } else {
        Request::ExpireIf { key, expiry, command, condition }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::parse_command;

    fn parse(line: &str) -> Result<Request, Reply> {
        let args: Vec<Bytes> = line.split(' ').map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
        parse_command(&args).expect("a known command")
    }

    fn error(line: &str) -> String {
        match parse(line) {
            Err(Reply::Error(e)) => e,
            other => panic!("{line}: expected an error, got {other:?}"),
        }
    }

    #[test]
    fn getex_options_follow_redis() {
        let set = |amount: &str, seconds, absolute| GetExExpiry::Set {
            amount: Bytes::from(amount.to_string()),
            seconds,
            absolute,
        };
        let table: &[(&str, Option<GetExExpiry>)] = &[
            ("GETEX k", Some(GetExExpiry::Keep)),
            ("GETEX k persist", Some(GetExExpiry::Persist)),
            ("GETEX k PERSIST PERSIST", Some(GetExExpiry::Persist)),
            ("GETEX k EX 10", Some(set("10", true, false))),
            ("GETEX k px 10", Some(set("10", false, false))),
            ("GETEX k exat 10", Some(set("10", true, true))),
            ("GETEX k PXAT 10", Some(set("10", false, true))),
            // The same option twice: the last amount wins, as Redis.
            ("GETEX k EX 10 EX 20", Some(set("20", true, false))),
            // Checked only after the key is found.
            ("GETEX k EX abc", Some(set("abc", true, false))),
            ("GETEX k EX 10 PX 20", None),
            ("GETEX k EX 10 PERSIST", None),
            ("GETEX k PERSIST EX 10", None),
            ("GETEX k EX", None),
            ("GETEX k KEEPTTL", None),
            ("GETEX k NX", None),
        ];
        for (line, want) in table {
            match (parse(line), want) {
                (Ok(Request::GetEx { expiry, .. }), Some(want)) => assert_eq!(&expiry, want, "{line}"),
                (Err(Reply::Error(e)), None) => assert_eq!(e, "ERR syntax error", "{line}"),
                (got, _) => panic!("{line}: {got:?}"),
            }
        }
    }

    #[test]
    fn argument_errors_have_redis_texts() {
        let table: &[(&str, &str)] = &[
            ("SETEX k 0 v", "ERR invalid expire time in 'setex' command"),
            ("PSETEX k -5 v", "ERR invalid expire time in 'psetex' command"),
            ("SETEX k 9223372036854775807 v", "ERR invalid expire time in 'setex' command"),
            ("SETEX k x v", "ERR value is not an integer or out of range"),
            ("SETRANGE k -1 v", "ERR offset is out of range"),
            ("SETRANGE k x v", "ERR value is not an integer or out of range"),
            ("SETBIT k -1 1", "ERR bit offset is not an integer or out of range"),
            ("SETBIT k x 1", "ERR bit offset is not an integer or out of range"),
            ("SETBIT k 1 2", "ERR bit is not an integer or out of range"),
            ("SETBIT k 1 x", "ERR bit is not an integer or out of range"),
            ("GETBIT k -1", "ERR bit offset is not an integer or out of range"),
            ("BITCOUNT k 0", "ERR syntax error"),
            ("BITCOUNT k 0 1 bits", "ERR syntax error"),
            ("BITCOUNT k x 1 nonsense", "ERR value is not an integer or out of range"),
            ("BITCOUNT k 0 1 bit extra", "ERR syntax error"),
            ("LCS a b LEN IDX", "ERR If you want both the length and indexes, please just use IDX."),
            ("LCS a b MINMATCHLEN", "ERR syntax error"),
            ("LCS a b MINMATCHLEN x", "ERR value is not an integer or out of range"),
            ("LCS a b FOO", "ERR syntax error"),
            ("COPY a b DB", "ERR syntax error"),
            ("COPY a b DB x", "ERR value is not an integer or out of range"),
            ("COPY a b DB 2147483648", "ERR value is not an integer or out of range"),
            ("COPY a b FOO", "ERR syntax error"),
            ("OBJECT FOO k", "ERR unknown subcommand 'FOO'. Try OBJECT HELP."),
            ("OBJECT ENCODING", "ERR wrong number of arguments for 'object|encoding' command"),
            ("OBJECT freq a b", "ERR wrong number of arguments for 'object|freq' command"),
            ("OBJECT HELP me", "ERR wrong number of arguments for 'object|help' command"),
            ("EXPIRE k 10 NX XX", "ERR NX and XX, GT or LT options at the same time are not compatible"),
            ("EXPIRE k 10 NX GT", "ERR NX and XX, GT or LT options at the same time are not compatible"),
            ("EXPIRE k 10 LT NX", "ERR NX and XX, GT or LT options at the same time are not compatible"),
            ("EXPIRE k 10 GT LT", "ERR GT and LT options at the same time are not compatible"),
            ("EXPIRE k 10 FOO", "ERR Unsupported option FOO"),
            // Options are checked before the amount, as Redis.
            ("EXPIRE k abc FOO", "ERR Unsupported option FOO"),
            ("EXPIRE k abc NX", "ERR value is not an integer or out of range"),
            ("EXPIRE k 9223372036854775807 NX", "ERR invalid expire time in 'expire' command"),
        ];
        for (line, want) in table {
            assert_eq!(error(line), *want, "{line}");
        }
    }

    #[test]
    fn expire_options_combine_as_redis_allows() {
        let cond = |line: &str| match parse(line) {
            Ok(Request::ExpireIf { condition, .. }) => condition,
            Ok(Request::Expire { .. }) => ExpireCondition::default(),
            other => panic!("{line}: {other:?}"),
        };
        assert_eq!(cond("EXPIRE k 1"), ExpireCondition::default());
        assert_eq!(cond("PEXPIREAT k 1 xx gt"), ExpireCondition { xx: true, gt: true, ..Default::default() });
        assert_eq!(cond("EXPIRE k 1 LT XX LT"), ExpireCondition { xx: true, lt: true, ..Default::default() });
        assert_eq!(cond("EXPIREAT k 1 NX NX"), ExpireCondition { nx: true, ..Default::default() });
        assert!(matches!(parse("EXPIRE k 1"), Ok(Request::Expire { .. })), "a plain EXPIRE keeps its variant");
    }

    #[test]
    fn copy_keeps_db_for_later() {
        let Ok(Request::Copy { db, replace, .. }) = parse("COPY a b db 3 REPLACE") else { panic!("parsed") };
        assert_eq!((db, replace), (Some(3), true));
        let Ok(Request::Copy { db, replace, .. }) = parse("COPY a b") else { panic!("parsed") };
        assert_eq!((db, replace), (None, false));
    }
}
