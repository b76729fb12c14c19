//! The NASA C-MAPSS preset: the documented mapping, the vendored copy, and the training
//! units' failures at their last cycle.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::read::bad_value;
use super::{
    DEFAULT_TIME_PATTERN, ImportError, Imported, Mapping, SourceFormat, TimeFormat, read_file,
    read_telemetry,
};

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
