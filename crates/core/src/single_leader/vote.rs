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
//! crash leaves either the old state or the new one, never a mix.
//!
//! # Vote floor
//!
//! A second file, `vote-floor` (60 bytes: magic `RKVFLOR1`, the epoch and the LSN of a log
//! position, the log's generation, the epoch and LSN of the snapshot taint (below), 1 while a
//! rebuild is under way (below) else 0, all as 8-byte little-endian words, then CRC-32C of the
//! first 56), saved the same way, holds the log position this node had before it last emptied its log (to take the
//! leader's history again, or to install a snapshot; after a cut, the last position of the
//! history it kept). Until its log grows past it, the node
//! votes as if its log still ended there, and does not stand for election: an emptied log must
//! not make it grant its vote to a candidate missing records it held, which may be
//! acknowledged writes (one acknowledged on a majority that included it), nor let nodes behind
//! it elect it without them. The generation counts the times the log was emptied or its tail
//! cut; every acknowledgement carries it, so a leader ignores one sent before and delivered
//! late.
//!
//! The snapshot taint is the leader's log end when it built a snapshot's last chunk: the
//! chunks may hold writes of records after the snapshot's base, up to there. Until the node's
//! log holds that position in that epoch, its store may hold values of records its log does
//! not (yet) have; if the history turns out to differ there, the node empties itself. (0, 0):
//! no taint.
//!
//! The rebuild flag is set when the node starts emptying its store and log, and cleared once
//! both are empty (or a snapshot is whole): a node that finds it set at open, having crashed
//! half way, empties both before anything else, rather than trusting a store a crash left
//! half wiped or half installed. A missing file is the state
//! of a node that never voted; a damaged one is [`Error::Corrupt`], never guessed at.
//!
//! CAVEATS
//! - The file is rewritten whole on every change of epoch or vote (29 bytes and two fsyncs):
//!   elections are rare.

use super::election::{LogPosition, VoterState};
use crate::error::{Error, Result};
use crate::version::NodeId;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file's name in its directory.
pub const VOTE_FILE: &str = "vote";

/// The file's magic.
const MAGIC: &[u8; 8] = b"RKVVOTE1";

/// The floor file's name in its directory.
pub const FLOOR_FILE: &str = "vote-floor";

/// The floor file's magic.
const FLOOR_MAGIC: &[u8; 8] = b"RKVFLOR1";

/// The file's length.
const VOTE_FILE_BYTES: usize = 29;

/// Where a voter's state lives: a file, or memory (the memory engine, the simulator).
#[derive(Debug)]
pub struct VoteStore {
    /// The file; `None` in memory.
    path: Option<PathBuf>,
    /// The state as last saved.
    state: VoterState,
    /// The vote floor as last saved (module documentation).
    floor: LogPosition,
    /// The log's generation: times it was emptied.
    generation: u64,
    /// The snapshot taint; (0, 0) when none.
    taint: LogPosition,
    /// A rebuild (emptying the store and log, or installing a snapshot) is under way.
    rebuilding: bool,
}

impl VoteStore {
    /// Opens the vote file in `dir` (creating nothing until the first save).
    pub fn open(dir: &Path) -> Result<VoteStore> {
        let path = dir.join(VOTE_FILE);
        for name in [VOTE_FILE, FLOOR_FILE] {
            let _ = std::fs::remove_file(dir.join(format!("{name}.tmp"))); // a save that never finished
        }
        let state = read_file(&path, decode)?.unwrap_or_default();
        let (floor, generation, taint, rebuilding) =
            read_file(&dir.join(FLOOR_FILE), decode_floor)?.unwrap_or_default();
        Ok(VoteStore { path: Some(path), state, floor, generation, taint, rebuilding })
    }

    /// A store in memory only.
    pub fn in_memory() -> VoteStore {
        VoteStore {
            path: None,
            state: VoterState::default(),
            floor: LogPosition::default(),
            generation: 0,
            taint: LogPosition::default(),
            rebuilding: false,
        }
    }

    /// The vote floor: the log position this node votes with at least.
    pub fn floor(&self) -> LogPosition {
        self.floor
    }

    /// The log's generation: times it was emptied.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Before the log is emptied, having ended at `position`: raises the vote floor to it (never
    /// lowers it), starts a new generation and clears the taint (the store is emptied too),
    /// durably.
    pub fn emptying_log(&mut self, position: LogPosition) -> Result<()> {
        self.save_floor(self.floor.max(position), self.generation + 1, LogPosition::default(), true)
    }

    /// Before the log drops its tail (records never applied, not in the leader's history):
    /// starts a new generation, durably, so that the leader ignores acknowledgements about the
    /// log as it was. The floor stays (the log keeps all of the history it held), the store is
    /// not touched, so the taint stays, and no rebuild starts (a crash before the cut is
    /// durable leaves the records, which are cut again).
    pub fn cutting_tail(&mut self) -> Result<()> {
        self.save_floor(self.floor, self.generation + 1, self.taint, self.rebuilding)
    }

    /// True while a rebuild is under way (module documentation).
    pub fn rebuilding(&self) -> bool {
        self.rebuilding
    }

