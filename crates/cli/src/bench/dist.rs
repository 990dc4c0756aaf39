//! Which record an operation touches: uniform, zipfian or latest, drawn from a seeded generator.
//!
//! - **uniform**: every record in `[0, records)` equally likely.
//! - **zipfian**: record popularity follows Zipf's law with θ = [`ZIPFIAN_THETA`] (0.99, YCSB's
//!   constant): the record of rank `i` (from 0) is drawn with probability proportional to
//!   `1 / (i + 1)^θ`. Ranks come from the closed-form generator of Gray et al., "Quickly
//!   generating billion-record synthetic databases" (SIGMOD 1994), as YCSB's `ZipfianGenerator`
//!   computes it: with `ζ(n) = Σ_{i=1..n} 1/i^θ`, a uniform `u` gives rank 0 when `u·ζ(n) < 1`,
//!   rank 1 when `u·ζ(n) < 1 + 0.5^θ`, and otherwise `n·(η·u − η + 1)^(1/(1−θ))`, where
//!   `η = (1 − (2/n)^(1−θ)) / (1 − ζ(2)/ζ(n))`. Ranks are then scattered over the key space, as
//!   YCSB's `ScrambledZipfianGenerator` does, so that the popular records are not neighbours.
//! - **latest**: YCSB's `SkewedLatestGenerator`: a zipfian rank counted back from the newest record,
//!   so the records inserted last are the most read (workload D).
//!
//! Every draw takes the generator as an argument, so a seed fixes the sequence; the inputs are a
//! uniform draw and the current newest record (the insert horizon), nothing else.
//!
//! CAVEATS
//! - YCSB scatters ranks with an FNV hash modulo the record count, which sends some ranks to the
//!   same record and leaves others never drawn. Here ranks are scattered by multiplying by a prime
//!   larger than [`RECORDS_MAX`] modulo the record count: a permutation, so the measured popularity
//!   is the Zipf law itself.
//! - The zipfian constants are computed once for the record count at the start (`ζ(n)` costs `n`
//!   powers); uniform and zipfian draws stay within those records even after workload D inserted
//!   more, and latest draws reach back at most that many records from the newest.
//! - Gray's closed form approximates the Zipf law past rank 1: over 10,000 records the top 1% takes
//!   53% of the draws where the exact law gives 51.8%. YCSB has the same bias.

use clap::ValueEnum;
use rand::Rng;

/// YCSB's zipfian constant.
pub const ZIPFIAN_THETA: f64 = 0.99;

/// The most records a run may have: computing `ζ(n)` takes `n` powers.
pub const RECORDS_MAX: u64 = 100_000_000;

/// The multiplier that scatters zipfian ranks: a prime above [`RECORDS_MAX`], so it never divides
/// the record count and multiplication by it modulo the count is a permutation.
const SCATTER_PRIME: u64 = 2_147_483_647;

/// How records are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Distribution {
    /// Every record equally likely.
    Uniform,
    /// Zipf's law with θ = 0.99, popular records scattered over the key space.
    Zipfian,
    /// Zipf's law counted back from the newest record.
    Latest,
}

impl Distribution {
    /// The distribution's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Uniform => "uniform",
            Distribution::Zipfian => "zipfian",
            Distribution::Latest => "latest",
        }
    }
}

/// Gray et al.'s zipfian rank generator over `items` ranks.
#[derive(Clone, Copy, Debug)]
pub struct Zipfian {
    /// Ranks drawn from: `[0, items)`.
    items: u64,
    /// The skew.
    theta: f64,
    /// `ζ(items)`.
    zetan: f64,
    /// `1 / (1 − θ)`.
    alpha: f64,
    /// Gray's η.
    eta: f64,
}

/// `ζ(n) = Σ_{i=1..n} 1/i^θ`.
pub fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

impl Zipfian {
    /// A generator over `[0, items)` with skew `theta` (0 < θ < 1); costs `items` powers.
    pub fn new(items: u64, theta: f64) -> Zipfian {
        assert!((1..=RECORDS_MAX).contains(&items), "zipfian over {items} items");
        assert!(theta > 0.0 && theta < 1.0, "zipfian theta {theta}");
        let zetan = zeta(items, theta);
        let zeta2 = zeta(2, theta);
        let eta = (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Zipfian { items, theta, zetan, alpha: 1.0 / (1.0 - theta), eta }
    }

    /// The rank a uniform draw `u` in `[0, 1)` gives; 0 is the most popular.
    pub fn rank(&self, u: f64) -> u64 {
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.items - 1);
        }
        let rank = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.items - 1)
    }
}

/// The record a zipfian rank lands on: a permutation of `[0, records)`.
pub fn scatter(rank: u64, records: u64) -> u64 {
    ((rank as u128 * SCATTER_PRIME as u128) % records as u128) as u64
}

/// Draws records for one phase.
#[derive(Clone, Copy, Debug)]
pub struct KeyChooser {
    /// The distribution.
    kind: Distribution,
    /// Records stored at the start of the run.
    records: u64,
    /// Rank generator for zipfian and latest.
    zipfian: Option<Zipfian>,
}

impl KeyChooser {
    /// A chooser over `records` records (`1..=RECORDS_MAX`).
    pub fn new(kind: Distribution, records: u64) -> KeyChooser {
        let zipfian = match kind {
            Distribution::Uniform => None,
            Distribution::Zipfian | Distribution::Latest => Some(Zipfian::new(records, ZIPFIAN_THETA)),
        };
        KeyChooser { kind, records, zipfian }
    }

