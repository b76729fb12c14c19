//! Features: the one code path that turns a device's history into numbers, for training
//! and for live scoring alike. Architecture invariant: this module does no IO; the store
//! loads [`FeatureInputs`], callers ask for features of `(device, as_of)` pairs.
//!
//! Every feature of a device "as of" `t` uses only data strictly before `t`:
//!
//! - **hourly** window statistics come from `telemetry_hourly` rows: the newest complete
//!   hour before `t` (`last`) and the 24 h window ending at that hour;
//! - **daily** window statistics come from day buckets of the hourly rollup: the 7 days up
//!   to the newest complete day before `t`, and the device's own **baseline**, days 7–21
//!   before that, which the z-scores compare against;
//! - event counts by severity and code over 24 h and 7 d;
//! - hours since the last maintenance and the last failure of each component, device age
//!   and model.
//!
//! Rolling statistics are computed by polars over sorted `(series, time)` keys; a request
//! then reads the row of the newest bucket before `t`. Training asks for many `t` per device
//! over its whole history, live scoring for one `t` per device over a short lookback: the
//! same function, the same rows, the same numbers (see the test in `tests/it/predict.rs`).

mod days;
mod describe;
mod events;
mod fleet;
mod inputs;
mod rolling;
mod series;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

pub use days::day_buckets;
pub use describe::describe;
use events::EventIndex;
use fleet::FleetReference;
pub use inputs::{DailyRow, DeviceInfo, EventRecord, FeatureInputs, HourlyRow};
use series::{DailyStats, Series};

pub const HOUR_MICROS: i64 = 3_600_000_000;
pub const DAY_MICROS: i64 = 24 * HOUR_MICROS;

/// The start (µs) of the UTC day holding `micros`: the day buckets' key.
pub fn day_start(micros: i64) -> i64 {
    micros.div_euclid(DAY_MICROS) * DAY_MICROS
}

/// Errors of feature computation: only polars can fail here.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error("rolling window computation failed: {0}")]
    Polars(#[from] polars::error::PolarsError),
}

/// Window lengths and limits. Stored in every model artifact, so a model always scores
/// with the windows it was trained with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    /// Short window over hourly buckets (hours).
    pub short_window_hours: i64,
    /// A metric's newest hourly bucket older than this is stale: its hourly features are
    /// missing.
    pub hourly_staleness_hours: i64,
    /// Long window over day buckets (days).
    pub long_window_days: i64,
    /// Baseline: days `(long_window_days, baseline_until_days]` before the newest day.
    pub baseline_until_days: i64,
    /// A metric's newest day bucket older than this is stale.
    pub daily_staleness_days: i64,
    /// Event count windows (hours).
    pub event_windows_hours: Vec<i64>,
    /// Per event code, the hours with at least one such event in the last this many hours,
    /// and the code's daily rate over the device's own baseline before them (up to
    /// `code_baseline_hours`): a burst of nuisance codes fills an hour or two, a degrading
    /// part raises its code hour after hour, and a device that always chatters has a high
    /// baseline. `0` (artifacts older than these features): none.
    #[serde(default)]
    pub code_activity_hours: i64,
    #[serde(default)]
    pub code_baseline_hours: i64,
    /// Per metric, the device against the kind's fleet in the same hours (the median
    /// device): the 24 h mean's difference, and both z-scores with the fleet's own move
    /// since the baseline taken out — what moves every device at once (the season) cancels.
    /// `false` (artifacts older than these features): none.
    #[serde(default)]
    pub fleet_reference: bool,
    /// Per metric, its newest hourly reading up to this many hours old, and that reading
    /// against the device's baseline: a metric reported only while the device works (a
    /// washer's drain time, a car's cranking voltage) has no hourly features most of the
    /// time (`hourly_staleness_hours`), and a part that wears in days shows first in the
    /// last cycle. `0` (artifacts older than these features): none.
    #[serde(default)]
    pub recent_hours: i64,
}

impl Default for FeatureSpec {
    fn default() -> Self {
        FeatureSpec {
            short_window_hours: 24,
            hourly_staleness_hours: 6,
            long_window_days: 7,
            baseline_until_days: 21,
            daily_staleness_days: 3,
            event_windows_hours: vec![24, 168],
            code_activity_hours: 168,
            code_baseline_hours: 28 * 24,
            fleet_reference: true,
            // The hourly lookback the live cycle loads anyway (`short_window_hours` +
            // `hourly_staleness_hours`): more would load more rows every cycle.
            recent_hours: 30,
        }
    }
}

