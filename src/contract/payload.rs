//! The rules every payload shares: its size, its encoding (UTF-8 JSON) and its timestamp.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{EpochMicros, RejectReason, Rejection, ValidationLimits, format_timestamp};

/// The last microsecond of year 9999 (9999-12-31T23:59:59.999999Z): timestamps run from
/// epoch 0 to there, what RFC 3339 can say, and well inside PostgreSQL's range.
pub(super) const LATEST_TIMESTAMP: EpochMicros = 253_402_300_799_999_999;

pub(super) fn check_size(payload: &[u8], limits: &ValidationLimits) -> Result<(), Rejection> {
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

pub(super) fn parse_json(payload: &[u8]) -> Result<Value, Rejection> {
    let text = std::str::from_utf8(payload)
        .map_err(|e| Rejection::new(RejectReason::InvalidUtf8, e.to_string()))?;
    serde_json::from_str(text).map_err(|e| Rejection::new(RejectReason::InvalidJson, e.to_string()))
}

/// Reads `ts` (RFC 3339 or integer epoch milliseconds), or the receive time when absent,
/// and checks it against the skew and age limits.
pub(super) fn parse_timestamp(
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
    if !(0..=LATEST_TIMESTAMP).contains(&time) {
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
