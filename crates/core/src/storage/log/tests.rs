//! The log engine's own tests: recovery (torn tails, corruption, hint files), compaction and
//! crashes in it, damaged records and the rewrite of their segments, fsync failure and policies, the value cache. The engine contract is in
//! `contract_tests`.

use super::cache::CacheBudget;
use super::commit::{After, AfterCommit, Commit, Executor, SealedFiles, SyncFile, SyncedChange, Work};
use super::engine::Location;
use super::format::{record_bytes, SegmentId, GEN_MAX, HINT_EXT, PART_EXT, SEGMENT_EXT};
use super::manifest::{read_manifest, MANIFEST_FILE, MANIFEST_TMP_FILE};
use super::options::SEGMENT_BYTES_MIN;
use super::reader::{Next, SegmentReader};
use super::{FsyncPolicy, LogEngine, LogOptions, VALUE_CACHE_BYTES_MAX_DEFAULT};
use crate::error::Error;
use crate::storage::{Engine, Record, Slot};
use crate::version::{NodeId, Timestamp, Version};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What the engine should hold: every key's newest record.
type Model = BTreeMap<Bytes, Record>;

/// Puts records into an engine and into a model of it, with increasing versions.
#[derive(Default)]
struct Harness {
    /// The records put so far.
    model: Model,
    /// The last version's milliseconds.
    millis: u64,
}

impl Harness {
    /// Puts `key` = `value` (`None`: a tombstone) with an optional deadline.
    fn put(&mut self, e: &mut LogEngine, key: &str, value: Option<&str>, expire_at_ms: Option<u64>) {
        self.millis += 1;
        let record = Record {
            version: Version { ts: Timestamp { millis: self.millis, logical: 3 }, node: NodeId(42) },
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            expire_at_ms,
        };
        let key = Bytes::copy_from_slice(key.as_bytes());
        e.put(key.clone(), record.clone()).expect("put");
        self.model.insert(key, record);
    }
}

/// Everything the engine holds, read back through `scan` and `get`.
fn state(e: &LogEngine) -> Model {
    let mut state = Model::new();
    for (key, meta) in e.scan(Bound::Unbounded, usize::MAX) {
        let record = e.get(&key).expect("get").expect("a scanned key has a record");
        assert_eq!(record.meta(), meta, "scan and get disagree on {key:?}");
        state.insert(key, record);
    }
    state
}

/// Asserts the engine holds exactly `model`: records, expiry index and key counts.
fn assert_state(e: &LogEngine, model: &Model, context: &str) {
    assert_eq!(state(e), *model, "{context}");
    let mut deadlines: Vec<(u64, Bytes)> = model
        .iter()
        .filter(|(_, r)| r.value.is_some())
        .filter_map(|(k, r)| r.expire_at_ms.map(|d| (d, k.clone())))
        .collect();
    deadlines.sort();
    let expiring: Vec<Bytes> = deadlines.into_iter().map(|(_, k)| k).collect();
    assert_eq!(e.expiring(u64::MAX, usize::MAX), expiring, "{context}: expiry index");
    let stats = e.stats();
    let live = model.values().filter(|r| r.value.is_some()).count() as u64;
    assert_eq!((stats.keys, stats.tombstones), (live, model.len() as u64 - live), "{context}");
    assert_accounting(e, context);
    assert_cache(e, context);
}

/// Asserts each segment's live bytes are exactly the records the keydir points at, and its
/// live and dead bytes add up to its length.
fn assert_accounting(e: &LogEngine, context: &str) {
    let mut live: BTreeMap<SegmentId, u64> = BTreeMap::new();
    for (key, slot) in e.keydir.iter() {
        *live.entry(slot.at.position.segment).or_default() += record_bytes(key.len(), slot.meta.value_len);
    }
    for (id, segment) in &e.segments {
        let want = live.get(id).copied().unwrap_or(0);
        assert_eq!(segment.live_bytes, want, "{context}: live bytes of segment {id}");
        assert_eq!(segment.live_bytes + segment.dead_bytes, segment.len(), "{context}: segment {id}");
    }
}

/// Asserts every cached value equals its record's value on disk, tombstones cache nothing,
/// and the cached values' lengths add up to `cached_bytes`, within the budget.
fn assert_cache(e: &LogEngine, context: &str) {
    let mut cached_bytes = 0;
    for (key, slot) in e.keydir.iter() {
        let Some(cached) = &slot.at.cached else { continue };
        assert!(!slot.meta.tombstone, "{context}: tombstone of {key:?} cached");
        let on_disk = e.read_value(key, slot).unwrap_or_else(|err| panic!("{context}: {key:?}: {err}"));
        assert_eq!(*cached, on_disk, "{context}: cached value of {key:?}");
        cached_bytes += cached.len() as u64;
    }
    assert_eq!(e.stats().cached_bytes, cached_bytes, "{context}: cached bytes");
    assert!(cached_bytes <= e.options.value_cache_bytes_max, "{context}: {cached_bytes} cached, over budget");
}

/// Options with small segments and no fsync, which never compact on their own accord.
fn small(hint_files: bool) -> LogOptions {
    LogOptions {
        fsync: FsyncPolicy::Never,
        segment_bytes_max: SEGMENT_BYTES_MIN,
        compaction_dead_ratio: 1.0,
        compaction_dead_bytes_min: u64::MAX,
        hint_files,
        value_cache_bytes_max: VALUE_CACHE_BYTES_MAX_DEFAULT,
    }
}

/// `small` options with a value cache of `value_cache_bytes_max` bytes.
fn cache(hint_files: bool, value_cache_bytes_max: u64) -> LogOptions {
    LogOptions { value_cache_bytes_max, ..small(hint_files) }
}

/// The bytes `key` has cached, if any.
fn cached(e: &LogEngine, key: &str) -> Option<Bytes> {
    e.keydir.get(key.as_bytes()).and_then(|slot| slot.at.cached.clone())
}

/// Options that compact 4 KiB segments once half their bytes are dead.
fn compacting() -> LogOptions {
    LogOptions { segment_bytes_max: 4096, compaction_dead_ratio: 0.5, compaction_dead_bytes_min: 0, ..small(true) }
}

/// The files in `dir` with extension `ext`, in name order.
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("list")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

/// Copies every file of `from` into `to`, except those `to` already has.
fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).expect("list") {
        let path = entry.expect("entry").path();
        let target = to.join(path.file_name().expect("file name"));
        if !target.exists() {
            fs::copy(&path, &target).expect("copy");
        }
    }
}

/// The first key (in key order) whose newest record is in a sealed segment and passes
/// `also`, with its slot and its segment's path.
fn sealed_victim(e: &LogEngine, also: impl Fn(&Slot<Location>) -> bool) -> (Bytes, Slot<Location>, PathBuf) {
    let (key, slot) = (e.keydir.iter())
        .find(|(_, slot)| slot.at.position.segment != e.active && also(slot))
        .map(|(key, slot)| (Bytes::copy_from_slice(key), slot.clone()))
        .expect("a record in a sealed segment");
    let path = e.segments[&slot.at.position.segment].path.clone();
    (key, slot, path)
}

/// Xors the byte at `offset` of the file at `path` with `mask`.
fn flip(path: &Path, offset: u64, mask: u8) {
    let mut bytes = fs::read(path).expect("read");
    bytes[offset as usize] ^= mask;
    fs::write(path, bytes).expect("write");
}

/// Writes 6 rounds over 20 keys (values of growing length, deadlines, tombstones) into `e`.
fn write_rounds(e: &mut LogEngine, h: &mut Harness) {
    for round in 0..6u64 {
        for k in 0..20u64 {
            let value = format!("value {round} {k} {}", "x".repeat(k as usize * 3));
            let expire = (k % 4 == 0).then_some(10_000 + k + round);
            h.put(e, &format!("key-{k:02}"), Some(&value), expire);
        }
        for k in (round % 5..20).step_by(5) {
            h.put(e, &format!("key-{k:02}"), None, None);
        }
    }
}

#[test]
fn reopen_restores_values_tombstones_and_expiry() {
    for hints in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut e = LogEngine::open(dir.path(), small(hints)).expect("open");
        let mut h = Harness::default();
        write_rounds(&mut e, &mut h);
        e.flush(0).expect("flush");
        e.write_pending_hints(u64::MAX).expect("hints");
        let (before, last_ts) = (e.stats(), e.last_timestamp());
        assert!(before.segments >= 3, "several segments: {before:?}");
        assert!(before.dead_bytes > 0 && before.tombstones > 0, "{before:?}");
        drop(e);
        let hint_files = files(dir.path(), HINT_EXT).len() as u64;
        assert_eq!(hint_files, if hints { before.segments - 1 } else { 0 }, "one per sealed segment");

        // With hints read if written, then by scanning every segment: the same state.
        for read_hints in [hints, false] {
            let options = LogOptions { hint_files: read_hints, ..small(hints) };
            let e = LogEngine::open(dir.path(), options).expect("reopen");
            let context = format!("hints written {hints}, read {read_hints}");
            assert_state(&e, &h.model, &context);
            assert_eq!(e.last_timestamp(), last_ts, "{context}");
            let after = e.stats();
            assert_eq!((after.segments, after.dead_bytes), (before.segments, before.dead_bytes), "{context}");
        }
    }
}

/// The records of `cut_at_every_byte`: (key, value, deadline), `None` a tombstone.
const CUT_RECORDS: [(&str, Option<&str>, Option<u64>); 8] = [
    ("a", Some("1"), None),
    ("b", Some("two"), None),
    ("c", Some(""), None),
    ("a", Some("three!"), None),
    ("d", Some("expires at 5000"), Some(5000)),
    ("b", None, None),
    ("e", Some("a value long enough to tear in the middle of, more than once"), None),
    ("d", Some("again"), Some(6000)),
];

#[test]
fn cut_at_every_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = LogOptions { fsync: FsyncPolicy::Never, ..LogOptions::default() };
    let mut e = LogEngine::open(dir.path(), options).expect("open");
    let mut h = Harness::default();
    let (mut ends, mut models) = (vec![0], vec![Model::new()]);
    let segment = files(dir.path(), SEGMENT_EXT).pop().expect("one segment");
    for (key, value, expire) in CUT_RECORDS {
        h.put(&mut e, key, value, expire);
        e.flush(0).expect("flush");
        ends.push(fs::metadata(&segment).expect("stat").len());
        models.push(h.model.clone());
    }
    drop(e);
    let name = segment.file_name().expect("name");
    for cut in ends[ends.len() - 4]..=ends[ends.len() - 1] {
        let copy = tempfile::tempdir().expect("tempdir");
        let copied = copy.path().join(name);
        fs::copy(&segment, &copied).expect("copy");
        fs::OpenOptions::new().write(true).open(&copied).expect("open").set_len(cut).expect("cut");
        let mut e = LogEngine::open(copy.path(), options).unwrap_or_else(|err| panic!("cut at {cut}: {err}"));
        let kept = ends.iter().rposition(|&end| end <= cut).expect("0 is an end");
        assert_state(&e, &models[kept], &format!("cut at {cut}"));
        assert_eq!(fs::metadata(&copied).expect("stat").len(), ends[kept], "cut at {cut}: tail removed");

        // Appending after the cut and reopening shows no trace of the torn tail.
        let mut after = Harness { model: models[kept].clone(), millis: 100 };
        after.put(&mut e, "z", Some("after the cut"), None);
        e.flush(0).expect("flush");
        drop(e);
        let e = LogEngine::open(copy.path(), options).unwrap_or_else(|err| panic!("cut at {cut}, reopen: {err}"));
        assert_state(&e, &after.model, &format!("cut at {cut}, then a put"));
    }
}

#[test]
fn flipped_byte_in_a_middle_record_is_corruption_at_its_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = LogOptions { fsync: FsyncPolicy::Never, ..LogOptions::default() };
    let mut e = LogEngine::open(dir.path(), options).expect("open");
    let mut h = Harness::default();
    let segment = files(dir.path(), SEGMENT_EXT).pop().expect("one segment");
    let mut ends = vec![0];
    for (key, value, expire) in &CUT_RECORDS[..5] {
        h.put(&mut e, key, *value, *expire);
        e.flush(0).expect("flush");
        ends.push(fs::metadata(&segment).expect("stat").len());
    }
    drop(e);
    for record in 1..=3 {
        let start = ends[record];
        for at in start..ends[record + 1] {
            for mask in [0x01, 0xff] {
                let copy = tempfile::tempdir().expect("tempdir");
                copy_dir(dir.path(), copy.path());
                let copied = copy.path().join(segment.file_name().expect("name"));
                flip(&copied, at, mask);
                match LogEngine::open(copy.path(), options) {
                    Err(Error::Corrupt { path, offset, .. }) => {
                        assert_eq!((path, offset), (copied, start), "byte {at} ^ {mask:#x}");
                    }
                    other => panic!("byte {at} ^ {mask:#x}: expected Corrupt, got {other:?}"),
                }
            }
        }
    }
}

#[test]
fn truncated_sealed_segment_without_a_recorded_length_is_corruption_not_a_torn_tail() {
    for hints in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut e = LogEngine::open(dir.path(), small(hints)).expect("open");
        write_rounds(&mut e, &mut Harness::default());
        e.flush(0).expect("flush");
        drop(e);
        // A version-1 manifest records no lengths: only the scan can find the cut.
        write_version_1_manifest(dir.path());
        let first = files(dir.path(), SEGMENT_EXT).remove(0);
        let len = fs::metadata(&first).expect("stat").len();
        fs::OpenOptions::new().write(true).open(&first).expect("open").set_len(len - 10).expect("cut");
        match LogEngine::open(dir.path(), small(hints)) {
            Err(Error::Corrupt { path, offset, reason }) => {
                assert_eq!(path, first, "hints {hints}");
                assert!(offset < len - 10 && reason.contains("past the end"), "{offset} {reason}");
            }
            other => panic!("hints {hints}: expected Corrupt, got {other:?}"),
        }
    }
}

/// Writes 10 rounds of overwrites over 40 keys into 4 KiB segments, with deadlines and
/// tombstones: most bytes end up dead.
fn write_overwrites(e: &mut LogEngine, h: &mut Harness) {
    for round in 0..10u64 {
        for k in 0..40u64 {
            let key = format!("key-{k:02}");
            match (round, k % 9, k % 7) {
                (9, 0, _) => h.put(e, &key, None, None),
                (_, _, 0) => h.put(e, &key, Some(&format!("r{round} {}", "e".repeat(50))), Some(1_000 + round)),
                _ => h.put(e, &key, Some(&format!("r{round} k{k} {}", "v".repeat(40 + k as usize))), None),
            }
        }
    }
    e.flush(0).expect("flush");
}

