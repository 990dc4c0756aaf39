//! The messages replicas send each other: the whole single-leader protocol in one enum.
//!
//! The server carries them over the peer transport (postcard in length-prefixed frames) and
//! never looks inside; the simulator carries them over a simulated network. Every message
//! carries its sender's epoch: a receiver in a newer epoch refuses it (answering with its own
//! epoch, which makes an old leader step down), and a receiver in an older one moves to the
//! sender's epoch first. That is the fencing of issue 6.

use crate::kv::{Reply, Request};
use crate::replication::record::{Change, Epoch, LogRecord, Lsn};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A message between two replicas of one cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Leader to follower: log records from `prev_lsn + 1` on, each durable on the leader.
    /// Doubles as a heartbeat.
    Append {
        /// The leader's epoch.
        epoch: Epoch,
        /// The record before the first one here; the follower refuses a gap after its own log.
        prev_lsn: Lsn,
        /// The epoch of the leader's record at `prev_lsn`: the follower accepts the records
        /// only if its own record there has the same epoch (then, as in Raft, the two logs
        /// are equal through `prev_lsn`).
        prev_epoch: Epoch,
        /// The records, in order, contiguous.
        records: Vec<LogRecord>,
        /// The leader's durable log end when it sent this.
        leader_lsn: Lsn,
        /// The leader's clock when it sent this, echoed back to measure lag in time.
        sent_at_ms: u64,
    },
    /// Leader to follower, every heartbeat interval, and at once when a read needs the
    /// leader to confirm it still leads: "I lead, and my log ends here".
    Heartbeat {
        /// The leader's epoch.
        epoch: Epoch,
        /// The leader's heartbeat round, echoed in acknowledgements: a majority echoing a round
        /// sent after a read arrived proves the leader still led when the read was served.
        round: u64,
        /// The leader's durable log end.
        leader_lsn: Lsn,
        /// The leader's clock when it sent this.
        sent_at_ms: u64,
        /// With `read_lease`: how long a voter that hears this must refuse every vote (the
        /// leader's election timeout), whatever its own settings; 0 without a lease.
        lease_guard_ms: u64,
        /// Where the leader's log is held from for another family (see
        /// [`crate::single_leader::SingleLeader::hold_log_from`]): the follower's log keeps
        /// those records too, so that whichever node leads next still has them.
        log_hold: Option<Lsn>,
        /// The leader's records through here are held by a majority, since its epoch began:
        /// every later leader has them, so a follower's retention may drop them (it keeps the
        /// rest, within `unreplicated_bytes_max`, for a failover that cuts them).
        majority_held: Lsn,
    },
    /// Follower to leader, sent only once what it reports is durable on the follower.
    Ack {
        /// The follower's view of the epoch.
        epoch: Epoch,
        /// The follower's log is durable, and applied, through this record; after a refusal,
        /// where the leader should ship from instead.
        durable_lsn: Lsn,
        /// The follower's log is known to equal this leader's through this record (checked by
        /// `Append`'s `prev_epoch` in this epoch): only this counts for acknowledgements.
        matched_lsn: Lsn,
        /// The epoch of the follower's last record: a leader that finds a follower holding
        /// more records of its own epoch than it has lost data, and steps down.
        last_epoch: Epoch,
        /// The follower's log base (the record before its first, whose epoch it keeps): it has
        /// nothing to compare before it, so a leader checking where their logs part starts no
        /// further back.
        log_base: Lsn,
        /// The newest heartbeat round of this leader the follower has seen.
        round: u64,
        /// The follower's log generation (times it emptied its log, durable): the leader
        /// ignores an acknowledgement older than the newest it has seen, which describes a
        /// log that no longer exists.
        generation: u64,
        /// True when the follower refused an `Append` (a gap, a record of another epoch, or a
        /// snapshot out of step), or a message from an older epoch: the leader resumes
        /// shipping after `durable_lsn`, or steps down if `epoch` is newer than its own.
        reject: bool,
        /// The `sent_at_ms` of the newest leader message whose `leader_lsn` the follower's
        /// durable log has reached: the leader's own clock, so the lag in time it derives
        /// (`now - caught_up_at_ms`) has no clock skew in it. 0 when unknown.
        caught_up_at_ms: u64,
        /// The snapshot chunk this acknowledges, as (attempt, chunk number), while a snapshot
        /// is being installed.
        snapshot: Option<(u64, u64)>,
    },
    /// Leader to follower: one chunk of a snapshot of the leader's keys, for a follower that
    /// needs records the leader no longer retains. Chunks come in key order; chunk `seq`
    /// covers the keys after `after` (all keys when `None`) up to and including `through`
    /// (to the end when `done`).
    SnapshotChunk {
        /// The leader's epoch.
        epoch: Epoch,
        /// The leader's number for this snapshot attempt to this follower, echoed in acks.
        attempt: u64,
        /// The log position the snapshot starts from: the follower then takes the log from
        /// `lsn + 1`. Keys may be newer than `lsn` (the snapshot is taken while writes go on);
        /// replaying the log after it converges.
        lsn: Lsn,
        /// The epoch of the leader's record at `lsn`, which becomes the follower's log base.
        lsn_epoch: Epoch,
        /// On the first chunk: where each epoch's run of records starts in the leader's log,
        /// `(lsn, epoch)`, so that the follower can tell which of its own records the
        /// leader's history does not hold, and save them before the snapshot replaces them.
        epochs: Vec<(Lsn, Epoch)>,
        /// The chunk's number, from 0.
        seq: u64,
        /// The key range's exclusive start; `None` for the first chunk.
        after: Option<Bytes>,
        /// The key range's inclusive end; `None` on the last chunk (to the end of the keys).
        through: Option<Bytes>,
        /// The leader's records of the keys in the range, tombstones included.
        entries: Vec<Change>,
        /// Keys in the range whose records are damaged on the leader's disk (see
        /// `kv::damage`), each with the damaged record's version (`None`: the leader holds no
        /// record of it, only the listing): left out of `entries`. A follower whose record
        /// has that version keeps it, whole; any other keeps what it has and refuses the key
        /// (DAMAGED) until it is written again, rather than serve it as missing.
        damaged: Vec<(Bytes, Option<crate::version::Version>)>,
        /// True on the last chunk.
        done: bool,
        /// On the last chunk: the leader's log end (lsn, epoch) when it built it. The chunks
        /// may hold writes of records up to there; the follower's store is tainted by them
        /// until its log holds that position in that epoch.
        end: Option<(Lsn, Epoch)>,
    },
    /// Follower to leader (`forward_writes = true`): a client's write, for the leader to
    /// execute as its own. Sent once: a lost one times out on the follower, never repeats. One
    /// queued in the link while the leader was unreachable is executed when the link comes
    /// back, possibly after its client was told it timed out.
    Forward {
        /// The follower's epoch.
        epoch: Epoch,
        /// The follower process's start time: with `id`, names the request across restarts.
        incarnation: u64,
        /// The follower's number for it, echoed in the reply.
        id: u64,
        /// The client's request.
        request: Request,
    },
    /// Leader to follower: the reply to a forwarded request, once the leader would have
    /// answered its own client (acknowledgements included).
    ForwardReply {
        /// The leader's epoch.
        epoch: Epoch,
        /// The `incarnation` of the forward this answers.
        incarnation: u64,
        /// The follower's number for the request.
        id: u64,
        /// The reply.
        reply: Reply,
    },
    /// Candidate to every other node: "vote for me in `epoch`" (or, for a pre-vote, "would
    /// you, if I stood?", which changes nothing on either side).
    Vote {
        /// The epoch the candidate stands in (for a pre-vote, the one it would stand in).
        epoch: Epoch,
        /// The epoch of the candidate's last record.
        last_epoch: Epoch,
        /// The candidate's last record.
        last_lsn: Lsn,
        /// A pre-vote.
        pre_vote: bool,
        /// A planned handover (the leader sent `TimeoutNow`): voters grant it even while
        /// they hear that leader.
        transfer: bool,
    },
    /// Leader to the follower it hands over to (FAILOVER), once that follower holds every
    /// record: "stand now". The follower stands at once, without a pre-vote.
    TimeoutNow {
        /// The leader's epoch.
        epoch: Epoch,
    },
    /// Follower to leader, every resend interval while it has damaged records (see
    /// `kv::damage`): "send me your records of these keys". Up to `REPAIR_KEYS_MAX` keys.
    RepairRequest {
        /// The follower's epoch.
        epoch: Epoch,
        /// The keys whose records are damaged on the follower's disk.
        keys: Vec<Bytes>,
    },
    /// Leader to follower: its records of the keys a `RepairRequest` named, as of its log end
    /// `lsn`. The follower takes them only once its log matches the leader's through `lsn`
    /// (then they are what its own log would have given it), and only for keys still damaged.
    RepairReply {
        /// The leader's epoch.
        epoch: Epoch,
        /// The leader's log end when it read the records.
        lsn: Lsn,
        /// Each key with the leader's record of it (`None`: the leader has none).
        entries: Vec<(Bytes, Option<crate::storage::Record>)>,
    },
    /// Voter to candidate: the answer to a `Vote`, sent only once the voter's new state is
    /// durable.
    VoteReply {
        /// The voter's epoch after the request (newer than the candidate's: it lost).
        epoch: Epoch,
        /// The vote (or pre-vote) is granted.
        granted: bool,
        /// It answers a pre-vote.
        pre_vote: bool,
    },
}

