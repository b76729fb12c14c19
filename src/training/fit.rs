//! One failure mode: candidates scored out of fold on the tuning window, calibrated, given
//! a threshold, compared; the winner refitted on everything before the test window and
//! judged there; simple rules judged beside it.

use std::collections::HashMap;
use std::time::Instant;

use super::TrainingError;
use super::micros_to_time;
use super::split::Split;
use crate::config::TrainConfig;
use crate::features::{FeatureSpec, FeatureTable, HOUR_MICROS};
use crate::history::KindData;
use crate::model::{
    self, Algorithm, Augment, Baseline, Calibration, CandidateReport, Classifier, EventMetrics,
    EventRules, FailureMode, ModeModel, ScoredPoint, TrainingSet, Validation,
};

/// Below this many failures in the tuning window, thresholds and the winner are not
/// chosen on event-level cost (too few events to estimate it).
pub const MIN_FAILURES_FOR_EVENT_CHOICE: usize = 10;

/// One window as scored by a mode's model.
pub struct Judged {
    pub points: Vec<ScoredPoint>,
    pub rules: EventRules,
    /// Calibrated probabilities and labels of the labelled examples.
    pub probabilities: Vec<f64>,
    pub labels: Vec<bool>,
}

/// A trained mode with its tuning and test windows, before thresholds are pooled.
pub struct Trained {
    pub model: ModeModel,
    pub failures: HashMap<i32, Vec<i64>>,
    pub tuning: Judged,
    pub test: Judged,
}

/// The kind-level candidate: one gradient-boosted model fitted on the examples of every mode
/// of a kind together, each row [`Augment`]ed with the mode it asks about. Fitted once per
/// tuning fold and once before the test window, with the same limits as the per-mode
/// candidates, then judged per mode beside them.
pub struct PooledFits {
    pub components: Vec<String>,
    /// One per tuning fold (`None`: no failure of any mode before that fold).
    folds: Vec<Option<Classifier>>,
    /// Fitted on every example labelled before the test window.
    refit: Option<Classifier>,
}

impl PooledFits {
    /// Fits the pooled candidate of `modes` (all of one kind); `None` for fewer than two
    /// modes (it would be the per-mode candidate again).
    pub fn fit(
        config: &TrainConfig,
        data: &KindData,
        table: &FeatureTable,
        modes: &[FailureMode],
        split: &Split,
    ) -> Result<Option<PooledFits>, TrainingError> {
        if modes.len() < 2
            || !config
                .candidates
                .contains(&Algorithm::PooledGradientBoostedTrees)
        {
            return Ok(None);
        }
        let components: Vec<String> = modes.iter().map(|m| m.component.clone()).collect();
        let labelled: Vec<(Augment, i64, Vec<Option<bool>>)> = modes
            .iter()
            .enumerate()
            .map(|(index, mode)| {
                let horizon = hours_to_micros(mode.horizon_hours);
                (
                    Augment::new(index, components.clone(), &table.names),
                    horizon,
                    data.labels(table, &mode.component, horizon),
                )
            })
            .collect();
        let set_before = |limit: i64| -> TrainingSet {
            let width = labelled
                .first()
                .map_or(table.n_columns(), |(a, _, _)| a.width(table.n_columns()));
            let mut set = TrainingSet {
                values: Vec::new(),
                n_columns: width,
                labels: Vec::new(),
            };
            for (augment, horizon, labels) in &labelled {
                let rows = examples_before(table, labels, *horizon, limit, config.negative_sample);
                let values = table.gather(&rows);
                set.values
                    .extend(augment.apply(&values, rows.len(), table.n_columns()));
                set.labels
                    .extend(rows.iter().map(|&r| labels[r] == Some(true)));
            }
            set
        };
        let fit = |limit: i64| -> Result<Option<Classifier>, TrainingError> {
            let set = set_before(limit);
            if !set.labels.iter().any(|l| *l) {
                return Ok(None);
            }
            Ok(Some(model::fit_candidate(
                Algorithm::PooledGradientBoostedTrees,
                &set,
            )?))
        };
        let fitting = Instant::now();
        let folds = split
            .folds()
            .into_iter()
            .map(|(start, _)| fit(start))
            .collect::<Result<Vec<_>, _>>()?;
        let refit = fit(split.test_from)?;
        tracing::info!(kind = %modes[0].kind, modes = modes.len(), seconds = fitting.elapsed().as_secs_f64(), "pooled candidate fitted");
        Ok(Some(PooledFits {
            components,
            folds,
            refit,
        }))
    }