/// Puts a few overwrites, flushes and runs one small compaction step; returns whether a
/// compaction is under way after it.
fn step(e: &mut LogEngine, h: &mut Harness, i: u64) -> bool {
    for k in [i % 40, (i * 7 + 3) % 40] {
        h.put(e, &format!("key-{k:02}"), Some(&format!("step {i}")), None);
    }
    e.flush(0).expect("flush");
    e.maintain(300).expect("maintain");
    assert_state(e, &h.model, &format!("after step {i}"));
    e.compaction.is_some()
}

#[test]
fn compaction_in_steps_keeps_values_and_reclaims_space() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut e = LogEngine::open(dir.path(), compacting()).expect("open");
    let mut h = Harness::default();
    write_overwrites(&mut e, &mut h);
    let before = e.stats();
    assert!(before.segments >= 8, "{before:?}");
    let (mut i, mut steps_under_way) = (0, 0);
    while e.stats().compactions == 0 {
        i += 1;
        assert!(i < 1000, "compaction never finished");
        steps_under_way += u64::from(step(&mut e, &mut h, i));
    }
    assert!(steps_under_way > 5, "compaction ran in steps, not at once: {steps_under_way}");
    let after = e.stats();
    assert!(after.segments < before.segments / 2, "{before:?} -> {after:?}");
    assert!(after.dead_bytes < before.dead_bytes / 4, "{before:?} -> {after:?}");
    assert!(files(dir.path(), PART_EXT).is_empty());
    assert_eq!(files(dir.path(), SEGMENT_EXT).len() as u64, after.segments);
    e.write_pending_hints(u64::MAX).expect("hints");
    assert_eq!(files(dir.path(), HINT_EXT).len() as u64, after.segments - 1);
    drop(e);
    let e = LogEngine::open(dir.path(), compacting()).expect("reopen");
    assert_state(&e, &h.model, "reopened after compaction");
    assert_eq!(e.stats().dead_bytes, after.dead_bytes, "dead bytes recovered");
}

#[test]
fn a_compaction_step_copies_about_its_budget_of_bytes_values_included() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = LogOptions { segment_bytes_max: 64 * 1024, ..compacting() };
    let mut e = LogEngine::open(dir.path(), options).expect("open");
    let mut h = Harness::default();
    let value = "v".repeat(1000);
    for round in 0..4 {
        for k in 0..100 {
            h.put(&mut e, &format!("key-{k:03}"), Some(&format!("{round} {value}")), None);
        }
    }
    e.flush(0).expect("flush");
    let budget = 4096;
    let record = record_bytes("key-000".len(), 1002);
    let outputs = |e: &LogEngine| -> u64 {
        e.compaction.as_ref().map_or(0, |c| c.outputs.iter().map(|id| e.segments[id].len()).sum())
    };
    let (mut steps, mut copied_most) = (0, 0);
    loop {
        steps += 1;
        assert!(steps < 10_000, "compaction never finished");
        let before = outputs(&e);
        e.maintain(budget).expect("maintain");
        if e.compaction.is_none() {
            break;
        }
        let copied = outputs(&e) - before;
        assert!(copied <= budget + record, "step {steps} of {budget} bytes copied {copied} bytes");
        copied_most = copied_most.max(copied);
    }
    assert!(copied_most > budget / 2, "no step copied much: {copied_most} bytes at most");
    assert_eq!(e.stats().compactions, 1);
    assert_state(&e, &h.model, "after the compaction");
}

#[test]
fn crash_mid_compaction_recovers_and_compacts_again() {
    // Small outputs, so that the crash comes after one is sealed and during the next.
    let options = LogOptions { segment_bytes_max: SEGMENT_BYTES_MIN, ..compacting() };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut e = LogEngine::open(dir.path(), options).expect("open");
    let mut h = Harness::default();
    write_overwrites(&mut e, &mut h);
    let mut i = 0;
    while e.compaction.as_ref().is_none_or(|c| c.outputs.len() < 2) {
        i += 1;
        assert!(i < 1000, "compaction never reached a second output");
        step(&mut e, &mut h, i);
    }
    assert!(!files(dir.path(), PART_EXT).is_empty(), "outputs under way");
    drop(e); // the crash: flushed records are in the files, nothing else happens

    let mut e = LogEngine::open(dir.path(), options).expect("reopen");
    assert_state(&e, &h.model, "reopened mid-compaction");
    assert!(files(dir.path(), PART_EXT).is_empty(), "unfinished outputs removed");
    assert_eq!(files(dir.path(), HINT_EXT).len() as u64, e.stats().segments - 1, "no orphan hints");
    e.maintain(u64::MAX).expect("compact at once");
    assert_eq!(e.stats().compactions, 1);
    assert_state(&e, &h.model, "compacted after the crash");
    drop(e);
    let e = LogEngine::open(dir.path(), options).expect("reopen");
    assert_state(&e, &h.model, "reopened after compacting");
}

#[test]
fn crash_between_publishing_outputs_and_removing_inputs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut e = LogEngine::open(dir.path(), compacting()).expect("open");
    let mut h = Harness::default();
    write_overwrites(&mut e, &mut h);
    let inputs = tempfile::tempdir().expect("tempdir");
    copy_dir(dir.path(), inputs.path());
    e.maintain(u64::MAX).expect("compact at once");
    assert_eq!(e.stats().compactions, 1);
    drop(e);

    // The compacted directory (its manifest retiring the inputs) with the inputs and their
    // hints put back, as if the crash hit after the commit, before the removals.
    let mixed = tempfile::tempdir().expect("tempdir");
    copy_dir(dir.path(), mixed.path());
    copy_dir(inputs.path(), mixed.path());
    let restored = files(mixed.path(), SEGMENT_EXT).len() - files(dir.path(), SEGMENT_EXT).len();
    assert!(restored >= 8, "inputs restored: {restored}");
    let e = LogEngine::open(mixed.path(), compacting()).expect("reopen");
    assert_state(&e, &h.model, "outputs beside their inputs");
    assert_tidy(&e, "retired inputs removed");
}

#[test]
fn failed_fsync_stops_the_engine_for_good() {
    let mut e = LogEngine::temporary(LogOptions::default());
    let mut h = Harness::default();
    h.put(&mut e, "a", Some("1"), None);
    e.fail_next_fsync();
    assert!(matches!(e.flush(0), Err(Error::Io { op: "fsync", .. })), "the failure itself");
    let record = Record { value: None, ..h.model[&Bytes::from("a")].clone() };
    assert!(matches!(e.put(Bytes::from("b"), record), Err(Error::Stopped(_))), "put after");
    assert!(matches!(e.flush(1), Err(Error::Stopped(_))), "never retried");
    assert!(matches!(e.maintain(100), Err(Error::Stopped(_))), "maintain after");
    assert_state(&e, &h.model, "reads still work");
}

#[test]
fn failed_fsync_while_sealing_stops_the_engine() {
    let mut e = LogEngine::temporary(small(true));
    e.fail_next_fsync();
    let mut i = 0;
    let err = loop {
        i += 1;
        assert!(i < 100, "the segment never filled");
        let record =
            Record { version: Version::default(), value: Some(Bytes::from("x".repeat(100))), expire_at_ms: None };
        if let Err(err) = e.put(Bytes::from(format!("k{i}")), record) {
            break err;
        }
    };
    assert!(matches!(err, Error::Io { op: "fsync", .. }), "{err}");
    let record = Record { version: Version::default(), value: None, expire_at_ms: None };
    assert!(matches!(e.put(Bytes::from("after"), record), Err(Error::Stopped(_))));
}

#[test]
fn fsync_policy_parses_and_displays() {
    let table = [
        ("always", Some(FsyncPolicy::Always)),
        ("never", Some(FsyncPolicy::Never)),
        ("100", Some(FsyncPolicy::IntervalMs(100))),
        ("0", Some(FsyncPolicy::IntervalMs(0))),
        ("", None),
        ("sometimes", None),
        ("Always", None),
        ("-5", None),
        ("+5", None),
        ("100ms", None),
        ("interval:100", None),
        ("99999999999999999999999", None),
    ];
    for (text, want) in table {
        match (text.parse::<FsyncPolicy>(), want) {
            (Ok(policy), Some(want)) => {
                assert_eq!(policy, want, "{text:?}");
                assert_eq!(policy.to_string(), text, "display round-trips");
            }
            (Err(Error::InvalidInput(msg)), None) => assert!(msg.contains("\"always\""), "{msg}"),
            (got, _) => panic!("{text:?}: got {got:?}, want {want:?}"),
        }
    }
}

/// One flush of `fsync_policy_decides_which_flushes_sync`: (now_ms, put before it, synced).
type Flush = (u64, bool, bool);

#[test]
fn fsync_policy_decides_which_flushes_sync() {
    // (policy, [(now_ms, put before the flush, expect synced)]) applied to one engine each.
    let table: [(FsyncPolicy, &[Flush]); 3] = [
        (FsyncPolicy::Always, &[(0, true, true), (0, false, false), (1, true, true)]),
        (FsyncPolicy::Never, &[(0, true, false), (10_000, true, false)]),
        (
            FsyncPolicy::IntervalMs(100),
            &[
                (1000, true, true),
                (1050, true, false),
                (1099, true, false),
                (1100, true, true),
                (1300, false, false), // nothing written since the last fsync
                (1301, true, true),
                (500, true, true), // the clock stepped back
            ],
        ),
    ];
    for (policy, flushes) in table {
        let mut e = LogEngine::temporary(LogOptions { fsync: policy, ..LogOptions::default() });
        let mut h = Harness::default();
        for &(now_ms, put, want) in flushes {
            if put {
                h.put(&mut e, "k", Some("v"), None);
            }
            let fsyncs = e.stats().fsyncs;
            let flushed = e.flush(now_ms).expect("flush");
            assert_eq!(flushed.synced, want, "{policy} at {now_ms}");
            assert_eq!(flushed.bytes > 0, put, "{policy} at {now_ms}");
            assert_eq!(e.stats().fsyncs - fsyncs, u64::from(want), "{policy} at {now_ms}");
        }
    }
}

/// A way to damage a file.
type Damage<'a> = &'a dyn Fn(&Path);

#[test]
fn bad_hint_file_falls_back_to_scanning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut e = LogEngine::open(dir.path(), small(true)).expect("open");
    let mut h = Harness::default();
    write_rounds(&mut e, &mut h);
    e.flush(0).expect("flush");
    e.write_pending_hints(u64::MAX).expect("hints");
    let dead_bytes = e.stats().dead_bytes;
    drop(e);
    let hints = files(dir.path(), HINT_EXT);
    let damages: [(&str, Damage); 4] = [
        ("flipped byte", &|p| flip(p, fs::metadata(p).expect("stat").len() / 2, 0x01)),
        ("flipped trailer", &|p| flip(p, fs::metadata(p).expect("stat").len() - 1, 0xff)),
        ("truncated", &|p| fs::write(p, &fs::read(p).expect("read")[..30]).expect("write")),
        ("another segment's hint", &|p| {
            fs::copy(&hints[1], p).expect("copy");
        }),
    ];
    for (what, damage) in damages {
        let copy = tempfile::tempdir().expect("tempdir");
        copy_dir(dir.path(), copy.path());
        damage(&copy.path().join(hints[0].file_name().expect("name")));
        let e = LogEngine::open(copy.path(), small(true)).unwrap_or_else(|err| panic!("{what}: {err}"));
        assert_state(&e, &h.model, what);
        assert_eq!(e.stats().dead_bytes, dead_bytes, "{what}");
    }
}

#[test]
fn damage_in_a_hinted_segment_is_found_by_get() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut e = LogEngine::open(dir.path(), small(true)).expect("open");
    let mut h = Harness::default();
    for k in 0..40 {
        h.put(&mut e, &format!("key-{k:02}"), Some(&format!("value {k} {}", "y".repeat(30))), None);
    }
    e.flush(0).expect("flush");
    e.write_pending_hints(u64::MAX).expect("hints");
    drop(e);
    let first = files(dir.path(), SEGMENT_EXT).remove(0);
    flip(&first, fs::metadata(&first).expect("stat").len() - 1, 0x01);
    let e = LogEngine::open(dir.path(), small(true)).expect("opens from the hint without reading values");
    let mut corrupt = Vec::new();
    for key in h.model.keys() {
        match e.get(key) {
            Ok(_) => {}
            Err(Error::Corrupt { path, reason, .. }) if path == first => corrupt.push(reason),
            Err(err) => panic!("{key:?}: {err}"),
        }
    }
    assert_eq!(corrupt, ["body checksum mismatch"]);
}

#[test]
fn put_refuses_what_the_format_cannot_hold() {
    let mut e = LogEngine::temporary(LogOptions::default());
    let record = Record { version: Version::default(), value: None, expire_at_ms: None };
    let long_key = Bytes::from(vec![b'k'; crate::storage::KEY_BYTES_MAX + 1]);
    assert!(matches!(e.put(long_key, record.clone()), Err(Error::InvalidInput(_))));
    let zero_deadline = Record { value: Some(Bytes::from("v")), expire_at_ms: Some(0), ..record.clone() };
    assert!(matches!(e.put(Bytes::from("k"), zero_deadline), Err(Error::InvalidInput(_))));
    e.put(Bytes::from("k"), record).expect("bad input does not stop the engine");
    e.flush(0).expect("flush");
}

#[test]
fn record_larger_than_a_segment_gets_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut e = LogEngine::open(dir.path(), small(true)).expect("open");
    let mut h = Harness::default();
    let big = "b".repeat(3 * SEGMENT_BYTES_MIN as usize);
    for key in ["small-1", "big", "small-2"] {
        h.put(&mut e, key, Some(if key == "big" { &big } else { "s" }), None);
    }
    e.flush(0).expect("flush");
    assert_eq!(e.stats().segments, 3);
    drop(e);
    let e = LogEngine::open(dir.path(), small(true)).expect("reopen");
    assert_state(&e, &h.model, "reopened");
}

#[test]
fn segment_names_sort_as_segments_and_parse_back() {
    let ids = [
        SegmentId { base: 0, gen: 0 },
        SegmentId { base: 7, gen: 0 },
        SegmentId { base: 7, gen: 3 },
        SegmentId { base: 7, gen: GEN_MAX },
        SegmentId { base: 8, gen: 0 },
        SegmentId { base: u64::MAX, gen: 0 },
    ];
    let names: Vec<String> = ids.iter().map(|id| id.file_name(SEGMENT_EXT)).collect();
    assert_eq!(names[2], "00000000000000000007-00003.seg");
    assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
    for (id, name) in ids.iter().zip(&names) {
        assert_eq!(SegmentId::parse(name), Some((*id, SEGMENT_EXT)));
    }
    for name in ["7-3.seg", "0000000000000000000a-00003.seg", "99999999999999999999-00000.seg", "notes.txt"] {
        assert_eq!(SegmentId::parse(name), None, "{name}");
    }
}

