//! The replication log's on-disk encoding: segment file names, the segment header and record
//! frames. Pure functions over bytes; the module above documents the layout byte by byte.

use crate::replication::record::{Epoch, LogRecord, Lsn};

/// The largest encoded record (a frame's body) the log holds, in bytes: one change can carry a
/// value of `VALUE_BYTES_MAX` (512 MiB), and a record is its key, versions and framing besides.
pub const RECORD_BYTES_MAX: usize = 600 * 1024 * 1024;

/// The first bytes of every segment file.
pub(super) const MAGIC: [u8; 8] = *b"RKVRLOG\0";

/// The format version a segment header carries; raise it with any change to this file.
pub(super) const FORMAT_VERSION: u32 = 5;

/// The oldest format version this build reads: format 1 records lack `part` and `parts`,
/// format 2 records lack `olds`, format 3 records lack `statement`, format 4 records lack
/// `physical`.
const FORMAT_VERSION_MIN: u32 = 1;

/// Bytes in a segment header: magic, version, base lsn, base epoch, checksum.
pub(super) const HEADER_BYTES: usize = 32;

/// Bytes in a frame before its body: the body length, then the body checksum.
pub(super) const FRAME_BYTES: usize = 8;

/// The fewest bytes a record's frame takes: the frame, then one byte each for the lsn, the
/// epoch and the number of changes (postcard varints).
pub(super) const FRAME_BYTES_MIN: usize = FRAME_BYTES + 3;

/// The extension of a segment file.
pub(super) const SEGMENT_EXT: &str = "rlog";

/// The extension of a segment being created, until its header is durable and it is renamed.
pub(super) const NEW_EXT: &str = "rlog.new";

/// The extension of an unfinished reset's new segment: while it exists, every `.rlog` file
/// beside it is to be deleted.
pub(super) const RESET_EXT: &str = "rlog.reset";

/// What a segment header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SegmentHeader {
    /// The lsn just before the segment's first record.
    pub(super) base: Lsn,
    /// The epoch of the record at `base` (the log's last epoch when the segment was created).
    pub(super) epoch: Epoch,
}

/// The name of the file with extension `ext` of the segment whose first lsn is `first_lsn`.
pub(super) fn file_name(first_lsn: Lsn, ext: &str) -> String {
    format!("{first_lsn:020}.{ext}")
}

/// The first lsn and extension of a file name, or `None` if the log did not name it.
pub(super) fn parse_name(name: &str) -> Option<(Lsn, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}

/// The header of a segment whose first record will be `base + 1`, `epoch` being the epoch at
/// `base`.
pub(super) fn encode_header(header: SegmentHeader) -> [u8; HEADER_BYTES] {
    let mut bytes = [0; HEADER_BYTES];
    bytes[0..8].copy_from_slice(&MAGIC);
    bytes[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes[12..20].copy_from_slice(&header.base.to_le_bytes());
    bytes[20..28].copy_from_slice(&header.epoch.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..28]);
    bytes[28..32].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// Decodes the header at the start of `bytes` (a whole file, or at least its header).
pub(super) fn decode_header(bytes: &[u8]) -> Result<SegmentHeader, String> {
    let Some(bytes) = bytes.get(..HEADER_BYTES) else {
        return Err(format!("{} bytes is shorter than a segment header ({HEADER_BYTES})", bytes.len()));
    };
    if bytes[0..8] != MAGIC {
        return Err("bad magic: not a replication log segment".into());
    }
    if crc32c::crc32c(&bytes[..28]) != le_u32(bytes, 28) {
        return Err("header checksum mismatch".into());
    }
    let version = le_u32(bytes, 8);
    if !(FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&version) {
        return Err(format!("format version {version}, this build reads {FORMAT_VERSION_MIN} to {FORMAT_VERSION}"));
    }
    Ok(SegmentHeader { base: le_u64(bytes, 12), epoch: le_u64(bytes, 20) })
}

/// The length of `record`'s frame body (its postcard encoding), in bytes.
pub(super) fn body_bytes(record: &LogRecord) -> Result<usize, String> {
    postcard::serialize_with_flavor(record, postcard::ser_flavors::Size::default())
        .map_err(|e| format!("cannot encode record {}: {e}", record.lsn))
}

/// Appends `record`'s frame to `out`. On failure `out` is left as it was.
pub(super) fn encode_frame(record: &LogRecord, out: &mut Vec<u8>) -> Result<(), String> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_BYTES]);
    if let Err(e) = postcard::serialize_with_flavor(record, AppendTo(out)) {
        out.truncate(start);
        return Err(format!("cannot encode record {}: {e}", record.lsn));
    }
    let body = &out[start + FRAME_BYTES..];
    assert!(body.len() <= RECORD_BYTES_MAX, "record {} of {} bytes was not refused", record.lsn, body.len());
    let (len, crc) = (body.len() as u32, crc32c::crc32c(body));
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// A frame's leading fields: its body length, checked against the limits, and checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Frame {
    /// The body's length in bytes, 1 to `RECORD_BYTES_MAX`.
    pub(super) body_len: usize,
    /// crc32c of the body.
    pub(super) crc: u32,
}

