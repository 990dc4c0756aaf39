//! The replication log's tests: round trips, lsn rules, torn tails and corruption, rollover
//! and reads across segments, retention, reset, the tail against the files, the in-memory
//! log, and the fsync `write_out` hands out.

use super::format::{encode_frame, encode_header, file_name, SegmentHeader, HEADER_BYTES, RESET_EXT, SEGMENT_EXT};
use super::{ReplicationLog, ReplogOptions};
use crate::error::Error;
use crate::replication::record::{Change, Epoch, LogRecord, Lsn, Old};
use crate::storage::Record;
use crate::version::{NodeId, Timestamp, Version};
use bytes::Bytes;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

/// A record at `lsn` in `epoch` whose changes vary with the lsn: values of many lengths,
/// tombstones, deadlines, one to three keys.
fn record(lsn: Lsn, epoch: Epoch) -> LogRecord {
    let changes: Vec<Change> = (0..1 + lsn % 3)
        .map(|i| Change {
            key: Bytes::from(format!("key-{lsn}-{i}")),
            record: Record {
                version: Version {
                    ts: Timestamp { millis: lsn.wrapping_add(1_000), logical: i as u32 },
                    node: NodeId(7),
                },
                value: (!lsn.is_multiple_of(5)).then(|| Bytes::from(vec![lsn as u8; (lsn % 97) as usize * 13 % 97])),
                expire_at_ms: lsn.is_multiple_of(3).then_some(lsn.wrapping_add(5_000)),
            },
        })
        .collect();
    // Every third request spans two records, so that the round trips cover `part`.
    let (part, parts) = match lsn % 3 {
        0 => (0, 1),
        p => (p as u32 - 1, 2),
    };
    // Old values of every kind, and none at all every seventh record.
    let olds = if lsn.is_multiple_of(7) {
        Vec::new()
    } else {
        (0..changes.len() as u64)
            .map(|i| match (lsn + i) % 4 {
                0 => Old::Absent,
                1 => Old::Unknown,
                2 => Old::Omitted { version: changes[0].record.version, expire_at_ms: Some(lsn), bytes: 2 << 20 },
                _ => Old::Held(Record { value: Some(Bytes::from(format!("old-{lsn}"))), ..changes[0].record.clone() }),
            })
            .collect()
    };
    LogRecord { lsn, epoch, changes, part, parts, olds, statement: None, physical: None }
}

/// Records `from..=to`, epoch 1 up to lsn 20 and 2 after.
fn records(from: Lsn, to: Lsn) -> Vec<LogRecord> {
    (from..=to).map(|lsn| record(lsn, if lsn <= 20 { 1 } else { 2 })).collect()
}

/// Options with the given segment size, retention and tail budgets.
fn options(segment_bytes_max: u64, retain_bytes_max: u64, tail_bytes_max: usize) -> ReplogOptions {
    ReplogOptions { segment_bytes_max, retain_bytes_max, tail_bytes_max, ..ReplogOptions::default() }
}

/// Appends `records` in order.
fn append_all(log: &mut ReplicationLog, records: &[LogRecord]) {
    for record in records {
        log.append(record.clone()).unwrap_or_else(|e| panic!("append {}: {e}", record.lsn));
    }
}

/// Every record after `after`, read in batches of `bytes_max`; `None` if they are dropped.
fn read_all(log: &mut ReplicationLog, after: Lsn, bytes_max: usize) -> Option<Vec<LogRecord>> {
    let mut all: Vec<LogRecord> = Vec::new();
    loop {
        let from = all.last().map_or(after, |record| record.lsn);
        let batch = log.read(from, bytes_max).expect("read")?;
        if batch.is_empty() {
            return Some(all);
        }
        all.extend(batch);
    }
}

/// The segment files in `dir`, in name order.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .expect("list")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == SEGMENT_EXT))
        .collect();
    paths.sort();
    paths
}

/// The offsets of the frames in the segment file at `path`.
fn frame_offsets(path: &Path) -> Vec<u64> {
    let bytes = fs::read(path).expect("read segment");
    let (mut offsets, mut at) = (Vec::new(), HEADER_BYTES);
    while at < bytes.len() {
        offsets.push(at as u64);
        at += 8 + u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
    }
    offsets
}

/// XORs the byte at `offset` of `path` with `mask`.
fn flip(path: &Path, offset: u64, mask: u8) {
    let mut bytes = fs::read(path).expect("read");
    bytes[offset as usize] ^= mask;
    fs::write(path, bytes).expect("write");
}

/// Copies every file of `from` into `to`.
fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).expect("list") {
        let path = entry.expect("entry").path();
        fs::copy(&path, to.join(path.file_name().expect("a name"))).expect("copy");
    }
}

