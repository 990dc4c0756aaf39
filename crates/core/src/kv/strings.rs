//! The string and keyspace commands added after the first set: GETEX, SETEX, SETRANGE,
//! GETRANGE, the bit commands, LCS, RENAME, COPY, EXPIRETIME, OBJECT, TOUCH and RANDOMKEY, and
//! the pure decisions behind them (ranges, bit counts, the LCS table, EXPIRE's conditions,
//! the encoding OBJECT reports). What they answer, and where they differ from Redis, is in
//! the module essay (`kv/mod.rs`).
//!
//! Every write goes through the store's `write` and `delete`, so it is versioned and captured
//! for replication like any other; a command that writes two keys (RENAME) writes both in
//! the one `execute` call.

use super::number::parse_int;
use super::parse_strings::BIT_OFFSET_ERROR;
use super::request::{BitRange, ExpireCondition, Expiry, GetExExpiry, LcsAnswer, ObjectField, Reply, OBJECT_HELP};
use super::store::{resolve, Store};
use crate::error::Result;
use crate::storage::{Engine, Meta};
use bytes::{Bytes, BytesMut};
use std::ops::{Bound, Range};

/// Cells of the table LCS fills at most: (length of the first value + 1) × (length of the
/// second + 1), four bytes each, so 64 MiB and some tens of milliseconds at most (two values
/// of about 4 KiB). Redis's own bound is its proto-max-bulk-len of table bytes (512 MiB).
pub const LCS_CELLS_MAX: u64 = 1 << 24;

/// Up to this many engine entries (keys and tombstones), RANDOMKEY reads them all and draws
/// uniformly among the live keys; past it, it probes (see [`RANDOMKEY_PROBES_MAX`]).
pub const RANDOMKEY_EXACT_ENTRIES_MAX: usize = 4096;

/// Points RANDOMKEY probes at most in a large keyspace (each [`RANDOMKEY_DESCENT_BYTES`] deep)
/// before it answers nil (every entry it saw was a tombstone or an expired key).
pub const RANDOMKEY_PROBES_MAX: usize = 8;

/// Entries one RANDOMKEY probe reads from its point; it draws uniformly among the live keys
/// among them.
pub const RANDOMKEY_WINDOW_ENTRIES: usize = 64;

/// Bytes past the keys' common prefix that RANDOMKEY's point descends at most.
pub const RANDOMKEY_DESCENT_BYTES: usize = 8;

/// Redis's longest "embstr" string (`OBJ_ENCODING_EMBSTR_SIZE_LIMIT`).
const ENCODING_EMBSTR_BYTES_MAX: usize = 44;

/// Redis's longest string it tries as an "int" (`tryObjectEncoding`).
const ENCODING_INT_BYTES_MAX: usize = 20;

/// Redis's error for a string that would outgrow the largest value.
const STRING_TOO_LONG: &str = "string exceeds maximum allowed size (proto-max-bulk-len)";

/// Redis's OBJECT FREQ error when the maxmemory policy is not LFU (replikv has no eviction).
const FREQ_NOT_TRACKED: &str = "An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.";

impl<E: Engine> Store<E> {
    /// GETEX: the value, after changing its deadline as `expiry` says. As Redis, the amount is
    /// checked only once the key is known to exist.
    pub(super) fn getex(&mut self, now_ms: u64, key: Bytes, expiry: GetExExpiry) -> Result<Reply> {
        let Some(live) = self.live(&key, now_ms)? else { return Ok(Reply::Nil) };
        let value = live.value.clone();
        match expiry {
            GetExExpiry::Keep => {}
            GetExExpiry::Persist if live.expire_at_ms.is_none() => {}
            GetExExpiry::Persist => self.write(now_ms, key, live.value, None)?,
            GetExExpiry::Set { amount, seconds, absolute } => {
                match getex_deadline(&amount, seconds, absolute, now_ms) {
                    Err(reply) => return Ok(reply),
                    Ok(at) if at <= now_ms => self.delete(now_ms, key)?,
                    Ok(at) => self.write(now_ms, key, live.value, Some(at))?,
                }
            }
        }
        Ok(Reply::Bulk(value))
    }

    /// SETEX / PSETEX: OK, with a deadline `ttl_ms` from now.
    pub(super) fn setex(&mut self, now_ms: u64, key: Bytes, value: Bytes, ttl_ms: i64, command: &str) -> Result<Reply> {
        match resolve(Expiry::InMs(ttl_ms), now_ms, None) {
            Ok(deadline) => {
                self.write(now_ms, key, value, deadline)?;
                Ok(Reply::Ok)
            }
            Err(()) => Ok(Reply::err(format!("invalid expire time in '{command}' command"))),
        }
    }

    /// SETRANGE: the new length. Writing nothing writes nothing (and creates no key); the
    /// deadline is kept.
    pub(super) fn setrange(&mut self, now_ms: u64, key: Bytes, offset: u64, value: Bytes) -> Result<Reply> {
        let old = self.live(&key, now_ms)?;
        if value.is_empty() {
            return Ok(Reply::Int(old.map_or(0, |l| l.value.len() as i64)));
        }
        if offset.saturating_add(value.len() as u64) > self.value_bytes_max as u64 {
            return Ok(Reply::err(STRING_TOO_LONG));
        }
        let (old_value, deadline) = old.map_or((Bytes::new(), None), |l| (l.value, l.expire_at_ms));
        let new = set_range(&old_value, offset as usize, &value);
        let len = new.len() as i64;
        self.write(now_ms, key, new, deadline)?;
        Ok(Reply::Int(len))
    }

    /// GETRANGE / SUBSTR: the bytes in the range; empty when the key is absent.
    pub(super) fn getrange(&self, now_ms: u64, key: &[u8], start: i64, end: i64) -> Result<Reply> {
        let value = self.live(key, now_ms)?.map_or_else(Bytes::new, |l| l.value);
        Ok(Reply::Bulk(byte_range(value.len(), start, end).map_or_else(Bytes::new, |r| value.slice(r))))
    }

