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
//! NASA C-MAPSS is a preset ([`cmapss`]): `unit` is the device, `cycle` becomes time
//! (`origin + cycle × cycle_duration`), the 3 operating settings and 21 sensors become
//! metrics, and the last cycle of every training unit is an `engine` failure.

use std::collections::{BTreeMap, HashMap};
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use polars::prelude::*;

use crate::contract::{self, Severity};
use crate::store::{
    ComponentRecord, DeviceRow, EventRow, ExistingDevices, MetricRow, PLACEHOLDER_KINDS, Store,
    StoreError, TelemetryColumns, WriteBatch,
};

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

/// The bytes of `path`, gunzipped when its name ends in `.gz`; when `path` is absent but
/// `path.gz` exists, that one (so a vendored, compressed copy stands in for the original).
pub fn read_file(path: &Path) -> Result<Vec<u8>, ImportError> {
    let read_error = |path: &Path, source| ImportError::Read {
        path: path.to_path_buf(),
        source,
    };
    let gzipped = {
        let mut name = path.as_os_str().to_owned();
        name.push(".gz");
        PathBuf::from(name)
    };
    let (chosen, compressed) = if path.extension().is_some_and(|e| e == "gz") {
        (path, true)
    } else if !path.exists() && gzipped.exists() {
        (gzipped.as_path(), true)
    } else {
        (path, false)
    };
    let bytes = std::fs::read(chosen).map_err(|source| read_error(chosen, source))?;
    if !compressed {
        return Ok(bytes);
    }
    let mut text = Vec::with_capacity(bytes.len() * 4);
    flate2::read::GzDecoder::new(bytes.as_slice())
        .read_to_end(&mut text)
        .map_err(|source| read_error(chosen, source))?;
    Ok(text)
}

fn read_frame(path: &Path, mapping: &Mapping) -> Result<DataFrame, ImportError> {
    let parse = |source| ImportError::Parse {
        path: path.to_path_buf(),
        source,
    };
    let bytes = read_file(path)?;
    let mut frame = match mapping.format {
        SourceFormat::Parquet => ParquetReader::new(Cursor::new(bytes))
            .finish()
            .map_err(parse)?,
        SourceFormat::Csv | SourceFormat::Whitespace => {
            let (bytes, separator) = if mapping.format == SourceFormat::Whitespace {
                let text = String::from_utf8_lossy(&bytes);
                let normalised: String = text
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| l.split_whitespace().collect::<Vec<_>>().join(",") + "\n")
                    .collect();
                (normalised.into_bytes(), b',')
            } else {
                (bytes, mapping.separator)
            };
            CsvReadOptions::default()
                .with_has_header(mapping.column_names.is_none())
                .with_infer_schema_length(Some(10_000))
                .with_parse_options(CsvParseOptions::default().with_separator(separator))
                .into_reader_with_file_handle(Cursor::new(bytes))
                .finish()
                .map_err(parse)?
        }
    };
    if let Some(names) = &mapping.column_names {
        let width = frame.width().min(names.len());
        let current: Vec<String> = frame
            .get_column_names()
            .iter()
            .take(width)
            .map(|n| n.to_string())
            .collect();
        for (old, new) in current.iter().zip(names) {
            frame.rename(old, new.as_str().into()).map_err(parse)?;
        }
    }
    Ok(frame)
}