/// Asserts `result` is corruption of `path` at `offset`.
fn assert_corrupt(result: Result<ReplicationLog, Error>, path: &Path, offset: u64) {
    match result {
        Err(Error::Corrupt { path: p, offset: o, reason }) => {
            assert_eq!((p.as_path(), o), (path, offset), "corrupt for the wrong place: {reason}");
        }
        other => panic!("expected corruption of {} at {offset}, got {other:?}", path.display()),
    }
}

#[test]
fn append_flush_reopen_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let all = records(1, 40);
    let mut log = ReplicationLog::open(dir.path(), ReplogOptions::default()).expect("open");
    assert_eq!((log.first_lsn(), log.last_lsn(), log.last_epoch()), (1, 0, 0), "a fresh log");
    append_all(&mut log, &all);
    log.flush().expect("flush");
    let stats = log.stats();
    assert_eq!((stats.first_lsn, stats.last_lsn, stats.last_epoch, stats.segments), (1, 40, 2, 1));
    assert_eq!(stats.bytes, fs::metadata(&segment_files(dir.path())[0]).expect("stat").len());
    drop(log);

    let mut log = ReplicationLog::open(dir.path(), ReplogOptions::default()).expect("reopen");
    assert_eq!(log.stats(), stats, "stats after reopen");
    assert_eq!(log.read(0, usize::MAX).expect("read"), Some(all.clone()), "from the tail");
    drop(log);
    let mut log = ReplicationLog::open(dir.path(), options(1 << 20, 1 << 30, 0)).expect("reopen without a tail");
    assert_eq!(log.read(0, usize::MAX).expect("read"), Some(all), "from the file");
}

#[test]
fn append_refuses_a_record_out_of_order_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file_log = ReplicationLog::open(dir.path(), ReplogOptions::default()).expect("open");
    for mut log in [file_log, ReplicationLog::in_memory(ReplogOptions::default())] {
        append_all(&mut log, &records(1, 2));
        let before = (log.stats(), log.read(0, usize::MAX).expect("read"));
        for lsn in [0, 1, 2, 4, Lsn::MAX] {
            match log.append(record(lsn, 1)) {
                Err(Error::InvalidInput(message)) => {
                    assert!(message.contains(&lsn.to_string()) && message.contains('2'), "{message}");
                }
                other => panic!("append of lsn {lsn} after 2: {other:?}"),
            }
            assert_eq!((log.stats(), log.read(0, usize::MAX).expect("read")), before, "after refusing {lsn}");
        }
        log.append(record(3, 1)).expect("the next lsn is taken");
        log.flush().expect("flush");
        assert_eq!(log.read(0, usize::MAX).expect("read"), Some(records(1, 3)));
    }
}

#[test]
fn torn_tail_is_cut_at_every_length_of_the_last_record() {
    let origin = tempfile::tempdir().expect("tempdir");
    let all = records(1, 5);
    let mut log = ReplicationLog::open(origin.path(), ReplogOptions::default()).expect("open");
    append_all(&mut log, &all[..4]);
    log.flush().expect("flush");
    let path = segment_files(origin.path())[0].clone();
    let good = fs::metadata(&path).expect("stat").len();
    append_all(&mut log, &all[4..]);
    log.flush().expect("flush");
    let whole = fs::metadata(&path).expect("stat").len();
    let original = fs::read(&path).expect("read");
    drop(log);

    for zeros in [false, true] {
        for cut in good..whole {
            let dir = tempfile::tempdir().expect("tempdir");
            copy_dir(origin.path(), dir.path());
            let path = segment_files(dir.path())[0].clone();
            let file = OpenOptions::new().write(true).open(&path).expect("open");
            file.set_len(cut).expect("cut");
            if zeros {
                // The file system extended the file but the data never reached the disk.
                file.set_len(whole).expect("extend with zeros");
            }
            drop(file);
            // Zeros may restore the record exactly, if its last bytes were zeros.
            let intact = fs::read(&path).expect("read") == original;
            let context = format!("cut at {cut} of {whole}, zeros {zeros}");
            let mut log = ReplicationLog::open(dir.path(), ReplogOptions::default()).expect(&context);
            let kept = if intact { 5 } else { 4 };
            assert_eq!(log.read(0, usize::MAX).expect("read"), Some(all[..kept].to_vec()), "{context}");
            let len = if intact { whole } else { good };
            assert_eq!(fs::metadata(&path).expect("stat").len(), len, "{context}: the tail is cut");
            if !intact {
                log.append(all[4].clone()).expect("append after the cut");
            }
            log.flush().expect("flush");
            drop(log);
            let mut log = ReplicationLog::open(dir.path(), ReplogOptions::default()).expect(&context);
            assert_eq!(log.read(0, usize::MAX).expect("read"), Some(all.clone()), "{context}: reopened");
        }
    }
}

/// A log of `count` records in segments of about 600 bytes, written out and closed.
fn segmented_log(dir: &Path, count: Lsn) -> Vec<PathBuf> {
    let mut log = ReplicationLog::open(dir, options(600, 1 << 30, 0)).expect("open");
    append_all(&mut log, &records(1, count));
    log.flush().expect("flush");
    segment_files(dir)
}