#[test]
fn cache_budget_admits_what_fits_and_nothing_more() {
    // (budget, lengths offered in order, want admitted)
    let table: [(u64, &[usize], &[bool]); 5] = [
        (0, &[0, 1], &[false, false]), // 0 turns the cache off, even for empty values
        (10, &[10, 0, 1], &[true, true, false]),
        (10, &[4, 4, 4, 2], &[true, true, false, true]),
        (10, &[11, 3], &[false, true]),
        (u64::MAX, &[usize::MAX / 2, usize::MAX / 2], &[true, true]),
    ];
    for (budget_bytes, lens, want) in table {
        let mut budget = CacheBudget::new(budget_bytes);
        let admitted: Vec<bool> = lens.iter().map(|&len| budget.admit(len)).collect();
        assert_eq!(admitted, want, "budget {budget_bytes}, lengths {lens:?}");
        let counted: usize = lens.iter().zip(&admitted).filter(|(_, &a)| a).map(|(&len, _)| len).sum();
        assert_eq!(budget.bytes(), counted as u64, "budget {budget_bytes}, lengths {lens:?}");
        for (&len, _) in lens.iter().zip(&admitted).filter(|(_, &a)| a) {
            budget.release(len);
        }
        assert_eq!(budget.bytes(), 0, "every admitted value released");
    }
}

#[test]
fn cached_values_equal_disk_values_through_compaction_and_reopen() {
    // Nothing cached, some cached, everything cached.
    for budget in [0, 2_000, VALUE_CACHE_BYTES_MAX_DEFAULT] {
        let options = LogOptions { value_cache_bytes_max: budget, ..compacting() };
        let dir = tempfile::tempdir().expect("tempdir");
        let mut e = LogEngine::open(dir.path(), options).expect("open");
        let mut h = Harness::default();
        write_overwrites(&mut e, &mut h);
        assert_state(&e, &h.model, &format!("budget {budget}: written"));
        let cached_bytes = e.stats().cached_bytes;
        assert_eq!(cached_bytes == 0, budget == 0, "budget {budget}: {cached_bytes} cached");

        // A compaction moves records, keeping their cached values.
        let before: Vec<_> = e.keydir.iter().map(|(k, slot)| (k.to_vec(), slot.at.clone())).collect();
        e.maintain(u64::MAX).expect("compact at once");
        assert_eq!(e.stats().compactions, 1);
        let after: Vec<_> = e.keydir.iter().map(|(k, slot)| (k.to_vec(), slot.at.clone())).collect();
        let moved = before.iter().zip(&after).filter(|(b, a)| b.1.position != a.1.position).count();
        assert!(moved > 0, "budget {budget}: compaction moved records");
        for ((key, b), (_, a)) in before.iter().zip(&after) {
            assert_eq!(b.cached, a.cached, "budget {budget}: {key:?} cached across the move");
        }
        assert_eq!(e.stats().cached_bytes, cached_bytes, "budget {budget}: compaction");
        assert_state(&e, &h.model, &format!("budget {budget}: compacted"));
        for i in 0..20 {
            step(&mut e, &mut h, i);
        }
        drop(e);

        // Reopened, by hints (only the newest segment is read, so cached) or by scans.
        for hint_files in [true, false] {
            let e = LogEngine::open(dir.path(), LogOptions { hint_files, ..options }).expect("reopen");
            let context = format!("budget {budget}: reopened, hints {hint_files}");
            assert_state(&e, &h.model, &context);
            let cached_keys = e.keydir.iter().filter(|(_, slot)| slot.at.cached.is_some()).count();
            let in_active = |slot: &Slot<Location>| slot.at.position.segment == e.active && !slot.meta.tombstone;
            let active_keys = e.keydir.iter().filter(|(_, slot)| in_active(slot)).count();
            match (budget, hint_files) {
                (0, _) => assert_eq!(cached_keys, 0, "{context}"),
                (VALUE_CACHE_BYTES_MAX_DEFAULT, true) => assert_eq!(cached_keys, active_keys, "{context}"),
                (VALUE_CACHE_BYTES_MAX_DEFAULT, false) => assert_eq!(cached_keys as u64, e.stats().keys, "{context}"),
                _ => assert!(cached_keys > 0, "{context}"),
            }
        }
    }
}

#[test]
fn value_cache_respects_its_budget() {
    for budget in [0, 1, 100, 1_000, 10_000] {
        let mut e = LogEngine::temporary(cache(true, budget));
        let mut h = Harness::default();
        for i in 0..200u64 {
            let value = "v".repeat((i * 37 % 150) as usize);
            let tombstone = i % 11 == 0;
            h.put(&mut e, &format!("key-{:02}", i % 60), (!tombstone).then_some(&value), None);
            let cached_bytes = e.stats().cached_bytes;
            assert!(cached_bytes <= budget, "budget {budget}, put {i}: {cached_bytes} cached");
        }
        e.flush(0).expect("flush");
        assert_state(&e, &h.model, &format!("budget {budget}"));
        if budget == 0 {
            assert!(e.keydir.iter().all(|(_, slot)| slot.at.cached.is_none()), "nothing cached");
        }
    }

    // A full cache takes nothing more and evicts nothing.
    let mut e = LogEngine::temporary(cache(true, 100));
    let mut h = Harness::default();
    h.put(&mut e, "fills", Some(&"f".repeat(100)), None);
    h.put(&mut e, "late", Some("l"), None);
    assert_eq!((cached(&e, "fills").map(|v| v.len()), cached(&e, "late")), (Some(100), None));
    assert_eq!(e.stats().cached_bytes, 100);
    assert_state(&e, &h.model, "full cache");
}

#[test]
fn replacing_a_cached_value_frees_its_bytes() {
    let mut e = LogEngine::temporary(cache(true, 100));
    let mut h = Harness::default();
    // (key, value length or None for a tombstone, want cached bytes after, want key cached)
    let table: [(&str, Option<usize>, u64, bool); 9] = [
        ("a", Some(60), 60, true),
        ("a", Some(30), 30, true),   // the 60 bytes leave
        ("a", None, 0, false),       // a tombstone frees and caches nothing
        ("b", Some(100), 100, true), // exactly full
        ("b", Some(100), 100, true), // full, but the old value leaves first
        ("c", Some(1), 100, false),  // full: not cached, nothing evicted
        ("b", Some(101), 0, false),  // over the budget alone: not cached, the old one leaves
        ("c", Some(5), 5, true),     // room again
        ("b", Some(95), 100, true),
    ];
    for (i, (key, len, want_bytes, want_cached)) in table.into_iter().enumerate() {
        let value = len.map(|len| "x".repeat(len));
        h.put(&mut e, key, value.as_deref(), None);
        let context = format!("row {i}: {key} = {len:?}");
        assert_eq!(e.stats().cached_bytes, want_bytes, "{context}");
        assert_eq!(cached(&e, key).is_some(), want_cached, "{context}");
        assert_state(&e, &h.model, &context);
    }
}

#[test]
fn damage_after_open_is_found_by_get_unless_cached() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Room for the first 5 values of 40 bytes; the rest are read from disk.
    let mut e = LogEngine::open(dir.path(), cache(true, 5 * 40)).expect("open");
    let mut h = Harness::default();
    for k in 0..40 {
        h.put(&mut e, &format!("key-{k:02}"), Some(&format!("value {k:02} {}", "z".repeat(31))), None);
    }
    e.flush(0).expect("flush");
    assert_state(&e, &h.model, "written");
    let (hot, cold) = ("key-01", "key-30");
    assert!(cached(&e, hot).is_some() && cached(&e, cold).is_none());

    // Flip the last byte of each one's value in its segment, under the open engine.
    for key in [hot, cold] {
        let slot = e.keydir.get(key.as_bytes()).expect("indexed");
        let end = slot.at.position.offset + record_bytes(key.len(), slot.meta.value_len);
        flip(&e.segments[&slot.at.position.segment].path, end - 1, 0x01);
    }
    let hot_record = e.get(hot.as_bytes()).expect("a cached value is served from memory");
    assert_eq!(hot_record.as_ref(), h.model.get(hot.as_bytes()), "the cache does not see the disk");
    match e.get(cold.as_bytes()) {
        Err(Error::Corrupt { reason, .. }) => assert_eq!(reason, "body checksum mismatch"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn write_out_hands_the_fsync_to_the_caller_per_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = LogEngine::open(dir.path(), LogOptions::default()).unwrap();
    let record = |millis| Record {
        version: crate::version::Version {
            ts: crate::version::Timestamp { millis, logical: 0 },
            node: crate::version::NodeId(1),
        },
        value: Some(Bytes::from_static(b"value")),
        expire_at_ms: None,
    };
    engine.put(Bytes::from_static(b"k"), record(1)).unwrap();
    let out = engine.write_out(10).unwrap();
    assert!(out.bytes > 0, "the record went to the operating system");
    out.sync.expect("fsync = always owes an fsync after a write").sync().unwrap();
    assert!(engine.write_out(11).unwrap().sync.is_none(), "nothing new written: no fsync owed");
    // What was written out (and fsynced by the caller) is there after a reopen.
    drop(engine);
    let engine = LogEngine::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(engine.get(b"k").unwrap().unwrap().value.as_deref(), Some(&b"value"[..]));
    drop(engine);

    let options = LogOptions { fsync: FsyncPolicy::Never, ..LogOptions::default() };
    let mut never = LogEngine::open(dir.path(), options).unwrap();
    never.put(Bytes::from_static(b"k2"), record(2)).unwrap();
    let out = never.write_out(20).unwrap();
    assert!(out.bytes > 0 && out.sync.is_none(), "fsync = never owes no fsync");
}

#[test]
fn write_out_unsynced_hands_out_no_fsync_and_sync_written_runs_the_one_owed() {
    // A replicating node's engine: its replication log is the write-ahead log.
    let dir = tempfile::tempdir().unwrap();
    let mut e = LogEngine::open(dir.path(), LogOptions::default()).unwrap();
    let mut h = Harness::default();
    // The first one fsyncs what the segment holds, once, and starts the SYNCED record.
    h.put(&mut e, "first", Some("v"), None);
    e.write_out_unsynced(9).unwrap();
    assert!(dir.path().join("SYNCED").exists());
    h.put(&mut e, "k", Some("v"), None);
    let opened = e.stats().fsyncs;
    assert!(e.write_out_unsynced(10).unwrap() > 0, "the record went to the operating system");
    assert_eq!(e.stats().fsyncs, opened, "no fsync");
    e.sync_written(11).unwrap();
    assert_eq!(e.stats().fsyncs, opened + 2, "the fsync owed, and the SYNCED record's");
    e.sync_written(12).unwrap();
    assert_eq!(e.stats().fsyncs, opened + 2, "nothing new: no fsync");
    // An interval policy does not hold it off: it is asked for when it matters.
    let options = LogOptions { fsync: FsyncPolicy::IntervalMs(3_600_000), ..LogOptions::default() };
    let mut interval = LogEngine::open(&dir.path().join("interval"), options).unwrap();
    interval.write_out_unsynced(19).unwrap();
    h.put(&mut interval, "k2", Some("v"), None);
    interval.write_out_unsynced(20).unwrap();
    let before = interval.stats().fsyncs;
    interval.sync_written(21).unwrap();
    assert_eq!(interval.stats().fsyncs, before + 2);
}

#[test]
fn an_engine_reopened_over_writes_never_fsynced_fsyncs_them_at_the_first_sync_asked_for() {
    // Found in review: the process died with its writes in the page cache only; reopened, the
    // engine took them for synced, and a replicating node's log then dropped its copy.
    let dir = tempfile::tempdir().unwrap();
    let mut e = LogEngine::open(dir.path(), LogOptions::default()).unwrap();
    let mut h = Harness::default();
    h.put(&mut e, "k", Some("v"), None);
    e.write_out_unsynced(10).unwrap(); // the first fsyncs what is there and starts SYNCED
    h.put(&mut e, "k2", Some("v"), None);
    e.write_out_unsynced(10).unwrap(); // this one is not fsynced
    let segment = e.dir.join(e.active.file_name(SEGMENT_EXT));
    drop(e);
    let mut e = LogEngine::open(dir.path(), LogOptions::default()).unwrap();
    let opened = e.fsyncs.paths.len();
    e.sync_written(11).unwrap();
    assert!(e.fsyncs.paths[opened..].contains(&segment), "what the dead process left unsynced was not fsynced");
}

#[test]
fn finishing_a_compaction_fsyncs_what_write_out_left_to_the_caller() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut e = LogEngine::open(dir.path(), LogOptions { fsync: FsyncPolicy::Always, ..compacting() }).expect("open");
    let mut h = Harness::default();
    write_overwrites(&mut e, &mut h);
    let mut i = 0;
    while e.stats().compactions == 0 {
        i += 1;
        assert!(i < 1000, "compaction never finished");
        h.put(&mut e, &format!("key-{:02}", i % 40), Some(&format!("late {i}")), None);
        // The node's way: write out, and leave the fsync to a syncer that has not run yet.
        let owed = e.write_out(0).expect("write out").sync.expect("fsync = always owes one");
        e.fsyncs.paths.clear();
        e.maintain(300).expect("maintain");
        if e.stats().compactions > 0 {
            let active = e.segments[&e.active].path.clone();
            assert!(
                e.fsyncs.paths.contains(&active),
                "finishing a compaction removed old segments without fsyncing the active one, whose fsync was owed \
                 elsewhere: {:?}",
                e.fsyncs.paths
            );
        }
        drop(owed);
    }
    assert_state(&e, &h.model, "after compaction");
}

/// A test's executor: each job on a thread of its own, as a node's, each held before it
/// starts until the hold is released.
struct Threads(Arc<Hold>);