    /// SETBIT: the bit's old value. As Redis, nothing is written when the bit already has the
    /// value and the string need not grow.
    pub(super) fn setbit(&mut self, now_ms: u64, key: Bytes, offset: u64, bit: bool) -> Result<Reply> {
        let Some(byte) = self.bit_byte(offset) else { return Ok(Reply::err(BIT_OFFSET_ERROR)) };
        let old = self.live(&key, now_ms)?;
        let mask = bit_mask(offset);
        let was = old.as_ref().and_then(|l| l.value.get(byte)).is_some_and(|b| b & mask != 0);
        let fits = old.as_ref().is_some_and(|l| byte < l.value.len());
        if fits && was == bit {
            return Ok(Reply::Int(i64::from(was)));
        }
        let (old_value, deadline) = old.map_or((Bytes::new(), None), |l| (l.value, l.expire_at_ms));
        let mut new = BytesMut::from(&old_value[..]);
        if new.len() <= byte {
            new.resize(byte + 1, 0);
        }
        if bit {
            new[byte] |= mask;
        } else {
            new[byte] &= !mask;
        }
        self.write(now_ms, key, new.freeze(), deadline)?;
        Ok(Reply::Int(i64::from(was)))
    }

    /// GETBIT: the bit, 0 past the end or when the key is absent.
    pub(super) fn getbit(&self, now_ms: u64, key: &[u8], offset: u64) -> Result<Reply> {
        let Some(byte) = self.bit_byte(offset) else { return Ok(Reply::err(BIT_OFFSET_ERROR)) };
        let value = self.live(key, now_ms)?.map_or_else(Bytes::new, |l| l.value);
        Ok(Reply::Int(i64::from(value.get(byte).is_some_and(|b| b & bit_mask(offset) != 0))))
    }

    /// The byte a bit offset falls in, if that byte is within the largest value (Redis checks
    /// the same against its proto-max-bulk-len).
    fn bit_byte(&self, offset: u64) -> Option<usize> {
        usize::try_from(offset >> 3).ok().filter(|byte| *byte < self.value_bytes_max)
    }

    /// BITCOUNT: the bits set in the range; 0 when the key is absent.
    pub(super) fn bitcount(&self, now_ms: u64, key: &[u8], range: Option<BitRange>) -> Result<Reply> {
        let value = self.live(key, now_ms)?.map_or_else(Bytes::new, |l| l.value);
        Ok(Reply::Int(bit_count(&value, range)))
    }

    /// LCS: an absent key is an empty string; refused when the table would pass
    /// [`LCS_CELLS_MAX`].
    pub(super) fn lcs(&self, now_ms: u64, a: &[u8], b: &[u8], answer: LcsAnswer) -> Result<Reply> {
        let a = self.live(a, now_ms)?.map_or_else(Bytes::new, |l| l.value);
        let b = self.live(b, now_ms)?.map_or_else(Bytes::new, |l| l.value);
        let cells = (a.len() as u64 + 1) * (b.len() as u64 + 1);
        if cells > LCS_CELLS_MAX {
            return Ok(Reply::err(format!(
                "LCS of values of {} and {} bytes needs {cells} table cells, over the limit of {LCS_CELLS_MAX} cells",
                a.len(),
                b.len()
            )));
        }
        Ok(lcs_reply(&a, &b, answer))
    }

    /// RENAME / RENAMENX: moves the value and its deadline (a write of the destination and a
    /// delete of the source, in this one call).
    pub(super) fn rename(&mut self, now_ms: u64, source: Bytes, destination: Bytes, if_absent: bool) -> Result<Reply> {
        let done = |moved: bool| match (if_absent, moved) {
            (true, moved) => Reply::Int(i64::from(moved)),
            (false, _) => Reply::Ok,
        };
        if !self.exists(&source, now_ms) {
            return Ok(Reply::err("no such key"));
        }
        if source == destination || (if_absent && self.exists(&destination, now_ms)) {
            return Ok(done(false));
        }
        let live = self.live(&source, now_ms)?.expect("the source exists: checked above, same request");
        self.write(now_ms, destination, live.value, live.expire_at_ms)?;
        self.delete(now_ms, source)?;
        Ok(done(true))
    }

    /// COPY: 1 if the value and its deadline were copied.
    pub(super) fn copy(
        &mut self,
        now_ms: u64,
        source: Bytes,
        destination: Bytes,
        db: Option<i64>,
        replace: bool,
    ) -> Result<Reply> {
        let destination = match db {
            None => destination,
            Some(db) => {
                let Some(db) = u32::try_from(db).ok().filter(|db| *db < self.databases) else {
                    return Ok(Reply::err("DB index is out of range"));
                };
                let (_, key) = super::databases::logical(&destination).expect("a client's key");
                super::databases::physical(self.db_map.namespace(db as u8), &key)
            }
        };
        if source == destination {
            return Ok(Reply::err("source and destination objects are the same"));
        }
        let Some(live) = self.live(&source, now_ms)? else { return Ok(Reply::Int(0)) };
        if !replace && self.exists(&destination, now_ms) {
            return Ok(Reply::Int(0));
        }
        self.write(now_ms, destination, live.value, live.expire_at_ms)?;
        Ok(Reply::Int(1))
    }

    /// EXPIRETIME / PEXPIRETIME: the deadline as Unix seconds (rounded to the nearest, as
    /// Redis) or milliseconds; -1 without one, -2 if absent.
    pub(super) fn expire_time(&self, now_ms: u64, key: &[u8], millis: bool) -> Reply {
        match self.live_meta(key, now_ms).map(|m| m.expire_at_ms) {
            None => Reply::Int(-2),
            Some(None) => Reply::Int(-1),
            Some(Some(at)) if millis => Reply::Int(at as i64),
            Some(Some(at)) => Reply::Int(at.saturating_add(500) as i64 / 1000),
        }
    }