impl Message {
    /// The epoch of the message's sender.
    pub fn epoch(&self) -> Epoch {
        match self {
            Message::Append { epoch, .. }
            | Message::Heartbeat { epoch, .. }
            | Message::Ack { epoch, .. }
            | Message::SnapshotChunk { epoch, .. }
            | Message::Forward { epoch, .. }
            | Message::ForwardReply { epoch, .. }
            | Message::Vote { epoch, .. }
            | Message::VoteReply { epoch, .. }
            | Message::RepairRequest { epoch, .. }
            | Message::RepairReply { epoch, .. }
            | Message::TimeoutNow { epoch } => *epoch,
        }
    }

    /// The message's name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Append { .. } => "Append",
            Message::Heartbeat { .. } => "Heartbeat",
            Message::Ack { .. } => "Ack",
            Message::SnapshotChunk { .. } => "SnapshotChunk",
            Message::Forward { .. } => "Forward",
            Message::ForwardReply { .. } => "ForwardReply",
            Message::Vote { .. } => "Vote",
            Message::VoteReply { .. } => "VoteReply",
            Message::TimeoutNow { .. } => "TimeoutNow",
            Message::RepairRequest { .. } => "RepairRequest",
            Message::RepairReply { .. } => "RepairReply",
        }
    }

    /// True for the messages only a leader sends (`Append`, `Heartbeat`, `SnapshotChunk`):
    /// receiving one in an epoch names the epoch's leader.
    pub fn from_leader(&self) -> bool {
        matches!(self, Message::Append { .. } | Message::Heartbeat { .. } | Message::SnapshotChunk { .. })
    }
}