    /// The store and log are empty again (or a snapshot is whole): the rebuild is over.
    pub fn rebuilt(&mut self) -> Result<()> {
        self.save_floor(self.floor, self.generation, self.taint, false)
    }

    /// The state as last saved.
    pub fn state(&self) -> VoterState {
        self.state
    }

    /// The snapshot taint, if any (module documentation).
    pub fn taint(&self) -> Option<LogPosition> {
        (self.taint != LogPosition::default()).then_some(self.taint)
    }

    /// Sets (or clears, with `None`) the snapshot taint, durably.
    pub fn set_taint(&mut self, taint: Option<LogPosition>) -> Result<()> {
        self.save_floor(self.floor, self.generation, taint.unwrap_or_default(), self.rebuilding)
    }

    /// Saves the floor file.
    fn save_floor(&mut self, floor: LogPosition, generation: u64, taint: LogPosition, rebuilding: bool) -> Result<()> {
        if let Some(path) = &self.path {
            let mut out = [0u8; FLOOR_FILE_BYTES];
            out[..8].copy_from_slice(FLOOR_MAGIC);
            let words = [floor.epoch, floor.lsn, generation, taint.epoch, taint.lsn, u64::from(rebuilding)];
            for (i, word) in words.into_iter().enumerate() {
                out[8 + 8 * i..16 + 8 * i].copy_from_slice(&word.to_le_bytes());
            }
            let crc = crc32c::crc32c(&out[..56]);
            out[56..].copy_from_slice(&crc.to_le_bytes());
            write_durably(&path.with_file_name(FLOOR_FILE), &out)?;
        }
        (self.floor, self.generation, self.taint, self.rebuilding) = (floor, generation, taint, rebuilding);
        Ok(())
    }

    /// Makes `state` durable; only then may a vote it records be sent.
    pub fn save(&mut self, state: VoterState) -> Result<()> {
        if let Some(path) = &self.path {
            write_durably(path, &encode(state))?;
        }
        self.state = state;
        Ok(())
    }
}

/// The floor file's length.
const FLOOR_FILE_BYTES: usize = 60;

/// Reads and decodes `path`; `None` when it does not exist, `Corrupt` when it does not decode.
fn read_file<T>(path: &Path, decode: fn(&[u8]) -> std::result::Result<T, String>) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            decode(&bytes).map(Some).map_err(|reason| Error::Corrupt { path: path.to_path_buf(), offset: 0, reason })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// Writes `bytes` to `NAME.tmp`, fsyncs it, renames it over `path` and fsyncs the directory.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    file.write_all(bytes).map_err(|e| Error::io("write", &tmp, e))?;
    file.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", &tmp, e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("fsync", dir, e))
}

/// The floor, generation, taint and rebuild flag in a floor file's bytes, or why they are not
/// one.
fn decode_floor(bytes: &[u8]) -> std::result::Result<(LogPosition, u64, LogPosition, bool), String> {
    if bytes.len() != FLOOR_FILE_BYTES {
        return Err(format!("a vote floor file is {FLOOR_FILE_BYTES} bytes, this one {}", bytes.len()));
    }
    if &bytes[..8] != FLOOR_MAGIC {
        return Err("not a vote floor file (bad magic)".into());
    }
    if u32::from_le_bytes(bytes[56..60].try_into().expect("4 bytes")) != crc32c::crc32c(&bytes[..56]) {
        return Err("checksum mismatch".into());
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let taint = LogPosition { epoch: word(32), lsn: word(40) };
    let rebuilding = match word(48) {
        0 => false,
        1 => true,
        other => return Err(format!("rebuild flag {other}, expected 0 or 1")),
    };
    Ok((LogPosition { epoch: word(8), lsn: word(16) }, word(24), taint, rebuilding))
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

    #[test]
    fn the_floor_only_rises_the_generation_counts_and_both_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = VoteStore::open(dir.path()).unwrap();
        assert_eq!((store.floor(), store.generation()), (LogPosition::default(), 0));
        store.emptying_log(LogPosition { epoch: 4, lsn: 40 }).unwrap();
        store.emptying_log(LogPosition { epoch: 3, lsn: 90 }).unwrap();
        assert_eq!(store.floor(), LogPosition { epoch: 4, lsn: 40 }, "never lowered");
        assert_eq!(store.generation(), 2);
        store.set_taint(Some(LogPosition { epoch: 5, lsn: 77 })).unwrap();
        let reopened = VoteStore::open(dir.path()).unwrap();
        assert_eq!((reopened.floor(), reopened.generation()), (LogPosition { epoch: 4, lsn: 40 }, 2));
        assert_eq!(reopened.taint(), Some(LogPosition { epoch: 5, lsn: 77 }));
        store.emptying_log(LogPosition::default()).unwrap();
        assert_eq!(store.taint(), None, "an emptied store holds nothing from a snapshot");
        assert!(VoteStore::open(dir.path()).unwrap().rebuilding(), "a rebuild under way survives a crash");
        store.rebuilt().unwrap();
        assert!(!VoteStore::open(dir.path()).unwrap().rebuilding());
        let path = dir.path().join(FLOOR_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[12] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(VoteStore::open(dir.path()), Err(Error::Corrupt { .. })), "a damaged floor is not guessed at");
    }
}
