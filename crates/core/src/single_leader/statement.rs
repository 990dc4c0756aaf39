//! The statement and mixed log formats (`log_format`, DESIGN §6; the lecture's "statement-based
//! replication"): what a leader logs of a client's write, and how a replica executes a logged
//! statement.
//!
//! With `log_format = "statement"` the leader logs each client write as the request it
//! executed ([`Statement`]): `SET k v EX 10` with its relative TTL, a script as its text and
//! arguments (an `EVALSHA` as the `EVAL` it ran). Every replica executes it again, at its own
//! clock and with its own random draws, its writes versioned as the leader's were (from
//! [`Statement::first`], one clock step per write), so a deterministic request leaves it as the
//! leader. A request that is not deterministic leaves it different, as the lecture warns:
//! a relative TTL gives each replica the deadline of its own clock, a script that calls `TIME`
//! or `math.random` (or `RANDOMKEY`, `TTL`, `SCAN`, or visits a table with `pairs`) writes
//! what its own clock, generator or hash order gave, and a request that consults a key with a
//! deadline finds it live on one replica and expired on another. The store notes each of these
//! as the request executes, and the leader judges each request from the notes and what it wrote
//! ([`judge`]), and warns, naming it, when it logs one that is not deterministic; a replica
//! whose execution writes another number of keys than the leader's, or fails, warns too (its
//! clock still moves past the leader's last write). `replikv check` names the key ranges that
//! differ.
//!
//! With `log_format = "mixed"` the leader logs the deterministic requests as statements and
//! the others as their effects (the logical format's changes), as MySQL's MIXED format and
//! Redis's script effects replication: no replica then differs.
//!
//! Whatever the format, what the leader writes on its own (expiry deletions, the writes a
//! recovery logs again, another family's records) is logged as effects, as is a request whose
//! statement is over [`STATEMENT_BYTES_MAX`], and every write while a snapshot is in flight to a
//! follower: the snapshot's chunks read the engine as it is when each is read, writes after the
//! snapshot's position included, and what follows that position must apply harmlessly over
//! them, as effects do and a statement (an `INCR`) does not.
//!
//! CAVEATS
//! - A statement record holds the request as this build parses it (postcard, as a peer's
//!   forwarded request): a build that changes [`crate::kv::Request`] changes the log format.
//! - A recovery executes again, at the time it was first executed, a statement whose writes
//!   the engine did not all keep (a key older than the version the leader gave that write).
//!   One the engine kept only some writes of (a crash inside its batch: the log engine keeps
//!   what was fsynced, at the end of a batch, so it takes a segment seal inside a request, or
//!   an engine that keeps torn writes) is executed over them, its kept writes skipped, and the
//!   node warns: what it reads there is what it wrote, so a write made from an INCR's reply, a
//!   SETNX over its own kept key (later writes then take shifted versions) or a SWAPDB can come
//!   out other than the leader's; `replikv check` finds it. (Emptying the replica instead would
//!   lose the history when every replica crashed inside the same statement.) A follower whose
//!   own execution wrote fewer keys than the leader's (a nondeterministic statement) executes it
//!   again at each recovery while the statement is in its log. A follower whose engine kept
//!   writes its log lost, with statements in its log, empties itself and takes the history
//!   again.
//! - `tostring` of a table (an address) is not judged: a script that writes one is a statement
//!   in `mixed`, and differs.
//! - Every write is logged as effects while a snapshot is in flight to any follower: a slow
//!   snapshot turns statements off for the whole cluster meanwhile.

use crate::kv::{Request, Store};
use crate::replication::{Change, LogFormat, Old, Statement};
use crate::storage::Engine;
use crate::Result;

/// The largest statement logged as such, by its encoded size; a larger request is logged as
/// its effects (whose records may span several, where one statement may not).
pub const STATEMENT_BYTES_MAX: usize = 1024 * 1024;

/// Bytes of a request's command line in a warning at most ([`describe`]).
pub const DESCRIBED_BYTES_MAX: usize = 200;

/// Milliseconds between two warnings of the leader about nondeterministic statements (each
/// counts; only the first in the interval is named in the log).
const WARNING_EVERY_MS: u64 = 10_000;

