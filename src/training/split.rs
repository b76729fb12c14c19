//! The time split of a training run: training examples, then a tuning window (rolling-origin
//! folds: calibration, thresholds and the winner are chosen on it), then a test window that
//! nothing is fitted or chosen on. Windows scale with the history.

use crate::config::TrainConfig;
use crate::contract::duration_micros;
use crate::features::{DAY_MICROS, HOUR_MICROS};

use super::TrainingError;

/// The longest a window is by default.
const MAX_AUTO_WINDOW: i64 = 30 * DAY_MICROS;
/// The least history of training examples worth fitting on, besides the horizon gap.
const MIN_TRAINING_SPAN: i64 = 7 * DAY_MICROS;
/// The longest tuning window by default.
const MAX_AUTO_TUNING: i64 = 90 * DAY_MICROS;
/// Rolling-origin folds over the tuning window by default.
const AUTO_FOLDS: usize = 3;

/// `[from, tune_from)` trains (labels never look past `tune_from`), `[tune_from,
/// test_from)` tunes, `[test_from, until)` tests. µs since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub from: i64,
    pub tune_from: i64,
    pub test_from: i64,
    pub until: i64,
    pub folds: usize,
}

/// `train.tuning_folds`, `0` being auto.
fn folds(config: &TrainConfig) -> usize {
    match config.tuning_folds {
        0 => AUTO_FOLDS,
        folds => folds,
    }
}

fn days(micros: i64) -> f64 {
    micros as f64 / DAY_MICROS as f64
}

impl Split {
    /// The split of `[from, until)` for horizons up to `longest_horizon` (µs). `from` is the
    /// first data. When the history is too short, the error says how much is needed and
    /// which setting to change.
    pub fn new(
        config: &TrainConfig,
        from: i64,
        until: i64,
        longest_horizon: i64,
        longest_mode: &str,
    ) -> Result<Split, TrainingError> {
        let history = until - from;
        // A window holds at least one and a half horizons, so that a flag can be judged in
        // most of it; a fifth of the history when that is more; 30 days at most.
        let auto = ((history / 5).min(MAX_AUTO_WINDOW))
            .max(longest_horizon * 3 / 2)
            .div_euclid(HOUR_MICROS)
            * HOUR_MICROS;
        let test = config.test_window.map_or(auto, duration_micros);
        // Rolling origin: the tuning window takes half of the time before the test window
        // (90 days at most), so that its folds see enough failures to calibrate on, while
        // each fold's model still trains on everything before it.
        let tuning = config.tuning_window.map_or_else(
            || {
                ((history - test) / 2)
                    .min(MAX_AUTO_TUNING)
                    .max(auto)
                    .div_euclid(HOUR_MICROS)
                    * HOUR_MICROS
            },
            duration_micros,
        );
        let test_from = until - test;
        let tune_from = test_from - tuning;
        let needed = test + tuning + longest_horizon + MIN_TRAINING_SPAN;
        if history < needed {
            return Err(TrainingError::NoData(format!(
                "training needs {:.0} days of history and this data covers {:.1}: a {:.0}-day test window, a {:.0}-day tuning window, the longest horizon ({longest_mode}, {:.1} days) and 7 days of examples before them; \
                 set train.test_window and train.tuning_window shorter (say \"{:.0}d\" each), or a shorter horizon for {longest_mode} in train.failure_modes",
                days(needed).ceil(),
                days(history),
                days(test),
                days(tuning),
                days(longest_horizon),
                (days(history - longest_horizon - MIN_TRAINING_SPAN) / 2.0)
                    .floor()
                    .max(1.0),
            )));
        }
        Ok(Split {
            from,
            tune_from,
            test_from,
            until,
            folds: folds(config),
        })
    }

    /// The split of one mode whose horizon is too long for [`Split::new`]'s windows on this
    /// history (a 14-day horizon needs 63 days with the automatic windows): the tuning and
    /// test windows as long as the history leaves after the horizon and a week of
    /// examples, each at least one horizon and a day, so that some of its flags are judged
    /// in each. `None` when that does not fit either, or when a window is configured
    /// (the operator's windows are not second-guessed).
    pub fn shrunk(config: &TrainConfig, from: i64, until: i64, horizon: i64) -> Option<Split> {
        if config.test_window.is_some() || config.tuning_window.is_some() {
            return None;
        }
        let window = ((until - from - horizon - MIN_TRAINING_SPAN) / 2)
            .min(MAX_AUTO_WINDOW)
            .div_euclid(HOUR_MICROS)
            * HOUR_MICROS;
        if window < horizon + DAY_MICROS {
            return None;
        }
        Some(Split {
            from,
            tune_from: until - 2 * window,
            test_from: until - window,
            until,
            folds: folds(config),
        })
    }

