//! What a benchmark phase asks of the server: the operation mix of each workload and test, and the
//! commands each operation sends.
//!
//! A phase draws its operations one at a time: a uniform number in `[0, 1)` picks the operation
//! kind from the phase's [`Mix`] (cumulative shares, in the order listed), and the key
//! distribution ([`super::dist`]) picks the record. The mixes are YCSB's core workloads:
//!
//! | workload | mix | YCSB's default distribution |
//! | --- | --- | --- |
//! | `a` (update heavy) | 50% read, 50% update | zipfian |
//! | `b` (read mostly) | 95% read, 5% update | zipfian |
//! | `c` (read only) | 100% read | zipfian |
//! | `d` (read latest) | 95% read, 5% insert | latest |
//! | `f` (read-modify-write) | 50% read, 50% read-modify-write | zipfian |
//! | `write-only` | 100% update | zipfian |
//!
//! and redis-benchmark's tests `set`, `get`, `incr`, `mset` (one operation kind each, uniform
//! keys as redis-benchmark's `-r` gives). The load phase stores every record once with `load`
//! operations.
//!
//! Each operation kind is a fixed list of [`Step`]s, one per round trip: a read is `GET`, an
//! update or insert is `SET`, a read-modify-write is `GET` and then, after its reply, `SET` of the
//! same key (both on the writer: the read is part of a write). A step that writes is followed in
//! the same round by `WAIT n timeout` when `--wait` is given, except in the load phase, which
//! prepares data and measures nothing durable. Reads go to the reader endpoints, writes to the
//! writer.
//!
//! Keys are `key:` and the record number in 12 digits (redis-benchmark's form); `incr` uses
//! `counter:` keys so that it never meets a stored value that is not a number. `mset` writes
//! [`MSET_KEYS`] consecutive records starting at the drawn one.
//!
//! CAVEATS
//! - No YCSB workload E: there are no range scans to measure yet.
//! - A read-modify-write writes a fresh value; it does not derive it from what it read, and
//!   nothing checks that no other writer came between (neither does YCSB).

use clap::ValueEnum;

/// Records one `mset` operation writes, as in redis-benchmark.
pub const MSET_KEYS: u64 = 10;

/// A YCSB-style workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// 50% read, 50% update.
    #[value(name = "a")]
    A,
    /// 95% read, 5% update.
    #[value(name = "b")]
    B,
    /// 100% read.
    #[value(name = "c")]
    C,
    /// 95% read, 5% insert; reads favour the newest records.
    #[value(name = "d")]
    D,
    /// 50% read, 50% read-modify-write.
    #[value(name = "f")]
    F,
    /// 100% update.
    #[value(name = "write-only")]
    WriteOnly,
}

/// A redis-benchmark-like test: one command, uniform keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Test {
    /// SET key value.
    Set,
    /// GET key.
    Get,
    /// INCR counter:key.
    Incr,
    /// MSET of ten keys.
    Mset,
}

/// What one operation does; each kind is reported apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    /// The load phase's `SET` of one record, never followed by `WAIT`.
    Load,
    /// A YCSB read: `GET`.
    Read,
    /// A YCSB update: `SET` of an existing record.
    Update,
    /// A YCSB insert: `SET` of a new record past the newest.
    Insert,
    /// A YCSB read-modify-write: `GET`, then `SET` of the same key.
    ReadModifyWrite,
    /// redis-benchmark's `SET`.
    Set,
    /// redis-benchmark's `GET`.
    Get,
    /// redis-benchmark's `INCR`.
    Incr,
    /// redis-benchmark's `MSET`.
    Mset,
}

/// A command an operation sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cmd {
    /// `GET key`.
    Get,
    /// `SET key value`.
    Set,
    /// `INCR counter:key`.
    Incr,
    /// `MSET key value ...` over [`MSET_KEYS`] records.
    Mset,
    /// `WAIT replicas timeout`, after a write.
    Wait,
}

/// Where a step's command goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The first endpoint, which takes every write.
    Writer,
    /// The next endpoint in round-robin order.
    Reader,
}

/// One round trip of an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// The command sent.
    pub cmd: Cmd,
    /// Where it goes.
    pub target: Target,
}

/// Operation kinds with their shares (summing to 1), drawn in the order listed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mix(pub &'static [(OpKind, f64)]);