fn column<'a>(frame: &'a DataFrame, path: &Path, name: &str) -> Result<&'a Column, ImportError> {
    frame.column(name).map_err(|_| ImportError::MissingColumn {
        path: path.to_path_buf(),
        column: name.to_string(),
        available: frame
            .get_column_names()
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

fn floats(frame: &DataFrame, path: &Path, name: &str) -> Result<Vec<Option<f64>>, ImportError> {
    let parse = |source| ImportError::Parse {
        path: path.to_path_buf(),
        source,
    };
    let cast = column(frame, path, name)?
        .cast(&DataType::Float64)
        .map_err(parse)?;
    Ok(cast.f64().map_err(parse)?.iter().collect())
}

fn strings(frame: &DataFrame, path: &Path, name: &str) -> Result<Vec<Option<String>>, ImportError> {
    let parse = |source| ImportError::Parse {
        path: path.to_path_buf(),
        source,
    };
    let column = column(frame, path, name)?;
    // Integral floats print as integers ("7", not "7.0").
    let cast = match column.dtype() {
        DataType::Float32 | DataType::Float64 => column.cast(&DataType::Int64).map_err(parse)?,
        _ => column.clone(),
    };
    let cast = cast.cast(&DataType::String).map_err(parse)?;
    Ok(cast
        .str()
        .map_err(parse)?
        .iter()
        .map(|v| v.map(str::to_string))
        .collect())
}

/// The text cells of an optional column; no column: every row empty.
fn optional_strings(
    frame: &DataFrame,
    path: &Path,
    column: Option<&str>,
) -> Result<Vec<Option<String>>, ImportError> {
    match column {
        Some(name) => strings(frame, path, name),
        None => Ok(vec![None; frame.height()]),
    }
}

/// The number cells of an optional column; no column: every row empty.
fn optional_floats(
    frame: &DataFrame,
    path: &Path,
    column: Option<&str>,
) -> Result<Vec<Option<f64>>, ImportError> {
    match column {
        Some(name) => floats(frame, path, name),
        None => Ok(vec![None; frame.height()]),
    }
}

/// A bad cell: `index` is the 0-based data row, shown counted from 1.
fn bad_value(path: &Path, index: usize, column: &str, detail: impl Into<String>) -> ImportError {
    ImportError::BadValue {
        path: path.to_path_buf(),
        row: index + 1,
        column: column.to_string(),
        detail: detail.into(),
    }
}

/// The device column as external ids (`device_prefix` + value), each checked against the
/// contract's rule, so that a bad id names its row instead of failing the whole write.
fn device_ids(
    frame: &DataFrame,
    path: &Path,
    mapping: &Mapping,
) -> Result<Vec<String>, ImportError> {
    let column = &mapping.device_column;
    strings(frame, path, column)?
        .into_iter()
        .enumerate()
        .map(|(index, device)| {
            let device = device.ok_or_else(|| bad_value(path, index, column, "device is empty"))?;
            let external = format!("{}{}", mapping.device_prefix, device);
            if !contract::is_valid_device_external_id(&external) {
                return Err(bad_value(
                    path,
                    index,
                    column,
                    format!("device id `{external}` is not 1-64 characters of [A-Za-z0-9_.:-]"),
                ));
            }
            Ok(external)
        })
        .collect()
}

/// A time in `column` read with the mapping's time format; `None` for an empty cell.
fn optional_times(
    frame: &DataFrame,
    path: &Path,
    mapping: &Mapping,
    column: &str,
) -> Result<Vec<Option<i64>>, ImportError> {
    match mapping.time_format {
        TimeFormat::Rfc3339 | TimeFormat::Pattern => strings(frame, path, column)?
            .into_iter()
            .enumerate()
            .map(|(index, text)| {
                let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
                    return Ok(None);
                };
                parse_time_text(text.trim(), mapping)
                    .map(Some)
                    .map_err(|detail| {
                        bad_value(path, index, column, format!("time `{text}`: {detail}"))
                    })
            })
            .collect(),
        TimeFormat::EpochSeconds | TimeFormat::EpochMillis | TimeFormat::Cycle => {
            let cycle_micros = mapping.cycle_duration.as_micros() as f64;
            floats(frame, path, column)?
                .into_iter()
                .enumerate()
                .map(|(index, value)| {
                    let Some(value) = value else { return Ok(None) };
                    if !value.is_finite() {
                        return Err(bad_value(
                            path,
                            index,
                            column,
                            format!("time `{value}` is not finite"),
                        ));
                    }
                    Ok(Some(match mapping.time_format {
                        TimeFormat::EpochSeconds => (value * 1e6) as i64,
                        TimeFormat::EpochMillis => (value * 1e3) as i64,
                        _ => mapping.origin.timestamp_micros() + (value * cycle_micros) as i64,
                    }))
                })
                .collect()
        }
    }
}

/// Parses one time written as text: RFC 3339, or `mapping.time_pattern` (with an offset
/// when the pattern has one, else UTC; a pattern without a time of day means midnight).
fn parse_time_text(text: &str, mapping: &Mapping) -> Result<i64, String> {
    if mapping.time_format == TimeFormat::Rfc3339 {
        return DateTime::parse_from_rfc3339(text)
            .map(|t| t.timestamp_micros())
            .map_err(|e| e.to_string());
    }
    let pattern = mapping.time_pattern.as_str();
    if let Ok(time) = DateTime::parse_from_str(text, pattern) {
        return Ok(time.timestamp_micros());
    }
    // Date and time before date alone: a date parse accepts a pattern with a time of day
    // and drops it.
    match chrono::NaiveDateTime::parse_from_str(text, pattern) {
        Ok(time) => Ok(time.and_utc().timestamp_micros()),
        Err(error) => chrono::NaiveDate::parse_from_str(text, pattern)
            .map(|date| {
                date.and_time(chrono::NaiveTime::MIN)
                    .and_utc()
                    .timestamp_micros()
            })
            .map_err(|_| format!("{error} (pattern `{pattern}`)")),
    }
}

/// The time column: every row must have one.
fn times(frame: &DataFrame, path: &Path, mapping: &Mapping) -> Result<Vec<i64>, ImportError> {
    let column = &mapping.time_column;
    optional_times(frame, path, mapping, column)?
        .into_iter()
        .enumerate()
        .map(|(index, time)| time.ok_or_else(|| bad_value(path, index, column, "time is empty")))
        .collect()
}

/// Metric names are the catalogue's: lowercase, `[a-z0-9_]`.
pub fn metric_name(column: &str) -> Result<String, ImportError> {
    let name: String = column
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if name.is_empty() || name.len() > 64 {
        return Err(ImportError::BadMetricName(column.to_string()));
    }
    Ok(name)
}

/// Reads telemetry from `path`: one reading per (row, metric column) with a value.
pub fn read_telemetry(path: &Path, mapping: &Mapping) -> Result<Imported, ImportError> {
    let frame = read_frame(path, mapping)?;
    let devices = device_ids(&frame, path, mapping)?;
    let times = times(&frame, path, mapping)?;
    let metric_columns: Vec<String> = if mapping.metrics.is_empty() {
        frame
            .get_column_names()
            .iter()
            .map(|n| n.to_string())
            .filter(|n| *n != mapping.device_column && *n != mapping.time_column)
            .collect()
    } else {
        mapping.metrics.clone()
    };
    let mut imported = Imported::default();
    for name in &metric_columns {
        imported.metrics.push(metric_name(name)?);
    }
    let values: Vec<Vec<Option<f64>>> = metric_columns
        .iter()
        .map(|name| floats(&frame, path, name))
        .collect::<Result<_, _>>()?;
    for (row, external) in devices.into_iter().enumerate() {
        let time = times[row];
        let span = imported
            .devices
            .entry(external.clone())
            .or_insert((time, time));
        span.0 = span.0.min(time);
        span.1 = span.1.max(time);
        for (metric, column) in values.iter().enumerate() {
            if let Some(value) = column[row].filter(|v| v.is_finite()) {
                imported
                    .readings
                    .push((external.clone(), time, metric, value));
            }
        }
    }
    Ok(imported)
}

/// Failures or maintenance rows: `(device external id, time µs, component)`.
pub type ComponentRows = Vec<(String, i64, String)>;

/// Failures or maintenance rows from `path`.
pub fn read_component_records(
    path: &Path,
    mapping: &Mapping,
    component_column: Option<&str>,
    component: Option<&str>,
) -> Result<ComponentRows, ImportError> {
    let frame = read_frame(path, mapping)?;
    let devices = device_ids(&frame, path, mapping)?;
    let times = times(&frame, path, mapping)?;
    let components = match component_column {
        Some(name) => strings(&frame, path, name)?,
        None => vec![component.map(str::to_string); devices.len()],
    };
    devices
        .into_iter()
        .zip(times)
        .zip(components)
        .enumerate()
        .map(|(row, ((device, time), component))| {
            let component = component.filter(|c| !c.trim().is_empty()).ok_or_else(|| {
                bad_value(
                    path,
                    row,
                    component_column.unwrap_or("component"),
                    "component is empty",
                )
            })?;
            Ok((device, time, component))
        })
        .collect()
}

/// An event (error code) row of an events file.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedEvent {
    pub device: String,
    /// µs since the epoch.
    pub time: i64,
    pub code: String,
    pub severity: Severity,
    pub message: String,
}

