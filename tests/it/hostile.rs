//! The hostile corpus (`tests/hostile/`, whose README names each file's expected outcome):
//! every payload through the contract's parsers, then all of them through a real ingest in
//! front of Mosquitto — each a dead letter with its reason and raw bytes, or exactly its
//! readings, nothing else stored, and a good message after them still stored — and the
//! payloads too large to check in (10 MB strings, keys and nesting), made here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use forewarn::config::IngestConfig;
use forewarn::contract::{self, DeviceStatus, RejectReason, ValidationLimits, sparkplug};
use prost::Message;
use sqlx::Row;

use crate::support::*;

/// `ingest.max_payload_bytes` of the pipeline here, and of the parsers' limits.
const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// A rejection's detail stays short whatever the payload (prost's nested errors are the
/// longest: a context per level).
const MAX_DETAIL_BYTES: usize = 4096;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile")
}

/// The folder a file is in: the topic it is published on.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Telemetry,
    Events,
    Status,
    /// An NBIRTH of its own edge node.
    Sparkplug,
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Dead(RejectReason),
    /// `(metric, value bits)` of every reading, sorted.
    Readings(Vec<(String, u64)>),
    Event {
        code: String,
        severity: String,
    },
    Status(DeviceStatus),
    /// A Sparkplug birth with no usable metric: no reading, no dead letter.
    Ignored,
}

struct Case {
    file: String,
    kind: Kind,
    payload: Vec<u8>,
    expected: Outcome,
}

fn expected_outcome(kind: Kind, expected: &str) -> Outcome {
    if expected == "ignored" {
        return Outcome::Ignored;
    }
    let Some(stored) = expected.strip_prefix("stored ") else {
        let reason = RejectReason::ALL
            .into_iter()
            .find(|r| r.as_str() == expected);
        return Outcome::Dead(reason.unwrap_or_else(|| panic!("no reason `{expected}`")));
    };
    match kind {
        Kind::Status => Outcome::Status(match stored {
            "online" => DeviceStatus::Online,
            "offline" => DeviceStatus::Offline,
            other => panic!("no status `{other}`"),
        }),
        Kind::Events => {
            let (code, severity) = stored.split_once(' ').unwrap();
            Outcome::Event {
                code: code.into(),
                severity: severity.into(),
            }
        }
        Kind::Telemetry | Kind::Sparkplug => {
            let mut readings = Vec::new();
            for reading in stored.split(' ') {
                let (name, value) = reading.split_once('=').unwrap();
                let (value, n) = value.split_once('×').unwrap_or((value, "1"));
                let value: f64 = value.parse().unwrap();
                let n: usize = n.parse().unwrap();
                readings.extend(std::iter::repeat_n((name.to_string(), value.to_bits()), n));
            }
            readings.sort();
            Outcome::Readings(readings)
        }
    }
}

/// Every file of the corpus with its README row; each file has one, each row its file.
fn corpus() -> Vec<Case> {
    let readme = std::fs::read_to_string(corpus_dir().join("README.md")).unwrap();
    let mut cases = Vec::new();
    for line in readme.lines().filter(|line| line.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(|cell| cell.trim()).collect();
        let file = cells[1].trim_matches('`').to_string();
        let kind = match file.split('/').next().unwrap() {
            "telemetry" => Kind::Telemetry,
            "events" => Kind::Events,
            "status" => Kind::Status,
            "sparkplug" => Kind::Sparkplug,
            other => panic!("{file}: no folder `{other}`"),
        };
        let payload = std::fs::read(corpus_dir().join(&file))
            .unwrap_or_else(|error| panic!("{file} has a row but no file: {error}"));
        let expected = expected_outcome(kind, cells[2].trim_matches('`'));
        cases.push(Case {
            file,
            kind,
            payload,
            expected,
        });
    }
    let mut files = BTreeSet::new();
    for folder in ["telemetry", "events", "status", "sparkplug"] {
        for entry in std::fs::read_dir(corpus_dir().join(folder)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            files.insert(format!("{folder}/{name}"));
        }
    }
    let rows: BTreeSet<String> = cases.iter().map(|case| case.file.clone()).collect();
    assert_eq!(rows.len(), cases.len(), "a file has two rows");
    assert_eq!(files, rows, "every file has a README row, every row a file");
    cases
}