    /// OBJECT ENCODING|FREQ|IDLETIME|REFCOUNT: nil when the key is absent.
    pub(super) fn object(&self, now_ms: u64, field: ObjectField, key: &[u8]) -> Result<Reply> {
        let Some(meta) = self.live_meta(key, now_ms) else { return Ok(Reply::Nil) };
        Ok(match field {
            // Past embstr's length the value cannot be "int" either: no need to read it.
            ObjectField::Encoding if meta.value_len as usize > ENCODING_EMBSTR_BYTES_MAX => encoding_reply("raw"),
            ObjectField::Encoding => {
                let value = self.live(key, now_ms)?.map_or_else(Bytes::new, |l| l.value);
                encoding_reply(encoding_of(&value))
            }
            ObjectField::Freq => Reply::err(FREQ_NOT_TRACKED),
            ObjectField::IdleTime => Reply::Int(0),
            ObjectField::RefCount => Reply::Int(1),
        })
    }

    /// TOUCH: how many of the keys exist.
    pub(super) fn touch(&self, now_ms: u64, keys: &[Bytes]) -> Reply {
        Reply::Int(keys.iter().filter(|k| self.exists(k, now_ms)).count() as i64)
    }

    /// RANDOMKEY: a live key, or nil. See the module essay for the distribution.
    pub(super) fn random_key(&mut self, now_ms: u64) -> Reply {
        let stats = self.engine.stats();
        if stats.keys == 0 {
            return Reply::Nil;
        }
        // Only keys of the current database, given back as the client named them.
        let ns = self.ns;
        let live = |(key, meta): (Bytes, Meta)| {
            let live = !meta.tombstone && meta.expire_at_ms.is_none_or(|at| at > now_ms);
            live.then(|| super::databases::logical(&key)).flatten().filter(|(n, _)| *n == ns).map(|(_, key)| key)
        };
        let first = self.scan_ns(None, RANDOMKEY_EXACT_ENTRIES_MAX + 1);
        if first.len() <= RANDOMKEY_EXACT_ENTRIES_MAX {
            let keys: Vec<Bytes> = first.into_iter().filter_map(live).collect();
            return self.pick(keys);
        }
        let prefix = self.shared_prefix();
        for _ in 0..RANDOMKEY_PROBES_MAX {
            let point = self.descend(prefix.clone());
            let mut window = self.engine.scan(Bound::Included(&point), RANDOMKEY_WINDOW_ENTRIES);
            if window.len() < RANDOMKEY_WINDOW_ENTRIES {
                // Off the end of the keys: the window wraps around to the first ones.
                window.extend(self.engine.scan(Bound::Unbounded, RANDOMKEY_WINDOW_ENTRIES - window.len()));
            }
            let keys: Vec<Bytes> = window.into_iter().filter_map(live).collect();
            if !keys.is_empty() {
                return self.pick(keys);
            }
        }
        Reply::Nil
    }

    /// One of `keys`, drawn uniformly; nil when there is none.
    fn pick(&mut self, keys: Vec<Bytes>) -> Reply {
        if keys.is_empty() {
            return Reply::Nil;
        }
        let i = self.random.below(keys.len() as u64) as usize;
        Reply::Bulk(keys[i].clone())
    }

    /// The first entry at or after `from`, if any.
    fn entry_from(&self, from: Bound<&[u8]>) -> Option<Bytes> {
        self.engine.scan(from, 1).pop().map(|(key, _)| key)
    }