/// The columns of an events file besides device and time.
#[derive(Debug, Clone)]
pub struct EventColumns {
    /// The event (error) code: required in every row, 1-64 bytes.
    pub code: String,
    /// One of the contract's severities per row; an empty cell, or no column, takes
    /// `default_severity`.
    pub severity: Option<String>,
    pub default_severity: Severity,
    /// Free text (at most 1024 bytes); no column: empty.
    pub message: Option<String>,
}

/// Events from `path`, every row checked against the contract's rules for events.
pub fn read_events(
    path: &Path,
    mapping: &Mapping,
    columns: &EventColumns,
) -> Result<Vec<ImportedEvent>, ImportError> {
    let frame = read_frame(path, mapping)?;
    let devices = device_ids(&frame, path, mapping)?;
    let times = times(&frame, path, mapping)?;
    let codes = strings(&frame, path, &columns.code)?;
    let severities = optional_strings(&frame, path, columns.severity.as_deref())?;
    let messages = optional_strings(&frame, path, columns.message.as_deref())?;
    let mut events = Vec::with_capacity(devices.len());
    for (row, device) in devices.into_iter().enumerate() {
        let code = codes[row].clone().unwrap_or_default();
        if !contract::is_valid_event_code(&code) {
            let detail = if code.is_empty() {
                "code is empty".to_string()
            } else {
                format!("code `{code}` is not 1-64 bytes without NUL")
            };
            return Err(bad_value(path, row, &columns.code, detail));
        }
        let severity = match severities[row].as_deref().map(str::trim) {
            None | Some("") => columns.default_severity,
            Some(text) => text.parse().map_err(|detail: String| {
                bad_value(
                    path,
                    row,
                    columns.severity.as_deref().unwrap_or_default(),
                    detail,
                )
            })?,
        };
        let message = messages[row].clone().unwrap_or_default();
        if !contract::is_valid_event_message(&message) {
            return Err(bad_value(
                path,
                row,
                columns.message.as_deref().unwrap_or_default(),
                "message is over 1024 bytes or holds NUL",
            ));
        }
        events.push(ImportedEvent {
            device,
            time: times[row],
            code,
            severity,
            message,
        });
    }
    Ok(events)
}

/// The columns of a device register besides the device.
#[derive(Debug, Clone)]
pub struct RegisterColumns {
    /// Column naming each device's kind; without it every device is `kind`.
    pub kind_column: Option<String>,
    pub kind: String,
    pub model_column: Option<String>,
    /// Installation time, in the mapping's time format.
    pub installed_at_column: Option<String>,
    /// Age in years as of `age_as_of`, for registers that give an age instead of an
    /// installation time: installed at `age_as_of − age × 365.25 days`.
    pub age_column: Option<String>,
    pub age_as_of: DateTime<Utc>,
    /// The customer's external id (customers not registered yet are registered by it).
    pub customer_column: Option<String>,
    pub latitude_column: Option<String>,
    pub longitude_column: Option<String>,
}

