//! Change data capture: the replication log streamed to clients as logical records, as
//! Espresso's and RethinkDB's changefeeds do (issue 18, DESIGN §6).
//!
//! `REPLIKV.CHANGES [FROM lsn] [PREFIX p]` on a RESP connection, and
//! `GET /api/v1/changes?from=&prefix=` as server-sent events, read the same [`Feed`]: the
//! node's log from a position, each record as `REPLIKV.LOG ... CHANGES` shows it (its
//! transaction, each change's old and new value and version), only records with a change of a
//! client key under the prefix. Without FROM the stream starts at the log's end: new changes
//! only.
//!
//! What a stream delivers, and when:
//! - Only records this node has made good: on a leader those a majority of the cluster holds
//!   durably, on a follower those it applied; never a request a failover abandoned half
//!   shipped.
//! - New records are found when the node publishes its status (every batch, at most 20 ms late
//!   under load: a progress counter wakes the stream), and every [`FEED_POLL_MS`] in any case.
//! - A FROM older than the log's retention is refused with the position the log starts at,
//!   never a silent gap (over HTTP: 410 before the stream opens); so is a stream that falls
//!   that far behind.
//! - When the log is cut under the stream (a follower applies what its leader holds durably,
//!   which a failover can still cut; the cut records go to a rollback file), the stream ends
//!   with an error naming the position: records it delivered from there were rolled back.
//! - A consumer reads at its own pace: the node reads the next batch only once the previous one
//!   was written to the socket, so nothing piles up in memory. A RESP consumer that takes
//!   more than [`FEED_STALL_MS_MAX`] to take one batch is disconnected with the reason.
//!
//! A stream is resumable: each record carries its position (`lsn`; the SSE event's `id`, so
//! an `EventSource` resumes with `Last-Event-ID`, which wins over the URL's `from`), and FROM
//! the next one continues it. A disconnected RESP consumer is told the position after the
//! last batch that left the socket.

use crate::state::NodeState;
use bytes::Bytes;
use replikv_core::kv::{Reply, Request};
use std::sync::Arc;
use std::time::Duration;

/// Records a feed reads from the log per call.
pub const FEED_BATCH_RECORDS: u64 = 256;

/// Milliseconds a feed waits for a new record before it reads the log again anyway.
pub const FEED_POLL_MS: u64 = 1_000;

/// Milliseconds a RESP consumer may take to take one batch before it is disconnected.
pub const FEED_STALL_MS_MAX: u64 = 30_000;

/// Where a feed starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// After the log's last record now: new changes only.
    End,
    /// At this position (from 1).
    From(u64),
}

/// The arguments of `REPLIKV.CHANGES [FROM lsn] [PREFIX p]` (after the name): where to start
/// and the key prefix, or the error to answer.
pub fn parse(args: &[Bytes]) -> Result<(Start, Bytes), String> {
    let (mut start, mut prefix) = (Start::End, Bytes::new());
    let mut rest = args.iter();
    while let Some(option) = rest.next() {
        let value = rest.next();
        match (option.to_ascii_lowercase().as_slice(), value) {
            (b"from", Some(value)) => {
                let lsn = std::str::from_utf8(value).ok().and_then(|v| v.parse::<u64>().ok());
                start = match lsn {
                    Some(0) => return Err("ERR REPLIKV.CHANGES FROM counts from 1, the log's first position".into()),
                    Some(lsn) => Start::From(lsn),
                    None => return Err("ERR REPLIKV.CHANGES FROM takes a log position (a positive integer)".into()),
                };
            }
            (b"prefix", Some(value)) => prefix = value.clone(),
            _ => return Err("ERR syntax error: REPLIKV.CHANGES [FROM lsn] [PREFIX p]".into()),
        }
    }
    Ok((start, prefix))
}

/// A reader of the node's log from a position on.
pub struct Feed {
    state: Arc<NodeState>,
    prefix: Bytes,
    /// The last record read (delivered or passed over), and its epoch: the next read checks
    /// that the log still holds it, so a cut under the stream is noticed.
    last: u64,
    last_epoch: Option<u64>,
    log_end: tokio::sync::watch::Receiver<u64>,
}

impl Feed {
    /// A feed of the changes of client keys under `prefix` from `start`.
    pub fn new(state: Arc<NodeState>, start: Start, prefix: Bytes) -> Feed {
        let log_end = state.handle.watch_log_progress();
        let last = match start {
            Start::End => state.handle.last_lsn(),
            Start::From(lsn) => lsn - 1,
        };
        Feed { state, prefix, last, last_epoch: None, log_end }
    }

    /// The position the feed has read through.
    pub fn position(&self) -> u64 {
        self.last
    }

    /// [`Feed::next`], owning the feed and handing it back: a future that can be kept across
    /// the turns of a loop that also waits for other things.
    pub async fn into_next(mut self) -> (Feed, Result<Vec<Reply>, String>) {
        let next = self.next().await;
        (self, next)
    }