impl FeatureSpec {
    /// How far back a live scorer must load hourly rows for features as of `t`.
    pub fn hourly_lookback_micros(&self) -> i64 {
        (self.short_window_hours + self.hourly_staleness_hours).max(self.recent_hours) * HOUR_MICROS
    }

    /// How far back a live scorer must load day buckets.
    pub fn daily_lookback_micros(&self) -> i64 {
        (self.baseline_until_days + self.daily_staleness_days + 1) * DAY_MICROS
    }

    /// How far back events matter.
    pub fn event_lookback_micros(&self) -> i64 {
        self.event_windows_hours
            .iter()
            .copied()
            .chain([self.code_activity_hours, self.code_baseline_hours])
            .max()
            .unwrap_or(0)
            * HOUR_MICROS
    }

    fn code_features(&self) -> bool {
        self.code_activity_hours > 0 && self.code_baseline_hours > self.code_activity_hours
    }
}

/// What the features of one device kind are made of. Learned from training data and kept
/// in the model, so live scoring produces the same columns in the same order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KindSchema {
    pub kind: String,
    /// Metric names, in column order.
    pub metrics: Vec<String>,
    /// Event codes counted individually.
    pub event_codes: Vec<String>,
    /// Components whose maintenance and failure history are features.
    pub components: Vec<String>,
    /// Device models, one-hot.
    pub models: Vec<String>,
}

/// A feature matrix: one row per request, columns named by `names` (row-major values,
/// `NaN` for missing).
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureTable {
    pub names: Vec<String>,
    pub requests: Vec<(i32, i64)>,
    pub values: Vec<f64>,
}

impl FeatureTable {
    pub fn n_rows(&self) -> usize {
        self.requests.len()
    }

    pub fn n_columns(&self) -> usize {
        self.names.len()
    }

    pub fn row(&self, index: usize) -> &[f64] {
        let width = self.names.len();
        &self.values[index * width..(index + 1) * width]
    }

    /// The values of `rows`, row-major, in that order.
    pub fn gather(&self, rows: &[usize]) -> Vec<f64> {
        rows.iter()
            .flat_map(|&r| self.row(r).iter().copied())
            .collect()
    }
}

const METRIC_STATS: [&str; 14] = [
    "last",
    "hours_since_last",
    "mean_short",
    "std_short",
    "min_short",
    "max_short",
    "slope_short",
    "mean_long",
    "std_long",
    "min_long",
    "max_long",
    "slope_long",
    "z_short",
    "z_long",
];
/// Per metric, against the fleet ([`FeatureSpec::fleet_reference`]).
const FLEET_STATS: [&str; 3] = ["vs_fleet_short", "z_fleet_short", "z_fleet_long"];
/// Per metric, its newest reading ([`FeatureSpec::recent_hours`]).
const RECENT_STATS: [&str; 3] = ["latest", "latest_age_hours", "z_latest"];
const SEVERITIES: [&str; 3] = ["warning", "error", "critical"];

/// Column names for a kind, in the order [`compute`] fills them.
pub fn feature_names(spec: &FeatureSpec, schema: &KindSchema) -> Vec<String> {
    let mut names = Vec::new();
    for metric in &schema.metrics {
        for stat in METRIC_STATS {
            names.push(format!("{metric}.{stat}"));
        }
    }
    if spec.fleet_reference {
        for metric in &schema.metrics {
            for stat in FLEET_STATS {
                names.push(format!("{metric}.{stat}"));
            }
        }
    }
    if spec.recent_hours > 0 {
        for metric in &schema.metrics {
            for stat in RECENT_STATS {
                names.push(format!("{metric}.{stat}"));
            }
        }
    }
    for window in &spec.event_windows_hours {
        for severity in SEVERITIES {
            names.push(format!("events.{severity}.{window}h"));
        }
        for code in &schema.event_codes {
            names.push(format!("events.code_{code}.{window}h"));
        }
    }
    if spec.code_features() {
        for code in &schema.event_codes {
            let hours = spec.code_activity_hours;
            names.push(format!("events.code_{code}.active_hours_{hours}h"));
            names.push(format!("events.code_{code}.baseline_per_day"));
        }
    }
    for component in &schema.components {
        names.push(format!("{component}.hours_since_maintenance"));
        names.push(format!("{component}.hours_since_failure"));
    }
    names.push("device.age_days".to_string());
    for model in &schema.models {
        names.push(format!("device.model_{model}"));
    }
    names
}