const YEAR_MICROS: f64 = 365.25 * 86_400.0 * 1e6;

/// The devices of a register file, one per row (a device on two rows is an error).
pub fn read_device_register(
    path: &Path,
    mapping: &Mapping,
    columns: &RegisterColumns,
) -> Result<Vec<DeviceRow>, ImportError> {
    let frame = read_frame(path, mapping)?;
    let devices = device_ids(&frame, path, mapping)?;
    let n_rows = devices.len();
    // Blank cells are missing values.
    let texts = |column: &Option<String>| -> Result<Vec<Option<String>>, ImportError> {
        Ok(optional_strings(&frame, path, column.as_deref())?
            .into_iter()
            .map(|v| v.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()))
            .collect())
    };
    let numbers = |column: &Option<String>| optional_floats(&frame, path, column.as_deref());
    let kinds = texts(&columns.kind_column)?;
    let models = texts(&columns.model_column)?;
    let customers = texts(&columns.customer_column)?;
    let installed = match &columns.installed_at_column {
        Some(name) => optional_times(&frame, path, mapping, name)?,
        None => vec![None; n_rows],
    };
    let ages = numbers(&columns.age_column)?;
    let latitudes = numbers(&columns.latitude_column)?;
    let longitudes = numbers(&columns.longitude_column)?;
    let mut first_row: BTreeMap<&str, usize> = BTreeMap::new();
    let mut rows = Vec::with_capacity(n_rows);
    for (row, external_id) in devices.iter().enumerate() {
        let bad = |column: &Option<String>, detail: String| {
            bad_value(path, row, column.as_deref().unwrap_or_default(), detail)
        };
        if let Some(first) = first_row.insert(external_id, row) {
            return Err(bad_value(
                path,
                row,
                &mapping.device_column,
                format!("device `{external_id}` is on row {} too", first + 1),
            ));
        }
        let kind = match (&columns.kind_column, &kinds[row]) {
            (None, _) => columns.kind.clone(),
            (Some(_), Some(kind)) => kind.clone(),
            (Some(_), None) => return Err(bad(&columns.kind_column, "kind is empty".into())),
        };
        let in_range = |column: &Option<String>, value: Option<f64>, limit: f64| match value {
            Some(v) if !(v.is_finite() && v.abs() <= limit) => {
                Err(bad(column, format!("`{v}` is outside ±{limit}")))
            }
            _ => Ok(value),
        };
        let latitude = in_range(&columns.latitude_column, latitudes[row], 90.0)?;
        let longitude = in_range(&columns.longitude_column, longitudes[row], 180.0)?;
        let installed_at = match (installed[row], ages[row]) {
            (Some(time), _) => Some(time),
            (None, Some(age)) if age.is_finite() && age >= 0.0 => {
                Some(columns.age_as_of.timestamp_micros() - (age * YEAR_MICROS) as i64)
            }
            (None, Some(age)) => {
                return Err(bad(
                    &columns.age_column,
                    format!("age `{age}` is not a number of years ≥ 0"),
                ));
            }
            (None, None) => None,
        };
        rows.push(DeviceRow {
            external_id: external_id.clone(),
            kind,
            model: models[row].clone(),
            customer_external_id: customers[row].clone(),
            latitude,
            longitude,
            installed_at: installed_at.and_then(DateTime::from_timestamp_micros),
            metadata: serde_json::json!({"imported": true}),
        })
    }
    Ok(rows)
}

/// A register's value that differs from the one registered.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceConflict {
    pub device: String,
    pub attribute: &'static str,
    pub registered: String,
    pub imported: String,
}

