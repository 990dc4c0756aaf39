//! Quorum arithmetic, in one place: majorities (elections, commit, read confirmation), k of
//! n (a leader's acknowledgements), and the leaderless family's n, w and r.
//!
//! Every function is pure and small, and each is checked against a table below (after
//! raft-rs's `quorum/majority.rs`). Callers say what they count, this module says when it is
//! enough:
//!
//! - [`majority`]`(n)`: the smallest count that is more than half of `n` nodes. Two majorities
//!   of one cluster always share a node, which is why a leader elected by one and a write
//!   acknowledged by another cannot miss each other.
//! - [`is_majority`] / [`majority_lost`]: whether the grants counted so far win, or the
//!   refusals make a win impossible.
//! - [`kth_largest`] / [`majority_value`]: the greatest value that at least k (a majority)
//!   of the members reach, for positions (the log a majority holds) and times (the newest
//!   moment a majority was heard from).
//! - [`Nwr`]: a leaderless configuration: n replicas per key, a write waits for w of them, a
//!   read for r. The lecture's condition for reads to see the newest acknowledged write is
//!   `w + r > n` ([`Nwr::overlaps`]): then every read quorum shares a replica with every
//!   write quorum. [`Nwr::overlapping`] lists every such configuration of `n` replicas.
//! - [`ReplicaSet`] and [`ReadOutcome`]: the lecture's exercise (`replikv quorum`). A write is
//!   held by a set of replicas (numbered 1 to n); some replicas are down; does the next read
//!   still succeed?
//!
//! What "the next read succeeds" means here, for a configuration (n, w, r), the replicas
//! `written` that hold the newest accepted write, and the replicas `down` that are unavailable:
//!
//! 1. The write was accepted, so it reached at least w replicas: `|written| >= w`
//!    ([`Nwr::could_accept`]). A write on exactly {1,2} of 3 could have been accepted with
//!    w = 1 or 2, not with w = 3 (it would have failed, and is not the last accepted write).
//! 2. The read gathers r answers from the `up` replicas (all but `down`): it needs
//!    `|up| >= r`, or it fails ([`ReadOutcome::TooFewUp`]).
//! 3. The read keeps the newest version among its answers (by version, not by majority), so it
//!    returns the write if one of its r answers comes from a replica that holds it. It has no
//!    say in which r replicas answer first, so it is guaranteed to return the write only when
//!    every r of the up replicas include one of `written`: fewer than r up replicas lack it,
//!    `|up - written| < r`. Otherwise r replicas without the write can answer and the read
//!    returns an older version ([`ReadOutcome::MayMiss`]).
//!
//! The read succeeds ([`ReadOutcome::Sees`]) when both 2 and 3 hold ([`Nwr::read_outcome`]).
//! When `w + r > n` and 1 holds, 3 follows from 2: at most `n - |written| <= n - w < r`
//! replicas lack the write, up or not. So under the lecture's condition the next read
//! succeeds exactly when at most `n - r` replicas are down; 3 decides only when `w + r <= n`,
//! and there it is what goes wrong: a read answered by replicas that all missed the write.
//!
//! The lecture's case, n = 3 and the write on {1,2} (not on 3), worked by hand: of the
//! configurations with `w + r > 3`, (1,3), (2,2), (2,3), (3,1), (3,2) and (3,3), those with
//! `w <= 2` could have accepted it: (1,3), (2,2) and (2,3). With r = 3 the read needs all three
//! replicas: it succeeds only with none down. With (2,2) it needs two up, and any two of three
//! include 1 or 2: it succeeds with {}, {1} (up {2,3}), {2} (up {1,3}) or {3} (up {1,2}) down,
//! and fails with two or three down (one or no replica up, fewer than r = 2).
//!
//! [`Nwr::read_outcomes`] answers for every set of down replicas, 2^n of them, so it refuses
//! n over [`REPLICA_SET_N_MAX`].
//!
//! CAVEATS
//! - Counts are of distinct members: a caller that counts one member twice breaks every
//!   guarantee here (the simulator's canaries check callers, not this module).
//! - The exercise's model, not a protocol: "down" is known and fixed while the read runs, a
//!   replica that is up answers with what it holds, and nothing repairs replicas meanwhile
//!   (no read repair, no hinted handoff, no sloppy quorum). The lecture's other ways to lose
//!   the newest version (concurrent writes, a write that failed but landed on some replicas, a
//!   replica that recovers an old value after a crash) are outside it.