impl Executor for Threads {
    // The core starts no thread; a test plays the node, which does.
    #[allow(clippy::disallowed_methods)]
    fn execute(&self, job: Box<dyn FnOnce() + Send>) {
        let hold = self.0.clone();
        std::thread::spawn(move || {
            hold.wait();
            job();
            hold.done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
    }
}

/// A test's hold on the jobs of a [`Threads`] executor.
#[derive(Debug)]
struct Hold {
    released: Mutex<bool>,
    changed: std::sync::Condvar,
    /// Jobs run to their end.
    done: std::sync::atomic::AtomicUsize,
}

impl Hold {
    /// A hold, already released or not.
    fn new(released: bool) -> Arc<Hold> {
        Arc::new(Hold { released: Mutex::new(released), changed: std::sync::Condvar::new(), done: Default::default() })
    }

    /// Lets every job held here (and every later one) go on.
    fn release(&self) {
        *self.released.lock().unwrap() = true;
        self.changed.notify_all();
    }

    /// Waits until released, or 30 s: a test that fails while it holds a commit drops its
    /// engine, whose drop waits for the commit, and must not hang there.
    fn wait(&self) {
        let released = self.released.lock().unwrap();
        let timeout = std::time::Duration::from_secs(30);
        let _ = self.changed.wait_timeout_while(released, timeout, |released| !*released).unwrap();
    }
}

/// Opens `dir` with `options` and an executor running each job on a thread (held until the
/// returned hold is released, if `held`), as a node does.
fn open_in_background(dir: &Path, options: LogOptions, held: bool) -> (LogEngine, Arc<Hold>) {
    let mut e = LogEngine::open(dir, options).expect("open");
    let hold = Hold::new(!held);
    e.set_executor(Arc::new(Threads(hold.clone())));
    (e, hold)
}

/// Runs compaction steps, with a few overwrites written out (not flushed: a flush waits for
/// the commit) before each, until a compaction's commit is under way on its thread.
fn until_committing(e: &mut LogEngine, h: &mut Harness) {
    let compactions = e.stats().compactions;
    let mut i = 0;
    while e.committing.is_none() {
        i += 1;
        assert!(i < 1000, "no commit started");
        h.put(e, &format!("key-{:02}", i % 40), Some(&format!("before {i}")), None);
        e.write_out(0).expect("write out");
        e.maintain(300).expect("maintain");
        assert_state(e, &h.model, &format!("step {i}"));
    }
    assert_eq!(e.stats().compactions, compactions, "a compaction counts once its commit is done");
}

#[test]
fn a_background_commit_lets_puts_gets_and_seals_go_on_and_finishes_at_a_later_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut e, _) = open_in_background(dir.path(), compacting(), false);
    let mut h = Harness::default();
    write_overwrites(&mut e, &mut h);
    until_committing(&mut e, &mut h);
    // Meanwhile: puts enough to seal the active segment (a seal waits for the commit, which
    // fsyncs the active segment and writes a manifest of its own), and gets of every key.
    let active = e.active;
    let mut i = 0;
    while e.active == active {
        i += 1;
        assert!(i < 1000, "the active segment never sealed");
        h.put(&mut e, &format!("key-{:02}", i % 40), Some(&format!("during {i} {}", "d".repeat(60))), None);
        assert_state(&e, &h.model, &format!("put {i} during the commit"));
    }
    assert!(e.committing.is_none(), "the seal waited for the commit and finished it");
    assert_eq!(e.stats().compactions, 1);
    assert!(files(dir.path(), PART_EXT).is_empty(), "outputs published");
    e.flush(0).expect("flush");
    drop(e);
    let e = LogEngine::open(dir.path(), compacting()).expect("reopen");
    assert_state(&e, &h.model, "reopened after a background commit and a seal");
}

/// How often a test looks, at most, whether a released commit thread is done (the core's
/// tests take no wall time: about a minute of yields on this machine).
const POLLS_MAX: u64 = 100_000_000;

#[test]
fn a_background_commit_is_picked_up_by_maintain_without_waiting_and_by_drop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut e, hold) = open_in_background(dir.path(), compacting(), true);
    let mut h = Harness::default();
    write_overwrites(&mut e, &mut h);
    until_committing(&mut e, &mut h);
    // The thread is held: maintain and write_out return at once, the commit still under way.
    for i in 0..5 {
        e.maintain(300).expect("maintain");
        h.put(&mut e, &format!("key-{i:02}"), Some("meanwhile"), None);
        e.write_out(0).expect("write out");
        assert!(e.committing.is_some(), "call {i} waited for the held commit");
        assert_eq!(e.stats().compactions, 0);
        assert_state(&e, &h.model, &format!("call {i} during the commit"));
    }
    hold.release();
    let mut polls = 0u64;
    while e.stats().compactions == 0 {
        polls += 1;
        assert!(polls < POLLS_MAX, "maintain never picked up the finished commit");
        e.maintain(0).expect("maintain");
        std::thread::yield_now();
    }
    assert!(e.committing.is_none());
    assert_state(&e, &h.model, "after the commit");

    // A second compaction, and the engine dropped (a crash, or a stop) with its commit under
    // way: the drop waits for it, so the directory is whole when it reopens.
    write_overwrites(&mut e, &mut h);
    until_committing(&mut e, &mut h);
    drop(e);
    assert!(files(dir.path(), PART_EXT).is_empty(), "the commit finished before the drop returned");
    let e = LogEngine::open(dir.path(), compacting()).expect("reopen");
    assert_state(&e, &h.model, "reopened after a drop during a commit");
}

#[test]
fn a_write_out_during_a_background_commit_hands_out_the_fsync_the_commit_has_not_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = LogOptions { fsync: FsyncPolicy::Always, ..compacting() };
    let (mut e, hold) = open_in_background(dir.path(), options, true);
    let mut h = Harness::default();
    write_overwrites(&mut e, &mut h);
    let mut i = 0;
    while e.committing.is_none() {
        i += 1;
        assert!(i < 1000, "no commit started");
        // Put and not written out: the commit's plan writes it, its thread fsyncs it later.
        h.put(&mut e, &format!("key-{:02}", i % 40), Some(&format!("late {i}")), None);
        e.maintain(300).expect("maintain");
    }
    let out = e.write_out(0).expect("write out");
    assert!(
        out.sync.is_some(),
        "a write-out during the commit owed no fsync, though the commit, which wrote the last put, has not fsynced it"
    );
    hold.release();
    e.flush(0).expect("flush");
    assert_state(&e, &h.model, "after the commit");
}

#[test]
fn a_background_commit_drops_the_pending_hints_of_the_segments_it_removes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut e, hold) = open_in_background(dir.path(), compacting(), true);
    let mut h = Harness::default();
    write_overwrites(&mut e, &mut h);
    // The oldest segment's hint half written, the others not begun.
    e.write_pending_hints(10).expect("a first part of a hint");
    let oldest = e.pending_hints.first().expect("hints pending").id;
    assert!(e.pending_hints[0].written > 0, "the oldest hint is half written");
    // The whole compaction at once, then its commit on its thread, done but not picked up.
    e.compact_step(u64::MAX).expect("compact");
    assert!(e.committing.is_some(), "the commit is under way");
    assert_eq!(hold.done.load(std::sync::atomic::Ordering::SeqCst), 0, "no job ran before the commit's");
    hold.release();
    let mut polls = 0u64;
    while hold.done.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        polls += 1;
        assert!(polls < POLLS_MAX, "the commit never finished");
        std::thread::yield_now();
    }
    // maintain picks up the commit, then writes hints: none of a removed segment's.
    e.maintain(300).expect("maintain after the commit removed the inputs and their hints");
    e.write_pending_hints(u64::MAX).expect("the remaining hints");
    assert!(!dir.path().join(oldest.file_name(HINT_EXT)).exists(), "a hint of the removed segment {oldest}");
    assert_eq!(e.stats().compactions, 1);
    drop(e);
    let e = LogEngine::open(dir.path(), compacting()).expect("reopen");
    assert_state(&e, &h.model, "reopened after the commit");
}

#[test]
fn a_replicating_engines_seal_commits_on_its_thread_and_its_next_segment_waits_in_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = LogOptions { fsync: FsyncPolicy::Always, ..compacting() };
    let (mut e, hold) = open_in_background(dir.path(), options, true);
    let mut h = Harness::default();
    // A replicating node's way: write out without fsyncs of its own.
    h.put(&mut e, "first", Some("1"), None);
    e.write_out_unsynced(0).expect("write out");
    let sealed = e.active;
    let mut i = 0;
    while e.active == sealed {
        i += 1;
        assert!(i < 1000, "the active segment never sealed");
        h.put(&mut e, &format!("key-{:02}", i % 40), Some(&format!("before {i} {}", "b".repeat(60))), None);
        e.write_out_unsynced(0).expect("write out");
    }
    assert!(e.sealing(), "the put that sealed went on; the seal commits on its thread");
    let next = e.active;
    let before_seal = tempfile::tempdir().expect("tempdir");
    for i in 0..5 {
        h.put(&mut e, &format!("key-{i:02}"), Some(&format!("during {i}")), None);
        assert_eq!(e.write_out_unsynced(0).expect("write out"), 0, "nothing written before the manifest lists it");
        assert_state(&e, &h.model, &format!("put {i} during the seal"));
    }
    let next_path = dir.path().join(next.file_name(SEGMENT_EXT));
    assert_eq!(fs::metadata(&next_path).expect("the next segment exists").len(), 0, "unlisted, so empty");
    // A crash now leaves the old manifest and an empty unlisted next segment: open recovers.
    copy_dir(dir.path(), before_seal.path());
    drop(LogEngine::open(before_seal.path(), options).expect("a crash during the seal's commit recovers"));
    hold.release();
    e.wait_commit().expect("the seal's commit");
    assert!(e.write_out_unsynced(0).expect("write out") > 0, "the waiting records written once listed");
    e.sync_written(0).expect("sync");
    assert_state(&e, &h.model, "after the seal");
    drop(e);
    let e = LogEngine::open(dir.path(), options).expect("reopen");
    assert_state(&e, &h.model, "reopened after a seal on its thread");
}

#[test]
fn adopting_a_directory_without_a_manifest_after_an_interrupted_seal_cuts_the_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut e = LogEngine::open(dir.path(), small(false)).expect("open");
    let mut h = Harness::default();
    for i in 0..5 {
        h.put(&mut e, &format!("key-{i}"), Some(&format!("value {i}")), None);
    }
    e.flush(0).expect("flush");
    let active = e.active;
    let path = e.segments[&active].path.clone();
    drop(e);
    // The seal a crash interrupted: the next segment created (empty), the sealed one's last
    // record torn because it was never fsynced; and no manifest (an older build's directory,
    // or one an operator asked to adopt).
    let len = fs::metadata(&path).expect("segment").len();
    fs::OpenOptions::new().write(true).open(&path).expect("open").set_len(len - 3).expect("tear the tail");
    let next = SegmentId { base: active.base + 1, gen: 0 };
    fs::File::create(dir.path().join(next.file_name(SEGMENT_EXT))).expect("the next segment");
    fs::remove_file(dir.path().join(MANIFEST_FILE)).expect("no manifest");
    let e = LogEngine::open(dir.path(), small(false)).expect("adopted: the torn tail is the newest segment's");
    h.model.remove(&Bytes::from("key-4"));
    assert_state(&e, &h.model, "adopted after an interrupted seal");
    assert!(!dir.path().join(next.file_name(SEGMENT_EXT)).exists(), "the empty segment removed");
}

/// An executor that never runs its jobs: it drops them, or runs them into a panic.
struct Broken {
    panic: bool,
}

impl Executor for Broken {
    fn execute(&self, job: Box<dyn FnOnce() + Send>) {
        if self.panic {
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                drop(job);
                panic!("a job's thread panicked");
            }));
            assert!(run.is_err());
        }
    }
}

#[test]
fn a_commit_whose_job_never_reports_stops_the_engine_and_its_drop_returns() {
    for panic in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut e = LogEngine::open(dir.path(), compacting()).expect("open");
        e.set_executor(Arc::new(Broken { panic }));
        let mut h = Harness::default();
        write_overwrites(&mut e, &mut h);
        let mut i = 0;
        let error = loop {
            i += 1;
            assert!(i < 1000, "no commit failed (panic: {panic})");
            if let Err(error) = e.maintain(300) {
                break error;
            }
        };
        assert!(error.to_string().contains("ended without a result"), "{error}");
        assert!(matches!(e.write_out(0), Err(Error::Stopped(_))), "the engine refuses more");
        assert_eq!(e.stats().compactions, 0, "a commit that never ran is no compaction");
        drop(e);
        let e = LogEngine::open(dir.path(), compacting()).expect("reopen: the files are as a crash left them");
        assert_state(&e, &h.model, "reopened after a lost commit");
    }
}

#[test]
fn a_failed_background_commit_stops_the_engine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut e, _) = open_in_background(dir.path(), compacting(), false);
    let mut h = Harness::default();
    h.put(&mut e, "a", Some("1"), None);
    e.flush(0).expect("flush");
    // A commit whose rename cannot succeed: its output is gone.
    let active = &e.segments[&e.active];
    let file = || SyncFile::of(active);
    let missing = dir.path().join("missing.compacting");
    let commit = Commit {
        dir: dir.path().to_path_buf(),
        last: SealedFiles { segment: file(), hint: None },
        active: file(),
        synced: SyncedChange::Keep,
        manifest: e.encode_manifest().expect("encode"),
        publish: vec![(missing.clone(), dir.path().join("missing.seg"))],
        empty: Vec::new(),
        retired: Vec::new(),
    };
    let after = AfterCommit {
        synced: SyncedChange::Keep,
        published: Vec::new(),
        empty: Vec::new(),
        retired: Vec::new(),
        inputs: 0,
        kept: 0,
        outputs: 0,
    };
    e.start_commit(Work::Compaction(commit), After::Compaction(after), true).expect("started on its thread");
    let error = e.flush(0).expect_err("the flush waits for the commit, which failed");
    assert!(error.to_string().contains("missing.compacting"), "the error names the file: {error}");
    assert!(matches!(e.write_out(0), Err(Error::Stopped(_))), "the engine refuses more");
    assert!(matches!(e.maintain(300), Err(Error::Stopped(_))), "and maintains no more");
    assert_eq!(e.stats().compactions, 0, "a failed commit is no compaction");
}

#[test]
#[allow(clippy::disallowed_methods)] // the test plays the node's syncer thread, and a writer's
fn asking_the_gate_for_a_failure_does_not_wait_for_an_fsync_under_way() {
    use std::sync::mpsc;
    let gate = Arc::new(crate::storage::FsyncGate::default());
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let syncing = gate.clone();
    let syncer = std::thread::spawn(move || {
        syncing.run(Path::new("slow"), || {
            started_tx.send(()).expect("started");
            let _ = release_rx.recv();
            Ok(())
        })
    });
    started_rx.recv().expect("the fsync started");
    let (answer_tx, answer_rx) = mpsc::channel();
    let asking = gate.clone();
    std::thread::spawn(move || answer_tx.send(asking.failure()));
    let answer = answer_rx.recv_timeout(std::time::Duration::from_secs(10));
    release_tx.send(()).expect("release");
    syncer.join().expect("syncer").expect("the fsync succeeds");
    assert_eq!(answer, Ok(None), "a write asking whether an fsync failed waited for the fsync under way");
}

