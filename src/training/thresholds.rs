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

/// [`pool_thresholds`] among the modes on the same tuning and test windows only: another
/// mode's tuning window may overlap the test window of a mode on its own, shorter windows
/// (`Split::shrunk`), and a test window must stay untouched by every choice. The modes
/// keep their order.
pub fn pool_thresholds_by_windows(models: &mut [Trained]) {
    let windows = |t: &Trained| (t.tuning.rules.from, t.tuning.rules.to, t.test.rules.from);
    let order: Vec<_> = models
        .iter()
        .map(|t| (t.model.mode.kind.clone(), t.model.mode.component.clone()))
        .collect();
    models.sort_by_key(windows);
    for same in models.chunk_by_mut(|a, b| windows(a) == windows(b)) {
        pool_thresholds(same);
    }
    models.sort_by_key(|t| {
        order.iter().position(|(kind, component)| {
            *kind == t.model.mode.kind && *component == t.model.mode.component
        })
    });
}

/// Modes with too few tuning failures to choose their own threshold share one: the
/// calibrated probability that minimises the summed expected cost of all of them on their
/// tuning windows (probabilities are calibrated per mode, so one threshold means the same
/// risk everywhere). Tens of pooled failures estimate it far better than two or three per
/// mode. The test windows play no part.
///
/// A thin mode that had failures in its tuning window never flags ([`model::NEVER`]) when
/// it has no skill there (it caught too few of its failures for its false alarms: a model
/// a season or a drift then turns into a flood): when no threshold makes its tuning events
/// cost less than never flagging (a tie abstains: a threshold that flags nothing costs
/// exactly never), or, among the rest, when it costs more than never flagging at the
/// threshold the *other* remaining thin modes share. The shared threshold is then chosen without it. Judged at
/// the others' threshold, not at one it helped choose: a flooding mode drags the shared
/// threshold up until it is quiet, silencing the modes with skill (judged at its own
/// cheapest of the thresholds the others find equally good); and the blind ones go
/// first, or two flooding modes would each hold the other's threshold up.
pub fn pool_thresholds(models: &mut [Trained]) {
    let mut thin: Vec<usize> = (0..models.len())
        .filter(|&i| models[i].model.validation.events.failures < MIN_FAILURES_FOR_EVENT_CHOICE)
        .collect();
    if thin.is_empty() {
        return;
    }
    let mut grid: Vec<f64> = (1..100).map(|i| i as f64 / 100.0).collect();
    grid.extend([0.995, 0.999]);
    // Each thin mode's tuning cost at every threshold of the grid, and never flagging.
    let costs: HashMap<usize, (Vec<f64>, f64)> = thin
        .iter()
        .map(|&i| {
            let trained = &models[i];
            let at: Vec<f64> = grid.iter().map(|&t| cost_at(trained, t)).collect();
            (i, (at, cost_at(trained, model::NEVER)))
        })
        .collect();
    // The summed cost of `modes` at every threshold of the grid.
    let totals = |modes: &[usize]| -> Vec<f64> {
        (0..grid.len())
            .map(|k| modes.iter().map(|i| costs[i].0[k]).sum())
            .collect()
    };
    // The index in the grid of the threshold minimising the summed cost of `modes` (the
    // lowest on ties), and that cost.
    let shared = |modes: &[usize]| -> (f64, usize) {
        let totals = totals(modes);
        let mut best = (totals[0], 0);
        for (k, &total) in totals.iter().enumerate().skip(1) {
            if total < best.0 {
                best = (total, k);
            }
        }
        best
    };
    let had_failures = |i: usize| models[i].model.validation.events.failures > 0;
    // First the modes that no threshold at all makes cheaper than never flagging: blind by
    // themselves, whatever the others do. Judging them only at the others' threshold would
    // let two flooding modes each push the other's up until both look quiet.
    let mut abstaining = Vec::new();
    for &i in &thin {
        let (at, never) = (&costs[&i].0, costs[&i].1);
        let best = at.iter().copied().fold(f64::INFINITY, f64::min);
        if had_failures(i) && best >= never {
            abstaining.push((i, format!(
                "; never flags: no threshold makes its own tuning events cost less than never flagging ({never:.0}; {best:.0} at best)"
            )));
        }
    }
    thin.retain(|i| !abstaining.iter().any(|(j, _)| j == i));
    let mut no_skill_shared = Vec::new();
    for &i in &thin {
        if !had_failures(i) {
            continue;
        }
        let others: Vec<usize> = thin.iter().copied().filter(|&j| j != i).collect();
        let others = totals(if others.is_empty() { &thin } else { &others });
        let least = others.iter().copied().fold(f64::INFINITY, f64::min);
        // Among the thresholds the others find equally good, the mode's own cheapest: a
        // mode that is quiet at every threshold (no counted failures) would otherwise pin
        // the judgement at the lowest one, where any mode flags.
        let k = (0..grid.len())
            .filter(|&k| others[k] <= least + 1e-9)
            .min_by(|&a, &b| costs[&i].0[a].total_cmp(&costs[&i].0[b]).then(a.cmp(&b)))
            .unwrap_or(0);
        let (at, never) = (costs[&i].0[k], costs[&i].1);
        if at > never {
            no_skill_shared.push((i, format!(
                "; never flags: at the threshold the other modes with fewer than {MIN_FAILURES_FOR_EVENT_CHOICE} tuning failures share ({:.2}) its own tuning events cost {at:.0}, more than never flagging ({never:.0})",
                grid[k]
            )));
        }
    }
    thin.retain(|i| !no_skill_shared.iter().any(|(j, _)| j == i));
    for (i, why) in abstaining.into_iter().chain(no_skill_shared) {
        let trained = &mut models[i];
        set_threshold(trained, model::NEVER);
        trained.model.choice.push_str(&why);
        tracing::info!(mode = %trained.model.mode.name(), %why, "no skill on the tuning window: the mode never flags");
    }
    if thin.is_empty() {
        return;
    }
    let (pooled_cost, k) = shared(&thin);
    let threshold = grid[k];
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
        set_threshold(trained, threshold);
        trained.model.choice.push_str(&format!(
            "; threshold {threshold:.2} chosen on the pooled tuning events of {} modes with fewer than {MIN_FAILURES_FOR_EVENT_CHOICE} failures each ({failures} failures)",
            thin.len()
        ));
    }
}