/// The smallest count that is more than half of `n`.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// True when `count` members of `n` are a majority.
pub fn is_majority(count: usize, n: usize) -> bool {
    count >= majority(n)
}

/// True when, with `refused` of `n` members against, the rest can no longer be a majority.
pub fn majority_lost(refused: usize, n: usize) -> bool {
    n.saturating_sub(refused) < majority(n)
}

/// The greatest value that at least `k` of `values` reach (the k-th largest); 0 when there
/// are fewer than `k` values or `k` is 0.
pub fn kth_largest(mut values: Vec<u64>, k: usize) -> u64 {
    if k == 0 || values.len() < k {
        return 0;
    }
    values.sort_unstable_by(|a, b| b.cmp(a));
    values[k - 1]
}

/// The greatest value a majority of `values` reach (each value one member's).
pub fn majority_value(values: Vec<u64>) -> u64 {
    let k = majority(values.len());
    kth_largest(values, k)
}

/// A leaderless configuration: `n` replicas of each key; a write is acknowledged once `w` of
/// them have it, a read answers once `r` of them replied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nwr {
    /// Replicas of each key.
    pub n: usize,
    /// Replicas a write waits for.
    pub w: usize,
    /// Replicas a read waits for.
    pub r: usize,
}

impl Nwr {
    /// Checks `1 <= w <= n` and `1 <= r <= n`, naming the setting that is out of range.
    pub fn new(n: usize, w: usize, r: usize) -> Result<Nwr, String> {
        if n == 0 {
            return Err("n must be at least 1".into());
        }
        if !(1..=n).contains(&w) {
            return Err(format!("w = {w} must be between 1 and n = {n}"));
        }
        if !(1..=n).contains(&r) {
            return Err(format!("r = {r} must be between 1 and n = {n}"));
        }
        Ok(Nwr { n, w, r })
    }

    /// True when every read quorum shares a replica with every write quorum (`w + r > n`):
    /// a read that starts after a write was acknowledged sees it, or a newer one.
    pub fn overlaps(&self) -> bool {
        self.w + self.r > self.n
    }

    /// Replicas that may be down while writes are still acknowledged.
    pub fn write_tolerates(&self) -> usize {
        self.n - self.w
    }

    /// Replicas that may be down while reads still answer.
    pub fn read_tolerates(&self) -> usize {
        self.n - self.r
    }

    /// Every configuration of `n` replicas whose reads see the newest accepted write
    /// (`w + r > n`, `1 <= w, r <= n`), by w and then r: about n^2 / 2 of them, so callers
    /// bound `n`.
    pub fn overlapping(n: usize) -> Vec<Nwr> {
        (1..=n).flat_map(|w| (n - w + 1..=n).map(move |r| Nwr { n, w, r })).collect()
    }

    /// True when a write held by exactly the replicas `written` could have been accepted: it
    /// reached at least w of them.
    pub fn could_accept(&self, written: ReplicaSet) -> bool {
        written.len() >= self.w
    }

    /// What the next read does while the replicas `down` are unavailable, when the replicas
    /// `written` hold the newest write (see the module documentation).
    pub fn read_outcome(&self, written: ReplicaSet, down: ReplicaSet) -> ReadOutcome {
        assert!(self.n <= REPLICA_SET_N_MAX, "n = {} is over REPLICA_SET_N_MAX = {REPLICA_SET_N_MAX}", self.n);
        assert!(
            written.fits(self.n) && down.fits(self.n),
            "replicas {written} and {down} must be numbered 1 to n = {}",
            self.n
        );
        let up = ReplicaSet::all_up_to(self.n).difference(down);
        let without = up.difference(written);
        if up.len() < self.r {
            ReadOutcome::TooFewUp { up }
        } else if without.len() >= self.r {
            ReadOutcome::MayMiss { without }
        } else {
            ReadOutcome::Sees { up }
        }
    }