#[test]
fn damage_in_a_middle_record_is_corruption_at_its_offset() {
    // A flipped body byte of a middle record, in a sealed segment and in the last one.
    for segment in [0, usize::MAX] {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = segmented_log(dir.path(), 40);
        assert!(paths.len() >= 3, "{} segments", paths.len());
        let path = &paths[segment.min(paths.len() - 1)];
        let offsets = frame_offsets(path);
        assert!(offsets.len() >= 2, "a record follows the damaged one");
        let middle = offsets[(offsets.len() - 1) / 2];
        flip(path, middle + 10, 0x40);
        assert_corrupt(ReplicationLog::open(dir.path(), ReplogOptions::default()), path, middle);
    }
    // A damaged length of a middle record of the last segment: later records still check
    // out, so it is damage, not a torn tail.
    for (byte, mask) in [(0, 0x01), (0, 0x80), (3, 0x10)] {
        // The first log of 40 records or more whose last segment holds 3 records or more.
        let (dir, path, offsets) = (40..80)
            .map(|count| {
                let dir = tempfile::tempdir().expect("tempdir");
                let path = segmented_log(dir.path(), count).pop().expect("a segment");
                let offsets = frame_offsets(&path);
                (dir, path, offsets)
            })
            .find(|(_, _, offsets)| offsets.len() >= 3)
            .expect("a log whose last segment holds 3 records");
        flip(&path, offsets[1] + byte, mask);
        assert_corrupt(ReplicationLog::open(dir.path(), ReplogOptions::default()), &path, offsets[1]);
    }
    // A bad header.
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = segmented_log(dir.path(), 40);
    flip(&paths[1], 14, 0x01);
    assert_corrupt(ReplicationLog::open(dir.path(), ReplogOptions::default()), &paths[1], 0);
    // A missing segment: the next one's base does not follow.
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = segmented_log(dir.path(), 40);
    fs::remove_file(&paths[1]).expect("remove");
    assert_corrupt(ReplicationLog::open(dir.path(), ReplogOptions::default()), &paths[2], 0);
}

#[test]
fn an_lsn_out_of_sequence_within_a_file_is_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bytes = encode_header(SegmentHeader { base: 0, epoch: 0 }).to_vec();
    let mut offsets = Vec::new();
    for lsn in [1, 2, 4, 5] {
        offsets.push(bytes.len() as u64);
        encode_frame(&record(lsn, 1), &mut bytes).expect("encode");
    }
    let path = dir.path().join(file_name(1, SEGMENT_EXT));
    fs::write(&path, bytes).expect("write");
    assert_corrupt(ReplicationLog::open(dir.path(), ReplogOptions::default()), &path, offsets[2]);
}

#[test]
fn rollover_makes_segments_and_reads_cross_them_from_any_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut all = records(1, 60);
    // A record larger than a segment gets one of its own.
    all[30].changes[0].record.value = Some(Bytes::from(vec![9; 2_000]));
    let mut log = ReplicationLog::open(dir.path(), options(600, 1 << 30, 0)).expect("open");
    append_all(&mut log, &all);
    log.flush().expect("flush");
    let paths = segment_files(dir.path());
    assert!(paths.len() >= 5, "{} segments", paths.len());
    assert_eq!(log.stats().segments, paths.len() as u64);
    let sizes: Vec<u64> = paths.iter().map(|path| fs::metadata(path).expect("stat").len()).collect();
    assert_eq!(log.stats().bytes, sizes.iter().sum::<u64>(), "bytes are the files' bytes");
    for (path, size) in paths.iter().zip(&sizes) {
        assert!(*size <= 600 || frame_offsets(path).len() == 1, "{} holds {size} bytes", path.display());
    }

    // Records not yet written out are read too, after the files.
    all.extend(records(61, 70));
    append_all(&mut log, &all[60..]);
    for pass in ["before reopening", "after reopening"] {
        for after in 0..=70 {
            let expected = all[after as usize..].to_vec();
            assert_eq!(log.read(after, usize::MAX).expect("read"), Some(expected.clone()), "{pass} after {after}");
            assert_eq!(read_all(&mut log, after, 300), Some(expected.clone()), "{pass} after {after}, batches");
            let one = log.read(after, 0).expect("read").expect("retained");
            assert_eq!(one, expected.into_iter().take(1).collect::<Vec<_>>(), "{pass} after {after}, one");
        }
        log.flush().expect("flush");
        drop(log);
        log = ReplicationLog::open(dir.path(), options(600, 1 << 30, 0)).expect("reopen");
    }
}

