//! Rollback files: the writes a replica cut from its log when it rejoined a newer leader
//! (issue 6, DESIGN §7). Nothing is lost in silence: a write an old leader logged but that no
//! majority held (an `async` write it acknowledged, or one whose acknowledgements never came)
//! is not in the new leader's history, so the old leader cuts it when it rejoins, and keeps a
//! copy here for an operator to read, replay or discard.
//!
//! # Files
//!
//! One file per cut, in the directory `rollback/` of the node's data directory, named
//! `{first_lsn:020}-{last_lsn:020}-e{epoch}.jsonl` for the lsns cut and the epoch of the last
//! record cut. Redoing a cut after a crash rewrites the same file. Each line is one change
//! cut, a JSON object:
//!
//! ```text
//! {"lsn":7,"epoch":1,"key":"a","value":"1","version":"123.0@n1","expire_at_ms":null,"cut_at_ms":1700000000000}
//! ```
//!
//! `key` and `value` are JSON strings when they are UTF-8, else `key_hex` / `value_hex` hold
//! them in hex; `value` is `null` for a deletion. A statement (`log_format = "statement"` or
//! `"mixed"`) is one line of another shape, with no `key` or `value`: the request as a command
//! line and the keys it wrote (each a string, or `{"hex": ...}`), whose values its record does
//! not hold; `version` is its first write's:
//!
//! ```text
//! {"lsn":8,"epoch":1,"statement":"SET k v PX 10000","keys":["k"],"version":"124.0@n1","cut_at_ms":1700000000000}
//! ``` A file is written to `*.tmp`, fsynced,
//! renamed into place and the directory fsynced, before the log is cut.
//!
//! CAVEATS
//! - Files are never deleted or rotated by replikv: an operator removes them once read. Their
//!   count is a metric, so a growing pile is visible.

use crate::error::{Error, Result};
use crate::replication::record::{Epoch, LogRecord, Lsn};
use bytes::Bytes;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The directory's name, in the data directory.
pub const ROLLBACK_DIR: &str = "rollback";

/// Changes an in-memory rollback log keeps for inspection (the simulator's); beyond, only
/// counted.
pub const ROLLBACK_MEMORY_ENTRIES_MAX: usize = 100_000;

/// One change cut from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RollbackEntry {
    /// The record's lsn.
    pub lsn: Lsn,
    /// The record's epoch.
    pub epoch: Epoch,
    /// The key written.
    pub key: Bytes,
    /// The value written; `None` for a deletion.
    pub value: Option<Bytes>,
    /// The write's version, as text.
    pub version: String,
    /// When it would have expired.
    pub expire_at_ms: Option<u64>,
    /// When it was cut, on the cutting node's clock.
    pub cut_at_ms: u64,
    /// For a statement: the request as a command line, and the keys it wrote.
    pub statement: Option<(String, Vec<Bytes>)>,
}

/// Where cut writes go: files, or memory (the simulator, tests).
#[derive(Debug)]
pub struct RollbackLog {
    /// The directory; `None` in memory.
    dir: Option<PathBuf>,
    /// Changes saved, in the files found at open and since.
    entries_total: u64,
    /// The newest changes saved, in memory only.
    memory: Vec<RollbackEntry>,
}

