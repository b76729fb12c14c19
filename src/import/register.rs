//! The device register: one device per row, checked against what is registered; a value
//! that differs is a conflict, replaced only when told to.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};

use super::read::{
    bad_value, device_ids, optional_floats, optional_strings, optional_times, read_frame,
};
use super::{ImportError, Mapping};
use crate::store::{DeviceRow, ExistingDevices, PLACEHOLDER_KINDS, Store};

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

pub(super) fn describe_conflicts(conflicts: &[DeviceConflict]) -> String {
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