/// Features of `requests` (`(device_id, as_of µs)`, all devices of `schema.kind`).
pub fn compute(
    spec: &FeatureSpec,
    schema: &KindSchema,
    inputs: &FeatureInputs,
    requests: &[(i32, i64)],
) -> Result<FeatureTable, FeatureError> {
    compute_in_chunks(spec, schema, inputs, requests, DEVICES_PER_CHUNK)
}

fn compute_in_chunks(
    spec: &FeatureSpec,
    schema: &KindSchema,
    inputs: &FeatureInputs,
    requests: &[(i32, i64)],
    devices_per_chunk: usize,
) -> Result<FeatureTable, FeatureError> {
    let names = feature_names(spec, schema);
    let width = names.len();
    let mut values = vec![f64::NAN; requests.len() * width];
    let metric_column: HashMap<i16, usize> = inputs
        .metric_names
        .iter()
        .filter_map(|(id, name)| {
            schema
                .metrics
                .iter()
                .position(|m| m == name)
                .map(|index| (*id, index))
        })
        .collect();
    let wanted_devices: std::collections::HashSet<i32> =
        requests.iter().map(|(device, _)| *device).collect();
    let events = EventIndex::build(&inputs.events, &wanted_devices);
    // Over every device of the kind in the inputs, before the chunks split them.
    let fleet = spec.fleet_reference.then(|| {
        let first = requests.iter().map(|r| r.1).min().unwrap_or(0);
        let last = requests.iter().map(|r| r.1).max().unwrap_or(0);
        FleetReference::build(spec, inputs, &schema.kind, &metric_column, first..last)
    });

    // Devices in chunks: series are independent, so chunking changes no number, and a
    // chunk's frames stay small enough to be fast (a 100,000-device frame is gigabytes).
    let mut devices: Vec<i32> = wanted_devices.iter().copied().collect();
    devices.sort_unstable();
    let chunk_of: HashMap<i32, usize> = devices
        .iter()
        .enumerate()
        .map(|(index, device)| (*device, index / devices_per_chunk))
        .collect();
    let n_chunks = devices.len().div_ceil(devices_per_chunk);
    let mut hourly_rows: Vec<Vec<&HourlyRow>> = vec![Vec::new(); n_chunks];
    for row in &inputs.hourly {
        if let Some(&chunk) = chunk_of.get(&row.device_id) {
            hourly_rows[chunk].push(row);
        }
    }
    let mut daily_rows: Vec<Vec<&DailyRow>> = vec![Vec::new(); n_chunks];
    for row in &inputs.daily {
        if let Some(&chunk) = chunk_of.get(&row.device_id) {
            daily_rows[chunk].push(row);
        }
    }
    let mut request_rows: Vec<Vec<usize>> = vec![Vec::new(); n_chunks];
    for (row, (device, _)) in requests.iter().enumerate() {
        request_rows[chunk_of[device]].push(row);
    }
    // One chunk's feature rows, in the order of `request_rows[chunk]`.
    let compute_chunk = |chunk: usize| -> Result<Vec<f64>, FeatureError> {
        let hourly = Series::hourly(&hourly_rows[chunk], &metric_column);
        let hourly_stats = hourly.hourly_stats(spec.short_window_hours)?;
        let daily = Series::daily(&daily_rows[chunk], &metric_column);
        let daily_stats = daily.daily_stats(spec.long_window_days, spec.baseline_until_days)?;
        let mut out = vec![f64::NAN; request_rows[chunk].len() * width];
        for (index, &row) in request_rows[chunk].iter().enumerate() {
            let (device, as_of) = requests[row];
            fill_request(
                spec,
                schema,
                inputs,
                &events,
                fleet.as_ref(),
                (&hourly, &hourly_stats),
                (&daily, &daily_stats),
                device,
                as_of,
                &mut out[index * width..(index + 1) * width],
            );
        }
        Ok(out)
    };
    // Chunks on all cores: polars alone keeps about one busy on these frames.
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(n_chunks.max(1));
    let results: Vec<Result<Vec<ChunkRows>, FeatureError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|worker| {
                let compute_chunk = &compute_chunk;
                scope.spawn(move || {
                    (worker..n_chunks)
                        .step_by(workers)
                        .map(|chunk| compute_chunk(chunk).map(|rows| (chunk, rows)))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("feature worker panicked"))
            .collect()
    });
    for result in results {
        for (chunk, rows) in result? {
            for (index, &row) in request_rows[chunk].iter().enumerate() {
                values[row * width..(row + 1) * width]
                    .copy_from_slice(&rows[index * width..(index + 1) * width]);
            }
        }
    }
    Ok(FeatureTable {
        names,
        requests: requests.to_vec(),
        values,
    })
}