#[test]
fn a_failed_fsync_on_one_thread_refuses_every_other_fsync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut e = LogEngine::open(dir.path(), LogOptions { fsync: FsyncPolicy::Always, ..small(true) }).expect("open");
    let mut h = Harness::default();
    h.put(&mut e, "a", Some("1"), None);
    let handed_out = e.write_out(0).expect("write out").sync.expect("an fsync is owed");
    // The engine's own fsync (sealing, here by a flush that syncs) fails first...
    h.put(&mut e, "b", Some("2"), None);
    e.fail_next_fsync();
    assert!(e.flush(0).is_err(), "the injected fsync failure");
    // ...so the syncer's fsync of the same file must not report a success.
    assert!(matches!(handed_out.sync(), Err(Error::Stopped(_))), "a swallowed fsync error");
    assert!(matches!(e.write_out(1), Err(Error::Stopped(_))), "the engine refuses more");
}

#[test]
fn a_rotation_leaves_its_hint_to_maintain_and_a_crash_before_it_costs_only_a_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut e = LogEngine::open(dir.path(), small(true)).expect("open");
    let mut h = Harness::default();
    write_rounds(&mut e, &mut h);
    e.flush(0).expect("flush");
    let sealed = e.stats().segments - 1;
    assert!(sealed >= 2, "rotations happened");
    assert!(files(dir.path(), HINT_EXT).is_empty(), "no hint is written while putting");
    // Half of the first hint, as a crash in the middle of maintain would leave it.
    let half = e.pending_hints[0].bytes.len() as u64 / 2;
    assert_eq!(e.write_pending_hints(half).expect("some hints"), half);
    drop(e);
    let e = LogEngine::open(dir.path(), small(true)).expect("a cut hint is scanned past, not an error");
    assert_state(&e, &h.model, "reopened with a cut hint and missing ones");
    drop(e);
    // Maintain writes the hints of the segments sealed from now on; the next open reads them.
    let mut e = LogEngine::open(dir.path(), small(true)).expect("open");
    let segments_at_open = e.stats().segments;
    write_rounds(&mut e, &mut h);
    e.flush(0).expect("flush");
    while !e.pending_hints.is_empty() {
        e.maintain(64).expect("maintain");
    }
    // Every segment sealed since the open (the one active at open included) has its hint.
    let sealed_since = e.stats().segments - segments_at_open + 1;
    assert!(files(dir.path(), HINT_EXT).len() as u64 >= sealed_since, "a hint per segment sealed since the open");
    drop(e);
    let e = LogEngine::open(dir.path(), small(true)).expect("reopen");
    assert_state(&e, &h.model, "reopened from hints");
}

/// Asserts the directory holds only what the engine uses: a manifest listing exactly its open
/// segments, each sealed one with its file's length, their `.seg` files, hints of sealed ones
/// only, nothing temporary or left over.
fn assert_tidy(e: &LogEngine, context: &str) {
    let open: BTreeSet<SegmentId> = e.segments.keys().copied().collect();
    let on_disk = read_manifest(&e.dir).expect("read the manifest").expect("a manifest");
    let listed: BTreeSet<SegmentId> = on_disk.segments.keys().copied().collect();
    assert_eq!(listed, open, "{context}: the manifest lists the open segments");
    assert_eq!(e.manifest.segments, on_disk.segments, "{context}: the engine's manifest");
    for (&id, &recorded) in &on_disk.segments {
        let bytes = fs::metadata(e.dir.join(id.file_name(SEGMENT_EXT))).map(|m| m.len()).ok();
        let want = if id == e.active { None } else { bytes };
        assert_eq!(recorded, want, "{context}: {id}'s length in the manifest (its file: {bytes:?})");
    }
    assert!(on_disk.retired.iter().all(|id| !e.dir.join(id.file_name(SEGMENT_EXT)).exists()), "{context}");
    for id in &open {
        assert!(e.dir.join(id.file_name(SEGMENT_EXT)).exists(), "{context}: {id} has its file");
    }
    for entry in fs::read_dir(&e.dir).expect("list") {
        let name = entry.expect("entry").file_name().into_string().expect("a UTF-8 name");
        match SegmentId::parse(&name) {
            Some((id, SEGMENT_EXT)) => assert!(open.contains(&id), "{context}: stray {name}"),
            Some((id, HINT_EXT)) => assert!(open.contains(&id) && id != e.active, "{context}: stray {name}"),
            _ => assert_eq!(name, MANIFEST_FILE, "{context}: unexpected file"),
        }
    }
}

/// The names and contents of every file in `dir`.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(dir).expect("list") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name").to_string_lossy().into_owned();
        files.insert(name, fs::read(&path).expect("read"));
    }
    files
}

/// Copies of the directory taken at each step of a seal or a publish, with the step's name:
/// the disks a crash at each step would leave.
type Images = Arc<Mutex<Vec<(&'static str, tempfile::TempDir)>>>;

/// Makes `e` copy its directory at every step of sealing and publishing.
fn record_steps(e: &mut LogEngine) -> Images {
    let images: Images = Arc::default();
    let sink = images.clone();
    e.at_step = Some(Box::new(move |dir, step| {
        let copy = tempfile::tempdir().expect("tempdir");
        copy_dir(dir, copy.path());
        sink.lock().expect("images").push((step, copy));
    }));
    images
}

/// Opens `dir` expecting a refusal naming `path` (because it is missing, or not listed, as
/// `reason` says), and checks the refusal touched nothing.
fn assert_refused(dir: &Path, options: LogOptions, path: &Path, reason: &str, context: &str) {
    let before = snapshot(dir);
    match LogEngine::open(dir, options) {
        Err(Error::Inconsistent { path: named, reason: why }) => {
            assert_eq!(named, path, "{context}: the file named");
            assert!(why.contains(reason) && why.contains(MANIFEST_FILE), "{context}: {why}");
        }
        other => panic!("{context}: expected a refusal naming {}, got {other:?}", path.display()),
    }
    assert!(snapshot(dir) == before, "{context}: the refusal changed the directory");
}

#[test]
fn deleting_any_segment_is_refused_by_name() {
    for hint_files in [true, false] {
        // Small segments, so that the compaction has several outputs.
        let options = LogOptions { segment_bytes_max: SEGMENT_BYTES_MIN, hint_files, ..compacting() };
        let dir = tempfile::tempdir().expect("tempdir");
        let mut e = LogEngine::open(dir.path(), options).expect("open");
        let mut h = Harness::default();
        write_overwrites(&mut e, &mut h);
        e.maintain(u64::MAX).expect("compact at once");
        assert_eq!(e.stats().compactions, 1);
        // Segments sealed after the compaction, the first with a hint, the rest without.
        for i in 0..40u64 {
            h.put(&mut e, &format!("key-{:02}", i % 40), Some(&format!("after {i} {}", "a".repeat(60))), None);
        }
        e.flush(0).expect("flush");
        let first_hint = e.pending_hints.first().map_or(0, |hint| hint.bytes.len() as u64);
        e.write_pending_hints(first_hint).expect("one hint");
        let active = e.segments[&e.active].path.clone();
        drop(e);

        let segments = files(dir.path(), SEGMENT_EXT);
        let ids: Vec<SegmentId> =
            segments.iter().map(|p| SegmentId::parse(&p.file_name().unwrap().to_string_lossy()).unwrap().0).collect();
        let hinted = |id: &SegmentId| dir.path().join(id.file_name(HINT_EXT)).exists();
        let outputs = ids.iter().filter(|id| id.gen > 0).count();
        let sealed_puts = ids.iter().filter(|id| id.gen == 0).count() - 1;
        assert!(outputs >= 2 && sealed_puts >= 2, "outputs {outputs}, sealed by puts {sealed_puts}: {ids:?}");
        assert_eq!(ids.iter().filter(|id| hinted(id)).count(), if hint_files { outputs + 1 } else { 0 }, "{ids:?}");
        assert!(segments.contains(&active), "the active segment is among those deleted");
        for segment in &segments {
            let copy = tempfile::tempdir().expect("tempdir");
            copy_dir(dir.path(), copy.path());
            let deleted = copy.path().join(segment.file_name().expect("name"));
            fs::remove_file(&deleted).expect("delete");
            let context = format!("hints {hint_files}, {} deleted", deleted.display());
            assert_refused(copy.path(), options, &deleted, "is listed in", &context);
        }
        let e = LogEngine::open(dir.path(), options).expect("the whole directory opens");
        assert_state(&e, &h.model, &format!("hints {hint_files}: whole"));
    }
}

/// Runs a compaction to its end in `e`, copying the directory at every step of its publish,
/// and returns the steps with their copies.
fn compact_recording_steps(e: &mut LogEngine) -> Vec<(&'static str, tempfile::TempDir)> {
    let images = record_steps(e);
    let compactions = e.stats().compactions;
    e.maintain(u64::MAX).expect("compact at once");
    assert_eq!(e.stats().compactions, compactions + 1, "one compaction, finished");
    e.at_step = None;
    let images = std::mem::take(&mut *images.lock().expect("images"));
    images
}

/// Opens each copy a crash at a step would leave, expecting `model` and a tidy directory,
/// then opens it again, expecting nothing more to change. `committed` says, from the step's
/// index, whether the compaction's outputs should be in use.
fn assert_each_crash_recovers(
    images: &[(&str, tempfile::TempDir)],
    model: &Model,
    options: LogOptions,
    committed: impl Fn(usize) -> bool,
    context: &str,
) {
    for (i, (step, image)) in images.iter().enumerate() {
        let context = format!("{context}, crash after step {i} ({step})");
        let e = LogEngine::open(image.path(), options).unwrap_or_else(|err| panic!("{context}: {err}"));
        assert_state(&e, model, &context);
        assert_tidy(&e, &context);
        let inputs_left = e.segments.keys().filter(|id| id.gen == 0 && *id != &e.active).count();
        assert_eq!(inputs_left == 0, committed(i), "{context}: the compaction's inputs gone");
        drop(e);
        let tidied = snapshot(image.path());
        let e = LogEngine::open(image.path(), options).unwrap_or_else(|err| panic!("{context}, again: {err}"));
        assert_state(&e, model, &format!("{context}, reopened"));
        assert!(snapshot(image.path()) == tidied, "{context}: a second open changed the directory");
    }
}

#[test]
fn a_crash_at_every_step_of_publishing_a_compaction_recovers() {
    for hint_files in [true, false] {
        // Small outputs, so that there are several to rename.
        let options = LogOptions { segment_bytes_max: SEGMENT_BYTES_MIN, hint_files, ..compacting() };
        let dir = tempfile::tempdir().expect("tempdir");
        let mut e = LogEngine::open(dir.path(), options).expect("open");
        let mut h = Harness::default();
        write_overwrites(&mut e, &mut h);
        let images = compact_recording_steps(&mut e);
        drop(e);
        let steps: Vec<&str> = images.iter().map(|(step, _)| *step).collect();
        let count = |name: &str| steps.iter().filter(|&&step| step == name).count();
        assert_eq!(steps[..3], ["outputs sealed", "manifest written to MANIFEST.tmp", "manifest replaced"]);
        assert!(count("output renamed") >= 2 && count("input segment removed") >= 8, "{steps:?}");
        assert_eq!(count("input hint removed"), count("input segment removed"), "{steps:?}");
        // Committed once the manifest is replaced, the third step.
        assert_each_crash_recovers(&images, &h.model, options, |i| i >= 2, &format!("hints {hint_files}"));
    }
}

#[test]
fn a_crash_at_every_step_of_publishing_a_compaction_that_copied_nothing_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut e = LogEngine::open(dir.path(), compacting()).expect("open");
    let mut h = Harness::default();
    for k in 0..30 {
        h.put(&mut e, &format!("key-{k:02}"), Some(&"o".repeat(100)), None);
    }
    e.rotate().expect("rotate");
    // Every sealed record replaced by one in the active segment: nothing left to copy.
    for k in 0..30 {
        h.put(&mut e, &format!("key-{k:02}"), Some("new"), None);
    }
    e.flush(0).expect("flush");
    assert_eq!(e.segments[&e.active].live_bytes, e.segments.values().map(|s| s.live_bytes).sum::<u64>());
    let images = compact_recording_steps(&mut e);
    assert_eq!(e.stats().segments, 1, "only the active segment is left");
    drop(e);
    let steps: Vec<&str> = images.iter().map(|(step, _)| *step).collect();
    assert_eq!(
        steps[..4],
        ["outputs sealed", "manifest written to MANIFEST.tmp", "manifest replaced", "empty output removed"]
    );
    assert_each_crash_recovers(&images, &h.model, compacting(), |i| i >= 2, "an empty output");
}

#[test]
fn a_crash_at_every_step_of_a_seal_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut e = LogEngine::open(dir.path(), small(true)).expect("open");
    let mut h = Harness::default();
    let images = record_steps(&mut e);
    // (the records before the put that sealed, the step, the copy)
    let mut crashes = Vec::new();
    for i in 0..30u64 {
        let before = h.model.clone();
        h.put(&mut e, &format!("key-{i:02}"), Some(&"s".repeat(200)), None);
        for (step, image) in images.lock().expect("images").drain(..) {
            crashes.push((before.clone(), step, image));
        }
    }
    e.at_step = None;
    drop(e);
    let steps: Vec<&str> = crashes.iter().map(|(_, step, _)| *step).collect();
    assert!(steps.len() >= 3 * 4, "several seals: {steps:?}");
    for (i, (model, step, image)) in crashes.iter().enumerate() {
        let context = format!("crash after step {i} ({step})");
        let mut e = LogEngine::open(image.path(), small(true)).unwrap_or_else(|err| panic!("{context}: {err}"));
        assert_state(&e, model, &context);
        assert_tidy(&e, &context);
        // The next seal takes the same name again.
        let mut after = Harness { model: model.clone(), millis: 1_000 };
        for k in 0..10 {
            after.put(&mut e, &format!("after-{k}"), Some(&"t".repeat(200)), None);
        }
        e.flush(0).expect("flush");
        drop(e);
        let e = LogEngine::open(image.path(), small(true)).unwrap_or_else(|err| panic!("{context}, again: {err}"));
        assert_state(&e, &after.model, &format!("{context}, then puts that seal"));
        assert_tidy(&e, &context);
    }
}

