//! Turning resolved messages into the rows of one write batch, dead letters included.

use std::collections::HashMap;

use super::Writer;
use super::parse::{Parsed, Pending};
use crate::contract::{DeviceStatus, Rejection};
use crate::ingest::session::Received;
use crate::store::{DeadLetterRow, EventRow, StatusRow, TelemetryColumns, WriteBatch};

impl Writer {
    /// Turns resolved messages into rows. Every id lookup succeeds here (`resolve_ids`
    /// turned the failures into dead letters).
    pub(super) fn build(&mut self, batch: &[Pending]) -> WriteBatch {
        let mut write_batch = WriteBatch::default();
        let mut telemetry = TelemetryColumns::default();
        let mut statuses: HashMap<i32, StatusRow> = HashMap::new();
        let mut last_seen: HashMap<i32, i64> = HashMap::new();
        for pending in batch {
            let device_id = pending.parsed.device().and_then(|d| self.devices.get(d));
            match (&pending.parsed, device_id) {
                (Parsed::Telemetry { message, .. }, Some(device_id)) => {
                    let mut newest = i64::MIN;
                    let redelivered = pending.received.publish.dup;
                    for reading in &message.readings {
                        let Some(metric_id) = self.metrics.get(&reading.metric) else {
                            continue;
                        };
                        let columns = if redelivered && reading.time_estimated {
                            &mut write_batch.unstamped_redelivered
                        } else {
                            &mut telemetry
                        };
                        columns.push(
                            reading.time,
                            device_id,
                            metric_id,
                            reading.value,
                            reading.time_estimated,
                        );
                        newest = newest.max(reading.time);
                    }
                    let seen = last_seen.entry(device_id).or_insert(newest);
                    *seen = (*seen).max(newest);
                    if let (Some((low, high)), Some(seq)) = (message.seq_range, self.seq.as_mut()) {
                        let last = seq.get(&device_id).unwrap_or(high);
                        if low > last.saturating_add(1) {
                            self.deps.metrics.ingest.seq_gaps.inc_by(low - last - 1);
                        }
                        seq.insert(device_id, last.max(high));
                    }
                }
                (Parsed::Event { event, .. }, Some(device_id)) => {
                    write_batch.events.push(EventRow {
                        time: event.time,
                        device_id,
                        code: event.code.clone(),
                        severity: event.severity.as_str(),
                        unstamped_redelivery: pending.received.publish.dup && event.time_estimated,
                        message: event.message.clone(),
                        time_estimated: event.time_estimated,
                    });
                    let seen = last_seen.entry(device_id).or_insert(event.time);
                    *seen = (*seen).max(event.time);
                }
                (Parsed::Status { status, .. }, Some(device_id)) => {
                    // The last status of a device in the batch wins (arrival order).
                    statuses.insert(
                        device_id,
                        StatusRow {
                            device_id,
                            online: *status == DeviceStatus::Online,
                            changed_at: pending.received.received_at,
                            // A retained status is the broker replaying the last one it
                            // kept (on every subscribe): not news from the device.
                            retained: pending.received.publish.retain,
                        },
                    );
                }
                (Parsed::Rejected { rejection, .. }, _) => {
                    write_batch.dead_letters.push(dead_letter(
                        &pending.received,
                        rejection,
                        self.limits.max_payload_bytes,
                    ));
                }
                (Parsed::Ignored { .. }, _) => {}
                (_, None) => debug_assert!(false, "resolve_ids leaves no unresolved device"),
            }
        }
        write_batch.telemetry = telemetry;
        write_batch.last_seen_resolution_millis =
            i64::try_from(self.settings.ingest.last_seen_resolution.as_millis())
                .unwrap_or(i64::MAX);
        write_batch.redelivery_window_secs =
            i64::try_from(self.settings.ingest.redelivery_window.as_secs()).unwrap_or(i64::MAX);
        write_batch.statuses = statuses.into_values().collect();
        write_batch.last_seen = last_seen.into_iter().collect();
        write_batch
    }
}

fn dead_letter(
    received: &Received,
    rejection: &Rejection,
    max_payload_bytes: usize,
) -> DeadLetterRow {
    let payload = &received.publish.payload;
    let truncated = payload.len() > max_payload_bytes;
    let kept = if truncated {
        &payload[..max_payload_bytes]
    } else {
        &payload[..]
    };
    if tracing::enabled!(tracing::Level::DEBUG) {
        tracing::debug!(topic = %received.publish.topic, reason = rejection.reason.as_str(), detail = %rejection.detail, "message dead-lettered");
    }
    DeadLetterRow {
        received_at: received.received_at,
        // PostgreSQL text cannot hold NUL; the raw bytes keep the original.
        topic: received.publish.topic.replace('\0', "\u{FFFD}"),
        payload: kept.to_vec(),
        truncated,
        reason: rejection.reason.as_str(),
        detail: rejection.detail.replace('\0', "\u{FFFD}"),
    }
}
