//! The MQTT contract of `DESIGN.md`: topics, payloads and the rules that make a message
//! usable. Pure code: no IO, no clock (the caller passes "now"), so every rule is tested
//! directly and the simulator serialises with the same types the ingester parses.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Microseconds since the Unix epoch: the one time representation of the hot path.
pub type EpochMicros = i64;

/// The three kinds of device topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    Telemetry,
    Events,
    Status,
}

impl TopicKind {
    pub const ALL: [TopicKind; 3] = [TopicKind::Telemetry, TopicKind::Events, TopicKind::Status];

    pub fn as_str(self) -> &'static str {
        match self {
            TopicKind::Telemetry => "telemetry",
            TopicKind::Events => "events",
            TopicKind::Status => "status",
        }
    }
}

/// Why a message could not be used. The string form is stored in `dead_letters.reason`
/// and used as a metric label, so it is part of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum RejectReason {
    #[error("topic is not {{prefix}}/{{device_id}}/{{telemetry|events|status}}")]
    InvalidTopic,
    #[error("payload larger than the configured limit")]
    PayloadTooLarge,
    #[error("payload is not valid UTF-8")]
    InvalidUtf8,
    #[error("payload is not valid JSON")]
    InvalidJson,
    #[error("payload does not have the contract's shape")]
    InvalidPayload,
    #[error("metric value is NaN or infinite")]
    NonFiniteValue,
    #[error("metric name is not [a-z0-9_]{{1,64}}")]
    InvalidMetricName,
    #[error("timestamp further in the future than the allowed clock skew")]
    TimestampInFuture,
    #[error("timestamp older than the retention limit")]
    TimestampTooOld,
    #[error("metric is not in the closed catalogue")]
    UnknownMetric,
    #[error("device is not registered and auto-registration is off")]
    UnknownDevice,
    #[error("the database refused the message's data")]
    StorageRejected,
    #[error("metric value outside the configured range")]
    ValueOutOfRange,
    #[error("too many new devices or metric names per minute")]
    RegistrationLimited,
}

impl RejectReason {
    pub const ALL: [RejectReason; 14] = [
        RejectReason::InvalidTopic,
        RejectReason::PayloadTooLarge,
        RejectReason::InvalidUtf8,
        RejectReason::InvalidJson,
        RejectReason::InvalidPayload,
        RejectReason::NonFiniteValue,
        RejectReason::InvalidMetricName,
        RejectReason::TimestampInFuture,
        RejectReason::TimestampTooOld,
        RejectReason::UnknownMetric,
        RejectReason::UnknownDevice,
        RejectReason::StorageRejected,
        RejectReason::ValueOutOfRange,
        RejectReason::RegistrationLimited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidTopic => "invalid_topic",
            RejectReason::PayloadTooLarge => "payload_too_large",
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::InvalidPayload => "invalid_payload",
            RejectReason::NonFiniteValue => "non_finite_value",
            RejectReason::InvalidMetricName => "invalid_metric_name",
            RejectReason::TimestampInFuture => "timestamp_in_future",
            RejectReason::TimestampTooOld => "timestamp_too_old",
            RejectReason::UnknownMetric => "unknown_metric",
            RejectReason::UnknownDevice => "unknown_device",
            RejectReason::StorageRejected => "storage_rejected",
            RejectReason::ValueOutOfRange => "value_out_of_range",
            RejectReason::RegistrationLimited => "registration_limited",
        }
    }
}

/// A rejection with a human-readable detail ("metric `Temp` at sample 2").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

/// A device topic, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceTopic<'a> {
    pub device_external_id: &'a str,
    pub kind: TopicKind,
}

/// `device_id` is 1–64 characters of `[A-Za-z0-9_.:-]`.
pub fn is_valid_device_external_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// Metric names are 1–64 characters of `[a-z0-9_]`.
pub fn is_valid_metric_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Event codes are 1–64 bytes without NUL (PostgreSQL text cannot hold it).
pub fn is_valid_event_code(code: &str) -> bool {
    (1..=MAX_EVENT_CODE_LEN).contains(&code.len()) && !code.contains('\0')
}

