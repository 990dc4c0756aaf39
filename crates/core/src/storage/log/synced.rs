//! The `SYNCED` file: how much of the active segment an engine whose durability another log
//! provides has fsynced, so that its recovery can tell an unsynced tail from damage.
//!
//! A replicating node's replication log is its write-ahead log: the engine writes each batch
//! but fsyncs its active segment only when asked ([`Engine::sync_written`](crate::storage::Engine::sync_written)),
//! so after a power loss that segment may end in many batches' worth of pages that reached the
//! disk in any order: a hole followed by good records. By the rules of "Recovery" that is
//! corruption. But everything past the last fsync is in the node's log, which drops records
//! only after asking the engine for that fsync. So at each such fsync (and when a new active
//! segment starts) the engine records the active segment's id and length here, and at open a
//! bad record at or past that length in the newest segment is cut as a torn tail, whatever
//! follows it, with a warning; before it, the rules stand. A newest segment shorter than the
//! length recorded lost fsynced bytes: corruption.
//!
//! Layout, 32 bytes: the magic `RKVSYNCD`, the segment's base (u64 LE) and generation (u32 LE),
//! the length (u64 LE), and the crc32c of the 28 bytes before it (u32 LE). It is overwritten
//! in place and fdatasynced: 32 bytes at offset 0 lie in one sector. A file that does not
//! check out is ignored (with a warning): the rules stand.
//!
//! The file exists only while the engine is used that way. An engine that hands out its own
//! fsyncs ([`Engine::write_out`](crate::storage::Engine::write_out): a standalone node, a
//! leaderless one, whose engine is its own write-ahead log) removes it, since an unsynced
//! tail there is no longer covered by another log.

use super::format::SegmentId;
use crate::error::{Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The file's name in the engine's directory.
pub(super) const SYNCED_FILE: &str = "SYNCED";

/// The file's first bytes.
const MAGIC: &[u8; 8] = b"RKVSYNCD";

/// The file's length.
const BYTES: usize = 32;

/// The active segment's fsynced length, as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Synced {
    /// The segment.
    pub(super) id: SegmentId,
    /// Its bytes fsynced.
    pub(super) len: u64,
}

impl Synced {
    /// The file's bytes.
    fn encode(&self) -> [u8; BYTES] {
        let mut out = [0u8; BYTES];
        out[..8].copy_from_slice(MAGIC);
        out[8..16].copy_from_slice(&self.id.base.to_le_bytes());
        out[16..20].copy_from_slice(&self.id.gen.to_le_bytes());
        out[20..28].copy_from_slice(&self.len.to_le_bytes());
        let crc = crc32c::crc32c(&out[..28]);
        out[28..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// The record in `bytes`, or why it does not check out.
    fn decode(bytes: &[u8]) -> Result<Synced, String> {
        if bytes.len() != BYTES {
            return Err(format!("{} bytes, not {BYTES}", bytes.len()));
        }
        if &bytes[..8] != MAGIC {
            return Err("no magic".into());
        }
        let crc = u32::from_le_bytes(bytes[28..].try_into().expect("4 bytes"));
        if crc != crc32c::crc32c(&bytes[..28]) {
            return Err("checksum mismatch".into());
        }
        let base = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let gen = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
        let len = u64::from_le_bytes(bytes[20..28].try_into().expect("8 bytes"));
        Ok(Synced { id: SegmentId { base, gen }, len })
    }
}

/// The path of the file in `dir`.
pub(super) fn path(dir: &Path) -> PathBuf {
    dir.join(SYNCED_FILE)
}

/// The record in `dir`, if the file is there and checks out (a warning when it does not).
pub(super) fn read(dir: &Path) -> Result<Option<Synced>> {
    let path = path(dir);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    match Synced::decode(&bytes) {
        Ok(synced) => Ok(Some(synced)),
        Err(why) => {
            tracing::warn!(path = %path.display(), "ignoring the record of the active segment's fsynced length: {why}");
            Ok(None)
        }
    }
}

/// Overwrites the file in `dir` with `synced` (creating it if missing) and fsyncs it through
/// `sync`; returns whether it was created (its directory entry then needs a directory fsync).
pub(super) fn write(dir: &Path, synced: Synced, sync: impl FnOnce(&File, &Path) -> Result<()>) -> Result<bool> {
    let path = path(dir);
    let created = !path.exists();
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    file.write_all_at(&synced.encode(), 0).map_err(|e| Error::io("write", &path, e))?;
    sync(&file, &path)?;
    Ok(created)
}

/// Removes the file from `dir` if it is there; returns whether it was (its removal then needs
/// a directory fsync).
pub(super) fn remove(dir: &Path) -> Result<bool> {
    let path = path(dir);
    match fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("remove", &path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_a_damaged_one_is_refused() {
        let synced = Synced { id: SegmentId { base: 7, gen: 2 }, len: 12_345 };
        let bytes = synced.encode();
        assert_eq!(Synced::decode(&bytes), Ok(synced));
        for i in 0..BYTES {
            let mut bad = bytes;
            bad[i] ^= 0x40;
            assert!(Synced::decode(&bad).is_err(), "a flipped byte {i} went unnoticed");
        }
        assert!(Synced::decode(&bytes[..31]).is_err());
    }
}