/// A chunk's index and its feature rows.
type ChunkRows = (usize, Vec<f64>);

/// Devices per chunk of [`compute`].
const DEVICES_PER_CHUNK: usize = 4000;

/// Fills one request's row.
#[allow(clippy::too_many_arguments)]
fn fill_request(
    spec: &FeatureSpec,
    schema: &KindSchema,
    inputs: &FeatureInputs,
    events: &EventIndex,
    fleet: Option<&FleetReference>,
    (hourly, hourly_stats): (&Series, &rolling::WindowStats),
    (daily, daily_stats): (&Series, &DailyStats),
    device: i32,
    as_of: i64,
    out: &mut [f64],
) {
    let width = out.len();
    {
        let metrics = schema.metrics.len();
        let fleet_width = fleet.map_or(0, |_| metrics * FLEET_STATS.len());
        let recent_width = if spec.recent_hours > 0 {
            metrics * RECENT_STATS.len()
        } else {
            0
        };
        let (stats, rest) = out.split_at_mut(metrics * METRIC_STATS.len());
        let (fleet_part, rest) = rest.split_at_mut(fleet_width);
        let mut fleet_cells = fleet.map(|fleet| (fleet, fleet_part.chunks_mut(FLEET_STATS.len())));
        let mut recent_cells = rest[..recent_width].chunks_mut(RECENT_STATS.len());
        for (metric, cell) in stats.chunks_mut(METRIC_STATS.len()).enumerate() {
            let fleet = fleet_cells
                .as_mut()
                .and_then(|(fleet, cells)| Some((*fleet, cells.next()?)));
            fill_metric(
                spec,
                (hourly, hourly_stats),
                (daily, daily_stats),
                (device, metric, as_of),
                (cell, recent_cells.next()),
                fleet,
            );
        }
        let mut column = metrics * METRIC_STATS.len() + fleet_width + recent_width;
        for window in &spec.event_windows_hours {
            let from = as_of - window * HOUR_MICROS;
            for severity in SEVERITIES {
                out[column] = events.count(device, from, as_of, |e| e.severity == severity);
                column += 1;
            }
            for code in &schema.event_codes {
                out[column] = events.count(device, from, as_of, |e| e.code == *code);
                column += 1;
            }
        }
        if spec.code_features() {
            let recent = as_of - spec.code_activity_hours * HOUR_MICROS;
            let baseline_from = as_of - spec.code_baseline_hours * HOUR_MICROS;
            // The baseline starts at installation at the earliest: a device installed ten
            // days ago has a three-day baseline, not a thin 21-day one.
            let installed = inputs.devices.get(&device).and_then(|i| i.installed_at);
            let start = installed.map_or(baseline_from, |t| baseline_from.max(t));
            let baseline_days = (recent - start) as f64 / DAY_MICROS as f64;
            for code in &schema.event_codes {
                out[column] = events.active_hours(device, recent, as_of, code);
                out[column + 1] = if baseline_days >= 1.0 {
                    events.count(device, baseline_from, recent, |e| e.code == *code) / baseline_days
                } else {
                    f64::NAN
                };
                column += 2;
            }
        }
        let info = inputs.devices.get(&device);
        let installed_at = info.and_then(|i| i.installed_at);
        for component in &schema.components {
            let key = (device, component.clone());
            let since = |times: Option<&Vec<i64>>| {
                let last = times
                    .and_then(|t| t.iter().copied().filter(|&t| t < as_of).max())
                    .or(installed_at);
                last.map_or(f64::NAN, |t| (as_of - t) as f64 / HOUR_MICROS as f64)
            };
            out[column] = since(inputs.maintenance.get(&key));
            out[column + 1] = since(inputs.failures.get(&key));
            column += 2;
        }
        out[column] = installed_at.map_or(f64::NAN, |t| (as_of - t) as f64 / DAY_MICROS as f64);
        column += 1;
        for model in &schema.models {
            out[column] = match info.and_then(|i| i.model.as_deref()) {
                Some(m) if m == model => 1.0,
                Some(_) => 0.0,
                None => f64::NAN,
            };
            column += 1;
        }
        debug_assert_eq!(column, width);
    }
}

