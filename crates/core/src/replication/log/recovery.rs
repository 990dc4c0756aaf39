//! Opening a file-backed log: tidying the directory (leftover new segments, an interrupted
//! reset), reading every segment in order, cutting a torn tail off the last one. The rules
//! are in "Recovery" in the module documentation.

use super::files::{create_segment, finish_reset, sync_dir, ActiveFile, Files};
use super::format::{
    decode_body, decode_frame, decode_frame_at, decode_header, parse_name, peek_lsn, SegmentHeader, FRAME_BYTES,
    FRAME_BYTES_MIN, HEADER_BYTES, NEW_EXT, RESET_EXT, SEGMENT_EXT,
};
use super::replog::{ReplicationLog, ReplogOptions, Segment};
use crate::error::{Error, Result};
use crate::replication::record::Lsn;
use crate::storage::FsyncGate;
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Opens the log in `dir`, creating the directory and a first segment if missing.
pub(super) fn open(dir: &Path, options: ReplogOptions) -> Result<ReplicationLog> {
    fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let gate = Arc::new(FsyncGate::default());
    let paths = tidy_dir(dir, &gate)?;
    let mut log = ReplicationLog::blank(options);
    let mut previous_last = None;
    for (index, (&first, path)) in paths.iter().enumerate() {
        let is_last = index + 1 == paths.len();
        let segment = load_segment(&mut log, &gate, path, first, previous_last, is_last)?;
        previous_last = Some(segment.last_lsn);
        log.start_segment(segment);
    }
    let (&first, active) = log.segments.last_key_value().expect("tidy_dir leaves at least one segment");
    let active = ActiveFile::open(paths[&first].clone(), first, active.bytes)?;
    log.files = Some(Files::new(dir, gate, active, log.last_lsn));
    let stats = log.stats();
    tracing::info!(
        dir = %dir.display(), first_lsn = stats.first_lsn, last_lsn = stats.last_lsn,
        segments = stats.segments, "opened replication log"
    );
    Ok(log)
}

/// Lists the segment files by first lsn after removing leftover new segments and finishing
/// (or forgetting) an interrupted reset; creates the first segment of a fresh log.
fn tidy_dir(dir: &Path, gate: &FsyncGate) -> Result<BTreeMap<Lsn, PathBuf>> {
    let (mut segments, mut news, mut resets) = (BTreeMap::new(), Vec::new(), Vec::new());
    let list_error = |e| Error::io("list", dir, e);
    for entry in fs::read_dir(dir).map_err(list_error)? {
        let name = entry.map_err(list_error)?.file_name();
        // Files the log did not name are not its business: leave them alone.
        let Some((first, ext)) = name.to_str().and_then(parse_name) else { continue };
        let path = dir.join(&name);
        match ext {
            SEGMENT_EXT => {
                segments.insert(first, path);
            }
            NEW_EXT => news.push(path),
            RESET_EXT => resets.push((first, path)),
            _ => {}
        }
    }
    let mut changed = false;
    for path in &news {
        tracing::warn!(path = %path.display(), "removing a segment whose creation a crash interrupted");
        fs::remove_file(path).map_err(|e| Error::io("remove", path, e))?;
        changed = true;
    }
    if let [(_, first), (_, second), ..] = &resets[..] {
        let reason = format!("a second unfinished reset beside {}", first.display());
        return Err(Error::Corrupt { path: second.clone(), offset: 0, reason });
    }
    if let Some((first, intent)) = resets.pop() {
        let bytes = fs::read(&intent).map_err(|e| Error::io("read", &intent, e))?;
        match decode_header(&bytes) {
            Ok(header) if header.base.checked_add(1) == Some(first) => {
                tracing::warn!(path = %intent.display(), "finishing a reset a crash interrupted");
                let old: Vec<PathBuf> = segments.into_values().collect();
                segments = BTreeMap::from([(first, finish_reset(dir, gate, &old, &intent, first)?)]);
            }
            // Its header never became durable, so the reset had deleted nothing yet.
            _ => {
                tracing::warn!(path = %intent.display(), "removing a reset that never began");
                fs::remove_file(&intent).map_err(|e| Error::io("remove", &intent, e))?;
                changed = true;
            }
        }
    }
    if segments.is_empty() {
        let active = create_segment(dir, gate, SegmentHeader { base: 0, epoch: 0 })?;
        segments.insert(active.first_lsn, active.path);
    } else if changed {
        sync_dir(dir, gate)?;
    }
    Ok(segments)
}

