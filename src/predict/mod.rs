//! The `predict` stage of `serve`: every `predict.interval`, score the devices that have
//! new data with the active model of each failure mode, and write `predictions` with the
//! top contributing factors in words. A model activated in `models` (by `forewarn train`,
//! scheduled retraining or by hand) is picked up on the next cycle, without a restart.
//!
//! Features are "as of" the newest complete hour of each device (event time), computed by
//! [`crate::features::compute`] over a lookback loaded from the store: the same function
//! training uses over whole histories.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::features::{self, FeatureInputs, FeatureSpec, FeatureTable, HOUR_MICROS, KindSchema};
use crate::model::{ModeModel, ModelArtifact};
use crate::shutdown::Shutdown;
use crate::store::{DeviceSummary, PredictionRow, PromotionOutcome, Store, StoreError};
use crate::training::{self, TrainingError};

#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Training(#[from] TrainingError),
    #[error(transparent)]
    Features(#[from] features::FeatureError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

#[derive(Debug, Clone)]
pub struct PredictSettings {
    pub interval: Duration,
    pub top_factors: usize,
    /// Registered and activated for modes without an active model.
    pub default_model: Option<PathBuf>,
}

/// Models in use, reloaded when `models` says another version is active.
#[derive(Default)]
pub struct ActiveModels {
    /// failure mode → (version, model)
    modes: HashMap<String, (String, ActiveMode)>,
    artifacts: HashMap<PathBuf, Arc<ModelArtifact>>,
}

impl ActiveModels {
    /// Brings the set in line with `models.active`; returns the modes whose version changed.
    pub async fn refresh(&mut self, store: &Store) -> Result<Vec<String>, PredictError> {
        let rows = store.model_rows(true).await?;
        let mut changed = Vec::new();
        let mut next = HashMap::new();
        for row in rows {
            if let Some((version, model)) = self.modes.get(&row.failure_mode)
                && *version == row.version
            {
                next.insert(row.failure_mode.clone(), (version.clone(), model.clone()));
                continue;
            }
            let path = PathBuf::from(&row.artifact_path);
            let artifact = match self.artifacts.get(&path) {
                Some(artifact) if artifact.version == row.version => artifact.clone(),
                _ => {
                    let read_path = path.clone();
                    let artifact = Arc::new(
                        tokio::task::spawn_blocking(move || training::read_artifact(&read_path))
                            .await??,
                    );
                    self.artifacts.insert(path.clone(), artifact.clone());
                    artifact
                }
            };
            let Some(index) = artifact
                .modes
                .iter()
                .position(|m| m.mode.name() == row.failure_mode)
            else {
                tracing::warn!(version = %row.version, mode = %row.failure_mode, "active model's artifact lacks this mode");
                continue;
            };
            let model = ActiveMode::new(artifact.clone(), index);
            tracing::info!(mode = %row.failure_mode, version = %row.version, algorithm = %row.algorithm, "model activated for scoring");
            changed.push(row.failure_mode.clone());
            next.insert(row.failure_mode, (row.version, model));
        }
        self.artifacts
            .retain(|_, a| next.values().any(|(v, _)| *v == a.version));
        self.modes = next;
        Ok(changed)
    }

    pub fn is_empty(&self) -> bool {
        self.modes.is_empty()
    }

    pub fn versions(&self) -> HashMap<String, String> {
        self.modes
            .iter()
            .map(|(mode, (version, _))| (mode.clone(), version.clone()))
            .collect()
    }
}

/// One failure mode's model inside a shared, loaded artifact.
#[derive(Clone)]
pub struct ActiveMode {
    artifact: Arc<ModelArtifact>,
    index: usize,
}

impl ActiveMode {
    pub fn new(artifact: Arc<ModelArtifact>, index: usize) -> ActiveMode {
        ActiveMode { artifact, index }
    }

    pub fn model(&self) -> &ModeModel {
        &self.artifact.modes[self.index]
    }
}

/// Registers the shipped default model for every mode that has no active model.
pub async fn ensure_default_model(store: &Store, path: &Path) -> Result<usize, PredictError> {
    if !path.exists() {
        tracing::info!(path = %path.display(), "no default model shipped");
        return Ok(0);
    }
    let active = store.model_rows(true).await?;
    let read_path = path.to_path_buf();
    let artifact =
        tokio::task::spawn_blocking(move || training::read_artifact(&read_path)).await??;
    let missing: Vec<String> = artifact
        .modes
        .iter()
        .map(|m| m.mode.name())
        .filter(|name| !active.iter().any(|row| row.failure_mode == *name))
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    store
        .insert_models(&training::model_rows(&artifact, path))
        .await?;
    let mut n_activated = 0;
    for mode in &missing {
        // Only where still no model is active: a replica starting at the same time, or a
        // training run, may have activated one since `active` was read.
        let outcome = store
            .promote_model_if_active_is(
                &artifact.version,
                mode,
                None,
                "default model shipped with forewarn (no model was active)",
                &serde_json::json!({}),
            )
            .await?;
        if matches!(outcome, PromotionOutcome::Promoted { .. }) {
            n_activated += 1;
        }
    }
    tracing::info!(version = %artifact.version, modes = n_activated, "default model activated");
    Ok(n_activated)
}

/// What one cycle did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CycleReport {
    pub devices: usize,
    pub predictions: usize,
    pub above_threshold: usize,
    pub load_seconds: f64,
    pub compute_seconds: f64,
    pub write_seconds: f64,
}

