//! Reading the log as the lecture's logical log: what `REPLIKV.LOG ... CHANGES`,
//! `GET /api/v1/log` and `replikv log show` print.
//!
//! Each record is shown with its transaction (the id of its request, and whether the
//! transaction begins or ends in it), and each change with its key, its old and new value and
//! version. A key that follows DESIGN §3's `table.row.column` convention is also shown as the
//! lecture's record:
//!
//! ```text
//! table: users  key: 1234  column: picture_url  old_value: me-old.jpg  new_value: me-new.jpg  transaction: 328142
//! ```
//!
//! Keys are client keys: a key of database namespace 0 as it is, another namespace's without
//! its two-byte prefix (its `namespace` field says which), and replikv's own records (a
//! multi-leader node's conflict log and exchange positions, the database map) with namespace
//! `replikv` and their physical key. A multi-leader node's values are its encoded sets of
//! concurrent versions, shown as they are stored.
//!
//! CAVEATS
//! - A value is shown up to [`SHOWN_VALUE_BYTES_MAX`] bytes; its full length is always given.
//! - Old values are unknown in records of log format 2 and older, and in changes a leader's
//!   recovery logged again after a crash (see [`Old`]).

use super::record::{LogRecord, Old};
use crate::kv::{logical, Reply};
use crate::storage::Record;
use bytes::Bytes;

/// Bytes of a value shown at most; past it the value is cut (its `_bytes` field keeps the
/// whole length), so that listing a log of big values stays small.
pub const SHOWN_VALUE_BYTES_MAX: usize = 4096;

/// The table, row and column of a key of the form `table.row.column` (DESIGN §3), each part
/// non-empty and the whole key UTF-8; `None` for other keys. The column is everything after
/// the second dot.
pub fn table_row_column(key: &[u8]) -> Option<(&str, &str, &str)> {
    let text = std::str::from_utf8(key).ok()?;
    let mut parts = text.splitn(3, '.');
    let (table, row, column) = (parts.next()?, parts.next()?, parts.next()?);
    (!table.is_empty() && !row.is_empty() && !column.is_empty()).then_some((table, row, column))
}

/// Tells a family's own records (a multi-leader node's conflict log and exchange positions)
/// from clients' keys, by physical key.
pub type Own<'a> = &'a dyn Fn(&[u8]) -> bool;

/// The client key and namespace of physical key `key`: `(key, Some(namespace))`, or
/// `(key, None)` for one of replikv's own records (by `own`, or in replikv's namespace).
fn client_key(key: &Bytes, own: Own) -> (Bytes, Option<u8>) {
    match logical(key) {
        Some((ns, client)) if !own(key) => (client, Some(ns)),
        _ => (key.clone(), None),
    }
}

/// True when the change at `index` of `record` is shown under `prefix` (a client key prefix;
/// empty shows every change, replikv's own included).
pub fn shown(record: &LogRecord, index: usize, prefix: &[u8], own: Own) -> bool {
    key_shown(&record.changes[index].key, prefix, own)
}

/// True when physical key `key` is shown under `prefix` (see [`shown`]).
pub fn key_shown(key: &Bytes, prefix: &[u8], own: Own) -> bool {
    if prefix.is_empty() {
        return true;
    }
    let (key, ns) = client_key(key, own);
    ns.is_some() && key.starts_with(prefix)
}

/// The statement `record` holds, as pairs: `command` (the request as a command line, whole),
/// `keys` (the client keys it wrote under `prefix`), `first_version` and `nondeterministic`
/// (why the leader judged it so, or nil); nil for a record of changes, and for a statement
/// that wrote no key under `prefix`.
pub fn statement_reply(record: &LogRecord, prefix: &[u8], own: Own) -> Reply {
    let Some(statement) = &record.statement else { return Reply::Nil };
    if !statement.keys.iter().any(|k| key_shown(k, prefix, own)) {
        return Reply::Nil;
    }
    let keys = statement
        .keys
        .iter()
        .filter(|k| key_shown(k, prefix, own))
        .map(|k| Reply::Bulk(client_key(k, own).0))
        .collect();
    pairs(vec![
        ("command", Reply::Bulk(Bytes::from(crate::kv::command_text(&statement.request)))),
        ("keys", Reply::Array(keys)),
        ("first_version", Reply::Bulk(Bytes::from(statement.first.to_string()))),
        ("nondeterministic", statement.nondeterministic.clone().map_or(Reply::Nil, |why| Reply::Bulk(why.into()))),
    ])
}

