//! Device topics: `{prefix}/{device_id}/{telemetry|events|status}`.

use super::{RejectReason, Rejection};

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