impl Frame {
    /// The whole frame's length in bytes.
    pub(super) fn frame_bytes(&self) -> usize {
        FRAME_BYTES + self.body_len
    }
}

/// Decodes the 8 bytes before a body. A length of 0 or above `RECORD_BYTES_MAX` is never
/// written, so it is refused here.
pub(super) fn decode_frame(bytes: &[u8; FRAME_BYTES]) -> Result<Frame, String> {
    let body_len = le_u32(bytes, 0) as usize;
    if body_len == 0 || body_len > RECORD_BYTES_MAX {
        return Err(format!("record length {body_len} outside 1..={RECORD_BYTES_MAX}"));
    }
    Ok(Frame { body_len, crc: le_u32(bytes, 4) })
}

/// Checks a frame's body against its checksum and decodes the record in it.
pub(super) fn decode_body(frame: Frame, body: &[u8]) -> Result<LogRecord, String> {
    assert_eq!(body.len(), frame.body_len, "the caller reads the whole body");
    if crc32c::crc32c(body) != frame.crc {
        return Err("record checksum mismatch".into());
    }
    // The checksum matched, so these bytes are what was written: a failure here is a bug or
    // a format mismatch, never a torn write.
    match postcard::take_from_bytes::<LogRecord>(body) {
        Ok((record, [])) => record.parts_error().map_or(Ok(record), Err),
        Ok((_, rest)) => Err(format!("{} bytes after the record's encoding", rest.len())),
        // An older format's body ends before the fields it lacks (and never decodes as a
        // newer one: the checksum matched, so it ends where its writer ended it).
        Err(postcard::Error::DeserializeUnexpectedEnd) => decode_v4(body),
        Err(e) => Err(format!("undecodable record: {e}")),
    }
}

/// Decodes a body of log format 4 or older (see [`decode_body`]).
fn decode_v4(body: &[u8]) -> Result<LogRecord, String> {
    match postcard::take_from_bytes::<RecordV4>(body) {
        Ok((v4, [])) => {
            let record = LogRecord {
                lsn: v4.lsn,
                epoch: v4.epoch,
                changes: v4.changes,
                part: v4.part,
                parts: v4.parts,
                olds: v4.olds,
                statement: v4.statement,
                physical: None,
            };
            record.parts_error().map_or(Ok(record), Err)
        }
        Ok((_, rest)) => Err(format!("{} bytes after the record's encoding", rest.len())),
        Err(postcard::Error::DeserializeUnexpectedEnd) => decode_v3(body),
        Err(e) => Err(format!("undecodable record: {e}")),
    }
}