/// `record` as REPLIKV.LOG's CHANGES form answers it: field and value pairs `lsn`, `epoch`,
/// `transaction`, `part`, `parts`, `begins` and `ends` (1 or 0: whether its transaction
/// begins or ends in this record), then `changes`: each change under `prefix` as the pairs of
/// [`change_reply`], then `statement` ([`statement_reply`]).
pub fn record_reply(record: &LogRecord, prefix: &[u8], own: Own) -> Reply {
    let changes = (0..record.changes.len())
        .filter(|&i| shown(record, i, prefix, own))
        .map(|i| change_reply(record, i, own))
        .collect();
    pairs(vec![
        ("lsn", Reply::Int(record.lsn as i64)),
        ("epoch", Reply::Int(record.epoch as i64)),
        ("transaction", Reply::Int(record.transaction() as i64)),
        ("part", Reply::Int(i64::from(record.part))),
        ("parts", Reply::Int(i64::from(record.parts))),
        ("begins", Reply::Int(i64::from(record.begins()))),
        ("ends", Reply::Int(i64::from(!record.continues()))),
        ("changes", Reply::Array(changes)),
        ("statement", statement_reply(record, prefix, own)),
    ])
}

/// The change at `index` of `record` as pairs: `key`, `namespace` (a number, or `replikv`),
/// `old` (`absent`, `value`, `tombstone`, `omitted` or `unknown`), `old_value`, `old_bytes`,
/// `old_version`, `old_expire_at_ms`, `new_value` (nil for a delete), `new_bytes`,
/// `new_version`, `expire_at_ms`, and `lecture`: the lecture's record as pairs `table`, `key`,
/// `column`, `old_value`, `new_value`, `transaction`, all text. For a key that is not
/// `table.row.column`, `table` and `column` are nil and `key` is the whole key (lossy UTF-8).
/// A missing field is nil.
pub fn change_reply(record: &LogRecord, index: usize, own: Own) -> Reply {
    let change = &record.changes[index];
    let old = record.old(index);
    let (key, ns) = client_key(&change.key, own);
    let text = |s: String| Reply::Bulk(Bytes::from(s));
    let int_or_nil = |n: Option<u64>| n.map_or(Reply::Nil, |n| Reply::Int(n as i64));
    let value_of = |v: &Option<Bytes>| v.as_ref().map_or(Reply::Nil, |v| Reply::Bulk(cut(v)));
    let (old_state, old_value, old_bytes, old_expire) = match old {
        Old::Unknown => ("unknown", Reply::Nil, None, None),
        Old::Absent => ("absent", Reply::Nil, None, None),
        Old::Held(Record { value: None, expire_at_ms, .. }) => ("tombstone", Reply::Nil, None, *expire_at_ms),
        Old::Held(Record { value: Some(v), expire_at_ms, .. }) => {
            ("value", Reply::Bulk(cut(v)), Some(v.len() as u64), *expire_at_ms)
        }
        Old::Omitted { expire_at_ms, bytes, .. } => ("omitted", Reply::Nil, Some(*bytes), *expire_at_ms),
    };
    let (table, row, column) = match (ns, table_row_column(&key)) {
        (Some(_), Some((table, row, column))) => (text(table.into()), text(row.into()), text(column.into())),
        _ => (Reply::Nil, text(String::from_utf8_lossy(&key).into_owned()), Reply::Nil),
    };
    let lecture = pairs(vec![
        ("table", table),
        ("key", row),
        ("column", column),
        ("old_value", text(old_text(old))),
        ("new_value", text(new_text(&change.record))),
        ("transaction", text(record.transaction().to_string())),
    ]);
    pairs(vec![
        ("key", Reply::Bulk(key.clone())),
        ("namespace", ns.map_or_else(|| text("replikv".into()), |ns| Reply::Int(i64::from(ns)))),
        ("old", text(old_state.into())),
        ("old_value", old_value),
        ("old_bytes", int_or_nil(old_bytes)),
        ("old_version", old.version().map_or(Reply::Nil, |v| text(v.to_string()))),
        ("old_expire_at_ms", int_or_nil(old_expire)),
        ("new_value", value_of(&change.record.value)),
        ("new_bytes", int_or_nil(change.record.value.as_ref().map(|v| v.len() as u64))),
        ("new_version", text(change.record.version.to_string())),
        ("expire_at_ms", int_or_nil(change.record.expire_at_ms)),
        ("lecture", lecture),
    ])
}

