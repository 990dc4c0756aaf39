//! The manifest: the durable list of the segments the engine expects to find, its byte
//! format, how it is replaced, and how `open` reconciles it with the files it finds. The
//! format and the rules are in "Manifest" and "Recovery" in the module documentation.

use super::commit::CommitIo;
use super::engine::LogEngine;
use super::format::{SegmentId, GEN_MAX, HINT_EXT, PART_EXT, SEGMENT_EXT};
use crate::error::{Error, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// The manifest's file name in the data directory.
pub(super) const MANIFEST_FILE: &str = "MANIFEST";

/// The name a new manifest is written under before it is renamed over the old one.
pub(super) const MANIFEST_TMP_FILE: &str = "MANIFEST.tmp";

/// The manifest's first bytes.
const MAGIC: &[u8; 8] = b"RKVMANIF";

/// The version of the manifest's layout this build writes: 2, which records each sealed
/// segment's length.
const VERSION: u32 = 2;

/// The version before this one, which lists ids only. Read, never written: open takes the
/// lengths of its sealed segments as found, and the next manifest written is version 2.
const VERSION_IDS_ONLY: u32 = 1;

/// Bytes before the first id: magic, version, the two counts.
const HEADER_BYTES: usize = 20;

/// Bytes of one segment id: its base (8), then its generation (4).
const ID_BYTES: usize = 12;

/// Bytes of one sealed segment's entry (version 2): its id, then its length when sealed (8).
const SEALED_ENTRY_BYTES: usize = ID_BYTES + 8;

/// Bytes of the trailing checksum.
const CRC_BYTES: usize = 4;

/// The most ids either list of a manifest holds. At the smallest `segment_bytes_max` (1 KiB)
/// that is a gigabyte of segments; at the default, 64 TiB. A manifest is rewritten whole at
/// every seal, so a far longer list would make seals slow long before it hit this.
pub(super) const MANIFEST_SEGMENTS_MAX: usize = 1 << 20;

/// The longest manifest `open` reads, in bytes: full lists of sealed and retired segments.
const MANIFEST_BYTES_MAX: usize = HEADER_BYTES + MANIFEST_SEGMENTS_MAX * (SEALED_ENTRY_BYTES + ID_BYTES) + CRC_BYTES;

// The counts are stored as u32.
const _: () = assert!(MANIFEST_SEGMENTS_MAX <= u32::MAX as usize);

/// The segments the engine expects, as the manifest holds them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Manifest {
    /// Every published segment, the active one (the greatest) included, each with its length
    /// in bytes when it was sealed. `None` for the active segment, which grows, and for a
    /// sealed segment a version-1 manifest listed, until open fills in the length it finds.
    pub(super) segments: BTreeMap<SegmentId, Option<u64>>,
    /// The inputs of a finished compaction whose files may still be on disk: removed at open.
    pub(super) retired: BTreeSet<SegmentId>,
}

impl Manifest {
    /// The manifest's bytes (always the current version), or why it cannot be written.
    /// Panics if a sealed segment has no length: open fills in every one it does not know.
    pub(super) fn encode(&self) -> Result<Vec<u8>, String> {
        for (what, count) in [("segments", self.segments.len()), ("retired segments", self.retired.len())] {
            if count > MANIFEST_SEGMENTS_MAX {
                return Err(format!("{count} {what} exceed MANIFEST_SEGMENTS_MAX ({MANIFEST_SEGMENTS_MAX})"));
            }
        }
        let active = self.active();
        let sealed = self.segments.len() - 1;
        let mut bytes = Vec::with_capacity(
            HEADER_BYTES + sealed * SEALED_ENTRY_BYTES + (1 + self.retired.len()) * ID_BYTES + CRC_BYTES,
        );
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&(self.segments.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(self.retired.len() as u32).to_le_bytes());
        for (&id, &length) in &self.segments {
            encode_id(id, &mut bytes);
            match length {
                _ if id == active => assert_eq!(length, None, "the active segment {id} has a sealed length"),
                Some(length) => bytes.extend_from_slice(&length.to_le_bytes()),
                None => panic!("sealed segment {id} is listed without its length"),
            }
        }
        for &id in &self.retired {
            encode_id(id, &mut bytes);
        }
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        Ok(bytes)
    }

