//! Telemetry, failure and maintenance files: read through a mapping, then stored through
//! ingest's write path.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::DateTime;

use super::read::{bad_value, device_ids, floats, read_frame, strings, times};
use super::{
    DeviceDefaults, ImportError, ImportReport, Imported, Mapping, metric_name, register_devices,
};
use crate::store::{ComponentRecord, MetricRow, Store, TelemetryColumns, WriteBatch};

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