/// The lecture's `old_value` of `old`: the value, or what stands for its absence.
pub fn old_text(old: &Old) -> String {
    match old {
        Old::Unknown => "(unknown)".into(),
        Old::Absent => "(none)".into(),
        Old::Held(record) => new_text(record),
        Old::Omitted { bytes, .. } => format!("({bytes} bytes, not logged)"),
    }
}

/// The lecture's `new_value` of `record`: the value as text (lossy UTF-8, cut), or `(deleted)`.
pub fn new_text(record: &Record) -> String {
    match &record.value {
        None => "(deleted)".into(),
        Some(v) if v.len() > SHOWN_VALUE_BYTES_MAX => {
            format!("{}... ({} bytes)", String::from_utf8_lossy(&v[..SHOWN_VALUE_BYTES_MAX]), v.len())
        }
        Some(v) => String::from_utf8_lossy(v).into_owned(),
    }
}

/// `value`, cut to [`SHOWN_VALUE_BYTES_MAX`] bytes.
fn cut(value: &Bytes) -> Bytes {
    value.slice(..value.len().min(SHOWN_VALUE_BYTES_MAX))
}

/// Field and value pairs as one flat array, as Redis's XINFO answers.
fn pairs(fields: Vec<(&str, Reply)>) -> Reply {
    Reply::Array(
        fields
            .into_iter()
            .flat_map(|(name, value)| [Reply::Bulk(Bytes::copy_from_slice(name.as_bytes())), value])
            .collect(),
    )
}