fn describe_conflicts(conflicts: &[DeviceConflict]) -> String {
    const SHOWN: usize = 20;
    let mut text = conflicts
        .iter()
        .take(SHOWN)
        .map(|c| {
            format!(
                "{} {}: registered `{}`, register `{}`",
                c.device, c.attribute, c.registered, c.imported
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    if conflicts.len() > SHOWN {
        text.push_str(&format!("; and {} more", conflicts.len() - SHOWN));
    }
    text
}

/// The values of `rows` that would change what is registered: a value the register gives
/// that differs from one the device has. Filling in is no conflict: a missing value, or a
/// placeholder kind (`PLACEHOLDER_KINDS`: registered by ingest, or by an import without
/// `--kind`).
pub fn register_conflicts(rows: &[DeviceRow], registered: &[DeviceRow]) -> Vec<DeviceConflict> {
    let registered: BTreeMap<&str, &DeviceRow> = registered
        .iter()
        .map(|d| (d.external_id.as_str(), d))
        .collect();
    let mut conflicts = Vec::new();
    for row in rows {
        let Some(device) = registered.get(row.external_id.as_str()) else {
            continue;
        };
        let mut differs =
            |attribute: &'static str, registered: Option<String>, imported: Option<String>| {
                if let (Some(registered), Some(imported)) = (registered, imported)
                    && registered != imported
                {
                    conflicts.push(DeviceConflict {
                        device: row.external_id.clone(),
                        attribute,
                        registered,
                        imported,
                    });
                }
            };
        let placeholder = PLACEHOLDER_KINDS.contains(&device.kind.as_str());
        differs(
            "kind",
            (!placeholder).then(|| device.kind.clone()),
            Some(row.kind.clone()),
        );
        differs("model", device.model.clone(), row.model.clone());
        differs(
            "customer",
            device.customer_external_id.clone(),
            row.customer_external_id.clone(),
        );
        let time = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339());
        differs(
            "installed_at",
            time(device.installed_at),
            time(row.installed_at),
        );
        let number = |v: Option<f64>| v.map(|v| v.to_string());
        differs("latitude", number(device.latitude), number(row.latitude));
        differs("longitude", number(device.longitude), number(row.longitude));
    }
    conflicts
}

/// What [`write_device_register`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RegisterReport {
    /// Devices in the register.
    pub devices: usize,
    /// Of them, registered before (filled in, or overwritten).
    pub already_registered: usize,
    /// Registered values replaced (`overwrite`).
    pub overwritten: usize,
}

