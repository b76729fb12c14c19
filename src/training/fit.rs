//! One failure mode: candidates scored out of fold on the tuning window, calibrated, given
//! a threshold, compared; the winner refitted on everything before the test window and
//! judged there; simple rules judged beside it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Instant;

use super::TrainingError;
use super::baselines::baselines;
use super::micros_to_time;
use super::split::Split;
use super::thresholds::{MIN_FAILURES_FOR_EVENT_CHOICE, choose_threshold};
use crate::config::TrainConfig;
use crate::features::{FeatureSpec, FeatureTable, HOUR_MICROS};
use crate::history::KindData;
use crate::model::{
    self, Algorithm, Calibration, CandidateReport, Classifier, EventRules, FailureMode, ModeModel,
    ScoredPoint, TrainingSet, Validation,
};

pub use super::pooled::PooledFits;
pub use super::thresholds::{judge_tests, pool_thresholds_by_windows};

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

/// Rows whose label for this mode is known by `limit`: every positive, a deterministic
/// share of negatives.
pub(super) fn examples_before(
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

/// Below this many failures of a mode before the tuning window, its tuning folds are
/// blocked instead of rolling-origin ([`FoldScheme`]).
pub const MIN_FAILURES_FOR_ROLLING_ORIGIN: usize = 10;

/// How the tuning window's folds are scored out of fold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoldScheme {
    /// Each fold by a model trained on examples labelled before it starts: the ideal when
    /// there are failures enough before the tuning window.
    RollingOrigin,
    /// Each fold by a model trained on every tuning-or-earlier example whose label window
    /// lies wholly before the fold, or starts a horizon or more after the fold's end
    /// (purged: no failure labels rows both inside the fold and in its training set; never
    /// an example of the test window). With a short history
    /// most failures are inside the tuning window, and rolling origin leaves the first
    /// folds nothing to learn from (a car battery mode with one sudden failure before its
    /// tuning window calibrated to a negative slope). The test window stays untouched
    /// either way: it is the card's headline.
    BlockedPurged,
}

impl FoldScheme {
    /// The scheme for `component`: blocked when fewer than
    /// [`MIN_FAILURES_FOR_ROLLING_ORIGIN`] of its failures come before the tuning window.
    pub fn for_component(data: &KindData, component: &str, split: &Split) -> FoldScheme {
        let before = data
            .failure_times(component)
            .values()
            .flatten()
            .filter(|&&time| time <= split.tune_from)
            .count();
        if before < MIN_FAILURES_FOR_ROLLING_ORIGIN {
            FoldScheme::BlockedPurged
        } else {
            FoldScheme::RollingOrigin
        }
    }

    pub fn describe(self, folds: usize) -> String {
        match (self, folds) {
            (_, 1) => "one fold".to_string(),
            (FoldScheme::RollingOrigin, folds) => format!("{folds} rolling-origin folds"),
            (FoldScheme::BlockedPurged, folds) => format!(
                "{folds} blocked folds, each scored by a model trained on the examples labelled wholly before or after it (fewer than {MIN_FAILURES_FOR_ROLLING_ORIGIN} failures before the tuning window)"
            ),
        }
    }
}

/// The rows fold `[start, end)` is scored by a model of: every positive, a deterministic
/// share of negatives, labelled before `start` — and under [`FoldScheme::BlockedPurged`]
/// also those at or after `end + horizon` whose label is known by `limit` (the test
/// window's start).
#[allow(clippy::too_many_arguments)]
pub(super) fn fold_examples(
    scheme: FoldScheme,
    table: &FeatureTable,
    labels: &[Option<bool>],
    horizon: i64,
    (start, end): (i64, i64),
    limit: i64,
    negative_sample: f64,
) -> Vec<usize> {
    match scheme {
        FoldScheme::RollingOrigin => {
            examples_before(table, labels, horizon, start, negative_sample)
        }
        FoldScheme::BlockedPurged => table
            .requests
            .iter()
            .enumerate()
            .filter(|&(row, &(device, time))| {
                labels[row].is_some_and(|label| {
                    // After the fold, a whole horizon later: the fold's last rows label
                    // failures up to `end + horizon`, and no failure may label rows on
                    // both sides.
                    let outside = time + horizon <= start
                        || (time >= end + horizon && time + horizon <= limit);
                    outside && (label || keep_negative(device, time, negative_sample))
                })
            })
            .map(|(row, _)| row)
            .collect(),
    }
}

/// How long before its failure a positive row stops being fitted on ([`fit_labels`]):
/// `train.fit_min_lead`, at most half the horizon.
pub(super) fn fit_min_lead(config: &TrainConfig, horizon: i64) -> i64 {
    (config.fit_min_lead.as_micros() as i64).min(horizon / 2)
}