/// The pairs of a reply, as a map from field name to value: for tests.
#[cfg(test)]
pub(crate) fn fields(reply: &Reply) -> std::collections::BTreeMap<String, Reply> {
    let Reply::Array(items) = reply else { panic!("pairs: {reply:?}") };
    items
        .chunks(2)
        .map(|pair| match &pair[0] {
            Reply::Bulk(name) => (String::from_utf8_lossy(name).into_owned(), pair[1].clone()),
            other => panic!("a field name: {other:?}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::Change;
    use crate::version::{NodeId, Timestamp, Version};

    fn version(millis: u64) -> Version {
        Version { ts: Timestamp { millis, logical: 0 }, node: NodeId(1) }
    }

    fn record(value: Option<&'static str>, millis: u64) -> Record {
        Record { version: version(millis), value: value.map(|v| Bytes::from_static(v.as_bytes())), expire_at_ms: None }
    }

    /// The lecture's example: the UPDATE of user 1234's picture, in transaction 328142.
    #[test]
    fn the_lectures_update_is_shown_as_its_record() {
        let change =
            Change { key: Bytes::from_static(b"users.1234.picture_url"), record: record(Some("me-new.jpg"), 20) };
        let mut log_record = LogRecord::whole(328142, 3, vec![change]);
        log_record.olds = vec![Old::Held(record(Some("me-old.jpg"), 10))];
        let reply = record_reply(&log_record, b"", &|_| false);
        let top = fields(&reply);
        assert_eq!(top["transaction"], Reply::Int(328142));
        assert_eq!((&top["begins"], &top["ends"]), (&Reply::Int(1), &Reply::Int(1)), "a transaction of one record");
        let Reply::Array(changes) = &top["changes"] else { panic!("changes") };
        let change = fields(&changes[0]);
        assert_eq!(change["old"], Reply::Bulk(Bytes::from("value")));
        assert_eq!(change["old_version"], Reply::Bulk(Bytes::from(version(10).to_string())));
        assert_eq!(change["new_version"], Reply::Bulk(Bytes::from(version(20).to_string())));
        // The lecture's record, its fields in order, as `replikv log show` joins them.
        let Reply::Array(lecture) = &change["lecture"] else { panic!("a lecture record") };
        let line: Vec<String> = lecture
            .chunks(2)
            .map(|pair| match pair {
                [Reply::Bulk(name), Reply::Bulk(value)] => {
                    format!("{}: {}", String::from_utf8_lossy(name), String::from_utf8_lossy(value))
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            line.join("  "),
            "table: users  key: 1234  column: picture_url  old_value: me-old.jpg  new_value: me-new.jpg  transaction: 328142"
        );
    }

    #[test]
    fn old_values_of_every_kind_are_named_and_a_prefix_selects_client_keys() {
        let key = |k: &'static str| Bytes::from_static(k.as_bytes());
        let changes = vec![
            Change { key: key("users.1.name"), record: record(None, 5) },
            Change { key: key("orders.9.total"), record: record(Some("10"), 5) },
            Change { key: crate::kv::physical(3, &key("users.2.name")), record: record(Some("b"), 5) },
        ];
        let mut r = LogRecord {
            lsn: 12,
            epoch: 1,
            changes,
            part: 1,
            parts: 3,
            olds: Vec::new(),
            statement: None,
            physical: None,
        };
        assert_eq!(old_text(r.old(0)), "(unknown)", "a record without old values");
        r.olds = vec![
            Old::Held(record(Some("ann"), 1)),
            Old::Absent,
            Old::Omitted { version: version(2), expire_at_ms: None, bytes: 5 << 20 },
        ];
        assert_eq!(new_text(&r.changes[0].record), "(deleted)");
        assert_eq!(old_text(r.old(1)), "(none)");
        assert_eq!(old_text(r.old(2)), "(5242880 bytes, not logged)");
        let top = fields(&record_reply(&r, b"users.", &|_| false));
        assert_eq!(top["transaction"], Reply::Int(11), "the request began one record earlier");
        assert_eq!((&top["begins"], &top["ends"]), (&Reply::Int(0), &Reply::Int(0)), "the middle of three parts");
        let Reply::Array(changes) = &top["changes"] else { panic!("changes") };
        let keys: Vec<(Reply, Reply)> =
            changes.iter().map(|c| (fields(c)["key"].clone(), fields(c)["namespace"].clone())).collect();
        assert_eq!(
            keys,
            vec![(Reply::Bulk(key("users.1.name")), Reply::Int(0)), (Reply::Bulk(key("users.2.name")), Reply::Int(3))],
            "client keys under the prefix, in every namespace"
        );
        let omitted = fields(&changes[1]);
        assert_eq!((&omitted["old"], &omitted["old_bytes"]), (&Reply::Bulk(key("omitted")), &Reply::Int(5 << 20)));
    }

    #[test]
    fn a_key_outside_the_convention_has_no_table_or_column() {
        let change = Change { key: Bytes::from_static(b"plain"), record: record(Some("v"), 5) };
        let lecture = fields(&fields(&change_reply(&LogRecord::whole(9, 1, vec![change]), 0, &|_| false))["lecture"]);
        assert_eq!((&lecture["table"], &lecture["column"]), (&Reply::Nil, &Reply::Nil));
        assert_eq!(lecture["key"], Reply::Bulk(Bytes::from_static(b"plain")));
        assert_eq!(lecture["old_value"], Reply::Bulk(Bytes::from_static(b"(unknown)")));
        assert_eq!(lecture["transaction"], Reply::Bulk(Bytes::from_static(b"9")));
    }

    #[test]
    fn only_table_row_column_keys_split_into_table_row_and_column() {
        assert_eq!(table_row_column(b"users.1234.picture_url"), Some(("users", "1234", "picture_url")));
        assert_eq!(table_row_column(b"a.b.c.d"), Some(("a", "b", "c.d")), "the column is the rest");
        for key in [&b"users"[..], b"users.1234", b"users..x", b".1.x", b"t.1.", b"t.\xff.c"] {
            assert_eq!(table_row_column(key), None, "{key:?}");
        }
    }

    #[test]
    fn a_long_value_is_cut_and_its_length_kept() {
        let long = Bytes::from(vec![b'x'; SHOWN_VALUE_BYTES_MAX + 10]);
        let r = LogRecord::whole(
            1,
            1,
            vec![Change { key: Bytes::from_static(b"k"), record: Record { value: Some(long), ..record(None, 1) } }],
        );
        let change = fields(&change_reply(&r, 0, &|_| false));
        assert_eq!(change["new_bytes"], Reply::Int((SHOWN_VALUE_BYTES_MAX + 10) as i64));
        assert!(matches!(&change["new_value"], Reply::Bulk(v) if v.len() == SHOWN_VALUE_BYTES_MAX));
        assert!(new_text(&r.changes[0].record).ends_with(&format!("... ({} bytes)", SHOWN_VALUE_BYTES_MAX + 10)));
    }
}