    /// The next records with a change under the prefix (each as `REPLIKV.LOG ... CHANGES`
    /// answers it), waiting until there is one; the error that ends the stream otherwise.
    pub async fn next(&mut self) -> Result<Vec<Reply>, String> {
        loop {
            let records = self.read().await?;
            let found: Vec<Reply> = records.into_iter().filter(has_changes).collect();
            if !found.is_empty() {
                return Ok(found);
            }
            self.log_end.borrow_and_update();
            tokio::select! {
                changed = self.log_end.changed() => {
                    if changed.is_err() {
                        return Err("ERR the node is shutting down".into());
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(FEED_POLL_MS)) => {}
            }
        }
    }

    /// The records after the last one read, checking first that the log still holds that one
    /// as it was read.
    async fn read(&mut self) -> Result<Vec<Reply>, String> {
        let check = self.last_epoch.filter(|_| self.last > 0);
        let after = if check.is_some() { self.last - 1 } else { self.last };
        let mut records = match self.call(after).await? {
            Ok(records) => records,
            // The record to check went with retention: read on without the check (retention
            // removes old records, it never cuts the tail).
            Err(_) if check.is_some() => return self.read_unchecked().await,
            Err(gone) => return Err(format!("ERR REPLIKV.CHANGES: {gone}: start again FROM a position the log holds")),
        };
        if let Some(epoch) = check {
            let held = records.first().map(|r| (field(r, "lsn"), field(r, "epoch")));
            if held.is_none() && self.state.handle.last_lsn() >= self.last {
                return Ok(Vec::new()); // held, but not yet made good here (a new leader's fsync)
            }
            if held != Some((Some(self.last), Some(epoch))) {
                return Err(format!(
                    "ERR REPLIKV.CHANGES: the log was cut at or before position {}, which this stream delivered: \
                     a failover rolled those records back (see the rollback files); start again FROM a position \
                     the log holds",
                    self.last
                ));
            }
            records.remove(0);
        }
        self.passed(&records);
        Ok(records)
    }

    /// The records after the last one read, without a check.
    async fn read_unchecked(&mut self) -> Result<Vec<Reply>, String> {
        match self.call(self.last).await? {
            Ok(records) => {
                self.passed(&records);
                Ok(records)
            }
            Err(gone) => Err(format!(
                "ERR REPLIKV.CHANGES: this stream fell behind the log's retention: {gone}; start again FROM a \
                 position the log holds"
            )),
        }
    }

    /// Notes the last of `records` as read.
    fn passed(&mut self, records: &[Reply]) {
        if let Some(last) = records.last() {
            self.last = field(last, "lsn").unwrap_or(self.last);
            self.last_epoch = field(last, "epoch");
        }
    }

    /// REPLIKV.LOG after FEED_BATCH_RECORDS CHANGES PREFIX prefix: the records, or the log's
    /// refusal (its records are gone); the outer error ends the stream (the node stopped, or
    /// this node keeps no log).
    async fn call(&self, after: u64) -> Result<Result<Vec<Reply>, String>, String> {
        let request = Request::Log { after, count: FEED_BATCH_RECORDS, changes: true, prefix: self.prefix.clone() };
        match self.state.handle.call(vec![request]).await {
            Ok(mut replies) => match replies.pop() {
                Some(Reply::Array(records)) => Ok(Ok(records)),
                Some(Reply::Error(e)) if e.contains("are gone") => Ok(Err(e)),
                Some(Reply::Error(e)) => Err(if e.starts_with("ERR") { e } else { format!("ERR {e}") }),
                other => Err(format!("ERR unexpected answer from the log: {other:?}")),
            },
            Err(stopped) => Err(format!("ERR {stopped}")),
        }
    }
}

/// The integer field `name` of a record's pairs.
pub fn field(record: &Reply, name: &str) -> Option<u64> {
    let Reply::Array(items) = record else { return None };
    items.chunks(2).find_map(|pair| match pair {
        [Reply::Bulk(n), Reply::Int(v)] if n.as_ref() == name.as_bytes() => u64::try_from(*v).ok(),
        _ => None,
    })
}

/// True when a record's `changes` is not empty, or it holds a statement (under the prefix).
fn has_changes(record: &Reply) -> bool {
    let Reply::Array(items) = record else { return false };
    items.chunks(2).any(|pair| match pair {
        [Reply::Bulk(n), Reply::Array(changes)] if n.as_ref() == b"changes" => !changes.is_empty(),
        [Reply::Bulk(n), Reply::Array(_)] => n.as_ref() == b"statement",
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<Bytes> {
        line.split(' ').filter(|a| !a.is_empty()).map(|a| Bytes::copy_from_slice(a.as_bytes())).collect()
    }

    #[test]
    fn arguments_are_checked() {
        assert_eq!(parse(&args("")), Ok((Start::End, Bytes::new())));
        assert_eq!(parse(&args("from 7 prefix users.")), Ok((Start::From(7), Bytes::from("users."))));
        assert_eq!(parse(&args("PREFIX a FROM 1")), Ok((Start::From(1), Bytes::from("a"))));
        for (bad, says) in [
            ("FROM 0", "counts from 1"),
            ("FROM -1", "positive integer"),
            ("FROM x", "positive integer"),
            ("FROM", "syntax"),
            ("PREFIX", "syntax"),
            ("LIMIT 3", "syntax"),
        ] {
            let error = parse(&args(bad)).expect_err(bad);
            assert!(error.starts_with("ERR") && error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn fields_and_changes_are_read_from_a_records_pairs() {
        let record = Reply::Array(vec![
            Reply::Bulk(Bytes::from("lsn")),
            Reply::Int(7),
            Reply::Bulk(Bytes::from("epoch")),
            Reply::Int(2),
            Reply::Bulk(Bytes::from("changes")),
            Reply::Array(vec![]),
        ]);
        assert_eq!((field(&record, "lsn"), field(&record, "epoch"), field(&record, "part")), (Some(7), Some(2), None));
        assert!(!has_changes(&record));
    }
}