/// The `labels` of `table`'s rows to fit a classifier on: a positive row less than `late`
/// before one of its device's `failures` is left out (`None`). A flag there comes too late
/// to act on, and those rows, the easiest positives, teach the last hours' signature
/// rather than the first days' one a flag must catch. Calibration and judging keep every
/// row. `late` ≤ 0: `labels` themselves.
pub(super) fn fit_labels<'a>(
    labels: &'a [Option<bool>],
    table: &FeatureTable,
    failures: &HashMap<i32, Vec<i64>>,
    late: i64,
) -> Cow<'a, [Option<bool>]> {
    if late <= 0 {
        return Cow::Borrowed(labels);
    }
    let too_late = |&(device, time): &(i32, i64)| {
        failures
            .get(&device)
            .is_some_and(|times| times.iter().any(|&f| f > time && f <= time + late))
    };
    labels
        .iter()
        .zip(&table.requests)
        .map(|(&label, request)| match label {
            Some(true) if too_late(request) => None,
            label => label,
        })
        .collect()
}

pub fn hours_to_micros(hours: f64) -> i64 {
    (hours * HOUR_MICROS as f64) as i64
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
    let fit_labels = fit_labels(&labels, table, &failures, fit_min_lead(config, horizon));
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
        let rows = examples_before(table, &fit_labels, horizon, limit, config.negative_sample);
        TrainingSet {
            values: table.gather(&rows),
            n_columns: width,
            labels: rows.iter().map(|&r| fit_labels[r] == Some(true)).collect(),
        }
    };
    let scheme = FoldScheme::for_component(data, &mode.component, split);
    let folds: Vec<(TrainingSet, Vec<usize>)> = split
        .folds()
        .into_iter()
        .map(|(start, end)| {
            let rows: Vec<usize> = tuning_rows
                .iter()
                .copied()
                .filter(|&row| (start..end).contains(&table.requests[row].1))
                .collect();
            let train = fold_examples(
                scheme,
                table,
                &fit_labels,
                horizon,
                (start, end),
                split.test_from,
                config.negative_sample,
            );
            let set = TrainingSet {
                values: table.gather(&train),
                n_columns: width,
                labels: train.iter().map(|&r| fit_labels[r] == Some(true)).collect(),
            };
            (set, rows)
        })
        .collect();
    let positives = folds
        .first()
        .map_or(0, |(set, _)| set.labels.iter().filter(|l| **l).count());
    tracing::info!(mode = %name, examples = folds.first().map_or(0, |(s, _)| s.n_rows()), positives, tuning = tuning_rows.len(), test = test_rows.len(), folds = folds.len(), scheme = ?scheme, "fitting candidates");
    // Every candidate needs failures of this mode to learn the first fold from (before it;
    // blocked: before or after it): a mode judged only on what its siblings taught gives probabilities its tuning window cannot
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
                // The pooled folds follow one scheme for the whole kind: compared only where
                // it is this mode's.
                (Algorithm::PooledGradientBoostedTrees, Some(pooled))
                    if pooled.scheme != scheme =>
                {
                    continue 'candidates;
                }
                (Algorithm::PooledGradientBoostedTrees, Some(pooled)) => {
                    match pooled.margins(fold, &mode.component, table, rows) {
                        Some(margins) => margins,
                        None => continue 'candidates,
                    }
                }
                // Blocked folds are not nested: a later fold may have no failure on either
                // side to learn from; it stays unscored.
                _ if !set.labels.iter().any(|l| *l) => continue,
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
    // What ships: the same algorithm refitted on every example labelled by the end of
    // the data, so the newest failures and the nearest season teach it too. The test
    // figures stay those of the classifier fitted before the test window, kept beside it.
    let (classifier, tested_classifier, refitted_until) = if config.refit_with_test_window {
        let shipped = match (best.algorithm, pooled) {
            (Algorithm::PooledGradientBoostedTrees, Some(pooled)) => {
                pooled.shipped(&mode.component, &table.names)
            }
            (algorithm, _) => Some(model::fit_candidate(algorithm, &training_set(split.until))?),
        };
        match shipped {
            Some(shipped) => (shipped, Some(classifier), Some(micros_to_time(split.until))),
            None => (classifier, None, None),
        }
    } else {
        (classifier, None, None)
    };
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
        tested_classifier,
        refitted_until,
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
    model.choice = explain_choice(&model, best.algorithm, &reports, split, scheme);
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

fn explain_choice(
    winner: &ModeModel,
    algorithm: Algorithm,
    reports: &[CandidateReport],
    split: &Split,
    scheme: FoldScheme,
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
        "{} won on {criterion} ({:.0}: {}/{} failures flagged ≥24 h ahead, {} false alarms, PR-AUC {:.3}; out of fold, {}) against {}; then refitted on every example labelled before the test window{}",
        algorithm.as_str(),
        winner.validation.expected_cost,
        winner.validation.events.flagged_24h_ahead,
        winner.validation.events.failures,
        winner.validation.events.false_flags,
        winner.validation.examples.pr_auc,
        scheme.describe(split.folds),
        others.join("; "),
        match winner.refitted_until {
            Some(until) => format!(
                ", judged there, and refitted once more on every example labelled by {until} (what ships)"
            ),
            None => String::new(),
        }
    )
}

