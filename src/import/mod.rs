//! `forewarn import`: historical telemetry, failures and maintenance from CSV or Parquet,
//! through a column mapping, so users can train on their own history. Reading and mapping
//! are pure (polars); [`write`] stores the result through the same write path as ingest
//! (idempotent: importing the same file twice stores every reading once).
//!
//! NASA C-MAPSS is a preset ([`cmapss`]): `unit` is the device, `cycle` becomes time
//! (`origin + cycle × cycle_duration`), the 3 operating settings and 21 sensors become
//! metrics, and the last cycle of every training unit is an `engine` failure.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use polars::prelude::*;

use crate::store::{
    ComponentRecord, DeviceRow, MetricRow, Store, StoreError, TelemetryColumns, WriteBatch,
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
    #[error("row {row} of {path}: {detail}")]
    BadValue {
        path: PathBuf,
        row: usize,
        detail: String,
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
}

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

fn read_frame(path: &Path, mapping: &Mapping) -> Result<DataFrame, ImportError> {
    let parse = |source| ImportError::Parse {
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::read(path).map_err(|source| ImportError::Read {
        path: path.to_path_buf(),
        source,
    })?;
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

fn times(frame: &DataFrame, path: &Path, mapping: &Mapping) -> Result<Vec<i64>, ImportError> {
    let bad = |row: usize, detail: String| ImportError::BadValue {
        path: path.to_path_buf(),
        row,
        detail,
    };
    if mapping.time_format == TimeFormat::Rfc3339 {
        return strings(frame, path, &mapping.time_column)?
            .into_iter()
            .enumerate()
            .map(|(row, text)| {
                let text = text.ok_or_else(|| bad(row, "time is empty".into()))?;
                DateTime::parse_from_rfc3339(&text)
                    .map(|t| t.timestamp_micros())
                    .map_err(|e| bad(row, format!("time `{text}`: {e}")))
            })
            .collect();
    }
    let cycle_micros = mapping.cycle_duration.as_micros() as f64;
    floats(frame, path, &mapping.time_column)?
        .into_iter()
        .enumerate()
        .map(|(row, value)| {
            let value = value.ok_or_else(|| bad(row, "time is empty".into()))?;
            Ok(match mapping.time_format {
                TimeFormat::EpochSeconds => (value * 1e6) as i64,
                TimeFormat::EpochMillis => (value * 1e3) as i64,
                TimeFormat::Cycle => {
                    mapping.origin.timestamp_micros() + (value * cycle_micros) as i64
                }
                TimeFormat::Rfc3339 => unreachable!("handled above"),
            })
        })
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
    let devices = strings(&frame, path, &mapping.device_column)?;
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
    for (row, device) in devices.into_iter().enumerate() {
        let device = device.ok_or_else(|| ImportError::BadValue {
            path: path.to_path_buf(),
            row,
            detail: format!("`{}` is empty", mapping.device_column),
        })?;
        let external = format!("{}{}", mapping.device_prefix, device);
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
    let devices = strings(&frame, path, &mapping.device_column)?;
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
            let bad = |detail: &str| ImportError::BadValue {
                path: path.to_path_buf(),
                row,
                detail: detail.to_string(),
            };
            Ok((
                format!(
                    "{}{}",
                    mapping.device_prefix,
                    device.ok_or_else(|| bad("device is empty"))?
                ),
                time,
                component.ok_or_else(|| bad("component is empty"))?,
            ))
        })
        .collect()
}

/// What [`write`] stored.
#[derive(Debug, Default, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ImportReport {
    pub devices: usize,
    pub readings: u64,
    pub readings_inserted: u64,
    pub failures: u64,
    pub maintenance: u64,
}

/// Device attributes for imported devices.
#[derive(Debug, Clone)]
pub struct DeviceDefaults {
    pub kind: String,
    pub model: Option<String>,
    /// Installed at the first reading (run-to-failure data starts at installation).
    pub installed_at_first_reading: bool,
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
    let metric_ids: std::collections::HashMap<String, i16> = store
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
    let device_rows: Vec<DeviceRow> = all_devices
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
    let device_ids: std::collections::HashMap<String, i32> = store
        .upsert_devices(&device_rows)
        .await?
        .into_iter()
        .collect();
    report.devices = device_ids.len();
    for chunk in telemetry.readings.chunks(200_000) {
        let mut batch = WriteBatch {
            telemetry: TelemetryColumns::default(),
            ..WriteBatch::default()
        };
        let mut last_seen: std::collections::HashMap<i32, i64> = std::collections::HashMap::new();
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
    let text = std::fs::read_to_string(&rul_path).map_err(|source| ImportError::Read {
        path: rul_path.clone(),
        source,
    })?;
    let mut test_rul = BTreeMap::new();
    for (index, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let rul: f64 = line.trim().parse().map_err(|_| ImportError::BadValue {
            path: rul_path.clone(),
            row: index,
            detail: format!("`{line}` is not a number"),
        })?;
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

    #[test]
    fn cmapss_fd001_reads_with_the_documented_mapping() {
        let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/cmapss");
        if !directory.exists() {
            eprintln!("skipping: {} not present", directory.display());
            return;
        }
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
    }
}
