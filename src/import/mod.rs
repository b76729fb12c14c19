//! `forewarn import`: historical telemetry, events (error codes), failures and maintenance
//! from CSV or Parquet, through a column mapping, so users can train on their own history;
//! and a device register (kind, model, installation, customer, position). Reading and
//! mapping are pure (polars) and check every row before anything is written: a bad row
//! stops the file with an error naming the file, the row and the column. [`write`] and
//! [`write_events`] store through the same write path as ingest (idempotent: importing
//! the same file twice stores every reading and event once).
//!
//! Devices a history file names that are not registered yet are registered with the
//! import's `--kind`; a registered device is only filled in (a placeholder kind, a missing
//! model or installation time), never changed. A device register changes registered
//! values only when told to ([`write_device_register`]).
//!
//! NASA C-MAPSS is a preset ([`cmapss()`]): `unit` is the device, `cycle` becomes time
//! (`origin + cycle × cycle_duration`), the 3 operating settings and 21 sensors become
//! metrics, and the last cycle of every training unit is an `engine` failure.

mod cmapss;
mod events;
mod read;
mod register;
mod telemetry;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use polars::prelude::*;

use crate::store::{DeviceRow, ExistingDevices, Store, StoreError};

pub use cmapss::{Cmapss, cmapss, cmapss_columns, cmapss_mapping, default_cmapss_dir};
pub use events::{EventColumns, ImportedEvent, read_events, write_events};
pub use read::{metric_name, read_file};
pub use register::{
    DeviceConflict, RegisterColumns, RegisterReport, read_device_register, register_conflicts,
    write_device_register,
};
pub use telemetry::{ComponentRows, read_component_records, read_telemetry, write};

use register::describe_conflicts;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse {path}: {source}")]
    Parse { path: PathBuf, source: PolarsError },
    #[error("column `{column}` is not in {path} (columns: {available})")]
    MissingColumn {
        path: PathBuf,
        column: String,
        available: String,
    },
    /// `row` counts data rows from 1 (a header row is not counted).
    #[error("{path}: row {row}, column `{column}`: {detail}")]
    BadValue {
        path: PathBuf,
        row: usize,
        column: String,
        detail: String,
    },
    #[error(
        "{path}: {} registered value(s) differ from the register; nothing was written \
         (`--overwrite` replaces them): {}",
        .conflicts.len(),
        describe_conflicts(.conflicts)
    )]
    DeviceConflicts {
        path: PathBuf,
        conflicts: Vec<DeviceConflict>,
    },
    #[error("metric name `{0}` is not valid: lowercase letters, digits and `_`, at most 64")]
    BadMetricName(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// File formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceFormat {
    /// Comma-separated (or `--separator`), with or without a header.
    Csv,
    /// Columns separated by runs of spaces (C-MAPSS and many instrument dumps).
    Whitespace,
    /// Apache Parquet.
    Parquet,
}

/// How the time column is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TimeFormat {
    /// RFC 3339 text (`2026-11-03T10:00:00Z`).
    Rfc3339,
    /// Seconds since the epoch.
    EpochSeconds,
    /// Milliseconds since the epoch.
    EpochMillis,
    /// A cycle counter: `origin + value × cycle_duration`.
    Cycle,
    /// Text in the strftime pattern `time_pattern` (default `%Y-%m-%d %H:%M:%S`); without
    /// an offset in the pattern, the time is UTC.
    Pattern,
}

/// The time pattern of `TimeFormat::Pattern` when none is given (`2015-01-01 06:00:00`).
pub const DEFAULT_TIME_PATTERN: &str = "%Y-%m-%d %H:%M:%S";

/// What the columns mean.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub format: SourceFormat,
    pub separator: u8,
    /// Column names when the file has no header row.
    pub column_names: Option<Vec<String>>,
    pub device_column: String,
    /// Prepended to device values to make external ids (`fd001-train-` + `7`).
    pub device_prefix: String,
    pub time_column: String,
    pub time_format: TimeFormat,
    /// strftime pattern of `TimeFormat::Pattern`.
    pub time_pattern: String,
    pub origin: DateTime<Utc>,
    pub cycle_duration: std::time::Duration,
    /// Metric columns; empty: every other column.
    pub metrics: Vec<String>,
}

/// Rows read through a mapping.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Imported {
    /// external id → (first, last) time, µs.
    pub devices: BTreeMap<String, (i64, i64)>,
    pub metrics: Vec<String>,
    /// (device external id, time µs, metric index, value)
    pub readings: Vec<(String, i64, usize, f64)>,
}

/// What [`write`] and [`write_events`] stored.
#[derive(Debug, Default, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ImportReport {
    pub devices: usize,
    pub readings: u64,
    pub readings_inserted: u64,
    pub events: u64,
    pub events_inserted: u64,
    pub failures: u64,
    pub maintenance: u64,
}

/// Device attributes for devices an import registers.
#[derive(Debug, Clone)]
pub struct DeviceDefaults {
    pub kind: String,
    pub model: Option<String>,
    /// Installed at the first reading (run-to-failure data starts at installation).
    pub installed_at_first_reading: bool,
}

/// Registers the devices a history file names (external id → first reading, if any):
/// unknown ones with `defaults`, registered ones only filled in. Returns external id → id.
async fn register_devices(
    store: &Store,
    devices: &BTreeMap<String, Option<i64>>,
    defaults: &DeviceDefaults,
) -> Result<HashMap<String, i32>, ImportError> {
    let rows: Vec<DeviceRow> = devices
        .iter()
        .map(|(external_id, first)| DeviceRow {
            external_id: external_id.clone(),
            kind: defaults.kind.clone(),
            model: defaults.model.clone(),
            customer_external_id: None,
            latitude: None,
            longitude: None,
            installed_at: first
                .filter(|_| defaults.installed_at_first_reading)
                .and_then(DateTime::from_timestamp_micros),
            metadata: serde_json::json!({"imported": true}),
        })
        .collect();
    Ok(store
        .import_devices(&rows, ExistingDevices::FillIn)
        .await?
        .into_iter()
        .collect())
}

#[cfg(test)]
mod tests;