    /// The next read's outcome for every set of unavailable replicas, by size and then by
    /// members ({}, {1}, {2}, ..., {1,2}, ...), when the replicas `written` hold the newest
    /// write. Refuses n over [`REPLICA_SET_N_MAX`]: there are 2^n sets.
    pub fn read_outcomes(&self, written: ReplicaSet) -> Result<Vec<(ReplicaSet, ReadOutcome)>, String> {
        let all = ReplicaSet::all(self.n)?;
        Ok(all.subsets().into_iter().map(|down| (down, self.read_outcome(written, down))).collect())
    }
}

/// Replicas a [`ReplicaSet`] can hold, numbered 1 to this; also the most replicas whose sets of
/// unavailable ones [`Nwr::read_outcomes`] enumerates (2^12 = 4096 sets).
pub const REPLICA_SET_N_MAX: usize = 12;

const _: () = assert!(REPLICA_SET_N_MAX <= u16::BITS as usize, "a ReplicaSet is a u16 bitset");

/// A set of replicas of one key, numbered 1 to [`REPLICA_SET_N_MAX`]: bit i - 1 is replica i.
/// Shown as `{1,2}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicaSet(u16);

impl ReplicaSet {
    /// No replica.
    pub const EMPTY: ReplicaSet = ReplicaSet(0);

    /// Replicas 1 to `n`, refusing n = 0 and n over [`REPLICA_SET_N_MAX`].
    pub fn all(n: usize) -> Result<ReplicaSet, String> {
        if n == 0 {
            return Err("n must be at least 1".into());
        }
        if n > REPLICA_SET_N_MAX {
            return Err(format!(
                "n = {n} is over {REPLICA_SET_N_MAX} replicas, the most whose 2^n sets of unavailable \
                 replicas are enumerated"
            ));
        }
        Ok(ReplicaSet::all_up_to(n))
    }

    /// Replicas 1 to `n` (at most [`REPLICA_SET_N_MAX`], not checked: the callers did).
    fn all_up_to(n: usize) -> ReplicaSet {
        ReplicaSet(((1u32 << n) - 1) as u16)
    }

    /// The set of `replicas` (numbers from 1 to `n`), refusing a number out of range or one
    /// listed twice (a typo more often than a wish).
    pub fn from_replicas(replicas: &[usize], n: usize) -> Result<ReplicaSet, String> {
        ReplicaSet::all(n)?;
        let mut set = ReplicaSet::EMPTY;
        for &i in replicas {
            if !(1..=n).contains(&i) {
                return Err(format!("replica numbers go from 1 to n = {n}; {i} is not one"));
            }
            if set.contains(i) {
                return Err(format!("replica {i} is listed twice"));
            }
            set.0 |= 1 << (i - 1);
        }
        Ok(set)
    }

    /// How many replicas.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// True when the set has no replica.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when replica `i` is in the set.
    pub fn contains(self, i: usize) -> bool {
        (1..=REPLICA_SET_N_MAX).contains(&i) && self.0 & (1 << (i - 1)) != 0
    }

    /// The replicas of this set that are not in `other`.
    pub fn difference(self, other: ReplicaSet) -> ReplicaSet {
        ReplicaSet(self.0 & !other.0)
    }

    /// True when every replica of the set is numbered at most `n`.
    pub fn fits(self, n: usize) -> bool {
        n >= REPLICA_SET_N_MAX || self.0 >> n == 0
    }

    /// The replica numbers, in increasing order.
    pub fn replicas(self) -> impl Iterator<Item = usize> {
        (1..=REPLICA_SET_N_MAX).filter(move |&i| self.contains(i))
    }