    fn augment(&self, component: &str, names: &[String]) -> Option<Augment> {
        let index = self.components.iter().position(|c| c == component)?;
        Some(Augment::new(index, self.components.clone(), names))
    }

    /// Margins of `rows` of `table` for `component` by fold `fold`'s model (`None`: that
    /// fold had no failure to learn from).
    fn margins(
        &self,
        fold: usize,
        component: &str,
        table: &FeatureTable,
        rows: &[usize],
    ) -> Option<Vec<f64>> {
        let augment = self.augment(component, &table.names)?;
        let inner = self.folds.get(fold)?.as_ref()?;
        let values = table.gather(rows);
        Some(inner.margins_of(
            &augment.apply(&values, rows.len(), table.n_columns()),
            rows.len(),
            augment.width(table.n_columns()),
        ))
    }

    /// The model fitted before the test window, scoring `component`.
    fn refitted(&self, component: &str, names: &[String]) -> Option<Classifier> {
        Some(Classifier::Pooled {
            augment: self.augment(component, names)?,
            inner: Box::new(self.refit.as_ref()?.duplicate()),
        })
    }
}

/// Rows whose label for this mode is known by `limit`: every positive, a deterministic
/// share of negatives.
fn examples_before(
    table: &FeatureTable,
    labels: &[Option<bool>],
    horizon: i64,
    limit: i64,
    negative_sample: f64,
) -> Vec<usize> {
    table
        .requests
        .iter()
        .enumerate()
        .filter(|&(row, &(device, time))| {
            labels[row].is_some_and(|label| {
                time + horizon <= limit && (label || keep_negative(device, time, negative_sample))
            })
        })
        .map(|(row, _)| row)
        .collect()
}

pub fn hours_to_micros(hours: f64) -> i64 {
    (hours * HOUR_MICROS as f64) as i64
}

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

/// The candidate that is winning, with what it was judged on.
struct Best {
    algorithm: Algorithm,
    calibration: Calibration,
    threshold: f64,
    cost: f64,
    pr_auc: f64,
    validation: Validation,
    tuning: Judged,
}