#[test]
fn a_segment_the_manifest_does_not_list_is_refused_by_name_unless_an_empty_next_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut e = LogEngine::open(dir.path(), small(true)).expect("open");
    let mut h = Harness::default();
    write_rounds(&mut e, &mut h);
    e.flush(0).expect("flush");
    let active = e.active;
    drop(e);
    let first = fs::read(&files(dir.path(), SEGMENT_EXT)[0]).expect("read");
    let next = SegmentId { base: active.base + 1, gen: 0 };
    // (what, the stray segment, its bytes, refused)
    let table: [(&str, SegmentId, &[u8], bool); 5] = [
        ("the next segment, not empty", next, &first, true),
        ("a sealed segment between", SegmentId { base: 1, gen: 7 }, &first, true),
        ("an empty segment past the next", SegmentId { base: active.base + 2, gen: 0 }, &[], true),
        ("an empty compaction output", SegmentId { base: active.base - 1, gen: 1 }, &[], true),
        ("the next segment, empty: an unfinished seal", next, &[], false),
    ];
    for (what, id, bytes, refused) in table {
        let copy = tempfile::tempdir().expect("tempdir");
        copy_dir(dir.path(), copy.path());
        let stray = copy.path().join(id.file_name(SEGMENT_EXT));
        fs::write(&stray, bytes).expect("write");
        if refused {
            assert_refused(copy.path(), small(true), &stray, "is not listed in", what);
            continue;
        }
        let e = LogEngine::open(copy.path(), small(true)).unwrap_or_else(|err| panic!("{what}: {err}"));
        assert_state(&e, &h.model, what);
        assert_tidy(&e, what);
    }
}

#[test]
fn a_damaged_manifest_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut e = LogEngine::open(dir.path(), small(true)).expect("open");
    write_rounds(&mut e, &mut Harness::default());
    e.flush(0).expect("flush");
    drop(e);
    let good = fs::read(dir.path().join(MANIFEST_FILE)).expect("read");
    let flipped = |at: usize| {
        let mut bytes = good.clone();
        bytes[at] ^= 0x04;
        (format!("byte {at} flipped"), bytes)
    };
    let cut = [("emptied".to_string(), Vec::new()), ("cut".to_string(), good[..good.len() - 1].to_vec())];
    let damages: Vec<(String, Vec<u8>)> = (0..good.len()).map(flipped).chain(cut).collect();
    for (what, damage) in damages {
        let copy = tempfile::tempdir().expect("tempdir");
        copy_dir(dir.path(), copy.path());
        let manifest = copy.path().join(MANIFEST_FILE);
        fs::write(&manifest, damage).expect("write");
        match LogEngine::open(copy.path(), small(true)) {
            Err(Error::Corrupt { path, .. }) => assert_eq!(path, manifest, "{what}"),
            other => panic!("{what}: expected Corrupt naming the manifest, got {other:?}"),
        }
    }
}

#[test]
fn a_leftover_manifest_tmp_is_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut e = LogEngine::open(dir.path(), small(true)).expect("open");
    let mut h = Harness::default();
    write_rounds(&mut e, &mut h);
    e.flush(0).expect("flush");
    drop(e);
    fs::write(dir.path().join(MANIFEST_TMP_FILE), b"half a manifest").expect("write");
    let e = LogEngine::open(dir.path(), small(true)).expect("open");
    assert_state(&e, &h.model, "reopened");
    assert_tidy(&e, "the temporary manifest removed");
}

#[test]
fn a_directory_without_a_manifest_is_adopted_and_guarded_from_then_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut e = LogEngine::open(dir.path(), small(true)).expect("open");
    let mut h = Harness::default();
    write_rounds(&mut e, &mut h);
    e.flush(0).expect("flush");
    e.write_pending_hints(u64::MAX).expect("hints");
    let active = e.active;
    drop(e);
    // As the format before the manifest left a directory: no MANIFEST, an unfinished
    // compaction's output and the hint of a segment it removed.
    fs::remove_file(dir.path().join(MANIFEST_FILE)).expect("remove");
    let first = files(dir.path(), SEGMENT_EXT).remove(0);
    let output = SegmentId { base: active.base - 1, gen: 1 };
    fs::copy(&first, dir.path().join(output.file_name(PART_EXT))).expect("copy");
    fs::write(dir.path().join(SegmentId { base: 0, gen: 9 }.file_name(HINT_EXT)), b"old").expect("write");
    let e = LogEngine::open(dir.path(), small(true)).expect("adopted");
    assert_state(&e, &h.model, "adopted");
    assert_tidy(&e, "adopted");
    drop(e);
    fs::remove_file(&first).expect("delete");
    assert_refused(dir.path(), small(true), &first, "is listed in", "a segment deleted after the adoption");
}

/// Everything the engine holds, as `state`, but a key whose record is damaged is left out
/// and named instead.
fn state_but_damaged(e: &LogEngine) -> (Model, Vec<(Bytes, PathBuf, u64)>) {
    let (mut state, mut damaged) = (Model::new(), Vec::new());
    for (key, _) in e.scan(Bound::Unbounded, usize::MAX) {
        match e.get(&key) {
            Ok(record) => drop(state.insert(key, record.expect("a scanned key has a record"))),
            Err(Error::Corrupt { path, offset, .. }) => damaged.push((key, path, offset)),
            Err(err) => panic!("{key:?}: {err}"),
        }
    }
    (state, damaged)
}

/// `model` without `key`.
fn without(model: &Model, key: &Bytes) -> Model {
    model.iter().filter(|(k, _)| *k != key).map(|(k, r)| (k.clone(), r.clone())).collect()
}

/// Runs `maintain` in small steps until `done` (at most 10,000 steps), collecting what
/// `take_damaged` reports after each, as the replica polls it, as (key, file, offset).
fn maintain_until(e: &mut LogEngine, done: impl Fn(&LogEngine) -> bool, context: &str) -> Vec<(Bytes, PathBuf, u64)> {
    let mut reported = Vec::new();
    for _ in 0..10_000 {
        if done(e) {
            return reported;
        }
        e.maintain(300).unwrap_or_else(|err| panic!("{context}: maintain fails only on I/O: {err}"));
        for (key, err) in e.take_damaged() {
            match err {
                Error::Corrupt { path, offset, .. } => reported.push((key, path, offset)),
                other => panic!("{context}: {key:?} reported as {other:?}"),
            }
        }
    }
    panic!("{context}: maintain never got done");
}

/// Writes `write_overwrites` (a compaction due), flushes and writes every hint, and reopens
/// from the hints, so that no value is cached and every `get` reads the disk.
fn overwritten_and_reopened(dir: &Path, h: &mut Harness) -> LogEngine {
    let mut e = LogEngine::open(dir, compacting()).expect("open");
    write_overwrites(&mut e, h);
    e.write_pending_hints(u64::MAX).expect("hints");
    drop(e);
    LogEngine::open(dir, compacting()).expect("reopen")
}

#[test]
fn a_damaged_live_record_stays_reported_once_and_its_segment_goes_once_repaired() {
    for get_first in [true, false] {
        let context = format!("found by {}", if get_first { "get" } else { "compaction" });
        let dir = tempfile::tempdir().expect("tempdir");
        let mut h = Harness::default();
        let mut e = overwritten_and_reopened(dir.path(), &mut h);
        // The first key whose newest record, a value, is in a sealed segment.
        let (victim, at, damaged_path) = sealed_victim(&e, |slot| !slot.meta.tombstone);
        let offset = at.at.position.offset;
        flip(&damaged_path, offset + record_bytes(victim.len(), at.meta.value_len) - 1, 0x01);
        let want = vec![(victim.clone(), damaged_path.clone(), offset)];
        if get_first {
            assert_eq!(state_but_damaged(&e), (without(&h.model, &victim), want.clone()), "{context}: before");
        }

        // A compaction runs past the damage: no error, nothing else lost, reported once.
        let reported = maintain_until(
            &mut e,
            |e| e.stats().compactions == 1 && e.compaction.is_none() && e.rewrite.is_none(),
            &context,
        );
        assert_eq!(reported, want, "{context}: reported once, by key, file and offset");
        assert_eq!(state_but_damaged(&e), (without(&h.model, &victim), want.clone()), "{context}: compacted");
        assert_accounting(&e, &context);
        assert!(damaged_path.exists(), "{context}: the damaged segment is kept while the keydir points into it");
        assert_eq!(e.stats().damaged_segments, 1, "{context}");
        for _ in 0..50 {
            e.maintain(300).expect("maintain");
            assert_eq!(e.take_damaged().len(), 0, "{context}: reported only once");
        }
        assert!(e.compaction.is_none() && e.rewrite.is_none(), "{context}: nothing to do until the repair");

        // The repair: a healthy record over the damaged one, then the segment is rewritten.
        h.put(&mut e, std::str::from_utf8(&victim).expect("a UTF-8 key"), Some("repaired"), None);
        e.flush(0).expect("flush");
        let images = record_steps(&mut e);
        let reported = maintain_until(&mut e, |_| !damaged_path.exists(), &format!("{context}, repaired"));
        e.at_step = None;
        assert_eq!(reported, [], "{context}: nothing more reported");
        assert_state(&e, &h.model, &format!("{context}, rewritten"));
        assert_tidy(&e, &format!("{context}, rewritten"));
        assert_eq!(e.stats().damaged_segments, 0, "{context}");
        drop(e);
        let mut e = LogEngine::open(dir.path(), compacting()).expect("reopen");
        assert_state(&e, &h.model, &format!("{context}, reopened"));
        assert_eq!((e.take_damaged().len(), e.stats().damaged_segments), (0, 0), "{context}: reopened clean");

        // A crash at any step of removing the rewritten segment loses nothing.
        let images = std::mem::take(&mut *images.lock().expect("images"));
        assert!(images.iter().any(|(step, _)| *step == "input segment removed"), "{context}");
        for (i, (step, image)) in images.iter().enumerate() {
            let context = format!("{context}, crash after step {i} ({step})");
            let e = LogEngine::open(image.path(), compacting()).unwrap_or_else(|err| panic!("{context}: {err}"));
            assert_state(&e, &h.model, &context);
            assert_tidy(&e, &context);
        }
    }
}

#[test]
fn damage_in_a_dead_record_is_reclaimed_by_compaction() {
    // What is damaged: a header field (its checksum fails), or the record's last byte.
    for what in ["header", "body"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut e = LogEngine::open(dir.path(), compacting()).expect("open");
        let mut h = Harness::default();
        h.put(&mut e, "doomed", Some(&"d".repeat(100)), None);
        let slot = e.keydir.get(&b"doomed"[..]).expect("indexed").clone();
        // Live records after the damaged one, in its segment, for good.
        for k in 0..3 {
            h.put(&mut e, &format!("keep-{k}"), Some(&"k".repeat(100)), None);
            let kept = e.keydir.get(format!("keep-{k}").as_bytes()).expect("indexed");
            assert_eq!(kept.at.position.segment, slot.at.position.segment, "{what}: in the same segment");
        }
        write_overwrites(&mut e, &mut h);
        h.put(&mut e, "doomed", None, None);
        e.flush(0).expect("flush");
        e.write_pending_hints(u64::MAX).expect("hints");
        let path = e.segments[&slot.at.position.segment].path.clone();
        drop(e);
        let byte = if what == "header" { 20 } else { record_bytes(6, slot.meta.value_len) - 1 };
        flip(&path, slot.at.position.offset + byte, 0x01);

        let mut e = LogEngine::open(dir.path(), compacting()).expect("reopen");
        let reported = maintain_until(
            &mut e,
            |e| e.stats().compactions == 1 && e.compaction.is_none() && e.rewrite.is_none(),
            what,
        );
        assert_eq!(reported, [], "{what}: a dead record is not needed");
        assert!(!path.exists(), "{what}: the damaged segment is reclaimed");
        assert_state(&e, &h.model, what);
        assert_tidy(&e, what);
        drop(e);
        let mut e = LogEngine::open(dir.path(), compacting()).expect("reopen");
        assert_state(&e, &h.model, &format!("{what}, reopened"));
        assert_eq!((e.take_damaged().len(), e.stats().damaged_segments), (0, 0), "{what}: reopened clean");
    }
}

#[test]
fn open_refuses_a_body_damaged_record_in_an_unhinted_sealed_segment_naming_it() {
    // Not indexed: the key is covered by the body's checksum only, so a record whose body
    // fails it may name another key (`a_damaged_key_at_open_never_serves_an_older_version`).
    let dir = tempfile::tempdir().expect("tempdir");
    let mut e = LogEngine::open(dir.path(), small(false)).expect("open");
    let mut h = Harness::default();
    for k in 0..40 {
        h.put(&mut e, &format!("key-{k:02}"), Some(&format!("value {k} {}", "y".repeat(30))), None);
    }
    e.flush(0).expect("flush");
    let (victim, slot, path) = sealed_victim(&e, |slot| slot.at.position.offset > 0);
    let offset = slot.at.position.offset;
    drop(e);
    assert!(files(dir.path(), HINT_EXT).is_empty(), "no hints: sealed segments are scanned");
    flip(&path, offset + record_bytes(victim.len(), slot.meta.value_len) - 1, 0x01);
    match LogEngine::open(dir.path(), small(false)) {
        Err(Error::Corrupt { path: p, offset: o, reason }) => {
            assert_eq!((p, o), (path, offset), "{reason}");
        }
        other => panic!("expected a refusal naming the record, got {other:?}"),
    }
}

#[test]
fn a_damaged_key_at_open_never_serves_an_older_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut e = LogEngine::open(dir.path(), small(false)).expect("open");
    let mut h = Harness::default();
    h.put(&mut e, "victim", Some("old value"), None);
    for k in 0..30 {
        h.put(&mut e, &format!("key-{k:02}"), Some(&format!("filler {k} {}", "y".repeat(30))), None);
    }
    h.put(&mut e, "victim", Some("NEW value"), None);
    for k in 30..60 {
        h.put(&mut e, &format!("key-{k:02}"), Some(&format!("filler {k} {}", "y".repeat(30))), None);
    }
    e.flush(0).expect("flush");
    let slot = e.keydir.get(&b"victim"[..]).expect("indexed").clone();
    assert_ne!(slot.at.position.segment, e.active, "the new record is sealed");
    let path = e.segments[&slot.at.position.segment].path.clone();
    drop(e);
    flip(&path, slot.at.position.offset + super::format::HEADER_BYTES as u64, 0x01); // 'v' -> 'w'
    match LogEngine::open(dir.path(), small(false)) {
        Err(Error::Corrupt { path: p, .. }) => assert_eq!(p, path),
        Ok(e) => panic!("opened, and victim reads {:?}", e.get(b"victim")),
        Err(other) => panic!("{other}"),
    }
}

