//! The replication log and its records: what a family that ships a log shares (DESIGN §6).
//!
//! - [`record`]: what the log holds. A [`LogRecord`] is one client request's changes (a
//!   transaction, an MSET), or one part of a request too big for one record, at a contiguous
//!   position (LSN), stamped with the leader's epoch; a request is applied once whole. Its
//!   payload is logical: each [`Change`] is a key and the full record it now holds (value or
//!   tombstone, version, expiry), so applying a change twice, or over a newer snapshot, is
//!   harmless.
//! - [`log`]: the durable replication log every replica keeps, in segment files with bounded
//!   retention.
//!
//! Who ships what when, what an acknowledgement means and how a restarted replica recovers
//! are a family's rules: see [`crate::single_leader`], whose essay is its protocol's
//! description, with its elections, votes, rollback files and peer messages.
//!
//! CAVEATS
//! - Only the logical payload exists; DESIGN §6's statement and physical formats do not.
//! - Changes carry the new value only, not the old one (the lecture's `old_value`): enough to
//!   replicate, not yet enough for multi-leader conflict detection or change data capture.

pub mod log;
pub mod record;

pub use log::{ReplicationLog, ReplogOptions, ReplogStats};
pub use record::{Change, Epoch, LogRecord, Lsn};
