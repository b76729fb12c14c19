//! Event (error code) files: every row checked against the contract's rules for events,
//! then stored idempotently.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::read::{bad_value, device_ids, optional_strings, read_frame, strings, times};
use super::{DeviceDefaults, ImportError, ImportReport, Mapping, register_devices};
use crate::contract::{self, Severity};
use crate::store::{EventRow, Store, WriteBatch};

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