    /// Every subset, 2^len of them, by size and then by members: {}, {1}, {2}, {1,2}.
    pub fn subsets(self) -> Vec<ReplicaSet> {
        // Walks the subsets of the mask (s = (s - 1) & mask visits each once, ending at 0).
        let mut subsets = vec![ReplicaSet::EMPTY];
        let mut s = self.0;
        while s != 0 {
            subsets.push(ReplicaSet(s));
            s = (s - 1) & self.0;
        }
        subsets.sort_by_cached_key(|set| (set.len(), set.replicas().collect::<Vec<_>>()));
        subsets
    }
}

impl std::fmt::Display for ReplicaSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let numbers: Vec<String> = self.replicas().map(|i| i.to_string()).collect();
        write!(f, "{{{}}}", numbers.join(","))
    }
}

/// What the next read does, for a configuration, the replicas that hold the newest write and
/// the replicas that are down (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The read succeeds: at least r replicas are up, and any r of them include one that holds
    /// the write, so the newest version is among the answers.
    Sees {
        /// The replicas that are up.
        up: ReplicaSet,
    },
    /// The read fails: fewer than r replicas are up to answer it.
    TooFewUp {
        /// The replicas that are up.
        up: ReplicaSet,
    },
    /// The read answers but may return an older version: r of the replicas that are up lack
    /// the write, and they may be the ones that answer (they are when no holder is up).
    MayMiss {
        /// The replicas that are up and lack the write: r or more of them.
        without: ReplicaSet,
    },
}