impl RollbackLog {
    /// Opens `dir` (created by the first save), counting the changes its files hold.
    pub fn open(dir: &Path) -> Result<RollbackLog> {
        let mut entries_total = 0;
        match std::fs::read_dir(dir) {
            Ok(listing) => {
                for entry in listing {
                    let entry = entry.map_err(|e| Error::io("list", dir, e))?;
                    let path = entry.path();
                    if path.extension().is_some_and(|x| x == "jsonl") {
                        let bytes = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
                        entries_total += bytes.iter().filter(|&&b| b == b'\n').count() as u64;
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("list", dir, e)),
        }
        Ok(RollbackLog { dir: Some(dir.to_path_buf()), entries_total, memory: Vec::new() })
    }

    /// A rollback log in memory only.
    pub fn in_memory() -> RollbackLog {
        RollbackLog { dir: None, entries_total: 0, memory: Vec::new() }
    }

    /// Saves every change of `records` (contiguous, oldest first), cut at `now_ms`, durably
    /// before it returns. Returns how many changes it saved.
    pub fn save(&mut self, records: &[LogRecord], now_ms: u64) -> Result<u64> {
        let (Some(first), Some(last)) = (records.first(), records.last()) else { return Ok(0) };
        let entries: Vec<RollbackEntry> = records
            .iter()
            .flat_map(|r| {
                let statement = r.statement.as_ref().map(|s| RollbackEntry {
                    lsn: r.lsn,
                    epoch: r.epoch,
                    key: s.keys.first().cloned().unwrap_or_default(),
                    value: None,
                    version: s.first.to_string(),
                    expire_at_ms: None,
                    cut_at_ms: now_ms,
                    statement: Some((crate::kv::command_text(&s.request), s.keys.clone())),
                });
                r.changes
                    .iter()
                    .map(move |c| RollbackEntry {
                        lsn: r.lsn,
                        epoch: r.epoch,
                        key: c.key.clone(),
                        value: c.record.value.clone(),
                        version: c.record.version.to_string(),
                        expire_at_ms: c.record.expire_at_ms,
                        cut_at_ms: now_ms,
                        statement: None,
                    })
                    .chain(statement)
            })
            .collect();
        if let Some(dir) = &self.dir {
            let name = format!("{:020}-{:020}-e{}.jsonl", first.lsn, last.lsn, last.epoch);
            let mut text = String::new();
            for entry in &entries {
                text += &to_json_line(entry);
                text.push('\n');
            }
            write_durably(dir, &name, text.as_bytes())?;
        } else {
            let room = ROLLBACK_MEMORY_ENTRIES_MAX.saturating_sub(self.memory.len());
            self.memory.extend(entries.iter().take(room).cloned());
        }
        self.entries_total += entries.len() as u64;
        Ok(entries.len() as u64)
    }

    /// Changes saved: in the files found at open, and since.
    pub fn entries_total(&self) -> u64 {
        self.entries_total
    }

    /// The changes an in-memory log kept (empty for files).
    pub fn memory_entries(&self) -> &[RollbackEntry] {
        &self.memory
    }

    /// The directory, for files.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }
}

/// Writes `bytes` to `dir/name` so that a crash leaves the whole file or none.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = std::fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    file.write_all(bytes).map_err(|e| Error::io("write", &tmp, e))?;
    file.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &tmp, e))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("fsync", dir, e))
}

/// One entry as a line of JSON.
fn to_json_line(e: &RollbackEntry) -> String {
    let mut out = format!("{{\"lsn\":{},\"epoch\":{},", e.lsn, e.epoch);
    if let Some((text, keys)) = &e.statement {
        out += &format!("\"statement\":{},\"keys\":[", json_string(text));
        for (i, key) in keys.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            match std::str::from_utf8(key) {
                Ok(text) => out += &json_string(text),
                Err(_) => {
                    out += &format!("{{\"hex\":\"{}\"}}", key.iter().map(|b| format!("{b:02x}")).collect::<String>())
                }
            }
        }
        out += &format!("],\"version\":{},\"cut_at_ms\":{}}}", json_string(&e.version), e.cut_at_ms);
        return out;
    }
    bytes_field(&mut out, "key", Some(&e.key));
    out.push(',');
    bytes_field(&mut out, "value", e.value.as_ref());
    out += &format!(",\"version\":{},\"expire_at_ms\":", json_string(&e.version));
    out += &e.expire_at_ms.map_or("null".into(), |t| t.to_string());
    out += &format!(",\"cut_at_ms\":{}}}", e.cut_at_ms);
    out
}

