//! Property tests of the contract's parsers (proptest). Whatever the bytes, a parser answers
//! with a value or a rejection with its reason, never a panic, and whatever it accepts obeys
//! every rule; what a device may send is read back exactly, in each payload form; each limit
//! refuses exactly what lies beyond it; nesting of any depth is refused or read without deep
//! recursion. Here: the shared rules and generators; `telemetry` holds the JSON payloads'
//! properties, `sparkplug` the protobuf payloads' and the topics'. The checked-in hostile
//! corpus, through the parsers and a real ingest pipeline: `tests/it/hostile.rs`.

mod sparkplug;
mod telemetry;

use std::collections::BTreeMap;

use chrono::{FixedOffset, SecondsFormat, TimeZone};
use proptest::prelude::*;
use prost::Message;
use serde_json::{Value, json};

use super::*;

const NOW: EpochMicros = 1_795_351_200_000_000; // 2026-11-22T10:40:00Z
const SKEW: i64 = 300_000_000;
const MAX_AGE: i64 = 30 * 86_400_000_000;
const MAX_ABS: f64 = 1e12;

fn limits() -> ValidationLimits {
    ValidationLimits {
        max_payload_bytes: 1 << 20,
        max_future_skew_micros: SKEW,
        max_age_micros: Some(MAX_AGE),
        max_abs_value: MAX_ABS,
    }
}

/// What a reading is, bit for bit, in the order readings are compared (a JSON object's keys
/// have no order).
type Exact = (EpochMicros, String, u64, bool);

fn exact(readings: &[Reading]) -> Vec<Exact> {
    let mut exact: Vec<Exact> = readings
        .iter()
        .map(|r| {
            (
                r.time,
                r.metric.clone(),
                r.value.to_bits(),
                r.time_estimated,
            )
        })
        .collect();
    exact.sort();
    exact
}

/// An answer's rejection, when there is one, names one of `allowed` and says what was wrong.
fn check_rejection<T>(
    result: &Result<T, Rejection>,
    allowed: &[RejectReason],
) -> Result<(), TestCaseError> {
    if let Err(rejection) = result {
        prop_assert!(allowed.contains(&rejection.reason), "{rejection:?}");
        prop_assert!(!rejection.detail.is_empty(), "{rejection:?}");
    }
    Ok(())
}

/// Every parser on one payload: an answer each, and every accepted message within the rules.
fn check_every_parser(payload: &[u8]) -> Result<(), TestCaseError> {
    let limits = limits();
    let telemetry = parse_telemetry(payload, NOW, &limits);
    check_rejection(&telemetry, &RejectReason::TELEMETRY_PARSE)?;
    if let Ok(message) = &telemetry {
        prop_assert!(!message.readings.is_empty());
        for reading in &message.readings {
            prop_assert!(is_valid_metric_name(&reading.metric), "{reading:?}");
            prop_assert!(reading.value.is_finite() && reading.value.abs() <= MAX_ABS);
            // Sample i without `ts` is stamped i µs after the receive time.
            let last_sample = NOW + payload.len() as i64;
            prop_assert!((NOW - MAX_AGE..=last_sample + SKEW).contains(&reading.time));
            prop_assert!(!reading.time_estimated || (NOW..last_sample).contains(&reading.time));
        }
        prop_assert!(message.seq_range.is_none_or(|(low, high)| low <= high));
    }
    let event = parse_event(payload, NOW, &limits);
    check_rejection(&event, &RejectReason::EVENT_PARSE)?;
    if let Ok(event) = &event {
        prop_assert!(is_valid_event_code(&event.code) && is_valid_event_message(&event.message));
        prop_assert!((NOW - MAX_AGE..=NOW + SKEW).contains(&event.time));
    }
    let status = parse_status(payload, &limits);
    check_rejection(&status, &RejectReason::STATUS_PARSE)?;
    if let Ok(status) = status {
        let word = match status {
            DeviceStatus::Online => "online",
            DeviceStatus::Offline => "offline",
        };
        let text = std::str::from_utf8(payload).unwrap_or_default();
        prop_assert_eq!(text.trim().trim_matches('"'), word);
    }
    let decoded = super::sparkplug::decode(payload, &limits);
    check_rejection(&decoded, &[RejectReason::InvalidPayload])?;
    if let Ok(decoded) = decoded {
        // What was read is a payload again, the same once written.
        let written = decoded.encode_to_vec();
        let again = super::sparkplug::decode(&written, &limits).expect("a written payload decodes");
        prop_assert_eq!(again.encode_to_vec(), written);
    }
    Ok(())
}