pub fn train_mode(
    config: &TrainConfig,
    spec: &FeatureSpec,
    data: &KindData,
    table: &FeatureTable,
    mode: &FailureMode,
    split: &Split,
    pooled: Option<&PooledFits>,
) -> Result<Trained, TrainingError> {
    let horizon = hours_to_micros(mode.horizon_hours);
    let labels = data.labels(table, &mode.component, horizon);
    let failures = data.failure_times(&mode.component);
    let width = table.n_columns();
    let name = mode.name();
    let (mut tuning_rows, mut test_rows) = (Vec::new(), Vec::new());
    for (row, &(_, time)) in table.requests.iter().enumerate() {
        if labels[row].is_none() {
            continue;
        }
        if time >= split.test_from && time < split.until {
            test_rows.push(row);
        } else if time >= split.tune_from && time < split.test_from {
            tuning_rows.push(row);
        }
    }
    // Examples whose label is known by `limit`: every positive, a deterministic share of
    // negatives.
    let training_set = |limit: i64| -> TrainingSet {
        let rows = examples_before(table, &labels, horizon, limit, config.negative_sample);
        TrainingSet {
            values: table.gather(&rows),
            n_columns: width,
            labels: rows.iter().map(|&r| labels[r] == Some(true)).collect(),
        }
    };
    let folds: Vec<(TrainingSet, Vec<usize>)> = split
        .folds()
        .into_iter()
        .map(|(start, end)| {
            let rows: Vec<usize> = tuning_rows
                .iter()
                .copied()
                .filter(|&row| (start..end).contains(&table.requests[row].1))
                .collect();
            (training_set(start), rows)
        })
        .collect();
    let positives = folds
        .first()
        .map_or(0, |(set, _)| set.labels.iter().filter(|l| **l).count());
    tracing::info!(mode = %name, examples = folds.first().map_or(0, |(s, _)| s.n_rows()), positives, tuning = tuning_rows.len(), test = test_rows.len(), folds = folds.len(), "fitting candidates");
    // Every candidate needs failures of this mode before the first fold: a mode judged
    // only on what its siblings taught gives probabilities its tuning window cannot
    // check (tried: a pump mode with no failure of its own raised 189 false alarms in a
    // month).
    if positives == 0 {
        return Err(model::ModelError::NoPositives(name).into());
    }
    let mut candidates: Vec<Algorithm> = config
        .candidates
        .iter()
        .copied()
        .filter(|a| Algorithm::ALL.contains(a) || pooled.is_some())
        .collect();
    candidates.dedup();
    if candidates.is_empty() {
        candidates.push(Algorithm::GradientBoostedTrees);
    }
    // Labelled: the whole horizon lies before the test window.
    let known_by = |row: usize, limit: i64| table.requests[row].1 + horizon <= limit;
    let tuning_positives = tuning_rows
        .iter()
        .filter(|&&row| labels[row] == Some(true) && known_by(row, split.test_from))
        .count();
    if tuning_positives == 0 {
        return Err(model::ModelError::Unvalidated(name).into());
    }
    let tuning_rules = EventRules {
        horizon,
        min_lead: 24 * HOUR_MICROS,
        from: split.tune_from,
        to: split.test_from,
    };
    let mut best: Option<Best> = None;
    let mut reports = Vec::new();
    'candidates: for algorithm in candidates {
        let fitting = Instant::now();
        // Out-of-fold margins: each fold scored by a model that saw nothing of it.
        let mut scored: Vec<(usize, f64)> = Vec::with_capacity(tuning_rows.len());
        for (fold, (set, rows)) in folds.iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let margins = match (algorithm, pooled) {
                (Algorithm::PooledGradientBoostedTrees, Some(pooled)) => {
                    match pooled.margins(fold, &mode.component, table, rows) {
                        Some(margins) => margins,
                        None => continue 'candidates,
                    }
                }
                _ => {
                    let classifier = model::fit_candidate(algorithm, set)?;
                    let values = table.gather(rows);
                    classifier.margins_of(&values, rows.len(), width)
                }
            };
            scored.extend(rows.iter().copied().zip(margins));
        }
        let fit_seconds = fitting.elapsed().as_secs_f64();
        let (calibration_margins, calibration_labels): (Vec<f64>, Vec<bool>) = scored
            .iter()
            .filter(|&&(row, _)| known_by(row, split.test_from))
            .filter_map(|&(row, m)| labels[row].map(|l| (m, l)))
            .unzip();
        let calibration = Calibration::fit(&calibration_margins, &calibration_labels);
        let points: Vec<ScoredPoint> = scored
            .iter()
            .map(|&(row, margin)| ScoredPoint {
                device: table.requests[row].0,
                time: table.requests[row].1,
                probability: calibration.apply(margin),
            })
            .collect();
        let (threshold, cost, events) = choose_threshold(&points, &failures, &tuning_rules, mode);
        let calibrated: Vec<f64> = calibration_margins
            .iter()
            .map(|&m| calibration.apply(m))
            .collect();
        let examples = model::example_metrics(&calibrated, &calibration_labels, threshold);
        tracing::info!(mode = %name, algorithm = algorithm.as_str(), pr_auc = examples.pr_auc, threshold, cost, recall_24h = events.recall_24h_ahead, precision = events.precision, fit_seconds, "candidate tuned");
        reports.push(CandidateReport {
            algorithm,
            pr_auc: examples.pr_auc,
            threshold,
            expected_cost: cost,
            events: events.clone(),
            fit_seconds,
        });
        // With enough failures in the window the event-level cost decides (ties: PR-AUC);
        // with few, a cost difference is one or two failures of luck, so the
        // example-level ranking (hundreds of labelled examples) decides.
        let enough = events.failures >= MIN_FAILURES_FOR_EVENT_CHOICE;
        let better = best.as_ref().is_none_or(|b| {
            if enough {
                cost < b.cost || (cost == b.cost && examples.pr_auc > b.pr_auc)
            } else {
                examples.pr_auc > b.pr_auc
            }
        });
        if better {
            best = Some(Best {
                algorithm,
                calibration,
                threshold,
                cost,
                pr_auc: examples.pr_auc,
                validation: Validation {
                    from: micros_to_time(split.tune_from),
                    to: micros_to_time(split.test_from),
                    examples,
                    events,
                    expected_cost: cost,
                },
                tuning: Judged {
                    points,
                    rules: tuning_rules,
                    probabilities: calibrated,
                    labels: calibration_labels,
                },
            });
        }
    }
    let Some(best) = best else {
        return Err(model::ModelError::NoPositives(name).into());
    };
    // The winner, refitted on every example labelled before the test window.
    let refitting = Instant::now();
    let classifier = match (best.algorithm, pooled) {
        (Algorithm::PooledGradientBoostedTrees, Some(pooled)) => pooled
            .refitted(&mode.component, &table.names)
            .ok_or_else(|| model::ModelError::NoPositives(name.clone()))?,
        (algorithm, _) => model::fit_candidate(algorithm, &training_set(split.test_from))?,
    };
    tracing::info!(mode = %name, algorithm = best.algorithm.as_str(), seconds = refitting.elapsed().as_secs_f64(), "winner refitted before the test window");
    let test = score_window(
        &classifier,
        &best.calibration,
        table,
        &test_rows,
        &labels,
        EventRules {
            horizon,
            min_lead: 24 * HOUR_MICROS,
            from: split.test_from,
            to: split.until,
        },
    );
    let baselines = baselines(table, &best.tuning, &test, &failures, mode);
    let importances = classifier.importances(width);
    let mut ranked: Vec<(String, f64)> = table.names.iter().cloned().zip(importances).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.truncate(20);
    let mut model = ModeModel {
        mode: mode.clone(),
        spec: spec.clone(),
        schema: data.schema.clone(),
        feature_names: table.names.clone(),
        classifier,
        calibration: best.calibration,
        threshold: best.threshold,
        validation: best.validation,
        test: None,
        baselines,
        horizon_source: String::new(),
        importances: ranked,
        candidates: Vec::new(),
        choice: String::new(),
    };
    model.choice = explain_choice(&model, best.algorithm, &reports, split);
    model.candidates = reports;
    Ok(Trained {
        model,
        failures,
        tuning: best.tuning,
        test,
    })
}

