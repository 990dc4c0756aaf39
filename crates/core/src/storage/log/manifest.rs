//! The manifest: the durable list of the segments the engine expects to find, its byte
//! format, how it is replaced, and how `open` reconciles it with the files it finds. The
//! format and the rules are in "Manifest" and "Recovery" in the module documentation.

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

/// The version of the manifest's layout this build writes and reads.
const VERSION: u32 = 1;

/// Bytes before the first id: magic, version, the two counts.
const HEADER_BYTES: usize = 20;

/// Bytes of one segment id: its base (8), then its generation (4).
const ID_BYTES: usize = 12;

/// Bytes of the trailing checksum.
const CRC_BYTES: usize = 4;

/// The most ids either list of a manifest holds. At the smallest `segment_bytes_max` (1 KiB)
/// that is a gigabyte of segments; at the default, 64 TiB. A manifest is rewritten whole at
/// every seal, so a far longer list would make seals slow long before it hit this.
pub(super) const MANIFEST_SEGMENTS_MAX: usize = 1 << 20;

/// The longest manifest `open` reads, in bytes.
const MANIFEST_BYTES_MAX: usize = HEADER_BYTES + 2 * MANIFEST_SEGMENTS_MAX * ID_BYTES + CRC_BYTES;

// The counts are stored as u32.
const _: () = assert!(MANIFEST_SEGMENTS_MAX <= u32::MAX as usize);

/// The segments the engine expects, as the manifest holds them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Manifest {
    /// Every published segment, the active one (the greatest) included.
    pub(super) segments: BTreeSet<SegmentId>,
    /// The inputs of a finished compaction whose files may still be on disk: removed at open.
    pub(super) retired: BTreeSet<SegmentId>,
}

impl Manifest {
    /// The manifest's bytes, or why it cannot be written.
    pub(super) fn encode(&self) -> Result<Vec<u8>, String> {
        for (what, list) in [("segments", &self.segments), ("retired segments", &self.retired)] {
            if list.len() > MANIFEST_SEGMENTS_MAX {
                return Err(format!("{} {what} exceed MANIFEST_SEGMENTS_MAX ({MANIFEST_SEGMENTS_MAX})", list.len()));
            }
        }
        let ids = self.segments.len() + self.retired.len();
        let mut bytes = Vec::with_capacity(HEADER_BYTES + ids * ID_BYTES + CRC_BYTES);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&(self.segments.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(self.retired.len() as u32).to_le_bytes());
        for id in self.segments.iter().chain(&self.retired) {
            bytes.extend_from_slice(&id.base.to_le_bytes());
            bytes.extend_from_slice(&id.gen.to_le_bytes());
        }
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        Ok(bytes)
    }

    /// Decodes and checks a manifest. Fails with the offset of the first bad field and what is
    /// wrong with it: a manifest is trusted whole or not at all.
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
        if version != VERSION {
            return Err((8, format!("manifest version {version}; this build reads version {VERSION}")));
        }
        let (segments, retired) = (le_u32(bytes, 12) as usize, le_u32(bytes, 16) as usize);
        if segments == 0 || segments > MANIFEST_SEGMENTS_MAX || retired > MANIFEST_SEGMENTS_MAX {
            return Err((12, format!("{segments} segments and {retired} retired: out of range")));
        }
        if bytes.len() != HEADER_BYTES + (segments + retired) * ID_BYTES + CRC_BYTES {
            return Err((12, format!("{} bytes for {segments} segments and {retired} retired", bytes.len())));
        }
        let segments_end = HEADER_BYTES + segments * ID_BYTES;
        let manifest = Manifest {
            segments: decode_ids(bytes, HEADER_BYTES, segments_end)?,
            retired: decode_ids(bytes, segments_end, body)?,
        };
        let active = manifest.active();
        if active.gen != 0 {
            return Err((segments_end as u64 - ID_BYTES as u64, format!("the newest segment {active} is not active")));
        }
        if let Some(both) = manifest.retired.intersection(&manifest.segments).next() {
            return Err((segments_end as u64, format!("segment {both} is both listed and retired")));
        }
        Ok(manifest)
    }

    /// The active segment: the greatest listed.
    pub(super) fn active(&self) -> SegmentId {
        *self.segments.last().expect("a manifest lists the active segment")
    }
}