    /// Decodes and checks a manifest of this version or the one before (whose sealed
    /// segments come without lengths). Fails with the offset of the first bad field and what
    /// is wrong with it: a manifest is trusted whole or not at all.
    pub(super) fn decode(bytes: &[u8]) -> Result<Manifest, (u64, String)> {
        if bytes.len() < HEADER_BYTES + CRC_BYTES {
            return Err((0, format!("{} bytes is shorter than a manifest's header and checksum", bytes.len())));
        }
        let body = bytes.len() - CRC_BYTES;
        if crc32c::crc32c(&bytes[..body]) != le_u32(bytes, body) {
            return Err((body as u64, "checksum mismatch".into()));
        }
        if &bytes[..8] != MAGIC {
            return Err((0, "not a manifest (bad magic)".into()));
        }
        let version = le_u32(bytes, 8);
        let sealed_entry_bytes = match version {
            VERSION => SEALED_ENTRY_BYTES,
            VERSION_IDS_ONLY => ID_BYTES,
            _ => {
                let reads = format!("versions {VERSION_IDS_ONLY} and {VERSION}");
                return Err((8, format!("manifest version {version}; this build reads {reads}")));
            }
        };
        let (segments, retired) = (le_u32(bytes, 12) as usize, le_u32(bytes, 16) as usize);
        if segments == 0 || segments > MANIFEST_SEGMENTS_MAX || retired > MANIFEST_SEGMENTS_MAX {
            return Err((12, format!("{segments} segments and {retired} retired: out of range")));
        }
        let segments_end = HEADER_BYTES + (segments - 1) * sealed_entry_bytes + ID_BYTES;
        if bytes.len() != segments_end + retired * ID_BYTES + CRC_BYTES {
            return Err((12, format!("{} bytes for {segments} segments and {retired} retired", bytes.len())));
        }
        let mut listed = BTreeMap::new();
        let mut last = None;
        for at in (HEADER_BYTES..segments_end - ID_BYTES).step_by(sealed_entry_bytes) {
            let id = decode_id(bytes, at, &mut last)?;
            let length = (version == VERSION).then(|| le_u64(bytes, at + ID_BYTES));
            listed.insert(id, length);
        }
        let active = decode_id(bytes, segments_end - ID_BYTES, &mut last)?;
        if active.gen != 0 {
            return Err((segments_end as u64 - ID_BYTES as u64, format!("the newest segment {active} is not active")));
        }
        listed.insert(active, None);
        let mut last = None;
        let retired: BTreeSet<SegmentId> = (segments_end..body)
            .step_by(ID_BYTES)
            .map(|at| decode_id(bytes, at, &mut last))
            .collect::<Result<_, _>>()?;
        if let Some(both) = retired.iter().find(|id| listed.contains_key(id)) {
            return Err((segments_end as u64, format!("segment {both} is both listed and retired")));
        }
        Ok(Manifest { segments: listed, retired })
    }

    /// The active segment: the greatest listed.
    pub(super) fn active(&self) -> SegmentId {
        *self.segments.last_key_value().expect("a manifest lists the active segment").0
    }

    /// The bytes of this manifest in version 1's layout (ids only), as a build before
    /// lengths wrote it.
    #[cfg(test)]
    pub(super) fn encode_version_1(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&VERSION_IDS_ONLY.to_le_bytes());
        bytes.extend_from_slice(&(self.segments.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(self.retired.len() as u32).to_le_bytes());
        for &id in self.segments.keys().chain(&self.retired) {
            encode_id(id, &mut bytes);
        }
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }
}

/// Appends `id`'s base and generation.
fn encode_id(id: SegmentId, bytes: &mut Vec<u8>) {
    bytes.extend_from_slice(&id.base.to_le_bytes());
    bytes.extend_from_slice(&id.gen.to_le_bytes());
}

/// The id encoded at `at`, which must be greater than `last`, the id before it in its list;
/// it becomes `last`.
fn decode_id(bytes: &[u8], at: usize, last: &mut Option<SegmentId>) -> Result<SegmentId, (u64, String)> {
    let id = SegmentId { base: le_u64(bytes, at), gen: le_u32(bytes, at + 8) };
    if id.gen > GEN_MAX {
        return Err((at as u64, format!("segment generation {} exceeds GEN_MAX ({GEN_MAX})", id.gen)));
    }
    if last.is_some_and(|last| last >= id) {
        return Err((at as u64, format!("segment {id} out of order")));
    }
    *last = Some(id);
    Ok(id)
}

