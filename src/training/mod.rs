//! `forewarn train` and `forewarn evaluate`: load history from the store, build labelled
//! examples with the one feature path, fit and compare candidates, calibrate, choose the
//! threshold, write the artifact, the model card and the `models` rows; judge any model on
//! any time range.
//!
//! Time discipline (no leakage): an example at `t` is labelled by failures in
//! `(t, t + horizon]`. Training examples satisfy `t + horizon <= validation_from`, so no
//! label looks into the validation window; validation examples lie in
//! `[validation_from, until)` and are only labelled when `t + horizon <= until`.

mod data;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::TrainConfig;
use crate::features::{self, FeatureSpec, FeatureTable, HOUR_MICROS};
use crate::model::{
    self, Algorithm, Calibration, CandidateReport, EventMetrics, EventRules, FailureMode,
    ModeModel, ModelArtifact, ScoredPoint, TrainingSet, Validation,
};
use crate::store::{ModelRow, PromotionOutcome, Store, StoreError};

pub use data::{KindData, load_inputs, load_kind};

#[derive(Debug, thiserror::Error)]
pub enum TrainingError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Features(#[from] features::FeatureError),
    #[error(transparent)]
    Model(#[from] model::ModelError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read model artifact {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model artifact {path} is not valid: {source}")]
    Artifact {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("no data to train on: {0}")]
    NoData(String),
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The failure modes to train: configured ones, plus any kind/component in `failures`
/// that is not configured (with the default horizon) — as seen before `until`.
pub async fn failure_modes(
    store: &Store,
    config: &TrainConfig,
    until: DateTime<Utc>,
) -> Result<Vec<FailureMode>, TrainingError> {
    let mut modes: Vec<FailureMode> = config
        .failure_modes
        .iter()
        .map(|m| FailureMode {
            kind: m.kind.clone(),
            component: m.component.clone(),
            horizon_hours: m.horizon.as_secs_f64() / 3600.0,
            cost_false_alarm: m.cost_false_alarm.unwrap_or(config.cost_false_alarm),
            cost_missed_failure: m.cost_missed_failure.unwrap_or(config.cost_missed_failure),
        })
        .collect();
    let seen = store.failure_modes_seen(until).await?;
    modes.retain(|m| {
        seen.iter()
            .any(|(k, c, _)| *k == m.kind && *c == m.component)
    });
    for (kind, component, _) in seen {
        if !modes
            .iter()
            .any(|m| m.kind == kind && m.component == component)
        {
            modes.push(FailureMode {
                kind,
                component,
                horizon_hours: config.default_horizon.as_secs_f64() / 3600.0,
                cost_false_alarm: config.cost_false_alarm,
                cost_missed_failure: config.cost_missed_failure,
            });
        }
    }
    Ok(modes)
}

/// What `train` did, per mode.
#[derive(Debug, Serialize)]
pub struct TrainReport {
    pub version: String,
    pub artifact: PathBuf,
    pub card: PathBuf,
    pub data_from: DateTime<Utc>,
    pub data_to: DateTime<Utc>,
    pub validation_from: DateTime<Utc>,
    pub seconds: f64,
    pub modes: Vec<serde_json::Value>,
}

/// Trains every mode on `[from, until)`; writes `<model_dir>/<version>/{model,card}.json`
/// and the `models` rows (inactive: promotion is the caller's decision).
pub async fn train(
    store: &Store,
    config: &TrainConfig,
    range: Option<(DateTime<Utc>, DateTime<Utc>)>,
    version: Option<String>,
) -> Result<(ModelArtifact, TrainReport), TrainingError> {
    let started = Instant::now();
    let (from, until) = match range {
        Some(range) => range,
        None => {
            let (first, last) = store
                .rollup_range()
                .await?
                .ok_or_else(|| TrainingError::NoData("telemetry_hourly is empty".into()))?;
            (first, last + chrono::Duration::hours(1))
        }
    };
    let validation_window =
        chrono::Duration::from_std(config.validation_window).unwrap_or(chrono::Duration::days(30));
    let validation_from = until - validation_window;
    if validation_from <= from {
        return Err(TrainingError::NoData(format!(
            "the data ({from} to {until}) is shorter than the validation window"
        )));
    }
    let version = version.unwrap_or_else(|| format!("v{}", Utc::now().format("%Y%m%d-%H%M%S")));
    let modes = failure_modes(store, config, until).await?;
    if modes.is_empty() {
        return Err(TrainingError::NoData(
            "no failures recorded: nothing to learn from".into(),
        ));
    }
    let spec = FeatureSpec::default();
    let mut kinds: Vec<String> = modes.iter().map(|m| m.kind.clone()).collect();
    kinds.sort();
    kinds.dedup();
    let stride = stride_micros(config.example_stride);
    let mut mode_models = Vec::new();
    for kind in kinds {
        let kind_modes: Vec<FailureMode> =
            modes.iter().filter(|m| m.kind == kind).cloned().collect();
        let components = kind_modes.iter().map(|m| m.component.clone()).collect();
        let loaded = std::time::Instant::now();
        let data = load_kind(store, &kind, components, from, until, &spec).await?;
        let load_seconds = loaded.elapsed().as_secs_f64();
        let warmup = spec.daily_lookback_micros();
        let requests = data.requests(
            from.timestamp_micros() + warmup,
            until.timestamp_micros(),
            stride,
        );
        tracing::info!(kind = %kind, devices = data.devices.len(), examples = requests.len(), load_seconds, "training data loaded");
        let spec_for_task = spec.clone();
        let config = config.clone();
        let validation_from = validation_from.timestamp_micros();
        let until_micros = until.timestamp_micros();
        let trained: Result<Vec<(ModeModel, ValidationSet)>, TrainingError> = tokio::task::spawn_blocking(move || {
            let computed = Instant::now();
            let table = features::compute(&spec_for_task, &data.schema, &data.inputs, &requests)?;
            tracing::info!(kind = %data.schema.kind, rows = table.n_rows(), columns = table.n_columns(), seconds = computed.elapsed().as_secs_f64(), "features computed");
            let mut trained = Vec::new();
            for mode in &kind_modes {
                match train_mode(&config, &spec_for_task, &data, &table, mode, validation_from, until_micros) {
                    Ok(model) => trained.push(model),
                    // A mode without a single failure in the training window cannot be
                    // learnt yet; the others still can.
                    Err(TrainingError::Model(
                        error @ (model::ModelError::NoPositives(_)
                        | model::ModelError::Unvalidated(_)),
                    )) => {
                        tracing::warn!(%error, "failure mode skipped");
                    }
                    Err(error) => return Err(error),
                }
            }
            Ok(trained)
        })
        .await?;
        mode_models.extend(trained?);
    }
    pool_thresholds(&mut mode_models);
    let mode_models: Vec<ModeModel> = mode_models.into_iter().map(|(m, _)| m).collect();
    if mode_models.is_empty() {
        return Err(TrainingError::NoData(
            "no failure mode has failures in the training window".into(),
        ));
    }
    let artifact = ModelArtifact {
        version: version.clone(),
        created_at: Utc::now(),
        data_from: from,
        data_to: until,
        modes: mode_models,
    };
    let directory = config.model_dir.join(&version);
    let (artifact_path, card_path) = write_artifact(&directory, &artifact)?;
    store
        .insert_models(&model_rows(&artifact, &artifact_path))
        .await?;
    let report = TrainReport {
        version,
        artifact: artifact_path,
        card: card_path,
        data_from: from,
        data_to: until,
        validation_from: DateTime::from_timestamp_micros(validation_from.timestamp_micros())
            .unwrap_or(validation_from),
        seconds: started.elapsed().as_secs_f64(),
        modes: card(&artifact)["modes"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
    };
    Ok((artifact, report))
}

/// Rows of `table` split into training and validation examples of `mode`.
fn train_mode(
    config: &TrainConfig,
    spec: &FeatureSpec,
    data: &KindData,
    table: &FeatureTable,
    mode: &FailureMode,
    validation_from: i64,
    until: i64,
) -> Result<(ModeModel, ValidationSet), TrainingError> {
    let horizon = (mode.horizon_hours * HOUR_MICROS as f64) as i64;
    let labels = data.labels(table, &mode.component, horizon);
    let width = table.n_columns();
    let mut train = TrainingSet {
        values: Vec::new(),
        n_columns: width,
        labels: Vec::new(),
    };
    let mut validation_rows = Vec::new();
    for (row, &(device, time)) in table.requests.iter().enumerate() {
        let Some(label) = labels[row] else { continue };
        if time + horizon <= validation_from {
            // Keep every positive; a deterministic share of negatives.
            if label || keep_negative(device, time, config.negative_sample) {
                train.values.extend_from_slice(table.row(row));
                train.labels.push(label);
            }
        } else if time >= validation_from {
            validation_rows.push(row);
        }
    }
    let name = mode.name();
    let positives = train.labels.iter().filter(|l| **l).count();
    tracing::info!(mode = %name, examples = train.n_rows(), positives, validation = validation_rows.len(), "fitting candidates");
    if positives == 0 {
        return Err(model::ModelError::NoPositives(name).into());
    }
    // A mode whose validation window holds no failure cannot be compared, calibrated or
    // given a threshold: shipping it would be shipping a guess.
    let validation_positives = validation_rows
        .iter()
        .filter(|&&row| labels[row] == Some(true) && table.requests[row].1 + horizon <= until)
        .count();
    if validation_positives == 0 {
        return Err(model::ModelError::Unvalidated(name).into());
    }
    let rules = EventRules {
        horizon,
        min_lead: 24 * HOUR_MICROS,
        from: validation_from,
        to: until,
    };
    let failures = data.failure_times(&mode.component);
    let validation_values: Vec<f64> = validation_rows
        .iter()
        .flat_map(|&row| table.row(row).iter().copied())
        .collect();
    let mut best: Option<(ModeModel, f64, f64, ValidationSet)> = None;
    let mut reports = Vec::new();
    for algorithm in Algorithm::ALL {
        let fitting = Instant::now();
        let classifier = model::fit_candidate(algorithm, &train)?;
        let fit_seconds = fitting.elapsed().as_secs_f64();
        let margins = classifier.margins_of(&validation_values, validation_rows.len(), width);
        // Calibrate on the labelled part of the validation window.
        let (calibration_margins, calibration_labels): (Vec<f64>, Vec<bool>) = validation_rows
            .iter()
            .zip(&margins)
            .filter_map(|(&row, &m)| {
                labels[row]
                    .filter(|_| table.requests[row].1 + horizon <= until)
                    .map(|l| (m, l))
            })
            .unzip();
        let calibration = Calibration::fit(&calibration_margins, &calibration_labels);
        let probabilities: Vec<f64> = margins.iter().map(|&m| calibration.apply(m)).collect();
        let points: Vec<ScoredPoint> = validation_rows
            .iter()
            .zip(&probabilities)
            .map(|(&row, &probability)| ScoredPoint {
                device: table.requests[row].0,
                time: table.requests[row].1,
                probability,
            })
            .collect();
        let (threshold, cost, events) = choose_threshold(&points, &failures, &rules, mode);
        let calibrated: Vec<f64> = calibration_margins
            .iter()
            .map(|&m| calibration.apply(m))
            .collect();
        let examples = model::example_metrics(&calibrated, &calibration_labels, threshold);
        let (calibrated, calibration_labels) = (calibrated, calibration_labels.clone());
        tracing::info!(mode = %name, algorithm = algorithm.as_str(), pr_auc = examples.pr_auc, threshold, cost, recall_24h = events.recall_24h_ahead, precision = events.precision, fit_seconds, "candidate validated");
        reports.push(CandidateReport {
            algorithm,
            pr_auc: examples.pr_auc,
            threshold,
            expected_cost: cost,
            events: events.clone(),
            fit_seconds,
        });
        let importances = classifier.importances(width);
        let mut ranked: Vec<(String, f64)> = table.names.iter().cloned().zip(importances).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        ranked.truncate(20);
        let candidate = ModeModel {
            mode: mode.clone(),
            spec: spec.clone(),
            schema: data.schema.clone(),
            feature_names: table.names.clone(),
            classifier,
            calibration,
            threshold,
            validation: Validation {
                from: micros_to_time(validation_from),
                to: micros_to_time(until),
                examples,
                events,
                expected_cost: cost,
            },
            importances: ranked,
            candidates: Vec::new(),
            choice: String::new(),
        };
        // With enough failures in the window the event-level cost decides (ties: PR-AUC);
        // with few, a cost difference is one or two failures of luck, so the
        // example-level ranking (hundreds of labelled examples) decides.
        let enough = candidate.validation.events.failures >= MIN_FAILURES_FOR_EVENT_CHOICE;
        let better = match &best {
            None => true,
            Some((_, best_cost, best_auc, _)) => {
                let auc = candidate.validation.examples.pr_auc;
                if enough {
                    cost < *best_cost || (cost == *best_cost && auc > *best_auc)
                } else {
                    auc > *best_auc
                }
            }
        };
        if better {
            let auc = candidate.validation.examples.pr_auc;
            let validation = ValidationSet {
                points,
                failures: failures.clone(),
                rules,
                probabilities: calibrated,
                labels: calibration_labels,
            };
            best = Some((candidate, cost, auc, validation));
        }
    }
    let (mut winner, _, _, validation) = best.expect("at least one candidate");
    winner.choice = explain_choice(&winner, &reports);
    winner.candidates = reports;
    Ok((winner, validation))
}

/// Below this many failures in the validation window, thresholds and the winner are not
/// chosen on event-level cost (too few events to estimate it).
const MIN_FAILURES_FOR_EVENT_CHOICE: usize = 10;

/// The alert threshold: the one minimising event-level cost on the validation window when
/// it holds enough failures to estimate that cost. Otherwise, provisionally, the Bayes
/// decision threshold of calibrated probabilities,
/// `cost_false_alarm / (cost_false_alarm + cost_missed_failure)`; [`pool_thresholds`] then
/// replaces it with one threshold chosen on the pooled validation events of all such modes.
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
    let missed = events.failures - events.flagged_24h_ahead;
    let cost = mode.cost_false_alarm * events.false_flags as f64
        + mode.cost_missed_failure * missed as f64;
    (bayes, cost, events)
}

/// A mode's validation window as scored by its winning candidate.
struct ValidationSet {
    points: Vec<ScoredPoint>,
    failures: HashMap<i32, Vec<i64>>,
    rules: EventRules,
    /// Calibrated probabilities and labels of the labelled validation examples.
    probabilities: Vec<f64>,
    labels: Vec<bool>,
}

/// Modes with too few validation failures to choose their own threshold share one: the
/// calibrated probability that minimises the summed event-level cost of all of them on
/// their validation windows (probabilities are calibrated per mode, so one threshold means
/// the same risk everywhere). Tens of pooled failures estimate it far better than two or
/// three per mode.
fn pool_thresholds(models: &mut [(ModeModel, ValidationSet)]) {
    let thin: Vec<usize> = (0..models.len())
        .filter(|&i| models[i].0.validation.events.failures < MIN_FAILURES_FOR_EVENT_CHOICE)
        .collect();
    if thin.is_empty() {
        return;
    }
    let cost_at = |model: &ModeModel, validation: &ValidationSet, threshold: f64| {
        let (events, _) = model::event_metrics(
            &validation.points,
            &validation.failures,
            threshold,
            &validation.rules,
        );
        let missed = events.failures - events.flagged_24h_ahead;
        let cost = model.mode.cost_false_alarm * events.false_flags as f64
            + model.mode.cost_missed_failure * missed as f64;
        (cost, events)
    };
    let mut grid: Vec<f64> = (1..100).map(|i| i as f64 / 100.0).collect();
    grid.extend([0.995, 0.999]);
    let mut best = (f64::INFINITY, 0.5);
    for &threshold in &grid {
        let total: f64 = thin
            .iter()
            .map(|&i| cost_at(&models[i].0, &models[i].1, threshold).0)
            .sum();
        if total < best.0 {
            best = (total, threshold);
        }
    }
    let (pooled_cost, threshold) = best;
    let failures: usize = thin
        .iter()
        .map(|&i| models[i].0.validation.events.failures)
        .sum();
    tracing::info!(
        threshold,
        pooled_cost,
        modes = thin.len(),
        failures,
        "pooled threshold for modes with few validation failures"
    );
    for &i in &thin {
        let (model, validation) = &mut models[i];
        let (cost, events) = cost_at(model, validation, threshold);
        model.threshold = threshold;
        model.validation.expected_cost = cost;
        model.validation.events = events;
        model.validation.examples =
            model::example_metrics(&validation.probabilities, &validation.labels, threshold);
        model.choice.push_str(&format!(
            "; threshold {threshold:.2} chosen on the pooled validation events of {} modes with fewer than {MIN_FAILURES_FOR_EVENT_CHOICE} failures each ({failures} failures)",
            thin.len()
        ));
    }
}

fn explain_choice(winner: &ModeModel, reports: &[CandidateReport]) -> String {
    let algorithm = winner.classifier.algorithm();
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
        "expected cost over the validation window"
    } else {
        "PR-AUC (fewer than 10 failures in the validation window: too few to compare costs)"
    };
    format!(
        "{} won on {criterion} ({:.0}: {}/{} failures flagged ≥24 h ahead, {} false alarms, PR-AUC {:.3}) against {}",
        algorithm.as_str(),
        winner.validation.expected_cost,
        winner.validation.events.flagged_24h_ahead,
        winner.validation.events.failures,
        winner.validation.events.false_flags,
        winner.validation.examples.pr_auc,
        others.join("; ")
    )
}

/// A deterministic coin: the same example is kept or dropped in every run.
fn keep_negative(device: i32, time: i64, share: f64) -> bool {
    let mut x = (device as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (time as u64);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x % 1_000_000) as f64 / 1_000_000.0 < share
}

/// A stride between scored points in µs: whole hours at least (features use hourly
/// buckets).
pub fn stride_micros(stride: std::time::Duration) -> i64 {
    (stride.as_micros() as i64).max(HOUR_MICROS)
}

pub fn micros_to_time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// Writes `model.json` (the artifact) and `card.json` (the model card).
pub fn write_artifact(
    directory: &Path,
    artifact: &ModelArtifact,
) -> Result<(PathBuf, PathBuf), TrainingError> {
    let write = |path: PathBuf, bytes: Vec<u8>| -> Result<PathBuf, TrainingError> {
        std::fs::create_dir_all(directory).map_err(|source| TrainingError::Write {
            path: directory.to_path_buf(),
            source,
        })?;
        std::fs::write(&path, bytes).map_err(|source| TrainingError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    };
    let model = serde_json::to_vec(artifact).map_err(|source| TrainingError::Artifact {
        path: directory.join("model.json"),
        source,
    })?;
    let card =
        serde_json::to_vec_pretty(&card(artifact)).map_err(|source| TrainingError::Artifact {
            path: directory.join("card.json"),
            source,
        })?;
    Ok((
        write(directory.join("model.json"), model)?,
        write(directory.join("card.json"), card)?,
    ))
}

pub fn read_artifact(path: &Path) -> Result<ModelArtifact, TrainingError> {
    let bytes = std::fs::read(path).map_err(|source| TrainingError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| TrainingError::Artifact {
        path: path.to_path_buf(),
        source,
    })
}

/// The model card: data range, class balance, PR-AUC, precision/recall at threshold,
/// lead times, false alarms, importances, candidates and why the winner won.
pub fn card(artifact: &ModelArtifact) -> serde_json::Value {
    let modes: Vec<serde_json::Value> = artifact
        .modes
        .iter()
        .map(|m| {
            let v = &m.validation;
            serde_json::json!({
                "failure_mode": m.mode.name(),
                "horizon_hours": m.mode.horizon_hours,
                "costs": {"false_alarm": m.mode.cost_false_alarm, "missed_failure": m.mode.cost_missed_failure},
                "algorithm": m.classifier.algorithm().as_str(),
                "why": m.choice,
                "threshold": m.threshold,
                "calibration": m.calibration,
                "validation_window": {"from": v.from, "to": v.to},
                "class_balance": {
                    "examples": v.examples.examples,
                    "positives": v.examples.positives,
                    "positive_share": v.examples.positive_share,
                },
                "pr_auc": v.examples.pr_auc,
                "precision_at_threshold": v.examples.precision_at_threshold,
                "recall_at_threshold": v.examples.recall_at_threshold,
                "events": v.events,
                "expected_cost": v.expected_cost,
                "feature_importances": m.importances,
                "candidates": m.candidates,
                "features": m.feature_names.len(),
            })
        })
        .collect();
    serde_json::json!({
        "version": artifact.version,
        "created_at": artifact.created_at,
        "data": {"from": artifact.data_from, "to": artifact.data_to},
        "modes": modes,
    })
}

pub fn model_rows(artifact: &ModelArtifact, path: &Path) -> Vec<ModelRow> {
    let card = card(artifact);
    artifact
        .modes
        .iter()
        .zip(card["modes"].as_array().cloned().unwrap_or_default())
        .map(|(m, metrics)| ModelRow {
            version: artifact.version.clone(),
            failure_mode: m.mode.name(),
            algorithm: m.classifier.algorithm().as_str().into(),
            horizon_hours: m.mode.horizon_hours,
            features: serde_json::json!(m.feature_names),
            metrics,
            threshold: m.threshold,
            artifact_path: path.display().to_string(),
            data_from: artifact.data_from,
            data_to: artifact.data_to,
            active: false,
        })
        .collect()
}

/// One mode's result of `evaluate`.
#[derive(Debug, Clone, Serialize)]
pub struct ModeEvaluation {
    pub failure_mode: String,
    pub model_version: String,
    pub threshold: f64,
    pub failures: usize,
    pub flagged_24h_ahead: usize,
    pub precision: f64,
    pub recall: f64,
    pub false_alarms_per_1000_device_days: f64,
    pub median_lead_time_hours: Option<f64>,
    pub pr_auc: f64,
    pub examples: model::ExampleMetrics,
    pub events: EventMetrics,
}

#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub overall: serde_json::Value,
    pub failure_modes: Vec<ModeEvaluation>,
    /// Flags raised, for `forewarn-sim score`.
    #[serde(skip)]
    pub flags: Vec<(String, String, DateTime<Utc>)>,
}

/// Scores `artifact` on `[from, to)` every `stride` and judges it against `failures`.
pub async fn evaluate(
    store: &Store,
    artifact: &ModelArtifact,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    stride: i64,
) -> Result<Evaluation, TrainingError> {
    let mut results = Vec::new();
    let mut flags = Vec::new();
    let mut kinds: Vec<&str> = artifact
        .modes
        .iter()
        .map(|m| m.mode.kind.as_str())
        .collect();
    kinds.sort();
    kinds.dedup();
    for kind in kinds {
        let modes: Vec<&ModeModel> = artifact
            .modes
            .iter()
            .filter(|m| m.mode.kind == kind)
            .collect();
        let first = modes[0];
        let spec = first.spec.clone();
        let load_from = from - chrono::Duration::microseconds(spec.daily_lookback_micros());
        let data = load_kind(
            store,
            kind,
            first.schema.components.clone(),
            load_from,
            to,
            &spec,
        )
        .await?;
        let data = data.with_schema(first.schema.clone());
        let requests = data.requests(from.timestamp_micros(), to.timestamp_micros(), stride);
        let externals: HashMap<i32, String> = data
            .devices
            .iter()
            .map(|d| (d.id, d.external_id.clone()))
            .collect();
        // The inputs move into the blocking task and come back with the table.
        let (data, table) = tokio::task::spawn_blocking(move || {
            features::compute(&spec, &data.schema, &data.inputs, &requests).map(|t| (data, t))
        })
        .await??;
        for mode in modes {
            let horizon = (mode.mode.horizon_hours * HOUR_MICROS as f64) as i64;
            let probabilities = mode.probabilities(&table)?;
            let labels = data.labels(&table, &mode.mode.component, horizon);
            let points: Vec<ScoredPoint> = table
                .requests
                .iter()
                .zip(&probabilities)
                .zip(&labels)
                .filter(|(_, label)| label.is_some())
                .map(|((&(device, time), &probability), _)| ScoredPoint {
                    device,
                    time,
                    probability,
                })
                .collect();
            let failures = data.failure_times(&mode.mode.component);
            let rules = EventRules {
                horizon,
                min_lead: 24 * HOUR_MICROS,
                from: from.timestamp_micros(),
                to: to.timestamp_micros(),
            };
            let (events, raised) = model::event_metrics(&points, &failures, mode.threshold, &rules);
            let (judged_probabilities, judged_labels): (Vec<f64>, Vec<bool>) = table
                .requests
                .iter()
                .zip(&probabilities)
                .zip(&labels)
                .filter_map(|((&(_, time), &p), label)| {
                    label.filter(|_| time + horizon <= rules.to).map(|l| (p, l))
                })
                .unzip();
            let examples =
                model::example_metrics(&judged_probabilities, &judged_labels, mode.threshold);
            for flag in raised {
                if let Some(external) = externals.get(&flag.device) {
                    flags.push((
                        external.clone(),
                        mode.mode.component.clone(),
                        micros_to_time(flag.time),
                    ));
                }
            }
            results.push(ModeEvaluation {
                failure_mode: mode.mode.name(),
                model_version: artifact.version.clone(),
                threshold: mode.threshold,
                failures: events.failures,
                flagged_24h_ahead: events.flagged_24h_ahead,
                precision: events.precision,
                recall: events.recall,
                false_alarms_per_1000_device_days: events.false_alarms_per_1000_device_days,
                median_lead_time_hours: events.median_lead_time_hours,
                pr_auc: examples.pr_auc,
                examples,
                events,
            });
        }
    }
    let overall = overall(&results);
    Ok(Evaluation {
        from,
        to,
        overall,
        failure_modes: results,
        flags,
    })
}

/// Sums over modes. Device-days are per kind (modes of a kind watch the same devices).
pub fn overall(results: &[ModeEvaluation]) -> serde_json::Value {
    let sum = |f: fn(&EventMetrics) -> usize| results.iter().map(|r| f(&r.events)).sum::<usize>();
    let failures = sum(|e| e.failures);
    let flagged = sum(|e| e.flagged);
    let ahead = sum(|e| e.flagged_24h_ahead);
    let true_flags = sum(|e| e.true_flags);
    let false_flags = sum(|e| e.false_flags);
    let mut device_days: HashMap<&str, f64> = HashMap::new();
    for r in results {
        let kind = r.failure_mode.split('/').next().unwrap_or_default();
        let entry = device_days.entry(kind).or_default();
        *entry = entry.max(r.events.device_days);
    }
    let device_days: f64 = device_days.values().sum();
    let mut leads: Vec<f64> = results
        .iter()
        .flat_map(|r| r.events.lead_times_hours.iter().copied())
        .collect();
    leads.sort_by(f64::total_cmp);
    let ratio = |a: usize, b: usize| if b > 0 { a as f64 / b as f64 } else { 0.0 };
    serde_json::json!({
        "failures": failures,
        "flagged": flagged,
        "flagged_24h_ahead": ahead,
        "flagged_24h_ahead_share": ratio(ahead, failures),
        "flags": sum(|e| e.flags),
        "true_flags": true_flags,
        "false_flags": false_flags,
        "unjudged_flags": sum(|e| e.unjudged_flags),
        "precision": ratio(true_flags, true_flags + false_flags),
        "recall": ratio(flagged, failures),
        "false_alarms_per_1000_device_days": if device_days > 0.0 { 1000.0 * false_flags as f64 / device_days } else { 0.0 },
        "median_lead_time_hours": model::events::median(&leads),
        "device_days": device_days,
    })
}

/// A promotion decision for one mode.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub failure_mode: String,
    pub challenger: String,
    pub active: Option<String>,
    pub promoted: bool,
    pub reason: String,
    pub challenger_cost: f64,
    pub active_cost: Option<f64>,
}

