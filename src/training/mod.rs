//! `forewarn train` and `forewarn evaluate`: load history from the store, build labelled
//! examples with the one feature path, fit and compare candidates, calibrate, choose the
//! threshold, write the artifact, the model card and the `models` rows; judge any model on
//! any time range.
//!
//! Time discipline (no leakage; [`split`]): an example at `t` is labelled by failures in
//! `(t, t + horizon]`. The held-out time is a tuning window followed by a test window.
//! Candidates are scored on the tuning window out of fold (rolling origin: each fold by a
//! model trained on examples labelled before the fold starts); calibration, threshold and
//! winner are chosen there; the winner is refitted on every example labelled before the
//! test window and judged on it, where nothing was fitted or chosen. Nothing at or after
//! `until` is read.

mod baselines;
pub mod config;
mod evaluate;
mod fit;
mod horizon;
mod pooled;
mod promote;
mod retrain;
mod split;
mod thresholds;

use std::path::PathBuf;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::TrainConfig;
use crate::features::{self, FeatureSpec, HOUR_MICROS};
use crate::model::{self, FailureMode, ModelArtifact};
use crate::store::{Store, StoreError};

pub use crate::artifact::{
    ArtifactError, ClassBalance, Costs, ModeCard, ModelCard, Span, WindowFigures, card, mode_card,
    model_rows, read_artifact, write_artifact,
};
pub use crate::history::{
    Examples, KindData, LoadTimes, NotAnExample, load_inputs, load_inputs_timed, load_kind,
    micros_to_time,
};
pub use evaluate::{
    Evaluation, Judged, ModeEvaluation, Overall, evaluate, evaluate_as, evaluate_models, overall,
};
pub use promote::{
    Comparison, Decision, JudgeFuture, Verdict, fitted_until, promote_all, promote_if_better,
    promote_when_better,
};
pub use retrain::RetrainSettings;
pub use split::Split;