/// A deterministic coin: the same example is kept or dropped in every run.
pub fn keep_negative(device: i32, time: i64, share: f64) -> bool {
    let mut x = (device as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (time as u64);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x % 1_000_000) as f64 / 1_000_000.0 < share
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::DAY_MICROS;

    /// One device, an example every day for 40 days.
    fn table() -> FeatureTable {
        FeatureTable {
            names: vec!["x".into()],
            requests: (0..40).map(|d| (1, d * DAY_MICROS)).collect(),
            values: vec![0.0; 40],
        }
    }

    #[test]
    fn blocked_folds_train_on_both_sides_and_never_on_a_straddling_or_test_label() {
        let table = table();
        let labels: Vec<Option<bool>> = (0..40).map(|d| Some(d % 5 == 0)).collect();
        let horizon = 3 * DAY_MICROS;
        let fold = (10 * DAY_MICROS, 20 * DAY_MICROS);
        let limit = 30 * DAY_MICROS;
        let days = |rows: Vec<usize>| -> Vec<i64> {
            rows.into_iter()
                .map(|r| table.requests[r].1 / DAY_MICROS)
                .collect()
        };
        let examples = |scheme, share| {
            days(fold_examples(
                scheme, &table, &labels, horizon, fold, limit, share,
            ))
        };
        let rolling = examples(FoldScheme::RollingOrigin, 1.0);
        assert_eq!(
            rolling,
            (0..=7).collect::<Vec<_>>(),
            "labels known by the fold's start"
        );
        let blocked = examples(FoldScheme::BlockedPurged, 1.0);
        // Before: labels over by day 10. After: from day 23 (the fold's last row, day 19,
        // labels failures up to day 22), labels over by day 30.
        let expected: Vec<i64> = (0..=7).chain(23..=27).collect();
        assert_eq!(blocked, expected);
        // Negatives are sampled, positives always kept.
        let sampled = examples(FoldScheme::BlockedPurged, 0.0);
        assert_eq!(sampled, vec![0, 5, 25]);
    }

    #[test]
    fn the_last_day_before_a_failure_is_judged_but_not_fitted_on() {
        use crate::features::{FeatureInputs, FeatureSpec, HOUR_MICROS, KindSchema};
        // A failure at noon on day 30; a 5-day horizon; one example a day.
        let failure = 30 * DAY_MICROS + 12 * HOUR_MICROS;
        let inputs = FeatureInputs {
            failures: HashMap::from([((1, "c".to_string()), vec![failure])]),
            ..FeatureInputs::default()
        };
        let schema = KindSchema {
            kind: "k".into(),
            metrics: Vec::new(),
            event_codes: Vec::new(),
            components: vec!["c".into()],
            models: Vec::new(),
        };
        let data = KindData::new(schema, inputs, Vec::new(), &FeatureSpec::default());
        let table = table();
        let horizon = 5 * DAY_MICROS;
        assert_eq!(
            fit_min_lead(&TrainConfig::default(), horizon),
            0,
            "off by default"
        );
        let config = TrainConfig {
            fit_min_lead: std::time::Duration::from_secs(24 * 3600),
            ..TrainConfig::default()
        };
        let lead = fit_min_lead(&config, horizon);
        assert_eq!(lead, 24 * HOUR_MICROS);
        assert_eq!(
            fit_min_lead(&config, 36 * HOUR_MICROS),
            18 * HOUR_MICROS,
            "at most half the horizon"
        );
        let labels = data.labels(&table, "c", horizon);
        let failures = data.failure_times("c");
        let fit = fit_labels(&labels, &table, &failures, lead);
        let positive = |labels: &[Option<bool>]| -> Vec<usize> {
            (0..=30).filter(|&d| labels[d] == Some(true)).collect()
        };
        assert_eq!(
            positive(&labels),
            vec![26, 27, 28, 29, 30],
            "judged: within the horizon"
        );
        assert_eq!(
            positive(&fit),
            vec![26, 27, 28, 29],
            "fitted: a day or more ahead"
        );
        assert_eq!(fit[30], None, "12 h ahead: left out, not a negative");
        assert_eq!(&fit[..26], &labels[..26], "negatives unchanged");
        // Off: every positive is fitted on.
        assert_eq!(fit_labels(&labels, &table, &failures, 0), labels.as_slice());
        // Examples drawn for fitting never hold the left-out row.
        let rows = examples_before(&table, &fit, horizon, 40 * DAY_MICROS, 1.0);
        assert!(!rows.contains(&30) && rows.contains(&29));
    }
}