/// Registers the devices of a register file (`path` names it in errors). A device that is
/// registered already is filled in; a value of it that differs from the register's is
/// replaced only with `overwrite`, and otherwise the whole file is refused with every
/// conflict listed, before anything is written.
pub async fn write_device_register(
    store: &Store,
    path: &Path,
    rows: &[DeviceRow],
    overwrite: bool,
) -> Result<RegisterReport, ImportError> {
    let external_ids: Vec<String> = rows.iter().map(|r| r.external_id.clone()).collect();
    let registered = store.registered_devices(&external_ids).await?;
    let conflicts = register_conflicts(rows, &registered);
    if !conflicts.is_empty() && !overwrite {
        return Err(ImportError::DeviceConflicts {
            path: path.to_path_buf(),
            conflicts,
        });
    }
    let mut customers: Vec<String> = rows
        .iter()
        .filter_map(|r| r.customer_external_id.clone())
        .collect();
    customers.sort();
    customers.dedup();
    store.register_customers(&customers).await?;
    let existing = if overwrite {
        ExistingDevices::Overwrite
    } else {
        ExistingDevices::FillIn
    };
    store.import_devices(rows, existing).await?;
    Ok(RegisterReport {
        devices: rows.len(),
        already_registered: registered.len(),
        overwritten: conflicts.len(),
    })
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

/// Stores imported telemetry, failures and maintenance, then refreshes the rollup.
pub async fn write(
    store: &Store,
    telemetry: &Imported,
    defaults: &DeviceDefaults,
    failures: &[(String, i64, String)],
    maintenance: &[(String, i64, String)],
) -> Result<ImportReport, ImportError> {
    let mut report = ImportReport::default();
    let metric_rows: Vec<MetricRow> = telemetry
        .metrics
        .iter()
        .map(|name| MetricRow {
            name: name.clone(),
            unit: String::new(),
            device_kinds: vec![defaults.kind.clone()],
        })
        .collect();
    let metric_ids: HashMap<String, i16> = store
        .upsert_metrics(&metric_rows)
        .await?
        .into_iter()
        .collect();
    let mut all_devices: BTreeMap<String, Option<i64>> = telemetry
        .devices
        .iter()
        .map(|(id, (first, _))| (id.clone(), Some(*first)))
        .collect();
    for (device, _, _) in failures.iter().chain(maintenance) {
        all_devices.entry(device.clone()).or_insert(None);
    }
    let device_ids = register_devices(store, &all_devices, defaults).await?;
    report.devices = device_ids.len();
    for chunk in telemetry.readings.chunks(200_000) {
        let mut batch = WriteBatch {
            telemetry: TelemetryColumns::default(),
            ..WriteBatch::default()
        };
        let mut last_seen: HashMap<i32, i64> = HashMap::new();
        for (device, time, metric, value) in chunk {
            let device_id = device_ids[device];
            let metric_id = metric_ids[&telemetry.metrics[*metric]];
            batch
                .telemetry
                .push(*time, device_id, metric_id, *value, false);
            let seen = last_seen.entry(device_id).or_insert(*time);
            *seen = (*seen).max(*time);
        }
        batch.last_seen = last_seen.into_iter().collect();
        let written = store.write_batch(&batch).await?;
        report.readings += chunk.len() as u64;
        report.readings_inserted += written.readings_inserted;
    }
    let records = |rows: &[(String, i64, String)], detail: &str| -> Vec<ComponentRecord> {
        rows.iter()
            .filter_map(|(device, time, component)| {
                Some(ComponentRecord {
                    time: DateTime::from_timestamp_micros(*time)?,
                    device_id: *device_ids.get(device)?,
                    component: component.clone(),
                    detail: detail.to_string(),
                })
            })
            .collect()
    };
    report.failures = store
        .insert_failures(&records(failures, "imported"))
        .await?;
    report.maintenance = store
        .insert_maintenance(&records(maintenance, "imported"))
        .await?;
    store.refresh_rollup_now().await?;
    Ok(report)
}

/// Stores imported events (idempotent: `device_events` is unique on device, time and
/// code, so an event imported again inserts nothing) and registers their devices.
pub async fn write_events(
    store: &Store,
    events: &[ImportedEvent],
    defaults: &DeviceDefaults,
) -> Result<ImportReport, ImportError> {
    let devices: BTreeMap<String, Option<i64>> =
        events.iter().map(|e| (e.device.clone(), None)).collect();
    let device_ids = register_devices(store, &devices, defaults).await?;
    let mut report = ImportReport {
        devices: device_ids.len(),
        ..ImportReport::default()
    };
    for chunk in events.chunks(100_000) {
        let mut last_seen: HashMap<i32, i64> = HashMap::new();
        let rows = chunk
            .iter()
            .map(|event| {
                let device_id = device_ids[&event.device];
                let seen = last_seen.entry(device_id).or_insert(event.time);
                *seen = (*seen).max(event.time);
                EventRow {
                    time: event.time,
                    unstamped_redelivery: false,
                    device_id,
                    code: event.code.clone(),
                    severity: event.severity.as_str(),
                    message: event.message.clone(),
                    time_estimated: false,
                }
            })
            .collect();
        let batch = WriteBatch {
            events: rows,
            last_seen: last_seen.into_iter().collect(),
            ..WriteBatch::default()
        };
        let written = store.write_batch(&batch).await?;
        report.events += chunk.len() as u64;
        report.events_inserted += written.events_inserted;
    }
    Ok(report)
}

/// Where `import cmapss` and `bench cmapss` look by default: the copy vendored in the
/// repository (`datasets/cmapss`, gzipped), from the working directory or, when run
/// elsewhere, in the source tree the binary was built from.
pub fn default_cmapss_dir() -> PathBuf {
    let relative = PathBuf::from("datasets/cmapss");
    if relative.is_dir() {
        relative
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/cmapss")
    }
}

/// The C-MAPSS column names: unit, cycle, three operating settings, 21 sensors.
pub fn cmapss_columns() -> Vec<String> {
    let mut names = vec!["unit".to_string(), "cycle".to_string()];
    names.extend((1..=3).map(|i| format!("op_setting_{i}")));
    names.extend((1..=21).map(|i| format!("sensor_{i}")));
    names
}

/// The documented C-MAPSS mapping for one file (`train` or `test`) of `subset` (FD001).
pub fn cmapss_mapping(
    subset: &str,
    split: &str,
    cycle_duration: std::time::Duration,
    origin: DateTime<Utc>,
) -> Mapping {
    Mapping {
        format: SourceFormat::Whitespace,
        separator: b' ',
        column_names: Some(cmapss_columns()),
        device_column: "unit".into(),
        device_prefix: format!("{}-{split}-", subset.to_ascii_lowercase()),
        time_column: "cycle".into(),
        time_format: TimeFormat::Cycle,
        time_pattern: DEFAULT_TIME_PATTERN.into(),
        origin,
        cycle_duration,
        metrics: Vec::new(),
    }
}

/// A C-MAPSS subset read with the documented mapping: train units with their failure at
/// the last cycle, test units (truncated) and their true remaining cycles.
pub struct Cmapss {
    pub train: Imported,
    pub test: Imported,
    /// One failure per training unit, at its last cycle (component `engine`).
    pub failures: Vec<(String, i64, String)>,
    /// Test unit external id → true RUL (cycles) after its last cycle.
    pub test_rul: BTreeMap<String, f64>,
}

impl Cmapss {
    /// Training and test units as one import: one write, so one rollup refresh (on plain
    /// PostgreSQL the refresh costs a scan per run of dirty hours, and 4 h cycles make
    /// every dirty hour a run of its own).
    pub fn all_units(&self) -> Imported {
        let mut all = self.train.clone();
        let mut index_of: BTreeMap<String, usize> = all
            .metrics
            .iter()
            .enumerate()
            .map(|(index, name)| (name.clone(), index))
            .collect();
        let test_index: Vec<usize> = self
            .test
            .metrics
            .iter()
            .map(|name| {
                *index_of.entry(name.clone()).or_insert_with(|| {
                    all.metrics.push(name.clone());
                    all.metrics.len() - 1
                })
            })
            .collect();
        all.devices
            .extend(self.test.devices.iter().map(|(d, span)| (d.clone(), *span)));
        all.readings.extend(
            self.test
                .readings
                .iter()
                .map(|(device, time, metric, value)| {
                    (device.clone(), *time, test_index[*metric], *value)
                }),
        );
        all
    }
}

pub fn cmapss(
    directory: &Path,
    subset: &str,
    cycle_duration: std::time::Duration,
    origin: DateTime<Utc>,
) -> Result<Cmapss, ImportError> {
    let train = read_telemetry(
        &directory.join(format!("train_{subset}.txt")),
        &cmapss_mapping(subset, "train", cycle_duration, origin),
    )?;
    let test = read_telemetry(
        &directory.join(format!("test_{subset}.txt")),
        &cmapss_mapping(subset, "test", cycle_duration, origin),
    )?;
    let failures = train
        .devices
        .iter()
        .map(|(device, (_, last))| (device.clone(), *last, "engine".to_string()))
        .collect();
    let rul_path = directory.join(format!("RUL_{subset}.txt"));
    let text = String::from_utf8_lossy(&read_file(&rul_path)?).into_owned();
    let mut test_rul = BTreeMap::new();
    for (index, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let rul: f64 = line
            .trim()
            .parse()
            .map_err(|_| bad_value(&rul_path, index, "rul", format!("`{line}` is not a number")))?;
        test_rul.insert(
            format!("{}-test-{}", subset.to_ascii_lowercase(), index + 1),
            rul,
        );
    }
    Ok(Cmapss {
        train,
        test,
        failures,
        test_rul,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_a_header_maps_columns() {
        let directory =
            std::env::temp_dir().join(format!("forewarn-import-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("t.csv");
        std::fs::write(
            &path,
            "machine,ts,Drum Vibration,temp\nA1,2026-01-01T00:00:00Z,1.5,40\nA1,2026-01-01T00:10:00Z,,41\nB2,2026-01-01T00:00:00Z,2.5,39\n",
        )
        .unwrap();
        let mapping = Mapping {
            format: SourceFormat::Csv,
            separator: b',',
            column_names: None,
            device_column: "machine".into(),
            device_prefix: "plant-".into(),
            time_column: "ts".into(),
            time_format: TimeFormat::Rfc3339,
            time_pattern: DEFAULT_TIME_PATTERN.into(),
            origin: DateTime::UNIX_EPOCH,
            cycle_duration: std::time::Duration::from_secs(3600),
            metrics: Vec::new(),
        };
        let imported = read_telemetry(&path, &mapping).unwrap();
        assert_eq!(imported.metrics, vec!["drum_vibration", "temp"]);
        assert_eq!(imported.readings.len(), 5, "the empty cell is skipped");
        assert_eq!(imported.devices.len(), 2);
        assert!(imported.devices.contains_key("plant-A1"));

        let bad = Mapping {
            device_column: "unit".into(),
            ..mapping
        };
        let error = read_telemetry(&path, &bad).unwrap_err().to_string();
        assert!(error.contains("`unit` is not in"), "{error}");
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn parquet_reads_through_the_same_mapping() {
        let directory =
            std::env::temp_dir().join(format!("forewarn-parquet-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("t.parquet");
        let mut frame = df!(
            "machine" => ["A1", "A1", "B2"],
            "epoch" => [1_790_000_000.0, 1_790_000_600.0, 1_790_000_000.0],
            "temp" => [40.0, 41.0, 39.0],
        )
        .unwrap();
        ParquetWriter::new(std::fs::File::create(&path).unwrap())
            .finish(&mut frame)
            .unwrap();
        let mapping = Mapping {
            format: SourceFormat::Parquet,
            separator: b',',
            column_names: None,
            device_column: "machine".into(),
            device_prefix: String::new(),
            time_column: "epoch".into(),
            time_format: TimeFormat::EpochSeconds,
            time_pattern: DEFAULT_TIME_PATTERN.into(),
            origin: DateTime::UNIX_EPOCH,
            cycle_duration: std::time::Duration::from_secs(3600),
            metrics: Vec::new(),
        };
        let imported = read_telemetry(&path, &mapping).unwrap();
        assert_eq!(imported.metrics, vec!["temp"]);
        assert_eq!(
            imported.readings,
            vec![
                ("A1".to_string(), 1_790_000_000_000_000, 0, 40.0),
                ("A1".to_string(), 1_790_000_600_000_000, 0, 41.0),
                ("B2".to_string(), 1_790_000_000_000_000, 0, 39.0),
            ]
        );
        std::fs::remove_dir_all(&directory).unwrap();
    }

    fn csv_mapping(time_format: TimeFormat, time_pattern: &str) -> Mapping {
        Mapping {
            format: SourceFormat::Csv,
            separator: b',',
            column_names: None,
            device_column: "device".into(),
            device_prefix: String::new(),
            time_column: "time".into(),
            time_format,
            time_pattern: time_pattern.into(),
            origin: DateTime::UNIX_EPOCH,
            cycle_duration: std::time::Duration::from_secs(3600),
            metrics: Vec::new(),
        }
    }

    #[test]
    fn time_patterns_read_as_utc_unless_they_carry_an_offset() {
        let micros = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .unwrap()
                .timestamp_micros()
        };
        let parse = |text: &str, pattern: &str| {
            parse_time_text(text, &csv_mapping(TimeFormat::Pattern, pattern))
        };
        assert_eq!(
            parse("2015-01-01 06:00:00", DEFAULT_TIME_PATTERN),
            Ok(micros("2015-01-01T06:00:00Z"))
        );
        assert_eq!(
            parse("1/1/2015 6:00:00 PM", "%m/%d/%Y %I:%M:%S %p"),
            Ok(micros("2015-01-01T18:00:00Z"))
        );
        assert_eq!(
            parse("2015-01-01 06:00 +0200", "%Y-%m-%d %H:%M %z"),
            Ok(micros("2015-01-01T04:00:00Z"))
        );
        assert_eq!(
            parse("2024-03-01", "%Y-%m-%d"),
            Ok(micros("2024-03-01T00:00:00Z"))
        );
        // A date alone does not satisfy a pattern with a time of day.
        assert!(parse("2015-01-01", DEFAULT_TIME_PATTERN).is_err());
    }

    #[test]
    fn register_conflicts_are_changed_values_not_filled_in_ones() {
        let row = |id: &str, kind: &str, model: Option<&str>| DeviceRow {
            external_id: id.into(),
            kind: kind.into(),
            model: model.map(str::to_string),
            customer_external_id: None,
            latitude: None,
            longitude: None,
            installed_at: None,
            metadata: serde_json::json!({}),
        };
        let registered = |id: &str, kind: &str, model: Option<&str>| DeviceRow {
            latitude: Some(1.0),
            ..row(id, kind, model)
        };
        let conflicts = register_conflicts(
            &[
                row("placeholder", "pump", Some("P1")),
                row("unknown", "pump", None),
                row("same", "pump", Some("P1")),
                row("new-model", "pump", Some("P2")),
                row("new-kind", "fan", None),
                row("not-registered", "fan", None),
            ],
            &[
                registered("placeholder", "imported", None),
                registered("unknown", "unknown", Some("P1")),
                registered("same", "pump", Some("P1")),
                registered("new-model", "pump", Some("P1")),
                registered("new-kind", "pump", Some("P1")),
            ],
        );
        let found: Vec<(&str, &str)> = conflicts
            .iter()
            .map(|c| (c.device.as_str(), c.attribute))
            .collect();
        assert_eq!(found, [("new-model", "model"), ("new-kind", "kind")]);
    }

    #[test]
    fn a_bad_event_row_names_its_row_and_column() {
        let directory =
            std::env::temp_dir().join(format!("forewarn-events-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("e.csv");
        let columns = EventColumns {
            code: "code".into(),
            severity: Some("severity".into()),
            default_severity: Severity::Warning,
            message: None,
        };
        let mapping = csv_mapping(TimeFormat::Rfc3339, DEFAULT_TIME_PATTERN);
        let error = |text: &str| {
            std::fs::write(&path, text).unwrap();
            read_events(&path, &mapping, &columns)
                .unwrap_err()
                .to_string()
        };
        let header = "device,time,code,severity\n";
        let good = "d1,2026-01-01T00:00:00Z,E1,info\n";
        assert!(
            error(&format!("{header}{good}d1,2026-01-01T01:00:00Z,E1,Info\n"))
                .contains("row 2, column `severity`: `Info` is not one of")
        );
        assert!(
            error(&format!(
                "{header}{good}{good}d1,2026-01-01T01:00:00Z,,info\n"
            ))
            .contains("row 3, column `code`: code is empty")
        );
        assert!(
            error(&format!("{header}d 1,2026-01-01T01:00:00Z,E1,info\n"))
                .contains("row 1, column `device`: device id `d 1` is not")
        );
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn cmapss_fd001_reads_with_the_documented_mapping() {
        // The vendored copy: a clean clone has it, so a missing file fails the test.
        let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/cmapss");
        let origin = DateTime::parse_from_rfc3339("2020-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let data = cmapss(
            &directory,
            "FD001",
            std::time::Duration::from_secs(4 * 3600),
            origin,
        )
        .unwrap();
        assert_eq!(data.train.devices.len(), 100);
        assert_eq!(data.test.devices.len(), 100);
        assert_eq!(data.test_rul.len(), 100);
        assert_eq!(data.train.metrics.len(), 24);
        // 20,631 training rows × 24 columns.
        assert_eq!(data.train.readings.len(), 20_631 * 24);
        // Unit 1 runs 192 cycles: its failure is at cycle 192.
        let (_, last) = data.train.devices["fd001-train-1"];
        assert_eq!(last, origin.timestamp_micros() + 192 * 4 * 3_600_000_000);
        assert_eq!(data.test_rul["fd001-test-1"], 112.0);
        let all = data.all_units();
        assert_eq!(all.metrics, data.train.metrics);
        assert_eq!(all.devices.len(), 200);
        assert_eq!(
            all.readings.len(),
            data.train.readings.len() + data.test.readings.len()
        );
    }

    #[test]
    fn a_missing_file_is_read_from_its_gzipped_copy_and_a_missing_pair_is_an_error() {
        let directory = std::env::temp_dir().join(format!("forewarn-gz-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let plain = directory.join("a.txt");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut encoder, b"1 2 3\n").unwrap();
        std::fs::write(directory.join("a.txt.gz"), encoder.finish().unwrap()).unwrap();
        assert_eq!(read_file(&plain).unwrap(), b"1 2 3\n");
        assert_eq!(read_file(&directory.join("a.txt.gz")).unwrap(), b"1 2 3\n");
        let error = read_file(&directory.join("b.txt")).unwrap_err().to_string();
        assert!(error.contains("b.txt"), "{error}");
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
