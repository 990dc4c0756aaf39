//! Single-leader replication (DESIGN §6-§7): the vocabulary the replicas share.
//!
//! - [`record`]: what the log holds. A [`LogRecord`] is one client request's changes (a
//!   transaction, an MSET), or one part of a request too big for one record, at a contiguous
//!   position (LSN), stamped with the leader's epoch; a request is applied once whole. Its
//!   payload is logical: each [`Change`] is a key and the full record it now holds (value or
//!   tombstone, version, expiry), so applying a change twice, or over a newer snapshot, is
//!   harmless.
//! - [`log`]: the durable replication log every replica keeps, in segment files with bounded
//!   retention.
//! - [`election`]: the rules of a leader election (votes, pre-votes, majorities, timeouts), as
//!   pure functions the replica drives.
//! - [`vote`]: a voter's durable state (epoch, vote), saved before a vote is sent.
//! - [`rollback`]: the files that keep the writes a rejoining node cut from its log.
//! - [`message`]: the peer protocol, one [`Message`] enum: `Append` / `Ack` for shipping,
//!   `Heartbeat` for lag, liveness and confirming leadership, `SnapshotChunk` for a follower
//!   behind the retained log, `Forward` / `ForwardReply` for writes a follower forwards,
//!   `Vote` / `VoteReply` for elections, `TimeoutNow` for a planned handover (FAILOVER),
//!   `RepairRequest` / `RepairReply` for records damaged on a follower's disk.
//!
//! The rules (who ships what when, what an acknowledgement means, how lag is measured, how a
//! restarted replica recovers) live with the replica: see [`crate::replica`], whose essay is
//! the protocol's description.
//!
//! CAVEATS
//! - Only the logical payload exists; DESIGN §6's statement and physical formats do not.
//! - Changes carry the new value only, not the old one (the lecture's `old_value`): enough to
//!   replicate, not yet enough for multi-leader conflict detection or change data capture.

pub mod election;
pub mod log;
pub mod message;
pub mod record;
pub mod rollback;
pub mod vote;

pub use log::{ReplicationLog, ReplogOptions, ReplogStats};
pub use message::Message;
pub use record::{Change, Epoch, LogRecord, Lsn};
pub use rollback::{RollbackEntry, RollbackLog};
pub use vote::VoteStore;
