//! The log engine's on-disk encoding: file names, records, hint entries and the hint trailer.
//! Pure functions over bytes; the layout is documented byte by byte in the module above.

use crate::storage::{Meta, KEY_BYTES_MAX, VALUE_BYTES_MAX};
use crate::version::{NodeId, Timestamp, Version};
use std::fmt;

/// Bytes in a record header, before the key.
pub(super) const HEADER_BYTES: usize = 45;

/// Bytes of the fields that describe a record (kind to expiry), shared by record headers (at
/// offset 8) and hint entries (at offset 8).
const FIELDS_BYTES: usize = 37;

/// Bytes in a hint entry before its key: the record's offset, then its fields.
const HINT_ENTRY_BYTES: usize = 8 + FIELDS_BYTES;

/// Bytes in a hint file's trailer: the segment length it covers, then the checksum.
pub(super) const HINT_TRAILER_BYTES: usize = 12;

/// The largest generation a file name holds: five digits keep names sorting as numbers.
pub(super) const GEN_MAX: u32 = 99_999;

/// The extension of a segment file.
pub(super) const SEGMENT_EXT: &str = "seg";

/// The extension of a hint file.
pub(super) const HINT_EXT: &str = "hint";

/// The extension of a compaction output until the compaction finishes.
pub(super) const PART_EXT: &str = "compacting";

/// The record kind of a value.
const KIND_VALUE: u8 = 1;

/// The record kind of a tombstone.
const KIND_TOMBSTONE: u8 = 2;

/// A segment's identity, ordered as recovery reads segments: by base, then generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct SegmentId {
    /// The segment's sequence number; the active segment has the greatest.
    pub(super) base: u64,
    /// 0 for a segment written by puts, 1 and up for compaction outputs.
    pub(super) gen: u32,
}

impl SegmentId {
    /// The file name of this segment's file with extension `ext`.
    pub(super) fn file_name(self, ext: &str) -> String {
        assert!(self.gen <= GEN_MAX, "segment generation {} exceeds GEN_MAX", self.gen);
        format!("{:020}-{:05}.{ext}", self.base, self.gen)
    }

    /// The segment id and extension of a file name, or `None` if the engine did not write it.
    pub(super) fn parse(name: &str) -> Option<(SegmentId, &str)> {
        let (stem, ext) = name.split_once('.')?;
        let (base, gen) = stem.split_once('-')?;
        let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(base, 20) || !digits(gen, 5) {
            return None;
        }
        Some((SegmentId { base: base.parse().ok()?, gen: gen.parse().ok()? }, ext))
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.base, self.gen)
    }
}

/// A decoded record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Header {
    /// What the record says of itself.
    pub(super) meta: Meta,
    /// The key's length in bytes.
    pub(super) key_len: u32,
    /// crc32c of the key followed by the value.
    pub(super) body_crc: u32,
}

impl Header {
    /// The whole record's length in bytes.
    pub(super) fn record_bytes(&self) -> u64 {
        record_bytes(self.key_len as usize, self.meta.value_len)
    }
}

/// Why a header did not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum HeaderError {
    /// The header checksum does not match: damaged, or never completely written.
    Checksum,
    /// The checksum matches but a field breaks a rule: written wrong, not torn.
    Invalid(String),
}

/// The length in bytes of a record of a `key_len`-byte key and a `value_len`-byte value.
pub(super) fn record_bytes(key_len: usize, value_len: u32) -> u64 {
    HEADER_BYTES as u64 + key_len as u64 + u64::from(value_len)
}

/// Appends the record of `key` (value `value`, described by `meta`) to `out`.
pub(super) fn encode_record(key: &[u8], meta: &Meta, value: &[u8], out: &mut Vec<u8>) {
    assert_eq!(meta.value_len as usize, value.len(), "meta does not describe the value");
    let start = out.len();
    let body_crc = crc32c::crc32c_append(crc32c::crc32c(key), value);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&body_crc.to_le_bytes());
    encode_fields(key.len(), meta, out);
    let header_crc = crc32c::crc32c(&out[start + 4..start + HEADER_BYTES]);
    out[start..start + 4].copy_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
}