/// The little-endian u32 at `at`.
fn le_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// The little-endian u64 at `at`.
fn le_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// The files `open` found for one segment id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Found {
    /// The `.seg` file's length in bytes, if there is one.
    pub(super) segment_bytes: Option<u64>,
    /// The `.compacting` file's length in bytes, if there is one.
    pub(super) part_bytes: Option<u64>,
    /// There is a `.hint` file.
    pub(super) hint: bool,
}

/// What `open` does to make the directory match its manifest, decided before it touches
/// anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    /// Outputs of a committed compaction still named `.compacting`: renamed to `.seg`.
    pub(super) publish: Vec<SegmentId>,
    /// Files positively recognised as leftovers: the id, the extension, and why.
    pub(super) remove: Vec<(SegmentId, &'static str, &'static str)>,
}

/// A file the manifest does not account for, which stops `open`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Refusal {
    /// The file's segment id.
    pub(super) id: SegmentId,
    /// The file's extension.
    pub(super) ext: &'static str,
    /// What is wrong.
    pub(super) kind: RefusalKind,
}

/// What is wrong with a file the manifest does not account for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RefusalKind {
    /// The manifest lists the segment; neither its `.seg` nor its `.compacting` file is there.
    Missing,
    /// A segment the manifest neither lists nor retires, and no leftover the engine knows.
    Unlisted,
    /// A `.compacting` file beside the published segment of the same id.
    Duplicate,
    /// A listed sealed segment whose length is not the one the manifest recorded when it was
    /// sealed: cut short, appended to, or replaced.
    Length {
        /// The file's length on disk.
        bytes: u64,
        /// The length the manifest recorded.
        recorded: u64,
    },
}

impl Refusal {
    /// The error naming the file, in directory `dir`.
    pub(super) fn into_error(self, dir: &Path) -> Error {
        let manifest = dir.join(MANIFEST_FILE);
        let manifest = manifest.display();
        let reason = match self.kind {
            RefusalKind::Missing => format!(
                "is listed in {manifest} but missing: its records would be lost in silence; restore the file \
                 (or rebuild this node from a replica)"
            ),
            RefusalKind::Unlisted => format!(
                "is not listed in {manifest}: not a segment this engine committed, nor a leftover it can \
                 recognise; move it out of the directory if it is not needed"
            ),
            RefusalKind::Duplicate => {
                format!("is beside the published segment of the same id, listed in {manifest}")
            }
            RefusalKind::Length { bytes, recorded } => {
                let how = if bytes < recorded { "cut short" } else { "appended to" };
                format!(
                    "is {bytes} bytes but {manifest} recorded {recorded} when it was sealed: {how} or replaced; \
                     sealed segments never change, so its records cannot be trusted: restore the file (or \
                     rebuild this node from a replica)"
                )
            }
        };
        Error::Inconsistent { path: dir.join(self.id.file_name(self.ext)), reason }
    }
}