#[test]
fn a_damaged_key_in_a_compaction_input_is_kept_and_reported_under_its_own_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::default();
    let mut e = overwritten_and_reopened(dir.path(), &mut h);
    let (victim, slot, path) = sealed_victim(&e, |slot| !slot.meta.tombstone);
    // The key's first byte: 'k' ^ 1 = 'j', a key nobody has: compaction takes it for dead.
    flip(&path, slot.at.position.offset + super::format::HEADER_BYTES as u64, 0x01);
    let mut reported = Vec::new();
    for _ in 0..10_000 {
        e.maintain(300).expect("maintain fails only on I/O");
        reported.extend(e.take_damaged().into_iter().map(|(key, _)| key));
        if e.stats().compactions >= 1 && e.compaction.is_none() && !reported.is_empty() {
            break;
        }
    }
    assert_eq!(reported, std::slice::from_ref(&victim), "reported once, under the key the index knows");
    assert!(matches!(e.get(&victim), Err(Error::Corrupt { .. })));
    assert_eq!(state_but_damaged(&e).0, without(&h.model, &victim), "every other key kept");
}

#[test]
fn damage_repaired_in_the_active_segment_leaves_an_engine_that_reopens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut e = LogEngine::open(dir.path(), cache(true, 0)).expect("open");
    let mut h = Harness::default();
    for k in 0..5 {
        h.put(&mut e, &format!("key-{k:02}"), Some("v"), None);
    }
    e.flush(0).expect("flush");
    let slot = e.keydir.get(&b"key-00"[..]).expect("indexed").clone();
    assert_eq!(slot.at.position.segment, e.active);
    let path = e.segments[&e.active].path.clone();
    flip(&path, slot.at.position.offset + record_bytes(6, slot.meta.value_len) - 1, 0x01);
    assert!(matches!(e.get(b"key-00"), Err(Error::Corrupt { .. })));
    h.put(&mut e, "key-00", Some("repaired"), None);
    e.flush(0).expect("flush");
    for _ in 0..100 {
        e.maintain(1 << 20).expect("maintain");
    }
    assert_state(&e, &h.model, "repaired, running");
    drop(e);
    let e = LogEngine::open(dir.path(), cache(true, 0)).expect("a repaired engine reopens");
    assert_state(&e, &h.model, "reopened");
}

/// Rewrites the manifest in `dir` as version 1 (ids only) wrote it.
fn write_version_1_manifest(dir: &Path) {
    let manifest = read_manifest(dir).expect("read").expect("a manifest");
    fs::write(dir.join(MANIFEST_FILE), manifest.encode_version_1()).expect("write");
}

/// The offsets at which the records of the segment file at `path` begin, and its end.
fn record_boundaries(path: &Path) -> Vec<u64> {
    let mut reader = SegmentReader::open(path).expect("open");
    let mut boundaries = vec![0];
    while let Next::Record(record) = reader.next().expect("next") {
        reader.skip_value(&record).expect("skip");
        boundaries.push(reader.offset());
    }
    boundaries
}

/// Sets the file at `path` to `bytes`.
fn rewrite(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).expect("write");
}

#[test]
fn a_sealed_segment_of_another_length_than_the_manifest_recorded_is_refused_naming_both() {
    for hint_files in [true, false] {
        // Compaction outputs and segments sealed by puts, the first hinted, the rest not.
        let options = LogOptions { segment_bytes_max: SEGMENT_BYTES_MIN, hint_files, ..compacting() };
        let dir = tempfile::tempdir().expect("tempdir");
        let mut e = LogEngine::open(dir.path(), options).expect("open");
        let mut h = Harness::default();
        write_overwrites(&mut e, &mut h);
        e.maintain(u64::MAX).expect("compact at once");
        for i in 0..40u64 {
            h.put(&mut e, &format!("key-{:02}", i % 40), Some(&format!("after {i} {}", "a".repeat(60))), None);
        }
        e.flush(0).expect("flush");
        let first_hint = e.pending_hints.first().map_or(0, |hint| hint.bytes.len() as u64);
        e.write_pending_hints(first_hint).expect("one hint");
        let active = e.segments[&e.active].path.clone();
        drop(e);

        let sealed: Vec<PathBuf> = files(dir.path(), SEGMENT_EXT).into_iter().filter(|p| *p != active).collect();
        assert!(sealed.iter().any(|p| p.to_string_lossy().ends_with("-00001.seg")), "an output: {sealed:?}");
        for segment in &sealed {
            let whole = fs::read(segment).expect("read");
            let boundaries = record_boundaries(segment);
            assert!(boundaries.len() >= 3, "{}: {boundaries:?}", segment.display());
            let middle = boundaries[boundaries.len() / 2] as usize;
            let first_record = &whole[..boundaries[1] as usize];
            // (what, the file's new bytes): each ends at a record boundary, so a scan of it
            // ends cleanly, and a hint's length check fails only with a warning.
            let damages: [(&str, Vec<u8>); 3] = [
                ("emptied", Vec::new()),
                ("cut at a record boundary", whole[..middle].to_vec()),
                ("a whole record appended", [&whole[..], first_record].concat()),
            ];
            for (what, bytes) in damages {
                let copy = tempfile::tempdir().expect("tempdir");
                copy_dir(dir.path(), copy.path());
                let damaged = copy.path().join(segment.file_name().expect("name"));
                rewrite(&damaged, &bytes);
                let context = format!("hints {hint_files}, {} {what}", damaged.display());
                let manifest = copy.path().join(MANIFEST_FILE);
                let (bytes, whole, manifest) = (bytes.len(), whole.len(), manifest.display());
                let reason = format!("is {bytes} bytes but {manifest} recorded {whole} when it was sealed");
                assert_refused(copy.path(), options, &damaged, &reason, &context);
            }
        }
        let e = LogEngine::open(dir.path(), options).expect("the whole directory opens");
        assert_state(&e, &h.model, &format!("hints {hint_files}: whole"));
        assert_tidy(&e, &format!("hints {hint_files}: whole"));
    }
}

#[test]
fn a_version_1_manifest_is_adopted_and_upgraded_at_the_next_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut e = LogEngine::open(dir.path(), small(true)).expect("open");
    let mut h = Harness::default();
    write_rounds(&mut e, &mut h);
    e.flush(0).expect("flush");
    e.write_pending_hints(u64::MAX).expect("hints");
    drop(e);
    write_version_1_manifest(dir.path());
    let old = fs::read(dir.path().join(MANIFEST_FILE)).expect("read");
    assert!(read_manifest(dir.path()).expect("read").expect("a manifest").segments.values().all(Option::is_none));

    let mut e = LogEngine::open(dir.path(), small(true)).expect("a version-1 manifest opens");
    assert_state(&e, &h.model, "opened with version 1");
    assert_eq!(fs::read(dir.path().join(MANIFEST_FILE)).expect("read"), old, "open does not rewrite it");
    // The lengths found, in memory until the next manifest write.
    for (id, segment) in &e.segments {
        let want = (*id != e.active).then(|| segment.len());
        assert_eq!(e.manifest.segments[id], want, "{id}'s length taken as found");
    }
    let sealed_before = e.segments.len();
    for k in 0..10 {
        h.put(&mut e, &format!("after-{k}"), Some(&"t".repeat(200)), None);
    }
    e.flush(0).expect("flush");
    assert!(e.segments.len() > sealed_before, "the puts sealed a segment");
    let upgraded = fs::read(dir.path().join(MANIFEST_FILE)).expect("read");
    assert_eq!(upgraded[8..12], 2u32.to_le_bytes(), "the next manifest written is version 2");
    assert_tidy(&e, "upgraded");
    let first = e.segments.values().next().expect("a segment").path.clone();
    drop(e);

    // From now on a sealed segment of the version-1 days is guarded too.
    let whole = fs::read(&first).expect("read");
    let copy = tempfile::tempdir().expect("tempdir");
    copy_dir(dir.path(), copy.path());
    let cut = copy.path().join(first.file_name().expect("name"));
    rewrite(&cut, &[]);
    let reason = format!("is 0 bytes but {} recorded {} when", copy.path().join(MANIFEST_FILE).display(), whole.len());
    assert_refused(copy.path(), small(true), &cut, &reason, "cut after the upgrade");
    let e = LogEngine::open(dir.path(), small(true)).expect("reopen");
    assert_state(&e, &h.model, "upgraded, reopened");
}

#[test]
fn a_seal_for_names_past_gen_max_records_its_length() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut e = LogEngine::open(dir.path(), compacting()).expect("open");
    let mut h = Harness::default();
    write_overwrites(&mut e, &mut h);
    // As if compactions had used up every generation of the newest sealed base.
    let active = e.active;
    e.removed_max = Some(SegmentId { base: active.base - 1, gen: GEN_MAX });
    e.maintain(u64::MAX).expect("compact at once");
    assert_eq!(e.stats().compactions, 1);
    assert!(e.active.base > active.base, "the active segment was sealed for new names");
    assert!(e.segments.contains_key(&SegmentId { base: active.base, gen: 1 }), "outputs named after it");
    assert_tidy(&e, "after the compaction");
    drop(e);
    let e = LogEngine::open(dir.path(), compacting()).expect("reopen");
    assert_state(&e, &h.model, "reopened");
}

/// An engine used as a replicating node uses it: 10 records fsynced by `sync_written`, then
/// 10 written out unsynced; returns its directory, the active segment's path, its record
/// boundaries, and the index of the first unsynced record's boundary.
fn synced_then_unsynced() -> (tempfile::TempDir, PathBuf, Vec<u64>, usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut e = LogEngine::open(dir.path(), LogOptions::default()).unwrap();
    let mut h = Harness::default();
    for i in 0..10 {
        h.put(&mut e, &format!("synced-{i}"), Some("v"), None);
        e.write_out_unsynced(1).unwrap();
    }
    e.sync_written(2).unwrap();
    for i in 0..10 {
        h.put(&mut e, &format!("unsynced-{i}"), Some("v"), None);
        e.write_out_unsynced(3).unwrap();
    }
    let path = e.dir.join(e.active.file_name(SEGMENT_EXT));
    drop(e);
    let boundaries = record_boundaries(&path);
    assert_eq!(boundaries.len(), 21, "20 records and the end");
    (dir, path, boundaries, 10)
}

/// Zeroes the record of the segment at `path` that starts at `at` and ends at `end`.
fn zero_record(path: &Path, at: u64, end: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at as usize..end as usize].fill(0);
    rewrite(path, &bytes);
}

#[test]
fn a_hole_past_the_fsynced_length_of_a_replicating_nodes_engine_is_cut_as_an_unsynced_tail() {
    // Pages written after the last fsync reached the disk out of order: a hole, then good
    // records. The node's replication log holds them all; the engine opens without them.
    let (dir, path, b, first_unsynced) = synced_then_unsynced();
    zero_record(&path, b[first_unsynced + 3], b[first_unsynced + 4]);
    let e = LogEngine::open(dir.path(), LogOptions::default()).expect("opens, cutting the tail");
    assert!(e.get(b"synced-9").unwrap().is_some());
    assert!(e.get(b"unsynced-2").unwrap().is_some(), "the records before the hole stay");
    assert!(e.get(b"unsynced-3").unwrap().is_none() && e.get(b"unsynced-9").unwrap().is_none());
}

