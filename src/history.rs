//! What features and labels are computed from, as read from the store: one kind's history,
//! loaded once for training or evaluation (feature inputs, labels, and the periods a device
//! was broken (no examples there: nothing to predict
//! while the component is already down).
//!
//! [`Examples`] is the rule of which `(device, t)` exist — the device reported telemetry in
//! the hours before `t`, and none of its components was broken at `t` — shared by training
//! (which builds examples only there) and live scoring (which scores only there), so a model
//! never scores a row unlike every row it was trained on.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::features::{
    self, DAY_MICROS, FeatureInputs, FeatureSpec, FeatureTable, HOUR_MICROS, KindSchema,
};
use crate::store::{DeviceSummary, Store, StoreError};

/// How long a failed component stays broken when no repair was recorded.
const ASSUMED_REPAIR_MICROS: i64 = 4 * DAY_MICROS;
/// A maintenance later than this after a failure is not its repair.
const REPAIR_WINDOW_MICROS: i64 = 14 * DAY_MICROS;

pub struct KindData {
    pub schema: KindSchema,
    pub inputs: FeatureInputs,
    pub devices: Vec<DeviceSummary>,
    examples: Examples,
}

/// Which `(device, t)` are examples: the one rule of training and live scoring.
#[derive(Debug, Clone, Default)]
pub struct Examples {
    /// device → `[failure, repair)` intervals of any component.
    broken: HashMap<i32, Vec<(i64, i64)>>,
    /// device → sorted hours (µs / 1 h) with any hourly row.
    active_hours: HashMap<i32, Vec<i64>>,
    hourly_staleness_hours: i64,
}

/// Why `(device, t)` is not an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAnExample {
    /// No telemetry in the `hourly_staleness_hours` before `t`: its hourly features would
    /// be missing, which no training example has.
    Silent,
    /// A component failed and is not repaired yet (nothing to predict: it is down).
    Broken,
}

impl Examples {
    /// The rule over `inputs`: its hourly rows say when devices reported, its failures and
    /// maintenance when they were broken.
    pub fn new(inputs: &FeatureInputs, spec: &FeatureSpec) -> Examples {
        let mut broken: HashMap<i32, Vec<(i64, i64)>> = HashMap::new();
        for ((device, component), times) in &inputs.failures {
            let repairs = inputs.maintenance.get(&(*device, component.clone()));
            for &failure in times {
                let repaired = repairs
                    .and_then(|r| {
                        r.iter()
                            .copied()
                            .filter(|&t| t >= failure && t <= failure + REPAIR_WINDOW_MICROS)
                            .min()
                    })
                    .unwrap_or(failure + ASSUMED_REPAIR_MICROS);
                broken.entry(*device).or_default().push((failure, repaired));
            }
        }
        let mut active_hours: HashMap<i32, Vec<i64>> = HashMap::new();
        for row in &inputs.hourly {
            active_hours
                .entry(row.device_id)
                .or_default()
                .push(row.bucket.div_euclid(HOUR_MICROS));
        }
        for hours in active_hours.values_mut() {
            hours.sort_unstable();
            hours.dedup();
        }
        Examples {
            broken,
            active_hours,
            hourly_staleness_hours: spec.hourly_staleness_hours,
        }
    }

    /// Whether a component of `device` is broken at `time`.
    pub fn is_broken(&self, device: i32, time: i64) -> bool {
        self.broken
            .get(&device)
            .is_some_and(|intervals| intervals.iter().any(|&(a, b)| time >= a && time < b))
    }

    /// Whether `device` reported telemetry in the `hourly_staleness_hours` before `time`.
    pub fn reported_before(&self, device: i32, time: i64) -> bool {
        let Some(hours) = self.active_hours.get(&device) else {
            return false;
        };
        let hour = time.div_euclid(HOUR_MICROS);
        let start = hours.partition_point(|&h| h < hour - self.hourly_staleness_hours);
        start < hours.len() && hours[start] < hour
    }

    /// Whether `(device, time)` is an example, and if not, why.
    pub fn check(&self, device: i32, time: i64) -> Result<(), NotAnExample> {
        if !self.reported_before(device, time) {
            Err(NotAnExample::Silent)
        } else if self.is_broken(device, time) {
            Err(NotAnExample::Broken)
        } else {
            Ok(())
        }
    }

    /// The newest hour (µs) with telemetry of `device` in the rows the rule was built from.
    pub fn newest_hour(&self, device: i32) -> Option<i64> {
        self.active_hours
            .get(&device)
            .and_then(|hours| hours.last())
            .map(|h| h * HOUR_MICROS)
    }
}

/// Loads what features of `kind` need over `[from, until)`, plus the lookback before
/// `from`.
pub async fn load_kind(
    store: &Store,
    kind: &str,
    components: Vec<String>,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    spec: &FeatureSpec,
) -> Result<KindData, StoreError> {
    let devices = store.device_summaries(Some(kind)).await?;
    let inputs = load_inputs(store, &devices, spec, from, until).await?;
    let metric_names = &inputs.metric_names;
    let mut metric_ids: Vec<i16> = inputs.hourly.iter().map(|r| r.metric_id).collect();
    metric_ids.sort_unstable();
    metric_ids.dedup();
    let mut metrics: Vec<String> = metric_ids
        .iter()
        .filter_map(|id| metric_names.get(id).cloned())
        .collect();
    metrics.sort();
    let mut models: Vec<String> = devices
        .iter()
        .filter_map(|d| d.info.model.clone())
        .collect();
    models.sort();
    models.dedup();
    let schema = KindSchema {
        kind: kind.to_string(),
        metrics,
        event_codes: store.event_codes(kind, until).await?,
        components,
        models,
    };
    Ok(KindData::new(schema, inputs, devices, spec))
}