/// Decodes a record header, checking its checksum and its fields.
pub(super) fn decode_header(bytes: &[u8]) -> Result<Header, HeaderError> {
    assert_eq!(bytes.len(), HEADER_BYTES, "a header is {HEADER_BYTES} bytes");
    if crc32c::crc32c(&bytes[4..]) != le_u32(bytes, 0) {
        return Err(HeaderError::Checksum);
    }
    let (meta, key_len) = decode_fields(&bytes[8..]).map_err(HeaderError::Invalid)?;
    Ok(Header { meta, key_len, body_crc: le_u32(bytes, 4) })
}

/// The records of `bytes`, whole records back to back as a segment holds them (physical
/// replication's extents): each key and record, every header and body checked. An error is
/// the offset in `bytes` of the record that failed, and why; nothing is returned then.
pub fn decode_records(bytes: &[u8]) -> Result<Vec<(bytes::Bytes, crate::storage::Record)>, (usize, String)> {
    let shared = bytes::Bytes::copy_from_slice(bytes);
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let Some(head) = bytes.get(at..at + HEADER_BYTES) else {
            return Err((at, format!("{} bytes left, fewer than a record header", bytes.len() - at)));
        };
        let header = match decode_header(head) {
            Ok(header) => header,
            Err(HeaderError::Checksum) => return Err((at, "record header checksum mismatch".into())),
            Err(HeaderError::Invalid(why)) => return Err((at, why)),
        };
        let end = usize::try_from(header.record_bytes()).ok().and_then(|n| at.checked_add(n));
        let Some(body) = end.and_then(|end| bytes.get(at + HEADER_BYTES..end)) else {
            return Err((at, format!("record of {} bytes runs past the end", header.record_bytes())));
        };
        if crc32c::crc32c(body) != header.body_crc {
            return Err((at, "record body checksum mismatch".into()));
        }
        let key_end = at + HEADER_BYTES + header.key_len as usize;
        let end = at + HEADER_BYTES + body.len();
        let meta = header.meta;
        let value = (!meta.tombstone).then(|| shared.slice(key_end..end));
        let record = crate::storage::Record { version: meta.version, value, expire_at_ms: meta.expire_at_ms };
        records.push((shared.slice(at + HEADER_BYTES..key_end), record));
        at = end;
    }
    Ok(records)
}

/// Appends the kind-to-expiry fields of a record to `out`.
fn encode_fields(key_len: usize, meta: &Meta, out: &mut Vec<u8>) {
    let start = out.len();
    out.push(if meta.tombstone { KIND_TOMBSTONE } else { KIND_VALUE });
    out.extend_from_slice(&(key_len as u32).to_le_bytes());
    out.extend_from_slice(&meta.value_len.to_le_bytes());
    out.extend_from_slice(&meta.version.ts.millis.to_le_bytes());
    out.extend_from_slice(&meta.version.ts.logical.to_le_bytes());
    out.extend_from_slice(&meta.version.node.0.to_le_bytes());
    out.extend_from_slice(&meta.expire_at_ms.unwrap_or(0).to_le_bytes());
    assert_eq!(out.len() - start, FIELDS_BYTES);
}

/// Decodes the kind-to-expiry fields into the record's meta and key length.
fn decode_fields(bytes: &[u8]) -> Result<(Meta, u32), String> {
    assert_eq!(bytes.len(), FIELDS_BYTES);
    let tombstone = match bytes[0] {
        KIND_VALUE => false,
        KIND_TOMBSTONE => true,
        kind => return Err(format!("unknown record kind {kind}")),
    };
    let (key_len, value_len) = (le_u32(bytes, 1), le_u32(bytes, 5));
    if key_len as usize > KEY_BYTES_MAX {
        return Err(format!("key length {key_len} exceeds KEY_BYTES_MAX ({KEY_BYTES_MAX})"));
    }
    if value_len as usize > VALUE_BYTES_MAX {
        return Err(format!("value length {value_len} exceeds VALUE_BYTES_MAX ({VALUE_BYTES_MAX})"));
    }
    if tombstone && value_len != 0 {
        return Err(format!("tombstone with a {value_len}-byte value"));
    }
    let version = Version {
        ts: Timestamp { millis: le_u64(bytes, 9), logical: le_u32(bytes, 17) },
        node: NodeId(le_u64(bytes, 21)),
    };
    let expire_at_ms = Some(le_u64(bytes, 29)).filter(|&deadline| deadline != 0);
    Ok((Meta { version, tombstone, expire_at_ms, value_len }, key_len))
}

