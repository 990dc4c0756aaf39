//! A sequential reader over one segment file's records, for recovery scans and compaction.
//! It says what it finds; the caller decides whether a bad record is a torn tail or
//! corruption.

use super::format::{decode_header, Header, HeaderError, HEADER_BYTES};
use crate::error::{Error, Result};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// The read-ahead of a segment reader, in bytes.
const READ_AHEAD_BYTES: usize = 1024 * 1024;

/// The chunk in which a value is streamed through its checksum, in bytes.
const VALUE_CHUNK_BYTES: usize = 64 * 1024;

/// A record's header and key, read and checked; its value follows in the file.
#[derive(Debug)]
pub(super) struct RawRecord {
    /// The decoded header.
    pub(super) header: Header,
    /// The record's bytes read so far: header and key, then the value once read.
    pub(super) bytes: Vec<u8>,
}

impl RawRecord {
    /// The record's key.
    pub(super) fn key(&self) -> &[u8] {
        &self.bytes[HEADER_BYTES..HEADER_BYTES + self.header.key_len as usize]
    }
}

/// Bytes that fail a check.
#[derive(Debug)]
pub(super) struct Bad {
    /// Which check failed.
    pub(super) reason: String,
    /// True when these bytes could be an append that a crash interrupted, if they are at the
    /// end of the newest segment.
    pub(super) torn: bool,
}

/// What a reader found at its offset.
#[derive(Debug)]
pub(super) enum Next {
    /// The end of the file, exactly at a record boundary.
    End,
    /// A record whose header and key check out; its value is the next thing to read.
    Record(RawRecord),
    /// Bytes that fail a check.
    Bad(Bad),
}

/// Reads a segment's records in order.
#[derive(Debug)]
pub(super) struct SegmentReader {
    /// The file's path, for errors.
    path: PathBuf,
    /// The file, read ahead.
    reader: BufReader<File>,
    /// The file's length when opened.
    len: u64,
    /// The start of the record being read, or of the next one.
    offset: u64,
    /// Scratch space to stream values through their checksum.
    chunk: Vec<u8>,
}

impl SegmentReader {
    /// A reader at the start of the segment file at `path`.
    pub(super) fn open(path: &Path) -> Result<SegmentReader> {
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        let len = file.metadata().map_err(|e| Error::io("stat", path, e))?.len();
        let reader = BufReader::with_capacity(READ_AHEAD_BYTES, file);
        Ok(SegmentReader { path: path.to_path_buf(), reader, len, offset: 0, chunk: Vec::new() })
    }

    /// The file's path.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The start of the record being read, or of the next one.
    pub(super) fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the header and key of the record at `offset`. After a record, call exactly one
    /// of `read_value`, `take_value`, `check_value` or `skip_value`; after `Bad`, stop.
    pub(super) fn next(&mut self) -> Result<Next> {
        let remaining = self.len - self.offset;
        if remaining == 0 {
            return Ok(Next::End);
        }
        if remaining < HEADER_BYTES as u64 {
            let reason = format!("truncated record header ({remaining} of {HEADER_BYTES} bytes)");
            return Ok(Next::Bad(Bad { reason, torn: true }));
        }
        let mut bytes = vec![0; HEADER_BYTES];
        self.read_exact(&mut bytes)?;
        let header = match decode_header(&bytes) {
            Ok(header) => header,
            Err(HeaderError::Checksum) => {
                // Zeros to the end are space the file system gave an append whose data never
                // reached the disk; a real header is never all zeros.
                let torn = bytes.iter().all(|&b| b == 0) && self.rest_is_zero()?;
                return Ok(Next::Bad(Bad { reason: "header checksum mismatch".into(), torn }));
            }
            Err(HeaderError::Invalid(reason)) => return Ok(Next::Bad(Bad { reason, torn: false })),
        };
        let size = header.record_bytes();
        if size > remaining {
            let reason = format!("record of {size} bytes extends past the end of the file ({remaining} left)");
            return Ok(Next::Bad(Bad { reason, torn: true }));
        }
        bytes.resize(HEADER_BYTES + header.key_len as usize, 0);
        self.read_exact(&mut bytes[HEADER_BYTES..])?;
        Ok(Next::Record(RawRecord { header, bytes }))
    }

    /// Reads `record`'s value into its bytes and checks the body checksum.
    pub(super) fn read_value(&mut self, record: &mut RawRecord) -> Result<Option<Bad>> {
        let start = record.bytes.len();
        record.bytes.resize(start + record.header.meta.value_len as usize, 0);
        self.read_exact(&mut record.bytes[start..])?;
        let crc = crc32c::crc32c(&record.bytes[HEADER_BYTES..]);
        Ok(self.end_record(&record.header, crc))
    }

    /// Reads `record`'s value into a buffer of its own, so that keeping it keeps nothing else,
    /// and checks the body checksum.
    pub(super) fn take_value(&mut self, record: &RawRecord) -> Result<(Vec<u8>, Option<Bad>)> {
        let mut value = vec![0; record.header.meta.value_len as usize];
        self.read_exact(&mut value)?;
        let crc = crc32c::crc32c_append(crc32c::crc32c(record.key()), &value);
        Ok((value, self.end_record(&record.header, crc)))
    }

    /// Streams `record`'s value through the body checksum without keeping it.
    pub(super) fn check_value(&mut self, record: &RawRecord) -> Result<Option<Bad>> {
        let mut crc = crc32c::crc32c(record.key());
        let mut chunk = std::mem::take(&mut self.chunk);
        chunk.resize(VALUE_CHUNK_BYTES, 0);
        let mut left = record.header.meta.value_len as usize;
        while left > 0 {
            let n = left.min(chunk.len());
            self.read_exact(&mut chunk[..n])?;
            crc = crc32c::crc32c_append(crc, &chunk[..n]);
            left -= n;
        }
        self.chunk = chunk;
        Ok(self.end_record(&record.header, crc))
    }

    /// Skips `record`'s value unread.
    pub(super) fn skip_value(&mut self, record: &RawRecord) -> Result<()> {
        let value_len = i64::from(record.header.meta.value_len);
        self.reader.seek_relative(value_len).map_err(|e| Error::io("seek", &self.path, e))?;
        self.offset += record.header.record_bytes();
        Ok(())
    }

    /// Moves past a record whose body checksums to `crc`, saying whether it is bad.
    fn end_record(&mut self, header: &Header, crc: u32) -> Option<Bad> {
        self.offset += header.record_bytes();
        // A torn append can leave a whole header and part of the value: the record then
        // ends exactly at the end of the file, its last bytes whatever the disk held.
        let torn = self.offset == self.len;
        (crc != header.body_crc).then(|| Bad { reason: "body checksum mismatch".into(), torn })
    }

    /// True when every byte from the reader's position to the end of the file is zero.
    fn rest_is_zero(&mut self) -> Result<bool> {
        let mut chunk = vec![0; VALUE_CHUNK_BYTES];
        loop {
            let n = self.reader.read(&mut chunk).map_err(|e| Error::io("read", &self.path, e))?;
            if n == 0 {
                return Ok(true);
            }
            if chunk[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
        }
    }

    /// Fills `buf` from the file.
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        self.reader.read_exact(buf).map_err(|e| Error::io("read", &self.path, e))
    }
}