    /// The longest horizon a mode may learn on these windows (hours): two thirds of the
    /// shorter of the tuning and test windows, so that most of its flags can be judged in
    /// both (the windows are set before horizons are learnt: a horizon as long as the test
    /// window would leave none judged there).
    pub fn longest_learnt_horizon_hours(&self) -> f64 {
        let window = (self.test_from - self.tune_from).min(self.until - self.test_from);
        ((window / HOUR_MICROS) as f64 * 2.0 / 3.0).floor()
    }

    /// The tuning window's folds `[start, end)`, oldest first, on whole hours.
    pub fn folds(&self) -> Vec<(i64, i64)> {
        let span = self.test_from - self.tune_from;
        let folds = self.folds.max(1) as i64;
        (0..folds)
            .map(|k| {
                let start =
                    self.tune_from + (span * k / folds).div_euclid(HOUR_MICROS) * HOUR_MICROS;
                let end = if k + 1 == folds {
                    self.test_from
                } else {
                    self.tune_from + (span * (k + 1) / folds).div_euclid(HOUR_MICROS) * HOUR_MICROS
                };
                (start, end)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_scale_with_the_history_and_folds_tile_the_tuning_window() {
        let config = TrainConfig::default();
        let split = Split::new(&config, 0, 60 * DAY_MICROS, 2 * DAY_MICROS, "m").unwrap();
        assert_eq!(split.test_from, 48 * DAY_MICROS);
        assert_eq!(split.tune_from, 24 * DAY_MICROS);
        assert_eq!(split.folds, 3);
        let folds = split.folds();
        assert_eq!(folds.first().unwrap().0, split.tune_from);
        assert_eq!(folds.last().unwrap().1, split.test_from);
        assert!(folds.windows(2).all(|w| w[0].1 == w[1].0));

        let long = Split::new(&config, 0, 400 * DAY_MICROS, 7 * DAY_MICROS, "m").unwrap();
        assert_eq!(long.until - long.test_from, 30 * DAY_MICROS);
        assert_eq!(long.test_from - long.tune_from, 90 * DAY_MICROS);
    }

    #[test]
    fn a_mode_too_long_for_the_windows_gets_its_own_shorter_ones() {
        let config = TrainConfig::default();
        // 60 days and a 14-day horizon: the automatic windows need 63.
        let (until, horizon) = (60 * DAY_MICROS, 14 * DAY_MICROS);
        assert!(Split::new(&config, 0, until, horizon, "fridge/refrigerant_leak").is_err());
        let split = Split::shrunk(&config, 0, until, horizon).unwrap();
        assert_eq!(
            split.until - split.test_from,
            split.test_from - split.tune_from
        );
        let window = split.until - split.test_from;
        assert!(
            window >= horizon + DAY_MICROS,
            "a flag can be judged in each window"
        );
        assert_eq!(
            split.tune_from - horizon - MIN_TRAINING_SPAN,
            0,
            "the examples still span a week before the horizon ahead of the tuning window"
        );
        // Too short even so, or windows the operator set: none.
        assert!(Split::shrunk(&config, 0, 40 * DAY_MICROS, horizon).is_none());
        let configured = TrainConfig {
            test_window: Some(std::time::Duration::from_secs(10 * 86_400)),
            ..TrainConfig::default()
        };
        assert!(Split::shrunk(&configured, 0, until, horizon).is_none());
        // A learnt horizon fits the shorter window: 19.5 days here, so 13 days at most.
        assert_eq!(split.longest_learnt_horizon_hours(), 312.0);
        let uneven = Split {
            test_from: 50 * DAY_MICROS,
            ..split
        };
        assert_eq!(
            uneven.longest_learnt_horizon_hours(),
            160.0,
            "a 10-day test window after a 29-day tuning window: 6 2/3 days"
        );
    }

    #[test]
    fn too_little_history_says_what_is_needed_and_what_to_change() {
        let config = TrainConfig::default();
        let error = Split::new(&config, 0, 20 * DAY_MICROS, 7 * DAY_MICROS, "washer/drum")
            .unwrap_err()
            .to_string();
        assert!(error.contains("train.test_window"), "{error}");
        assert!(error.contains("washer/drum"), "{error}");
        assert!(error.contains("covers 20.0"), "{error}");
    }
}
