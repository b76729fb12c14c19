//! Alert thresholds: a mode's own, chosen on its tuning events, or one shared by the modes
//! with too few failures to choose their own; and the figures of a window at a threshold.

use std::collections::HashMap;

use super::fit::{Judged, Trained};
use super::micros_to_time;
use crate::model::{self, EventMetrics, EventRules, FailureMode, ScoredPoint, Validation};

/// Below this many failures in the tuning window, thresholds and the winner are not
/// chosen on event-level cost (too few events to estimate it).
pub const MIN_FAILURES_FOR_EVENT_CHOICE: usize = 10;

/// `cost_false_alarm × false flags + cost_missed_failure × failures missed` as judged (the
/// test window's cost: unjudged flags count neither way).
pub fn judged_cost(events: &EventMetrics, mode: &FailureMode) -> f64 {
    mode.cost_false_alarm * events.false_flags as f64
        + mode.cost_missed_failure * (events.failures - events.flagged_24h_ahead) as f64
}

/// The figures of `judged` at `threshold`.
pub fn validation(
    judged: &Judged,
    failures: &HashMap<i32, Vec<i64>>,
    threshold: f64,
    mode: &FailureMode,
) -> Validation {
    let (events, _) = model::event_metrics(&judged.points, failures, threshold, &judged.rules);
    Validation {
        from: micros_to_time(judged.rules.from),
        to: micros_to_time(judged.rules.to),
        examples: model::example_metrics(&judged.probabilities, &judged.labels, threshold),
        expected_cost: judged_cost(&events, mode),
        events,
    }
}

/// The alert threshold: the one minimising expected event-level cost on the tuning window
/// when it holds enough failures to estimate that cost. Otherwise, provisionally, the Bayes
/// decision threshold of calibrated probabilities,
/// `cost_false_alarm / (cost_false_alarm + cost_missed_failure)`; [`pool_thresholds`] then
/// replaces it with one threshold chosen on the pooled tuning events of all such modes.
pub(super) fn choose_threshold(
    points: &[ScoredPoint],
    failures: &HashMap<i32, Vec<i64>>,
    rules: &EventRules,
    mode: &FailureMode,
) -> (f64, f64, EventMetrics) {
    let (threshold, cost, events) = model::events::choose_threshold(
        points,
        failures,
        rules,
        mode.cost_false_alarm,
        mode.cost_missed_failure,
    );
    if events.failures >= MIN_FAILURES_FOR_EVENT_CHOICE {
        return (threshold, cost, events);
    }
    let bayes = mode.cost_false_alarm / (mode.cost_false_alarm + mode.cost_missed_failure);
    let (events, _) = model::event_metrics(points, failures, bayes, rules);
    let cost = model::expected_cost(&events, mode.cost_false_alarm, mode.cost_missed_failure);
    (bayes, cost, events)
}

/// Modes with too few tuning failures to choose their own threshold share one: the
/// calibrated probability that minimises the summed expected cost of all of them on their
/// tuning windows (probabilities are calibrated per mode, so one threshold means the same
/// risk everywhere). Tens of pooled failures estimate it far better than two or three per
/// mode. The test windows play no part.
pub fn pool_thresholds(models: &mut [Trained]) {
    let thin: Vec<usize> = (0..models.len())
        .filter(|&i| models[i].model.validation.events.failures < MIN_FAILURES_FOR_EVENT_CHOICE)
        .collect();
    if thin.is_empty() {
        return;
    }
    let cost_at = |trained: &Trained, threshold: f64| {
        let (events, _) = model::event_metrics(
            &trained.tuning.points,
            &trained.failures,
            threshold,
            &trained.tuning.rules,
        );
        let mode = &trained.model.mode;
        model::expected_cost(&events, mode.cost_false_alarm, mode.cost_missed_failure)
    };
    let mut grid: Vec<f64> = (1..100).map(|i| i as f64 / 100.0).collect();
    grid.extend([0.995, 0.999]);
    let mut best = (f64::INFINITY, 0.5);
    for &threshold in &grid {
        let total: f64 = thin.iter().map(|&i| cost_at(&models[i], threshold)).sum();
        if total < best.0 {
            best = (total, threshold);
        }
    }
    let (pooled_cost, threshold) = best;
    let failures: usize = thin
        .iter()
        .map(|&i| models[i].model.validation.events.failures)
        .sum();
    tracing::info!(
        threshold,
        pooled_cost,
        modes = thin.len(),
        failures,
        "pooled threshold for modes with few tuning failures"
    );
    for &i in &thin {
        let trained = &mut models[i];
        let mut figures = validation(
            &trained.tuning,
            &trained.failures,
            threshold,
            &trained.model.mode,
        );
        let mode = &trained.model.mode;
        figures.expected_cost = model::expected_cost(
            &figures.events,
            mode.cost_false_alarm,
            mode.cost_missed_failure,
        );
        trained.model.threshold = threshold;
        trained.model.validation = figures;
        trained.model.choice.push_str(&format!(
            "; threshold {threshold:.2} chosen on the pooled tuning events of {} modes with fewer than {MIN_FAILURES_FOR_EVENT_CHOICE} failures each ({failures} failures)",
            thin.len()
        ));
    }
}

/// Judges every trained mode on its test window at its final threshold.
pub fn judge_tests(models: &mut [Trained]) {
    for trained in models {
        let figures = validation(
            &trained.test,
            &trained.failures,
            trained.model.threshold,
            &trained.model.mode,
        );
        trained.model.test = Some(figures);
    }
}