    /// The next record; `horizon` is one past the newest record (at least `records`).
    pub fn next<R: Rng>(&self, rng: &mut R, horizon: u64) -> u64 {
        match (self.kind, &self.zipfian) {
            (Distribution::Uniform, _) => rng.gen_range(0..self.records),
            (Distribution::Zipfian, Some(z)) => scatter(z.rank(rng.gen()), self.records),
            (Distribution::Latest, Some(z)) => horizon.max(self.records) - 1 - z.rank(rng.gen()),
            (kind, None) => unreachable!("{kind:?} without a zipfian generator"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn counts(chooser: KeyChooser, records: u64, horizon: u64, draws: usize) -> Vec<u64> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut counts = vec![0u64; horizon as usize];
        for _ in 0..draws {
            let record = chooser.next(&mut rng, horizon);
            assert!(record < horizon.max(records), "record {record} past {horizon}");
            counts[record as usize] += 1;
        }
        counts
    }

    /// The share of draws below rank `k` (k >= 2) that Gray's closed form gives over `n` ranks.
    fn gray_share_below(k: u64, n: u64) -> f64 {
        let t = ZIPFIAN_THETA;
        let eta = (1.0 - (2.0 / n as f64).powf(1.0 - t)) / (1.0 - zeta(2, t) / zeta(n, t));
        ((k as f64 / n as f64).powf(1.0 - t) - 1.0 + eta) / eta
    }

    #[test]
    fn uniform_draws_every_record_about_equally() {
        let records = 1000;
        let draws = 200_000; // 200 per record
        let c = counts(KeyChooser::new(Distribution::Uniform, records), records, records, draws);
        let (min, max) = (*c.iter().min().unwrap(), *c.iter().max().unwrap());
        assert!(min > 0, "a record never drawn");
        // Binomial(200k, 1/1000): sd ≈ 14; min and max of 1000 stay within ±4.5 sd.
        assert!(min >= 135 && max <= 265, "min {min}, max {max}");
        let expected = draws as f64 / records as f64;
        let chi2: f64 = c.iter().map(|&o| (o as f64 - expected).powi(2) / expected).sum();
        // 999 degrees of freedom: mean 999, sd ≈ 45.
        assert!(chi2 < 999.0 + 5.0 * 45.0, "chi-square {chi2}");
    }

    #[test]
    fn zipfian_favours_a_few_records_by_the_law() {
        let records = 10_000;
        let draws = 500_000;
        let mut c = counts(KeyChooser::new(Distribution::Zipfian, records), records, records, draws);
        c.sort_unstable_by(|a, b| b.cmp(a));
        let (top, median) = (c[0], c[records as usize / 2]);
        // Rank 0 takes 1/ζ(10⁴) ≈ 10% of draws; the median rank about 0.002%.
        assert!(top > 100 * median.max(1), "top {top}, median {median}");
        let expected_top = 1.0 / zeta(records, ZIPFIAN_THETA);
        let top_share = top as f64 / draws as f64;
        assert!((top_share - expected_top).abs() < 0.01, "top share {top_share} vs {expected_top}");
        // The top 1% of records: ζ(100)/ζ(10⁴) of the draws by the law.
        let expected = zeta(records / 100, ZIPFIAN_THETA) / zeta(records, ZIPFIAN_THETA);
        let share = c[..records as usize / 100].iter().sum::<u64>() as f64 / draws as f64;
        assert!((share - expected).abs() < 0.02, "top 1% share {share} vs {expected}");
        // Gray's closed form draws ranks below k >= 2 with probability ((k/n)^(1-θ) - 1 + η) / η:
        // the generator must match its own law closely (sd of the share here ≈ 0.0007).
        let gray = gray_share_below(records / 100, records);
        assert!((share - gray).abs() < 0.005, "top 1% share {share} vs Gray's {gray}");
    }

    #[test]
    fn zipfian_scatters_popular_records() {
        let records = 10_000;
        let ranked: Vec<u64> = (0..10).map(|r| scatter(r, records)).collect();
        assert!(ranked.windows(2).all(|w| w[0].abs_diff(w[1]) > 1), "neighbours: {ranked:?}");
    }

    #[test]
    fn scatter_is_a_permutation() {
        for records in [1, 2, 7, 1000, 65_536, 99_991] {
            let mut seen = vec![false; records as usize];
            for rank in 0..records {
                let r = scatter(rank, records) as usize;
                assert!(!seen[r], "{records}: record {r} twice");
                seen[r] = true;
            }
        }
    }

    #[test]
    fn latest_favours_the_newest_records() {
        let records = 10_000;
        let horizon = 12_000; // 2000 inserted since the load
        let draws = 200_000;
        let c = counts(KeyChooser::new(Distribution::Latest, records), records, horizon, draws);
        assert_eq!(c.iter().enumerate().max_by_key(|&(_, n)| n).unwrap().0, horizon as usize - 1);
        // The newest 1% of records take the same share as zipfian's top 1%.
        let newest: u64 = c[(horizon - records / 100) as usize..].iter().sum();
        let expected = zeta(records / 100, ZIPFIAN_THETA) / zeta(records, ZIPFIAN_THETA);
        let share = newest as f64 / draws as f64;
        assert!((share - expected).abs() < 0.02, "newest 1% share {share} vs {expected}");
        let gray = gray_share_below(records / 100, records);
        assert!((share - gray).abs() < 0.005, "newest 1% share {share} vs Gray's {gray}");
        let oldest: u64 = c[..(horizon - records) as usize].iter().sum();
        assert_eq!(oldest, 0, "draws reach back at most `records` records");
    }

    #[test]
    fn tiny_record_counts_stay_in_range() {
        for records in [1, 2, 3] {
            for kind in [Distribution::Uniform, Distribution::Zipfian, Distribution::Latest] {
                counts(KeyChooser::new(kind, records), records, records, 1000);
            }
        }
    }
}
