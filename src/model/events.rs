//! Event-level metrics, the ones a dispatcher feels: which failures were flagged, how far
//! ahead, and how many visits were for nothing.
//!
//! A **flag** is what would open a proactive ticket: the second consecutive scored point of
//! a device at or above the threshold (one point alone is noise: confirming it costs one
//! scoring interval of lead time and removes about a tenth of the false alarms). For
//! [`SETTLE`] after a failure the component raises no flag: it was just replaced, and the
//! windows still describe the broken one. While that ticket is open (one horizon, or until the component
//! fails) the same device raises no new flag. A flag is **true** when the component fails
//! within the horizon after it, **false** when it does not and the whole horizon lies in the
//! evaluated window, and **unjudged** when the horizon runs past the window's end with no
//! failure yet (its outcome is unknown, so it counts neither way).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::features::{DAY_MICROS, HOUR_MICROS};

/// After a failure, how long the same component raises no new flag (the feature windows
/// still hold the failed part's signature; the long window is 7 days).
pub const SETTLE: i64 = 7 * DAY_MICROS;

/// A device's failure probability as of `time` (µs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredPoint {
    pub device: i32,
    pub time: i64,
    pub probability: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventRules {
    pub horizon: i64,
    /// "Flagged early enough" (24 h).
    pub min_lead: i64,
    /// The evaluated window, µs.
    pub from: i64,
    pub to: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventMetrics {
    /// Failures in the window that could have been flagged `min_lead` ahead in it.
    pub failures: usize,
    /// Failures with a flag before them (within one horizon).
    pub flagged: usize,
    pub flagged_24h_ahead: usize,
    pub flags: usize,
    pub true_flags: usize,
    pub false_flags: usize,
    pub unjudged_flags: usize,
    /// true / (true + false) flags.
    pub precision: f64,
    /// flagged / failures.
    pub recall: f64,
    /// flagged_24h_ahead / failures.
    pub recall_24h_ahead: f64,
    pub false_alarms_per_1000_device_days: f64,
    pub median_lead_time_hours: Option<f64>,
    /// The lead-time distribution: 10th and 90th percentiles.
    pub lead_time_p10_hours: Option<f64>,
    pub lead_time_p90_hours: Option<f64>,
    pub device_days: f64,
    /// Every lead time (hours), sorted: for sums over modes, and in the card the evidence
    /// dispatch plans visits with (`dispatch::window`). Absent from older cards.
    #[serde(default)]
    pub lead_times_hours: Vec<f64>,
}

/// A raised flag.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RaisedFlag {
    pub device: i32,
    pub time: i64,
    pub probability: f64,
}

/// Flags from `points` (any order) at `threshold`; `failures` close open tickets.
pub fn raise_flags(
    points: &[ScoredPoint],
    threshold: f64,
    horizon: i64,
    failures: &HashMap<i32, Vec<i64>>,
) -> Vec<RaisedFlag> {
    let mut by_device: HashMap<i32, Vec<&ScoredPoint>> = HashMap::new();
    for point in points {
        by_device.entry(point.device).or_default().push(point);
    }
    let mut flags = Vec::new();
    let mut devices: Vec<_> = by_device.into_iter().collect();
    devices.sort_by_key(|(device, _)| *device);
    for (device, mut list) in devices {
        list.sort_by_key(|p| p.time);
        let device_failures = failures.get(&device);
        let mut open_since: Option<i64> = None;
        let mut previous_above = false;
        for point in list {
            // A component that failed less than SETTLE ago has just been replaced, but
            // the long windows still describe the old part: no new ticket for it yet.
            let settling = device_failures.is_some_and(|f| {
                f.iter()
                    .any(|&t| t <= point.time && point.time < t + SETTLE)
            });
            if settling {
                previous_above = false;
                continue;
            }
            let above = point.probability >= threshold;
            let confirmed = above && previous_above;
            previous_above = above;
            if let Some(since) = open_since {
                let failed_since = device_failures
                    .is_some_and(|f| f.iter().any(|&t| t > since && t <= point.time));
                if point.time > since + horizon || failed_since {
                    open_since = None;
                }
            }
            if open_since.is_none() && confirmed {
                open_since = Some(point.time);
                flags.push(RaisedFlag {
                    device,
                    time: point.time,
                    probability: point.probability,
                });
            }
        }
    }
    flags
}