    /// The bytes every entry (key or tombstone) starts with: about log2 of the first key's
    /// length in one-entry scans.
    fn shared_prefix(&self) -> Vec<u8> {
        let first = self.entry_from(Bound::Unbounded).unwrap_or_default();
        // Every entry is at least `first`, so all share first[..d] if none reaches the
        // prefix's successor; that holds for d = 0 and, once false, stays false.
        let shared =
            |d: usize| successor(&first[..d]).is_none_or(|next| self.entry_from(Bound::Included(&next)).is_none());
        let (mut lo, mut hi) = (0, first.len());
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if shared(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        first[..lo].to_vec()
    }

    /// RANDOMKEY's point: from `prefix`, down at most [`RANDOMKEY_DESCENT_BYTES`] bytes, each
    /// drawn uniformly between the smallest and the largest byte that some entry under the
    /// point so far has next (or the point itself, when it is an entry). At most ten
    /// one-entry scans per byte.
    fn descend(&mut self, mut point: Vec<u8>) -> Vec<u8> {
        for _ in 0..RANDOMKEY_DESCENT_BYTES {
            let under = |key: &Bytes, point: &[u8]| key.starts_with(point) && key.len() > point.len();
            let Some(first) = self.entry_from(Bound::Included(&point)).filter(|k| k.starts_with(&point)) else {
                break; // nothing under the point: the window takes the entries after it
            };
            let is_entry = first.len() == point.len();
            let first = if is_entry { self.entry_from(Bound::Excluded(&point)) } else { Some(first) };
            let Some(first) = first.filter(|k| under(k, &point)) else { break };
            let low = first[point.len()];
            // The largest next byte: an entry at or after point+[c] under the point exists for
            // every c up to it, and for none past it.
            let reaches = |c: u8| {
                let probe = [&point[..], &[c]].concat();
                self.entry_from(Bound::Included(&probe)).is_some_and(|k| under(&k, &point))
            };
            let (mut lo, mut hi) = (low, u8::MAX);
            while lo < hi {
                let mid = lo + (hi - lo).div_ceil(2);
                if reaches(mid) {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            let choices = u64::from(lo - low) + 1 + u64::from(is_entry);
            let draw = self.random.below(choices);
            if is_entry && draw == 0 {
                break; // the point itself
            }
            point.push(low + (draw - u64::from(is_entry)) as u8);
        }
        point
    }
}

/// The smallest byte string greater than every string starting with `prefix`; `None` when
/// there is none (an empty prefix, or one of 0xff bytes only).
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let end = prefix.iter().rposition(|b| *b != u8::MAX)?;
    let mut next = prefix[..=end].to_vec();
    next[end] += 1;
    Some(next)
}

/// A xorshift64* generator for RANDOMKEY: small, seeded, reproducible; not for secrets.
#[derive(Clone, Debug)]
pub(super) struct Xorshift(u64);

impl Xorshift {
    /// A generator seeded from `seed` through splitmix64, so that nearby seeds (node ids)
    /// start far apart; never zero, which xorshift cannot leave.
    pub(super) fn seeded(seed: u64) -> Xorshift {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Xorshift(z.max(1))
    }

    /// The next number.
    pub(super) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0). The modulo's bias is below n / 2^64: nothing for the
    /// counts RANDOMKEY draws among.
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// GETEX's new deadline in Unix milliseconds, or Redis's error: the amount must be an
/// integer, positive, and not overflow once converted and added to `now_ms`.
fn getex_deadline(amount: &[u8], seconds: bool, absolute: bool, now_ms: u64) -> std::result::Result<u64, Reply> {
    let amount = parse_int(amount).ok_or_else(|| Reply::err("value is not an integer or out of range"))?;
    let invalid = || Reply::err("invalid expire time in 'getex' command");
    let ms = if seconds { amount.checked_mul(1000) } else { Some(amount) };
    let ms = ms.filter(|ms| *ms > 0).ok_or_else(invalid)?;
    let expiry = if absolute { Expiry::AtMs(ms) } else { Expiry::InMs(ms) };
    match resolve(expiry, now_ms, None) {
        Ok(Some(at)) => Ok(at),
        _ => Err(invalid()),
    }
}

/// Whether EXPIRE's `condition` lets a new deadline `when_ms` replace the key's current one
/// (`None`: no deadline, which counts as infinitely late). Redis's order: NX, XX, GT, LT.
pub(super) fn expire_allowed(condition: ExpireCondition, current_ms: Option<u64>, when_ms: i64) -> bool {
    let current = current_ms.map(|at| at as i64);
    if condition.nx && current.is_some() {
        return false;
    }
    if condition.xx && current.is_none() {
        return false;
    }
    if condition.gt && current.is_none_or(|at| when_ms <= at) {
        return false;
    }
    if condition.lt && current.is_some_and(|at| when_ms >= at) {
        return false;
    }
    true
}

/// `old` with `value` written at `offset`, padded with zero bytes to reach it.
pub(super) fn set_range(old: &[u8], offset: usize, value: &[u8]) -> Bytes {
    let mut new = BytesMut::zeroed(old.len().max(offset + value.len()));
    new[..old.len()].copy_from_slice(old);
    new[offset..offset + value.len()].copy_from_slice(value);
    new.freeze()
}

/// The bytes GETRANGE answers from a value of `len` bytes, as Redis: negative offsets count
/// from the end and clamp to the start; `end` clamps to the last byte; `None` when empty.
pub(super) fn byte_range(len: usize, start: i64, end: i64) -> Option<Range<usize>> {
    let len = len as i64;
    if start < 0 && end < 0 && start > end {
        return None;
    }
    let start = if start < 0 { len + start } else { start }.max(0);
    let end = if end < 0 { len + end } else { end }.max(0).min(len - 1);
    (start <= end && len > 0).then(|| start as usize..end as usize + 1)
}

/// The mask of bit `offset` within its byte (bit 0 is the first byte's most significant).
fn bit_mask(offset: u64) -> u8 {
    1 << (7 - (offset & 7))
}

/// BITCOUNT over `value`, as Redis: the range's offsets are bytes or bits, negative from
/// the end, clamped like GETRANGE's.
pub(super) fn bit_count(value: &[u8], range: Option<BitRange>) -> i64 {
    let ones = |bytes: &[u8]| bytes.iter().map(|b| i64::from(b.count_ones())).sum::<i64>();
    let Some(BitRange { start, end, bits }) = range else { return ones(value) };
    if start < 0 && end < 0 && start > end {
        return 0;
    }
    let total = if bits { value.len() as i64 * 8 } else { value.len() as i64 };
    let start = if start < 0 { total + start } else { start }.max(0);
    let end = if end < 0 { total + end } else { end }.max(0).min(total - 1);
    if start > end {
        return 0;
    }
    if !bits {
        return ones(&value[start as usize..=end as usize]);
    }
    let (first, last) = ((start >> 3) as usize, (end >> 3) as usize);
    let before = (start & 7) as u32; // bits of the first byte before `start`: its top ones
    let after = 7 - (end & 7) as u32; // bits of the last byte after `end`: its low ones
    let leading = value[first].checked_shr(8 - before).unwrap_or(0);
    let trailing = value[last] & ((1u16 << after) - 1) as u8;
    ones(&value[first..=last]) - i64::from(leading.count_ones()) - i64::from(trailing.count_ones())
}

/// The encoding OBJECT ENCODING reports for a value, judged from its bytes as Redis judges a
/// value it has just SET: "int" for an integer Redis would store as one, "embstr" up to 44
/// bytes, "raw" past them.
pub(super) fn encoding_of(value: &[u8]) -> &'static str {
    if value.len() <= ENCODING_INT_BYTES_MAX && parse_int(value).is_some() {
        "int"
    } else if value.len() <= ENCODING_EMBSTR_BYTES_MAX {
        "embstr"
    } else {
        "raw"
    }
}

/// OBJECT ENCODING's reply.
fn encoding_reply(encoding: &'static str) -> Reply {
    Reply::Bulk(Bytes::from_static(encoding.as_bytes()))
}

/// OBJECT HELP's reply.
pub(super) fn object_help() -> Reply {
    Reply::Array(OBJECT_HELP.iter().copied().map(Reply::Status).collect())
}

/// One matching range LCS IDX reports: inclusive byte offsets in each value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LcsMatch {
    /// The range's first and last byte in the first value.
    pub(super) a: (usize, usize),
    /// The range's first and last byte in the second value.
    pub(super) b: (usize, usize),
}

impl LcsMatch {
    /// The range's length in bytes.
    fn len(&self) -> usize {
        self.a.1 - self.a.0 + 1
    }
}

/// The LCS table: cell (i, j) holds the length of the LCS of a[..i] and b[..j].
fn lcs_table(a: &[u8], b: &[u8]) -> Vec<u32> {
    let cols = b.len() + 1;
    let mut table = vec![0u32; (a.len() + 1) * cols];
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            table[i * cols + j] = if a[i - 1] == b[j - 1] {
                table[(i - 1) * cols + j - 1] + 1
            } else {
                table[(i - 1) * cols + j].max(table[i * cols + j - 1])
            };
        }
    }
    table
}