#[test]
fn a_hole_before_the_fsynced_length_is_corruption_and_so_is_a_segment_cut_short_of_it() {
    let (dir, path, b, first_unsynced) = synced_then_unsynced();
    zero_record(&path, b[3], b[4]);
    match LogEngine::open(dir.path(), LogOptions::default()) {
        Err(Error::Corrupt { offset, .. }) => assert_eq!(offset, b[3]),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let (dir, path, b, _) = synced_then_unsynced();
    let bytes = fs::read(&path).unwrap();
    rewrite(&path, &bytes[..b[first_unsynced] as usize - 1]);
    match LogEngine::open(dir.path(), LogOptions::default()) {
        Err(Error::Corrupt { reason, .. }) => assert!(reason.contains("shorter than"), "{reason}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn an_engine_that_fsyncs_its_own_writes_again_drops_the_synced_record_and_the_old_rules_stand() {
    // A data directory a standalone node (whose engine is its write-ahead log) takes over.
    let (dir, _, _, _) = synced_then_unsynced();
    assert!(dir.path().join("SYNCED").exists());
    let mut e = LogEngine::open(dir.path(), LogOptions::default()).unwrap();
    let mut h = Harness::default();
    h.put(&mut e, "standalone", Some("v"), None);
    // Its first write-out fsyncs what the record left to the other log, then drops it.
    if let Some(sync) = e.write_out(4).unwrap().sync {
        sync.sync().unwrap();
    }
    assert!(!dir.path().join("SYNCED").exists(), "the record of another log's cover stays");
    let path = e.dir.join(e.active.file_name(SEGMENT_EXT));
    drop(e);
    let b = record_boundaries(&path);
    zero_record(&path, b[15], b[16]);
    assert!(matches!(LogEngine::open(dir.path(), LogOptions::default()), Err(Error::Corrupt { .. })));
}

#[test]
fn under_fsync_never_no_synced_record_is_kept_and_a_leftover_one_is_dropped() {
    // Nothing is fsynced when asked under `never`: no length can be vouched for.
    let (dir, _, _, _) = synced_then_unsynced();
    let never = LogOptions { fsync: FsyncPolicy::Never, ..LogOptions::default() };
    let mut e = LogEngine::open(dir.path(), never).unwrap();
    assert!(!dir.path().join("SYNCED").exists(), "a leftover record was kept");
    let mut h = Harness::default();
    h.put(&mut e, "k", Some("v"), None);
    e.write_out_unsynced(1).unwrap();
    e.sync_written(2).unwrap();
    assert!(!dir.path().join("SYNCED").exists(), "a record was written under never");
}

#[test]
fn finishing_a_compaction_records_the_active_segments_fsynced_length() {
    // Found in review: the compaction fsynced the active segment (records it moved there
    // included) without recording it, so damage there would have been cut as unsynced.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut e = LogEngine::open(dir.path(), LogOptions { fsync: FsyncPolicy::Always, ..compacting() }).expect("open");
    let mut h = Harness::default();
    write_overwrites(&mut e, &mut h);
    e.write_out_unsynced(0).unwrap();
    let mut i = 0;
    while e.stats().compactions == 0 {
        i += 1;
        assert!(i < 1000, "compaction never finished");
        h.put(&mut e, &format!("key-{:02}", i % 40), Some(&format!("late {i}")), None);
        e.write_out_unsynced(0).unwrap();
        e.maintain(300).expect("maintain");
    }
    let recorded = super::synced::read(dir.path()).unwrap().expect("a SYNCED record");
    assert_eq!((recorded.id, recorded.len), (e.active, e.segments[&e.active].len()));
}

/// Every segment file of `e`, by name, with its bytes.
fn segment_bytes(e: &mut LogEngine) -> BTreeMap<String, Vec<u8>> {
    e.flush(0).expect("flush");
    let name = |p: &PathBuf| p.file_name().expect("name").to_string_lossy().into_owned();
    files(e.dir(), SEGMENT_EXT).iter().map(|p| (name(p), fs::read(p).expect("read"))).collect()
}

/// Ships what `leader` captured to `follower`, as a physical leader's records would: every
/// extent must land at its place.
fn ship(leader: &mut LogEngine, follower: &mut LogEngine) {
    for extent in leader.take_extents() {
        let records = super::decode_extent(&extent).expect("the leader's own records decode");
        assert_eq!(follower.append_extent(&extent, records).expect("append"), None, "{extent:?}");
    }
}

#[test]
fn a_follower_writing_the_leaders_extents_and_compactions_holds_the_same_segment_files() {
    let mut leader = LogEngine::temporary(compacting());
    let mut follower = LogEngine::temporary(compacting());
    leader.set_physical(super::PhysicalRole::Lead).expect("lead");
    follower.set_physical(super::PhysicalRole::Follow).expect("follow");
    let mut h = Harness::default();
    let mut compactions = 0;
    for round in 0..40 {
        // Keys written once, which compaction outputs keep.
        if round == 0 {
            (0..20).for_each(|k| h.put(&mut leader, &format!("stable{k}"), Some(&"s".repeat(80)), None));
        }
        for k in 0..8 {
            let value = format!("{round}-{k}-{}", "v".repeat(60));
            h.put(&mut leader, &format!("k{k}"), (k != 3 || round % 2 == 0).then_some(&value), None);
        }
        ship(&mut leader, &mut follower);
        // maintain under physical replication compacts nothing on its own, on either side.
        leader.maintain(u64::MAX).expect("maintain");
        follower.maintain(u64::MAX).expect("maintain");
        if let Some(inputs) = leader.compaction_inputs() {
            let active = leader.active_base();
            assert_eq!(leader.compact_whole(&inputs, active).expect("compact"), super::Compacted::Same);
            assert_eq!(follower.compact_whole(&inputs, active).expect("compact"), super::Compacted::Same);
            // Run again (a replay at recovery), it finds its inputs gone and does nothing.
            assert_eq!(follower.compact_whole(&inputs, active).expect("compact again"), super::Compacted::Gone);
            compactions += 1;
        }
    }
    assert!(compactions >= 2, "the workload compacts: {compactions}");
    let files = segment_bytes(&mut leader);
    assert!(files.keys().any(|name| !name.ends_with("-00000.seg")), "compaction outputs: {:?}", files.keys());
    assert_eq!(segment_bytes(&mut follower), files, "the follower's files are the leader's, byte for byte");
    assert_eq!(state(&follower), h.model);
    assert_eq!(state(&leader), h.model);
    // Reopened, the follower finds its files whole and its keys as they were.
    let dir = follower.dir().to_path_buf();
    let temp = follower.temp_dir.take();
    drop(follower);
    let reopened = LogEngine::open(&dir, compacting()).expect("reopen");
    assert_eq!(state(&reopened), h.model);
    drop(temp);
}

#[test]
fn an_extent_not_at_the_followers_next_place_is_refused_and_writes_nothing() {
    let mut leader = LogEngine::temporary(small(true));
    let mut follower = LogEngine::temporary(small(true));
    leader.set_physical(super::PhysicalRole::Lead).expect("lead");
    follower.set_physical(super::PhysicalRole::Follow).expect("follow");
    let mut h = Harness::default();
    h.put(&mut leader, "a", Some("1"), None);
    h.put(&mut leader, "b", Some("2"), None);
    let extents = leader.take_extents();
    assert_eq!(extents.len(), 2, "one extent per record");
    // The second record first: its place is past the follower's end.
    let records = super::decode_extent(&extents[1]).expect("decode");
    let why = follower.append_extent(&extents[1], records).expect("append").expect("refused");
    assert!(why.contains(&format!("offset {}", extents[1].offset)), "{why}");
    assert!(state(&follower).is_empty(), "nothing written");
    // A follower that wrote a record of its own has left the leader's files.
    let mut own = Harness::default();
    own.put(&mut follower, "mine", Some("x"), None);
    let records = super::decode_extent(&extents[0]).expect("decode");
    assert!(follower.append_extent(&extents[0], records).expect("append").is_some());
    assert!(follower.take_extents().is_empty(), "a follower captures nothing");
    // Damaged bytes are refused with where, before anything is written.
    let mut bad = extents[0].clone();
    let mut bytes = bad.bytes.to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    bad.bytes = bytes.into();
    let err = super::decode_extent(&bad).unwrap_err().to_string();
    assert!(err.contains("body checksum mismatch") && err.contains(&format!("offset {}", bad.offset)), "{err}");
    let err = super::decode_extent(&crate::replication::Extent { bytes: bad.bytes.slice(..10), ..bad }).unwrap_err();
    assert!(err.to_string().contains("fewer than a record header"), "{err}");
}

#[test]
fn a_store_whose_files_left_the_leaders_keeps_the_leaders_data_in_files_of_its_own() {
    let mut leader = LogEngine::temporary(small(true));
    leader.set_physical(super::PhysicalRole::Lead).expect("lead");
    let mut h = Harness::default();
    h.put(&mut leader, "a", Some("1"), None);
    let first = leader.take_extents();
    h.put(&mut leader, "b", Some("2"), None);
    let second = leader.take_extents();
    let mut follower = LogEngine::temporary(small(true));
    follower.set_physical(super::PhysicalRole::Follow).expect("follow");
    let mut store = crate::kv::Store::new(follower, NodeId(7));
    let physical = |extents, compact| crate::replication::Physical { extents, compact, active: 0 };
    // The second record's place is past this replica's end: stored through put instead.
    store.apply_physical(&physical(second, Vec::new())).expect("apply");
    assert!(store.physical_left());
    assert_eq!(store.physical_diverged(), 1);
    // A compaction the leader logged names the leader's segments: not run here.
    store.apply_physical(&physical(Vec::new(), vec![(1, 0)])).expect("compaction record");
    assert_eq!(store.physical_diverged(), 1, "counted once: it had left already");
    // Later extents are refused too (this replica's end is not the leader's), and stored all
    // the same.
    store.apply_physical(&physical(first, Vec::new())).expect("apply");
    assert_eq!(store.physical_diverged(), 2);
    for (key, value) in [("a", "1"), ("b", "2")] {
        let record = store.engine().get(key.as_bytes()).expect("get").expect("stored");
        assert_eq!(record, h.model[key.as_bytes()], "{key}");
        assert_eq!(record.value.as_deref(), Some(value.as_bytes()));
    }
    // It is on disk: a restart knows its files are not the leader's (recovery replays by
    // version then).
    let dir = store.engine().dir().to_path_buf();
    assert!(dir.join(super::physical::LEFT_FILE).exists());
    let temp = store.engine_mut().temp_dir.take();
    drop(store);
    let reopened =
        crate::kv::Store::open(LogEngine::open(&dir, small(true)).expect("reopen"), NodeId(7)).expect("open");
    assert!(reopened.physical_left());
    drop(temp);
}

#[test]
fn a_compaction_an_engine_started_on_its_own_is_finished_before_it_follows_a_leader() {
    let mut e = LogEngine::temporary(compacting());
    let mut h = Harness::default();
    for round in 0..40 {
        h.put(&mut e, &format!("k{}", round % 3), Some(&"v".repeat(300)), None);
    }
    e.maintain(1).expect("maintain");
    assert!(e.compaction.is_some(), "a compaction under way");
    e.set_physical(super::PhysicalRole::Lead).expect("lead");
    assert!(e.compaction.is_none(), "finished: a leader's compactions come from its log only");
    assert!(files(e.dir(), PART_EXT).is_empty());
    assert_eq!(state(&e), h.model);
}

#[test]
fn a_compaction_of_segments_a_follower_lacks_counts_as_leaving_the_leaders_files() {
    let mut follower = LogEngine::temporary(small(true));
    follower.set_physical(super::PhysicalRole::Follow).expect("follow");
    let mut store = crate::kv::Store::new(follower, NodeId(7));
    let physical = crate::replication::Physical { extents: Vec::new(), compact: vec![(1, 0), (2, 0)], active: 0 };
    store.apply_physical(&physical).expect("apply");
    assert!(store.physical_left());
    assert_eq!(store.physical_diverged(), 1);
}

#[test]
fn replaying_an_extent_writes_only_what_the_engine_lost_of_it() {
    let mut leader = LogEngine::temporary(small(true));
    leader.set_physical(super::PhysicalRole::Lead).expect("lead");
    let mut h = Harness::default();
    h.put(&mut leader, "a", Some("1"), None);
    h.put(&mut leader, "b", Some("2"), None);
    h.put(&mut leader, "c", Some("3"), None);
    let pieces = leader.take_extents();
    // One extent of three records, as the leader's record ships them.
    let mut joined = Vec::new();
    pieces.iter().for_each(|p| joined.extend_from_slice(&p.bytes));
    let extent =
        crate::replication::Extent { segment: pieces[0].segment, offset: pieces[0].offset, bytes: joined.into() };
    // A replica that kept the first record only (a crash cut the rest).
    let mut replica = LogEngine::temporary(small(true));
    let first = super::decode_extent(&pieces[0]).expect("decode");
    assert_eq!(replica.append_extent(&pieces[0], first).expect("append"), None);
    let records = super::decode_extent(&extent).expect("decode");
    assert_eq!(replica.replay_extent(&extent, records.clone()).expect("replay"), None);
    assert_eq!(state(&replica), h.model);
    assert_eq!(segment_bytes(&mut replica), segment_bytes(&mut leader), "the same bytes, once each");
    // Replayed again, all of it is there: nothing is written.
    assert_eq!(replica.replay_extent(&extent, records.clone()).expect("replay"), None);
    assert_eq!(segment_bytes(&mut replica), segment_bytes(&mut leader));
    // An engine holding other bytes at a record's place cannot take it; nor one whose end falls
    // inside one of the extent's records.
    let mut odd = LogEngine::temporary(small(true));
    Harness::default().put(&mut odd, "zz", Some("x"), None);
    let why = odd.replay_extent(&extent, records.clone()).expect("replay").expect("refused");
    assert!(why.contains("holds other bytes than the leader's at 0"), "{why}");
    let mut short = LogEngine::temporary(small(true));
    let first = super::decode_extent(&pieces[0]).expect("decode");
    assert_eq!(short.append_extent(&pieces[0], first).expect("append"), None);
    let shorter = Record { value: Some(Bytes::new()), ..h.model[&b"b"[..]].clone() };
    short.put(Bytes::from_static(b"b"), shorter).expect("put");
    let why = short.replay_extent(&extent, records).expect("replay").expect("refused");
    assert!(why.contains("inside the leader's record at"), "{why}");
}

#[test]
fn a_compaction_of_the_followers_active_segment_seals_it_first() {
    let mut leader = LogEngine::temporary(compacting());
    let mut follower = LogEngine::temporary(compacting());
    leader.set_physical(super::PhysicalRole::Lead).expect("lead");
    follower.set_physical(super::PhysicalRole::Follow).expect("follow");
    let mut h = Harness::default();
    for round in 0..30 {
        h.put(&mut leader, "k", Some(&format!("{round}{}", "v".repeat(200))), None);
    }
    ship(&mut leader, &mut follower);
    // The leader seals its active segment with no write after it (as a damaged active
    // segment's seal does, or a compaction out of output names): its next compaction names a
    // segment the follower still has active, and its outputs are named after it.
    leader.rotate().expect("seal");
    let inputs = leader.compaction_inputs().expect("a compaction is due");
    assert_eq!(inputs.last(), Some(&(follower.active.base, 0)), "{inputs:?}");
    let active = leader.active_base();
    assert_eq!(leader.compact_whole(&inputs, active).expect("compact"), super::Compacted::Same);
    assert_eq!(follower.compact_whole(&inputs, active).expect("compact"), super::Compacted::Same);
    assert_eq!(segment_bytes(&mut follower), segment_bytes(&mut leader));
    assert_eq!(follower.active_base(), active);
    // A follower without the leader's inputs does nothing, and says so.
    let mut stranger = LogEngine::temporary(compacting());
    assert_eq!(stranger.compact_whole(&inputs, active).expect("compact"), super::Compacted::Gone);
}

#[test]
fn a_physical_records_changes_leave_out_a_write_and_its_undoing() {
    let mut leader = LogEngine::temporary(small(true));
    leader.set_physical(super::PhysicalRole::Lead).expect("lead");
    let record = |millis, value: Option<&str>| Record {
        version: Version { ts: Timestamp { millis, logical: 0 }, node: NodeId(1) },
        value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        expire_at_ms: None,
    };
    let key = |k: &str| Bytes::copy_from_slice(k.as_bytes());
    // A failed script: k and j written, then put back (j had no record: a version-0 tombstone);
    // x written and kept.
    leader.put(key("k"), record(5, Some("script"))).expect("put");
    leader.put(key("j"), record(6, Some("script"))).expect("put");
    leader.put(key("x"), record(7, Some("kept"))).expect("put");
    leader.put(key("j"), Record { version: Version::default(), value: None, expire_at_ms: None }).expect("put");
    leader.put(key("k"), record(1, Some("before"))).expect("put");
    let physical = crate::replication::Physical { extents: leader.take_extents(), compact: Vec::new(), active: 0 };
    let changes = physical.changes().expect("decode");
    let keys: Vec<&[u8]> = changes.iter().map(|c| &c.key[..]).collect();
    assert_eq!(keys, [b"x"], "only the write that stood: {changes:?}");
    // Writes of one key in version order are changes, all of them.
    leader.put(key("k"), record(8, Some("a"))).expect("put");
    leader.put(key("k"), record(9, Some("b"))).expect("put");
    let physical = crate::replication::Physical { extents: leader.take_extents(), compact: Vec::new(), active: 0 };
    assert_eq!(physical.changes().expect("decode").len(), 2);
}
