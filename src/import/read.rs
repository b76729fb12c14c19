//! Reading a file through a [`Mapping`]: the bytes (gunzipped), the frame (CSV, whitespace
//! or Parquet), and its cells as device ids, times, numbers and text, every bad cell named
//! by its row and column.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use chrono::DateTime;
use polars::prelude::*;

use super::{ImportError, Mapping, SourceFormat, TimeFormat};
use crate::contract;

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

pub(super) fn read_frame(path: &Path, mapping: &Mapping) -> Result<DataFrame, ImportError> {
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

pub(super) fn floats(
    frame: &DataFrame,
    path: &Path,
    name: &str,
) -> Result<Vec<Option<f64>>, ImportError> {
    let parse = |source| ImportError::Parse {
        path: path.to_path_buf(),
        source,
    };
    let cast = column(frame, path, name)?
        .cast(&DataType::Float64)
        .map_err(parse)?;
    Ok(cast.f64().map_err(parse)?.iter().collect())
}

pub(super) fn strings(
    frame: &DataFrame,
    path: &Path,
    name: &str,
) -> Result<Vec<Option<String>>, ImportError> {
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
pub(super) fn optional_strings(
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
pub(super) fn optional_floats(
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
pub(super) fn bad_value(
    path: &Path,
    index: usize,
    column: &str,
    detail: impl Into<String>,
) -> ImportError {
    ImportError::BadValue {
        path: path.to_path_buf(),
        row: index + 1,
        column: column.to_string(),
        detail: detail.into(),
    }
}

/// The device column as external ids (`device_prefix` + value), each checked against the
/// contract's rule, so that a bad id names its row instead of failing the whole write.
pub(super) fn device_ids(
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
pub(super) fn optional_times(
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
pub(super) fn parse_time_text(text: &str, mapping: &Mapping) -> Result<i64, String> {
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
pub(super) fn times(
    frame: &DataFrame,
    path: &Path,
    mapping: &Mapping,
) -> Result<Vec<i64>, ImportError> {
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
