//! Event and status payloads: severities, event codes and messages, online and offline.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::payload::{check_size, parse_json, parse_timestamp};
use super::{EpochMicros, RejectReason, Rejection, ValidationLimits};

const MAX_EVENT_CODE_LEN: usize = 64;
const MAX_EVENT_MESSAGE_LEN: usize = 1024;

/// Event codes are 1–64 bytes without NUL (PostgreSQL text cannot hold it).
pub fn is_valid_event_code(code: &str) -> bool {
    (1..=MAX_EVENT_CODE_LEN).contains(&code.len()) && !code.contains('\0')
}

/// Event messages are at most 1024 bytes without NUL.
pub fn is_valid_event_message(text: &str) -> bool {
    text.len() <= MAX_EVENT_MESSAGE_LEN && !text.contains('\0')
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