/// Decodes a body of log format 3 or older (see [`decode_body`]).
fn decode_v3(body: &[u8]) -> Result<LogRecord, String> {
    let trailing = |rest: &[u8]| format!("{} bytes after the record's encoding", rest.len());
    let old = match postcard::take_from_bytes::<RecordV3>(body) {
        Ok((old, [])) => old,
        Ok((_, rest)) => return Err(trailing(rest)),
        Err(postcard::Error::DeserializeUnexpectedEnd) => match postcard::take_from_bytes::<RecordV2>(body) {
            Ok((v2, [])) => RecordV3 {
                lsn: v2.lsn,
                epoch: v2.epoch,
                changes: v2.changes,
                part: v2.part,
                parts: v2.parts,
                olds: Vec::new(),
            },
            Ok((_, rest)) => return Err(trailing(rest)),
            Err(postcard::Error::DeserializeUnexpectedEnd) => match postcard::take_from_bytes::<RecordV1>(body) {
                Ok((v1, [])) => return Ok(LogRecord::whole(v1.lsn, v1.epoch, v1.changes)),
                _ => return Err("undecodable record: it ends before its parts".into()),
            },
            Err(e) => return Err(format!("undecodable record: {e}")),
        },
        Err(e) => return Err(format!("undecodable record: {e}")),
    };
    let record = LogRecord {
        lsn: old.lsn,
        epoch: old.epoch,
        changes: old.changes,
        part: old.part,
        parts: old.parts,
        olds: old.olds,
        statement: None,
        physical: None,
    };
    record.parts_error().map_or(Ok(record), Err)
}

/// A record of log format 1, before requests could span records.
#[derive(serde::Deserialize)]
struct RecordV1 {
    lsn: Lsn,
    epoch: Epoch,
    changes: Vec<crate::replication::Change>,
}

/// A record of log format 4, before a record could hold a storage engine's bytes.
#[derive(serde::Deserialize)]
struct RecordV4 {
    lsn: Lsn,
    epoch: Epoch,
    changes: Vec<crate::replication::Change>,
    part: u32,
    parts: u32,
    olds: Vec<crate::replication::Old>,
    statement: Option<crate::replication::Statement>,
}

/// A record of log format 3, before a record could hold a statement.
#[derive(serde::Deserialize)]
struct RecordV3 {
    lsn: Lsn,
    epoch: Epoch,
    changes: Vec<crate::replication::Change>,
    part: u32,
    parts: u32,
    olds: Vec<crate::replication::Old>,
}

/// A record of log format 2, before changes carried old values.
#[derive(serde::Deserialize)]
struct RecordV2 {
    lsn: Lsn,
    epoch: Epoch,
    changes: Vec<crate::replication::Change>,
    part: u32,
    parts: u32,
}

/// Decodes the frame starting at `at` in `bytes`, a whole file: the record and where the
/// next frame starts.
pub(super) fn decode_frame_at(bytes: &[u8], at: usize) -> Result<(LogRecord, usize), String> {
    let Some(head) = bytes.get(at..at + FRAME_BYTES) else {
        return Err(format!("truncated record frame ({} of {FRAME_BYTES} bytes)", bytes.len() - at));
    };
    let frame = decode_frame(head.try_into().expect("FRAME_BYTES bytes"))?;
    let end = at + frame.frame_bytes();
    let Some(body) = bytes.get(at + FRAME_BYTES..end) else {
        let left = bytes.len() - at - FRAME_BYTES;
        return Err(format!("record of {} bytes extends past the end of the file ({left} left)", frame.body_len));
    };
    Ok((decode_body(frame, body)?, end))
}

/// The lsn a frame body starts with, read without decoding the rest (postcard writes a
/// struct's fields in order, and `lsn` is `LogRecord`'s first).
pub(super) fn peek_lsn(body: &[u8]) -> Option<Lsn> {
    postcard::take_from_bytes::<Lsn>(body).ok().map(|(lsn, _)| lsn)
}

/// A postcard output that appends to a vector it borrows, so that a frame is encoded in place
/// in a write buffer.
struct AppendTo<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendTo<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
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
