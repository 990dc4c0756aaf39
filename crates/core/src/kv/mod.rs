//! Key-value commands: Redis's string and keyspace commands as typed requests, executed
//! against a storage engine.
//!
//! A front end (RESP, HTTP) parses what a client sent into a [`Request`]; the replica hands it
//! to a [`Store`], which reads and writes the engine and answers with a [`Reply`]. Requests
//! are protocol-neutral: they hold bytes and numbers, never RESP frames, so the same request
//! can arrive from redis-cli, curl, or a simulated client.
//!
//! Semantics follow Redis 7 for strings, with two deliberate differences in mechanism:
//!
//! - **Expiry is data.** A deadline is stored with the value as absolute Unix milliseconds
//!   (relative times are resolved against the `now` the request executes at). A key past its
//!   deadline reads as absent at once; the store then deletes it with an ordinary tombstone
//!   write (`expire_due`, called on every tick), so that every replica applies the same delete
//!   instead of each deciding on its own clock.
//! - **Every write is versioned.** Each write takes a fresh hybrid-logical-clock version from
//!   the store's clock; a delete writes a tombstone with its own version.
//!
//! **Transactions and databases** are per connection, in a [`Session`] the front end keeps:
//! it answers MULTI, EXEC, DISCARD, WATCH, UNWATCH and SELECT, queues commands, and hands
//! the store ordinary requests: an EXEC is one [`Request::Exec`], executed whole within one
//! step (its writes one request of the replication log), and a request in a database other
//! than 0 is wrapped in [`Request::InDb`]. Databases are namespaces of the one engine, with a
//! replicated map from database to namespace, so SWAPDB is one write (see `databases.rs`).
//!
//! SCAN cursors are numbers, as clients expect, but keys are ordered bytes, so the store keeps
//! a bounded table from cursor number to the key where the scan resumes (`SCAN_CURSORS_MAX`).
//! A cursor evicted from that table gets an error rather than a silent restart.
//!
//! A command that writes several keys writes them all within its one `execute`: RENAME is a
//! write of the destination (with the source's deadline) and then a tombstone for the source;
//! COPY, a write of the destination. Commands that would change nothing write nothing (SETBIT
//! of a bit that already has the value, GETEX PERSIST of a key without deadline, SETRANGE of
//! an empty string, a RENAME onto itself), so they reach no log.
//!
//! Bounded work. SETRANGE and SETBIT refuse a result past the largest value the store takes
//! (`value_bytes_max`: 512 MiB, 32 MiB in a cluster; not the `proto-max-bulk-len` setting,
//! which bounds what a client sends) with Redis's texts ("string exceeds maximum
//! allowed size (proto-max-bulk-len)"; "bit offset is not an integer or out of range"). LCS
//! fills a table of (len(a) + 1) × (len(b) + 1) cells and refuses one over [`LCS_CELLS_MAX`]
//! (64 MiB) with an error naming the limit, where Redis allows 512 MiB of table.
//!
//! OBJECT answers what makes sense for a store that keeps values as bytes and tracks no
//! access: ENCODING judges the value's bytes as Redis judges a value it has just SET ("int"
//! for an integer `string2l` accepts within 20 bytes, "embstr" up to 44 bytes, "raw" past
//! them); REFCOUNT is 1; IDLETIME is 0; FREQ answers Redis's error for a maxmemory policy that
//! is not LFU (replikv evicts nothing, as Redis's default noeviction). Each answers nil for an
//! absent key, as Redis.
//!
//! RANDOMKEY draws from a xorshift64* generator kept in the store and seeded from the node
//! id: no OS randomness, and the same node answers the same sequence from the same state (it
//! is a read, so replicas need not agree). When the selected database holds up to
//! [`RANDOMKEY_EXACT_ENTRIES_MAX`] entries (keys and tombstones), it reads them all and draws
//! uniformly among the live keys. Past that it cannot count keys cheaply (the engines have no rank index), so it probes: from
//! the prefix every entry shares, it walks down at most [`RANDOMKEY_DESCENT_BYTES`] bytes,
//! drawing each byte uniformly between the smallest and the largest that some entry under the
//! walk so far has next (or stopping there, when the walk so far is itself an entry); then it
//! reads [`RANDOMKEY_WINDOW_ENTRIES`] entries from that point (wrapping past the last) and
//! draws uniformly among their live keys: about a hundred one-entry scans per probe. Every
//! live key can be drawn, but not equally: each branch of the key space gets an equal share
//! of its parent's, however many keys it holds, so keys in sparse branches are favored. With
//! keys `user:0` to `user:19999`, the half from `user:10000` (all under the one branch
//! `user:1`) is drawn about a fifth of the time (18% of 2000 draws in a test), not half; keys
//! just after a gap between byte values are favored too. After [`RANDOMKEY_PROBES_MAX`]
//! probes that found only tombstones, expired keys and other databases' keys (the probes
//! cover the whole engine), it answers nil although live keys may remain: likeliest for a
//! large database beside much larger ones.
//!
//! CAVEATS
//! - Only strings exist: `TYPE` answers `string` or `none`, and no command can return
//!   WRONGTYPE.
//! - `KEYS` walks every key in one request, as Redis's does; prefer SCAN on large data sets.
//! - INCRBYFLOAT computes in f64 (Redis uses long double) and prints the shortest form that
//!   reads back to the same f64.
//! - Every write stores the whole value: EXPIRE, PEXPIRE, PERSIST and GETEX rewrite the value
//!   with its new deadline, and APPEND, SETRANGE and SETBIT rewrite the whole new value, so
//!   repeated small edits of one key cost the square of its length in log bytes (compaction
//!   reclaims them). A record that changes only a deadline would fix the first; nothing is
//!   planned for the second.
//! - OBJECT ENCODING says "int" or "embstr" for a value APPEND, SETRANGE or SETBIT made,
//!   where Redis says "raw"; OBJECT REFCOUNT says 1 for small integers, where Redis says
//!   2147483647 (its shared integers); OBJECT IDLETIME is always 0.
//! - LCS IDX answers an array of "matches", the ranges, "len" and the length: Redis's map in
//!   RESP2's shape, also to a RESP3 client, which Redis answers with a map.
//! - RANDOMKEY is not uniform past [`RANDOMKEY_EXACT_ENTRIES_MAX`] entries (see above).