#[test]
fn unconfirmed_records_are_kept_past_retention_within_their_own_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let all = records(1, 100);
    let mut opts = options(600, 2_000, 0);
    opts.unreplicated_bytes_max = 4_000;
    let mut log = ReplicationLog::open(dir.path(), opts).expect("open");
    append_all(&mut log, &all);
    log.flush().expect("flush");
    let bytes = log.stats().bytes;
    assert!(bytes > 4_000, "the test needs a log over both bounds: {bytes}");
    // Everything after 10 unconfirmed: kept back to where the newest 4,000 bytes start.
    let from = log.unconfirmed_from(10);
    assert!(from > 11 && from <= 100, "{from}");
    log.retain(from).expect("retain");
    let kept = log.stats().bytes;
    assert!(kept > 2_000 && kept <= 4_000, "kept {kept} bytes, from {}", log.first_lsn());
    assert_eq!(log.first_lsn(), from, "retention stops at the bound's segment");
    // Confirmed past the bound's start: from there on, and never past the log's end.
    assert_eq!(log.unconfirmed_from(90), 91);
    assert_eq!(log.unconfirmed_from(100), 101);
    assert_eq!(log.unconfirmed_from(Lsn::MAX - 1), 101);
    // No bound: only the active segment, which retention never deletes anyway.
    let other = tempfile::tempdir().expect("tempdir");
    let mut zero = ReplicationLog::open(other.path(), options(600, 2_000, 0)).expect("open");
    append_all(&mut zero, &all);
    assert!(zero.newest_bytes_start(0) > 90, "{}", zero.newest_bytes_start(0));
}

#[test]
fn retention_deletes_old_segments_and_keep_from_pins_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let all = records(1, 100);
    let opts = options(600, 2_000, 0);
    let mut log = ReplicationLog::open(dir.path(), opts.clone()).expect("open");
    append_all(&mut log, &all);
    log.flush().expect("flush");
    let segments = segment_files(dir.path()).len() as u64;
    assert!(log.stats().bytes > 2_000, "{:?}", log.stats());

    assert!(!log.would_retain_drop(1), "lsn 1 pins every segment");
    assert!(log.would_retain_drop(30));
    assert_eq!(log.retain(1).expect("retain"), 0, "lsn 1 pins every segment");
    assert_eq!(log.first_lsn(), 1);
    let dropped = log.retain(30).expect("retain");
    assert!(dropped > 0, "nothing dropped");
    let first = log.first_lsn();
    assert!(first > 1 && first <= 30, "first_lsn {first} after retain(30)");
    assert_eq!(segment_files(dir.path()).len() as u64, segments - dropped);
    assert_eq!(log.read(0, usize::MAX).expect("read"), None, "dropped records need a snapshot");
    assert_eq!(log.read(first - 2, usize::MAX).expect("read"), None);
    assert_eq!(log.read(first - 1, usize::MAX).expect("read"), Some(all[first as usize - 1..].to_vec()));

    let more = log.retain(Lsn::MAX).expect("retain");
    assert!(!log.would_retain_drop(Lsn::MAX), "within its bound");
    let stats = log.stats();
    assert!(more > 0 && stats.bytes <= 2_000, "{more} more dropped, {stats:?}");
    assert_eq!(stats.dropped_segments, dropped + more);
    assert_eq!(stats.bytes, segment_files(dir.path()).iter().map(|p| fs::metadata(p).expect("stat").len()).sum());
    drop(log);
    let mut log = ReplicationLog::open(dir.path(), opts).expect("reopen");
    assert_eq!((log.first_lsn(), log.last_lsn()), (stats.first_lsn, 100), "after reopen");
    let first = log.first_lsn();
    assert_eq!(read_all(&mut log, first - 1, 500), Some(all[first as usize - 1..].to_vec()));

    // Never the active segment, whatever the budget.
    let mut log = ReplicationLog::open(dir.path(), options(600, 0, 0)).expect("reopen");
    log.retain(Lsn::MAX).expect("retain");
    assert_eq!(segment_files(dir.path()).len(), 1, "the active segment stays");
    let first = log.first_lsn();
    assert!(first <= 100, "the active segment's records stay");
    assert_eq!(log.read(first - 1, usize::MAX).expect("read"), Some(all[first as usize - 1..].to_vec()));
}

#[test]
fn reset_keeps_its_base_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = ReplicationLog::open(dir.path(), options(600, 1 << 30, 0)).expect("open");
    append_all(&mut log, &records(1, 40));
    log.flush().expect("flush");
    append_all(&mut log, &records(41, 45));
    log.reset(100, 7).expect("reset");
    let check = |log: &mut ReplicationLog, context: &str| {
        assert_eq!((log.first_lsn(), log.last_lsn(), log.last_epoch()), (101, 100, 7), "{context}");
        assert_eq!(log.read(100, usize::MAX).expect("read"), Some(Vec::new()), "{context}");
        assert_eq!(log.read(99, usize::MAX).expect("read"), None, "{context}");
        assert!(matches!(log.append(record(46, 2)), Err(Error::InvalidInput(_))), "{context}");
    };
    check(&mut log, "after reset");
    assert_eq!(segment_files(dir.path()), vec![dir.path().join(file_name(101, SEGMENT_EXT))]);
    drop(log);
    let mut log = ReplicationLog::open(dir.path(), options(600, 1 << 30, 0)).expect("reopen");
    check(&mut log, "after reopen");
    log.append(record(101, 7)).expect("append after the base");
    log.flush().expect("flush");
    drop(log);
    let mut log = ReplicationLog::open(dir.path(), options(600, 1 << 30, 0)).expect("reopen");
    assert_eq!(log.read(100, usize::MAX).expect("read"), Some(vec![record(101, 7)]));
}

