//! The contract every [`Engine`] must keep, run against each engine.
//!
//! Each check is a generic function over an engine; `contract_tests!` instantiates all of them
//! for one engine constructor.

use super::*;
use crate::error::Error;
use crate::version::{NodeId, Timestamp, Version};
use std::ops::Bound;

fn v(millis: u64) -> Version {
    Version { ts: Timestamp { millis, logical: 0 }, node: NodeId(1) }
}

fn put(e: &mut impl Engine, key: &str, value: Option<&str>, millis: u64, expire: Option<u64>) {
    let record =
        Record { version: v(millis), value: value.map(|s| Bytes::copy_from_slice(s.as_bytes())), expire_at_ms: expire };
    e.put(Bytes::copy_from_slice(key.as_bytes()), record).expect("put");
}

fn value_of(e: &impl Engine, key: &str) -> Option<Option<String>> {
    e.get(key.as_bytes()).expect("get").map(|r| r.value.map(|b| String::from_utf8(b.to_vec()).expect("utf8")))
}

pub fn put_then_get_sees_newest<E: Engine>(mut e: E) {
    assert_eq!(value_of(&e, "a"), None);
    put(&mut e, "a", Some("1"), 10, None);
    put(&mut e, "a", Some("2"), 11, None);
    assert_eq!(value_of(&e, "a"), Some(Some("2".into())));
    let meta = e.meta(b"a").expect("meta");
    assert_eq!((meta.version, meta.tombstone, meta.value_len), (v(11), false, 1));
    e.flush(0).expect("flush");
    assert_eq!(value_of(&e, "a"), Some(Some("2".into())), "after flush");
    assert_eq!(e.stats().keys, 1);
    assert_eq!(e.last_timestamp(), v(11).ts);
}

pub fn delete_leaves_tombstone<E: Engine>(mut e: E) {
    put(&mut e, "a", Some("1"), 10, None);
    put(&mut e, "b", Some("1"), 11, None);
    put(&mut e, "a", None, 12, None);
    assert_eq!(value_of(&e, "a"), Some(None), "tombstone is a record with no value");
    assert!(e.meta(b"a").expect("meta").tombstone);
    let stats = e.stats();
    assert_eq!((stats.keys, stats.tombstones), (1, 1));
    put(&mut e, "a", Some("3"), 13, None);
    let stats = e.stats();
    assert_eq!((stats.keys, stats.tombstones), (2, 0));
}

pub fn scan_is_ordered_bounded_and_limited<E: Engine>(mut e: E) {
    for (i, key) in ["c", "a", "e", "b", "d"].iter().enumerate() {
        put(&mut e, key, Some("x"), i as u64 + 1, None);
    }
    put(&mut e, "d", None, 9, None);
    let keys = |from: Bound<&[u8]>, limit| -> Vec<String> {
        e.scan(from, limit).into_iter().map(|(k, _)| String::from_utf8(k.to_vec()).unwrap()).collect()
    };
    assert_eq!(keys(Bound::Unbounded, 100), ["a", "b", "c", "d", "e"]);
    assert_eq!(keys(Bound::Included(b"b"), 2), ["b", "c"]);
    assert_eq!(keys(Bound::Excluded(b"c"), 100), ["d", "e"]);
    assert!(e.scan(Bound::Unbounded, 100)[3].1.tombstone, "scan shows tombstones");
}

pub fn expiring_lists_deadlines_in_order<E: Engine>(mut e: E) {
    put(&mut e, "late", Some("x"), 1, Some(300));
    put(&mut e, "early", Some("x"), 2, Some(100));
    put(&mut e, "never", Some("x"), 3, None);
    put(&mut e, "gone", Some("x"), 4, Some(50));
    put(&mut e, "gone", None, 5, None); // deleted: no longer expiring
    put(&mut e, "moved", Some("x"), 6, Some(60));
    put(&mut e, "moved", Some("x"), 7, Some(1000)); // deadline replaced
    assert_eq!(e.stats().expires, 3, "late, early, moved");
    assert_eq!(e.expiring(99, 10), Vec::<Bytes>::new());
    assert_eq!(e.expiring(300, 10), vec![Bytes::from("early"), Bytes::from("late")]);
    assert_eq!(e.expiring(u64::MAX, 1), vec![Bytes::from("early")]);
}

