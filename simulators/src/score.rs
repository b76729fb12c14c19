//! Scoring forewarn's flags (tickets, alerts) against the simulator's ground truth:
//! precision, recall, lead time, false alarms — exactly, since the truth is known.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::fleet::Kind;
use crate::sim::TruthRecord;

/// A prediction that a device's component will fail (a proactive ticket, an alert).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Flag {
    pub device: String,
    pub component: String,
    pub time: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct ScoreConfig {
    /// A flag counts for a failure of its mode when it comes at most the mode's horizon
    /// before it: `horizons[(kind, component)]`, else `default_horizon` (forewarn's
    /// `train.failure_modes` and `train.default_horizon`). A flag's kind is its device's in
    /// the truth, else the one its id's prefix names (`CAR-00006`: car), else the one mode
    /// with its component.
    pub horizons: HashMap<(String, String), chrono::Duration>,
    pub default_horizon: chrono::Duration,
    /// "Flagged early enough": at least this long before the failure.
    pub min_lead: chrono::Duration,
    /// Flags up to this long after a failure (during the repair) are late, not false.
    pub grace_after: chrono::Duration,
    /// Device-days observed (for false alarms per 1,000 device-days).
    pub device_days: f64,
    /// The judged window: failures and flags in `[from, to)`; unset ends are open.
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl ScoreConfig {
    fn horizon(&self, kind: &str, component: &str) -> chrono::Duration {
        self.horizons
            .get(&(kind.to_string(), component.to_string()))
            .copied()
            .unwrap_or(self.default_horizon)
    }

    /// The horizon of a flag on a device the truth has no record of (a healthy one), as
    /// `forewarn evaluate` knows the device's kind: the kind its id's prefix names, else the
    /// one mode with that component.
    fn horizon_of_unknown(&self, device: &str, component: &str) -> chrono::Duration {
        let prefix = device.split('-').next().unwrap_or_default();
        if let Some(kind) = Kind::ALL.iter().find(|k| k.prefix() == prefix) {
            return self.horizon(kind.as_str(), component);
        }
        let mut modes = self.horizons.iter().filter(|((_, c), _)| c == component);
        match (modes.next(), modes.next()) {
            (Some((_, horizon)), None) => *horizon,
            _ => self.default_horizon,
        }
    }

    fn inside(&self, time: DateTime<Utc>) -> bool {
        self.from.is_none_or(|from| time >= from) && self.to.is_none_or(|to| time < to)
    }
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Score {
    /// Every failure in the window, sudden ones included.
    pub failures: usize,
    /// Failures that gave warning (not sudden): the ones a model can catch.
    pub failures_with_warning: usize,
    pub flagged: usize,
    pub flagged_24h_ahead: usize,
    pub flags: usize,
    pub true_flags: usize,
    pub late_flags: usize,
    pub false_flags: usize,
    /// Of the false flags, those raised on a component that was already degrading (past
    /// its onset) and failed later than the horizon: a visit would have found a worn part,
    /// but the flag did not say when. Still false: the headline precision counts them so.
    pub false_flags_on_degrading_parts: usize,
    /// Flags whose horizon runs past the window's end: judged neither true nor false,
    /// whatever happened before the end (the same rule as `forewarn evaluate`).
    pub unjudged_flags: usize,
    pub precision: f64,
    /// Share of all failures flagged (any lead).
    pub recall: f64,
    /// Share of all failures flagged at least `min_lead` ahead.
    pub recall_24h_ahead: f64,
    /// Share of failures with warning flagged at least `min_lead` ahead.
    pub recall_ahead_of_warning_failures: f64,
    pub false_alarms_per_1000_device_days: f64,
    pub median_lead_time_hours: Option<f64>,
}

/// Scores `flags` against `truth`, overall and per component. A flag is matched to its
/// device's kind through the truth file; a flag on a device the truth does not know (one
/// that never failed) is judged with the horizon of the one mode of its component, else
/// the default horizon.
pub fn score(
    truth: &[TruthRecord],
    flags: &[Flag],
    config: &ScoreConfig,
) -> (Score, HashMap<String, Score>) {
    let flags: Vec<Flag> = flags
        .iter()
        .filter(|f| config.inside(f.time))
        .cloned()
        .collect();
    let whole = truth;
    let truth: Vec<TruthRecord> = truth
        .iter()
        .filter(|t| config.inside(t.failure_at))
        .cloned()
        .collect();
    let overall = score_subset(&truth, whole, &flags, config);
    let mut components: Vec<&str> = truth
        .iter()
        .map(|t| t.component.as_str())
        .chain(flags.iter().map(|f| f.component.as_str()))
        .collect();
    components.sort_unstable();
    components.dedup();
    let per_component = components
        .into_iter()
        .map(|component| {
            let truth: Vec<TruthRecord> = truth
                .iter()
                .filter(|t| t.component == component)
                .cloned()
                .collect();
            let flags: Vec<Flag> = flags
                .iter()
                .filter(|f| f.component == component)
                .cloned()
                .collect();
            (
                component.to_string(),
                score_subset(&truth, whole, &flags, config),
            )
        })
        .collect();
    (overall, per_component)
}

/// `truth`: the failures judged (inside the window); `whole`: every record, for whether a
/// falsely flagged component was degrading at the time (its failure may come after `to`).
fn score_subset(
    truth: &[TruthRecord],
    whole: &[TruthRecord],
    flags: &[Flag],
    config: &ScoreConfig,
) -> Score {
    let mut score = Score {
        failures: truth.len(),
        flags: flags.len(),
        ..Score::default()
    };
    score.failures_with_warning = truth.iter().filter(|t| !t.sudden).count();
    let mut leads = Vec::new();
    let mut flagged_ahead_warning = 0;
    for failure in truth {
        let horizon = config.horizon(failure.kind.as_str(), &failure.component);
        let earliest = flags
            .iter()
            .filter(|f| f.device == failure.device && f.component == failure.component)
            .filter(|f| f.time <= failure.failure_at && f.time >= failure.failure_at - horizon)
            .map(|f| f.time)
            .min();
        if let Some(earliest) = earliest {
            score.flagged += 1;
            let lead = failure.failure_at - earliest;
            leads.push(lead.num_seconds() as f64 / 3600.0);
            if lead >= config.min_lead {
                score.flagged_24h_ahead += 1;
                if !failure.sudden {
                    flagged_ahead_warning += 1;
                }
            }
        }
    }
    let kinds: HashMap<&str, &str> = whole
        .iter()
        .map(|t| (t.device.as_str(), t.kind.as_str()))
        .collect();
    for flag in flags {
        let horizon = kinds.get(flag.device.as_str()).map_or_else(
            || config.horizon_of_unknown(&flag.device, &flag.component),
            |kind| config.horizon(kind, &flag.component),
        );
        if config.to.is_some_and(|to| flag.time + horizon > to) {
            score.unjudged_flags += 1;
            continue;
        }
        let matching = truth
            .iter()
            .filter(|t| t.device == flag.device && t.component == flag.component);
        let mut is_true = false;
        let mut is_late = false;
        for failure in matching {
            if flag.time <= failure.failure_at && flag.time >= failure.failure_at - horizon {
                is_true = true;
            } else if flag.time > failure.failure_at
                && flag.time <= failure.failure_at + config.grace_after
            {
                is_late = true;
            }
        }
        match (is_true, is_late) {
            (true, _) => score.true_flags += 1,
            (false, true) => score.late_flags += 1,
            (false, false) => {
                score.false_flags += 1;
                let degrading = whole.iter().any(|t| {
                    t.device == flag.device
                        && t.component == flag.component
                        && t.onset <= flag.time
                        && flag.time < t.failure_at
                });
                if degrading {
                    score.false_flags_on_degrading_parts += 1;
                }
            }
        }
    }
    let share = |n: usize, of: usize| if of > 0 { n as f64 / of as f64 } else { 0.0 };
    score.precision = share(score.true_flags, score.true_flags + score.false_flags);
    score.recall = share(score.flagged, score.failures);
    score.recall_24h_ahead = share(score.flagged_24h_ahead, score.failures);
    score.recall_ahead_of_warning_failures =
        share(flagged_ahead_warning, score.failures_with_warning);
    score.false_alarms_per_1000_device_days = if config.device_days > 0.0 {
        1000.0 * score.false_flags as f64 / config.device_days
    } else {
        0.0
    };
    leads.sort_by(f64::total_cmp);
    score.median_lead_time_hours = leads.get(leads.len() / 2).copied();
    score
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hours: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + hours * 3600, 0).unwrap()
    }

    #[test]
    fn flags_are_judged_against_the_truth() {
        let truth = vec![
            TruthRecord {
                device: "WM-1".into(),
                kind: Kind::Washer,
                component: "drum_bearing".into(),
                onset: at(0),
                failure_at: at(500),
                prevented: false,
                sudden: false,
            },
            TruthRecord {
                device: "WM-2".into(),
                kind: Kind::Washer,
                component: "drain_pump".into(),
                onset: at(99),
                failure_at: at(100),
                prevented: false,
                sudden: true,
            },
        ];
        let flags = vec![
            Flag {
                device: "WM-1".into(),
                component: "drum_bearing".into(),
                time: at(400),
            }, // 100 h ahead
            Flag {
                device: "WM-1".into(),
                component: "drum_bearing".into(),
                time: at(450),
            }, // same failure
            Flag {
                device: "WM-3".into(),
                component: "drum_bearing".into(),
                time: at(10),
            }, // false alarm
            Flag {
                device: "WM-2".into(),
                component: "drain_pump".into(),
                time: at(120),
            }, // late
        ];
        let config = ScoreConfig {
            horizons: HashMap::new(),
            default_horizon: chrono::Duration::days(30),
            min_lead: chrono::Duration::hours(24),
            grace_after: chrono::Duration::days(7),
            device_days: 3000.0,
            from: None,
            to: None,
        };
        let (overall, per_component) = score(&truth, &flags, &config);
        assert_eq!(overall.failures, 2);
        assert_eq!(overall.flagged, 1);
        assert_eq!(overall.flagged_24h_ahead, 1);
        assert_eq!(overall.true_flags, 2);
        assert_eq!(overall.false_flags, 1);
        assert_eq!(overall.late_flags, 1);
        assert_eq!(overall.false_flags_on_degrading_parts, 0);
        assert!((overall.precision - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(overall.recall, 0.5);
        assert_eq!(
            overall.recall_ahead_of_warning_failures, 1.0,
            "the one failure with warning was caught"
        );
        assert!((overall.false_alarms_per_1000_device_days - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(overall.median_lead_time_hours, Some(100.0));
        assert_eq!(per_component["drain_pump"].flagged, 0);
        assert_eq!(
            overall.recall_24h_ahead, 0.5,
            "over every failure, sudden included"
        );

        // The mode's own horizon: with 72 h the flag 100 h ahead is no longer in time.
        let narrow = ScoreConfig {
            horizons: HashMap::from([(
                ("washer".to_string(), "drum_bearing".to_string()),
                chrono::Duration::hours(72),
            )]),
            ..config.clone()
        };
        let (overall, _) = score(&truth, &flags, &narrow);
        assert_eq!(overall.flagged, 1, "the flag 50 h ahead");
        assert_eq!(overall.median_lead_time_hours, Some(50.0));
        assert_eq!(
            overall.false_flags, 2,
            "the flag 100 h ahead is now false too"
        );
        assert_eq!(
            overall.false_flags_on_degrading_parts, 1,
            "WM-1's bearing was degrading 100 h ahead; WM-3 was healthy"
        );
        // WM-3 has no truth record: its flag is judged with its kind's mode (the id's
        // prefix), as `forewarn evaluate` knows the device's kind (72 h), not the default
        // (30 d).
        let early = ScoreConfig {
            from: Some(at(0)),
            to: Some(at(100)),
            ..narrow.clone()
        };
        let (overall, _) = score(&truth, &flags, &early);
        assert_eq!((overall.flags, overall.false_flags), (1, 1));
        let (overall, _) = score(
            &truth,
            &flags,
            &ScoreConfig {
                horizons: HashMap::new(),
                ..early
            },
        );
        assert_eq!(overall.unjudged_flags, 1, "30 days run past the window");

        // A window: only failures and flags inside it; a flag whose horizon runs past the
        // end is unjudged whatever happens.
        let window = ScoreConfig {
            from: Some(at(300)),
            to: Some(at(480)),
            ..config.clone()
        };
        let (overall, _) = score(&truth, &flags, &window);
        assert_eq!(overall.failures, 0, "WM-1 fails at 500, after the window");
        assert_eq!(overall.flags, 2);
        assert_eq!(overall.unjudged_flags, 2);
        assert_eq!(overall.true_flags + overall.false_flags, 0);
    }

    #[test]
    fn only_a_flag_after_its_part_began_to_wear_counts_as_on_a_degrading_part() {
        let truth = vec![TruthRecord {
            device: "WM-1".into(),
            kind: Kind::Washer,
            component: "drum_bearing".into(),
            onset: at(100),
            failure_at: at(500),
            prevented: false,
            sudden: false,
        }];
        let flag = |device: &str, component: &str, hours| Flag {
            device: device.into(),
            component: component.into(),
            time: at(hours),
        };
        let flags = vec![
            flag("WM-1", "drum_bearing", 50),  // before the onset: healthy then
            flag("WM-1", "drum_bearing", 300), // wearing, fails 200 h later
            flag("WM-1", "drum_bearing", 450), // 50 h ahead: true
            flag("PMP-7", "bearing", 0),       // a healthy pump, no truth record
        ];
        let config = ScoreConfig {
            // Two kinds with a `bearing`: the pump's is found by the id's prefix.
            horizons: HashMap::from([
                (
                    ("washer".to_string(), "drum_bearing".to_string()),
                    chrono::Duration::hours(72),
                ),
                (
                    ("pump".to_string(), "bearing".to_string()),
                    chrono::Duration::hours(24),
                ),
                (
                    ("washer".to_string(), "bearing".to_string()),
                    chrono::Duration::days(60),
                ),
            ]),
            default_horizon: chrono::Duration::days(30),
            min_lead: chrono::Duration::hours(24),
            grace_after: chrono::Duration::days(7),
            device_days: 0.0,
            from: None,
            // The failure lies after the window: the flag at 300 is judged false there,
            // and whether the part was wearing comes from the whole truth.
            to: Some(at(480)),
        };
        let (overall, _) = score(&truth, &flags, &config);
        assert_eq!(overall.false_flags, 3, "{overall:?}");
        assert_eq!(overall.false_flags_on_degrading_parts, 1, "{overall:?}");
        assert_eq!(
            overall.unjudged_flags, 1,
            "the flag at 450: 72 h run past 480"
        );
    }
}