/// Scoring state across cycles: the as-of time each device was last scored at.
#[derive(Default)]
pub struct Scorer {
    pub models: ActiveModels,
    scored_until: HashMap<i32, i64>,
    resumed: bool,
}

impl Scorer {
    /// One cycle: refresh models, find devices with a newer complete hour, score, write.
    pub async fn cycle(
        &mut self,
        store: &Store,
        top_factors: usize,
    ) -> Result<CycleReport, PredictError> {
        let loading = Instant::now();
        self.models.refresh(store).await?;
        if self.models.is_empty() {
            return Ok(CycleReport::default());
        }
        if !self.resumed {
            for (device, time) in store.newest_prediction_times().await? {
                self.scored_until.insert(device, time.timestamp_micros());
            }
            self.resumed = true;
        }
        store.refresh_rollup_now().await?;
        let devices = store.device_summaries(None).await?;
        let mut report = CycleReport::default();
        let mut by_kind: HashMap<String, KindBatch> = HashMap::new();
        for device in &devices {
            let Some(seen) = device.last_seen_at else {
                continue;
            };
            let as_of = seen.timestamp_micros().div_euclid(HOUR_MICROS) * HOUR_MICROS;
            if self
                .scored_until
                .get(&device.id)
                .is_some_and(|&t| t >= as_of)
            {
                continue;
            }
            let batch = by_kind.entry(device.info.kind.clone()).or_default();
            batch.requests.push((device.id, as_of));
            batch.devices.push(device.clone());
        }
        let mut rows = Vec::new();
        let mut compute_seconds = 0.0;
        let mut load_seconds = loading.elapsed().as_secs_f64();
        let mut kinds: Vec<_> = by_kind.into_iter().collect();
        kinds.sort_by(|a, b| a.0.cmp(&b.0));
        for (
            kind,
            KindBatch {
                requests,
                devices: kind_devices,
            },
        ) in kinds
        {
            let modes: Vec<(String, String, ActiveMode)> = self
                .models
                .modes
                .iter()
                .filter(|(_, (_, m))| m.model().mode.kind == kind)
                .map(|(name, (version, model))| (name.clone(), version.clone(), model.clone()))
                .collect();
            if modes.is_empty() {
                continue;
            }
            let loaded = Instant::now();
            let spec = modes[0].2.model().spec.clone();
            let inputs = live_inputs(store, &spec, &kind_devices, &requests).await?;
            load_seconds += loaded.elapsed().as_secs_f64();
            let computing = Instant::now();
            let kind_rows = tokio::task::spawn_blocking(move || {
                score_kind(&inputs, &requests, &modes, top_factors)
            })
            .await??;
            compute_seconds += computing.elapsed().as_secs_f64();
            rows.extend(kind_rows);
        }
        let writing = Instant::now();
        for chunk in rows.chunks(5000) {
            store.insert_predictions(chunk).await?;
        }
        for row in &rows {
            let entry = self.scored_until.entry(row.device_id).or_insert(i64::MIN);
            *entry = (*entry).max(row.time.timestamp_micros());
        }
        report.devices = rows
            .iter()
            .map(|r| r.device_id)
            .collect::<std::collections::HashSet<_>>()
            .len();
        report.predictions = rows.len();
        report.above_threshold = rows.iter().filter(|r| r.above_threshold).count();
        report.load_seconds = load_seconds;
        report.compute_seconds = compute_seconds;
        report.write_seconds = writing.elapsed().as_secs_f64();
        Ok(report)
    }
}