/// One metric's [`METRIC_STATS`] into `cell`, its [`RECENT_STATS`] into `recent` and its
/// [`FLEET_STATS`] into the fleet's cell when there are those.
fn fill_metric(
    spec: &FeatureSpec,
    (hourly, hourly_stats): (&Series, &rolling::WindowStats),
    (daily, daily_stats): (&Series, &DailyStats),
    (device, metric, as_of): (i32, usize, i64),
    (cell, mut recent): (&mut [f64], Option<&mut [f64]>),
    mut fleet: Option<(&FleetReference, &mut [f64])>,
) {
    let as_of_hour = as_of.div_euclid(HOUR_MICROS);
    // The newest complete hour before `as_of` (bucket hour <= as_of_hour - 1): its row,
    // how many hours before `as_of_hour` it starts, its value and its age in hours.
    let newest = hourly.newest_before(device, metric, as_of_hour).map(|row| {
        let age = (as_of - (hourly.time[row] + 1) * HOUR_MICROS) as f64 / HOUR_MICROS as f64;
        let value = hourly.input.mean[row] + hourly.offset[row];
        (row, as_of_hour - hourly.time[row], value, age)
    });
    // Up to `recent_hours` back (strictly less, so that the lookback of `recent_hours`
    // before any `as_of` holds it).
    let mut latest = f64::NAN;
    if let Some(recent) = recent.as_deref_mut()
        && let Some((_, hours_back, value, age)) = newest
        && hours_back < spec.recent_hours
    {
        latest = value;
        recent[0] = value;
        recent[1] = age;
    }
    let mut short_mean = f64::NAN;
    // The fleet's mean over the same hours as the 24 h window.
    let mut fleet_short = f64::NAN;
    if let Some((row, hours_back, value, age)) = newest
        && hours_back <= spec.hourly_staleness_hours
    {
        cell[0] = value;
        cell[1] = age;
        let window = hourly_stats.at(row);
        short_mean = window.mean + hourly.offset[row];
        cell[2] = short_mean;
        cell[3] = window.std;
        cell[4] = window.min;
        cell[5] = window.max;
        cell[6] = window.slope * 24.0; // per day
        if let Some((reference, _)) = &fleet {
            let rows = hourly.window(device, metric, row, spec.short_window_hours);
            fleet_short = reference
                .hourly_mean(hourly, metric, rows)
                .unwrap_or(f64::NAN);
        }
    }
    let as_of_day = as_of.div_euclid(DAY_MICROS);
    if let Some(row) = daily.newest_before(device, metric, as_of_day)
        && as_of_day - daily.time[row] <= spec.daily_staleness_days
    {
        let long = daily_stats.long.at(row);
        let long_mean = long.mean + daily.offset[row];
        cell[7] = long_mean;
        cell[8] = long.std;
        cell[9] = long.min;
        cell[10] = long.max;
        cell[11] = long.slope; // day buckets: already per day
        if let Some((baseline_mean, baseline_std)) = daily_stats.baseline(row) {
            let baseline_mean = baseline_mean + daily.offset[row];
            // A flat baseline would make every wobble look like many sigmas.
            let scale = baseline_std.max(1e-3 + 0.01 * baseline_mean.abs());
            cell[12] = (short_mean - baseline_mean) / scale;
            cell[13] = (long_mean - baseline_mean) / scale;
            if let Some(recent) = recent {
                recent[2] = (latest - baseline_mean) / scale;
            }
            if let Some((reference, fleet_cell)) = fleet.as_mut() {
                let long_rows = daily.window(device, metric, row, spec.long_window_days);
                let until = daily.window(device, metric, row, spec.baseline_until_days);
                let mean = |rows| {
                    reference
                        .daily_mean(daily, metric, rows)
                        .unwrap_or(f64::NAN)
                };
                // The baseline's own distance from the fleet, the fleet's move since then
                // taken out: the distance now minus the distance then.
                let baseline_gap = baseline_mean - mean(until.start..long_rows.start);
                fleet_cell[1] = (short_mean - fleet_short - baseline_gap) / scale;
                fleet_cell[2] = (long_mean - mean(long_rows) - baseline_gap) / scale;
            }
        }
    }
    if let Some((_, fleet_cell)) = fleet {
        fleet_cell[0] = short_mean - fleet_short;
    }
}

#[cfg(test)]
mod tests;