/// What features of `devices` as of times in `[from, until)` are computed from: rows from
/// each window's lookback before `from` up to `until` (exclusive; maintenance and failures
/// before `until` too). Training loads whole histories
/// with it, live scoring one cycle's lookback: the same query for both paths.
pub async fn load_inputs(
    store: &Store,
    devices: &[DeviceSummary],
    spec: &FeatureSpec,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<FeatureInputs, StoreError> {
    Ok(load_inputs_timed(store, devices, spec, from, until, None)
        .await?
        .0)
}

/// Seconds [`load_inputs`] spent on each part (what the live cycle reports).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct LoadTimes {
    /// Hourly rows and day buckets of the rollup.
    pub rollups_seconds: f64,
    pub events_seconds: f64,
    /// Maintenance, failures and the metric catalogue.
    pub history_seconds: f64,
}

/// [`load_inputs`], timed; `daily`: the day buckets, when the caller keeps them (live
/// scoring: [`crate::predict`]'s day cache; only hourly rows of the hourly lookback are
/// loaded then). Else the hourly rows of the daily lookback are loaded and the day buckets
/// computed from them in memory ([`features::day_buckets`]: sums in bucket order, the
/// same bits every run), then the hourly rows outside the hourly lookback dropped.
pub async fn load_inputs_timed(
    store: &Store,
    devices: &[DeviceSummary],
    spec: &FeatureSpec,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    daily: Option<Vec<crate::features::DailyRow>>,
) -> Result<(FeatureInputs, LoadTimes), StoreError> {
    let ids: Vec<i32> = devices.iter().map(|d| d.id).collect();
    let before = |micros: i64| from - chrono::Duration::microseconds(micros);
    let mut times = LoadTimes::default();
    let started = std::time::Instant::now();
    let (hourly, daily) = match daily {
        Some(daily) => (
            store
                .hourly_rows(&ids, before(spec.hourly_lookback_micros()), until)
                .await?,
            daily,
        ),
        None => {
            let earliest = spec
                .daily_lookback_micros()
                .max(spec.hourly_lookback_micros());
            // Whole days, as the live day cache holds them.
            let earliest = features::day_start(before(earliest).timestamp_micros());
            let mut hourly = store
                .hourly_rows(&ids, micros_to_time(earliest), until)
                .await?;
            let daily = features::day_buckets(&hourly, i64::MIN..i64::MAX);
            let hourly_from = before(spec.hourly_lookback_micros()).timestamp_micros();
            hourly.retain(|row| row.bucket >= hourly_from);
            (hourly, daily)
        }
    };
    times.rollups_seconds = started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    let events = store
        .event_records(&ids, before(spec.event_lookback_micros()), until)
        .await?;
    times.events_seconds = started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    // Nothing at or after `until`: training must not see failures that come after its end.
    let (maintenance, failures) = store.component_history(&ids, until).await?;
    let metric_names = store.metric_names().await?;
    times.history_seconds = started.elapsed().as_secs_f64();
    Ok((
        FeatureInputs {
            hourly,
            daily,
            events,
            maintenance,
            failures,
            devices: devices.iter().map(|d| (d.id, d.info.clone())).collect(),
            metric_names,
        },
        times,
    ))
}

impl KindData {
    pub fn new(
        schema: KindSchema,
        inputs: FeatureInputs,
        devices: Vec<DeviceSummary>,
        spec: &FeatureSpec,
    ) -> KindData {
        let examples = Examples::new(&inputs, spec);
        KindData {
            schema,
            inputs,
            devices,
            examples,
        }
    }

    /// Replaces the schema (evaluation scores with the model's columns).
    pub fn with_schema(mut self, schema: KindSchema) -> KindData {
        self.schema = schema;
        self
    }

    fn is_broken(&self, device: i32, time: i64) -> bool {
        self.examples.is_broken(device, time)
    }

    /// `(device, t)` for `t` in `[from, to)` on a `stride` grid (aligned to the epoch),
    /// where the device reported in the hours just before `t` and was not broken.
    pub fn requests(&self, from: i64, to: i64, stride: i64) -> Vec<(i32, i64)> {
        let first = from.div_euclid(stride) * stride + if from % stride == 0 { 0 } else { stride };
        let mut requests = Vec::new();
        for device in &self.devices {
            let mut t = first;
            while t < to {
                if self.examples.check(device.id, t).is_ok() {
                    requests.push((device.id, t));
                }
                t += stride;
            }
        }
        requests
    }

    /// Label of each request row for `component`: `Some(fails within horizon)`, or
    /// `None` while the device is broken.
    pub fn labels(&self, table: &FeatureTable, component: &str, horizon: i64) -> Vec<Option<bool>> {
        let failures = self.failure_times(component);
        table
            .requests
            .iter()
            .map(|&(device, time)| {
                if self.is_broken(device, time) {
                    return None;
                }
                Some(
                    failures.get(&device).is_some_and(|times| {
                        times.iter().any(|&f| f > time && f <= time + horizon)
                    }),
                )
            })
            .collect()
    }

    /// device → failure times of `component`.
    pub fn failure_times(&self, component: &str) -> HashMap<i32, Vec<i64>> {
        self.inputs
            .failures
            .iter()
            .filter(|((_, c), _)| c == component)
            .map(|((device, _), times)| (*device, times.clone()))
            .collect()
    }
}

/// A time from µs since the epoch (the feature path's clock); out of range is the epoch.
pub fn micros_to_time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}