/// Decides, from the manifest and the files found, what `open` renames and removes, or which
/// file stops it. A leftover is removed only when recognised positively:
///
/// - a `.compacting` file the manifest does not list: an output of a compaction that never
///   committed (its inputs are listed and whole);
/// - a `.seg` or `.compacting` file of a retired id: an input of a committed compaction;
/// - an empty `.seg` of generation 0 whose base is one past the active segment's: the next
///   segment of a seal interrupted before its manifest was written (puts reach a segment only
///   after the manifest lists it, so it holds nothing);
/// - a hint whose segment is neither listed nor refused: a hint holds no values, only a copy of
///   what its segment says.
///
/// Anything else the manifest does not account for is a [`Refusal`], the first in id order,
/// and so is a listed sealed segment (`.seg`, or `.compacting` to publish) whose length is not
/// the one the manifest recorded.
pub(super) fn reconcile(manifest: &Manifest, found: &BTreeMap<SegmentId, Found>) -> Result<Plan, Refusal> {
    let mut plan = Plan::default();
    let next = SegmentId { base: manifest.active().base + 1, gen: 0 };
    let ids: BTreeSet<SegmentId> = manifest.segments.keys().chain(found.keys()).copied().collect();
    for id in ids {
        let files = found.get(&id).copied().unwrap_or_default();
        let refuse = |ext, kind| Err(Refusal { id, ext, kind });
        if let Some(&recorded) = manifest.segments.get(&id) {
            let (ext, bytes) = match (files.segment_bytes, files.part_bytes) {
                (Some(_), Some(_)) => return refuse(PART_EXT, RefusalKind::Duplicate),
                (Some(bytes), None) => (SEGMENT_EXT, bytes),
                (None, Some(bytes)) => {
                    plan.publish.push(id);
                    (PART_EXT, bytes)
                }
                (None, None) => return refuse(SEGMENT_EXT, RefusalKind::Missing),
            };
            // `None`: the active segment, or a length a version-1 manifest did not record.
            if let Some(recorded) = recorded.filter(|&recorded| recorded != bytes) {
                return refuse(ext, RefusalKind::Length { bytes, recorded });
            }
            continue;
        }
        let retired = manifest.retired.contains(&id);
        if let Some(bytes) = files.segment_bytes {
            match (retired, id == next && bytes == 0) {
                (true, _) => {
                    plan.remove.push((id, SEGMENT_EXT, "removing a segment a finished compaction or rewrite retired"))
                }
                (false, true) => {
                    plan.remove.push((id, SEGMENT_EXT, "removing the empty segment of an unfinished seal"))
                }
                (false, false) => return refuse(SEGMENT_EXT, RefusalKind::Unlisted),
            }
        }
        if files.part_bytes.is_some() {
            plan.remove.push((id, PART_EXT, "removing an output of an unfinished compaction"));
        }
        if files.hint {
            plan.remove.push((id, HINT_EXT, "removing the hint file of a removed segment"));
        }
    }
    Ok(plan)
}

impl LogEngine {
    /// Replaces the manifest with one listing `self.manifest`: see [`write_manifest_file`].
    /// Waits first for a commit under way, which writes one of its own.
    pub(super) fn write_manifest(&mut self) -> Result<()> {
        self.wait_commit()?;
        let bytes = self.encode_manifest()?;
        let dir = self.dir.clone();
        write_manifest_file(&dir, &bytes, self)?;
        self.bytes_written += bytes.len() as u64;
        Ok(())
    }

    /// `self.manifest`, encoded.
    pub(super) fn encode_manifest(&self) -> Result<Vec<u8>> {
        let tmp = self.dir.join(MANIFEST_TMP_FILE);
        self.manifest.encode().map_err(|why| Error::io("write", &tmp, io::Error::other(why)))
    }
}

/// Replaces the manifest in `dir` with `bytes`: written to `MANIFEST.tmp`, fdatasynced,
/// renamed over `MANIFEST`, the directory fsynced. A crash leaves the old manifest or the new
/// one, never a mix.
pub(super) fn write_manifest_file(dir: &Path, bytes: &[u8], io: &mut impl CommitIo) -> Result<()> {
    let tmp = dir.join(MANIFEST_TMP_FILE);
    let mut file = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    file.write_all(bytes).map_err(|e| Error::io("write", &tmp, e))?;
    io.sync_file(&file, &tmp)?;
    io.step_done("manifest written to MANIFEST.tmp");
    let path = dir.join(MANIFEST_FILE);
    fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &tmp, e))?;
    io.sync_dir(dir)?;
    io.step_done("manifest replaced");
    Ok(())
}

