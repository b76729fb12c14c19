//! What the contract makes of a message: parsed by the poller, resolved, written and
//! settled by the writer.

use rumqttc::Publish;

use crate::contract::{
    self, DeviceEvent, DeviceStatus, RejectReason, Rejection, SkippedFields, TelemetryMessage,
    TopicKind, ValidationLimits,
};
use crate::ingest::session::Received;

/// What one parsed reading occupies (time, value, flag and its metric name).
const PARSED_READING_BYTES: usize = 96;

/// A message after parsing, before ids are resolved.
#[derive(Debug)]
pub(in crate::ingest) enum Parsed {
    Telemetry {
        device: String,
        message: TelemetryMessage,
    },
    Event {
        device: String,
        event: DeviceEvent,
    },
    Status {
        device: String,
        status: DeviceStatus,
    },
    Rejected {
        kind: Option<TopicKind>,
        rejection: Rejection,
    },
    /// Nothing to write, only to acknowledge in order (a Sparkplug B message whose
    /// metrics are all skipped, a stale death certificate).
    Ignored {
        skipped: SkippedFields,
    },
}

impl Parsed {
    pub(super) fn device(&self) -> Option<&str> {
        match self {
            Parsed::Telemetry { device, .. }
            | Parsed::Event { device, .. }
            | Parsed::Status { device, .. } => Some(device),
            Parsed::Rejected { .. } | Parsed::Ignored { .. } => None,
        }
    }

    fn topic_kind(&self) -> Option<TopicKind> {
        match self {
            Parsed::Telemetry { .. } => Some(TopicKind::Telemetry),
            Parsed::Event { .. } => Some(TopicKind::Events),
            Parsed::Status { .. } => Some(TopicKind::Status),
            Parsed::Rejected { kind, .. } => *kind,
            Parsed::Ignored { .. } => None,
        }
    }

    pub(super) fn kind_label(&self) -> &'static str {
        self.topic_kind().map_or("unknown", TopicKind::as_str)
    }

    pub(super) fn reject(&mut self, reason: RejectReason, detail: String) {
        *self = Parsed::Rejected {
            kind: self.topic_kind(),
            rejection: Rejection::new(reason, detail),
        };
    }
}

/// A message and what the contract made of it. The poller parses (so that parsing and the
/// writer's work run on two cores); the writer resolves, writes and settles.
pub(in crate::ingest) struct Pending {
    pub(super) received: Received,
    pub(super) parsed: Parsed,
}

impl Pending {
    /// Parses a message and charges its parsed form to its cost (`PARSED_READING_BYTES`
    /// per reading beyond the raw bytes).
    pub(in crate::ingest) fn parse(
        received: Received,
        prefix: &str,
        limits: &ValidationLimits,
    ) -> Pending {
        let parsed = parse(prefix, &received.publish, received.received_at, limits);
        Pending::parsed(received, parsed)
    }

    /// A message already parsed (by [`Pending::parse`], or a Sparkplug B message by the
    /// session's host state), charged for its parsed readings.
    pub(in crate::ingest) fn parsed(mut received: Received, parsed: Parsed) -> Pending {
        if let Parsed::Telemetry { message, .. } = &parsed {
            received.cost += PARSED_READING_BYTES * message.readings.len();
        }
        Pending { received, parsed }
    }

    /// What it is charged against `ingest.max_pending_bytes`.
    pub(in crate::ingest) fn cost(&self) -> usize {
        self.received.cost
    }
}

/// Parses one message against the contract. Pure: the tests of the rules live in
/// `contract`; this only routes by topic.
fn parse(prefix: &str, publish: &Publish, received_at: i64, limits: &ValidationLimits) -> Parsed {
    let topic = match contract::parse_topic(prefix, &publish.topic) {
        Ok(topic) => topic,
        Err(rejection) => {
            return Parsed::Rejected {
                kind: None,
                rejection,
            };
        }
    };
    let device = topic.device_external_id.to_string();
    let payload = &publish.payload;
    let result = match topic.kind {
        TopicKind::Telemetry => contract::parse_telemetry(payload, received_at, limits)
            .map(|message| Parsed::Telemetry { device, message }),
        TopicKind::Events => contract::parse_event(payload, received_at, limits)
            .map(|event| Parsed::Event { device, event }),
        TopicKind::Status => {
            contract::parse_status(payload, limits).map(|status| Parsed::Status { device, status })
        }
    };
    result.unwrap_or_else(|rejection| Parsed::Rejected {
        kind: Some(topic.kind),
        rejection,
    })
}
