//! The simulator for the leaderless family (issue 13 points 16 and 17): the real leaderless
//! replicas under the faults every family meets (crashes, pauses, partitions, drops,
//! duplicates, delays, clock skew and drift), clients that send each operation to any node,
//! checkers for what `n`, `w`, `r` promise, and the lecture's anomalies as figures.
//!
//! - [`world`]: the nodes, their disks (`fsync = always` or `never`), the oracle that notes
//!   what each write was stamped with, and the quiet phase that reads every key once.
//! - [`clients`]: the workload (SET, DEL, GET or REPLIKV.SIBLINGS on a few keys).
//! - [`session`]: with `Config::sessions`, each client's session (issue 17 point 5): the
//!   causal floor per key its guarantee needs, as the server's front end keeps it.
//! - [`history`]: what clients did and saw, and the oracle's stamps.
//! - [`checks`]: the checkers and the anomaly counts, pure functions of the history.
//! - [`run`]: one seed to verdicts and figures, and the command that replays it.
//!
//! # What is checked
//!
//! (a) After the quiet phase every replica has the same Merkle root: with anti-entropy off
//! (the default), read repair alone makes them converge, so the quiet phase reads every key;
//! with it on (`Config::anti_entropy_ms`), the quiet phase reads nothing and anti-entropy
//! alone must make them converge, every node's tree must say what its store holds, and no
//! tombstone may be purged while another replica lacks it. (b) With
//! `w + r > n`, a read that begins after a write was acknowledged returns it or a newer one,
//! "newer" meaning what the protocol orders by: the version under `lww`, the causal context
//! under `siblings` (see [`checks`]: real time would fail correct runs whenever a skewed
//! clock lets an older write win, which is point 17's anomaly, counted instead). (c) No
//! acknowledged delete comes back. (d) No state or read holds more than the sibling bound,
//! and every concurrent write is either a sibling or was replaced by a write that had seen it
//! (or merged away by the bound, which the nodes count). (e) With sessions, each session
//! keeps its guarantee, read-your-writes or monotonic reads, whatever `w` and `r` (judged
//! with `fsync = always`; [`checks::sessions`]): a read never returns a write that one the
//! session wrote or read had replaced, nor nothing where no delete explains it.
//!
//! # What is counted (the lecture's anomalies)
//!
//! With `w + r <= n`, the reads that missed the newest acknowledged write. Under `lww`, the
//! acknowledged writes a later read found overwritten by one acknowledged before they began
//! (clock skew). With `fsync = never` (acknowledgements without durability) and crashes, the
//! restarts that came back without an acknowledged write they had held, and the reads that
//! then missed it (the lecture's "failing node"). With sessions, the reads of the sessions
//! promised nothing that showed either session anomaly, among those that could have. These
//! are figures, never failures.
//!
//! # The canaries
//!
//! Planted bugs (`leaderless::Canary`, never set by the server) that the checkers must catch
//! within 500 seeds: a coordinator that counts one replica's acknowledgement twice, a replica
//! that lets an older state overwrite its newer one, a read repair that writes the value the
//! coordinator read first instead of the newest; with anti-entropy on, an exchange that skips
//! the first differing subtree, and a read repair that leaves the Merkle tree as it was; with
//! sessions, a coordinator that ignores a session's floor, and a client session that forgets
//! its reads' contexts (planted in the simulated client). `run`'s tests replay a few fixed seeds that
//! catch each, found by a longer sweep (`replikv sim --mode leaderless --canary ...`).
//!
//! CAVEATS
//! - Clusters of `n` nodes only: every node replicates every key, so the placement ring and
//!   forwarding are not exercised here (the core's tests cover them).
//! - Hinted handoff is not simulated yet. Tombstone purges are judged only with anti-entropy
//!   on (its grace period is then short).
//! - The tree check reads the trees through `REPLIKV.DIGEST`, for the clients' keys only.
//! - The quiet phase reads each key once; a read repair that needs two reads to converge a
//!   key would fail (a) by design.
//! - Under `lww` a nil read is excused by any delete at least as new as the newest
//!   acknowledged write; the checker cannot tell which tombstone it saw.

pub mod checks;
pub mod clients;
pub mod history;
pub mod run;
pub mod session;
pub mod world;