/// The LCS itself and its matching ranges, last first, walking the table back from its
/// corner as Redis does (on a tie it moves along `b`), so that both answers are Redis's.
pub(super) fn lcs_walk(a: &[u8], b: &[u8]) -> (Vec<u8>, Vec<LcsMatch>) {
    let table = lcs_table(a, b);
    let cols = b.len() + 1;
    let at = |i: usize, j: usize| table[i * cols + j];
    let mut text = vec![0u8; at(a.len(), b.len()) as usize];
    let mut matches = Vec::new();
    let mut open: Option<LcsMatch> = None;
    let (mut i, mut j, mut k) = (a.len(), b.len(), text.len());
    while i > 0 && j > 0 {
        let close = if a[i - 1] == b[j - 1] {
            k -= 1;
            text[k] = a[i - 1];
            let range = open.get_or_insert(LcsMatch { a: (i, i - 1), b: (j, j - 1) });
            // A match right after another extends its range backwards: the walk leaves a
            // range only through a mismatch, which closes it.
            assert!(range.a.0 == i && range.b.0 == j, "LCS range {range:?} not contiguous with ({i}, {j})");
            range.a.0 -= 1;
            range.b.0 -= 1;
            i -= 1;
            j -= 1;
            // A range that reached the start of either value ends the walk.
            range.a.0 == 0 || range.b.0 == 0
        } else {
            if at(i - 1, j) > at(i, j - 1) {
                i -= 1;
            } else {
                j -= 1;
            }
            open.is_some()
        };
        if close {
            matches.extend(open.take());
        }
    }
    (text, matches)
}