/// The ids encoded in `bytes[start..end]`, which must ascend strictly.
fn decode_ids(bytes: &[u8], start: usize, end: usize) -> Result<BTreeSet<SegmentId>, (u64, String)> {
    let mut ids = BTreeSet::new();
    for at in (start..end).step_by(ID_BYTES) {
        let id = SegmentId { base: le_u64(bytes, at), gen: le_u32(bytes, at + 8) };
        if id.gen > GEN_MAX {
            return Err((at as u64, format!("segment generation {} exceeds GEN_MAX ({GEN_MAX})", id.gen)));
        }
        if ids.last().is_some_and(|&last| last >= id) {
            return Err((at as u64, format!("segment {id} out of order")));
        }
        ids.insert(id);
    }
    Ok(ids)
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
    /// There is a `.compacting` file.
    pub(super) part: bool,
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
/// Anything else the manifest does not account for is a [`Refusal`], the first in id order.
pub(super) fn reconcile(manifest: &Manifest, found: &BTreeMap<SegmentId, Found>) -> Result<Plan, Refusal> {
    let mut plan = Plan::default();
    let next = SegmentId { base: manifest.active().base + 1, gen: 0 };
    let ids: BTreeSet<SegmentId> = manifest.segments.iter().chain(found.keys()).copied().collect();
    for id in ids {
        let files = found.get(&id).copied().unwrap_or_default();
        let refuse = |ext, kind| Err(Refusal { id, ext, kind });
        if manifest.segments.contains(&id) {
            match (files.segment_bytes, files.part) {
                (Some(_), true) => return refuse(PART_EXT, RefusalKind::Duplicate),
                (Some(_), false) => {}
                (None, true) => plan.publish.push(id),
                (None, false) => return refuse(SEGMENT_EXT, RefusalKind::Missing),
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
        if files.part {
            plan.remove.push((id, PART_EXT, "removing an output of an unfinished compaction"));
        }
        if files.hint {
            plan.remove.push((id, HINT_EXT, "removing the hint file of a removed segment"));
        }
    }
    Ok(plan)
}

impl LogEngine {
    /// Replaces the manifest with one listing `self.manifest`: written to `MANIFEST.tmp`,
    /// fdatasynced, renamed over `MANIFEST`, the directory fsynced. A crash leaves the old
    /// manifest or the new one, never a mix.
    pub(super) fn write_manifest(&mut self) -> Result<()> {
        let tmp = self.dir.join(MANIFEST_TMP_FILE);
        let bytes = self.manifest.encode().map_err(|why| Error::io("write", &tmp, io::Error::other(why)))?;
        let mut file = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        file.write_all(&bytes).map_err(|e| Error::io("write", &tmp, e))?;
        self.fsyncs.sync_file(&file, &tmp)?;
        self.step_done("manifest written to MANIFEST.tmp");
        let path = self.dir.join(MANIFEST_FILE);
        fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &tmp, e))?;
        self.fsyncs.sync_dir(&self.dir)?;
        self.bytes_written += bytes.len() as u64;
        self.step_done("manifest replaced");
        Ok(())
    }
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

    /// A manifest listing `segments` and retiring `retired`.
    fn manifest(segments: &[SegmentId], retired: &[SegmentId]) -> Manifest {
        Manifest { segments: segments.iter().copied().collect(), retired: retired.iter().copied().collect() }
    }

    #[test]
    fn a_manifest_round_trips_and_every_damaged_byte_is_refused() {
        let m = manifest(&[id(3, 1), id(3, 2), id(5, 0), id(6, 0)], &[id(1, 0), id(2, 0), id(3, 0)]);
        let bytes = m.encode().expect("encode");
        assert_eq!(bytes.len(), HEADER_BYTES + 7 * ID_BYTES + CRC_BYTES);
        assert_eq!(&bytes[..8], b"RKVMANIF");
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
        let table: [(&str, Vec<u8>, &str); 7] = [
            ("magic", with(0, b"RKVVOTE1"), "bad magic"),
            ("version", with(8, &2u32.to_le_bytes()), "version 2"),
            ("no segments", with(12, &0u32.to_le_bytes()), "out of range"),
            ("count", with(12, &3u32.to_le_bytes()), "bytes for 3 segments"),
            ("order", with(20, &2u64.to_le_bytes()), "out of order"),
            ("generation", with(28, &(GEN_MAX + 1).to_le_bytes()), "exceeds GEN_MAX"),
            ("not active", with(40, &1u32.to_le_bytes()), "is not active"),
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
            segments: (0..=MANIFEST_SEGMENTS_MAX as u64).map(|b| id(b, 0)).collect(),
            ..Manifest::default()
        };
        assert!(m.encode().is_err_and(|why| why.contains("MANIFEST_SEGMENTS_MAX")));
    }

    /// One id's files found: (id, `.seg` bytes, `.compacting` there, `.hint` there).
    type File = (SegmentId, Option<u64>, bool, bool);

    /// What `reconcile` should decide: the renames and removals, or the refused file and why.
    type Want = Result<(Vec<SegmentId>, Vec<(SegmentId, &'static str)>), (SegmentId, &'static str, RefusalKind)>;

    #[test]
    fn reconcile_removes_only_recognised_leftovers_and_refuses_the_rest() {
        use RefusalKind::*;
        let (s, p, h) = (SEGMENT_EXT, PART_EXT, HINT_EXT);
        // Listed: 2-1 (a compaction output, hinted), 4-0, 5-0 (active). Retired: 1-0, 2-0.
        let m = manifest(&[id(2, 1), id(4, 0), id(5, 0)], &[id(1, 0), id(2, 0)]);
        let listed: [File; 3] =
            [(id(2, 1), Some(9), false, true), (id(4, 0), Some(9), false, false), (id(5, 0), Some(3), false, false)];
        let with = |extra: &[File]| listed.iter().chain(extra).copied().collect::<Vec<File>>();
        let without =
            |gone: SegmentId, extra: &[File]| listed.iter().filter(|f| f.0 != gone).chain(extra).copied().collect();
        let plan =
            |publish: &[SegmentId], remove: &[(SegmentId, &'static str)]| Ok((publish.to_vec(), remove.to_vec()));
        let table: Vec<(&str, Vec<File>, Want)> = vec![
            ("tidy", with(&[]), plan(&[], &[])),
            (
                "retired files",
                with(&[(id(1, 0), Some(9), false, true), (id(2, 0), None, false, true)]),
                plan(&[], &[(id(1, 0), s), (id(1, 0), h), (id(2, 0), h)]),
            ),
            (
                "uncommitted outputs",
                with(&[(id(5, 1), None, true, true), (id(5, 2), None, true, false)]),
                plan(&[], &[(id(5, 1), p), (id(5, 1), h), (id(5, 2), p)]),
            ),
            ("interrupted seal", with(&[(id(6, 0), Some(0), false, false)]), plan(&[], &[(id(6, 0), s)])),
            ("orphan hint", with(&[(id(3, 0), None, false, true)]), plan(&[], &[(id(3, 0), h)])),
            (
                "committed outputs not yet renamed",
                [(id(2, 1), None, true, true)]
                    .into_iter()
                    .chain(without(id(2, 1), &[(id(2, 0), Some(9), false, false)]))
                    .collect(),
                plan(&[id(2, 1)], &[(id(2, 0), s)]),
            ),
            (
                "missing sealed, its hint there",
                [(id(2, 1), None, false, true)].into_iter().chain(without(id(2, 1), &[])).collect(),
                Err((id(2, 1), s, Missing)),
            ),
            ("missing active", without(id(5, 0), &[]), Err((id(5, 0), s, Missing))),
            (
                "missing, after a removable leftover",
                without(id(4, 0), &[(id(1, 0), Some(9), false, false)]),
                Err((id(4, 0), s, Missing)),
            ),
            ("unlisted sealed", with(&[(id(3, 0), Some(9), false, false)]), Err((id(3, 0), s, Unlisted))),
            ("unlisted next, not empty", with(&[(id(6, 0), Some(1), false, false)]), Err((id(6, 0), s, Unlisted))),
            ("unlisted empty, not next", with(&[(id(7, 0), Some(0), false, false)]), Err((id(7, 0), s, Unlisted))),
            ("unlisted empty output", with(&[(id(6, 1), Some(0), false, false)]), Err((id(6, 1), s, Unlisted))),
            (
                "published and compacting",
                without(id(4, 0), &[(id(4, 0), Some(9), true, false)]),
                Err((id(4, 0), p, Duplicate)),
            ),
        ];
        for (what, files, want) in table {
            let found: BTreeMap<SegmentId, Found> = files
                .into_iter()
                .map(|(id, segment_bytes, part, hint)| (id, Found { segment_bytes, part, hint }))
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
}