impl ReadOutcome {
    /// True when the read succeeds: it answers, with the newest version.
    pub fn succeeds(self) -> bool {
        matches!(self, ReadOutcome::Sees { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majorities_from_a_table() {
        // (n, majority)
        let table = [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)];
        for (n, want) in table {
            assert_eq!(majority(n), want, "n = {n}");
            assert!(is_majority(want, n) && !is_majority(want - 1, n), "n = {n}");
        }
    }

    #[test]
    fn a_majority_is_lost_once_the_refusals_leave_too_few() {
        // (refused, n, lost)
        let table =
            [(0, 3, false), (1, 3, false), (2, 3, true), (1, 4, false), (2, 4, true), (2, 5, false), (3, 5, true)];
        for (refused, n, want) in table {
            assert_eq!(majority_lost(refused, n), want, "{refused} of {n} refused");
        }
    }

    #[test]
    fn the_value_a_majority_reaches_from_a_table() {
        // (values, k-th largest for k = majority)
        let table: [(&[u64], u64); 6] =
            [(&[], 0), (&[7], 7), (&[5, 9], 5), (&[5, 9, 7], 7), (&[1, 9, 9, 3], 3), (&[4, 4, 8, 8, 2], 4)];
        for (values, want) in table {
            assert_eq!(majority_value(values.to_vec()), want, "{values:?}");
        }
        assert_eq!(kth_largest(vec![3, 1, 2], 1), 3);
        assert_eq!(kth_largest(vec![3, 1, 2], 3), 1);
        assert_eq!(kth_largest(vec![3, 1, 2], 4), 0, "fewer values than k");
        assert_eq!(kth_largest(vec![3], 0), 0);
    }

    #[test]
    fn nwr_overlap_and_tolerance_from_the_lecture() {
        // (n, w, r, overlaps): the lecture's n = 3, w = r = 2, and its neighbours.
        let table =
            [(3, 2, 2, true), (3, 1, 1, false), (3, 3, 1, true), (3, 1, 3, true), (5, 3, 3, true), (5, 2, 3, false)];
        for (n, w, r, want) in table {
            let q = Nwr::new(n, w, r).unwrap();
            assert_eq!(q.overlaps(), want, "n{n} w{w} r{r}");
        }
        let q = Nwr::new(3, 2, 2).unwrap();
        assert_eq!((q.write_tolerates(), q.read_tolerates()), (1, 1));
        assert!(Nwr::new(3, 4, 2).unwrap_err().contains("w = 4"));
        assert!(Nwr::new(3, 2, 0).unwrap_err().contains("r = 0"));
        assert!(Nwr::new(0, 1, 1).is_err());
    }

    /// Shorthand for a set of replicas of n = 12 (tests name small sets).
    fn set(replicas: &[usize]) -> ReplicaSet {
        ReplicaSet::from_replicas(replicas, REPLICA_SET_N_MAX).unwrap()
    }

    #[test]
    fn overlapping_configurations_from_a_table() {
        // (n, every (w, r) with w + r > n)
        let table: [(usize, &[(usize, usize)]); 4] = [
            (0, &[]),
            (1, &[(1, 1)]),
            (2, &[(1, 2), (2, 1), (2, 2)]),
            (3, &[(1, 3), (2, 2), (2, 3), (3, 1), (3, 2), (3, 3)]),
        ];
        for (n, want) in table {
            let got: Vec<(usize, usize)> = Nwr::overlapping(n).iter().map(|q| (q.w, q.r)).collect();
            assert_eq!(got, want, "n = {n}");
        }
        for n in 1..=7 {
            let all = Nwr::overlapping(n);
            assert_eq!(all.len(), n * (n + 1) / 2, "n = {n}");
            for q in all {
                assert!(q.overlaps() && Nwr::new(q.n, q.w, q.r) == Ok(q), "{q:?}");
            }
        }
    }

    #[test]
    fn replica_sets_from_a_table() {
        // (replicas, n, shown as, or the error's words)
        let table: [(&[usize], usize, Result<&str, &str>); 9] = [
            (&[], 3, Ok("{}")),
            (&[2, 1], 3, Ok("{1,2}")),
            (&[3], 3, Ok("{3}")),
            (&[1, 12], 12, Ok("{1,12}")),
            (&[4], 3, Err("replica numbers go from 1 to n = 3; 4 is not one")),
            (&[0], 3, Err("replica numbers go from 1 to n = 3; 0 is not one")),
            (&[1, 1], 3, Err("replica 1 is listed twice")),
            (&[1], 13, Err("n = 13 is over 12 replicas")),
            (&[], 0, Err("n must be at least 1")),
        ];
        for (replicas, n, want) in table {
            match (ReplicaSet::from_replicas(replicas, n), want) {
                (Ok(got), Ok(shown)) => assert_eq!(got.to_string(), shown, "{replicas:?} of {n}"),
                (Err(got), Err(words)) => assert!(got.contains(words), "{replicas:?} of {n}: {got}"),
                (got, want) => panic!("{replicas:?} of {n}: got {got:?}, want {want:?}"),
            }
        }
        let s = set(&[1, 3]);
        assert_eq!(
            (s.len(), s.is_empty(), s.contains(1), s.contains(2), s.contains(0)),
            (2, false, true, false, false)
        );
        assert_eq!(s.difference(set(&[3, 4])), set(&[1]));
        assert!(s.fits(3) && !s.fits(2) && ReplicaSet::EMPTY.fits(0));
        assert_eq!(ReplicaSet::all(3), Ok(set(&[1, 2, 3])));
    }

    #[test]
    fn subsets_come_by_size_then_members() {
        let shown: Vec<String> = set(&[1, 2, 3]).subsets().iter().map(|s| s.to_string()).collect();
        assert_eq!(shown, ["{}", "{1}", "{2}", "{3}", "{1,2}", "{1,3}", "{2,3}", "{1,2,3}"]);
        assert_eq!(ReplicaSet::EMPTY.subsets(), [ReplicaSet::EMPTY]);
        let twelve = ReplicaSet::all(12).unwrap().subsets();
        assert_eq!(twelve.len(), 4096);
        assert_eq!((twelve[1], twelve[4095]), (set(&[1]), set(&(1..=12).collect::<Vec<_>>())));
    }

    #[test]
    fn could_accept_needs_w_replicas() {
        // (w, written, could have been accepted)
        let table: [(usize, &[usize], bool); 5] =
            [(1, &[1, 2], true), (2, &[1, 2], true), (3, &[1, 2], false), (1, &[3], true), (2, &[3], false)];
        for (w, written, want) in table {
            let q = Nwr::new(3, w, 1).unwrap();
            assert_eq!(q.could_accept(set(written)), want, "w = {w}, written {written:?}");
        }
    }

    #[test]
    fn read_outcomes_from_a_table() {
        use ReadOutcome::*;
        // n = 3, the write on {1,2}: (w, r, down, outcome)
        let table: [(usize, usize, &[usize], ReadOutcome); 12] = [
            (2, 2, &[], Sees { up: set(&[1, 2, 3]) }),
            (2, 2, &[1], Sees { up: set(&[2, 3]) }),
            (2, 2, &[3], Sees { up: set(&[1, 2]) }),
            (2, 2, &[1, 3], TooFewUp { up: set(&[2]) }),
            (2, 2, &[1, 2, 3], TooFewUp { up: set(&[]) }),
            (1, 3, &[], Sees { up: set(&[1, 2, 3]) }),
            (1, 3, &[2], TooFewUp { up: set(&[1, 3]) }),
            // w + r <= n: replica 3 alone can answer a read of r = 1, and it lacks the write.
            (1, 1, &[], MayMiss { without: set(&[3]) }),
            (1, 1, &[1, 2], MayMiss { without: set(&[3]) }),
            (1, 1, &[3], Sees { up: set(&[1, 2]) }),
            (1, 1, &[1, 3], Sees { up: set(&[2]) }),
            (1, 1, &[1, 2, 3], TooFewUp { up: set(&[]) }),
        ];
        for (w, r, down, want) in table {
            let got = Nwr::new(3, w, r).unwrap().read_outcome(set(&[1, 2]), set(down));
            assert_eq!(got, want, "w = {w}, r = {r}, down {down:?}");
            assert_eq!(got.succeeds(), matches!(want, Sees { .. }));
        }
        assert!(Nwr::new(13, 7, 7).unwrap().read_outcomes(set(&[1])).unwrap_err().contains("n = 13"));
    }

    /// The lecture's exercise: n = 3, the last accepted write on replicas 1 and 2 (not 3).
    #[test]
    fn the_lecture_exercise() {
        let written = set(&[1, 2]);
        let mut answer = Vec::new();
        for q in Nwr::overlapping(3).into_iter().filter(|q| q.could_accept(written)) {
            let succeeding: Vec<String> = q
                .read_outcomes(written)
                .unwrap()
                .into_iter()
                .filter(|(_, outcome)| outcome.succeeds())
                .map(|(down, _)| down.to_string())
                .collect();
            answer.push(((q.w, q.r), succeeding.join(" ")));
        }
        let want = [((1, 3), "{}"), ((2, 2), "{} {1} {2} {3}"), ((2, 3), "{}")];
        assert_eq!(answer, want.map(|(wr, s)| (wr, s.to_string())));
    }

    /// The shortcut `|up - written| < r` against its definition (every r of the up replicas
    /// include a holder), and the module's claim that with `w + r > n` and an accepted write,
    /// a read succeeds exactly when at most n - r replicas are down.
    #[test]
    fn read_outcomes_agree_with_every_read_quorum_for_small_n() {
        for n in 1..=4 {
            let all = ReplicaSet::all(n).unwrap();
            for written in all.subsets() {
                for (w, r) in (1..=n).flat_map(|w| (1..=n).map(move |r| (w, r))) {
                    let q = Nwr::new(n, w, r).unwrap();
                    for (down, outcome) in q.read_outcomes(written).unwrap() {
                        let up = all.difference(down);
                        let quorums: Vec<ReplicaSet> = up.subsets().into_iter().filter(|s| s.len() == r).collect();
                        let every_sees = quorums.iter().all(|s| s.difference(written) != *s);
                        let want = !quorums.is_empty() && every_sees;
                        let case = format!("n{n} w{w} r{r} written {written} down {down}");
                        assert_eq!(outcome.succeeds(), want, "{case}");
                        if q.overlaps() && q.could_accept(written) {
                            assert_eq!(outcome.succeeds(), down.len() <= q.read_tolerates(), "{case}");
                        }
                    }
                }
            }
        }
    }
}
