//! `forewarn bench predict`: one live scoring cycle (features, probabilities, top factors)
//! for a large fleet, in memory, with a trained artifact.
//!
//! `forewarn bench cmapss`: NASA C-MAPSS through forewarn's own path — `import` into a
//! scratch database, features from the rollup, a gradient-boosted RUL regressor — scored on
//! the official test units against the published references.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::features::{
    self, DAY_MICROS, DailyRow, DeviceInfo, EventRecord, FeatureInputs, FeatureSpec, HOUR_MICROS,
    HourlyRow, KindSchema,
};
use crate::import::{self, DeviceDefaults};
use crate::model::{fit_regressor, predict_regressor};
use crate::training::{self, TrainingError};

#[derive(Debug, thiserror::Error)]
pub enum ModelBenchError {
    #[error(transparent)]
    Training(#[from] TrainingError),
    #[error(transparent)]
    Features(#[from] features::FeatureError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Import(#[from] import::ImportError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    App(#[from] crate::app::AppError),
    #[error("{0}")]
    Invalid(String),
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// A deterministic pseudo-random stream (no dependency for a benchmark's noise).
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) - 0.5
    }
}

/// Inputs of one scoring cycle for `devices` devices of `schema.kind`: exactly the
/// lookback the live path loads (hourly rows of the last 30 h, day buckets of 25 days).
pub fn synthetic_cycle_inputs(
    spec: &FeatureSpec,
    schema: &KindSchema,
    devices: usize,
    as_of: i64,
) -> (FeatureInputs, Vec<(i32, i64)>) {
    let mut inputs = FeatureInputs::default();
    let mut noise = Noise(42);
    for (index, name) in schema.metrics.iter().enumerate() {
        inputs.metric_names.insert(index as i16 + 1, name.clone());
    }
    let hours = spec.hourly_lookback_micros() / HOUR_MICROS;
    let days = spec.daily_lookback_micros() / DAY_MICROS;
    let as_of_hour = as_of / HOUR_MICROS;
    let as_of_day = as_of / DAY_MICROS;
    let mut requests = Vec::with_capacity(devices);
    for device in 0..devices as i32 {
        let model = schema
            .models
            .get(device as usize % schema.models.len().max(1))
            .cloned();
        inputs.devices.insert(
            device,
            DeviceInfo {
                kind: schema.kind.clone(),
                model,
                installed_at: Some(as_of - (200 + device as i64 % 1000) * DAY_MICROS),
            },
        );
        for metric in 0..schema.metrics.len() {
            let level = 10.0 * (metric + 1) as f64;
            for hour in (as_of_hour - hours)..as_of_hour {
                let value = level + noise.next();
                inputs.hourly.push(HourlyRow {
                    device_id: device,
                    metric_id: metric as i16 + 1,
                    bucket: hour * HOUR_MICROS,
                    avg: value,
                    min: value - 0.5,
                    max: value + 0.5,
                });
            }
            for day in (as_of_day - days)..as_of_day {
                let mean = level + 0.2 * noise.next();
                inputs.daily.push(DailyRow {
                    device_id: device,
                    metric_id: metric as i16 + 1,
                    day: day * DAY_MICROS,
                    hours: 24.0,
                    sum: 24.0 * mean,
                    sum_squares: 24.0 * (mean * mean + 0.08),
                    min: mean - 1.0,
                    max: mean + 1.0,
                });
            }
        }
        if device % 10 == 0 {
            inputs.events.push(EventRecord {
                device_id: device,
                time: as_of - 3 * HOUR_MICROS,
                code: schema
                    .event_codes
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "E1".into()),
                severity: "warning".into(),
            });
        }
        requests.push((device, as_of));
    }
    (inputs, requests)
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PredictBenchReport {
    pub devices: usize,
    pub kind: String,
    pub modes: usize,
    pub features: usize,
    pub input_rows: usize,
    pub features_seconds: f64,
    pub scoring_seconds: f64,
    pub factors_seconds: f64,
    pub total_seconds: f64,
    pub devices_per_second: f64,
}