/// Reads the manifest in `dir`: `None` if there is none, [`Error::Corrupt`] naming it if it
/// does not check out.
pub(super) fn read_manifest(dir: &Path) -> Result<Option<Manifest>> {
    let path = dir.join(MANIFEST_FILE);
    let len = match fs::metadata(&path) {
        Ok(metadata) => metadata.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("stat", &path, e)),
    };
    let corrupt = |offset, reason| Error::Corrupt { path: path.clone(), offset, reason };
    if len > MANIFEST_BYTES_MAX as u64 {
        return Err(corrupt(0, format!("{len} bytes exceeds the longest manifest ({MANIFEST_BYTES_MAX})")));
    }
    let bytes = fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
    Manifest::decode(&bytes).map(Some).map_err(|(offset, reason)| corrupt(offset, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment id.
    fn id(base: u64, gen: u32) -> SegmentId {
        SegmentId { base, gen }
    }

    /// The length of every sealed segment `manifest` lists, as the reconcile table's files are.
    const SEALED_BYTES: u64 = 9;

    /// A manifest listing `segments`, each sealed one `SEALED_BYTES` long, and retiring
    /// `retired`.
    fn manifest(segments: &[SegmentId], retired: &[SegmentId]) -> Manifest {
        let active = segments.iter().max().copied();
        let listed = segments.iter().map(|&id| (id, (Some(id) != active).then_some(SEALED_BYTES)));
        Manifest { segments: listed.collect(), retired: retired.iter().copied().collect() }
    }

    #[test]
    fn a_manifest_round_trips_and_every_damaged_byte_is_refused() {
        let mut m = manifest(&[id(3, 1), id(3, 2), id(5, 0), id(6, 0)], &[id(1, 0), id(2, 0), id(3, 0)]);
        m.segments.insert(id(3, 2), Some(0x0102_0304_0506_0708));
        m.segments.insert(id(5, 0), Some(0));
        let bytes = m.encode().expect("encode");
        assert_eq!(bytes.len(), HEADER_BYTES + 3 * SEALED_ENTRY_BYTES + 4 * ID_BYTES + CRC_BYTES);
        assert_eq!(&bytes[..8], b"RKVMANIF");
        assert_eq!(le_u32(&bytes, 8), 2, "the version");
        // The second sealed entry: its id, then its length.
        assert_eq!(le_u64(&bytes, 40), 3);
        assert_eq!(le_u32(&bytes, 48), 2);
        assert_eq!(le_u64(&bytes, 52), 0x0102_0304_0506_0708);
        // The active segment's entry, at 20 * n, has no length.
        assert_eq!(le_u64(&bytes, 80), 6);
        assert_eq!(le_u64(&bytes, 92), 1, "the first retired id follows the active one");
        assert_eq!(Manifest::decode(&bytes), Ok(m));
        for at in 0..bytes.len() {
            for mask in [0x01, 0x80] {
                let mut bad = bytes.clone();
                bad[at] ^= mask;
                assert!(Manifest::decode(&bad).is_err(), "byte {at} ^ {mask:#x} accepted");
            }
        }
        for len in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..len]).is_err(), "cut at {len} accepted");
        }
    }

    #[test]
    fn a_version_1_manifest_is_read_without_lengths_and_written_as_version_2() {
        let m = manifest(&[id(3, 1), id(5, 0), id(6, 0)], &[id(1, 0)]);
        let old = m.encode_version_1();
        assert_eq!(old.len(), HEADER_BYTES + 4 * ID_BYTES + CRC_BYTES);
        assert_eq!(le_u32(&old, 8), 1, "the version");
        let read = Manifest::decode(&old).expect("decode version 1");
        let unknown = m.segments.keys().map(|&id| (id, None)).collect();
        assert_eq!(read, Manifest { segments: unknown, retired: m.retired.clone() });
        for len in 0..old.len() {
            assert!(Manifest::decode(&old[..len]).is_err(), "cut at {len} accepted");
        }
        // Written again, it is version 2, once open has filled in the lengths.
        let again = Manifest::decode(&m.encode().expect("encode")).expect("decode");
        assert_eq!(again, m);
    }

    #[test]
    #[should_panic(expected = "listed without its length")]
    fn a_sealed_segment_without_a_length_is_never_written() {
        let mut m = manifest(&[id(1, 0), id(2, 0)], &[]);
        m.segments.insert(id(1, 0), None);
        let _ = m.encode();
    }

    #[test]
    fn a_manifest_that_checks_out_but_breaks_a_rule_is_refused() {
        // Re-encoded with a good checksum, each breaks one rule.
        let reseal = |mut bytes: Vec<u8>| {
            let body = bytes.len() - CRC_BYTES;
            let crc = crc32c::crc32c(&bytes[..body]);
            bytes[body..].copy_from_slice(&crc.to_le_bytes());
            bytes
        };
        let good = manifest(&[id(1, 0), id(2, 0)], &[]).encode().expect("encode");
        let with = |at: usize, value: &[u8]| {
            let mut bytes = good.clone();
            bytes[at..at + value.len()].copy_from_slice(value);
            reseal(bytes)
        };
        let table: [(&str, Vec<u8>, &str); 8] = [
            ("magic", with(0, b"RKVVOTE1"), "bad magic"),
            ("version", with(8, &3u32.to_le_bytes()), "version 3"),
            ("version 1 with lengths", with(8, &1u32.to_le_bytes()), "bytes for 2 segments"),
            ("no segments", with(12, &0u32.to_le_bytes()), "out of range"),
            ("count", with(12, &3u32.to_le_bytes()), "bytes for 3 segments"),
            ("order", with(20, &2u64.to_le_bytes()), "out of order"),
            ("generation", with(28, &(GEN_MAX + 1).to_le_bytes()), "exceeds GEN_MAX"),
            ("not active", with(48, &1u32.to_le_bytes()), "is not active"),
        ];
        for (what, bytes, want) in table {
            match Manifest::decode(&bytes) {
                Err((_, reason)) => assert!(reason.contains(want), "{what}: {reason}"),
                Ok(m) => panic!("{what}: accepted {m:?}"),
            }
        }
        let both = manifest(&[id(1, 0), id(2, 0)], &[id(1, 0)]).encode().expect("encode");
        assert!(Manifest::decode(&both).is_err_and(|(_, reason)| reason.contains("both listed and retired")));
    }

    #[test]
    fn more_segments_than_the_limit_are_not_written() {
        let m = Manifest {
            segments: (0..=MANIFEST_SEGMENTS_MAX as u64).map(|b| (id(b, 0), Some(1))).collect(),
            ..Manifest::default()
        };
        assert!(m.encode().is_err_and(|why| why.contains("MANIFEST_SEGMENTS_MAX")));
    }

    /// One id's files found: (id, `.seg` bytes, `.compacting` bytes, `.hint` there).
    type File = (SegmentId, Option<u64>, Option<u64>, bool);

    /// What `reconcile` should decide: the renames and removals, or the refused file and why.
    type Want = Result<(Vec<SegmentId>, Vec<(SegmentId, &'static str)>), (SegmentId, &'static str, RefusalKind)>;

    #[test]
    fn reconcile_removes_only_recognised_leftovers_and_refuses_the_rest() {
        use RefusalKind::*;
        let (s, p, h) = (SEGMENT_EXT, PART_EXT, HINT_EXT);
        // Listed: 2-1 (a compaction output, hinted), 4-0, 5-0 (active). Retired: 1-0, 2-0.
        let m = manifest(&[id(2, 1), id(4, 0), id(5, 0)], &[id(1, 0), id(2, 0)]);
        let listed: [File; 3] =
            [(id(2, 1), Some(9), None, true), (id(4, 0), Some(9), None, false), (id(5, 0), Some(3), None, false)];
        let with = |extra: &[File]| listed.iter().chain(extra).copied().collect::<Vec<File>>();
        let without =
            |gone: SegmentId, extra: &[File]| listed.iter().filter(|f| f.0 != gone).chain(extra).copied().collect();
        let plan =
            |publish: &[SegmentId], remove: &[(SegmentId, &'static str)]| Ok((publish.to_vec(), remove.to_vec()));
        let table: Vec<(&str, Vec<File>, Want)> = vec![
            ("tidy", with(&[]), plan(&[], &[])),
            (
                "retired files",
                with(&[(id(1, 0), Some(9), None, true), (id(2, 0), None, None, true)]),
                plan(&[], &[(id(1, 0), s), (id(1, 0), h), (id(2, 0), h)]),
            ),
            (
                "uncommitted outputs",
                with(&[(id(5, 1), None, Some(9), true), (id(5, 2), None, Some(9), false)]),
                plan(&[], &[(id(5, 1), p), (id(5, 1), h), (id(5, 2), p)]),
            ),
            ("interrupted seal", with(&[(id(6, 0), Some(0), None, false)]), plan(&[], &[(id(6, 0), s)])),
            ("orphan hint", with(&[(id(3, 0), None, None, true)]), plan(&[], &[(id(3, 0), h)])),
            (
                "committed outputs not yet renamed",
                [(id(2, 1), None, Some(9), true)]
                    .into_iter()
                    .chain(without(id(2, 1), &[(id(2, 0), Some(9), None, false)]))
                    .collect(),
                plan(&[id(2, 1)], &[(id(2, 0), s)]),
            ),
            (
                "missing sealed, its hint there",
                [(id(2, 1), None, None, true)].into_iter().chain(without(id(2, 1), &[])).collect(),
                Err((id(2, 1), s, Missing)),
            ),
            ("missing active", without(id(5, 0), &[]), Err((id(5, 0), s, Missing))),
            (
                "missing, after a removable leftover",
                without(id(4, 0), &[(id(1, 0), Some(9), None, false)]),
                Err((id(4, 0), s, Missing)),
            ),
            ("unlisted sealed", with(&[(id(3, 0), Some(9), None, false)]), Err((id(3, 0), s, Unlisted))),
            ("unlisted next, not empty", with(&[(id(6, 0), Some(1), None, false)]), Err((id(6, 0), s, Unlisted))),
            ("unlisted empty, not next", with(&[(id(7, 0), Some(0), None, false)]), Err((id(7, 0), s, Unlisted))),
            ("unlisted empty output", with(&[(id(6, 1), Some(0), None, false)]), Err((id(6, 1), s, Unlisted))),
            (
                "published and compacting",
                without(id(4, 0), &[(id(4, 0), Some(9), Some(9), false)]),
                Err((id(4, 0), p, Duplicate)),
            ),
            (
                "sealed, cut short",
                without(id(4, 0), &[(id(4, 0), Some(5), None, false)]),
                Err((id(4, 0), s, Length { bytes: 5, recorded: 9 })),
            ),
            (
                "sealed, emptied",
                without(id(4, 0), &[(id(4, 0), Some(0), None, false)]),
                Err((id(4, 0), s, Length { bytes: 0, recorded: 9 })),
            ),
            (
                "sealed, appended to",
                without(id(4, 0), &[(id(4, 0), Some(12), None, false)]),
                Err((id(4, 0), s, Length { bytes: 12, recorded: 9 })),
            ),
            (
                "committed output not yet renamed, cut short",
                [(id(2, 1), None, Some(4), true)].into_iter().chain(without(id(2, 1), &[])).collect(),
                Err((id(2, 1), p, Length { bytes: 4, recorded: 9 })),
            ),
            (
                "cut short, after a removable leftover",
                without(id(4, 0), &[(id(1, 0), Some(9), None, false), (id(4, 0), Some(5), None, false)]),
                Err((id(4, 0), s, Length { bytes: 5, recorded: 9 })),
            ),
            (
                "the active segment, any length",
                without(id(5, 0), &[(id(5, 0), Some(700), None, false)]),
                plan(&[], &[]),
            ),
        ];
        for (what, files, want) in table {
            let found: BTreeMap<SegmentId, Found> = files
                .into_iter()
                .map(|(id, segment_bytes, part_bytes, hint)| (id, Found { segment_bytes, part_bytes, hint }))
                .collect();
            let got = reconcile(&m, &found);
            match (got, want) {
                (Ok(got), Ok((publish, remove))) => {
                    assert_eq!(got.publish, publish, "{what}");
                    let removed: Vec<(SegmentId, &str)> = got.remove.iter().map(|&(id, ext, _)| (id, ext)).collect();
                    assert_eq!(removed, remove, "{what}");
                }
                (Err(refusal), Err((id, ext, kind))) => assert_eq!(refusal, Refusal { id, ext, kind }, "{what}"),
                (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn reconcile_skips_the_lengths_a_version_1_manifest_did_not_record() {
        let mut m = manifest(&[id(2, 1), id(4, 0), id(5, 0)], &[]);
        m.segments.insert(id(4, 0), None);
        let found: BTreeMap<SegmentId, Found> = [
            (id(2, 1), Found { segment_bytes: Some(SEALED_BYTES + 1), ..Found::default() }),
            (id(4, 0), Found { segment_bytes: Some(SEALED_BYTES + 1), ..Found::default() }),
            (id(5, 0), Found { segment_bytes: Some(3), ..Found::default() }),
        ]
        .into_iter()
        .collect();
        let refusal = Refusal { id: id(2, 1), ext: SEGMENT_EXT, kind: RefusalKind::Length { bytes: 10, recorded: 9 } };
        assert_eq!(reconcile(&m, &found), Err(refusal), "a recorded length is checked");
        m.segments.insert(id(2, 1), None);
        assert_eq!(reconcile(&m, &found), Ok(Plan::default()), "an unrecorded one is not");
    }
}