/// Event messages are at most 1024 bytes without NUL.
pub fn is_valid_event_message(text: &str) -> bool {
    text.len() <= MAX_EVENT_MESSAGE_LEN && !text.contains('\0')
}

/// Splits `{prefix}/{device_id}/{kind}`.
pub fn parse_topic<'a>(prefix: &str, topic: &'a str) -> Result<DeviceTopic<'a>, Rejection> {
    let invalid = || Rejection::new(RejectReason::InvalidTopic, format!("topic `{topic}`"));
    let rest = topic
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('/'))
        .ok_or_else(invalid)?;
    let (device_external_id, kind) = rest.split_once('/').ok_or_else(invalid)?;
    if !is_valid_device_external_id(device_external_id) {
        return Err(invalid());
    }
    let kind = match kind {
        "telemetry" => TopicKind::Telemetry,
        "events" => TopicKind::Events,
        "status" => TopicKind::Status,
        _ => return Err(invalid()),
    };
    Ok(DeviceTopic {
        device_external_id,
        kind,
    })
}

/// The topic a device publishes `kind` messages on.
pub fn device_topic(prefix: &str, device_external_id: &str, kind: TopicKind) -> String {
    format!("{prefix}/{device_external_id}/{}", kind.as_str())
}

/// What the ingester accepts, and the clock it judges timestamps against.
#[derive(Debug, Clone, Copy)]
pub struct ValidationLimits {
    pub max_payload_bytes: usize,
    /// How far past `now` a timestamp may be (device clocks drift).
    pub max_future_skew_micros: i64,
    /// How far before `now` a timestamp may be; `None` accepts any age (imports, replays).
    pub max_age_micros: Option<i64>,
    /// Largest absolute metric value accepted.
    pub max_abs_value: f64,
}

/// One sample of one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub time: EpochMicros,
    /// The payload had no `ts`: `time` is the receive time.
    pub time_estimated: bool,
    pub metric: String,
    pub value: f64,
}

/// A parsed telemetry message: every reading it carries, and the device's `seq` if sent.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TelemetryMessage {
    pub readings: Vec<Reading>,
    /// Smallest and largest `seq` of the message's samples, when the device sends one.
    pub seq_range: Option<(u64, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Info,
        Severity::Warning,
        Severity::Error,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }
}

impl std::str::FromStr for Severity {
    type Err = String;

    /// The contract's names, exactly (`warning`, not `Warning` or `warn`).
    fn from_str(text: &str) -> Result<Severity, String> {
        Severity::ALL
            .into_iter()
            .find(|severity| severity.as_str() == text)
            .ok_or_else(|| format!("`{text}` is not one of info, warning, error, critical"))
    }
}

/// A parsed `…/events` message.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceEvent {
    pub time: EpochMicros,
    pub time_estimated: bool,
    pub code: String,
    pub severity: Severity,
    pub message: String,
}

/// A parsed `…/status` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceStatus {
    Online,
    Offline,
}

/// The wire form of an event, for publishers.
#[derive(Debug, Clone, Serialize)]
pub struct EventPayload<'a> {
    pub ts: String,
    pub code: &'a str,
    pub severity: Severity,
    pub message: &'a str,
}

/// Formats epoch microseconds as RFC 3339 with microsecond precision, as publishers send it.
pub fn format_timestamp(time: EpochMicros) -> String {
    micros_to_datetime(time)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true))
        .unwrap_or_else(|| time.to_string())
}

pub fn micros_to_datetime(time: EpochMicros) -> Option<DateTime<Utc>> {
    Utc.timestamp_micros(time).single()
}

const MAX_EVENT_CODE_LEN: usize = 64;
const MAX_EVENT_MESSAGE_LEN: usize = 1024;