/// The pipeline's limits: the defaults, with this test's payload limit.
fn limits() -> ValidationLimits {
    let ingest = IngestConfig::default();
    ValidationLimits {
        max_payload_bytes: MAX_PAYLOAD_BYTES,
        max_future_skew_micros: contract::duration_micros(ingest.max_future_skew),
        max_age_micros: ingest.max_age.map(contract::duration_micros),
        max_abs_value: ingest.max_abs_value,
    }
}

fn rejected(rejection: contract::Rejection) -> Outcome {
    assert!(
        !rejection.detail.is_empty() && rejection.detail.len() <= MAX_DETAIL_BYTES,
        "{rejection:?}"
    );
    Outcome::Dead(rejection.reason)
}

/// What the contract's parsers make of a payload (for an NBIRTH, what the host does with
/// its metrics: protocol metrics left out, unusable ones skipped, a bad time refusing all).
fn parse(kind: Kind, payload: &[u8], limits: &ValidationLimits, now: i64) -> Outcome {
    match kind {
        Kind::Telemetry => match contract::parse_telemetry(payload, now, limits) {
            Ok(message) => {
                let n_readings = message.readings.len() as i64;
                let mut readings = Vec::new();
                for reading in message.readings {
                    // No corpus file has `ts`: sample i is stamped i µs after receipt.
                    assert!(
                        reading.time_estimated && (now..now + n_readings).contains(&reading.time)
                    );
                    readings.push((reading.metric, reading.value.to_bits()));
                }
                readings.sort();
                Outcome::Readings(readings)
            }
            Err(rejection) => rejected(rejection),
        },
        Kind::Events => match contract::parse_event(payload, now, limits) {
            Ok(event) => {
                let sent: serde_json::Value = serde_json::from_slice(payload).unwrap();
                assert_eq!(event.message, sent["message"].as_str().unwrap_or_default());
                assert_eq!((event.time, event.time_estimated), (now, true));
                Outcome::Event {
                    code: event.code,
                    severity: event.severity.as_str().into(),
                }
            }
            Err(rejection) => rejected(rejection),
        },
        Kind::Status => match contract::parse_status(payload, limits) {
            Ok(status) => Outcome::Status(status),
            Err(rejection) => rejected(rejection),
        },
        Kind::Sparkplug => {
            let birth = match sparkplug::decode(payload, limits) {
                Ok(birth) => birth,
                Err(rejection) => return rejected(rejection),
            };
            let mut readings = Vec::new();
            for metric in &birth.metrics {
                let raw_name = metric.name.as_deref().unwrap_or_default();
                if sparkplug::is_protocol_metric(raw_name) {
                    continue;
                }
                let datatype = metric.datatype.unwrap_or_default() as i32;
                let Ok((name, value)) = sparkplug::metric_name(raw_name).and_then(|name| {
                    let value = sparkplug::metric_value(metric, datatype, &name, limits)?;
                    Ok((name, value))
                }) else {
                    continue;
                };
                if let Err(rejection) = sparkplug::metric_time(metric, &birth, now, limits, "") {
                    return rejected(rejection);
                }
                readings.push((name, value.to_bits()));
            }
            readings.sort();
            match readings.is_empty() {
                true => Outcome::Ignored,
                false => Outcome::Readings(readings),
            }
        }
    }
}

#[test]
fn every_hostile_payload_gets_its_documented_outcome_from_the_parsers() {
    let cases = corpus();
    assert!(cases.len() >= 90, "{} cases", cases.len());
    let now = chrono::Utc::now().timestamp_micros();
    let wrong: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            let outcome = parse(case.kind, &case.payload, &limits(), now);
            (outcome != case.expected).then(|| format!("{}: {outcome:?}", case.file))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "not as the README says:\n{}",
        wrong.join("\n")
    );
}