mod command;
mod commands;
mod damage;
mod databases;
mod glob;
mod number;
mod parse_strings;
mod request;
pub mod scripts;
mod session;
mod store;
mod strings;
mod text;

pub use command::{is_command, parse_command, parse_named};
pub use commands::{Commands, Strings};
pub use damage::{Corruption, Damage, DamagedKeys, DAMAGED_KEYS_MAX};
pub(crate) use databases::{logical, physical};
pub use databases::{DbKeys, CLIENT_KEY_BYTES_MAX, DATABASES_DEFAULT, DATABASES_MAX};
pub use glob::{glob_match, glob_match_within};
pub use number::{format_float, parse_float, parse_int};
pub use request::{
    BitRange, Consistency, ExpireCondition, Expiry, GetExExpiry, LcsAnswer, ObjectField, Reply, Request,
    SessionPosition, SetCondition, Watched, CONFLICTS_LISTED_DEFAULT,
};
pub use session::{
    unknown_command, Action, ExecItem, ExecPlan, Session, EXEC_OVERHEAD_BYTES_MAX, MULTI_QUEUED_BYTES_MAX,
    MULTI_QUEUED_MAX, WATCHED_BYTES_MAX, WATCHED_KEYS_MAX,
};
pub use store::{Store, EXPIRE_PER_TICK_MAX, GLOB_STEPS_PER_REQUEST_MAX, SCAN_COUNT_MAX, SCAN_CURSORS_MAX};
pub use strings::{
    LCS_CELLS_MAX, RANDOMKEY_DESCENT_BYTES, RANDOMKEY_EXACT_ENTRIES_MAX, RANDOMKEY_PROBES_MAX, RANDOMKEY_WINDOW_ENTRIES,
};
pub use text::command_text;