pub fn rewrite_with_same_deadline_stays_expiring<E: Engine>(mut e: E) {
    put(&mut e, "k", Some("1"), 1, Some(100));
    put(&mut e, "k", Some("2"), 2, Some(100));
    assert_eq!(e.expiring(100, 10), vec![Bytes::from("k")], "the deadline survives its rewrite");
    put(&mut e, "k", None, 3, Some(100));
    assert_eq!(e.expiring(100, 10), Vec::<Bytes>::new(), "a tombstone never expires");
}

pub fn binary_keys_and_values_round_trip<E: Engine>(mut e: E) {
    let key = Bytes::from_static(b"\x00\xff\r\n key");
    let value = Bytes::from((0..=255u8).collect::<Vec<u8>>());
    let record = Record { version: v(1), value: Some(value.clone()), expire_at_ms: Some(7) };
    e.put(key.clone(), record.clone()).expect("put");
    e.flush(0).expect("flush");
    assert_eq!(e.get(&key).expect("get"), Some(record));
    let empty = Record { version: v(2), value: Some(Bytes::new()), expire_at_ms: None };
    e.put(Bytes::from_static(b""), empty.clone()).expect("empty key");
    assert_eq!(e.get(b"").expect("get"), Some(empty));
}

/// Instantiates every contract check for one engine constructor.
macro_rules! contract_tests {
    ($module:ident, $make:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn put_then_get_sees_newest() {
                super::put_then_get_sees_newest($make);
            }
            #[test]
            fn delete_leaves_tombstone() {
                super::delete_leaves_tombstone($make);
            }
            #[test]
            fn scan_is_ordered_bounded_and_limited() {
                super::scan_is_ordered_bounded_and_limited($make);
            }
            #[test]
            fn expiring_lists_deadlines_in_order() {
                super::expiring_lists_deadlines_in_order($make);
            }
            #[test]
            fn rewrite_with_same_deadline_stays_expiring() {
                super::rewrite_with_same_deadline_stays_expiring($make);
            }
            #[test]
            fn binary_keys_and_values_round_trip() {
                super::binary_keys_and_values_round_trip($make);
            }
        }
    };
}

contract_tests!(memory, MemoryEngine::new());

#[test]
fn memory_engine_stops_after_failed_flush() {
    let mut e = MemoryEngine::new();
    put(&mut e, "a", Some("1"), 1, None);
    e.fail_next_flush();
    assert!(matches!(e.flush(0), Err(Error::Stopped(_))));
    let again = e.put(Bytes::from("b"), Record { version: v(2), value: None, expire_at_ms: None });
    assert!(matches!(again, Err(Error::Stopped(_))), "put after failed flush");
    assert!(matches!(e.flush(0), Err(Error::Stopped(_))), "failed flush is never retried");
}

contract_tests!(log, LogEngine::temporary(LogOptions::default()));

#[test]
fn log_engine_stops_after_failed_fsync() {
    let mut e = LogEngine::temporary(LogOptions::default());
    put(&mut e, "a", Some("1"), 1, None);
    e.fail_next_fsync();
    assert!(matches!(e.flush(0), Err(Error::Io { op: "fsync", .. })), "the failed flush");
    let again = e.put(Bytes::from("b"), Record { version: v(2), value: None, expire_at_ms: None });
    assert!(matches!(again, Err(Error::Stopped(_))), "put after failed fsync");
    assert!(matches!(e.flush(0), Err(Error::Stopped(_))), "failed fsync is never retried");
}