/// `rows` scored by `classifier` and `calibration`, judged by `rules`.
fn score_window(
    classifier: &Classifier,
    calibration: &Calibration,
    table: &FeatureTable,
    rows: &[usize],
    labels: &[Option<bool>],
    rules: EventRules,
) -> Judged {
    let width = table.n_columns();
    let values = table.gather(rows);
    let margins = classifier.margins_of(&values, rows.len(), width);
    let mut judged = Judged {
        points: Vec::with_capacity(rows.len()),
        rules,
        probabilities: Vec::new(),
        labels: Vec::new(),
    };
    for (&row, margin) in rows.iter().zip(margins) {
        let (device, time) = table.requests[row];
        let probability = calibration.apply(margin);
        judged.points.push(ScoredPoint {
            device,
            time,
            probability,
        });
        if let Some(label) = labels[row].filter(|_| time + rules.horizon <= rules.to) {
            judged.probabilities.push(probability);
            judged.labels.push(label);
        }
    }
    judged
}

/// The alert threshold: the one minimising expected event-level cost on the tuning window
/// when it holds enough failures to estimate that cost. Otherwise, provisionally, the Bayes
/// decision threshold of calibrated probabilities,
/// `cost_false_alarm / (cost_false_alarm + cost_missed_failure)`; [`pool_thresholds`] then
/// replaces it with one threshold chosen on the pooled tuning events of all such modes.
fn choose_threshold(
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

fn explain_choice(
    winner: &ModeModel,
    algorithm: Algorithm,
    reports: &[CandidateReport],
    split: &Split,
) -> String {
    let others: Vec<String> = reports
        .iter()
        .filter(|r| r.algorithm != algorithm)
        .map(|r| {
            format!(
                "{} cost {:.0}, PR-AUC {:.3}, {}/{} failures flagged ≥24 h ahead, {} false alarms",
                r.algorithm.as_str(),
                r.expected_cost,
                r.pr_auc,
                r.events.flagged_24h_ahead,
                r.events.failures,
                r.events.false_flags
            )
        })
        .collect();
    let criterion = if winner.validation.events.failures >= MIN_FAILURES_FOR_EVENT_CHOICE {
        "expected cost over the tuning window"
    } else {
        "PR-AUC (fewer than 10 failures in the tuning window: too few to compare costs)"
    };
    format!(
        "{} won on {criterion} ({:.0}: {}/{} failures flagged ≥24 h ahead, {} false alarms, PR-AUC {:.3}; out of fold, {}) against {}; then refitted on every example labelled before the test window",
        algorithm.as_str(),
        winner.validation.expected_cost,
        winner.validation.events.flagged_24h_ahead,
        winner.validation.events.failures,
        winner.validation.events.false_flags,
        winner.validation.examples.pr_auc,
        match split.folds {
            1 => "one fold".to_string(),
            folds => format!("{folds} rolling-origin folds"),
        },
        others.join("; ")
    )
}

/// A baseline: name, description, score of a feature row, and a fixed threshold (`None`:
/// chosen on the tuning window).
type BaselineRule = (String, String, Box<dyn Fn(&[f64]) -> f64>, Option<f64>);

/// The simple rules every card judges beside the model, on the same windows and rules.
fn baselines(
    table: &FeatureTable,
    tuning: &Judged,
    test: &Judged,
    failures: &HashMap<i32, Vec<i64>>,
    mode: &FailureMode,
) -> Vec<Baseline> {
    let column = |name: &str| table.names.iter().position(|n| n == name);
    let index: HashMap<(i32, i64), usize> = table
        .requests
        .iter()
        .enumerate()
        .map(|(row, &key)| (key, row))
        .collect();
    let rescore = |judged: &Judged, score: &dyn Fn(&[f64]) -> f64| -> Vec<ScoredPoint> {
        judged
            .points
            .iter()
            .filter_map(|p| {
                index.get(&(p.device, p.time)).map(|&row| ScoredPoint {
                    probability: score(table.row(row)),
                    ..*p
                })
            })
            .collect()
    };
    let mut rules: Vec<BaselineRule> = Vec::new();
    let event_columns: Vec<usize> = ["warning", "error", "critical"]
        .iter()
        .filter_map(|severity| column(&format!("events.{severity}.24h")))
        .collect();
    if !event_columns.is_empty() {
        rules.push((
            "any_event_24h".into(),
            "flag while the device raised any warning, error or critical event in the last 24 h"
                .into(),
            Box::new(move |row: &[f64]| {
                if event_columns.iter().any(|&c| row[c] > 0.0) {
                    1.0
                } else {
                    0.0
                }
            }),
            Some(0.5),
        ));
    }
    let maintenance = column(&format!("{}.hours_since_maintenance", mode.component));
    let age = column("device.age_days");
    if maintenance.is_some() || age.is_some() {
        rules.push((
            "maintenance_age".into(),
            format!(
                "flag when the time since {}'s last maintenance (else the device's age) passes a threshold chosen on the tuning window",
                mode.component
            ),
            Box::new(move |row: &[f64]| {
                let hours = maintenance
                    .map(|c| row[c])
                    .filter(|v| v.is_finite())
                    .or_else(|| age.map(|c| row[c] * 24.0).filter(|v| v.is_finite()))
                    .unwrap_or(0.0);
                1.0 - (-hours / 8760.0).exp()
            }),
            None,
        ));
    }
    rules
        .into_iter()
        .map(|(rule, description, score, fixed)| {
            let tuning_points = rescore(tuning, &*score);
            let threshold = fixed.unwrap_or_else(|| {
                model::events::choose_threshold(
                    &tuning_points,
                    failures,
                    &tuning.rules,
                    mode.cost_false_alarm,
                    mode.cost_missed_failure,
                )
                .0
            });
            let (tuning_events, _) =
                model::event_metrics(&tuning_points, failures, threshold, &tuning.rules);
            let (test_events, _) =
                model::event_metrics(&rescore(test, &*score), failures, threshold, &test.rules);
            Baseline {
                rule,
                description,
                threshold,
                tuning: tuning_events,
                test: test_events,
            }
        })
        .collect()
}

/// A deterministic coin: the same example is kept or dropped in every run.
pub fn keep_negative(device: i32, time: i64, share: f64) -> bool {
    let mut x = (device as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (time as u64);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x % 1_000_000) as f64 / 1_000_000.0 < share
}
