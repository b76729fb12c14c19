//! Degradation of one component: a hidden health index that is 0 while healthy, starts
//! rising at a stochastic onset, accelerates, and reaches 1 at the failure.
//!
//! - onset − (install or repair) ~ Exponential(mean = `mean_days_to_onset`)
//! - warning time T = failure − onset ~ LogNormal(ln(`warning_median_hours`), `warning_sigma`),
//!   or, with probability `sudden_probability`, Uniform(0.5 h, 6 h) (sudden failures)
//! - health(t) = (e^(κx) − 1) / (e^κ − 1), x = (t − onset) / T, κ = 3: monotone, convex,
//!   0 at onset and 1 at failure
//! - after the failure the component is broken until repaired 1–4 days later; the repair
//!   resets health to 0 and the next onset is drawn from the repair time.

use rand::Rng;
use rand_distr::{Distribution, Exp, LogNormal};

use crate::fleet::FailureModeSpec;

pub const HOUR_MICROS: i64 = 3_600_000_000;
pub const DAY_MICROS: i64 = 24 * HOUR_MICROS;
const CURVATURE: f64 = 3.0;

/// One degradation episode of one component.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Episode {
    pub onset: i64,
    pub failure_at: i64,
    pub repaired_at: i64,
    pub sudden: bool,
    /// A technician's visit before `failure_at` replaced the component at `repaired_at`:
    /// the failure never happened.
    pub prevented: bool,
}

impl Episode {
    /// Health index at `t`: 0 before onset, rising to 1 at failure, 1 while broken, 0 after
    /// repair (the next episode takes over).
    pub fn health(&self, t: i64) -> f64 {
        if t < self.onset || t >= self.repaired_at {
            return 0.0;
        }
        if t >= self.failure_at {
            return 1.0;
        }
        let x = (t - self.onset) as f64 / (self.failure_at - self.onset).max(1) as f64;
        ((CURVATURE * x).exp() - 1.0) / (CURVATURE.exp() - 1.0)
    }

    pub fn is_broken(&self, t: i64) -> bool {
        t >= self.failure_at && t < self.repaired_at
    }

    /// The component failed at or before `t` (a prevented failure never does).
    pub fn failed_by(&self, t: i64) -> bool {
        !self.prevented && self.failure_at <= t
    }
}

/// Draws the episodes of one component from `start` (installation) until `end`.
pub fn episodes(mode: &FailureModeSpec, start: i64, end: i64, rng: &mut impl Rng) -> Vec<Episode> {
    let onset_gap =
        Exp::new(1.0 / (mode.mean_days_to_onset * DAY_MICROS as f64)).expect("positive rate");
    let warning = LogNormal::new(
        (mode.warning_median_hours * HOUR_MICROS as f64).ln(),
        mode.warning_sigma,
    )
    .expect("valid log-normal");
    let mut episodes = Vec::new();
    let mut from = start;
    loop {
        let onset = from + onset_gap.sample(rng) as i64;
        let sudden = rng.gen_bool(mode.sudden_probability);
        let warning_micros = if sudden {
            rng.gen_range(HOUR_MICROS / 2..6 * HOUR_MICROS)
        } else {
            (warning.sample(rng) as i64).max(HOUR_MICROS)
        };
        let failure_at = onset + warning_micros;
        if onset >= end {
            break;
        }
        let repaired_at = failure_at + rng.gen_range(DAY_MICROS..4 * DAY_MICROS);
        episodes.push(Episode {
            onset,
            failure_at,
            repaired_at,
            sudden,
            prevented: false,
        });
        from = repaired_at;
    }
    episodes
}

/// Health of a component at `t` given its episodes.
pub fn health_at(episodes: &[Episode], t: i64) -> f64 {
    episodes.iter().map(|e| e.health(t)).fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::fleet::{Kind, WASHER};

    #[test]
    fn health_is_monotone_from_onset_to_failure() {
        let episode = Episode {
            onset: 0,
            failure_at: 100 * HOUR_MICROS,
            repaired_at: 130 * HOUR_MICROS,
            sudden: false,
            prevented: false,
        };
        assert_eq!(episode.health(-1), 0.0);
        assert_eq!(episode.health(0), 0.0);
        let mut previous = 0.0;
        for hour in 1..100 {
            let health = episode.health(hour * HOUR_MICROS);
            assert!(health > previous, "strictly rising at hour {hour}");
            assert!(health < 1.0);
            previous = health;
        }
        assert_eq!(episode.health(100 * HOUR_MICROS), 1.0);
        assert!(episode.is_broken(120 * HOUR_MICROS));
        assert_eq!(episode.health(130 * HOUR_MICROS), 0.0, "repaired");
        // Convex: half-way through the warning time the index is well below one half.
        assert!(episode.health(50 * HOUR_MICROS) < 0.25);
    }

    #[test]
    fn warning_times_follow_the_documented_distribution() {
        let mode = &WASHER.modes[0]; // drum bearing: median 21 days, 10 % sudden
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut warnings = Vec::new();
        let mut sudden = 0;
        let mut onsets_first_year = 0;
        let n_units = 20_000;
        for _ in 0..n_units {
            let episodes = episodes(mode, 0, 5 * 365 * DAY_MICROS, &mut rng);
            if episodes.first().is_some_and(|e| e.onset < 365 * DAY_MICROS) {
                onsets_first_year += 1;
            }
            for episode in episodes {
                if episode.sudden {
                    sudden += 1;
                    assert!(episode.failure_at - episode.onset <= 6 * HOUR_MICROS);
                } else {
                    warnings.push((episode.failure_at - episode.onset) as f64 / HOUR_MICROS as f64);
                }
            }
        }
        warnings.sort_by(f64::total_cmp);
        let median = warnings[warnings.len() / 2];
        assert!(
            (median / (21.0 * 24.0) - 1.0).abs() < 0.05,
            "median warning {median} h"
        );
        let sudden_share = sudden as f64 / (sudden + warnings.len()) as f64;
        assert!(
            (sudden_share - 0.10).abs() < 0.015,
            "sudden share {sudden_share}"
        );
        // P(onset within a year) = 1 − e^(−365/1100) ≈ 0.282
        let share = onsets_first_year as f64 / n_units as f64;
        assert!((share - 0.282).abs() < 0.015, "first-year onsets {share}");
        assert_eq!(Kind::Washer.spec().modes.len(), 2);
    }
}