fn check_size(payload: &[u8], limits: &ValidationLimits) -> Result<(), Rejection> {
    if payload.len() > limits.max_payload_bytes {
        return Err(Rejection::new(
            RejectReason::PayloadTooLarge,
            format!(
                "{} bytes, limit {}",
                payload.len(),
                limits.max_payload_bytes
            ),
        ));
    }
    Ok(())
}

fn parse_json(payload: &[u8]) -> Result<Value, Rejection> {
    let text = std::str::from_utf8(payload)
        .map_err(|e| Rejection::new(RejectReason::InvalidUtf8, e.to_string()))?;
    serde_json::from_str(text).map_err(|e| Rejection::new(RejectReason::InvalidJson, e.to_string()))
}

/// Reads `ts` (RFC 3339 or integer epoch milliseconds), or the receive time when absent,
/// and checks it against the skew and age limits.
fn parse_timestamp(
    value: Option<&Value>,
    received_at: EpochMicros,
    limits: &ValidationLimits,
    at: &str,
) -> Result<(EpochMicros, bool), Rejection> {
    let bad = |what: String| Rejection::new(RejectReason::InvalidPayload, format!("{at}: {what}"));
    let time = match value {
        None | Some(Value::Null) => return Ok((received_at, true)),
        Some(Value::String(text)) => DateTime::parse_from_rfc3339(text)
            .map_err(|e| bad(format!("`ts` is not RFC 3339 ({e})")))?
            .with_timezone(&Utc)
            .timestamp_micros(),
        Some(Value::Number(number)) => {
            let millis = number
                .as_i64()
                .ok_or_else(|| bad("`ts` is not an integer of epoch milliseconds".into()))?;
            millis
                .checked_mul(1000)
                .ok_or_else(|| bad("`ts` out of range".into()))?
        }
        Some(_) => return Err(bad("`ts` must be a string or an integer".into())),
    };
    // Epoch 0 to year 9999: what RFC 3339 can say, and well inside PostgreSQL's range.
    if !(0..=253_402_300_799_000_000).contains(&time) {
        return Err(bad(format!(
            "`ts` {time} µs is outside 1970-01-01..9999-12-31"
        )));
    }
    if time > received_at.saturating_add(limits.max_future_skew_micros) {
        return Err(Rejection::new(
            RejectReason::TimestampInFuture,
            format!(
                "{at}: ts {} is ahead of the receive time",
                format_timestamp(time)
            ),
        ));
    }
    if let Some(max_age) = limits.max_age_micros
        && time < received_at.saturating_sub(max_age)
    {
        return Err(Rejection::new(
            RejectReason::TimestampTooOld,
            format!(
                "{at}: ts {} is older than the retention limit",
                format_timestamp(time)
            ),
        ));
    }
    Ok((time, false))
}