/// One record as a hint file lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct HintEntry<'a> {
    /// The record's offset in its segment.
    pub(super) offset: u64,
    /// The record's key.
    pub(super) key: &'a [u8],
    /// The record's metadata.
    pub(super) meta: Meta,
}

/// Appends the hint entry of the record of `key` at `offset` to `out`.
pub(super) fn encode_hint_entry(offset: u64, key: &[u8], meta: &Meta, out: &mut Vec<u8>) {
    out.extend_from_slice(&offset.to_le_bytes());
    encode_fields(key.len(), meta, out);
    out.extend_from_slice(key);
}

/// Appends the trailer that seals a hint file over a segment of `segment_bytes` bytes.
pub(super) fn encode_hint_trailer(segment_bytes: u64, hint: &mut Vec<u8>) {
    hint.extend_from_slice(&segment_bytes.to_le_bytes());
    let crc = crc32c::crc32c(hint);
    hint.extend_from_slice(&crc.to_le_bytes());
}

/// Checks a whole hint file for a segment of `segment_bytes` bytes, and returns its entries.
/// The entries must tile the segment exactly, so a hint that disagrees with its segment in
/// any way is refused before any entry is used.
pub(super) fn decode_hint(bytes: &[u8], segment_bytes: u64) -> Result<HintEntries<'_>, String> {
    let Some(body_len) = bytes.len().checked_sub(HINT_TRAILER_BYTES) else {
        return Err(format!("{} bytes is shorter than the trailer", bytes.len()));
    };
    if crc32c::crc32c(&bytes[..bytes.len() - 4]) != le_u32(bytes, bytes.len() - 4) {
        return Err("checksum mismatch".into());
    }
    let covered = le_u64(bytes, body_len);
    if covered != segment_bytes {
        return Err(format!("covers {covered} segment bytes, the segment has {segment_bytes}"));
    }
    let entries = HintEntries { body: &bytes[..body_len], at: 0 };
    let mut next_offset = 0;
    for entry in entries {
        let entry = entry?;
        if entry.offset != next_offset {
            return Err(format!("an entry names record {}, expected {next_offset}", entry.offset));
        }
        next_offset += record_bytes(entry.key.len(), entry.meta.value_len);
    }
    if next_offset != segment_bytes {
        return Err(format!("entries cover {next_offset} of {segment_bytes} segment bytes"));
    }
    Ok(entries)
}

/// The entries of a hint file's body, in order.
#[derive(Clone, Copy, Debug)]
pub(super) struct HintEntries<'a> {
    /// The hint file without its trailer.
    body: &'a [u8],
    /// Where the next entry starts.
    at: usize,
}

impl<'a> Iterator for HintEntries<'a> {
    type Item = Result<HintEntry<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        let at = self.at;
        let rest = self.body.get(at..).filter(|rest| !rest.is_empty())?;
        // A bad entry ends the iteration: nothing after it can be found.
        self.at = self.body.len();
        if rest.len() < HINT_ENTRY_BYTES {
            return Some(Err(format!("truncated entry at hint offset {at}")));
        }
        let (meta, key_len) = match decode_fields(&rest[8..HINT_ENTRY_BYTES]) {
            Ok(fields) => fields,
            Err(reason) => return Some(Err(format!("{reason} at hint offset {at}"))),
        };
        let Some(key) = rest.get(HINT_ENTRY_BYTES..HINT_ENTRY_BYTES + key_len as usize) else {
            return Some(Err(format!("truncated key at hint offset {at}")));
        };
        self.at = at + HINT_ENTRY_BYTES + key.len();
        Some(Ok(HintEntry { offset: le_u64(rest, 0), key, meta }))
    }
}

/// The little-endian u32 at `at`.
fn le_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// The little-endian u64 at `at`.
fn le_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}