fn evaluation_cost(evaluation: &ModeEvaluation, mode: &FailureMode) -> f64 {
    mode.cost_false_alarm * evaluation.events.false_flags as f64
        + mode.cost_missed_failure
            * (evaluation.events.failures - evaluation.events.flagged_24h_ahead) as f64
}

/// What comparing a challenger with the active model of its mode concluded.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub promote: bool,
    pub reason: String,
    pub challenger_cost: f64,
    pub active_cost: Option<f64>,
    /// Recorded in `model_promotions.comparison` when promoted.
    pub comparison: serde_json::Value,
}

/// The future of a comparison (`promote_when_better`'s judge). Boxed and `Send`: an async
/// closure borrowing the store and the artifacts would make its caller's future `Send` only
/// for one lifetime, and `serve` spawns retraining.
pub type JudgeFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Verdict, TrainingError>> + Send + 'a>>;

/// How often one challenger is judged again because another promotion of its mode
/// committed while it was being judged. Each retry means some promotion succeeded, so
/// this bounds only pathological churn.
const MAX_PROMOTION_ATTEMPTS: usize = 16;

/// Promotes `version` for `failure_mode` when `judge` finds it better than the active model,
/// and only while the model it was judged against is still the active one (checked under
/// the mode's promotion lock, in the promotion's transaction). When another promotion won
/// the race meanwhile, `version` is judged again against the new active model, so a
/// decision is always the comparison rule applied to the model it replaces. Returns the
/// active version it was last judged against and the verdict.
pub async fn promote_when_better<'a>(
    store: &Store,
    version: &str,
    failure_mode: &str,
    mut judge: impl FnMut(Option<ModelRow>) -> JudgeFuture<'a>,
) -> Result<(Option<String>, Verdict), TrainingError> {
    let mut attempt = 1;
    loop {
        let active = store
            .model_rows(true)
            .await?
            .into_iter()
            .find(|r| r.failure_mode == failure_mode);
        let active_version = active.as_ref().map(|r| r.version.clone());
        let mut verdict = judge(active).await?;
        if !verdict.promote {
            return Ok((active_version, verdict));
        }
        let outcome = store
            .promote_model_if_active_is(
                version,
                failure_mode,
                active_version.as_deref(),
                &verdict.reason,
                &verdict.comparison,
            )
            .await?;
        match outcome {
            PromotionOutcome::Promoted { .. } => return Ok((active_version, verdict)),
            PromotionOutcome::AlreadyActive => {
                verdict.promote = false;
                verdict.reason = "already active".to_string();
                return Ok((active_version, verdict));
            }
            PromotionOutcome::ActiveChanged { active } if attempt < MAX_PROMOTION_ATTEMPTS => {
                tracing::info!(
                    mode = %failure_mode,
                    challenger = %version,
                    active = active.as_deref().unwrap_or("none"),
                    "active model changed during the comparison; comparing again"
                );
                attempt += 1;
            }
            PromotionOutcome::ActiveChanged { active } => {
                verdict.promote = false;
                verdict.reason = format!(
                    "not promoted: the active model changed {MAX_PROMOTION_ATTEMPTS} times while it was being compared"
                );
                return Ok((active, verdict));
            }
        }
    }
}

