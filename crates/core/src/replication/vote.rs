//! A voter's durable state: the newest epoch it has seen and whom it voted for in it. A vote
//! must survive a crash before it is sent, or a node could vote twice in one epoch after a
//! restart and two leaders could win it (issue 6; see [`super::election`]).
//!
//! # File
//!
//! One file, `vote`, in the replication log's directory, 29 bytes, integers little-endian:
//!
//! | offset | bytes | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `RKVVOTE1` |
//! | 8 | 8 | epoch |
//! | 16 | 1 | 1 if a vote was cast in that epoch, else 0 |
//! | 17 | 8 | the node id voted for (0 when none) |
//! | 25 | 4 | CRC-32C of bytes 0..25 |
//!
//! A save writes `vote.tmp`, fsyncs it, renames it over `vote` and fsyncs the directory, so a
//! crash leaves either the old state or the new one, never a mix. A missing file is the state
//! of a node that never voted; a damaged one is [`Error::Corrupt`], never guessed at.
//!
//! CAVEATS
//! - The file is rewritten whole on every change of epoch or vote (29 bytes and two fsyncs):
//!   elections are rare.

use super::election::VoterState;
use crate::error::{Error, Result};
use crate::version::NodeId;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file's name in its directory.
pub const VOTE_FILE: &str = "vote";

/// The file's magic.
const MAGIC: &[u8; 8] = b"RKVVOTE1";

/// The file's length.
const VOTE_FILE_BYTES: usize = 29;

/// Where a voter's state lives: a file, or memory (the memory engine, the simulator).
#[derive(Debug)]
pub struct VoteStore {
    /// The file; `None` in memory.
    path: Option<PathBuf>,
    /// The state as last saved.
    state: VoterState,
}

impl VoteStore {
    /// Opens the vote file in `dir` (creating nothing until the first save).
    pub fn open(dir: &Path) -> Result<VoteStore> {
        let path = dir.join(VOTE_FILE);
        let _ = std::fs::remove_file(dir.join(format!("{VOTE_FILE}.tmp"))); // a save that never finished
        let state = match std::fs::read(&path) {
            Ok(bytes) => decode(&bytes).map_err(|reason| Error::Corrupt { path: path.clone(), offset: 0, reason })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => VoterState::default(),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        Ok(VoteStore { path: Some(path), state })
    }

    /// A store in memory only.
    pub fn in_memory() -> VoteStore {
        VoteStore { path: None, state: VoterState::default() }
    }

    /// The state as last saved.
    pub fn state(&self) -> VoterState {
        self.state
    }

    /// Makes `state` durable; only then may a vote it records be sent.
    pub fn save(&mut self, state: VoterState) -> Result<()> {
        if let Some(path) = &self.path {
            let tmp = path.with_extension("tmp");
            let mut file = std::fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
            file.write_all(&encode(state)).map_err(|e| Error::io("write", &tmp, e))?;
            file.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
            std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", &tmp, e))?;
            let dir = path.parent().unwrap_or(Path::new("."));
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("fsync", dir, e))?;
        }
        self.state = state;
        Ok(())
    }
}

/// The file's bytes for `state`.
fn encode(state: VoterState) -> [u8; VOTE_FILE_BYTES] {
    let mut out = [0u8; VOTE_FILE_BYTES];
    out[..8].copy_from_slice(MAGIC);
    out[8..16].copy_from_slice(&state.epoch.to_le_bytes());
    out[16] = u8::from(state.voted_for.is_some());
    out[17..25].copy_from_slice(&state.voted_for.map_or(0, |n| n.0).to_le_bytes());
    let crc = crc32c::crc32c(&out[..25]);
    out[25..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The state in a file's bytes, or why they are not one.
fn decode(bytes: &[u8]) -> std::result::Result<VoterState, String> {
    if bytes.len() != VOTE_FILE_BYTES {
        return Err(format!("a vote file is {VOTE_FILE_BYTES} bytes, this one {}", bytes.len()));
    }
    if &bytes[..8] != MAGIC {
        return Err("not a vote file (bad magic)".into());
    }
    let crc = u32::from_le_bytes(bytes[25..29].try_into().expect("4 bytes"));
    if crc != crc32c::crc32c(&bytes[..25]) {
        return Err("checksum mismatch".into());
    }
    let epoch = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let node = u64::from_le_bytes(bytes[17..25].try_into().expect("8 bytes"));
    let voted_for = match bytes[16] {
        0 => None,
        1 => Some(NodeId(node)),
        other => return Err(format!("vote flag {other}, expected 0 or 1")),
    };
    Ok(VoterState { epoch, voted_for })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_vote_survives_a_reopen_and_a_fresh_directory_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = VoteStore::open(dir.path()).unwrap();
        assert_eq!(store.state(), VoterState::default());
        let state = VoterState { epoch: 7, voted_for: Some(NodeId(42)) };
        store.save(state).unwrap();
        assert_eq!(VoteStore::open(dir.path()).unwrap().state(), state);
        let moved = VoterState { epoch: 8, voted_for: None };
        store.save(moved).unwrap();
        assert_eq!(VoteStore::open(dir.path()).unwrap().state(), moved);
    }

    #[test]
    fn every_damaged_byte_is_corruption_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        VoteStore::open(dir.path()).unwrap().save(VoterState { epoch: 3, voted_for: Some(NodeId(9)) }).unwrap();
        let path = dir.path().join(VOTE_FILE);
        let good = std::fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            std::fs::write(&path, &bad).unwrap();
            let err = VoteStore::open(dir.path()).unwrap_err();
            assert!(matches!(&err, Error::Corrupt { path: p, .. } if *p == path), "byte {i}: {err}");
        }
        std::fs::write(&path, &good[..20]).unwrap();
        assert!(VoteStore::open(dir.path()).unwrap_err().to_string().contains("29 bytes"));
    }

    #[test]
    fn an_unfinished_save_leaves_the_old_vote() {
        let dir = tempfile::tempdir().unwrap();
        let old = VoterState { epoch: 2, voted_for: Some(NodeId(1)) };
        VoteStore::open(dir.path()).unwrap().save(old).unwrap();
        std::fs::write(dir.path().join("vote.tmp"), b"half a vote").unwrap();
        assert_eq!(VoteStore::open(dir.path()).unwrap().state(), old);
        assert!(!dir.path().join("vote.tmp").exists(), "the leftover is removed");
    }

    #[test]
    fn in_memory_keeps_the_state_without_files() {
        let mut store = VoteStore::in_memory();
        store.save(VoterState { epoch: 1, voted_for: Some(NodeId(5)) }).unwrap();
        assert_eq!(store.state().voted_for, Some(NodeId(5)));
    }
}
