//! Scoring forewarn's flags (tickets, alerts) against the simulator's ground truth:
//! precision, recall, lead time, false alarms — exactly, since the truth is known.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::sim::TruthRecord;

/// A prediction that a device's component will fail (a proactive ticket, an alert).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Flag {
    pub device: String,
    pub component: String,
    pub time: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy)]
pub struct ScoreConfig {
    /// A flag counts for a failure when it comes at most this long before it.
    pub lookahead: chrono::Duration,
    /// "Flagged early enough": at least this long before the failure.
    pub min_lead: chrono::Duration,
    /// Flags up to this long after a failure (during the repair) are late, not false.
    pub grace_after: chrono::Duration,
    /// Device-days observed (for false alarms per 1,000 device-days).
    pub device_days: f64,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Score {
    pub failures: usize,
    /// Failures that gave warning (not sudden): the ones a model can catch.
    pub failures_with_warning: usize,
    pub flagged: usize,
    pub flagged_24h_ahead: usize,
    pub flags: usize,
    pub true_flags: usize,
    pub late_flags: usize,
    pub false_flags: usize,
    pub precision: f64,
    pub recall: f64,
    /// Share of failures with warning flagged at least `min_lead` ahead.
    pub recall_ahead_of_warning_failures: f64,
    pub false_alarms_per_1000_device_days: f64,
    pub median_lead_time_hours: Option<f64>,
}

/// Scores `flags` against `truth`, overall and per component.
pub fn score(
    truth: &[TruthRecord],
    flags: &[Flag],
    config: &ScoreConfig,
) -> (Score, HashMap<String, Score>) {
    let overall = score_subset(truth, flags, config);
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
            (component.to_string(), score_subset(&truth, &flags, config))
        })
        .collect();
    (overall, per_component)
}

fn score_subset(truth: &[TruthRecord], flags: &[Flag], config: &ScoreConfig) -> Score {
    let mut score = Score {
        failures: truth.len(),
        flags: flags.len(),
        ..Score::default()
    };
    score.failures_with_warning = truth.iter().filter(|t| !t.sudden).count();
    let mut leads = Vec::new();
    let mut flagged_ahead_warning = 0;
    for failure in truth {
        let earliest = flags
            .iter()
            .filter(|f| f.device == failure.device && f.component == failure.component)
            .filter(|f| {
                f.time <= failure.failure_at && f.time >= failure.failure_at - config.lookahead
            })
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
    for flag in flags {
        let matching = truth
            .iter()
            .filter(|t| t.device == flag.device && t.component == flag.component);
        let mut is_true = false;
        let mut is_late = false;
        for failure in matching {
            if flag.time <= failure.failure_at && flag.time >= failure.failure_at - config.lookahead
            {
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
            (false, false) => score.false_flags += 1,
        }
    }
    let judged = score.true_flags + score.false_flags;
    score.precision = if judged > 0 {
        score.true_flags as f64 / judged as f64
    } else {
        0.0
    };
    score.recall = if score.failures > 0 {
        score.flagged as f64 / score.failures as f64
    } else {
        0.0
    };
    score.recall_ahead_of_warning_failures = if score.failures_with_warning > 0 {
        flagged_ahead_warning as f64 / score.failures_with_warning as f64
    } else {
        0.0
    };
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
    use crate::fleet::Kind;

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
            lookahead: chrono::Duration::days(30),
            min_lead: chrono::Duration::hours(24),
            grace_after: chrono::Duration::days(7),
            device_days: 3000.0,
        };
        let (overall, per_component) = score(&truth, &flags, &config);
        assert_eq!(overall.failures, 2);
        assert_eq!(overall.flagged, 1);
        assert_eq!(overall.flagged_24h_ahead, 1);
        assert_eq!(overall.true_flags, 2);
        assert_eq!(overall.false_flags, 1);
        assert_eq!(overall.late_flags, 1);
        assert!((overall.precision - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(overall.recall, 0.5);
        assert_eq!(
            overall.recall_ahead_of_warning_failures, 1.0,
            "the one failure with warning was caught"
        );
        assert!((overall.false_alarms_per_1000_device_days - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(overall.median_lead_time_hours, Some(100.0));
        assert_eq!(per_component["drain_pump"].flagged, 0);
    }
}