/// The expected cost of `trained`'s tuning events at `threshold`.
fn cost_at(trained: &Trained, threshold: f64) -> f64 {
    let (events, _) = model::event_metrics(
        &trained.tuning.points,
        &trained.failures,
        threshold,
        &trained.tuning.rules,
    );
    let mode = &trained.model.mode;
    model::expected_cost(&events, mode.cost_false_alarm, mode.cost_missed_failure)
}

/// `trained`'s threshold, and its tuning figures at it.
fn set_threshold(trained: &mut Trained, threshold: f64) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{DAY_MICROS, FeatureSpec, HOUR_MICROS, KindSchema};
    use crate::model::{Calibration, Classifier, ModeModel};

    /// A thin mode's tuning window: 30 days of hourly points for 20 devices, devices 0 and
    /// 1 failing on day 20; `risky(device, hours before the failure or None)` is the
    /// probability of a point.
    fn trained(component: &str, risky: impl Fn(i32, Option<i64>) -> f64) -> Trained {
        let mode = FailureMode {
            kind: "washer".into(),
            component: component.into(),
            horizon_hours: 72.0,
            cost_false_alarm: 100.0,
            cost_missed_failure: 400.0,
        };
        let failure = 20 * DAY_MICROS;
        let failures: HashMap<i32, Vec<i64>> = [(0, vec![failure]), (1, vec![failure])].into();
        let mut points = Vec::new();
        for device in 0..20 {
            for hour in 0..30 * 24 {
                let time = hour * HOUR_MICROS;
                let before = failures
                    .get(&device)
                    .and_then(|f| f.iter().find(|&&f| f > time))
                    .map(|&f| (f - time) / HOUR_MICROS);
                if failures.contains_key(&device) && before.is_none() {
                    continue;
                }
                points.push(ScoredPoint {
                    device,
                    time,
                    probability: risky(device, before),
                });
            }
        }
        let tuning = Judged {
            points,
            rules: EventRules {
                horizon: 72 * HOUR_MICROS,
                min_lead: 24 * HOUR_MICROS,
                from: 0,
                to: 30 * DAY_MICROS,
            },
            probabilities: Vec::new(),
            labels: Vec::new(),
        };
        let validation = validation(&tuning, &failures, 0.2, &mode);
        let model = ModeModel {
            mode,
            spec: FeatureSpec::default(),
            schema: KindSchema {
                kind: "washer".into(),
                metrics: Vec::new(),
                event_codes: Vec::new(),
                components: Vec::new(),
                models: Vec::new(),
            },
            feature_names: Vec::new(),
            classifier: Classifier::Logistic {
                means: Vec::new(),
                scales: Vec::new(),
                weights: Vec::new(),
                intercept: 0.0,
                few_features: false,
            },
            tested_classifier: None,
            refitted_until: None,
            calibration: Calibration { a: 1.0, b: 0.0 },
            threshold: 0.2,
            validation,
            test: None,
            baselines: Vec::new(),
            horizon_source: String::new(),
            importances: Vec::new(),
            candidates: Vec::new(),
            choice: String::new(),
        };
        let test = Judged {
            points: Vec::new(),
            rules: tuning.rules,
            probabilities: Vec::new(),
            labels: Vec::new(),
        };
        Trained {
            model,
            failures,
            tuning,
            test,
        }
    }

    #[test]
    fn a_thin_mode_with_no_skill_on_its_tuning_failures_never_flags() {
        // Skilled: risk rises two days before each failure. Flooding: it sees one of its
        // two failures coming (cheaper than never flagging above 0.6, so not blind), but at
        // the skilled mode's threshold it alarms on three healthy devices all month, and
        // pooled with it would drag the shared threshold above 0.6.
        let skilled = trained("drum_bearing", |_, before| match before {
            Some(hours) if hours <= 48 => 0.6,
            _ => 0.05,
        });
        let blind = trained("drain_pump", |device, before| match (device, before) {
            (0, Some(hours)) if hours <= 48 => 0.95,
            (5..8, _) => 0.6,
            _ => 0.05,
        });
        let mut models = vec![skilled, blind];
        pool_thresholds(&mut models);
        let (skilled, blind) = (&models[0].model, &models[1].model);
        assert!(skilled.threshold <= 0.6, "{}", skilled.choice);
        assert_eq!(skilled.validation.events.flagged_24h_ahead, 2);
        assert_eq!(blind.threshold, model::NEVER, "{}", blind.choice);
        assert!(blind.choice.contains("share ("), "{}", blind.choice);
        assert_eq!(blind.validation.events.flags, 0);
    }

    #[test]
    fn thresholds_are_pooled_only_among_modes_on_the_same_windows() {
        // `noisy` catches its failures above 0.35, where three healthy devices sit all
        // month; `faint` sees its failures coming at 0.3 only. Sharing windows, `noisy` is
        // judged at the threshold `faint` chooses, floods there and never flags; on windows
        // of its own each keeps its own threshold.
        let noisy = || {
            trained("drum_bearing", |device, before| match (device, before) {
                (_, Some(hours)) if hours <= 48 => 0.6,
                (5..8, _) => 0.35,
                _ => 0.05,
            })
        };
        let faint = || {
            trained("drain_pump", |_, before| match before {
                Some(hours) if hours <= 48 => 0.3,
                _ => 0.05,
            })
        };
        let mut shared = vec![noisy(), faint()];
        pool_thresholds_by_windows(&mut shared);
        assert_eq!(
            shared[0].model.threshold,
            model::NEVER,
            "{}",
            shared[0].model.choice
        );

        // The faint mode on its own, earlier windows (as `Split::shrunk` gives).
        let mut own = faint();
        own.tuning.rules.from -= DAY_MICROS;
        own.test.rules.from -= DAY_MICROS;
        let mut apart = vec![noisy(), own];
        pool_thresholds_by_windows(&mut apart);
        assert_eq!(
            apart[0].model.mode.component, "drum_bearing",
            "the order is kept"
        );
        let (noisy, faint) = (&apart[0].model, &apart[1].model);
        assert!(
            noisy.threshold > 0.35 && noisy.threshold <= 0.6,
            "{}",
            noisy.choice
        );
        assert_eq!(noisy.validation.events.flagged_24h_ahead, 2);
        assert!(faint.threshold <= 0.3, "{}", faint.choice);
        assert_eq!(faint.validation.events.flagged_24h_ahead, 2);
    }

    #[test]
    fn a_quiet_mode_without_failures_does_not_pin_the_judgement_at_the_lowest_threshold() {
        let skilled = trained("drum_bearing", |_, before| match before {
            Some(hours) if hours <= 48 => 0.6,
            _ => 0.05,
        });
        let blind = trained("drain_pump", |device, _| {
            if (5..8).contains(&device) { 0.6 } else { 0.05 }
        });
        // No failure it can be judged on (one in the window's first day counts none), and
        // below 0.01 everywhere: every threshold costs it nothing.
        let mut quiet = trained("door_lock", |_, _| 0.005);
        quiet.failures.clear();
        quiet.model.validation = validation(&quiet.tuning, &quiet.failures, 0.2, &quiet.model.mode);
        let mut models = vec![skilled, blind, quiet];
        pool_thresholds(&mut models);
        let skilled = &models[0].model;
        assert!(skilled.threshold <= 0.6, "{}", skilled.choice);
        assert_eq!(skilled.validation.events.flagged_24h_ahead, 2);
        assert_eq!(models[1].model.threshold, model::NEVER);
    }

    #[test]
    fn two_blind_thin_modes_do_not_hold_each_others_threshold_up() {
        // Judged only at the threshold the others share, each blind mode would look quiet:
        // the other one's flood keeps that threshold above 0.6, silencing the skilled mode.
        let skilled = trained("drum_bearing", |_, before| match before {
            Some(hours) if hours <= 48 => 0.6,
            _ => 0.05,
        });
        let blind = |component: &str, devices: std::ops::Range<i32>| {
            trained(component, move |device, _| {
                if devices.contains(&device) { 0.6 } else { 0.05 }
            })
        };
        let mut models = vec![
            skilled,
            blind("drain_pump", 5..8),
            blind("door_lock", 8..11),
        ];
        pool_thresholds(&mut models);
        let skilled = &models[0].model;
        assert!(skilled.threshold <= 0.6, "{}", skilled.choice);
        assert_eq!(skilled.validation.events.flagged_24h_ahead, 2);
        for blind in &models[1..] {
            let blind = &blind.model;
            assert_eq!(blind.threshold, model::NEVER, "{}", blind.choice);
            assert!(blind.choice.contains("no threshold"), "{}", blind.choice);
            assert_eq!(blind.validation.events.flags, 0);
        }
    }
}