#[test]
fn an_interrupted_reset_is_finished_or_forgotten_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    segmented_log(dir.path(), 40);
    let foreign = [dir.path().join("notes.txt"), dir.path().join("00000000000000000001.other")];
    for path in &foreign {
        fs::write(path, b"not the log's").expect("write");
    }
    fs::write(dir.path().join(file_name(41, "rlog.new")), b"half a header").expect("write");
    let intent = dir.path().join(file_name(51, RESET_EXT));

    // A reset whose header never reached the disk had deleted nothing: it is forgotten.
    fs::write(&intent, &encode_header(SegmentHeader { base: 50, epoch: 3 })[..20]).expect("write");
    let mut log = ReplicationLog::open(dir.path(), ReplogOptions::default()).expect("open");
    assert_eq!(read_all(&mut log, 0, usize::MAX), Some(records(1, 40)), "the old log is whole");
    assert!(!intent.exists() && !dir.path().join(file_name(41, "rlog.new")).exists(), "leftovers removed");
    drop(log);

    // A durable one is finished.
    fs::write(&intent, encode_header(SegmentHeader { base: 50, epoch: 3 })).expect("write");
    let mut log = ReplicationLog::open(dir.path(), ReplogOptions::default()).expect("open");
    assert_eq!((log.first_lsn(), log.last_lsn(), log.last_epoch()), (51, 50, 3));
    assert_eq!(log.read(0, usize::MAX).expect("read"), None);
    assert_eq!(segment_files(dir.path()), vec![dir.path().join(file_name(51, SEGMENT_EXT))]);
    assert!(foreign.iter().all(|path| path.exists()), "files the log did not name stay");
}

#[test]
fn tail_and_files_serve_the_same_records() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let all = records(1, 80);
    let tails = [usize::MAX, 0, 1_000];
    let mut logs: Vec<ReplicationLog> = dirs
        .iter()
        .zip(tails)
        .map(|(dir, tail)| ReplicationLog::open(dir.path(), options(700, 1 << 30, tail)).expect("open"))
        .collect();
    for log in &mut logs {
        append_all(log, &all[..70]);
        log.flush().expect("flush");
        append_all(log, &all[70..]);
    }
    for after in 0..=80 {
        for bytes_max in [0, 100, 1_000, usize::MAX] {
            let reads: Vec<_> = logs.iter_mut().map(|log| log.read(after, bytes_max).expect("read")).collect();
            let expected = reads[0].clone().expect("retained");
            assert!(!expected.is_empty() || after == 80, "after {after}");
            assert_eq!(expected.first().map(|r| r.lsn), (after < 80).then_some(after + 1));
            assert_eq!(reads, vec![Some(expected); 3], "after {after}, bytes_max {bytes_max}");
        }
    }
}

#[test]
fn in_memory_log_behaves_like_the_file_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let all = records(1, 100);
    let mut memory = ReplicationLog::in_memory(options(600, 2_000, 0));
    let mut file = ReplicationLog::open(dir.path(), options(600, 1 << 30, 0)).expect("open");
    for log in [&mut memory, &mut file] {
        append_all(log, &all);
        assert!(log.append(record(7, 1)).is_err(), "out of order");
        log.flush().expect("flush");
    }
    assert_eq!(memory.stats().last_epoch, 2);
    for after in [0, 1, 17, 50, 99, 100] {
        for bytes_max in [0, 500, usize::MAX] {
            assert_eq!(memory.read(after, bytes_max).expect("read"), file.read(after, bytes_max).expect("read"));
        }
    }
    assert!(memory.stats().segments > 1, "virtual segments: {:?}", memory.stats());

    assert!(!memory.would_retain_drop(1) && memory.would_retain_drop(30));
    assert_eq!(memory.retain(1).expect("retain"), 0, "lsn 1 pins every segment");
    let dropped = memory.retain(30).expect("retain");
    let first = memory.first_lsn();
    assert!(dropped > 0 && first > 1 && first <= 30, "{dropped} dropped, first_lsn {first}");
    assert_eq!(memory.read(first - 2, usize::MAX).expect("read"), None);
    assert_eq!(memory.read(first - 1, usize::MAX).expect("read"), Some(all[first as usize - 1..].to_vec()));
    let more = memory.retain(Lsn::MAX).expect("retain");
    let stats = memory.stats();
    assert!(stats.bytes <= 2_000 && stats.segments >= 1, "{stats:?}");
    assert_eq!(stats.dropped_segments, dropped + more);

    for log in [&mut memory, &mut file] {
        log.reset(200, 9).expect("reset");
        assert_eq!((log.first_lsn(), log.last_lsn(), log.last_epoch()), (201, 200, 9));
        assert_eq!(log.read(199, usize::MAX).expect("read"), None);
        assert_eq!(log.read(200, usize::MAX).expect("read"), Some(Vec::new()));
        log.append(record(201, 9)).expect("append after the base");
        assert_eq!(log.read(200, usize::MAX).expect("read"), Some(vec![record(201, 9)]));
    }
}

