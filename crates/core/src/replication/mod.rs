//! The replication log and its records: what a family that ships a log shares (DESIGN §6).
//!
//! - [`record`]: what the log holds. A [`LogRecord`] is one client request's changes (a
//!   transaction, an MSET), or one part of a request too big for one record, at a contiguous
//!   position (LSN), stamped with the leader's epoch; a request is applied once whole, and
//!   is the logical log's transaction (its id is its first record's position, it begins at
//!   part 0 and ends at its last part). Its payload is logical: each [`Change`] is a key and
//!   the full record it now holds (value or tombstone, version, expiry), so applying a change
//!   twice, or over a newer snapshot, is harmless; beside it, the lecture's old value and
//!   version ([`Old`]), for whoever reads the log. With a statement log ([`LogFormat`]), a
//!   record may instead hold the request itself, which every replica executes again; with a
//!   physical log, the bytes the leader's storage engine wrote ([`Physical`]), which every
//!   replica writes at the same place in its own files, its changes read back from them.
//! - [`show`]: the log read as the lecture's logical log (`REPLIKV.LOG ... CHANGES`,
//!   `replikv log show`): each change's old and new value and version, its transaction, and
//!   the lecture's record for a `table.row.column` key.
//! - [`log`]: the durable replication log every replica keeps, in segment files with bounded
//!   retention.
//!
//! Who ships what when, what an acknowledgement means and how a restarted replica recovers
//! are a family's rules: see [`crate::single_leader`], whose essay is its protocol's
//! description, with its elections, votes, rollback files and peer messages.
//!
//! CAVEATS
//! - A record holds changes, a client's request ([`Statement`], `log_format = "statement"`
//!   or `"mixed"`, see [`crate::single_leader::statement`]), or storage bytes ([`Physical`],
//!   `log_format = "physical"`, see `storage/log/physical.rs`). A physical record has no old
//!   values: WAL shipping carries what was written, not what it replaced.
//! - An old value over [`record::OLD_VALUE_LOGGED_BYTES_MAX`], or past
//!   [`record::OLD_VALUES_LOGGED_BYTES_PER_REQUEST_MAX`] in one request, is logged as its
//!   version and length only, and a change a leader's recovery logs again has no old value.

pub mod log;
pub mod record;
pub mod show;

pub use log::{ReplicationLog, ReplogOptions, ReplogStats};
pub use record::{Change, Epoch, Extent, LogRecord, Lsn, Old, Physical, Statement};

/// What a leader logs of a client's write (DESIGN §6; a setting of the cluster).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Its effects: each key's new record and old value ([`Change`], [`Old`]).
    #[default]
    Logical,
    /// The request itself ([`Statement`]), which every replica executes again: a request that
    /// reads the clock or draws a random number leaves replicas different.
    Statement,
    /// The request itself when it is deterministic, its effects when it is not (a relative
    /// TTL, a script that read the clock or drew a random number, a write to a key with a
    /// deadline), as MySQL's MIXED format and Redis's script effects replication.
    Mixed,
    /// The bytes the leader's storage engine wrote ([`Physical`]), which every replica writes
    /// verbatim at the same place in its own segment files (WAL shipping): byte-identical
    /// files, tied to one storage format version and the log engine.
    Physical,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<LogFormat, String> {
        match text {
            "logical" => Ok(LogFormat::Logical),
            "statement" => Ok(LogFormat::Statement),
            "mixed" => Ok(LogFormat::Mixed),
            "physical" => Ok(LogFormat::Physical),
            other => Err(format!("unknown log format {other:?}: logical, statement, mixed or physical")),
        }
    }
}

impl LogFormat {
    /// Its name in settings and listings.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Logical => "logical",
            LogFormat::Statement => "statement",
            LogFormat::Mixed => "mixed",
            LogFormat::Physical => "physical",
        }
    }
}