/// Compares `challenger` with the active model of each mode on the challenger's
/// validation window (the most recent data) and promotes it where it is better: lower
/// expected cost, or the same cost and a higher PR-AUC. Every promotion is recorded in
/// `model_promotions` with the comparison; concurrent promotions of a mode (replicas
/// retraining at once) each compare with the model they replace (`promote_when_better`).
pub async fn promote_if_better(
    store: &Store,
    challenger: &ModelArtifact,
    stride: i64,
) -> Result<Vec<Decision>, TrainingError> {
    let Some(first) = challenger.modes.first() else {
        return Ok(Vec::new());
    };
    let window_from = first.validation.from;
    let window_to = first.validation.to;
    let challenger_eval = evaluate(store, challenger, window_from, window_to, stride).await?;
    // Evaluations of active artifacts by path: one artifact holds many modes. Locked only
    // between awaits.
    let evaluated: Mutex<HashMap<String, Arc<Evaluation>>> = Mutex::new(HashMap::new());
    let mut decisions = Vec::new();
    for (mode, ours) in challenger.modes.iter().zip(&challenger_eval.failure_modes) {
        let name = mode.mode.name();
        let challenger_cost = evaluation_cost(ours, &mode.mode);
        let evaluated = &evaluated;
        let name_ref = &name;
        let judge = |active: Option<ModelRow>| -> JudgeFuture<'_> {
            Box::pin(async move {
                let (promote, reason, active_cost) = match active {
                    None => (true, "first model of this failure mode".to_string(), None),
                    Some(row) if row.version == challenger.version => {
                        (false, "already active".to_string(), None)
                    }
                    Some(row) => {
                        let cached = evaluated
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .get(&row.artifact_path)
                            .cloned();
                        let theirs = match cached {
                            Some(evaluation) => evaluation,
                            None => {
                                let path = PathBuf::from(&row.artifact_path);
                                let artifact =
                                    tokio::task::spawn_blocking(move || read_artifact(&path))
                                        .await??;
                                let evaluation = Arc::new(
                                    evaluate(store, &artifact, window_from, window_to, stride)
                                        .await?,
                                );
                                evaluated
                                    .lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .insert(row.artifact_path.clone(), evaluation.clone());
                                evaluation
                            }
                        };
                        match theirs
                            .failure_modes
                            .iter()
                            .find(|m| m.failure_mode == *name_ref)
                        {
                            None => (true, "active artifact lacks this mode".to_string(), None),
                            Some(theirs) => {
                                let active_cost = evaluation_cost(theirs, &mode.mode);
                                let better = challenger_cost < active_cost
                                    || (challenger_cost == active_cost
                                        && ours.pr_auc > theirs.pr_auc);
                                let reason = format!(
                                    "on {window_from}..{window_to}: challenger cost {challenger_cost:.0} (PR-AUC {:.3}, {}/{} flagged ≥24 h ahead, {} false alarms) vs active {} cost {active_cost:.0} (PR-AUC {:.3}, {}/{}, {} false alarms)",
                                    ours.pr_auc,
                                    ours.events.flagged_24h_ahead,
                                    ours.events.failures,
                                    ours.events.false_flags,
                                    row.version,
                                    theirs.pr_auc,
                                    theirs.events.flagged_24h_ahead,
                                    theirs.events.failures,
                                    theirs.events.false_flags,
                                );
                                (better, reason, Some(active_cost))
                            }
                        }
                    }
                };
                Ok(Verdict {
                    promote,
                    reason,
                    challenger_cost,
                    active_cost,
                    comparison: serde_json::json!({
                        "window": {"from": window_from, "to": window_to},
                        "challenger_cost": challenger_cost,
                        "active_cost": active_cost,
                        "challenger": ours,
                    }),
                })
            })
        };
        let (active, verdict) =
            promote_when_better(store, &challenger.version, &name, judge).await?;
        tracing::info!(mode = %name, promoted = verdict.promote, reason = %verdict.reason, "promotion decision");
        decisions.push(Decision {
            failure_mode: name,
            challenger: challenger.version.clone(),
            active,
            promoted: verdict.promote,
            reason: verdict.reason,
            challenger_cost: verdict.challenger_cost,
            active_cost: verdict.active_cost,
        });
    }
    Ok(decisions)
}

/// Scheduled retraining inside `serve`: every `interval`, train a challenger on all data
/// (failures and maintenance written by closed tickets included) and promote it per mode
/// only where it beats the active model.
pub async fn run_retraining(
    config: TrainConfig,
    interval: std::time::Duration,
    store: Store,
    mut shutdown: crate::shutdown::Shutdown,
) -> Result<(), TrainingError> {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // not at startup: the shipped or active model scores first
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait() => return Ok(()),
        }
        let stride = stride_micros(config.example_stride);
        match train(&store, &config, None, None).await {
            Ok((artifact, report)) => {
                tracing::info!(version = %report.version, seconds = report.seconds, "challenger trained");
                if let Err(error) = promote_if_better(&store, &artifact, stride).await {
                    tracing::warn!(%error, "promotion check failed");
                }
            }
            Err(error) => tracing::warn!(%error, "scheduled retraining failed"),
        }
    }
}