/// One kind's devices to score in a cycle, and their as-of times.
#[derive(Default)]
struct KindBatch {
    requests: Vec<(i32, i64)>,
    devices: Vec<DeviceSummary>,
}

/// Loads the lookback the features of `requests` need (`devices`: the requested ones).
pub async fn live_inputs(
    store: &Store,
    spec: &FeatureSpec,
    devices: &[DeviceSummary],
    requests: &[(i32, i64)],
) -> Result<FeatureInputs, PredictError> {
    let newest = requests.iter().map(|(_, t)| *t).max().unwrap_or(0);
    let oldest = requests.iter().map(|(_, t)| *t).min().unwrap_or(0);
    Ok(training::load_inputs(
        store,
        devices,
        spec,
        training::micros_to_time(oldest),
        training::micros_to_time(newest),
    )
    .await?)
}

/// Features and probabilities of one kind's requests under each of its modes' models.
pub fn score_kind(
    inputs: &FeatureInputs,
    requests: &[(i32, i64)],
    modes: &[(String, String, ActiveMode)],
    top_factors: usize,
) -> Result<Vec<PredictionRow>, PredictError> {
    let mut tables: Vec<((FeatureSpec, KindSchema), FeatureTable)> = Vec::new();
    let mut rows = Vec::new();
    for (name, version, active) in modes {
        let model = active.model();
        let key = (model.spec.clone(), model.schema.clone());
        let index = match tables.iter().position(|(k, _)| *k == key) {
            Some(index) => index,
            None => {
                let table = features::compute(&model.spec, &model.schema, inputs, requests)?;
                tables.push((key, table));
                tables.len() - 1
            }
        };
        let table = &tables[index].1;
        let probabilities = model.probabilities(table)?;
        let mut factors = if top_factors > 0 {
            model.top_factors(table, top_factors)
        } else {
            vec![Vec::new(); table.n_rows()]
        };
        for (row, probability) in probabilities.into_iter().enumerate() {
            let (device, time) = table.requests[row];
            let factors = std::mem::take(&mut factors[row]);
            rows.push(PredictionRow {
                time: training::micros_to_time(time),
                device_id: device,
                failure_mode: name.clone(),
                probability,
                horizon_hours: model.mode.horizon_hours,
                model_version: version.clone(),
                above_threshold: probability >= model.threshold,
                top_factors: serde_json::to_value(&factors).unwrap_or_default(),
            });
        }
    }
    Ok(rows)
}

/// Runs cycles every `interval` until shutdown. A failed cycle is logged and retried on
/// the next tick: scoring is idempotent (one row per device, mode, time and model).
pub async fn run(
    settings: PredictSettings,
    store: Store,
    mut shutdown: Shutdown,
) -> Result<(), PredictError> {
    if let Some(path) = &settings.default_model
        && let Err(error) = ensure_default_model(&store, path).await
    {
        tracing::warn!(error = %error, "default model not registered");
    }
    let mut scorer = Scorer::default();
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait() => return Ok(()),
        }
        match scorer.cycle(&store, settings.top_factors).await {
            Ok(report) if report.predictions > 0 => tracing::info!(
                devices = report.devices,
                predictions = report.predictions,
                above_threshold = report.above_threshold,
                load_seconds = report.load_seconds,
                compute_seconds = report.compute_seconds,
                write_seconds = report.write_seconds,
                "prediction cycle"
            ),
            Ok(_) => tracing::debug!("prediction cycle: nothing new"),
            Err(error) => tracing::warn!(error = %error, "prediction cycle failed"),
        }
    }
}