/// Parses and validates a telemetry payload: one sample object or an array of them.
/// A message is used whole or not at all.
pub fn parse_telemetry(
    payload: &[u8],
    received_at: EpochMicros,
    limits: &ValidationLimits,
) -> Result<TelemetryMessage, Rejection> {
    check_size(payload, limits)?;
    let samples = match parse_json(payload)? {
        Value::Array(samples) => samples,
        sample @ Value::Object(_) => vec![sample],
        _ => {
            return Err(Rejection::new(
                RejectReason::InvalidPayload,
                "expected an object or an array of objects",
            ));
        }
    };
    if samples.is_empty() {
        return Err(Rejection::new(RejectReason::InvalidPayload, "empty array"));
    }
    let mut message = TelemetryMessage::default();
    for (sample_idx, sample) in samples.iter().enumerate() {
        let at = format!("sample {sample_idx}");
        let Value::Object(fields) = sample else {
            return Err(Rejection::new(
                RejectReason::InvalidPayload,
                format!("{at}: not an object"),
            ));
        };
        if let Some(unknown) = fields
            .keys()
            .find(|k| !matches!(k.as_str(), "ts" | "metrics" | "seq"))
        {
            return Err(Rejection::new(
                RejectReason::InvalidPayload,
                format!("{at}: unknown field `{unknown}`"),
            ));
        }
        // Samples without `ts` in one array keep their order instead of collapsing onto one
        // timestamp: sample i is stamped i µs after the receive time.
        let (time, time_estimated) = parse_timestamp(
            fields.get("ts"),
            received_at + sample_idx as EpochMicros,
            limits,
            &at,
        )?;
        match fields.get("seq") {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) if n.as_u64().is_some() => {
                let seq = n.as_u64().unwrap_or_default();
                message.seq_range = Some(match message.seq_range {
                    Some((low, high)) => (low.min(seq), high.max(seq)),
                    None => (seq, seq),
                });
            }
            Some(_) => {
                return Err(Rejection::new(
                    RejectReason::InvalidPayload,
                    format!("{at}: `seq` must be a non-negative integer"),
                ));
            }
        }
        let Some(Value::Object(metrics)) = fields.get("metrics") else {
            return Err(Rejection::new(
                RejectReason::InvalidPayload,
                format!("{at}: `metrics` must be an object"),
            ));
        };
        if metrics.is_empty() {
            return Err(Rejection::new(
                RejectReason::InvalidPayload,
                format!("{at}: `metrics` is empty"),
            ));
        }
        for (name, value) in metrics {
            if !is_valid_metric_name(name) {
                return Err(Rejection::new(
                    RejectReason::InvalidMetricName,
                    format!(
                        "{at}: metric `{}`",
                        name.chars().take(80).collect::<String>()
                    ),
                ));
            }
            let value = match value {
                Value::Number(number) => number.as_f64().ok_or_else(|| {
                    Rejection::new(
                        RejectReason::InvalidPayload,
                        format!("{at}: `{name}` out of range"),
                    )
                })?,
                Value::Bool(flag) => f64::from(u8::from(*flag)),
                // JSON has no NaN or Infinity; devices that print them produce strings or bare
                // words, which the JSON parser already refuses. A string spelling is named here.
                Value::String(text)
                    if matches!(
                        text.to_ascii_lowercase().as_str(),
                        "nan" | "inf" | "-inf" | "infinity" | "-infinity"
                    ) =>
                {
                    return Err(Rejection::new(
                        RejectReason::NonFiniteValue,
                        format!("{at}: `{name}` = {text}"),
                    ));
                }
                _ => {
                    return Err(Rejection::new(
                        RejectReason::InvalidPayload,
                        format!("{at}: `{name}` must be a number or a boolean"),
                    ));
                }
            };
            if !value.is_finite() {
                return Err(Rejection::new(
                    RejectReason::NonFiniteValue,
                    format!("{at}: `{name}`"),
                ));
            }
            if value.abs() > limits.max_abs_value {
                return Err(Rejection::new(
                    RejectReason::ValueOutOfRange,
                    format!(
                        "{at}: `{name}` = {value:e} (limit ±{:e})",
                        limits.max_abs_value
                    ),
                ));
            }
            message.readings.push(Reading {
                time,
                time_estimated,
                metric: name.clone(),
                value,
            });
        }
    }
    Ok(message)
}