/// Any JSON value: the contract's keys and values mixed with others, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        prop::sample::select(vec!["ts", "seq", "metrics", "values", "code", "severity"])
            .prop_map(str::to_string),
        "[a-zA-Z0-9 _./é\\x00\\x07-]{0,12}",
    ]
    .boxed();
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Non-finite numbers become null: JSON has no spelling for them.
        any::<f64>().prop_map(Value::from),
        (NOW / 1000 - 100_000..NOW / 1000 + 100_000).prop_map(Value::from),
        prop::sample::select(vec![
            "NaN",
            "-Infinity",
            "inf",
            "warning",
            "2026-11-22T10:15:00Z"
        ])
        .prop_map(Value::from),
        ".{0,16}".prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// Bytes of every kind: anything, JSON's alphabet, JSON values, and a valid payload broken.
fn any_payload() -> impl Strategy<Value = Vec<u8>> {
    let valid = prop::collection::vec(sample(), 1..4).prop_map(|samples| payload(&samples, true));
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        "[\\[\\]{}\",:0-9a-z.eE+ \\\\-]{0,128}".prop_map(String::into_bytes),
        json_value().prop_map(|value| serde_json::to_vec(&value).unwrap()),
        (
            valid,
            any::<prop::sample::Index>(),
            any::<u8>(),
            any::<bool>()
        )
            .prop_map(|(mut bytes, at, byte, cut)| {
                let at = at.index(bytes.len());
                match cut {
                    true => bytes.truncate(at),
                    false => bytes[at] = byte,
                }
                bytes
            }),
    ]
}

#[derive(Debug, Clone, Copy)]
enum Form {
    Own,
    Values,
    Flat,
}

#[derive(Debug, Clone, Copy)]
enum Stamp {
    Absent,
    Millis(i64),
    Rfc3339 {
        time: EpochMicros,
        offset_minutes: i32,
    },
}

#[derive(Debug, Clone, Copy)]
enum Number {
    Float(f64),
    Integer(i64),
    Boolean(bool),
}

impl Number {
    fn json(self) -> Value {
        match self {
            Number::Float(value) => json!(value),
            Number::Integer(value) => json!(value),
            Number::Boolean(value) => json!(value),
        }
    }

    fn value(self) -> f64 {
        match self {
            Number::Float(value) => value,
            Number::Integer(value) => value as f64,
            Number::Boolean(value) => f64::from(u8::from(value)),
        }
    }
}

/// One sample: its keys as sent, each with the catalogue name it should be read as.
#[derive(Debug, Clone)]
struct Sample {
    form: Form,
    stamp: Stamp,
    seq: Option<u64>,
    metrics: BTreeMap<String, (String, Number)>,
}

fn number() -> impl Strategy<Value = Number> {
    prop_oneof![
        // Every finite double within the limit, subnormals and -0.0 included.
        any::<u64>()
            .prop_map(f64::from_bits)
            .prop_filter("finite, within the limit", |v| v.is_finite()
                && v.abs() <= MAX_ABS)
            .prop_map(Number::Float),
        prop::sample::select(vec![0.0, -0.0, 5e-324, MAX_ABS, -MAX_ABS, 0.1, 1.0 / 3.0])
            .prop_map(Number::Float),
        (-1_000_000_000_000i64..=1_000_000_000_000).prop_map(Number::Integer),
        any::<bool>().prop_map(Number::Boolean),
    ]
}

/// A key as devices send it (`motorTemp`, `Motor Temp`, `motor-temp`) and its catalogue name.
fn device_key() -> impl Strategy<Value = (String, String)> {
    (
        prop::collection::vec("[a-z][a-z0-9]{0,5}", 1..4),
        prop::sample::select(vec!["_", "-", ".", " ", "/", "camel"]),
    )
        .prop_map(|(words, separator)| {
            // In camel case a word of one letter would join the next capital as an
            // acronym (`aBC` is `a_bc`), so those words are joined by `_` instead.
            let camel = separator == "camel" && words[1..].iter().all(|word| word.len() > 1);
            let key = match separator {
                _ if camel => words
                    .iter()
                    .enumerate()
                    .map(|(word_idx, word)| match word_idx {
                        0 => word.clone(),
                        _ => word[..1].to_uppercase() + &word[1..],
                    })
                    .collect(),
                "camel" => words.join("_"),
                separator => words.join(separator),
            };
            (key, words.join("_"))
        })
        .prop_filter("not a key of the forms", |(key, name)| {
            ![key, name]
                .iter()
                .any(|k| ["ts", "seq", "metrics", "values"].contains(&k.as_str()))
        })
}

