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
//!   write quorum.
//!
//! CAVEATS
//! - Counts are of distinct members: a caller that counts one member twice breaks every
//!   guarantee here (the simulator's canaries check callers, not this module).

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
}