/// Why `request` is not deterministic, judged from what it did (`logged`: its writes and what
/// their keys held) and what the store noted as it executed (`noted`: a script's clock or
/// random draw, a key with a deadline consulted), if it is not.
pub fn judge(request: &Request, logged: &(Vec<Change>, Vec<Old>), noted: Option<&'static str>) -> Option<String> {
    if let Some(why) = noted {
        return Some(why.to_string());
    }
    if request.relative_ttl() {
        return Some("it sets a deadline relative to the clock (a relative TTL)".to_string());
    }
    if request.absolute_ttl() {
        return Some("it sets an absolute deadline, which each replica compares with its own clock".to_string());
    }
    let deadline = logged.1.iter().any(|old| match old {
        Old::Held(record) => record.expire_at_ms.is_some(),
        Old::Omitted { expire_at_ms, .. } => expire_at_ms.is_some(),
        Old::Unknown | Old::Absent => false,
    });
    deadline.then(|| "it writes a key with a deadline, which each replica expires by its own clock".to_string())
}

/// The leader's statement log: the judgement of each client write, and its warnings.
#[derive(Debug, Default)]
pub(super) struct Statements {
    /// When the leader last warned of a nondeterministic statement.
    warned_ms: Option<u64>,
    /// Nondeterministic statements logged since then.
    unwarned: u64,
    /// Nondeterministic statements logged since this node started.
    pub(super) nondeterministic: u64,
}

impl Statements {
    /// The statement to log for `request` (the client's, in its statement form, taken before
    /// it executed: [`Store::statement_form`]) after it wrote `logged`; `None` to log `logged`
    /// itself.
    pub(super) fn statement<E: Engine>(
        &mut self,
        now_ms: u64,
        format: LogFormat,
        store: &mut Store<E>,
        request: Request,
        logged: &(Vec<Change>, Vec<Old>),
    ) -> Option<Statement> {
        let noted = store.take_nondeterministic();
        let first = logged.0.first()?.record.version;
        let last = logged.0.last()?.record.version.ts;
        let why = judge(&request, logged, noted);
        if format == LogFormat::Mixed && why.is_some() || format == LogFormat::Logical {
            return None;
        }
        let keys = logged.0.iter().map(|c| c.key.clone()).collect();
        let statement = Statement::new(request, first, last, keys, why);
        if statement.size_hint() > STATEMENT_BYTES_MAX {
            return None;
        }
        if let Some(why) = &statement.nondeterministic {
            self.nondeterministic += 1;
            if self.warned_ms.is_none_or(|at| now_ms.saturating_sub(at) >= WARNING_EVERY_MS) {
                tracing::warn!(
                    "logged a nondeterministic statement ({why}): {}; replicas that execute it again may hold \
                     other values than this leader (log_format = \"statement\"; \"mixed\" logs such requests as \
                     their effects){}",
                    describe(&statement.request),
                    match self.unwarned {
                        0 => String::new(),
                        n => format!("; {n} more since the last warning"),
                    }
                );
                (self.warned_ms, self.unwarned) = (Some(now_ms), 0);
            } else {
                self.unwarned += 1;
            }
        }
        Some(statement)
    }
}

/// Executes a logged statement on a replica at its clock `now_ms`; warns when it wrote another
/// number of keys than its leader did, or failed here (the replica now differs). With `replay`
/// (a recovery), writes that reached the engine before are skipped, and nothing is warned.
pub(super) fn execute<E: Engine>(
    store: &mut Store<E>,
    now_ms: u64,
    lsn: u64,
    statement: Statement,
    replay: bool,
) -> Result<()> {
    let described = || describe(&statement.request);
    let versions = (statement.first, statement.last);
    let (reply, writes) = store.execute_statement(now_ms, statement.request.clone(), versions, replay)?;
    if let crate::kv::Reply::Error(text) = &reply {
        if replay {
            tracing::warn!("the statement at {lsn} failed when recovery executed it again ({text}): {}", described());
            return Ok(());
        }
        tracing::warn!("the statement at {lsn} failed here ({text}): {}; this replica now differs", described());
    } else if writes != statement.keys.len() && !replay {
        tracing::warn!(
            "the statement at {lsn} made {writes} writes here, {} on its leader: {}; this replica now differs{}",
            statement.keys.len(),
            described(),
            statement.nondeterministic.as_ref().map_or(String::new(), |why| format!(" ({why})"))
        );
    }
    Ok(())
}

/// A request as one line, for warnings and listings: its command and arguments as Redis would
/// print them where this build can name them, its parsed form otherwise; at most
/// [`DESCRIBED_BYTES_MAX`] bytes, then `…`.
pub fn describe(request: &Request) -> String {
    let mut text = crate::kv::command_text(request);
    if text.len() > DESCRIBED_BYTES_MAX {
        let mut end = DESCRIBED_BYTES_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}
