//! `forewarn bench predict`: one live scoring cycle (features, probabilities, top factors)
//! for a large fleet, in memory, with a trained artifact. (`bench cmapss` is `cmapss.rs`.)

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::Utc;

use crate::features::{
    self, DAY_MICROS, DailyRow, DeviceInfo, EventRecord, FeatureInputs, FeatureSpec, HOUR_MICROS,
    HourlyRow, KindSchema,
};
use crate::training;

/// The errors of this benchmark.
pub type ModelBenchError = super::BenchError;

pub(super) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

use super::Noise;

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

/// Where the shipped default model lives, relative to the working directory.
pub fn default_model_path() -> PathBuf {
    PathBuf::from("models/default/model.json")
}