/// Too large to check in: 10 MB strings, keys, arrays and nesting. Above the payload limit
/// each is refused by its size before it is parsed; under a 16 MiB limit each is read, or
/// refused for its content with a short detail.
#[test]
fn ten_megabyte_payloads_are_refused_by_size_or_read_with_a_bounded_detail() {
    const TEN_MB: usize = 10 * 1024 * 1024;
    let now = chrono::Utc::now().timestamp_micros();
    let roomy = ValidationLimits {
        max_payload_bytes: 16 * 1024 * 1024,
        ..limits()
    };
    let text = "x".repeat(TEN_MB);
    let n_samples = TEN_MB / 20;
    let samples = vec![r#"{"metrics":{"a":1}}"#; n_samples].join(",");
    let readings = |n: usize| Outcome::Readings(vec![("a".into(), 1f64.to_bits()); n]);
    let cases: Vec<(Kind, Vec<u8>, Outcome)> = vec![
        (
            Kind::Telemetry,
            format!(r#"{{"metrics": {{"a": 1}}, "fw": "{text}"}}"#).into_bytes(),
            readings(1),
        ),
        (
            Kind::Telemetry,
            format!(r#"{{"metrics": {{"a": "{text}"}}}}"#).into_bytes(),
            Outcome::Dead(RejectReason::InvalidPayload),
        ),
        (
            Kind::Telemetry,
            format!(r#"{{"{text}": 1}}"#).into_bytes(),
            Outcome::Dead(RejectReason::InvalidMetricName),
        ),
        (
            Kind::Telemetry,
            format!("[{samples}]").into_bytes(),
            readings(n_samples),
        ),
        (
            Kind::Telemetry,
            "[".repeat(TEN_MB).into_bytes(),
            Outcome::Dead(RejectReason::InvalidJson),
        ),
        (
            Kind::Events,
            format!(r#"{{"code": "E1", "severity": "info", "message": "{text}"}}"#).into_bytes(),
            Outcome::Dead(RejectReason::InvalidPayload),
        ),
        (
            Kind::Status,
            text.clone().into_bytes(),
            Outcome::Dead(RejectReason::InvalidPayload),
        ),
        (
            Kind::Sparkplug,
            vec![0xff; TEN_MB],
            Outcome::Dead(RejectReason::InvalidPayload),
        ),
        (
            Kind::Sparkplug,
            sparkplug::Payload {
                metrics: vec![sparkplug::Metric {
                    name: Some("Firmware".into()),
                    datatype: Some(sparkplug::DataType::String as u32),
                    value: Some(sparkplug::MetricValue::StringValue(text.clone())),
                    ..sparkplug::Metric::default()
                }],
                ..sparkplug::Payload::default()
            }
            .encode_to_vec(),
            Outcome::Ignored,
        ),
    ];
    for (case_idx, (kind, payload, expected)) in cases.iter().enumerate() {
        assert!(payload.len() > TEN_MB - 1024, "case {case_idx}");
        assert_eq!(
            parse(*kind, payload, &limits(), now),
            Outcome::Dead(RejectReason::PayloadTooLarge),
            "case {case_idx}"
        );
        assert_eq!(
            &parse(*kind, payload, &roomy, now),
            expected,
            "case {case_idx}"
        );
    }
    // The detail names a 10 MB key by its first 80 characters.
    let key = format!(r#"{{"{text}": 1}}"#);
    let rejection = contract::parse_telemetry(key.as_bytes(), now, &roomy).unwrap_err();
    assert!(rejection.detail.len() < 200, "{}", rejection.detail.len());
}

/// The topic a case is published on: its own device, or its own edge node.
fn topic(kind: Kind, prefix: &str, group: &str, case_idx: usize) -> String {
    let device = format!("H{case_idx:03}");
    match kind {
        Kind::Telemetry => format!("{prefix}/{device}/telemetry"),
        Kind::Events => format!("{prefix}/{device}/events"),
        Kind::Status => format!("{prefix}/{device}/status"),
        Kind::Sparkplug => format!("spBv1.0/{group}/NBIRTH/{device}"),
    }
}

/// The device whose rows a case makes.
fn device(kind: Kind, group: &str, case_idx: usize) -> String {
    match kind {
        Kind::Sparkplug => format!("{group}:H{case_idx:03}"),
        _ => format!("H{case_idx:03}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_payload_is_dead_lettered_or_stored_as_documented_and_ingest_goes_on() {
    init_logs();
    let cases = corpus();
    let db = TestDb::new().await;
    let broker = TestBroker::start(true).await;
    let prefix = unique("hostile");
    let group = unique("hostile");
    let mut settings = ingest_settings(&broker, &prefix);
    settings.ingest.max_payload_bytes = MAX_PAYLOAD_BYTES;
    settings.ingest.sparkplug = true;
    let ingest = RunningIngest::start(settings, db.store.clone()).await;
    let mut publisher = Publisher::connect(&broker).await;
    for (case_idx, case) in cases.iter().enumerate() {
        let topic = topic(case.kind, &prefix, &group, case_idx);
        publisher.publish(&topic, case.payload.clone()).await;
    }
    // Over `ingest.max_payload_bytes`, under the broker's and ingest's packet limit (1 MiB).
    let oversized = format!(
        r#"{{"metrics": {{"a": 1}}, "fw": "{}"}}"#,
        "x".repeat(1_000_000)
    );
    let oversized_topic = format!("{prefix}/OVERSIZED/telemetry");
    publisher.publish(&oversized_topic, oversized.clone()).await;
    let good_after = r#"{"metrics": {"motor_temp_c": 21.5}}"#;
    publisher
        .publish(&format!("{prefix}/GOOD-AFTER/telemetry"), good_after)
        .await;
    publisher.flush().await;

    let pool = db.query().await;
    let good_rows = "select count(*) from telemetry t join devices d on d.id = t.device_id \
                     where d.external_id = 'GOOD-AFTER' and t.value = 21.5";
    wait_for_count(&pool, good_rows, 1).await;
    // Batches commit two at a time, so the good message's may commit before the hostile
    // ones': wait until every expected row is there (or 30 s), then compare case by case.
    let n_dead = cases
        .iter()
        .filter(|case| matches!(case.expected, Outcome::Dead(_)))
        .count();
    let n_expected_readings: usize = cases
        .iter()
        .map(|case| match &case.expected {
            Outcome::Readings(readings) => readings.len(),
            _ => 0,
        })
        .sum();
    let status_devices: Vec<String> = (cases.iter().enumerate())
        .filter(|(_, case)| matches!(case.expected, Outcome::Status(_)))
        .map(|(case_idx, case)| device(case.kind, &group, case_idx))
        .collect();
    let settled = [
        ("select count(*) from dead_letters", n_dead + 1),
        ("select count(*) from telemetry", n_expected_readings + 1),
        (
            "select count(*) from device_events",
            (cases.iter())
                .filter(|case| matches!(case.expected, Outcome::Event { .. }))
                .count(),
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut n_settled = 0;
        for (sql, expected) in settled {
            n_settled += usize::from(count(&pool, sql).await >= expected as i64);
        }
        let n_statuses: i64 = sqlx::query_scalar(
            "select count(*) from devices where external_id = any($1) and online is not null",
        )
        .bind(&status_devices)
        .fetch_one(&pool)
        .await
        .unwrap();
        if n_settled == settled.len() && n_statuses == status_devices.len() as i64
            || Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Dead letters: one per refused message, with its reason and its raw bytes.
    let mut dead: BTreeMap<String, (String, String, Vec<u8>, bool)> = BTreeMap::new();
    for row in sqlx::query("select topic, reason, detail, payload, truncated from dead_letters")
        .fetch_all(&pool)
        .await
        .unwrap()
    {
        dead.insert(row.get(0), (row.get(1), row.get(2), row.get(3), row.get(4)));
    }

    // Readings, events and statuses, by device.
    let mut readings: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for row in sqlx::query(
        "select d.external_id, m.name, t.value from telemetry t
         join devices d on d.id = t.device_id join metrics m on m.id = t.metric_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    {
        let value: f64 = row.get(2);
        readings
            .entry(row.get(0))
            .or_default()
            .push((row.get(1), value.to_bits()));
    }
    readings.values_mut().for_each(|values| values.sort());
    let events: BTreeMap<String, (String, String, String)> = sqlx::query(
        "select d.external_id, e.code, e.severity, e.message from device_events e
         join devices d on d.id = e.device_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .map(|row| (row.get(0), (row.get(1), row.get(2), row.get(3))))
    .collect();
    let statuses: BTreeMap<String, Option<bool>> =
        sqlx::query("select external_id, online from devices")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();

    let mut wrong = Vec::new();
    let (mut n_readings, mut n_events) = (0, 0);
    for (case_idx, case) in cases.iter().enumerate() {
        let topic = topic(case.kind, &prefix, &group, case_idx);
        let device = device(case.kind, &group, case_idx);
        let stored = readings.get(&device).cloned().unwrap_or_default();
        let outcome = match (&case.expected, dead.get(&topic)) {
            (_, Some((reason, detail, payload, truncated))) => {
                if detail.is_empty() || payload != &case.payload || *truncated {
                    wrong.push(format!("{}: detail `{detail}`, bytes not kept", case.file));
                }
                let reason = RejectReason::ALL.into_iter().find(|r| r.as_str() == reason);
                Outcome::Dead(reason.unwrap())
            }
            (Outcome::Event { .. }, None) if events.contains_key(&device) => {
                n_events += 1;
                let (code, severity, message) = events[&device].clone();
                let sent: serde_json::Value = serde_json::from_slice(&case.payload).unwrap();
                if message != sent["message"].as_str().unwrap_or_default() {
                    wrong.push(format!("{}: message `{message}`", case.file));
                }
                Outcome::Event { code, severity }
            }
            // A device with no status yet (`online` null) falls through to a mismatch.
            (Outcome::Status(_), None) if statuses.get(&device).is_some_and(Option::is_some) => {
                Outcome::Status(match statuses[&device] {
                    Some(true) => DeviceStatus::Online,
                    _ => DeviceStatus::Offline,
                })
            }
            (Outcome::Ignored, None) if stored.is_empty() => Outcome::Ignored,
            (_, None) => Outcome::Readings(stored.clone()),
        };
        n_readings += stored.len();
        if outcome != case.expected {
            wrong.push(format!("{} ({topic}): {outcome:?}", case.file));
        }
    }
    assert!(
        wrong.is_empty(),
        "not as the README says:\n{}",
        wrong.join("\n")
    );
    // Nothing else was refused or stored: the hostile messages' rows and the good one's.
    assert_eq!(dead.len(), n_dead + 1, "{:?}", dead.keys());
    assert_eq!(
        count(&pool, "select count(*) from dead_letters").await,
        n_dead as i64 + 1
    );
    let (reason, _, kept, truncated) = &dead[&oversized_topic];
    assert_eq!(reason, "payload_too_large");
    assert!(*truncated && kept[..] == oversized.as_bytes()[..MAX_PAYLOAD_BYTES]);
    assert_eq!(
        count(&pool, "select count(*) from telemetry").await,
        n_readings as i64 + 1
    );
    assert_eq!(events.len(), n_events);
    // A detail's NUL (a metric name, a status) is kept as U+FFFD: PostgreSQL text has no NUL.
    for file in [
        "telemetry/control-chars-escaped-in-metric-names.json",
        "status/nul-inside.txt",
    ] {
        let case_idx = cases.iter().position(|case| case.file == file).unwrap();
        let (_, detail, _, _) = &dead[&topic(cases[case_idx].kind, &prefix, &group, case_idx)];
        assert!(detail.contains('\u{FFFD}'), "{file}: {detail}");
    }

    // Every dead letter counted under its reason.
    let mut per_reason: BTreeMap<&str, usize> = BTreeMap::from([("payload_too_large", 1)]);
    for case in &cases {
        if let Outcome::Dead(reason) = case.expected {
            *per_reason.entry(reason.as_str()).or_default() += 1;
        }
    }
    let expected_lines: Vec<String> = per_reason
        .iter()
        .map(|(reason, n)| format!("forewarn_ingest_dead_letters_total{{reason=\"{reason}\"}} {n}"))
        .collect();
    wait_until("dead letters counted", Duration::from_secs(10), || async {
        let rendered = ingest.metrics.render();
        expected_lines.iter().all(|line| rendered.contains(line))
    })
    .await;
    // Ingest ends cleanly: no task panicked.
    ingest.stop().await;
}