/// LCS's reply for `answer`.
fn lcs_reply(a: &[u8], b: &[u8], answer: LcsAnswer) -> Reply {
    let (text, matches) = lcs_walk(a, b);
    match answer {
        LcsAnswer::Text => Reply::Bulk(Bytes::from(text)),
        LcsAnswer::Len => Reply::Int(text.len() as i64),
        LcsAnswer::Idx { min_match_len, with_match_len } => {
            let pair =
                |(start, end): (usize, usize)| Reply::Array(vec![Reply::Int(start as i64), Reply::Int(end as i64)]);
            let ranges = matches
                .iter()
                .filter(|m| m.len() as u64 >= min_match_len)
                .map(|m| {
                    let mut item = vec![pair(m.a), pair(m.b)];
                    if with_match_len {
                        item.push(Reply::Int(m.len() as i64));
                    }
                    Reply::Array(item)
                })
                .collect();
            // Redis answers a map; as an array of its keys and values, that is RESP2's shape.
            Reply::Array(vec![
                Reply::Bulk(Bytes::from_static(b"matches")),
                Reply::Array(ranges),
                Reply::Bulk(Bytes::from_static(b"len")),
                Reply::Int(text.len() as i64),
            ])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{parse_command, Request};
    use crate::storage::MemoryEngine;
    use crate::version::NodeId;

    const NOW_MS: u64 = 1_000_000;

    fn store() -> Store<MemoryEngine> {
        Store::new(MemoryEngine::new(), NodeId(1))
    }

    /// Runs one redis-cli-like line (arguments split on spaces) at `NOW_MS`.
    fn run(store: &mut Store<MemoryEngine>, line: &str) -> Reply {
        let args: Vec<Bytes> = line.split(' ').map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
        let request: Request = parse_command(&args).expect("known").expect("valid");
        store.execute(NOW_MS, request).expect("engine")
    }

    fn bulk(s: &[u8]) -> Reply {
        Reply::Bulk(Bytes::copy_from_slice(s))
    }

    #[test]
    fn lcs_matches_redis_documented_example() {
        let (text, matches) = lcs_walk(b"ohmytext", b"mynewtext");
        assert_eq!(text, b"mytext");
        assert_eq!(matches, [LcsMatch { a: (4, 7), b: (5, 8) }, LcsMatch { a: (2, 3), b: (0, 1) }]);
    }

    #[test]
    fn lcs_edges_and_ties() {
        type Ranges = &'static [((usize, usize), (usize, usize))];
        let table: &[(&str, &str, &str, Ranges)] = &[
            ("", "", "", &[]),
            ("", "abc", "", &[]),
            ("abc", "xyz", "", &[]),
            ("abc", "abc", "abc", &[((0, 2), (0, 2))]),
            // A tie moves along the second value, as Redis: "b", not "a".
            ("ab", "ba", "b", &[((1, 1), (0, 0))]),
            ("aXbXc", "abc", "abc", &[((4, 4), (2, 2)), ((2, 2), (1, 1)), ((0, 0), (0, 0))]),
        ];
        for (a, b, want, ranges) in table {
            let (text, matches) = lcs_walk(a.as_bytes(), b.as_bytes());
            assert_eq!(String::from_utf8(text).unwrap(), *want, "LCS({a:?}, {b:?})");
            let got: Vec<_> = matches.iter().map(|m| (m.a, m.b)).collect();
            assert_eq!(got, *ranges, "ranges of LCS({a:?}, {b:?})");
        }
    }

    /// The LCS's length by plain recursion, memoized: a reference independent of the table.
    fn lcs_len_reference(a: &[u8], b: &[u8]) -> usize {
        fn go(a: &[u8], b: &[u8], memo: &mut std::collections::BTreeMap<(usize, usize), usize>) -> usize {
            if a.is_empty() || b.is_empty() {
                return 0;
            }
            if let Some(n) = memo.get(&(a.len(), b.len())) {
                return *n;
            }
            let n = if a[0] == b[0] {
                1 + go(&a[1..], &b[1..], memo)
            } else {
                go(&a[1..], b, memo).max(go(a, &b[1..], memo))
            };
            memo.insert((a.len(), b.len()), n);
            n
        }
        go(a, b, &mut Default::default())
    }

    #[test]
    fn lcs_is_a_longest_common_subsequence_and_its_ranges_spell_it() {
        let mut random = Xorshift::seeded(7);
        for _ in 0..300 {
            let string = |random: &mut Xorshift| -> Vec<u8> {
                (0..random.below(12)).map(|_| b'a' + random.below(3) as u8).collect()
            };
            let (a, b) = (string(&mut random), string(&mut random));
            let (text, matches) = lcs_walk(&a, &b);
            assert_eq!(text.len(), lcs_len_reference(&a, &b), "length of LCS({a:?}, {b:?})");
            let mut spelled = Vec::new();
            for m in matches.iter().rev() {
                assert_eq!(a[m.a.0..=m.a.1], b[m.b.0..=m.b.1], "range {m:?} of LCS({a:?}, {b:?})");
                spelled.extend_from_slice(&a[m.a.0..=m.a.1]);
            }
            assert_eq!(spelled, text, "ranges of LCS({a:?}, {b:?})");
        }
    }

    #[test]
    fn lcs_refuses_a_table_over_its_limit() {
        let mut s = store();
        let side = 1usize << 12;
        s.write(NOW_MS, Bytes::from("a"), Bytes::from(vec![b'x'; side]), None).unwrap();
        s.write(NOW_MS, Bytes::from("b"), Bytes::from(vec![b'x'; side - 1]), None).unwrap();
        // 4097 * 4096 cells: just over 2^24.
        let Reply::Error(e) = run(&mut s, "LCS a b LEN") else { panic!("refused") };
        assert!(e.contains("needs 16781312 table cells, over the limit of 16777216 cells"), "{e}");
        // 4096 * 4096 cells: just fit.
        assert_eq!(run(&mut s, "LCS b b LEN"), Reply::Int(side as i64 - 1));
    }

    #[test]
    fn bit_count_follows_redis_documented_examples() {
        let range = |start, end, bits| Some(BitRange { start, end, bits });
        let table: &[(&[u8], Option<BitRange>, i64)] = &[
            (b"foobar", None, 26),
            (b"foobar", range(0, 0, false), 4),
            (b"foobar", range(1, 1, false), 6),
            (b"foobar", range(5, 30, true), 17),
            (b"foobar", range(0, -1, true), 26),
            (b"foobar", range(0, 100, false), 26),
            (b"foobar", range(-2, -1, false), 7),
            (b"foobar", range(-1, -2, false), 0),
            (b"foobar", range(4, 2, false), 0),
            (b"", range(0, -1, false), 0),
            (b"", range(0, -1, true), 0),
            (b"\xff", range(1, 6, true), 6),
            (b"\xff", range(-100, -1, true), 8),
        ];
        for (value, range, want) in table {
            assert_eq!(bit_count(value, *range), *want, "{value:?} {range:?}");
        }
    }

    #[test]
    fn bit_count_in_bits_agrees_with_counting_bit_by_bit() {
        let value = b"\x5a\xf0\x0f\x81";
        let bit = |i: i64| value[(i / 8) as usize] >> (7 - i % 8) & 1;
        let total = value.len() as i64 * 8;
        for start in -40..40 {
            for end in -40..40 {
                let range = Some(BitRange { start, end, bits: true });
                let (s, e) = (if start < 0 { total + start } else { start }, if end < 0 { total + end } else { end });
                let want = if start < 0 && end < 0 && start > end {
                    0
                } else {
                    (s.max(0)..=e.max(0).min(total - 1)).map(|i| i64::from(bit(i))).sum()
                };
                assert_eq!(bit_count(value, range), want, "BITCOUNT {start} {end} BIT");
            }
        }
    }

    #[test]
    fn byte_range_follows_redis() {
        let value = b"This is a string";
        let table: &[(i64, i64, &[u8])] = &[
            (0, 3, b"This"),
            (-3, -1, b"ing"),
            (0, -1, b"This is a string"),
            (10, 100, b"string"),
            (5, 3, b""),
            (-1, -5, b""),
            // Redis clamps a negative end to 0, so this is the first byte, not nothing.
            (0, -100, b"T"),
            (-100, 2, b"Thi"),
            (i64::MIN, i64::MAX, b"This is a string"),
            (100, 200, b""),
        ];
        for (start, end, want) in table {
            let got = byte_range(value.len(), *start, *end).map_or(&b""[..], |r| &value[r]);
            assert_eq!(got, *want, "GETRANGE {start} {end}");
        }
        assert_eq!(byte_range(0, 0, -1), None);
    }

    #[test]
    fn set_range_grows_with_zero_bytes() {
        // (old value, offset, value written, new value)
        type Case = (&'static [u8], usize, &'static [u8], &'static [u8]);
        let table: &[Case] = &[
            (b"Hello World", 6, b"Redis", b"Hello Redis"),
            (b"", 6, b"Redis", b"\0\0\0\0\0\0Redis"),
            (b"ab", 1, b"xyz", b"axyz"),
            (b"abcdef", 0, b"X", b"Xbcdef"),
            (b"ab", 4, b"c", b"ab\0\0c"),
        ];
        for (old, offset, value, want) in table {
            assert_eq!(&set_range(old, *offset, value)[..], *want, "SETRANGE {old:?} {offset} {value:?}");
        }
    }

    #[test]
    fn setrange_and_setbit_stay_within_the_value_limit() {
        let mut s = store();
        s.limit_values(16);
        assert_eq!(run(&mut s, "SETRANGE k 10 abcdef"), Reply::Int(16));
        assert_eq!(run(&mut s, "SETRANGE k 11 abcdef"), Reply::err(STRING_TOO_LONG));
        assert_eq!(run(&mut s, "SETRANGE k 9223372036854775807 a"), Reply::err(STRING_TOO_LONG));
        // Writing nothing is no write, whatever the offset.
        assert_eq!(run(&mut s, "SETRANGE k 100 "), Reply::Int(16));
        assert_eq!(run(&mut s, "SETBIT b 127 1"), Reply::Int(0));
        assert_eq!(run(&mut s, "STRLEN b"), Reply::Int(16));
        assert_eq!(run(&mut s, "SETBIT b 128 1"), Reply::err(BIT_OFFSET_ERROR));
        assert_eq!(run(&mut s, "GETBIT b 128"), Reply::err(BIT_OFFSET_ERROR));
        assert_eq!(run(&mut s, "GETBIT b 127"), Reply::Int(1));
    }

    #[test]
    fn expire_conditions_follow_redis() {
        let c = |nx, xx, gt, lt| ExpireCondition { nx, xx, gt, lt };
        let none = c(false, false, false, false);
        // (condition, current deadline, new deadline, applies)
        let table: &[(ExpireCondition, Option<u64>, i64, bool)] = &[
            (none, None, 50, true),
            (none, Some(100), 50, true),
            (c(true, false, false, false), None, 50, true),
            (c(true, false, false, false), Some(100), 150, false),
            (c(false, true, false, false), None, 50, false),
            (c(false, true, false, false), Some(100), 50, true),
            // GT: no deadline is infinitely late, so nothing is later.
            (c(false, false, true, false), None, i64::MAX, false),
            (c(false, false, true, false), Some(100), 150, true),
            (c(false, false, true, false), Some(100), 100, false),
            (c(false, false, true, false), Some(100), 50, false),
            // LT: no deadline is infinitely late, so anything is earlier.
            (c(false, false, false, true), None, i64::MAX, true),
            (c(false, false, false, true), None, -5, true),
            (c(false, false, false, true), Some(100), 50, true),
            (c(false, false, false, true), Some(100), 100, false),
            (c(false, false, false, true), Some(100), 150, false),
            (c(false, true, true, false), None, 150, false),
            (c(false, true, true, false), Some(100), 150, true),
            (c(false, true, false, true), None, 50, false),
            (c(false, true, false, true), Some(100), 50, true),
        ];
        for (condition, current, when, want) in table {
            assert_eq!(expire_allowed(*condition, *current, *when), *want, "{condition:?} {current:?} {when}");
        }
    }

    #[test]
    fn encoding_is_judged_from_the_bytes() {
        let table: &[(&[u8], &str)] = &[
            (b"123", "int"),
            (b"-1", "int"),
            (b"0", "int"),
            (b"-9223372036854775808", "int"),
            (b"9223372036854775808", "embstr"),
            (b"01", "embstr"),
            (b"+1", "embstr"),
            (b" 1", "embstr"),
            (b"", "embstr"),
            (&[b'x'; 44], "embstr"),
            (&[b'x'; 45], "raw"),
        ];
        for (value, want) in table {
            assert_eq!(encoding_of(value), *want, "{:?}", value.escape_ascii().to_string());
        }
    }

    #[test]
    fn a_request_logs_old_values_in_full_up_to_its_budget_then_only_their_lengths() {
        use crate::replication::record::{OLD_VALUES_LOGGED_BYTES_PER_REQUEST_MAX, OLD_VALUE_LOGGED_BYTES_MAX};
        use crate::replication::Old;
        let mut s = store();
        s.capture_changes();
        let full = OLD_VALUES_LOGGED_BYTES_PER_REQUEST_MAX / OLD_VALUE_LOGGED_BYTES_MAX;
        for i in 0..full + 2 {
            s.write(NOW_MS, Bytes::from(format!("k{i:02}")), Bytes::from(vec![b'v'; OLD_VALUE_LOGGED_BYTES_MAX]), None)
                .unwrap();
        }
        s.write(NOW_MS, Bytes::from("big"), Bytes::from(vec![b'v'; OLD_VALUE_LOGGED_BYTES_MAX + 1]), None).unwrap();
        s.take_logged();
        assert_eq!(run(&mut s, "FLUSHALL"), Reply::Ok);
        let (changes, olds) = s.take_logged();
        assert_eq!((changes.len(), olds.len()), (full + 3, full + 3));
        let held = olds.iter().filter(|o| matches!(o, Old::Held(_))).count();
        assert_eq!(held, full, "old values in full up to the request's budget");
        for (change, old) in changes.iter().zip(&olds) {
            if let Old::Omitted { bytes, .. } = old {
                let want =
                    if &change.key[..] == b"big" { OLD_VALUE_LOGGED_BYTES_MAX + 1 } else { OLD_VALUE_LOGGED_BYTES_MAX };
                assert_eq!(*bytes as usize, want, "the length of the value not logged");
            }
        }
        assert!(olds
            .iter()
            .any(|o| matches!(o, Old::Omitted { bytes, .. } if *bytes as usize > OLD_VALUE_LOGGED_BYTES_MAX)));
        assert_eq!(run(&mut s, "SET k00 x"), Reply::Ok);
        let (_, olds) = s.take_logged();
        assert!(
            matches!(&olds[..], [Old::Held(r)] if r.value.is_none()),
            "the next request's budget is whole: {olds:?}"
        );
    }

    #[test]
    fn rename_moves_value_and_deadline_as_two_captured_writes() {
        let mut s = store();
        s.capture_changes();
        s.write(NOW_MS, Bytes::from("src"), Bytes::from("v"), Some(NOW_MS + 5000)).unwrap();
        s.take_changes();
        assert_eq!(run(&mut s, "RENAME src dst"), Reply::Ok);
        let changes = s.take_changes();
        let summary: Vec<_> =
            changes.iter().map(|c| (&c.key[..], c.record.value.is_some(), c.record.expire_at_ms)).collect();
        assert_eq!(summary, [(&b"dst"[..], true, Some(NOW_MS + 5000)), (&b"src"[..], false, None)]);
        assert!(changes[0].record.version < changes[1].record.version, "each write has its own version");
        assert_eq!(run(&mut s, "PTTL dst"), Reply::Int(5000));
        assert_eq!(run(&mut s, "RENAME src dst"), Reply::err("no such key"));
        assert_eq!(run(&mut s, "RENAME dst dst"), Reply::Ok);
        assert_eq!(run(&mut s, "RENAMENX dst dst"), Reply::Int(0));
        assert!(s.take_changes().is_empty(), "failed or no-op renames write nothing");
    }

    #[test]
    fn setbit_that_changes_nothing_writes_nothing() {
        let mut s = store();
        s.capture_changes();
        assert_eq!(run(&mut s, "SETBIT k 7 1"), Reply::Int(0));
        assert_eq!(s.take_changes().len(), 1);
        assert_eq!(run(&mut s, "SETBIT k 7 1"), Reply::Int(1));
        assert_eq!(run(&mut s, "SETBIT k 3 0"), Reply::Int(0));
        assert!(s.take_changes().is_empty(), "no bit changed and the value did not grow");
        // A 0 written past the end still grows the value, as Redis.
        assert_eq!(run(&mut s, "SETBIT k 15 0"), Reply::Int(0));
        assert_eq!(run(&mut s, "GET k"), bulk(b"\x01\x00"));
    }

    #[test]
    fn randomkey_draws_every_key_of_a_small_keyspace() {
        let mut s = store();
        assert_eq!(run(&mut s, "RANDOMKEY"), Reply::Nil);
        for key in ["a", "b", "c"] {
            run(&mut s, &format!("SET {key} 1"));
        }
        s.write(NOW_MS, Bytes::from("gone"), Bytes::from("1"), Some(NOW_MS)).unwrap();
        run(&mut s, "DEL c");
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..300 {
            let Reply::Bulk(key) = run(&mut s, "RANDOMKEY") else { panic!("a key") };
            *seen.entry(key).or_insert(0) += 1;
        }
        let keys: Vec<_> = seen.keys().map(|k| &k[..]).collect();
        assert_eq!(keys, [&b"a"[..], b"b"], "only live keys: {seen:?}");
        assert!(seen.values().all(|n| *n > 100), "about even: {seen:?}");
    }

    #[test]
    fn randomkey_spreads_over_a_large_keyspace_and_skips_dead_keys() {
        let mut s = store();
        let keys = 20_000usize;
        for i in 0..keys {
            // Every third key expired at NOW_MS, every fifth deleted: RANDOMKEY must skip them.
            let deadline = i.is_multiple_of(3).then_some(NOW_MS);
            s.write(NOW_MS - 1, Bytes::from(format!("user:{i}")), Bytes::from("v"), deadline).unwrap();
            if i.is_multiple_of(5) {
                s.delete(NOW_MS - 1, Bytes::from(format!("user:{i}"))).unwrap();
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        let draws = 2000;
        for _ in 0..draws {
            let Reply::Bulk(key) = run(&mut s, "RANDOMKEY") else { panic!("a key") };
            let i: usize = std::str::from_utf8(&key[5..]).unwrap().parse().unwrap();
            assert!(!i.is_multiple_of(3) && !i.is_multiple_of(5), "drew dead key {i}");
            seen.insert(i);
        }
        // Uniform draws would see about 1800 distinct keys of the 10,667 live ones; the descent
        // is biased (this seed: 1555) but must not collapse onto a few.
        assert!(seen.len() > draws / 2, "{} distinct keys in {draws} draws", seen.len());
        // The bias the essay documents: the dense half (user:10000 to user:19999, under the one
        // branch "user:1") is drawn far less than half the time (this seed: 186 distinct keys
        // against 1369), but it is drawn.
        let spread = |range: std::ops::Range<usize>| seen.iter().filter(|i| range.contains(i)).count();
        let (sparse, dense) = (spread(0..10_000), spread(10_000..20_000));
        assert!(sparse > dense && dense > draws / 20, "{sparse} distinct keys below 10000, {dense} above");
    }

    #[test]
    fn randomkey_is_reproducible_from_the_node_id() {
        let draws = |node| {
            let mut s = Store::new(MemoryEngine::new(), NodeId(node));
            for i in 0..100 {
                run(&mut s, &format!("SET k{i} v"));
            }
            (0..20).map(|_| run(&mut s, "RANDOMKEY")).collect::<Vec<_>>()
        };
        assert_eq!(draws(1), draws(1));
        assert_ne!(draws(1), draws(2));
    }

    #[test]
    fn shared_prefix_and_successor() {
        let mut s = store();
        for key in ["user:100", "user:250", "user:999x"] {
            s.write(NOW_MS, Bytes::from(key), Bytes::from("v"), None).unwrap();
        }
        assert_eq!(s.shared_prefix(), b"user:");
        s.write(NOW_MS, Bytes::from("user"), Bytes::from("v"), None).unwrap();
        assert_eq!(s.shared_prefix(), b"user");
        s.delete(NOW_MS, Bytes::from("a")).unwrap();
        assert_eq!(s.shared_prefix(), b"", "tombstones count: they are entries");
        assert_eq!(successor(b"ab\xff"), Some(b"ac".to_vec()));
        assert_eq!(successor(b"\xff\xff"), None);
        assert_eq!(successor(b""), None);
    }

    #[test]
    fn object_help_keeps_redis_text() {
        let Reply::Array(lines) = object_help() else { panic!("an array") };
        assert_eq!(lines.len(), 15);
        assert_eq!(lines[0], Reply::Status("OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"));
        assert_eq!(lines[14], Reply::Status("    Print this help."), "indented, as Redis");
    }

    #[test]
    fn new_requests_and_replies_cross_the_wire() {
        // A follower forwards requests and the leader answers, both in postcard: the names
        // held as `&'static str` must map back onto the known ones.
        let requests = [
            Request::SetEx { key: Bytes::from("k"), value: Bytes::from("v"), ttl_ms: 5, command: "psetex" },
            Request::ExpireIf {
                key: Bytes::from("k"),
                expiry: Expiry::InMs(5),
                command: "pexpireat",
                condition: ExpireCondition { xx: true, gt: true, ..Default::default() },
            },
            Request::GetEx {
                key: Bytes::from("k"),
                expiry: GetExExpiry::Set { amount: Bytes::from("x"), seconds: true, absolute: false },
            },
            Request::Copy { source: Bytes::from("a"), destination: Bytes::from("b"), db: Some(3), replace: true },
            Request::RandomKey,
        ];
        for request in requests {
            let bytes = postcard::to_allocvec(&request).unwrap();
            assert_eq!(postcard::from_bytes::<Request>(&bytes).unwrap(), request);
        }
        let Reply::Array(help) = object_help() else { panic!("an array") };
        for line in help {
            let bytes = postcard::to_allocvec(&line).unwrap();
            assert_eq!(postcard::from_bytes::<Reply>(&bytes).unwrap(), line);
        }
    }
}
