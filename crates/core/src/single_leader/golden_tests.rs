//! Golden scripts for the lone replica: commands as redis-cli would type them, each followed
//! by its reply as redis-cli would print it, indented by two spaces.
//!
//! Scripts live in `testscripts/`. A line starting with `#` is a comment; `:time MS` sets the
//! wall clock the next steps run at; `:tick` steps a tick (expiry); `:flush` flushes;
//! `:stats` prints the engine's key counters; `:client N` sends the next commands from client
//! N (each client has its own [`Session`]: its database, its transaction; client 1 at first).
//! Run with `UPDATE_GOLDEN=1` to rewrite the expected output, then review the diff.

use super::{Input, Outbox, Output, SingleLeader};
use crate::kv::{Action, ExecItem, Reply, Session};
use crate::storage::MemoryEngine;
use crate::version::NodeId;
use bytes::Bytes;
use std::path::Path;

/// Splits a script line into arguments: spaces separate; double quotes group, with `\"`,
/// `\\`, `\n`, `\r` and `\xHH` escapes.
pub(super) fn split_line(line: &str) -> Vec<Bytes> {
    let mut args = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let Some(first) = chars.next() else { return args };
        let mut arg = Vec::new();
        if first == '"' {
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => match chars.next() {
                        Some('n') => arg.push(b'\n'),
                        Some('r') => arg.push(b'\r'),
                        Some('x') => {
                            let hex: String = [chars.next().unwrap(), chars.next().unwrap()].iter().collect();
                            arg.push(u8::from_str_radix(&hex, 16).expect("bad \\x escape in script"));
                        }
                        Some(other) => arg.extend(other.to_string().bytes()),
                        None => panic!("dangling escape in {line:?}"),
                    },
                    other => arg.extend(other.to_string().bytes()),
                }
            }
        } else {
            arg.extend(first.to_string().bytes());
            while let Some(c) = chars.peek().copied().filter(|c| *c != ' ') {
                arg.extend(c.to_string().bytes());
                chars.next();
            }
        }
        args.push(Bytes::from(arg));
    }
}

/// Renders a reply the way redis-cli prints it.
pub(super) fn render(reply: &Reply, indent: usize, out: &mut Vec<String>) {
    let pad = " ".repeat(indent);
    let line = match reply {
        Reply::Ok => "OK".to_string(),
        Reply::Status(s) => s.to_string(),
        Reply::Nil => "(nil)".to_string(),
        Reply::Int(n) => format!("(integer) {n}"),
        Reply::Bulk(b) => format!("\"{}\"", b.escape_ascii()),
        Reply::Error(e) => format!("(error) {e}"),
        Reply::NullArray => "(nil)".to_string(),
        Reply::Watched(_) => "OK".to_string(),
        Reply::InSession { at, reply, .. } => {
            render(reply, indent, out);
            if let Some(last) = out.last_mut() {
                last.push_str(&format!("  (at {}@e{})", at.lsn, at.epoch));
            }
            return;
        }
        Reply::InKeySession { reply, .. } => return render(reply, indent, out),
        Reply::Array(items) if items.is_empty() => "(empty array)".to_string(),
        Reply::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let mut inner = Vec::new();
                render(item, indent + 3, &mut inner);
                let first = inner.remove(0);
                out.push(format!("{pad}{}) {}", i + 1, first.trim_start()));
                out.extend(inner);
            }
            return;
        }
    };
    out.push(format!("{pad}{line}"));
}

/// Runs one script and returns its text with fresh output.
fn run_script(text: &str) -> String {
    let mut replica = SingleLeader::new(MemoryEngine::new(), NodeId(1));
    let mut now_ms = 1_000_000;
    let mut out = Vec::new();
    let mut sessions = std::collections::BTreeMap::new();
    let mut client = 1;
    for (id, line) in text.lines().enumerate() {
        if line.starts_with("  ") {
            continue; // expected output of the previous command: regenerated below
        }
        out.push(line.to_string());
        let line = line.trim();
        let mut results = Vec::new();
        if line.is_empty() || line.starts_with('#') {
            continue;
        } else if let Some(ms) = line.strip_prefix(":time ") {
            now_ms = ms.trim().parse().expect(":time takes milliseconds");
            continue;
        } else if line == ":tick" {
            replica.step(now_ms, Input::Tick, &mut Outbox::default()).expect("tick");
            continue;
        } else if line == ":flush" {
            replica.flush(now_ms).expect("flush");
            continue;
        } else if let Some(n) = line.strip_prefix(":client ") {
            client = n.trim().parse().expect(":client takes a number");
            continue;
        } else if line == ":stats" {
            let s = replica.stats();
            results.push(format!("keys={} tombstones={}", s.keys, s.tombstones));
        } else {
            let args = split_line(line);
            let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
            let session = sessions.entry(client).or_insert_with(|| Session::new(crate::kv::DATABASES_DEFAULT));
            let mut call = |request| {
                let mut outbox = Outbox::default();
                replica.step(now_ms, Input::Request { id: id as u64, request }, &mut outbox).expect("step");
                let mut outputs = outbox.drain_all();
                assert_eq!(outputs.len(), 1, "one reply per request");
                let Output::Reply { id: got, reply } = outputs.remove(0) else { panic!("a reply, not a message") };
                assert_eq!(got, id as u64, "reply carries the request's id");
                reply
            };
            let reply = match session.command(&name, &args, false) {
                Action::Reply(reply) => reply,
                Action::Local => unreachable!("nothing is local here"),
                Action::Call(request) => call(request),
                Action::Watch(request) => session.watched(call(request)),
                Action::Exec(request, plan) => match session.executed(plan, call(request)) {
                    Ok(items) => Reply::Array(
                        items
                            .into_iter()
                            .map(|item| match item {
                                ExecItem::Reply(reply) => reply,
                                ExecItem::Local(_) => unreachable!("nothing is local here"),
                            })
                            .collect(),
                    ),
                    Err(reply) => reply,
                },
            };
            render(&reply, 0, &mut results);
        }
        out.extend(results.into_iter().map(|r| format!("  {r}")));
    }
    out.join("\n") + "\n"
}

#[test]
fn golden_scripts() {
    check_scripts("testscripts", 1, run_script);
}

/// Runs every script in `src/single_leader/{folder}` (at least `min` of them) through `run` and
/// compares the output with the script's text; with `UPDATE_GOLDEN` set, rewrites the scripts
/// instead.
pub(super) fn check_scripts(folder: &str, min: usize, run: fn(&str) -> String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/single_leader").join(folder);
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(&dir).expect("scripts dir").map(|e| e.unwrap().path()).collect();
    paths.sort();
    assert!(paths.len() >= min, "{} scripts expected in {}", min, dir.display());
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        let fresh = run(&text);
        if fresh != text {
            if update {
                std::fs::write(&path, &fresh).unwrap();
            } else {
                failures.push(format!("{}:\n{}", path.display(), diff(&text, &fresh)));
            }
        }
    }
    assert!(failures.is_empty(), "golden scripts differ (UPDATE_GOLDEN=1 rewrites them):\n{}", failures.join("\n"));
}

/// The lines that differ, expected then actual.
fn diff(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<_>, Vec<_>) = (expected.lines().collect(), actual.lines().collect());
    let mut out = String::new();
    for i in 0..e.len().max(a.len()) {
        let (x, y) = (e.get(i).copied().unwrap_or("<none>"), a.get(i).copied().unwrap_or("<none>"));
        if x != y {
            out += &format!("  line {}: expected {x:?}\n          actual   {y:?}\n", i + 1);
        }
    }
    out
}