/// Judges the flags raised from `points` at `threshold` against `failures`
/// (device → failure times of this mode).
pub fn event_metrics(
    points: &[ScoredPoint],
    failures: &HashMap<i32, Vec<i64>>,
    threshold: f64,
    rules: &EventRules,
) -> (EventMetrics, Vec<RaisedFlag>) {
    let flags = raise_flags(points, threshold, rules.horizon, failures);
    let mut metrics = EventMetrics {
        flags: flags.len(),
        ..EventMetrics::default()
    };
    let mut span: HashMap<i32, (i64, i64)> = HashMap::new();
    for point in points {
        let entry = span.entry(point.device).or_insert((point.time, point.time));
        entry.0 = entry.0.min(point.time);
        entry.1 = entry.1.max(point.time);
    }
    metrics.device_days = span
        .values()
        .map(|(first, last)| (last - first + HOUR_MICROS) as f64 / DAY_MICROS as f64)
        .sum();

    // One rule for every flag: a flag is judged only when its whole horizon lies inside
    // the window. One whose horizon runs past the end is unjudged whatever happened before
    // the end, so the window's last horizon can add neither true nor false flags.
    for flag in &flags {
        if flag.time + rules.horizon > rules.to {
            metrics.unjudged_flags += 1;
            continue;
        }
        let fails = failures.get(&flag.device).is_some_and(|times| {
            times
                .iter()
                .any(|&t| t > flag.time && t <= flag.time + rules.horizon)
        });
        if fails {
            metrics.true_flags += 1;
        } else {
            metrics.false_flags += 1;
        }
    }
    let mut leads = Vec::new();
    for (device, times) in failures {
        for &failure in times {
            if failure < rules.from + rules.min_lead || failure > rules.to {
                continue;
            }
            metrics.failures += 1;
            let earliest = flags
                .iter()
                .filter(|f| f.device == *device && f.time < failure)
                .filter(|f| f.time >= failure - rules.horizon)
                .map(|f| f.time)
                .min();
            if let Some(earliest) = earliest {
                metrics.flagged += 1;
                let lead = failure - earliest;
                leads.push(lead as f64 / HOUR_MICROS as f64);
                if lead >= rules.min_lead {
                    metrics.flagged_24h_ahead += 1;
                }
            }
        }
    }
    let judged = metrics.true_flags + metrics.false_flags;
    metrics.precision = ratio(metrics.true_flags, judged);
    metrics.recall = ratio(metrics.flagged, metrics.failures);
    metrics.recall_24h_ahead = ratio(metrics.flagged_24h_ahead, metrics.failures);
    metrics.false_alarms_per_1000_device_days = if metrics.device_days > 0.0 {
        1000.0 * metrics.false_flags as f64 / metrics.device_days
    } else {
        0.0
    };
    leads.sort_by(f64::total_cmp);
    metrics.median_lead_time_hours = median(&leads);
    metrics.lead_time_p10_hours = percentile(&leads, 0.1);
    metrics.lead_time_p90_hours = percentile(&leads, 0.9);
    metrics.lead_times_hours = leads;
    (metrics, flags)
}

fn ratio(numerator: usize, denominator: usize) -> f64 {
    if denominator > 0 {
        numerator as f64 / denominator as f64
    } else {
        0.0
    }
}

pub fn median(sorted: &[f64]) -> Option<f64> {
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[n / 2]),
        n => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    Some(sorted[index])
}

/// `cost_false_alarm × false flags + cost_missed_failure × failures not flagged 24 h
/// ahead`, where the unjudged flags (horizon past the window's end) count as false in the
/// share the judged ones are: a window's last horizon can add failures caught but never a
/// false flag, so without this, choosing a threshold on a window would favour flagging
/// everything near its end.
pub fn expected_cost(
    metrics: &EventMetrics,
    cost_false_alarm: f64,
    cost_missed_failure: f64,
) -> f64 {
    let judged = metrics.true_flags + metrics.false_flags;
    let false_share = if judged > 0 {
        metrics.false_flags as f64 / judged as f64
    } else {
        1.0
    };
    let false_flags = metrics.false_flags as f64 + metrics.unjudged_flags as f64 * false_share;
    let missed = metrics.failures - metrics.flagged_24h_ahead;
    cost_false_alarm * false_flags + cost_missed_failure * missed as f64
}

/// A threshold no calibrated probability reaches: the mode never flags.
pub const NEVER: f64 = 1.01;