#[derive(Debug, thiserror::Error)]
pub enum TrainingError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Features(#[from] features::FeatureError),
    #[error(transparent)]
    Model(#[from] model::ModelError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("no data to train on: {0}")]
    NoData(String),
    /// A range was asked for and there is no rollup to complete it from.
    #[error("telemetry_hourly is empty")]
    EmptyRollup,
    /// `evaluate_models` was given neither a version in `models` nor a file.
    #[error("no model version {0} in `models` (nor a file)")]
    UnknownModel(String),
    #[error("no active model: train one or pass --model")]
    NoActiveModel,
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The failure modes to train: configured ones, plus any kind/component in `failures`
/// that is not configured — as seen before `until`. A mode without a configured horizon
/// has the default one, to be learnt from the data when `train.learn_horizons`
/// ([`ModeToTrain::learn_horizon`]).
pub async fn failure_modes(
    store: &Store,
    config: &TrainConfig,
    until: DateTime<Utc>,
) -> Result<Vec<ModeToTrain>, TrainingError> {
    let seen = store.failure_modes_seen(until).await?;
    let mut modes: Vec<ModeToTrain> = config
        .failure_modes
        .iter()
        .filter(|m| {
            seen.iter()
                .any(|(k, c, _)| *k == m.kind && *c == m.component)
        })
        .map(|m| ModeToTrain {
            mode: FailureMode {
                kind: m.kind.clone(),
                component: m.component.clone(),
                horizon_hours: m.horizon.unwrap_or(config.default_horizon).as_secs_f64() / 3600.0,
                cost_false_alarm: m.cost_false_alarm.unwrap_or(config.cost_false_alarm),
                cost_missed_failure: m.cost_missed_failure.unwrap_or(config.cost_missed_failure),
            },
            learn_horizon: m.horizon.is_none() && config.learn_horizons,
            configured_horizon: m.horizon.is_some(),
            split: None,
        })
        .collect();
    for (kind, component, _) in seen {
        if !modes
            .iter()
            .any(|m| m.mode.kind == kind && m.mode.component == component)
        {
            modes.push(ModeToTrain {
                mode: FailureMode {
                    kind,
                    component,
                    horizon_hours: config.default_horizon.as_secs_f64() / 3600.0,
                    cost_false_alarm: config.cost_false_alarm,
                    cost_missed_failure: config.cost_missed_failure,
                },
                learn_horizon: config.learn_horizons,
                configured_horizon: false,
                split: None,
            });
        }
    }
    Ok(modes)
}

/// A failure mode about to be trained.
#[derive(Debug, Clone)]
pub struct ModeToTrain {
    pub mode: FailureMode,
    /// No horizon configured: it comes from its history when that can tell.
    pub learn_horizon: bool,
    /// Its horizon is `train.failure_modes`' (else the default or a learned one).
    pub configured_horizon: bool,
    /// Its own tuning and test windows, when its horizon is too long for the common ones
    /// on this history (`Split::shrunk`); `None`: the common ones.
    pub split: Option<Split>,
}

/// What `train` did, per mode.
#[derive(Debug, Serialize)]
pub struct TrainReport {
    pub version: String,
    pub artifact: PathBuf,
    pub card: PathBuf,
    pub data_from: DateTime<Utc>,
    pub data_to: DateTime<Utc>,
    /// Training examples are labelled before this; the tuning window starts here.
    pub tuning_from: DateTime<Utc>,
    /// The test window: nothing fitted or chosen from here to `data_to`.
    pub test_from: DateTime<Utc>,
    pub tuning_folds: usize,
    pub seconds: f64,
    pub modes: Vec<ModeCard>,
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
    // Training starts at the data, not at the range asked for.
    let from = match store.rollup_range().await? {
        Some((first, _)) => from.max(first),
        None => from,
    };
    let version = version.unwrap_or_else(|| format!("v{}", Utc::now().format("%Y%m%d-%H%M%S")));
    let modes = failure_modes(store, config, until).await?;
    if modes.is_empty() {
        return Err(TrainingError::NoData(
            "no failures recorded: nothing to learn from".into(),
        ));
    }
    // The longest horizon sets the windows. A mode whose horizon needs more history than
    // they leave trains on its own, shorter windows when the history holds those
    // (`Split::shrunk`), and otherwise waits (a warning says so); the others train on the
    // common ones, which its horizon does not shorten.
    let mut modes = modes;
    let (from_us, until_us) = (from.timestamp_micros(), until.timestamp_micros());
    let split = loop {
        let common = |m: &&ModeToTrain| m.split.is_none();
        let longest = modes
            .iter()
            .filter(common)
            .max_by(|a, b| a.mode.horizon_hours.total_cmp(&b.mode.horizon_hours))
            .map(|m| m.mode.clone())
            .expect("a mode on the common windows is left");
        match Split::new(
            config,
            from_us,
            until_us,
            fit::hours_to_micros(longest.horizon_hours),
            &longest.name(),
        ) {
            Ok(split) => break split,
            Err(error)
                if modes
                    .iter()
                    .filter(common)
                    .any(|m| m.mode.horizon_hours < longest.horizon_hours) =>
            {
                for m in modes
                    .iter_mut()
                    .filter(|m| m.split.is_none() && m.mode.horizon_hours >= longest.horizon_hours)
                {
                    m.split = Split::shrunk(
                        config,
                        from_us,
                        until_us,
                        fit::hours_to_micros(m.mode.horizon_hours),
                    );
                    match &m.split {
                        Some(own) => {
                            tracing::info!(mode = %m.mode.name(), tuning_from = %micros_to_time(own.tune_from), test_from = %micros_to_time(own.test_from), "its horizon is too long for the common windows on this history: trained on its own, shorter ones")
                        }
                        None => {
                            tracing::warn!(%error, mode = %m.mode.name(), "failure mode skipped: too little history")
                        }
                    }
                }
                modes.retain(|m| m.split.is_some() || m.mode.horizon_hours < longest.horizon_hours);
            }
            // No shorter mode left: the longest ones share the shorter windows, when the
            // history holds those.
            Err(error) => {
                let horizon = fit::hours_to_micros(longest.horizon_hours);
                match Split::shrunk(config, from_us, until_us, horizon) {
                    Some(shrunk) => {
                        tracing::info!(%error, tuning_from = %micros_to_time(shrunk.tune_from), test_from = %micros_to_time(shrunk.test_from), "the automatic windows do not fit this history: shorter ones");
                        break shrunk;
                    }
                    None => return Err(error),
                }
            }
        }
    };
    let spec = FeatureSpec {
        fleet_reference: config.fleet_reference,
        ..FeatureSpec::default()
    };
    let mut kinds: Vec<String> = modes.iter().map(|m| m.mode.kind.clone()).collect();
    kinds.sort();
    kinds.dedup();
    let stride = stride_micros(config.example_stride);
    let mut trained_modes = Vec::new();
    for kind in kinds {
        let kind_modes: Vec<ModeToTrain> = modes
            .iter()
            .filter(|m| m.mode.kind == kind)
            .cloned()
            .collect();
        let components = kind_modes
            .iter()
            .map(|m| m.mode.component.clone())
            .collect();
        let loaded = std::time::Instant::now();
        let data = load_kind(store, &kind, components, from, until, &spec).await?;
        let load_seconds = loaded.elapsed().as_secs_f64();
        // Examples start as soon as a device reports: a feature whose window is not full
        // yet (a baseline in the first three weeks) is a missing value, not a reason to
        // drop the example.
        let requests = data.requests(split.from, split.until, stride);
        tracing::info!(kind = %kind, devices = data.devices.len(), examples = requests.len(), load_seconds, "training data loaded");
        let spec_for_task = spec.clone();
        let config = config.clone();
        let trained: Result<Vec<fit::Trained>, TrainingError> = tokio::task::spawn_blocking(move || {
            let computed = Instant::now();
            let table = features::compute(&spec_for_task, &data.schema, &data.inputs, &requests)?;
            tracing::info!(kind = %data.schema.kind, rows = table.n_rows(), columns = table.n_columns(), seconds = computed.elapsed().as_secs_f64(), "features computed");
            let mut modes = Vec::new();
            for to_train in &kind_modes {
                let mut mode = to_train.mode.clone();
                let mode_split = to_train.split.unwrap_or(split);
                let source = if to_train.learn_horizon {
                    learn_horizon(&data, &table, &mut mode, &mode_split)
                } else if to_train.configured_horizon {
                    "configured (train.failure_modes)".to_string()
                } else {
                    "default (train.default_horizon; train.learn_horizons is off)".to_string()
                };
                modes.push((mode, source, to_train.split));
            }
            // The pooled candidate is fitted on the common windows, for the modes on them.
            let failure_modes: Vec<FailureMode> = modes
                .iter()
                .filter(|(_, _, own)| own.is_none())
                .map(|(m, _, _)| m.clone())
                .collect();
            let pooled = fit::PooledFits::fit(&config, &data, &table, &failure_modes, &split)?;
            let mut trained = Vec::new();
            for (mode, source, own) in modes {
                let (mode_split, pooled) = match own {
                    Some(own) => (own, None),
                    None => (split, pooled.as_ref()),
                };
                match fit::train_mode(&config, &spec_for_task, &data, &table, &mode, &mode_split, pooled) {
                    Ok(mut model) => {
                        model.model.horizon_source = source;
                        if own.is_some() {
                            model.model.choice.push_str(&format!(
                                "; on its own, shorter windows (tuning from {}, test from {}): the common ones leave too little history for its {:.0}-day horizon",
                                micros_to_time(mode_split.tune_from),
                                micros_to_time(mode_split.test_from),
                                mode.horizon_hours / 24.0
                            ));
                        }
                        trained.push(model);
                    }
                    // A mode without a failure in the training or tuning window cannot be
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
        trained_modes.extend(trained?);
    }
    fit::pool_thresholds_by_windows(&mut trained_modes);
    fit::judge_tests(&mut trained_modes);
    let mode_models: Vec<model::ModeModel> = trained_modes.into_iter().map(|t| t.model).collect();
    if mode_models.is_empty() {
        return Err(TrainingError::NoData(
            "no failure mode has failures both in the training examples and in the tuning window"
                .into(),
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
        tuning_from: micros_to_time(split.tune_from),
        test_from: micros_to_time(split.test_from),
        tuning_folds: split.folds,
        seconds: started.elapsed().as_secs_f64(),
        modes: card(&artifact).modes,
    };
    Ok((artifact, report))
}

/// The range `train` is asked for when one end or both are given (`forewarn train --from
/// --until`): a missing start is the rollup's oldest hour, a missing end the end of its
/// newest. Neither given: `None`, which `train` resolves the same way.
pub async fn training_range(
    store: &Store,
    from: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<Option<(DateTime<Utc>, DateTime<Utc>)>, TrainingError> {
    if from.is_none() && until.is_none() {
        return Ok(None);
    }
    let (first, last) = store
        .rollup_range()
        .await?
        .ok_or(TrainingError::EmptyRollup)?;
    Ok(Some((
        from.unwrap_or(first),
        until.unwrap_or(last + chrono::Duration::hours(1)),
    )))
}

/// Sets `mode`'s horizon from its history before the test window (a choice like any
/// other: made on training and tuning time, never on the test window) and says where it
/// came from. A horizon never exceeds [`Split::longest_learnt_horizon_hours`].
fn learn_horizon(
    data: &KindData,
    table: &features::FeatureTable,
    mode: &mut FailureMode,
    split: &Split,
) -> String {
    let failures = data.failure_times(&mode.component);
    let rows: Vec<usize> = (0..table.n_rows())
        .filter(|&row| table.requests[row].1 < split.test_from)
        .collect();
    match horizon::learn(table, &rows, &failures, split.test_from) {
        Ok((hours, why)) => {
            let capped = hours.min(split.longest_learnt_horizon_hours()).max(48.0);
            mode.horizon_hours = capped;
            tracing::info!(mode = %mode.name(), hours = capped, %why, "horizon learnt");
            if capped < hours {
                format!("{why}; capped at two thirds of the shorter of the tuning and test windows")
            } else {
                why
            }
        }
        Err(why) => {
            tracing::info!(mode = %mode.name(), %why, "horizon not learnt: the default one");
            format!("default (train.default_horizon): {why}")
        }
    }
}

/// A stride between scored points in µs: whole hours at least (features use hourly
/// buckets).
pub fn stride_micros(stride: std::time::Duration) -> i64 {
    (stride.as_micros() as i64).max(HOUR_MICROS)
}
