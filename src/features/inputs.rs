//! What features are computed from: hourly rollup rows, day buckets, events, maintenance
//! and failure times and device attributes, as the store loads them.

use std::collections::HashMap;

/// One hourly rollup row: `telemetry_hourly` (time in µs since the epoch, UTC).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HourlyRow {
    pub device_id: i32,
    pub metric_id: i16,
    pub bucket: i64,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
}

/// One day bucket, aggregated from hourly rows: `hours` hourly means with their sum and
/// sum of squares (so window statistics over hourly means stay exact), min and max.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DailyRow {
    pub device_id: i32,
    pub metric_id: i16,
    pub day: i64,
    pub hours: f64,
    pub sum: f64,
    pub sum_squares: f64,
    pub min: f64,
    pub max: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub device_id: i32,
    pub time: i64,
    pub code: String,
    pub severity: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInfo {
    pub kind: String,
    pub model: Option<String>,
    pub installed_at: Option<i64>,
}

/// Everything features are computed from, as loaded by the store. Rows may come in any
/// order; rows of devices not asked for are ignored.
#[derive(Debug, Clone, Default)]
pub struct FeatureInputs {
    pub hourly: Vec<HourlyRow>,
    pub daily: Vec<DailyRow>,
    pub events: Vec<EventRecord>,
    /// `(device_id, component)` → times, any order.
    pub maintenance: HashMap<(i32, String), Vec<i64>>,
    pub failures: HashMap<(i32, String), Vec<i64>>,
    pub devices: HashMap<i32, DeviceInfo>,
    /// metric id → name.
    pub metric_names: HashMap<i16, String>,
}