fn stamp() -> impl Strategy<Value = Stamp> {
    prop_oneof![
        Just(Stamp::Absent),
        ((NOW - MAX_AGE) / 1000..=(NOW + SKEW) / 1000).prop_map(Stamp::Millis),
        (NOW - MAX_AGE..=NOW + SKEW, -1439..=1439).prop_map(|(time, offset_minutes)| {
            Stamp::Rfc3339 {
                time,
                offset_minutes,
            }
        }),
    ]
}

fn sample() -> impl Strategy<Value = Sample> {
    let own = prop::collection::btree_map("[a-z0-9_]{1,64}", number(), 1..8).prop_map(|metrics| {
        metrics
            .into_iter()
            .map(|(name, number)| (name.clone(), (name, number)))
            .collect()
    });
    let device = || {
        prop::collection::btree_map(device_key(), number(), 1..8).prop_map(|metrics| {
            metrics
                .into_iter()
                .map(|((key, name), number)| (key, (name, number)))
                .collect()
        })
    };
    prop_oneof![
        (own, stamp(), any::<Option<u64>>()).prop_map(|(metrics, stamp, seq)| Sample {
            form: Form::Own,
            stamp,
            seq,
            metrics,
        }),
        (device(), stamp()).prop_map(|(metrics, stamp)| Sample {
            form: Form::Values,
            stamp,
            seq: None,
            metrics,
        }),
        (device(), stamp(), any::<Option<u64>>()).prop_map(|(metrics, stamp, seq)| Sample {
            form: Form::Flat,
            stamp,
            seq,
            metrics,
        }),
    ]
}

fn sample_json(sample: &Sample) -> Value {
    let metrics: serde_json::Map<String, Value> = sample
        .metrics
        .iter()
        .map(|(key, (_, number))| (key.clone(), number.json()))
        .collect();
    let mut fields = match sample.form {
        Form::Own => serde_json::Map::from_iter([("metrics".to_string(), metrics.into())]),
        Form::Values => serde_json::Map::from_iter([("values".to_string(), metrics.into())]),
        Form::Flat => metrics,
    };
    match sample.stamp {
        Stamp::Absent => {}
        Stamp::Millis(millis) => {
            fields.insert("ts".into(), json!(millis));
        }
        Stamp::Rfc3339 {
            time,
            offset_minutes,
        } => {
            let offset = FixedOffset::east_opt(offset_minutes * 60).unwrap();
            let text = offset
                .timestamp_micros(time)
                .unwrap()
                .to_rfc3339_opts(SecondsFormat::AutoSi, offset_minutes == 0);
            fields.insert("ts".into(), json!(text));
        }
    }
    if let Some(seq) = sample.seq {
        fields.insert("seq".into(), json!(seq));
    }
    Value::Object(fields)
}

/// The samples as one payload: an array, or a lone sample's object.
fn payload(samples: &[Sample], as_array: bool) -> Vec<u8> {
    let value = match samples {
        [sample] if !as_array => sample_json(sample),
        samples => Value::Array(samples.iter().map(sample_json).collect()),
    };
    serde_json::to_vec(&value).unwrap()
}

fn expected_readings(samples: &[Sample]) -> Vec<Exact> {
    let mut exact = Vec::new();
    for (sample_idx, sample) in samples.iter().enumerate() {
        let (time, estimated) = match sample.stamp {
            Stamp::Absent => (NOW + sample_idx as i64, true),
            Stamp::Millis(millis) => (millis * 1000, false),
            Stamp::Rfc3339 { time, .. } => (time, false),
        };
        for (name, number) in sample.metrics.values() {
            exact.push((time, name.clone(), number.value().to_bits(), estimated));
        }
    }
    exact.sort();
    exact
}