#[test]
fn write_out_hands_out_an_fsync_only_when_something_is_unsynced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = ReplicationLog::open(dir.path(), options(600, 1 << 30, 0)).expect("open");
    let written = log.write_out().expect("write out");
    assert_eq!((written.bytes, written.sync.is_some()), (0, true), "an opened log owes an fsync of what it read");
    written.sync.expect("owed").sync().expect("fsync");
    assert!(log.write_out().expect("write out").sync.is_none(), "nothing new");
    append_all(&mut log, &records(1, 3));
    let written = log.write_out().expect("write out");
    assert!(written.bytes > 0, "bytes written");
    written.sync.expect("unsynced bytes need an fsync").sync().expect("fsync");
    assert!(log.write_out().expect("write out").sync.is_none(), "nothing new");
    // Across a rollover: the sealed segment is fsynced by write_out, the new one handed out.
    append_all(&mut log, &records(4, 40));
    let written = log.write_out().expect("write out");
    assert!(segment_files(dir.path()).len() > 1, "rolled over");
    written.sync.expect("unsynced bytes need an fsync").sync().expect("fsync");
    assert!(log.write_out().expect("write out").sync.is_none(), "nothing new");

    let mut memory = ReplicationLog::in_memory(ReplogOptions::default());
    append_all(&mut memory, &records(1, 3));
    let written = memory.write_out().expect("write out");
    assert!(written.sync.is_none(), "the in-memory log has nothing to fsync");
    memory.flush().expect("flush");
}

#[test]
fn the_epoch_of_each_position_survives_retention_a_reset_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = ReplicationLog::open(dir.path(), options(400, 800, 1 << 20)).unwrap();
    // Epoch 1 for 1..=10, epoch 3 for 11..=20, epoch 4 for 21..=30.
    for lsn in 1..=30 {
        log.append(record(
            lsn,
            if lsn <= 10 {
                1
            } else if lsn <= 20 {
                3
            } else {
                4
            },
        ))
        .unwrap();
    }
    log.flush().unwrap();
    assert_eq!(
        (log.epoch_at(0), log.epoch_at(10), log.epoch_at(11), log.epoch_at(30)),
        (Some(0), Some(1), Some(3), Some(4))
    );
    assert_eq!(log.epoch_at(31), None, "past the end");
    assert_eq!(log.epoch_run_start(15), Some(11));
    assert_eq!(log.epoch_runs(), vec![(0, 0), (1, 1), (11, 3), (21, 4)]);
    let reopened = ReplicationLog::open(dir.path(), options(400, 800, 1 << 20)).unwrap();
    assert_eq!(reopened.epoch_runs(), log.epoch_runs(), "rebuilt from the records at open");
    drop(reopened);
    log.retain(31).unwrap();
    let base = log.first_lsn() - 1;
    assert!(base > 0, "retention dropped the oldest segments");
    assert_eq!(log.epoch_at(base - 1), None, "before the base: unknown");
    assert_eq!(
        log.epoch_at(base),
        Some(if base <= 10 {
            1
        } else if base <= 20 {
            3
        } else {
            4
        })
    );
    assert_eq!(log.epoch_runs()[0].0, base, "the runs start at the base");
    // Reopened with a base in the middle of a run: the run still starts at the base.
    let runs = log.epoch_runs();
    let reopened = ReplicationLog::open(dir.path(), options(400, 800, 1 << 20)).unwrap();
    assert_eq!(reopened.epoch_runs(), runs, "no extra run start after a reopen at base {base}");
    drop(reopened);
    log.reset(50, 7).unwrap();
    assert_eq!((log.epoch_at(50), log.epoch_runs()), (Some(7), vec![(50, 7)]));
    log.append(record(51, 8)).unwrap();
    assert_eq!(log.epoch_run_start(51), Some(51));
    assert_eq!(log.epoch_run_start(50), Some(50));
}

