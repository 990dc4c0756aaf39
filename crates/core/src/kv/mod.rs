//! Key-value commands: Redis's string commands as typed requests, executed against a storage
//! engine.
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
//! CAVEATS
//! - Only strings exist: `TYPE` answers `string` or `none`, and no command can return
//!   WRONGTYPE.
//! - `KEYS` walks every key in one request, as Redis's does; prefer SCAN on large data sets.
//! - INCRBYFLOAT computes in f64 (Redis uses long double) and prints the shortest form that
//!   reads back to the same f64.
//! - Every write stores the whole value: EXPIRE, PEXPIRE and PERSIST rewrite the value with
//!   its new deadline, and APPEND rewrites the joined value, so repeated APPENDs to one key
//!   cost the square of its length in log bytes (compaction reclaims them). A record that
//!   changes only a deadline would fix the first; nothing is planned for the second.
//! - EXPIRE's NX, XX, GT and LT options are refused ("Unsupported option").

mod command;
mod databases;
mod glob;
mod number;
mod request;
mod session;
mod store;

pub use command::{is_command, parse_command, parse_named};
pub use databases::{DATABASES_DEFAULT, DATABASES_MAX};
pub use glob::{glob_match, glob_match_within};
pub use number::{format_float, parse_float, parse_int};
pub use request::{Expiry, Reply, Request, SetCondition, Watched};
pub use session::{
    unknown_command, Action, ExecItem, ExecPlan, Session, MULTI_QUEUED_BYTES_MAX, MULTI_QUEUED_MAX, WATCHED_KEYS_MAX,
};
pub use store::{Store, EXPIRE_PER_TICK_MAX, GLOB_STEPS_PER_REQUEST_MAX, SCAN_COUNT_MAX, SCAN_CURSORS_MAX};
