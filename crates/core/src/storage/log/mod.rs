//! The log engine: a log-structured [`Engine`](super::Engine) after Bitcask (Riak's storage
//! engine, Sheehy and Smith 2010).
//!
//! Every write appends a checksummed record to the newest segment file; an in-memory ordered
//! index, the keydir ([`Keydir`](super::Keydir)), maps each key to the position of its newest
//! record and to that record's metadata. A read is one index lookup and one `pread`, or no
//! `pread` at all when the value is in the bounded value cache. Segments are never modified
//! once sealed; compaction copies the live records of old segments into new ones, in small
//! steps between batches, and removes the old files.
//!
//! # Files
//!
//! The engine's files in a data directory are named so that they sort in the order recovery
//! reads them:
//!
//! - `{base:020}-{gen:05}.seg`: a segment, a sequence of records. `base` numbers the
//!   segments puts write (generation 0); compaction outputs take the greatest `base` of the
//!   sealed segments (damaged ones and ids removed since open included) and generations 1
//!   and up, so they sort after every input and before the active segment, whose `base` is
//!   greater. Exactly one segment, the newest, is active.
//! - `{base:020}-{gen:05}.hint`: a hint file beside a sealed segment, listing every record in
//!   it without values, so that opening does not read the values.
//! - `{base:020}-{gen:05}.compacting`: a compaction output not yet published.
//! - `MANIFEST`: the list of segments the engine expects to find, with each sealed one's
//!   length (see "Manifest"), and `MANIFEST.tmp`, a new manifest while it is being written.
//!
//! Other files (the node's `LOCK`, the replication log's directory) are not the engine's
//! business: it leaves them alone.
//!
//! # Record format
//!
//! All integers are little-endian. A record is a 45-byte header, the key, then the value:
//!
//! ```text
//! offset size field
//!      0    4 header_crc    crc32c of bytes 4..45 (body_crc through expire_at_ms)
//!      4    4 body_crc      crc32c of the key followed by the value
//!      8    1 kind          1 = value, 2 = tombstone (value_len is then 0)
//!      9    4 key_len       at most KEY_BYTES_MAX
//!     13    4 value_len     at most VALUE_BYTES_MAX
//!     17    8 millis        version: timestamp milliseconds
//!     25    4 logical       version: timestamp logical counter
//!     29    8 node          version: origin node id
//!     37    8 expire_at_ms  expiry deadline in Unix milliseconds, 0 = none
//!     45    - key           key_len bytes
//!      -    - value         value_len bytes
//! ```
//!
//! A put with a deadline of 0 is refused, since 0 means none. The header checksum covers the
//! body checksum, so a header that checks out also vouches for the body's expected checksum,
//! and for the record's length; the key, though, is covered by the body checksum only.
//!
//! # Hint file format
//!
//! One entry per record of the segment, in file order (a key overwritten within the segment
//! has several), then a 12-byte trailer:
//!
//! ```text
//! entry:   0  8 offset         the record's offset in the segment
//!          8 37 kind..expire   bytes 8..45 of the record's header, as above
//!         45  - key            key_len bytes
//! trailer: 0  8 segment_bytes  the segment's length when sealed
//!          8  4 crc            crc32c of every byte of the file before it
//! ```
//!
//! A hint is trusted only whole: the checksum must match, `segment_bytes` must equal the
//! segment's length, and the entries must tile the segment exactly (each offset the end of
//! the record before). Loading a hint indexes the same records in the same order as scanning
//! the segment would, so the keydir and the dead-byte counts come out the same.
//!
//! # Manifest
//!
//! A segment's absence says nothing by itself: a compaction that finished and an operator's
//! `rm` both leave one missing, and only the first is harmless. Nor does a segment's length:
//! one cut short at a record boundary (`truncate -s 0`, or after its tenth record) scans
//! cleanly, with fewer records. So the engine keeps a durable list of the segments it
//! expects, with the length of each sealed one, which never changes once sealed, and open
//! compares the directory with it. All integers are little-endian:
//!
//! ```text
//!  offset      size  field
//!       0         8  magic          "RKVMANIF"
//!       8         4  version        2
//!      12         4  segment_count  n, 1..=MANIFEST_SEGMENTS_MAX
//!      16         4  retired_count  r, 0..=MANIFEST_SEGMENTS_MAX
//!      20  20*(n-1)  sealed         each base (8), gen (4), bytes (8): a sealed segment
//!                                   and its length in bytes when it was sealed
//!    20*n        12  active         base (8), gen (4): generation 0, no length (it
//!                                   grows); the n listed ids ascend strictly
//! 20*n+12      12*r  retired        each base (8), gen (4), strictly ascending: inputs of
//!                                   the last finished compaction, or a rewritten damaged
//!                                   segment, whose files may still be on disk; none of
//!                                   them listed
//!       -         4  crc            crc32c of every byte before it
//! ```
//!
//! Version 1, written before lengths were kept, differs only in its `n` listed entries: ids
//! alone (base (8), gen (4)), `20 + 12*(n + r) + 4` bytes in all. It is still read: its
//! sealed segments' lengths are taken as found at that open, unchecked that once, with one
//! warning, and the next manifest written (at the next seal, compaction commit or removal of
//! a rewritten segment) is version 2 and records them. Open does not rewrite the manifest for
//! this: a crash before that next write reads version 1 again, no worse off than before.
//!
//! The manifest is trusted whole or not at all: a length, checksum, magic, version or order
//! that does not check out is [`Error::Corrupt`](crate::Error::Corrupt) naming `MANIFEST`,
//! never guessed at. It is replaced, never edited: the new one is written to `MANIFEST.tmp`,
//! fdatasynced, renamed over `MANIFEST`, and the directory fsynced, so a crash leaves the
//! old list or the new one. It is written only when the set of segments changes, at a seal
//! and when a compaction or a rewrite commits, never on the path of a put or a get. A segment
//! is listed only once its file's name is durable (the directory is fsynced first), so a
//! listed segment that is missing is always damage, never a crash; and it is listed as
//! sealed, with its length, only once its bytes are fsynced (a seal fsyncs the segment before
//! the manifest that records its length; compaction outputs are fsynced as they seal), so a
//! listed sealed segment of another length is damage too.
//!
//! # Writes
//!
//! `put` encodes the record into the active segment's write buffer (no system call), counts
//! its bytes as live in that segment, and points the keydir at it; the record it replaces
//! counts as dead in its own segment. `get` returns a cached value as it is (see "Value
//! cache"); it reads any other record from the buffer if it is buffered, else with `pread`,
//! and checks the header and body checksums of every record it reads. `flush` writes the
//! buffer and then, per [`FsyncPolicy`], fdatasyncs the segment: `Always` on every flush,
//! `IntervalMs(n)` once `n` ms (by `flush`'s `now_ms`) have passed since the last one,
//! `Never` not at all. `write_out` is `flush` in two halves: it writes the buffer and, when
//! the policy calls for an fsync, hands it to the caller as a `SyncHandle` (a shared handle
//! on the segment's file), so that the node's syncer thread can fsync one batch while the
//! next is stepped. The engine counts those bytes as synced at once; if the caller's fsync
//! fails, the caller stops the node, so the engine is never asked again.
//!
//! When a record would take the active segment past `segment_bytes_max`, the segment is
//! sealed first, whatever the policy: its buffer written, a new active segment of `base + 1`
//! created (empty), then the seal's commit: the sealed segment fdatasynced, the directory
//! fsynced, a manifest listing the new segment, and the sealed one with its length, written,
//! and the new segment's `SYNCED` record. Recovery trusts sealed segments to be whole, which
//! only an fsync before the manifest records the length makes true. Puts reach the new
//! segment's file only after the manifest lists it (until then they wait in its buffer,
//! readable there), so a crash before that leaves it empty and unlisted, which open
//! recognises (and so does the adoption of a directory without a manifest: an empty newest
//! segment is such a seal's, and the one before it, whose tail may be torn, is the newest).
//! Where another log makes the writes durable (given an executor, an engine that keeps the
//! `SYNCED` file: one that `write_out_unsynced` has written to under an fsync policy other
//! than `never`, a replicating node's, or one opened on a directory that has the file, until
//! its first `write_out`), the commit runs on the executor ("Commit off the caller's thread"):
//! the put that sealed goes on at once, and so do the batches after it. The sealed segment's
//! hint file is not written then, on the put's
//! path: it waits in memory and `maintain` writes it between batches, a budget's worth at a
//! time, without an fsync. Open
//! checks a hint whole before it trusts it, so a hint that a crash cut short, or one never
//! written, costs a scan of its segment, never data. (Compaction outputs get their hints,
//! fsynced, as they seal.)
//!
//! A failed write or fsync stops the engine: the call returns the I/O error, and every later
//! `put`, `flush` and `maintain` returns [`Error::Stopped`](crate::Error::Stopped). It is
//! never retried: after a failed fsync the kernel may have dropped the dirty pages, and a
//! retry that succeeds would claim data durable that is gone. Reads still work.
//!
//! ## Write-behind
//!
//! A replicating node's engine is not its own write-ahead log (its replication log is, see
//! [`super::synced`]), so it fsyncs its active segment rarely: when the log asks, and when
//! the segment seals. Left alone, the kernel keeps up to a whole segment (64 MiB by default)
//! of its pages dirty, and the fsync that seals it then waits for all of them: 40 ms in a
//! benchmark on this project's machine, on the thread that steps the replica. So every time
//! another `WRITE_BEHIND_BYTES` (1 MiB) of a segment are written, the engine asks the kernel
//! to start writing them back (Linux `sync_file_range` with `SYNC_FILE_RANGE_WRITE`, which
//! does not wait for the writes, only, when the device's queue is full, for room in it) and
//! the seal's fsync waits for about that much. This promises
//! nothing: durability is still the fsync's alone, and a failure to start writeback is logged,
//! not fatal, since the fsync that matters reports its own. It applies to every segment the
//! engine writes (compaction outputs too); elsewhere than Linux it does nothing.
//!
//! # Recovery
//!
//! `open` first removes a `MANIFEST.tmp` (a manifest write that never finished) and reads
//! `MANIFEST`. It then decides, for every segment id the manifest names or the directory
//! holds, before it changes anything:
//!
//! | files found for the id                          | decision                             |
//! |-------------------------------------------------|--------------------------------------|
//! | listed, `.seg` there, of the recorded length    | load it (its hint too, if good)      |
//! | listed, only `.compacting`, of recorded length  | a committed output: rename to `.seg` |
//! | listed sealed, its `.seg` or `.compacting` of   | refuse: changed (cut short, appended |
//! | another length than the manifest recorded       | to, or replaced)                     |
//! | listed, neither there                           | refuse: missing                      |
//! | listed, both `.seg` and `.compacting` there     | refuse the `.compacting`             |
//! | retired: `.seg`, `.hint` there                  | an input already replaced: remove    |
//! | unlisted `.compacting` (and its `.hint`)        | an uncommitted output: remove        |
//! | unlisted empty `.seg`, gen 0, base active + 1   | an interrupted seal: remove          |
//! | any other unlisted `.seg`                       | refuse: not listed                   |
//! | `.hint` alone, unlisted                         | a removed segment's hint: remove     |
//!
//! The active segment has no recorded length (it grows, and its torn tail is cut below), nor
//! has a sealed segment that a version-1 manifest listed. A refusal is
//! [`Error::Inconsistent`](crate::Error::Inconsistent) naming the file and the manifest (and,
//! for a changed segment, both lengths: "…-00000.seg is 4096 bytes but …/MANIFEST recorded
//! 65519 when it was sealed: cut short or replaced; …"), and leaves the directory as it was,
//! hints included: an operator restores the
//! file, or moves the stray one away. Every removal is of a file recognised positively, by
//! its extension or the manifest's retired list, or an empty segment, never for being
//! unaccounted for; a hint holds no values, so removing one never loses data.
//!
//! A directory without a `MANIFEST` is new (empty: a manifest is written with the first
//! segment) or was written before the engine kept one: it is adopted with a warning, by the
//! rules of that format (`.compacting` files and hints without a segment removed, the
//! segments present taken as the whole, but for an empty newest segment after another, an
//! interrupted seal's, which is removed), and a manifest listing them, with the lengths
//! found, is written.
//!
//! The engine then loads the listed segments in name order, later records overriding
//! earlier ones. A sealed segment loads from its hint if that is good (a bad hint
//! is logged and ignored), else by a strict scan. The newest segment is always scanned, and
//! its end may be an append a crash interrupted, a torn tail. While scanning, at offset `o`:
//!
//! | found at `o`                             | newest segment        | sealed segment |
//! |------------------------------------------|-----------------------|----------------|
//! | fewer bytes left than a header           | torn: cut at `o`      | corrupt        |
//! | header checksum mismatch, zeros to EOF   | torn: cut at `o`      | corrupt        |
//! | header checksum mismatch, anything else  | corrupt               | corrupt        |
//! | header fields invalid (checksum good)    | corrupt               | corrupt        |
//! | record extends past EOF                  | torn: cut at `o`      | corrupt        |
//! | body checksum mismatch, record ends at EOF | torn: cut at `o`    | corrupt        |
//! | body checksum mismatch, more follows     | corrupt               | corrupt        |
//!
//! An engine whose writes another log makes durable (a replicating node's) keeps a `SYNCED`
//! file with its active segment's fsynced length (`synced.rs`): in the newest segment, any
//! bad record at or past that length is cut as a torn tail, whatever follows it; before it, a
//! torn tail is corruption too, and so is a newest segment shorter than that length.
//!
//! Cutting truncates the file at `o`, fdatasyncs it and logs a warning naming the file and
//! offset. Corruption fails `open` with [`Error::Corrupt`](crate::Error::Corrupt) naming the
//! file and the record's offset: an operator must look, nothing is skipped in silence. A
//! record whose header checks out but whose body does not is corruption too, even in a
//! sealed segment whose length the header vouches for: the key is covered by the body's
//! checksum only, so the record may name another key, and indexing it could hide a newer
//! record of its real key (serving an older one) or kill a good record of the key it names.
//! Damage found while the node runs is handled instead (see "Damage"). The
//! newest segment then takes appends after its last good record (a manifest always lists an
//! active segment last; only in an adopted directory can the newest be a compaction output,
//! and then a new active segment is started instead).
//!
//! # Compaction
//!
//! `maintain(budget)` starts a compaction when the dead bytes of the sealed segments not
//! marked damaged exceed both `compaction_dead_ratio` of their bytes and
//! `compaction_dead_bytes_min`. A compaction takes every sealed segment not marked damaged
//! (the set S) and, a budget of bytes per call:
//!
//! 1. reads S's records in order and copies one only if the keydir still points at exactly
//!    that segment and offset, then points the keydir at the copy. Outputs are written as
//!    `{M}-{g}.compacting`, where `{M}-{g-1}` is the greatest of every sealed segment (damaged
//!    ones too) and every id removed since open, so that they sort after all of them, and
//!    rotate at `segment_bytes_max` (each one sealed, with its hint, as it fills). A live
//!    record whose body fails its checksum is not copied but left where it is, and a header
//!    that fails its check ends the reading of that input (see "Damage").
//! 2. when S is read: seals the last output, writes and fdatasyncs the active segment (a
//!    record that was skipped was replaced by a newer one that may be only in the active
//!    buffer, and must be durable before the old one goes), fsyncs the directory so that
//!    the outputs' names are durable, then commits: writes a manifest listing the non-empty
//!    outputs in place of the inputs that hold no live record, with those as its retired
//!    list, each output with its length (sealed: written and fsynced). Then it renames the
//!    outputs to `.seg`, removes an empty output and the retired
//!    segments and hints, and fsyncs the directory. The next manifest written (at the next
//!    seal) drops the retired list. An input that still holds live records is damaged: it
//!    stays listed and open, and is marked damaged.
//!
//! Puts carry on meanwhile: they go to the active segment, newer than anything compaction
//! reads, so the "still points at exactly this record" check stays right, and a seal during
//! a compaction lists the new segment but none of the outputs. A crash before the commit
//! leaves unlisted `.compacting` files, removed on open, and S listed and whole. A crash
//! after it leaves listed outputs, some perhaps still `.compacting` (open renames them), and
//! some of S, retired (open removes them). Either way open loads one consistent set: S, or
//! the outputs, which hold copies of S's live records and sort where S did, after every
//! older segment and before every newer one.
//!
//! An input kept for its damage loads before the outputs, which sort after every sealed
//! segment. That gives the same keydir: an output holds only records that were the newest
//! of their keys when copied, so the kept input's records of those keys are older, and
//! the records the kept input still holds live have no copy in any output. A damaged segment
//! left out of S holds only dead records of the keys S's live records are, for the same
//! reason, which is why the outputs may sort after it.
//!
//! ## Commit off the caller's thread
//!
//! A compaction's commit (step 2's file work once the last output is written out: its fsync
//! and hint, the active segment's fsync and `SYNCED` record, the directory fsync, the
//! manifest, the renames and removals, the last directory fsync) is about ten fsyncs in
//! series, tens of milliseconds on a busy disk; a seal's (see "Writes") about five. With
//! an [`Executor`] (`LogEngine::set_executor`; a node gives one that starts a thread: the core
//! starts none itself) the engine plans a commit on the caller's thread (every path, byte and
//! length decided, the manifest encoded, the keydir already pointing at the outputs, the new
//! segment already active) and hands it to the executor, which runs it in the same order as
//! in place, so that the crash tests of every step check the order it follows. A seal goes to
//! the executor only where another log makes the writes durable; an engine that is its own
//! write-ahead log seals in place. One commit at a time; its result comes back over a
//! channel, and a job the executor drops unrun (or that panics) stops the engine.
//! Meanwhile:
//!
//! - puts and gets go on: the keydir points at the outputs, whose open files read the same
//!   whatever their names; a retired input is read by nothing. During a seal's commit the
//!   new segment's records stay in its buffer: `write_out_unsynced` writes nothing;
//! - anything that would race with the commit's files waits for it first: the next seal, a
//!   manifest written by a rewrite, the `SYNCED` file (so `sync_written`, and a `write_out`
//!   that stops keeping it), writing the active segment during a seal's commit (`write_out`,
//!   `sync_written`, the end of a compaction or a rewrite), a `flush`; no compaction starts
//!   (but one whose output names are used up seals first, and may start while that seal
//!   commits), and no pending hint is written (a compaction output's, written as it seals, is
//!   not pending);
//! - `maintain` and the write-outs look whether it is done (without waiting) and then apply
//!   its in-memory side: the outputs' new paths, the retired inputs forgotten (their files
//!   closed on the executor: closing an unlinked file frees its blocks, which took
//!   20 ms), the `SYNCED` record;
//! - a failure stops the engine as a failure in place would: the next call returns it;
//! - dropping the engine waits for it, so no job changes the directory after the engine
//!   is gone.
//!
//! So a call that waits (above) can take as long as the commit under way: rare, since
//! commits are one per segment sealed or compaction, and each is short with write-behind.
//!
//! A compaction's steps copy a budget of bytes each (a dead record costs its header and key,
//! which is what is read of it; a live one its whole length), so a node, which passes a small
//! budget between batches, holds a waiting batch for about that much copying.
//!
//! # Damage
//!
//! A flipped byte in a sealed segment must not take the node down, nor lose a record that
//! is whole. The engine finds damage in four places: `get` (which returns
//! [`Error::Corrupt`](crate::Error::Corrupt) naming the file and offset, as before), the scan
//! of a sealed segment at open, compaction, and the rewrite below. Each marks the segment
//! damaged, an in-memory flag (`get` takes `&self`, so the flag is a `Cell`). Open,
//! compaction and the rewrite also report each damaged live record once, by key, through
//! `take_damaged`, which the replica polls after every `maintain`; the key-value store lists
//! the key for repair (or stops the node, under `corruption = "stop"`). `maintain` fails only
//! on I/O, never on damage.
//!
//! A damaged record stays indexed where it is, so that `get` keeps reporting it, until a put
//! replaces it: the repair, a healthy replica's record put over it. A damaged record that is
//! dead is not needed, and nothing reports it.
//!
//! Compaction leaves damaged segments out. Instead `maintain`, after compaction and a budget
//! at a time, rewrites one: it walks the keydir in key order for the records that point into
//! the segment (each key visited costs `REWRITE_KEY_VISIT_BYTES` of the budget, so a step
//! ends however few records it finds), and puts each again, read and checked through its
//! position, as the same record (version, key, value or tombstone, deadline) into the active
//! segment, the keydir following. A record that fails its check is noted (reported once)
//! and left. The walk stops early once only damaged records are left live. A segment with
//! no live record is then removed as a compaction input is: the active segment is written
//! and fdatasynced (the moved records must be durable before the originals go), a manifest
//! retiring the segment is committed, and its file and hint are removed. A segment still
//! holding damaged live records waits, with its dead bytes, until a repair replaces them;
//! the next `maintain` after that rewrites it again and removes it, and the directory holds
//! no damage. An active segment in which a read found damage is sealed at the next
//! `maintain` (left active, the next open's scan of the newest segment would refuse it, a bad
//! record with more after it being no torn tail), and then rewritten as any; an input of the
//! compaction under way waits until the compaction is over. A compaction input that keeps
//! live records no read found damaged (a record whose damaged key reads as another, dead
//! key's) is marked damaged at the commit, and its rewrite, which reads through the keydir,
//! reports it under its own key.
//!
//! A crash during a rewrite is safe as a compaction is: the moved records sort after the
//! originals, so open loads the same keydir whether or not they reached the disk, and the
//! segment goes only after the manifest that retires it.
//!
//! # Value cache
//!
//! The keydir may hold a key's value beside its record's position, so that a `get` of it makes
//! no system call and computes no checksum. `value_cache_bytes_max` (256 MiB by default, 0
//! caches nothing) bounds the cached values' bytes, each counting its length:
//!
//! - `put` caches a copy of the new value if it fits (a copy, because the caller's bytes may
//!   be a slice of a larger buffer, a connection's read buffer, that a long-lived reference
//!   would keep alive whole; the keydir copies new keys for the same reason). The value it
//!   replaces leaves the cache, and the new one is weighed again after if it did not fit
//!   before, so that rewriting a cached key in a full cache keeps it cached unless the new
//!   value is longer. A tombstone caches nothing and frees what its key had cached.
//! - `open` caches the values it reads, which are those of the segments it scans (the newest,
//!   and sealed ones without a good hint), in load order while they fit; a value a later
//!   record overrides leaves the cache as on a put. Segments loaded from hints are not read, so
//!   their values are cached only when put again.
//! - `get` of an uncached value reads it from disk and does not cache it. `Engine::get` takes
//!   `&self`: caching there would need interior mutability, or `&mut self` through the trait,
//!   the memory engine and the key-value store's read paths. Caching on writes and at open
//!   needs neither, and covers every value written since the engine opened, while it fits.
//! - A full cache evicts nothing: it takes nothing more until a cached value leaves it, when
//!   its key is rewritten or deleted. What it holds is what came first, not what is read most.
//! - Compaction moving a record keeps its cached value: the same bytes, at a new position.
//!
//! A cached value needs no checksum. The checksum guards bytes on their way through the disk,
//! and a cached value never made that trip: after a put it is the very bytes the record's
//! checksum was computed from, and after a scan at open it is the bytes that checksum was
//! checked against as they were read. Memory is trusted here as it is for the keydir.
//!
//! # Invariants
//!
//! - The active segment has generation 0 and a greater base than every other segment.
//! - Between calls, and no commit under way on the executor, the manifest on disk lists exactly
//!   the open segments but the outputs of a compaction under way, the active segment last, every other with its file's length
//!   (after an open of a version-1 manifest, the engine's copy has the lengths found, and the
//!   disk gets them at the next write); its retired ids are never listed, and not reused by
//!   a later segment in this run (bases and generations only grow, and outputs are named
//!   above every id removed since open and every id the opened manifest retired; across
//!   several opens a removed id may come back, harmlessly, since its files are gone).
//! - Every segment's live plus dead bytes equal its length, buffer included; the keydir points
//!   only at live bytes. An input of a finished compaction that keeps live bytes is marked
//!   damaged and stays listed; the others are removed. No segment with live bytes is removed.
//! - A damaged record is reported through `take_damaged` at most once per open, and only while
//!   the keydir points at it (when it is found).
//! - A buffered record never straddles the file and the buffer: buffers are written whole.
//! - A cached value equals its record's value; the cached values' lengths add up to the
//!   cache's count, which never exceeds `value_cache_bytes_max`. Tombstones cache nothing.
//!
//! CAVEATS
//! - A directory without a `MANIFEST` is adopted, not refused: a segment deleted before the
//!   upgrade, or together with the manifest, is not noticed. Deleting `MANIFEST` is how an
//!   operator tells the engine to take the directory as it is.
//! - An older build ignores `MANIFEST`: after it changes the segments, this build refuses the
//!   directory (a segment missing, unlisted or of another length) until `MANIFEST` is
//!   removed to adopt it again. Loud, not lossy. A build that reads only manifest version 1
//!   refuses a version-2 `MANIFEST` as corrupt (its version); removing it adopts the
//!   directory, lengths unchecked. `STORAGE_FORMAT_VERSION` is not raised for the manifest:
//!   it is what peers compare, and the manifest never leaves its directory.
//! - Crash safety assumes what the fsyncs promise and nothing more; the tests copy the
//!   directory at each step, which models a crash that keeps every write made before it, not
//!   one that loses writes not yet fsynced.
//! - A seal costs two fsyncs more than before the manifest (the manifest and the directory
//!   again), and rewrites the whole manifest: 20 bytes per sealed segment,
//!   `MANIFEST_SEGMENTS_MAX` at most. Past the limit, a seal fails and stops the engine.
//! - Open names only the first file the manifest does not account for, in id order: a
//!   directory with several problems shows them one per attempt.
//! - The manifest records lengths, not checksums: a listed sealed segment replaced by other
//!   bytes of the same length (a flipped byte, another file cut to fit) is found only by the
//!   record checksums, at a scan, a `get` or a compaction; one loaded from a good hint is
//!   not read at open.
//! - The lengths of a version-1 manifest's segments are taken as found, unchecked, at the
//!   first open by this build: a segment cut short at a record boundary before the upgrade
//!   stays lost in silence. So does one cut in a directory adopted without a `MANIFEST`.
//! - The active segment has no recorded length: cut at a record boundary, it loses the
//!   records after the cut in silence, as a crash loses unsynced ones. Its torn tail is cut
//!   on purpose, so checking its length would need a durable manifest write per flush.
//! - Tombstones are copied by compaction as long as they are the newest record: purging them
//!   needs every replica to have them, which only the replication layer knows.
//! - A key's newest record is copied even if its deadline passed: expiry is the key-value
//!   layer's business, which deletes expired keys with tombstones.
//! - A torn append whose header is partly written and partly zeros reads as corruption, not
//!   a torn tail (the rule accepts only all-zero tails, which no damaged header matches); an
//!   operator truncates the file at the reported offset.
//! - A sealed segment loaded from its hint is not read at open: damage in it is found by the
//!   `get` or the compaction that reads the record.
//! - Any damaged record in a sealed segment without a good hint still fails `open` naming the
//!   file and offset, so such a node stops at every start until an operator acts: after a
//!   bad header the records cannot be found without the hint, indexing the ones before it
//!   alone could serve an older record of a key whose newest is past the damage, and a bad
//!   body may hide a damaged key (a key checksum in the header would need a new format). Restoring the file, or removing the `MANIFEST` and the
//!   segment to adopt the rest and repairing from a replica, is the operator's call.
//! - Which segments are damaged is kept in memory only: after a restart a damaged segment
//!   loaded from its hint is not known damaged until a `get` or a compaction finds the damage
//!   again, and damage not yet repaired is reported again then.
//! - A rewrite walks the whole keydir per damaged segment, in steps: O(keys), acceptable
//!   because damage is rare; several damaged segments are rewritten one after the other.
//! - On a node with no replica to repair from, a damaged segment stays for good, its dead
//!   bytes with it: compaction leaves it out.
//! - Compaction and the rewrite read the disk even for a cached value, so a damaged record
//!   whose value `get` serves from the cache is reported and listed for repair all the same.
//! - Sealing a segment (in `put`) and finishing a compaction (in `maintain`) fsync whatever
//!   the policy. With write-behind each fsync waits for about a MiB, but in place (without
//!   an executor, or a seal of an engine that is its own write-ahead log) the call
//!   waits for five to ten fsyncs in series; with it, a later call may wait for the commit
//!   (see "Commit off the caller's thread"): every `sync_written` does, which a leader whose
//!   log is held over its bound calls on every tick.
//! - Adopting a directory without a manifest takes an empty newest segment for an interrupted
//!   seal's and removes it, so the segment before it is scanned as the newest: damage in its
//!   last record is then cut as a torn tail, not refused. Without a manifest the two cannot be
//!   told apart.
//! - While a seal commits on the executor, the new segment's records are only in memory (the
//!   replication log holds them, and a restart replays them), up to `segment_bytes_max` of
//!   them if the commit took that long.
//! - Hints wait for `maintain`, which the node calls only when no request waits: after a busy
//!   period ended by a stop, or after an open (which rebuilds the hint only of the segment it
//!   makes active), segments without hints are scanned at the next open.
//! - The value cache trades memory for reads: up to `value_cache_bytes_max` of values stay in
//!   memory from the moment they are written, whether or not they are ever read, and every
//!   keydir entry is 32 bytes larger for the cache's handle, cached or not.
//! - The cache counts value lengths, not the allocator's overhead per value, which matters
//!   most for small values.
//! - The cache is not an LRU and `get` does not fill it: after a restart, values in segments
//!   loaded from hints stay uncached until written again, however often they are read.
//! - Damage on disk to a cached record is not seen by `get`, which does not read it; the
//!   compaction that copies the record, or a scan at open, finds it.
//! - The engine does not lock its directory: two engines opened on one directory corrupt it.
//!   The node takes a lock file (`LOCK`) before it opens the engine; other callers must too.
//! - Only Unix (`pread`, directory fsync).

mod cache;
mod commit;
mod compaction;
mod damage;
mod engine;
mod format;
mod manifest;
mod options;
mod physical;
mod reader;
mod recovery;
mod synced;

#[cfg(test)]
mod tests;

pub use commit::Executor;
pub use engine::LogEngine;
pub use format::decode_records;
pub use options::{FsyncPolicy, LogOptions, VALUE_CACHE_BYTES_MAX_DEFAULT};
pub use physical::{decode_extent, Compacted, PhysicalRole};