/// Features + probabilities + top factors for `devices` devices of `kind`, `repeat`
/// times; medians.
pub fn run_predict_bench(
    model: &Path,
    kind: &str,
    devices: usize,
    repeat: usize,
    top_factors: usize,
) -> Result<PredictBenchReport, ModelBenchError> {
    let artifact = training::read_artifact(model)?;
    let modes: Vec<&crate::model::ModeModel> = artifact
        .modes
        .iter()
        .filter(|m| m.mode.kind == kind)
        .collect();
    let first = modes.first().ok_or_else(|| {
        ModelBenchError::Invalid(format!("{} has no model for kind {kind}", model.display()))
    })?;
    let as_of = Utc::now().timestamp_micros() / HOUR_MICROS * HOUR_MICROS;
    let (inputs, requests) = synthetic_cycle_inputs(&first.spec, &first.schema, devices, as_of);
    let input_rows = inputs.hourly.len() + inputs.daily.len();
    let (mut feature_times, mut scoring_times, mut factor_times, mut totals) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut n_features = 0;
    for run in 0..repeat.max(1) {
        let started = Instant::now();
        let table = features::compute(&first.spec, &first.schema, &inputs, &requests)?;
        let features_seconds = started.elapsed().as_secs_f64();
        n_features = table.n_columns();
        let scoring = Instant::now();
        let mut probabilities = Vec::new();
        for mode in &modes {
            probabilities.push(mode.probabilities(&table)?);
        }
        let scoring_seconds = scoring.elapsed().as_secs_f64();
        let explaining = Instant::now();
        let mut n_factors = 0;
        for mode in &modes {
            n_factors += mode
                .top_factors(&table, top_factors)
                .iter()
                .map(Vec::len)
                .sum::<usize>();
        }
        let factors_seconds = explaining.elapsed().as_secs_f64();
        let total = started.elapsed().as_secs_f64();
        println!(
            "run {}: {devices} devices, {input_rows} input rows → features {features_seconds:.2} s, scoring {} modes {scoring_seconds:.2} s, top factors {factors_seconds:.2} s ({n_factors}), total {total:.2} s",
            run + 1,
            modes.len()
        );
        feature_times.push(features_seconds);
        scoring_times.push(scoring_seconds);
        factor_times.push(factors_seconds);
        totals.push(total);
    }
    let total_seconds = median(totals);
    Ok(PredictBenchReport {
        devices,
        kind: kind.to_string(),
        modes: modes.len(),
        features: n_features,
        input_rows,
        features_seconds: median(feature_times),
        scoring_seconds: median(scoring_times),
        factors_seconds: median(factor_times),
        total_seconds,
        devices_per_second: devices as f64 / total_seconds,
    })
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CmapssReport {
    pub subset: String,
    pub train_units: usize,
    pub test_units: usize,
    pub train_examples: usize,
    pub features: usize,
    /// Medians over seeds.
    pub rmse_capped: f64,
    pub rmse_uncapped: f64,
    pub phm08_score: f64,
    pub within_30_precision: f64,
    pub within_30_recall: f64,
    /// The same regressor on last values and age only: what the windows add.
    pub last_values_only_rmse_capped: f64,
    pub import_seconds: f64,
    pub features_seconds: f64,
    pub train_seconds: f64,
}

const RUL_CAP: f64 = 125.0;

/// PHM08 score: late predictions cost more than early ones.
pub fn phm08_score(predicted: &[f64], truth: &[f64]) -> f64 {
    predicted
        .iter()
        .zip(truth)
        .map(|(p, t)| {
            let d = p - t;
            if d < 0.0 {
                (-d / 13.0).exp() - 1.0
            } else {
                (d / 10.0).exp() - 1.0
            }
        })
        .sum()
}

fn rmse(predicted: &[f64], truth: &[f64]) -> f64 {
    let sum: f64 = predicted
        .iter()
        .zip(truth)
        .map(|(p, t)| (p - t).powi(2))
        .sum();
    (sum / predicted.len().max(1) as f64).sqrt()
}

/// C-MAPSS end to end. `database_url` names a server where a scratch database is created.
pub async fn run_cmapss_bench(
    config: &Config,
    admin_url: &str,
    directory: &Path,
    subset: &str,
    seeds: &[u64],
) -> Result<CmapssReport, ModelBenchError> {
    let cycle = std::time::Duration::from_secs(4 * 3600);
    let origin: DateTime<Utc> = DateTime::from_timestamp(1_577_836_800, 0).unwrap_or_default();
    let database = format!("forewarn_bench_cmapss_{}", subset.to_ascii_lowercase());
    let _ = crate::store::drop_database(admin_url, &database).await;
    crate::store::create_database(admin_url, &database).await?;
    let url = crate::store::url_with_database(admin_url, &database)?;
    let store = crate::app::open_store(config, &url).await?;

    let importing = Instant::now();
    let data = import::cmapss(directory, subset, cycle, origin)?;
    let defaults = DeviceDefaults {
        kind: "engine".into(),
        model: Some(subset.to_string()),
        installed_at_first_reading: true,
    };
    import::write(&store, &data.train, &defaults, &data.failures, &[]).await?;
    import::write(&store, &data.test, &defaults, &[], &[]).await?;
    let import_seconds = importing.elapsed().as_secs_f64();

    let spec = FeatureSpec::default();
    let until = origin + chrono::Duration::days(400);
    let kind_data = training::load_kind(
        &store,
        "engine",
        vec!["engine".into()],
        origin,
        until,
        &spec,
    )
    .await?;
    let ids: HashMap<String, i32> = kind_data
        .devices
        .iter()
        .map(|d| (d.external_id.clone(), d.id))
        .collect();
    let cycle_micros = cycle.as_micros() as i64;
    // Training: every cycle of every training unit, as of one hour after the reading.
    let mut requests = Vec::new();
    let mut targets = Vec::new();
    for (device, (first, last)) in &data.train.devices {
        let id = ids[device];
        let mut t = *first;
        while t <= *last {
            requests.push((id, t + HOUR_MICROS));
            targets.push((((last - t) / cycle_micros) as f64).min(RUL_CAP));
            t += cycle_micros;
        }
    }
    let n_train = requests.len();
    let mut truth = Vec::new();
    for (device, (_, last)) in &data.test.devices {
        requests.push((ids[device], last + HOUR_MICROS));
        truth.push(data.test_rul[device]);
    }
    let computing = Instant::now();
    let table = features::compute(&spec, &kind_data.schema, &kind_data.inputs, &requests)?;
    let features_seconds = computing.elapsed().as_secs_f64();
    let width = table.n_columns();
    let train_values = &table.values[..n_train * width];
    let test_values = &table.values[n_train * width..];
    let capped: Vec<f64> = truth.iter().map(|t| t.min(RUL_CAP)).collect();

    // Ablation: the last values and the age only.
    let keep: Vec<usize> = table
        .names
        .iter()
        .enumerate()
        .filter(|(_, n)| n.ends_with(".last") || *n == "device.age_days")
        .map(|(i, _)| i)
        .collect();
    let select = |values: &[f64]| -> Vec<f64> {
        values
            .chunks(width)
            .flat_map(|row| keep.iter().map(move |&c| row[c]))
            .collect()
    };
    let (train_last, test_last) = (select(train_values), select(test_values));

    let training = Instant::now();
    let (mut rmses, mut uncapped, mut scores, mut precisions, mut recalls, mut baselines) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for &seed in seeds {
        let booster = fit_regressor(train_values, width, &targets, 400, seed)?;
        let predicted: Vec<f64> = predict_regressor(&booster, test_values, width)
            .into_iter()
            .map(|p| p.clamp(0.0, RUL_CAP))
            .collect();
        rmses.push(rmse(&predicted, &capped));
        uncapped.push(rmse(&predicted, &truth));
        scores.push(phm08_score(&predicted, &capped));
        let flagged: Vec<bool> = predicted.iter().map(|p| *p <= 30.0).collect();
        let actual: Vec<bool> = truth.iter().map(|t| *t <= 30.0).collect();
        let hits = flagged
            .iter()
            .zip(&actual)
            .filter(|(f, a)| **f && **a)
            .count() as f64;
        precisions.push(hits / flagged.iter().filter(|f| **f).count().max(1) as f64);
        recalls.push(hits / actual.iter().filter(|a| **a).count().max(1) as f64);
        let baseline = fit_regressor(&train_last, keep.len(), &targets, 400, seed)?;
        let predicted_last: Vec<f64> = predict_regressor(&baseline, &test_last, keep.len())
            .into_iter()
            .map(|p| p.clamp(0.0, RUL_CAP))
            .collect();
        baselines.push(rmse(&predicted_last, &capped));
        println!(
            "seed {seed}: RMSE {:.2} (uncapped truth {:.2}), PHM08 {:.0}, ≤30 cycles precision {:.2} recall {:.2}; last values only RMSE {:.2}",
            rmses.last().copied().unwrap_or_default(),
            uncapped.last().copied().unwrap_or_default(),
            scores.last().copied().unwrap_or_default(),
            precisions.last().copied().unwrap_or_default(),
            recalls.last().copied().unwrap_or_default(),
            baselines.last().copied().unwrap_or_default(),
        );
    }
    let train_seconds = training.elapsed().as_secs_f64();
    store.close().await;
    let _ = crate::store::drop_database(admin_url, &database).await;
    Ok(CmapssReport {
        subset: subset.to_string(),
        train_units: data.train.devices.len(),
        test_units: data.test.devices.len(),
        train_examples: n_train,
        features: width,
        rmse_capped: median(rmses),
        rmse_uncapped: median(uncapped),
        phm08_score: median(scores),
        within_30_precision: median(precisions),
        within_30_recall: median(recalls),
        last_values_only_rmse_capped: median(baselines),
        import_seconds,
        features_seconds,
        train_seconds,
    })
}

/// Where the shipped default model lives, relative to the working directory.
pub fn default_model_path() -> PathBuf {
    PathBuf::from("models/default/model.json")
}
