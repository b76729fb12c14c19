//! What the fuzz targets check: whatever the bytes, each parser of the MQTT contract
//! answers with a value or a rejection (a panic is a crash libFuzzer reports), and what it
//! accepts obeys every rule of the contract. The same rules as `contract::proptests`, on the
//! inputs libFuzzer finds.
//!
//! The contract is pure code over serde_json, chrono and prost, so it is compiled here from
//! its source rather than through the forewarn crate, whose dependency tree (polars, sqlx,
//! linfa, …) would have to be built again with sanitizers and coverage instrumentation.

#[allow(dead_code, unused_imports)]
#[path = "../../src/contract/mod.rs"]
pub mod contract;

use contract::sparkplug;
use contract::{
    DeviceStatus, EpochMicros, RejectReason, Rejection, ValidationLimits, device_topic,
    is_valid_device_external_id, is_valid_event_code, is_valid_event_message, is_valid_metric_name,
    parse_event, parse_status, parse_telemetry, parse_topic,
};
use prost::Message;

/// The receive time of every input (2026-11-22T10:40:00Z): the parsers take no clock.
pub const NOW: EpochMicros = 1_795_351_200_000_000;
const SKEW: i64 = 300_000_000;
const MAX_AGE: i64 = 400 * 86_400_000_000;
const MAX_ABS: f64 = 1e12;

/// ingest's defaults.
pub fn limits() -> ValidationLimits {
    ValidationLimits {
        max_payload_bytes: 64 * 1024,
        max_future_skew_micros: SKEW,
        max_age_micros: Some(MAX_AGE),
        max_abs_value: MAX_ABS,
    }
}

fn check_rejection(rejection: &Rejection, allowed: &[RejectReason]) {
    assert!(allowed.contains(&rejection.reason), "{rejection:?}");
    assert!(!rejection.detail.is_empty(), "{rejection:?}");
}

/// Telemetry, event and status parsers on one payload, and the topic parsers on it as text.
pub fn check_json_payload(data: &[u8]) {
    let limits = limits();
    let fits = data.len() <= limits.max_payload_bytes;
    // The parsers' JSON is serde_json's: a payload is refused as JSON exactly when
    // serde_json cannot read it.
    let is_json = serde_json::from_slice::<serde_json::Value>(data).is_ok();
    match parse_telemetry(data, NOW, &limits) {
        Ok(message) => {
            assert!(fits && is_json && !message.readings.is_empty());
            let last_sample = NOW + data.len() as i64;
            for reading in &message.readings {
                assert!(is_valid_metric_name(&reading.metric), "{reading:?}");
                assert!(reading.value.is_finite() && reading.value.abs() <= MAX_ABS);
                assert!((NOW - MAX_AGE..=last_sample + SKEW).contains(&reading.time));
                assert!(!reading.time_estimated || (NOW..last_sample).contains(&reading.time));
            }
            assert!(message.seq_range.is_none_or(|(low, high)| low <= high));
        }
        Err(rejection) => {
            check_rejection(
                &rejection,
                &RejectReason::TELEMETRY_PARSE,
            );
            let as_json = matches!(
                rejection.reason,
                RejectReason::InvalidUtf8 | RejectReason::InvalidJson
            );
            assert_eq!(!fits, rejection.reason == RejectReason::PayloadTooLarge);
            assert!(!fits || as_json != is_json, "{rejection:?}");
        }
    }
    match parse_event(data, NOW, &limits) {
        Ok(event) => {
            assert!(is_valid_event_code(&event.code) && is_valid_event_message(&event.message));
            assert!((NOW - MAX_AGE..=NOW + SKEW).contains(&event.time));
        }
        Err(rejection) => check_rejection(
            &rejection,
            &RejectReason::EVENT_PARSE,
        ),
    }
    match parse_status(data, &limits) {
        Ok(status) => {
            let word = match status {
                DeviceStatus::Online => "online",
                DeviceStatus::Offline => "offline",
            };
            let text = std::str::from_utf8(data).unwrap();
            assert_eq!(text.trim().trim_matches('"'), word);
        }
        Err(rejection) => check_rejection(
            &rejection,
            &RejectReason::STATUS_PARSE,
        ),
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Whatever parses as a topic is exactly the topic its parts make.
    match parse_topic("devices", text) {
        Ok(topic) => assert_eq!(
            device_topic("devices", topic.device_external_id, topic.kind),
            text
        ),
        Err(rejection) => check_rejection(&rejection, &[RejectReason::InvalidTopic]),
    }
    match sparkplug::parse_topic(text) {
        Ok(topic) => {
            assert!(is_valid_device_external_id(&topic.device_id()));
            let device = topic.device.map(|d| format!("/{d}")).unwrap_or_default();
            let kind = topic.message_type.as_str();
            let rebuilt = format!("spBv1.0/{}/{kind}/{}{device}", topic.group, topic.edge);
            assert_eq!(rebuilt, text);
        }
        Err(rejection) => check_rejection(&rejection, &[RejectReason::InvalidTopic]),
    }
}

/// A Sparkplug B payload, each metric read as a host application reads a birth's.
pub fn check_sparkplug_payload(data: &[u8]) {
    let limits = limits();
    let payload = match sparkplug::decode(data, &limits) {
        Ok(payload) => payload,
        Err(rejection) => {
            let reasons = [RejectReason::PayloadTooLarge, RejectReason::InvalidPayload];
            return check_rejection(&rejection, &reasons);
        }
    };
    // What was read is a payload again, the same once written.
    let written = payload.encode_to_vec();
    let again = sparkplug::decode(&written, &limits).expect("a written payload decodes");
    assert_eq!(again.encode_to_vec(), written);
    for metric in &payload.metrics {
        let Some(name) = metric.name.as_deref() else {
            continue;
        };
        let Ok(name) = sparkplug::metric_name(name) else {
            continue;
        };
        assert!(is_valid_metric_name(&name), "{name}");
        let datatype = metric.datatype.map_or(0, |d| d as i32);
        if let Ok(value) = sparkplug::metric_value(metric, datatype, &name, &limits) {
            assert!(value.is_finite() && value.abs() <= MAX_ABS);
        }
        match sparkplug::metric_time(metric, &payload, NOW, &limits, "metric") {
            Ok((time, true)) => assert_eq!(time, NOW),
            Ok((time, false)) => assert!((NOW - MAX_AGE..=NOW + SKEW).contains(&time)),
            Err(rejection) => check_rejection(
                &rejection,
                &[
                    RejectReason::InvalidPayload,
                    RejectReason::TimestampInFuture,
                    RejectReason::TimestampTooOld,
                ],
            ),
        }
    }
}
