//! The replication log: the leader's ordered, durable list of [`LogRecord`]s, which it ships
//! to its followers and which every follower appends in turn (DESIGN §6).
//!
//! Each record sits at an lsn, one after the last; [`ReplicationLog::append`] refuses any
//! other. Records are kept in segment files of CRC-checked frames, appended and never
//! modified (only the active segment's tail may be cut, see "Truncate"), read back in order
//! from any lsn the log still holds, and deleted oldest segment first when the log outgrows
//! its retention budget. The newest records are also kept
//! decoded in memory (the tail), so shipping to followers that keep up reads no file.
//! [`ReplicationLog::in_memory`] is the same log without files, for the memory engine, tests
//! and the simulator.
//!
//! What it promises:
//!
//! - Lsns are contiguous from `first_lsn` to `last_lsn`; `first_lsn == last_lsn + 1` when the
//!   log holds no record.
//! - A record appended is visible to `read` at once, and durable once `write_out`'s fsync (or
//!   `flush`) has succeeded: that fsync, of the newest file, makes every earlier record
//!   durable too, because each segment is fsynced before the next one is written.
//! - After a crash, `open` gives back a prefix of the records appended, at least every one
//!   made durable; damage anywhere but a torn tail stops it with [`Error::Corrupt`].
//! - A `reset` is all or nothing across a crash, and its base survives a restart. A
//!   `truncate_after` leaves, after a crash, the log as it was or as it made it.
//! - Every `reset` and `truncate_after` counts in [`ReplicationLog::resets`]: a position
//!   reported before one may name records it dropped.
//!
//! # Files
//!
//! A log's directory holds, named so that they sort in lsn order:
//!
//! - `{first_lsn:020}.rlog`: a segment, a header then frames. `first_lsn` is the lsn of its
//!   first record (the header's base + 1, also for a segment holding none). The newest
//!   segment is active: appends go to it. Each segment's base is the previous one's last lsn.
//! - `{first_lsn:020}.rlog.new`: a segment being created, until its header is durable and it
//!   is renamed to `.rlog`. Removed at open.
//! - `{first_lsn:020}.rlog.reset`: the new segment of an unfinished reset. Its presence means
//!   every `.rlog` beside it is to be deleted; open finishes the job.
//!
//! Files with any other name are ignored and left alone.
//!
//! # Segment header
//!
//! All integers are little-endian. 32 bytes:
//!
//! ```text
//! offset size field
//!      0    8 magic     "RKVRLOG\0"
//!      8    4 version   format version, 5 (1 to 4 are still read)
//!     12    8 base      lsn just before the segment's first record (first_lsn - 1)
//!     20    8 epoch     the epoch at base: the log's last epoch when the segment was created
//!     28    4 crc       crc32c of bytes 0..28
//! ```
//!
//! A header that is short, has another magic, fails its checksum, names another version or
//! a base that disagrees with the file name is [`Error::Corrupt`] at
//! offset 0. The base and epoch are what let an empty log (after a reset) remember where it
//! continues.
//!
//! # Record frame
//!
//! After the header, frames back to back to the end of the file:
//!
//! ```text
//! offset size field
//!      0    4 len       body length, 1..=RECORD_BYTES_MAX (600 MiB)
//!      4    4 crc       crc32c of the body
//!      8  len body      postcard(LogRecord): lsn (varint), epoch (varint), changes,
//!                       part (varint), parts (varint), olds, statement, physical
//!                       (a physical record's changes are empty: its extents hold them)
//! ```
//!
//! Within a file the lsns run `base + 1`, `base + 2`, ... with no gap. A body's encoding is
//! `LogRecord`'s serde derive through postcard, so changing that type changes the format.
//! Format 1 had no `part` and `parts`: such a body ends after `changes`, which is never a
//! complete later body, and is read as a whole request (part 0 of 1). Format 2 had no `olds`
//! (each change's old record): such a body ends after `parts` and is read with its old
//! values unknown. Format 3 had no `statement`: such a body ends after `olds` and is read as
//! changes. Format 4 had no `physical`: such a body ends after `statement`. An older segment
//! reopened as the active one takes format 5 records after its own.
//!
//! # Writes
//!
//! `append` checks the lsn and the encoded size and encodes the frame into a buffer in user
//! space (no system call); it also keeps the record, decoded, in the tail. When the frame
//! would take the active segment past `segment_bytes_max` (and the segment holds a record
//! already, so a record larger than a segment gets one of its own), the record is bound for
//! a new segment. `write_out` writes the buffers in order; before the first frame of a new
//! segment it fsyncs the active one (through the log's [`FsyncGate`]), creates the next one
//! (`.rlog.new` with its header, fsynced, renamed to `.rlog`, directory fsynced), and makes
//! it active. It returns the active file's fsync as a [`SyncHandle`] when bytes were written
//! since the last one it handed out, for the caller to run on any thread.
//!
//! A failed write, fsync, or file operation stops the log: that call returns the error, and
//! every later `append`, `write_out`, `retain`, `reset` and `truncate_after` returns
//! [`Error::Stopped`]. A failed fsync is never retried (the kernel may
//! have dropped the pages it could not write). Reads still work.
//!
//! # Reads
//!
//! `read(after, bytes_max)` serves records from the tail when the tail holds `after + 1`.
//! Older ones are read from the segment files: from the segment whose first lsn is the
//! greatest at or below `after + 1`, skipping frames by their lengths up to it, then record
//! after record, across segments, until the tail takes over or the budget is spent. Every
//! frame read is checked (length, checksum, decoding, lsn); a bad one is
//! [`Error::Corrupt`] naming its file and offset. Up to [`READ_CURSORS_MAX`] positions where
//! reads stopped are remembered, so a follower catching up from the files in batches does
//! not skip from its segment's start each time. The tail keeps the newest records within
//! `tail_bytes_max` (by [`LogRecord::size_hint`]), and always every record not yet written
//! out, which the files cannot serve yet.
//!
//! # Retention
//!
//! `retain(keep_from)` deletes the oldest segment while the log's bytes exceed
//! `retain_bytes_max`, unless it is the active one (or newer) or its last lsn is `keep_from`
//! or later: the caller pins what a follower or a snapshot still needs. Each deletion is
//! followed by a directory fsync, so a crash never leaves a later segment gone and an earlier
//! one present. `first_lsn` moves to the oldest segment left; reads before it return `None`.
//!
//! # Reset
//!
//! `reset(lsn, epoch)` writes `{lsn+1}.rlog.reset` (a header with base `lsn` and `epoch`)
//! and fsyncs it and the directory, deletes every segment, renames the `.reset` file to
//! `{lsn+1}.rlog` and fsyncs the directory. A crash before the `.reset` file is durable
//! leaves the old log whole (open removes a `.reset` file with a bad header); after, open
//! finishes the reset.
//!
//! # Truncate
//!
//! `truncate_after(lsn)` drops every record after `lsn` when they are all in the active
//! segment (a follower's records that its leader's history lacks, never applied): it writes
//! out what is pending, cuts the active file where the frame of `lsn + 1` starts and fsyncs
//! it (`sync_all`: the length is metadata). A crash in between leaves the file at either
//! length, both ending on a frame. It counts as a reset at `lsn`, which is durable when it
//! returns.
//!
//! # Recovery
//!
//! `open` removes `.rlog.new` files, finishes or forgets a reset, creates `{1}.rlog` (base 0,
//! epoch 0) in an empty directory, then reads every segment in order. Each header must be
//! good and its base equal the previous segment's last lsn (else a segment is missing:
//! corrupt at offset 0 of the later one). Reading frames at offset `o`:
//!
//! | found at `o`                                      | last segment     | other segments |
//! |---------------------------------------------------|------------------|----------------|
//! | a good frame of the next lsn                      | a record         | a record       |
//! | a good frame of another lsn                       | corrupt          | corrupt        |
//! | a bad frame, no good frame anywhere after it      | torn: cut at `o` | corrupt        |
//! | a bad frame, a good frame of a later lsn after it | corrupt          | corrupt        |
//!
//! A bad frame is a short frame header, a length of 0 or above `RECORD_BYTES_MAX`, a body
//! running past the end of the file, or a checksum mismatch: what an append cut short by a
//! crash leaves, whether the file ends early or the file system filled the rest with zeros.
//!
//! A good frame after `o` is one with a valid length, a later lsn (no more than the bytes
//! between could hold), a matching checksum and a body that decodes; it is searched for at
//! every offset, since a damaged length does not say where the next frame starts. Cutting
//! truncates the file at `o`, fsyncs it and logs a warning naming the file and offset.
//! Corruption fails `open` naming the file and the bad frame's offset. The tail is loaded
//! with the newest records read.
//!
//! # Invariants
//!
//! - The segments are contiguous: each one's base is the previous one's last lsn; the last
//!   one's last lsn is `last_lsn`; the first one's first lsn is `first_lsn`.
//! - The tail is contiguous and ends at `last_lsn`; on files it holds every record after the
//!   last one written out.
//! - A segment file under its `.rlog` name always has a whole, durable header.
//! - Every record in a sealed segment was fsynced before any record of a later segment was
//!   written.
//!
//! CAVEATS
//! - `open` reads each segment whole into memory to check it, so it needs memory for the
//!   largest segment (about `segment_bytes_max`, or one record larger than that), and time to
//!   read and decode every retained record.
//! - The torn-tail rule cannot tell a torn write whose later pages reached the disk before an
//!   earlier one (possible without an fsync) from damage: such a tail reads as corruption,
//!   and an operator truncates the file at the reported offset.
//! - The in-memory log counts bytes by `size_hint`, in virtual segments of
//!   `segment_bytes_max` estimated bytes, so its retention drops records in the same steps a
//!   file log would, by estimate rather than by encoded size.
//! - The log does not lock its directory; the node holds a lock file for its data directory.
//! - Only Unix (`pwrite`, directory fsync).
//!
//! [`LogRecord`]: crate::replication::LogRecord
//! [`LogRecord::size_hint`]: crate::replication::LogRecord::size_hint
//! [`Error::Corrupt`]: crate::Error::Corrupt
//! [`Error::Stopped`]: crate::Error::Stopped
//! [`FsyncGate`]: crate::storage::FsyncGate
//! [`SyncHandle`]: crate::storage::SyncHandle

mod files;
mod format;
mod recovery;
mod replog;

#[cfg(test)]
mod tests;

pub use files::READ_CURSORS_MAX;
pub use format::RECORD_BYTES_MAX;
pub use replog::{
    ReplicationLog, ReplogOptions, ReplogStats, RETAIN_BYTES_MAX_DEFAULT, SEGMENT_BYTES_MAX_DEFAULT,
    TAIL_BYTES_MAX_DEFAULT, UNREPLICATED_BYTES_MAX_DEFAULT,
};
