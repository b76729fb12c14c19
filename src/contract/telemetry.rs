//! Telemetry payloads: parsing and validating what devices send, and writing it for
//! publishers.

use serde_json::Value;

use super::payload::{check_size, parse_json, parse_timestamp};
use super::{EpochMicros, RejectReason, Rejection, ValidationLimits, format_timestamp};

/// Metric names are 1–64 characters of `[a-z0-9_]`.
pub fn is_valid_metric_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
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
