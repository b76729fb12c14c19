//! One kind's scoring: the lookback its modes need, loaded through `history`, and the
//! features and probabilities under each mode's model.

use std::time::Instant;

use crate::features::{self, FeatureInputs, FeatureSpec, FeatureTable, KindSchema};
use crate::history;
use crate::store::{DeviceSummary, PredictionRow, Store};

use super::{ActiveMode, PredictError};

/// The spec whose lookbacks cover every one of `specs` (each window the longest any of the
/// kind's modes needs), and whose staleness is the strictest: a device is scored only where
/// every mode's training would have had an example.
pub fn lookback_spec(specs: &[&FeatureSpec]) -> FeatureSpec {
    let mut lookback = specs
        .first()
        .map_or_else(FeatureSpec::default, |s| (*s).clone());
    for spec in specs.iter().skip(1) {
        lookback.short_window_hours = lookback.short_window_hours.max(spec.short_window_hours);
        lookback.long_window_days = lookback.long_window_days.max(spec.long_window_days);
        lookback.baseline_until_days = lookback.baseline_until_days.max(spec.baseline_until_days);
        lookback.daily_staleness_days =
            lookback.daily_staleness_days.max(spec.daily_staleness_days);
        for window in &spec.event_windows_hours {
            if !lookback.event_windows_hours.contains(window) {
                lookback.event_windows_hours.push(*window);
            }
        }
        lookback.code_activity_hours = lookback.code_activity_hours.max(spec.code_activity_hours);
        lookback.code_baseline_hours = lookback.code_baseline_hours.max(spec.code_baseline_hours);
        lookback.recent_hours = lookback.recent_hours.max(spec.recent_hours);
    }
    // Loading: the longest hourly window plus the longest staleness; the rule: the
    // shortest staleness.
    let longest_staleness = specs
        .iter()
        .map(|s| s.hourly_staleness_hours)
        .max()
        .unwrap_or(lookback.hourly_staleness_hours);
    let shortest_staleness = specs
        .iter()
        .map(|s| s.hourly_staleness_hours)
        .min()
        .unwrap_or(lookback.hourly_staleness_hours);
    lookback.short_window_hours += longest_staleness - shortest_staleness;
    lookback.hourly_staleness_hours = shortest_staleness;
    lookback
}

/// Loads the lookback the features of `requests` need (`devices`: every device of the
/// kind, as the scorer loads them — the fleet reference is their median — not only the
/// requested ones).
pub async fn live_inputs(
    store: &Store,
    spec: &FeatureSpec,
    devices: &[DeviceSummary],
    requests: &[(i32, i64)],
) -> Result<FeatureInputs, PredictError> {
    let newest = requests.iter().map(|(_, t)| *t).max().unwrap_or(0);
    let oldest = requests.iter().map(|(_, t)| *t).min().unwrap_or(0);
    Ok(history::load_inputs(
        store,
        devices,
        spec,
        history::micros_to_time(oldest),
        history::micros_to_time(newest),
    )
    .await?)
}

/// Where [`score_kind`] spent its time.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScoreTimes {
    pub features_seconds: f64,
    /// Probabilities and top factors.
    pub scoring_seconds: f64,
}

/// Features and probabilities of one kind's requests under each of its modes' models.
pub fn score_kind(
    inputs: &FeatureInputs,
    requests: &[(i32, i64)],
    modes: &[(String, String, ActiveMode)],
    top_factors: usize,
) -> Result<(Vec<PredictionRow>, ScoreTimes), PredictError> {
    let mut tables: Vec<((FeatureSpec, KindSchema), FeatureTable)> = Vec::new();
    let mut rows = Vec::new();
    let mut times = ScoreTimes::default();
    for (name, version, active) in modes {
        let model = active.model();
        let key = (model.spec.clone(), model.schema.clone());
        let index = match tables.iter().position(|(k, _)| *k == key) {
            Some(index) => index,
            None => {
                let computing = Instant::now();
                let table = features::compute(&model.spec, &model.schema, inputs, requests)?;
                times.features_seconds += computing.elapsed().as_secs_f64();
                tables.push((key, table));
                tables.len() - 1
            }
        };
        let scoring = Instant::now();
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
                time: history::micros_to_time(time),
                device_id: device,
                failure_mode: name.clone(),
                probability,
                horizon_hours: model.mode.horizon_hours,
                model_version: version.clone(),
                above_threshold: probability >= model.threshold,
                top_factors: serde_json::to_value(&factors).unwrap_or_default(),
            });
        }
        times.scoring_seconds += scoring.elapsed().as_secs_f64();
    }
    Ok((rows, times))
}