/// Appends `new` to `log` (which holds `old`, from an older format), reopens it from `dir`
/// and checks that it reads back the old records and the new one.
fn appended_after(mut log: ReplicationLog, dir: &Path, mut old: Vec<LogRecord>, new: LogRecord) {
    log.append(new.clone()).expect("append");
    log.flush().expect("flush");
    drop(log);
    let mut log = ReplicationLog::open(dir, options(1 << 20, 1 << 30, 0)).expect("reopen");
    old.push(new);
    assert_eq!(log.read(0, usize::MAX).expect("read"), Some(old));
}

/// Writes segment file 1 of `dir` as log format `version` wrote it: its header, then each of
/// `bodies` (the records as that format encoded them) framed with its length and checksum.
fn write_old_segment(dir: &Path, version: u32, bodies: &[Vec<u8>]) {
    let mut bytes = encode_header(SegmentHeader { base: 0, epoch: 0 }).to_vec();
    bytes[8..12].copy_from_slice(&version.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..28]);
    bytes[28..32].copy_from_slice(&crc.to_le_bytes());
    for body in bodies {
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
        bytes.extend_from_slice(body);
    }
    fs::write(dir.join(file_name(1, SEGMENT_EXT)), bytes).expect("write");
}

#[test]
fn a_format_1_segment_reads_as_whole_requests_and_takes_format_2_records_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Format 1: the header says version 1, and a body ends after the changes.
    let old: Vec<LogRecord> =
        (1..=3).map(|lsn| LogRecord { part: 0, parts: 1, olds: Vec::new(), ..record(lsn, 1) }).collect();
    let bodies: Vec<Vec<u8>> =
        old.iter().map(|r| postcard::to_stdvec(&(r.lsn, r.epoch, &r.changes)).expect("encode")).collect();
    write_old_segment(dir.path(), 1, &bodies);
    let mut log = ReplicationLog::open(dir.path(), options(1 << 20, 1 << 30, 0)).expect("open a format 1 log");
    assert_eq!(log.read(0, usize::MAX).expect("read"), Some(old.clone()));
    // New records go after the old ones, in the same file, and everything reads back.
    let new = LogRecord { part: 0, parts: 2, ..record(4, 1) };
    log.append(new.clone()).expect("append");
    log.flush().expect("flush");
    assert_eq!(log.open_request(), Some(4), "the log ends inside a request");
    drop(log);
    let mut log = ReplicationLog::open(dir.path(), options(1 << 20, 1 << 30, 0)).expect("reopen");
    let mut all = old;
    all.push(new);
    assert_eq!(log.read(0, usize::MAX).expect("read"), Some(all));
    assert_eq!((log.open_request(), log.complete_lsn()), (Some(4), 3), "an open request survives a reopen");
}

#[test]
fn a_format_2_segment_reads_with_old_values_unknown_and_takes_format_3_records_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Format 2: the header says version 2, and a body ends after `parts`.
    let old: Vec<LogRecord> = (1..=3).map(|lsn| LogRecord { olds: Vec::new(), ..record(lsn, 1) }).collect();
    let bodies: Vec<Vec<u8>> = old
        .iter()
        .map(|r| postcard::to_stdvec(&(r.lsn, r.epoch, &r.changes, r.part, r.parts)).expect("encode"))
        .collect();
    write_old_segment(dir.path(), 2, &bodies);
    let mut log = ReplicationLog::open(dir.path(), options(1 << 20, 1 << 30, 0)).expect("open a format 2 log");
    let read = log.read(0, usize::MAX).expect("read").expect("records");
    assert_eq!(read, old);
    assert!(read.iter().all(|r| r.changes.iter().enumerate().all(|(i, _)| *r.old(i) == Old::Unknown)));
    // A format 3 record, with its old values, goes after them and reads back whole.
    let mut new = record(4, 1);
    new.olds = new.changes.iter().map(|_| Old::Absent).collect();
    assert!(!new.olds.is_empty(), "the test record has changes");
    appended_after(log, dir.path(), old, new);
}

#[test]
fn a_format_3_segment_reads_as_changes_and_takes_statement_records_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Format 3: the header says version 3, and a body ends after `olds`.
    let old: Vec<LogRecord> = (1..=3)
        .map(|lsn| {
            let mut r = record(lsn, 1);
            r.olds = r.changes.iter().map(|_| Old::Absent).collect();
            r
        })
        .collect();
    let bodies: Vec<Vec<u8>> = old
        .iter()
        .map(|r| postcard::to_stdvec(&(r.lsn, r.epoch, &r.changes, r.part, r.parts, &r.olds)).expect("encode"))
        .collect();
    write_old_segment(dir.path(), 3, &bodies);
    let mut log = ReplicationLog::open(dir.path(), options(1 << 20, 1 << 30, 0)).expect("open a format 3 log");
    assert_eq!(log.read(0, usize::MAX).expect("read"), Some(old.clone()));
    // A statement (format 4) goes after them and reads back whole.
    let args: Vec<bytes::Bytes> =
        ["SET", "k", "v", "EX", "10"].iter().map(|w| bytes::Bytes::from(w.to_string())).collect();
    let request = crate::kv::parse_command(&args).unwrap().unwrap();
    let first = old[0].changes[0].record.version;
    let statement = crate::replication::Statement::new(request, first, first.ts, vec![args[1].clone()], None);
    let new = LogRecord { statement: Some(statement), ..LogRecord::whole(4, 1, Vec::new()) };
    appended_after(log, dir.path(), old, new);
}