/// Parses and validates an event payload.
pub fn parse_event(
    payload: &[u8],
    received_at: EpochMicros,
    limits: &ValidationLimits,
) -> Result<DeviceEvent, Rejection> {
    check_size(payload, limits)?;
    let Value::Object(fields) = parse_json(payload)? else {
        return Err(Rejection::new(
            RejectReason::InvalidPayload,
            "expected an object",
        ));
    };
    let bad = |what: &str| Rejection::new(RejectReason::InvalidPayload, what.to_string());
    let (time, time_estimated) = parse_timestamp(fields.get("ts"), received_at, limits, "event")?;
    let code = match fields.get("code") {
        Some(Value::String(code)) if is_valid_event_code(code) => code.clone(),
        _ => return Err(bad("`code` must be a string of 1-64 characters")),
    };
    let severity = match fields.get("severity") {
        Some(value) => Severity::deserialize(value)
            .map_err(|_| bad("`severity` must be one of info, warning, error, critical"))?,
        None => return Err(bad("`severity` is required")),
    };
    let message = match fields.get("message") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) if is_valid_event_message(text) => text.clone(),
        // PostgreSQL text cannot hold NUL, so it is refused here rather than by the database.
        Some(_) => {
            return Err(bad(
                "`message` must be a string of at most 1024 bytes without NUL",
            ));
        }
    };
    Ok(DeviceEvent {
        time,
        time_estimated,
        code,
        severity,
        message,
    })
}

/// Parses a status payload: `online` / `offline`, bare or as a JSON string.
pub fn parse_status(payload: &[u8], limits: &ValidationLimits) -> Result<DeviceStatus, Rejection> {
    check_size(payload, limits)?;
    let text = std::str::from_utf8(payload)
        .map_err(|e| Rejection::new(RejectReason::InvalidUtf8, e.to_string()))?
        .trim();
    match text.trim_matches('"') {
        "online" => Ok(DeviceStatus::Online),
        "offline" => Ok(DeviceStatus::Offline),
        other => Err(Rejection::new(
            RejectReason::InvalidPayload,
            format!(
                "status must be `online` or `offline`, got `{}`",
                other.chars().take(40).collect::<String>()
            ),
        )),
    }
}

