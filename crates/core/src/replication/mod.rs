//! Single-leader replication (DESIGN §6-§7): the replication log, the peer messages, and the
//! rules of the leader and its followers.
//!
//! (The module essay is written with the replica; see `replica.rs`.)

pub mod log;
pub mod message;
pub mod record;

pub use log::{ReplicationLog, ReplogOptions, ReplogStats};
pub use message::Message;
pub use record::{Change, Epoch, LogRecord, Lsn};
