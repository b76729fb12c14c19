use std::path::Path;

use super::read::parse_time_text;
use super::*;
use crate::contract::Severity;

#[test]
fn csv_with_a_header_maps_columns() {
    let directory = std::env::temp_dir().join(format!("forewarn-import-{}", std::process::id()));
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
    let directory = std::env::temp_dir().join(format!("forewarn-parquet-{}", std::process::id()));
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
    let directory = std::env::temp_dir().join(format!("forewarn-events-{}", std::process::id()));
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