/// A read: `GET` on the next reader.
const GET_READER: Step = Step { cmd: Cmd::Get, target: Target::Reader };
/// A read-modify-write's read: `GET` on the writer.
const GET_WRITER: Step = Step { cmd: Cmd::Get, target: Target::Writer };
/// A write: `SET` on the writer.
const SET_WRITER: Step = Step { cmd: Cmd::Set, target: Target::Writer };

impl Workload {
    /// The workload's operation mix.
    pub fn mix(self) -> Mix {
        use OpKind::*;
        Mix(match self {
            Workload::A => &[(Read, 0.5), (Update, 0.5)],
            Workload::B => &[(Read, 0.95), (Update, 0.05)],
            Workload::C => &[(Read, 1.0)],
            Workload::D => &[(Read, 0.95), (Insert, 0.05)],
            Workload::F => &[(Read, 0.5), (ReadModifyWrite, 0.5)],
            Workload::WriteOnly => &[(Update, 1.0)],
        })
    }

    /// The key distribution YCSB gives the workload when `--distribution` is not set.
    pub fn default_distribution(self) -> super::dist::Distribution {
        match self {
            Workload::D => super::dist::Distribution::Latest,
            _ => super::dist::Distribution::Zipfian,
        }
    }

    /// The workload's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::A => "a",
            Workload::B => "b",
            Workload::C => "c",
            Workload::D => "d",
            Workload::F => "f",
            Workload::WriteOnly => "write-only",
        }
    }
}

impl Test {
    /// The test's mix: its one operation kind.
    pub fn mix(self) -> Mix {
        Mix(match self {
            Test::Set => &[(OpKind::Set, 1.0)],
            Test::Get => &[(OpKind::Get, 1.0)],
            Test::Incr => &[(OpKind::Incr, 1.0)],
            Test::Mset => &[(OpKind::Mset, 1.0)],
        })
    }

    /// The test's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Test::Set => "set",
            Test::Get => "get",
            Test::Incr => "incr",
            Test::Mset => "mset",
        }
    }
}

impl Mix {
    /// The operation kind a uniform draw `u` in `[0, 1)` picks.
    pub fn choose(&self, u: f64) -> OpKind {
        let mut cumulative = 0.0;
        for &(kind, share) in self.0 {
            cumulative += share;
            if u < cumulative {
                return kind;
            }
        }
        // Rounding can leave the shares' sum a hair under 1.
        self.0.last().expect("a mix has at least one kind").0
    }
}

impl OpKind {
    /// The operation's round trips, in order.
    pub fn steps(self) -> &'static [Step] {
        match self {
            OpKind::Read | OpKind::Get => &[GET_READER],
            OpKind::Load | OpKind::Update | OpKind::Insert | OpKind::Set => &[SET_WRITER],
            OpKind::ReadModifyWrite => &[GET_WRITER, SET_WRITER],
            OpKind::Incr => &[Step { cmd: Cmd::Incr, target: Target::Writer }],
            OpKind::Mset => &[Step { cmd: Cmd::Mset, target: Target::Writer }],
        }
    }

    /// Whether `--wait` applies: every write but the load phase's.
    pub fn waits(self) -> bool {
        self != OpKind::Load
    }

    /// The operation's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Load => "load",
            OpKind::Read => "read",
            OpKind::Update => "update",
            OpKind::Insert => "insert",
            OpKind::ReadModifyWrite => "read-modify-write",
            OpKind::Set => "set",
            OpKind::Get => "get",
            OpKind::Incr => "incr",
            OpKind::Mset => "mset",
        }
    }
}

impl Cmd {
    /// Every command, in report order.
    pub const ALL: [Cmd; 5] = [Cmd::Get, Cmd::Set, Cmd::Incr, Cmd::Mset, Cmd::Wait];

    /// Whether the command changes data (and so is followed by `WAIT` under `--wait`).
    pub fn writes(self) -> bool {
        matches!(self, Cmd::Set | Cmd::Incr | Cmd::Mset)
    }

    /// The command's name, lowercase, as servers count it.
    pub fn name(self) -> &'static str {
        match self {
            Cmd::Get => "get",
            Cmd::Set => "set",
            Cmd::Incr => "incr",
            Cmd::Mset => "mset",
            Cmd::Wait => "wait",
        }
    }

    /// The command's position in [`Cmd::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Writes the key of `record` into `out` (cleared first): `key:` or, for `incr`, `counter:`,
