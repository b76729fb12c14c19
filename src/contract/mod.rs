//! The MQTT contract of `DESIGN.md`: topics, payloads and the rules that make a message
//! usable. Pure code: no IO, no clock (the caller passes "now"), so every rule is tested
//! directly and the simulator serialises with the same types the ingester parses.

mod event;
mod payload;
pub mod sparkplug;
mod sparkplug_proto;
mod telemetry;
mod topic;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

pub use event::{
    DeviceEvent, DeviceStatus, EventPayload, Severity, is_valid_event_code, is_valid_event_message,
    parse_event, parse_status,
};
pub use telemetry::{
    Reading, SkipReason, SkippedFields, TelemetryMessage, is_valid_metric_name, parse_telemetry,
    snake_case, telemetry_json,
};
pub use topic::{DeviceTopic, TopicKind, device_topic, is_valid_device_external_id, parse_topic};

/// Microseconds since the Unix epoch: the one time representation of the hot path.
pub type EpochMicros = i64;

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
    #[error(
        "Sparkplug B data from an edge node or device whose birth certificate was not seen (a rebirth was requested)"
    )]
    SparkplugNotBorn,
}

impl RejectReason {
    pub const ALL: [RejectReason; 15] = [
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
        RejectReason::SparkplugNotBorn,
    ];

    /// The reasons `parse_telemetry` may give (the property tests and the fuzzer hold it
    /// to them).
    pub const TELEMETRY_PARSE: [RejectReason; 9] = [
        RejectReason::PayloadTooLarge,
        RejectReason::InvalidUtf8,
        RejectReason::InvalidJson,
        RejectReason::InvalidPayload,
        RejectReason::NonFiniteValue,
        RejectReason::InvalidMetricName,
        RejectReason::TimestampInFuture,
        RejectReason::TimestampTooOld,
        RejectReason::ValueOutOfRange,
    ];

    /// The reasons `parse_event` may give.
    pub const EVENT_PARSE: [RejectReason; 6] = [
        RejectReason::PayloadTooLarge,
        RejectReason::InvalidUtf8,
        RejectReason::InvalidJson,
        RejectReason::InvalidPayload,
        RejectReason::TimestampInFuture,
        RejectReason::TimestampTooOld,
    ];

    /// The reasons `parse_status` may give.
    pub const STATUS_PARSE: [RejectReason; 3] = [
        RejectReason::PayloadTooLarge,
        RejectReason::InvalidUtf8,
        RejectReason::InvalidPayload,
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
            RejectReason::SparkplugNotBorn => "sparkplug_not_born",
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

/// Formats epoch microseconds as RFC 3339 with microsecond precision, as publishers send it.
pub fn format_timestamp(time: EpochMicros) -> String {
    micros_to_datetime(time)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true))
        .unwrap_or_else(|| time.to_string())
}

/// A duration in microseconds, saturating (a duration past 292,000 years is `i64::MAX`).
pub fn duration_micros(duration: std::time::Duration) -> EpochMicros {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

pub fn micros_to_datetime(time: EpochMicros) -> Option<DateTime<Utc>> {
    Utc.timestamp_micros(time).single()
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