/// The threshold minimising [`expected_cost`] over the distinct probabilities at the top
/// of the ranking ([`NEVER`] among them).
pub fn choose_threshold(
    points: &[ScoredPoint],
    failures: &HashMap<i32, Vec<i64>>,
    rules: &EventRules,
    cost_false_alarm: f64,
    cost_missed_failure: f64,
) -> (f64, f64, EventMetrics) {
    let mut candidates: Vec<f64> = points.iter().map(|p| p.probability).collect();
    candidates.sort_by(|a, b| b.total_cmp(a));
    candidates.dedup();
    // The top few thousand distinct values, thinned to about 300 evaluations.
    candidates.truncate(5000);
    let step = (candidates.len() / 300).max(1);
    let mut best: Option<(f64, f64, EventMetrics)> = None;
    for threshold in candidates.iter().step_by(step).copied().chain([NEVER]) {
        let (metrics, _) = event_metrics(points, failures, threshold, rules);
        let cost = expected_cost(&metrics, cost_false_alarm, cost_missed_failure);
        // On ties prefer the higher threshold (fewer visits for the same cost).
        if best
            .as_ref()
            .is_none_or(|(_, best_cost, _)| cost < *best_cost)
        {
            best = Some((threshold, cost, metrics));
        }
    }
    best.unwrap_or((NEVER, 0.0, EventMetrics::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(device: i32, hour: i64, probability: f64) -> ScoredPoint {
        ScoredPoint {
            device,
            time: hour * HOUR_MICROS,
            probability,
        }
    }

    #[test]
    fn flags_are_raised_once_per_ticket_and_judged() {
        let horizon = 72 * HOUR_MICROS;
        let mut points = Vec::new();
        for hour in 0..400 {
            // Device 1 degrades before failing at hour 200; device 2 has a two-hour false
            // alarm at 50 and a one-point blip at 100 (not confirmed: no flag).
            // Its risk stays high for 100 h after the failure (the windows still hold the
            // old part): settling, no new flag.
            let p1 = if (150..300).contains(&hour) { 0.9 } else { 0.1 };
            let p2 = if hour == 50 || hour == 51 || hour == 100 {
                0.8
            } else {
                0.05
            };
            points.push(point(1, hour, p1));
            points.push(point(2, hour, p2));
        }
        let failures = HashMap::from([(1, vec![200 * HOUR_MICROS])]);
        let rules = EventRules {
            horizon,
            min_lead: 24 * HOUR_MICROS,
            from: 0,
            to: 400 * HOUR_MICROS,
        };
        let (metrics, flags) = event_metrics(&points, &failures, 0.5, &rules);
        assert_eq!(flags.len(), 2, "{flags:?}"); // one per episode, not one per hour
        assert_eq!(metrics.failures, 1);
        assert_eq!(metrics.flagged_24h_ahead, 1);
        assert_eq!(metrics.true_flags, 1);
        assert_eq!(metrics.false_flags, 1);
        // Above from hour 150, confirmed by the second point at 151.
        assert_eq!(metrics.median_lead_time_hours, Some(49.0));
        assert!((metrics.device_days - 2.0 * 400.0 / 24.0).abs() < 1e-9);

        let (threshold, cost, best) = choose_threshold(&points, &failures, &rules, 1.0, 10.0);
        assert!(threshold > 0.8 && threshold <= 0.9, "{threshold}");
        assert_eq!(cost, 0.0);
        assert_eq!(best.false_flags, 0);
    }

    #[test]
    fn a_flag_whose_horizon_runs_past_the_window_is_unjudged() {
        let points = vec![point(1, 389, 0.9), point(1, 390, 0.9)];
        let rules = EventRules {
            horizon: 72 * HOUR_MICROS,
            min_lead: 24 * HOUR_MICROS,
            from: 0,
            to: 400 * HOUR_MICROS,
        };
        let (metrics, _) = event_metrics(&points, &HashMap::new(), 0.5, &rules);
        assert_eq!(metrics.unjudged_flags, 1);
        assert_eq!(metrics.false_flags, 0);
        // The same flag with its failure before the window's end: unjudged too, never true.
        let failures = HashMap::from([(1, vec![395 * HOUR_MICROS])]);
        let (metrics, _) = event_metrics(&points, &failures, 0.5, &rules);
        assert_eq!(metrics.unjudged_flags, 1);
        assert_eq!(metrics.true_flags, 0);
        assert_eq!(metrics.precision, 0.0);
        // The failure still counts as flagged for recall: it lies inside the window.
        assert_eq!(metrics.failures, 1);
        assert_eq!(metrics.flagged, 1);
    }
}