/// Writes one telemetry sample as the contract's JSON object, without allocating a map.
pub fn telemetry_json(time: EpochMicros, seq: Option<u64>, metrics: &[(&str, f64)]) -> String {
    use std::fmt::Write;
    let mut json = String::with_capacity(64 + metrics.len() * 32);
    let _ = write!(json, r#"{{"ts":"{}""#, format_timestamp(time));
    if let Some(seq) = seq {
        let _ = write!(json, r#","seq":{seq}"#);
    }
    json.push_str(r#","metrics":{"#);
    for (metric_idx, (name, value)) in metrics.iter().enumerate() {
        if metric_idx > 0 {
            json.push(',');
        }
        let _ = write!(json, r#""{name}":{value}"#);
    }
    json.push_str("}}");
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: EpochMicros = 1_795_351_200_000_000; // 2026-11-22T10:40:00Z

    fn limits() -> ValidationLimits {
        ValidationLimits {
            max_payload_bytes: 1024,
            max_future_skew_micros: 300_000_000,
            max_age_micros: Some(86_400_000_000 * 30),
            max_abs_value: 1e12,
        }
    }

    fn reject(payload: &str) -> RejectReason {
        parse_telemetry(payload.as_bytes(), NOW, &limits())
            .unwrap_err()
            .reason
    }

    #[test]
    fn topics_follow_the_contract() {
        let topic = parse_topic("devices", "devices/WM-0001/telemetry").unwrap();
        assert_eq!(topic.device_external_id, "WM-0001");
        assert_eq!(topic.kind, TopicKind::Telemetry);
        assert_eq!(
            parse_topic("a/b", "a/b/x.y:z_1/status").unwrap().kind,
            TopicKind::Status
        );
        for bad in [
            "devices/WM-0001/other",
            "devices//telemetry",
            "devices/WM 1/telemetry",
            "devicesX/WM/telemetry",
            "devices/a/b/telemetry",
            "other/WM/telemetry",
        ] {
            assert_eq!(
                parse_topic("devices", bad).unwrap_err().reason,
                RejectReason::InvalidTopic,
                "{bad}"
            );
        }
        let long = format!("devices/{}/events", "a".repeat(65));
        assert!(parse_topic("devices", &long).is_err());
        assert_eq!(
            device_topic("devices", "C-1", TopicKind::Events),
            "devices/C-1/events"
        );
    }

    #[test]
    fn telemetry_accepts_rfc3339_epoch_millis_arrays_and_booleans() {
        let message = parse_telemetry(
            br#"{"ts": "2026-11-22T10:15:00.250Z", "metrics": {"drum_vibration_rms": 0.42, "door_open": true}}"#,
            NOW,
            &limits(),
        )
        .unwrap();
        assert_eq!(message.readings.len(), 2);
        let door = message
            .readings
            .iter()
            .find(|r| r.metric == "door_open")
            .unwrap();
        assert_eq!(door.value, 1.0);
        assert_eq!(format_timestamp(door.time), "2026-11-22T10:15:00.250000Z");
        assert!(!door.time_estimated);

        let message = parse_telemetry(
            br#"[{"ts": 1795351198000, "seq": 7, "metrics": {"a": 1}}, {"ts": 1795351199000, "seq": 8, "metrics": {"a": 2}}]"#,
            NOW,
            &limits(),
        )
        .unwrap();
        assert_eq!(message.readings.len(), 2);
        assert_eq!(message.readings[0].time, 1_795_351_198_000_000);
        assert_eq!(message.seq_range, Some((7, 8)));
    }

    #[test]
    fn missing_ts_uses_receive_time_and_flags_it() {
        let message = parse_telemetry(br#"{"metrics": {"a": 1.5}}"#, NOW, &limits()).unwrap();
        assert_eq!(message.readings[0].time, NOW);
        assert!(message.readings[0].time_estimated);
        // An array without `ts` keeps its samples apart, in order.
        let message = parse_telemetry(
            br#"[{"metrics": {"a": 1}}, {"metrics": {"a": 2}}, {"metrics": {"a": 3}}]"#,
            NOW,
            &limits(),
        )
        .unwrap();
        let times: Vec<_> = message.readings.iter().map(|r| r.time).collect();
        assert_eq!(times, vec![NOW, NOW + 1, NOW + 2]);
    }

    #[test]
    fn values_beyond_the_range_are_refused() {
        assert_eq!(
            reject(r#"{"metrics": {"a": 1e200}}"#),
            RejectReason::ValueOutOfRange
        );
        assert_eq!(
            reject(r#"{"metrics": {"a": -2e12}}"#),
            RejectReason::ValueOutOfRange
        );
        assert!(parse_telemetry(br#"{"metrics": {"a": -1e12}}"#, NOW, &limits()).is_ok());
    }

    #[test]
    fn each_bad_input_has_its_reason() {
        assert_eq!(reject("{not json"), RejectReason::InvalidJson);
        assert_eq!(
            parse_telemetry(&[0xff, 0xfe, b'{'], NOW, &limits())
                .unwrap_err()
                .reason,
            RejectReason::InvalidUtf8
        );
        assert_eq!(
            reject(r#"{"metrics": {"a": "high"}}"#),
            RejectReason::InvalidPayload
        );
        assert_eq!(reject(r#"{"metrics": {}}"#), RejectReason::InvalidPayload);
        assert_eq!(
            reject(r#"{"metrics": [1, 2]}"#),
            RejectReason::InvalidPayload
        );
        assert_eq!(
            reject(r#"{"ts": true, "metrics": {"a": 1}}"#),
            RejectReason::InvalidPayload
        );
        assert_eq!(
            reject(r#"{"ts": 1.5, "metrics": {"a": 1}}"#),
            RejectReason::InvalidPayload
        );
        assert_eq!(
            reject(r#"{"ts": "yesterday", "metrics": {"a": 1}}"#),
            RejectReason::InvalidPayload
        );
        assert_eq!(
            reject(r#"{"metrics": {"a": 1}, "extra": 1}"#),
            RejectReason::InvalidPayload
        );
        assert_eq!(reject("[]"), RejectReason::InvalidPayload);
        assert_eq!(
            reject(r#"{"ts": -5, "metrics": {"a": 1}}"#),
            RejectReason::InvalidPayload
        );
        assert_eq!(reject("42"), RejectReason::InvalidPayload);
        assert_eq!(
            reject(r#"{"metrics": {"a": "NaN"}}"#),
            RejectReason::NonFiniteValue
        );
        assert_eq!(
            reject(r#"{"metrics": {"a": 1e999}}"#),
            RejectReason::InvalidJson
        );
        assert_eq!(
            reject(r#"{"metrics": {"Motor Temp": 1}}"#),
            RejectReason::InvalidMetricName
        );
        assert_eq!(
            reject(r#"{"ts": "2030-01-01T00:00:00Z", "metrics": {"a": 1}}"#),
            RejectReason::TimestampInFuture
        );
        assert_eq!(
            reject(r#"{"ts": "2001-01-01T00:00:00Z", "metrics": {"a": 1}}"#),
            RejectReason::TimestampTooOld
        );
        assert_eq!(
            reject(&format!(
                r#"{{"metrics": {{"a": 1}}, "seq": 1, "x": "{}"}}"#,
                "y".repeat(2000)
            )),
            RejectReason::PayloadTooLarge
        );
        // One bad sample rejects the whole message: a message is used whole or not at all.
        assert_eq!(
            reject(r#"[{"metrics": {"a": 1}}, {"metrics": {"a": null}}]"#),
            RejectReason::InvalidPayload
        );
    }

    #[test]
    fn age_limit_can_be_lifted_for_replays() {
        let mut limits = limits();
        limits.max_age_micros = None;
        assert!(
            parse_telemetry(
                br#"{"ts": "2001-01-01T00:00:00Z", "metrics": {"a": 1}}"#,
                NOW,
                &limits
            )
            .is_ok()
        );
    }

    #[test]
    fn events_and_status() {
        let event = parse_event(
            br#"{"ts": 1795351198000, "code": "E42", "severity": "warning", "message": "door lock retry"}"#,
            NOW,
            &limits(),
        )
        .unwrap();
        assert_eq!(event.code, "E42");
        assert_eq!(event.severity, Severity::Warning);
        // Imports name severities as the payload does, exactly.
        for severity in Severity::ALL {
            assert_eq!(severity.as_str().parse::<Severity>(), Ok(severity));
        }
        assert!("Warning".parse::<Severity>().is_err());
        assert!("fatal".parse::<Severity>().is_err());
        assert_eq!(
            parse_event(br#"{"code": "E42", "severity": "fatal"}"#, NOW, &limits())
                .unwrap_err()
                .reason,
            RejectReason::InvalidPayload
        );
        assert_eq!(
            parse_event(br#"{"severity": "info"}"#, NOW, &limits())
                .unwrap_err()
                .reason,
            RejectReason::InvalidPayload
        );
        assert_eq!(
            parse_status(b"online", &limits()).unwrap(),
            DeviceStatus::Online
        );
        assert_eq!(
            parse_status(b"\"offline\"\n", &limits()).unwrap(),
            DeviceStatus::Offline
        );
        assert_eq!(
            parse_status(b"maybe", &limits()).unwrap_err().reason,
            RejectReason::InvalidPayload
        );
    }

    #[test]
    fn published_payload_round_trips() {
        let metrics = [("motor_temp_c", 61.5), ("drum_vibration_rms", 0.42)];
        let json = telemetry_json(NOW - 1_000_001, Some(3), &metrics);
        let message = parse_telemetry(json.as_bytes(), NOW, &limits()).unwrap();
        assert_eq!(message.readings.len(), 2);
        assert_eq!(message.readings[0].time, NOW - 1_000_001);
        assert_eq!(
            message
                .readings
                .iter()
                .find(|r| r.metric == "drum_vibration_rms")
                .unwrap()
                .value,
            0.42
        );
        assert_eq!(message.seq_range, Some((3, 3)));
    }
}
