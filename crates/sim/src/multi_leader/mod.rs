//! The simulator for the multi-leader family (issue 16, point 7): datacenters of real
//! multi-leader nodes (a single-leader cluster inside each, and the exchange of changes
//! between their leaders) under the faults every family meets, plus partitions that cut a
//! whole datacenter off from the others; clients attached to one datacenter each; checkers
//! for what the conflict rule promises.
//!
//! - [`world`]: the datacenters, their nodes, disks, logs and clocks, the oracle that notes
//!   what each write was stamped with, and the quiet phase.
//! - [`clients`]: the workload (SET, DEL, GET or REPLIKV.SIBLINGS on a few keys), each client
//!   writing to its own datacenter's leader and following `-READONLY` to it; with
//!   `follower_reads`, in a session ([`crate::session`]) that reads from any node of its
//!   datacenter.
//! - [`checks`]: the checkers, pure functions of the history, the stamps, the final states
//!   and the conflict and rollback logs.
//! - [`sessions`]: the session checkers, pure functions of the history.
//! - [`run`]: one seed to verdicts and figures, and the command that replays it.
//!
//! # What is checked
//!
//! (a) After the quiet phase (every fault healed, the exchange left to finish) every node of
//! every datacenter holds the same state of every client key (namespace 0; each datacenter's
//! conflict log and applied positions, namespace 2, legitimately differ). (b) Under `lww`,
//! every acknowledged write a final state no longer holds was overwritten by a write that
//! had seen it (its stamped context covers the write's dot), or lost a conflict to a write of
//! a higher version and is listed as lost in some node's conflict log. (c) Under `merge`,
//! every acknowledged write no other write had seen is a live value of the final state
//! exactly once (what a read joins). (d) Under `app`, every such write, deletes included, is
//! among the final siblings. Acknowledged writes cut by a failover inside a datacenter whose
//! acknowledgements do not survive one (`async`, or too few semi-sync followers) are excused
//! when a rollback log holds them, and counted. (e) With `follower_reads`, each session keeps
//! its guarantee (read-your-writes, monotonic reads or consistent prefix) in its
//! datacenter's log, judged from the history where acknowledged writes survive a failover;
//! a read that returns another datacenter's write is never called stale (it may win, join
//! or stand beside later), so the checkers are sound, not complete ([`sessions`]).
//!
//! # What is counted
//!
//! Operations and faults (as every family), acknowledged writes, those no other write had
//! seen (the conflicts' raw material), the `lww` losers (each logged), the writes rolled back
//! inside a datacenter, and the exchange's counters: changes shipped and received, conflicts
//! detected, shipments held back by the clock-skew allowance, shipments refused; with
//! `follower_reads`, how often the sessions of each guarantee (none included) saw each
//! anomaly, and the session reads answered `-TRYAGAIN`.
//!
//! # The canaries
//!
//! Planted bugs ([`replikv_core::multi_leader::Canary`], never set by the server) that the
//! checkers must catch within 500 seeds: under `lww`, a leader that keeps the arriving state
//! instead of the highest version (the outcome depends on arrival order: (a) or (b) fails);
//! under `lww`, losers not written to the conflict log ((b) fails); under `merge`, a leader
//! that applies the arriving values a second time as its own writes ((c) fails, and (a)).
//! `run`'s tests replay a seed that catches each, found by a sweep
//! (`replikv sim --mode multi-leader --canary ... --seeds 0..500`). The single-leader session
//! canaries are planted here too (`Config::session_canary`): `SessionNoWait` in the replica
//! inside every datacenter (a follower answers a session read at once), `TokenForgetsRead`
//! in the clients' sessions; the session checkers must catch them.
//!
//! CAVEATS
//! - Partitions are one at a time: one node, or one datacenter, cut from the rest.
//! - Keys never expire and read-modify-writes are not issued (the family refuses them).
//! - Plain reads (no `follower_reads`) are recorded but not judged: a datacenter's reads are
//!   eventually consistent by design, and the final states are what the checkers judge.
//! - A session never reads in another datacenter (the server refuses a token from one).
//! - Logs are kept whole through a run, so a datacenter never falls behind the retained log
//!   (the core cannot bring one up to date then; see its caveats).
//! - The conflict logs are read up to `CONFLICTS_LISTED_MAX` entries per key and node.

pub mod checks;
pub mod clients;
pub mod run;
pub mod sessions;
pub mod world;
