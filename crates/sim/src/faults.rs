//! The faults a run injects, and how a seed draws them (swarm testing).
//!
//! Every fault has a rate; a rate of 0 switches it off. `--faults` sets them by name
//! (`drop=0.01,dup=0.01,delay=1..20,partition=0.001,crash=0.0005,pause=0.0005,skew=200,drift=100`);
//! with no `--faults`, each seed draws its own mix, as TigerBeetle's simulator does: every
//! fault is on or off by a coin, and its rate is drawn from a range, so that across seeds some
//! runs are calm, some hammer one fault, and some mix them all.

use rand::Rng;
use serde::Serialize;

/// Fault rates for one run. Per-millisecond rates are probabilities that the fault starts in a
/// given virtual millisecond.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Faults {
    /// Probability that a message between nodes is lost.
    pub drop: f64,
    /// Probability that a message between nodes is delivered twice.
    pub dup: f64,
    /// Network delay in virtual milliseconds, drawn uniformly from `delay_min_ms..=delay_max_ms`
    /// per message: a spread reorders messages.
    pub delay_min_ms: u64,
    /// See `delay_min_ms`.
    pub delay_max_ms: u64,
    /// Per millisecond: a partition forms (one node cut from the others, both ways or one way).
    pub partition: f64,
    /// Per millisecond, per node: the node crashes (losing what was not fsynced, with a torn
    /// tail) and restarts later.
    pub crash: f64,
    /// Per millisecond, per node: the node pauses (a GC pause, SIGSTOP), then resumes.
    pub pause: f64,
    /// Each node's clock is off by up to this many milliseconds, either way.
    pub skew_ms: u64,
    /// Each node's clock runs fast or slow by up to this many parts per million.
    pub drift_ppm: u64,
}

/// Fault names `--faults` takes.
pub const FAULT_NAMES: &[&str] = &["drop", "dup", "delay", "partition", "crash", "pause", "skew", "drift"];

impl Faults {
    /// No fault at all: a 1 ms network.
    pub fn none() -> Faults {
        Faults {
            drop: 0.0,
            dup: 0.0,
            delay_min_ms: 1,
            delay_max_ms: 1,
            partition: 0.0,
            crash: 0.0,
            pause: 0.0,
            skew_ms: 0,
            drift_ppm: 0,
        }
    }

    /// A mix drawn from `rng`: each fault on with probability one half, at a rate from its range.
    pub fn swarm(rng: &mut impl Rng) -> Faults {
        let mut f = Faults::none();
        let on = |rng: &mut _| Rng::gen_bool(rng, 0.5);
        if on(rng) {
            f.drop = rng.gen_range(0.001..0.1);
        }
        if on(rng) {
            f.dup = rng.gen_range(0.001..0.1);
        }
        if on(rng) {
            f.delay_max_ms = rng.gen_range(2..50);
        }
        if on(rng) {
            f.partition = rng.gen_range(0.0001..0.003);
        }
        if on(rng) {
            f.crash = rng.gen_range(0.00005..0.001);
        }
        if on(rng) {
            f.pause = rng.gen_range(0.00005..0.001);
        }
        if on(rng) {
            f.skew_ms = rng.gen_range(1..500);
        }
        if on(rng) {
            f.drift_ppm = rng.gen_range(1..1000);
        }
        f
    }

    /// Faults from `name=value,...` over [`Faults::none`]; an error names the bad part.
    pub fn parse(spec: &str) -> Result<Faults, String> {
        let mut f = Faults::none();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').ok_or_else(|| format!("{part:?}: expected name=value"))?;
            let rate = || -> Result<f64, String> {
                let rate: f64 = value.parse().map_err(|_| format!("{name}={value}: not a number"))?;
                (0.0..=1.0).contains(&rate).then_some(rate).ok_or_else(|| format!("{name}={value}: a rate is 0 to 1"))
            };
            let int =
                || -> Result<u64, String> { value.parse().map_err(|_| format!("{name}={value}: not a whole number")) };
            match name {
                "drop" => f.drop = rate()?,
                "dup" => f.dup = rate()?,
                "partition" => f.partition = rate()?,
                "crash" => f.crash = rate()?,
                "pause" => f.pause = rate()?,
                "skew" => f.skew_ms = int()?,
                "drift" => f.drift_ppm = int()?,
                "delay" => {
                    let (lo, hi) = value.split_once("..").unwrap_or((value, value));
                    let (lo, hi): (u64, u64) = match (lo.parse(), hi.parse()) {
                        (Ok(lo), Ok(hi)) if 1 <= lo && lo <= hi => (lo, hi),
                        _ => return Err(format!("delay={value}: expected MS or MIN..MAX, at least 1")),
                    };
                    (f.delay_min_ms, f.delay_max_ms) = (lo, hi);
                }
                other => return Err(format!("unknown fault {other:?}: one of {}", FAULT_NAMES.join(", "))),
            }
        }
        Ok(f)
    }

    /// The `--faults` text that sets exactly these faults (for the replay command).
    pub fn spec(&self) -> String {
        format!(
            "drop={},dup={},delay={}..{},partition={},crash={},pause={},skew={},drift={}",
            self.drop,
            self.dup,
            self.delay_min_ms,
            self.delay_max_ms,
            self.partition,
            self.crash,
            self.pause,
            self.skew_ms,
            self.drift_ppm
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_spec_round_trips_and_bad_ones_name_the_part() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..20 {
            let f = Faults::swarm(&mut rng);
            assert_eq!(Faults::parse(&f.spec()).unwrap(), f);
        }
        assert!(Faults::parse("drop=2").unwrap_err().contains("drop=2"));
        assert!(Faults::parse("quake=1").unwrap_err().contains("unknown fault"));
        assert!(Faults::parse("delay=5..2").unwrap_err().contains("delay=5..2"));
    }
}