#[test]
fn a_record_whose_old_values_do_not_match_its_changes_is_refused() {
    let mut bad = record(1, 1);
    bad.olds = vec![Old::Absent; bad.changes.len() + 1];
    let error = bad.parts_error().expect("refused");
    assert!(error.contains("old values"), "{error}");
}

#[test]
fn truncate_after_drops_the_active_segments_tail_durably_and_counts_as_a_reset() {
    for (written, tail) in [(true, 0), (true, 1 << 20), (false, 1 << 20)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = options(1 << 20, 1 << 30, tail);
        let mut log = ReplicationLog::open(dir.path(), opts.clone()).expect("open");
        let all = records(1, 30);
        append_all(&mut log, &all);
        if written {
            log.flush().expect("flush");
        }
        let resets = log.resets().0;
        assert!(log.can_truncate_after(0) && log.can_truncate_after(26));
        // Lsn 25 is the first part of a request of two (its second is 26): it is left open.
        log.truncate_after(25).expect("truncate");
        assert_eq!((log.last_lsn(), log.last_epoch(), log.open_request()), (25, 2, Some(25)));
        assert_eq!(log.resets(), (resets + 1, 25), "a cut of the tail counts as a reset at its lsn");
        assert_eq!(log.read(0, usize::MAX).expect("read"), Some(all[..25].to_vec()));
        assert_eq!(log.stats().bytes, fs::metadata(&segment_files(dir.path())[0]).expect("stat").len());
        // Another history goes on from there, in another epoch, and survives a reopen.
        let next: Vec<LogRecord> = (26..=28).map(|lsn| LogRecord::whole(lsn, 3, Vec::new())).collect();
        append_all(&mut log, &next);
        log.flush().expect("flush");
        drop(log);
        let mut log = ReplicationLog::open(dir.path(), opts.clone()).expect("reopen");
        let expected: Vec<LogRecord> = all[..25].iter().cloned().chain(next).collect();
        assert_eq!(log.read(0, usize::MAX).expect("read"), Some(expected));
        assert_eq!(log.epoch_at(25), Some(2));
        assert_eq!(log.epoch_at(26), Some(3));
        // Down to nothing but the base.
        log.truncate_after(0).expect("truncate to the base");
        assert_eq!((log.last_lsn(), log.last_epoch(), log.read(0, usize::MAX).expect("read")), (0, 0, Some(vec![])));
    }
    // With frames pending for a segment not yet created: written out (the segment created),
    // then cut, down to that segment's base.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = ReplicationLog::open(dir.path(), options(600, 1 << 30, 1 << 20)).expect("open");
    let all = records(1, 40);
    append_all(&mut log, &all[..30]);
    log.flush().expect("flush");
    let segments = log.stats().segments;
    append_all(&mut log, &all[30..]);
    assert!(log.stats().segments > segments, "the appends started a segment");
    let first_of_active = (1..=40).rev().find(|&lsn| !log.can_truncate_after(lsn - 1)).map_or(1, |lsn| lsn + 1);
    assert!(first_of_active > 30, "the active segment holds only pending records: {first_of_active}");
    log.truncate_after(first_of_active - 1).expect("truncate to the active segment's base");
    assert_eq!(log.last_lsn(), first_of_active - 1);
    drop(log);
    let mut log = ReplicationLog::open(dir.path(), options(600, 1 << 30, 0)).expect("reopen");
    assert_eq!(log.read(0, usize::MAX).expect("read"), Some(all[..first_of_active as usize - 1].to_vec()));
    // Not across segments: refused, and nothing changes.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = ReplicationLog::open(dir.path(), options(600, 1 << 30, 0)).expect("open");
    append_all(&mut log, &records(1, 40));
    log.flush().expect("flush");
    assert!(log.stats().segments > 2);
    assert!(!log.can_truncate_after(1));
    assert!(matches!(log.truncate_after(1), Err(Error::InvalidInput(_))));
    assert_eq!(log.last_lsn(), 40);
    // The in-memory log alike.
    let mut memory = ReplicationLog::in_memory(ReplogOptions::default());
    append_all(&mut memory, &records(1, 10));
    memory.truncate_after(4).expect("truncate");
    assert_eq!(memory.read(0, usize::MAX).expect("read"), Some(records(1, 4)));
    assert_eq!(memory.stats().bytes, records(1, 4).iter().map(|r| r.size_hint() as u64).sum::<u64>());
}