/// Reads the segment file at `path`, named for `first`, pushing its records into `log`'s
/// tail. `previous_last` is the last lsn of the segment before it; `is_last` lets a torn
/// tail be cut. Returns its accounting.
fn load_segment(
    log: &mut ReplicationLog,
    gate: &FsyncGate,
    path: &Path,
    first: Lsn,
    previous_last: Option<Lsn>,
    is_last: bool,
) -> Result<Segment> {
    let bytes = fs::read(path).map_err(|e| Error::io("read", path, e))?;
    let corrupt =
        |offset: usize, reason: String| Error::Corrupt { path: path.to_path_buf(), offset: offset as u64, reason };
    let header = decode_header(&bytes).map_err(|reason| corrupt(0, reason))?;
    if header.base.checked_add(1) != Some(first) {
        return Err(corrupt(0, format!("header base lsn {} does not match the file name", header.base)));
    }
    if let Some(previous) = previous_last.filter(|&previous| previous != header.base) {
        let reason = format!("the segment follows lsn {}, the previous segment ends at lsn {previous}", header.base);
        return Err(corrupt(0, reason));
    }
    log.last_lsn = header.base;
    log.last_epoch = header.epoch;
    let (mut at, mut next) = (HEADER_BYTES, first);
    while at < bytes.len() {
        match decode_frame_at(&bytes, at) {
            Ok((record, end)) => {
                if record.lsn != next {
                    return Err(corrupt(at, format!("holds lsn {} where lsn {next} belongs", record.lsn)));
                }
                log.push_recovered(record);
                next += 1;
                at = end;
            }
            Err(reason) if is_last => match valid_frame_after(&bytes, at, next) {
                None => {
                    cut_torn_tail(gate, path, at as u64, &reason)?;
                    break;
                }
                Some(valid) => return Err(corrupt(at, format!("{reason}; a good record follows at offset {valid}"))),
            },
            Err(reason) => return Err(corrupt(at, reason)),
        }
    }
    Ok(Segment { base: header.base, base_epoch: header.epoch, last_lsn: next - 1, bytes: at as u64 })
}

/// The offset of a good frame after the bad one at `at`, whose lsn should be `expected`, if
/// there is one: then the bad frame is damage, not a torn tail. A good frame there holds a
/// later lsn, no greater than the frames between could count (each takes at least
/// `FRAME_BYTES_MIN`), and passes its checksum and decoding.
fn valid_frame_after(bytes: &[u8], at: usize, expected: Lsn) -> Option<usize> {
    (at + 1..bytes.len().saturating_sub(FRAME_BYTES_MIN - 1)).find(|&p| {
        let head = bytes[p..p + FRAME_BYTES].try_into().expect("FRAME_BYTES bytes");
        let Ok(frame) = decode_frame(head) else { return false };
        let Some(body) = bytes.get(p + FRAME_BYTES..p + frame.frame_bytes()) else { return false };
        let lsn_max = expected.saturating_add(((p - at) / FRAME_BYTES_MIN) as u64);
        peek_lsn(body).is_some_and(|lsn| lsn > expected && lsn <= lsn_max) && decode_body(frame, body).is_ok()
    })
}

/// Truncates the last segment at `offset`, where an append a crash interrupted begins, and
/// fsyncs it.
fn cut_torn_tail(gate: &FsyncGate, path: &Path, offset: u64, reason: &str) -> Result<()> {
    tracing::warn!(path = %path.display(), offset, reason, "cutting a torn tail: an append a crash interrupted");
    let file = OpenOptions::new().write(true).open(path).map_err(|e| Error::io("open", path, e))?;
    file.set_len(offset).map_err(|e| Error::io("truncate", path, e))?;
    gate.run(path, || file.sync_data())
}