/// then the record number in 12 digits.
pub fn key(out: &mut Vec<u8>, cmd: Cmd, record: u64) {
    use std::io::Write;
    out.clear();
    let prefix = if cmd == Cmd::Incr { "counter" } else { "key" };
    write!(out, "{prefix}:{record:012}").expect("writing to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;

    /// Draws `n` operations from `mix` with a fixed seed and returns each kind's share.
    fn shares(mix: Mix, n: usize) -> BTreeMap<OpKind, f64> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut counts = BTreeMap::new();
        for _ in 0..n {
            *counts.entry(mix.choose(rng.gen())).or_insert(0usize) += 1;
        }
        counts.into_iter().map(|(k, c)| (k, c as f64 / n as f64)).collect()
    }

    #[test]
    fn workload_mixes_hold_their_nominal_shares() {
        use OpKind::*;
        let table: &[(Workload, &[(OpKind, f64)])] = &[
            (Workload::A, &[(Read, 0.5), (Update, 0.5)]),
            (Workload::B, &[(Read, 0.95), (Update, 0.05)]),
            (Workload::C, &[(Read, 1.0)]),
            (Workload::D, &[(Read, 0.95), (Insert, 0.05)]),
            (Workload::F, &[(Read, 0.5), (ReadModifyWrite, 0.5)]),
            (Workload::WriteOnly, &[(Update, 1.0)]),
        ];
        for &(workload, nominal) in table {
            let got = shares(workload.mix(), 100_000);
            assert_eq!(got.len(), nominal.len(), "{workload:?}: kinds drawn {got:?}");
            for &(kind, share) in nominal {
                let measured = got.get(&kind).copied().unwrap_or(0.0);
                assert!((measured - share).abs() <= 0.01, "{workload:?} {kind:?}: {measured} vs {share}");
            }
        }
    }

    #[test]
    fn choose_walks_the_cumulative_shares() {
        let mix = Workload::B.mix();
        let table = [(0.0, OpKind::Read), (0.9499, OpKind::Read), (0.95, OpKind::Update), (0.999_999, OpKind::Update)];
        for (u, kind) in table {
            assert_eq!(mix.choose(u), kind, "u = {u}");
        }
    }

    #[test]
    fn shares_sum_to_one() {
        let mixes = [Workload::A, Workload::B, Workload::C, Workload::D, Workload::F, Workload::WriteOnly]
            .map(Workload::mix)
            .into_iter()
            .chain([Test::Set, Test::Get, Test::Incr, Test::Mset].map(Test::mix));
        for mix in mixes {
            let sum: f64 = mix.0.iter().map(|(_, s)| s).sum();
            assert!((sum - 1.0).abs() < 1e-9, "{mix:?} sums to {sum}");
        }
    }

    #[test]
    fn steps_send_reads_to_readers_and_writes_to_the_writer() {
        let table: &[(OpKind, &[(Cmd, Target)])] = &[
            (OpKind::Read, &[(Cmd::Get, Target::Reader)]),
            (OpKind::Update, &[(Cmd::Set, Target::Writer)]),
            (OpKind::ReadModifyWrite, &[(Cmd::Get, Target::Writer), (Cmd::Set, Target::Writer)]),
            (OpKind::Incr, &[(Cmd::Incr, Target::Writer)]),
            (OpKind::Mset, &[(Cmd::Mset, Target::Writer)]),
        ];
        for &(kind, want) in table {
            let got: Vec<_> = kind.steps().iter().map(|s| (s.cmd, s.target)).collect();
            assert_eq!(got, want, "{kind:?}");
        }
        assert!(!OpKind::Load.waits() && OpKind::Update.waits());
    }

    #[test]
    fn command_indexes_follow_all() {
        for (i, cmd) in Cmd::ALL.iter().enumerate() {
            assert_eq!(cmd.index(), i, "{cmd:?}");
        }
    }

    #[test]
    fn keys_have_twelve_digits_and_counters_their_own_prefix() {
        let mut out = Vec::new();
        key(&mut out, Cmd::Set, 42);
        assert_eq!(out, b"key:000000000042");
        key(&mut out, Cmd::Incr, 7);
        assert_eq!(out, b"counter:000000000007");
    }
}