/// `"name":"text"` for UTF-8 bytes, `"name_hex":"..."` otherwise, `"name":null` for none.
fn bytes_field(out: &mut String, name: &str, bytes: Option<&Bytes>) {
    match bytes.map(|b| std::str::from_utf8(b)) {
        None => *out += &format!("\"{name}\":null"),
        Some(Ok(text)) => *out += &format!("\"{name}\":{}", json_string(text)),
        Some(Err(_)) => {
            let hex: String = bytes.expect("some").iter().map(|b| format!("{b:02x}")).collect();
            *out += &format!("\"{name}_hex\":\"{hex}\"");
        }
    }
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            '\n' => out += "\\n",
            '\r' => out += "\\r",
            '\t' => out += "\\t",
            c if (c as u32) < 0x20 => out += &format!("\\u{:04x}", c as u32),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::Change;
    use crate::storage::Record;
    use crate::version::{NodeId, Timestamp, Version};

    fn record(lsn: Lsn, epoch: Epoch, key: &[u8], value: Option<&[u8]>) -> LogRecord {
        let version = Version { ts: Timestamp { millis: 5, logical: 0 }, node: NodeId(1) };
        let record = Record { version, value: value.map(Bytes::copy_from_slice), expire_at_ms: None };
        LogRecord::whole(lsn, epoch, vec![Change { key: Bytes::copy_from_slice(key), record }])
    }

    #[test]
    fn a_cut_statement_is_one_line_naming_the_request_and_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ROLLBACK_DIR);
        let mut log = RollbackLog::open(&path).unwrap();
        let first = Version { ts: Timestamp { millis: 5, logical: 0 }, node: NodeId(1) };
        let args: Vec<Bytes> = vec!["MSET".into(), "k".into(), "v w".into(), Bytes::from_static(b"\xff"), "x".into()];
        let statement = crate::replication::Statement {
            request: crate::kv::parse_command(&args).unwrap().unwrap(),
            first,
            last: first.ts,
            keys: vec![Bytes::from("k"), Bytes::from_static(b"\xff")],
            nondeterministic: None,
            request_bytes: 0,
        };
        let record = LogRecord { statement: Some(statement), ..LogRecord::whole(8, 1, Vec::new()) };
        assert_eq!(log.save(&[record], 99).unwrap(), 1);
        let text = std::fs::read_to_string(path.join(format!("{:020}-{:020}-e1.jsonl", 8, 8))).unwrap();
        let want =
            r#"{"lsn":8,"epoch":1,"statement":"MSET k \"v w\" \"\\xff\" x","keys":["k",{"hex":"ff"}],"version":"5.0@"#;
        assert!(text.starts_with(want), "{text}");
        assert!(text.ends_with(",\"cut_at_ms\":99}\n"), "{text}");
        assert!(!text.contains("\"value\""), "no value: it is not a deletion: {text}");
    }

    #[test]
    fn a_cut_is_saved_as_json_lines_and_counted_again_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ROLLBACK_DIR);
        let mut log = RollbackLog::open(&path).unwrap();
        assert_eq!(log.entries_total(), 0);
        let records = [record(7, 1, b"a\"b", Some(b"1\n")), record(8, 1, b"\xff", None)];
        assert_eq!(log.save(&records, 99).unwrap(), 2);
        let text = std::fs::read_to_string(path.join(format!("{:020}-{:020}-e1.jsonl", 7, 8))).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("{\"lsn\":7,\"epoch\":1,\"key\":\"a\\\"b\",\"value\":\"1\\n\",\"version\":"));
        assert!(lines[0].ends_with(",\"expire_at_ms\":null,\"cut_at_ms\":99}"), "{}", lines[0]);
        assert!(lines[1].contains("\"key_hex\":\"ff\",\"value\":null"), "{}", lines[1]);
        // Redoing the same cut rewrites the same file: the count at open does not double.
        log.save(&records, 100).unwrap();
        assert_eq!(RollbackLog::open(&path).unwrap().entries_total(), 2);
        assert!(std::fs::read_dir(&path).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));
    }

    #[test]
    fn memory_keeps_entries_for_inspection() {
        let mut log = RollbackLog::in_memory();
        log.save(&[record(3, 2, b"k", Some(b"v"))], 1).unwrap();
        assert_eq!(log.entries_total(), 1);
        assert_eq!(log.memory_entries()[0].key, Bytes::from_static(b"k"));
        assert_eq!(log.memory_entries()[0].lsn, 3);
    }
}
