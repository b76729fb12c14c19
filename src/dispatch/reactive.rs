//! Reactive tickets: a customer's call, a critical device event, a device gone silent.
//! Each opens a ticket at once or — one being open for the device and failure mode —
//! adds an occurrence to it. A signal read twice (a crash, a second replica) acts once:
//! it is recorded in `dispatch_handled` in the ticket's transaction.

use super::{DispatchError, Dispatcher, PassReport};
use crate::contract::EpochMicros;
use crate::store::{
    CriticalEvent, Opened, Store, StoreError, TicketKind, TicketSignal, Transition,
};

/// Critical events are read again this far (event time) behind the newest seen: events
/// of a device that was offline arrive late (those handled are skipped in the query).
const EVENT_LATENESS_MICROS: EpochMicros = 86_400_000_000;
/// Events and silent devices read per query.
const REACTIVE_BATCH: i64 = 2_000;

/// A customer's call (`POST /api/v1/tickets`).
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerCall {
    pub device_id: i32,
    /// `kind/component`, or `kind/unknown` when the customer cannot say.
    pub failure_mode: String,
    pub at: EpochMicros,
    pub priority: u8,
    /// Who took the call (`api:<key>`), for the audit.
    pub actor: String,
    /// What the customer said.
    pub note: String,
}

/// Opens a reactive ticket for a customer's call, or adds it to the device's open ticket
/// of that failure mode.
pub async fn customer_call(store: &Store, call: &CustomerCall) -> Result<Opened, StoreError> {
    store
        .open_or_merge_ticket(&TicketSignal {
            kind: TicketKind::Reactive,
            device_id: call.device_id,
            failure_mode: call.failure_mode.clone(),
            at: call.at,
            first_at: call.at,
            occurrences: 1,
            priority: call.priority.clamp(1, 4),
            risk: None,
            model_version: None,
            top_factors: serde_json::json!([]),
            expected_failure_at: None,
            due_at: None,
            actor: call.actor.clone(),
            reason: format!("customer called: {}", call.note),
        })
        .await
}

impl Dispatcher {
    /// The failure mode a critical event means: configured for its code, else a
    /// component of the kind its message names, else `<kind>/critical`.
    fn critical_mode(&self, event: &CriticalEvent) -> String {
        if let Some(component) = self.config.critical_codes.get(&event.code) {
            return format!("{}/{component}", event.kind);
        }
        let message = event.message.to_lowercase();
        self.modes
            .components_of(&event.kind)
            .into_iter()
            .find(|c| message.contains(c.as_str()) || message.contains(&c.replace('_', " ")))
            .map_or_else(
                || format!("{}/critical", event.kind),
                |c| format!("{}/{c}", event.kind),
            )
    }

    /// Critical device events not handled yet: a reactive ticket each. Read from a day
    /// (event time) behind the newest seen, so a device that was offline and sends its
    /// buffered events late is still heard; the mark never runs more than an hour ahead of
    /// the fleet's clock (one device with its clock in the future hides nobody's events).
    pub(super) async fn critical_events(
        &mut self,
        clock: Option<EpochMicros>,
        report: &mut PassReport,
    ) -> Result<(), DispatchError> {
        let (_, previous) = self.store.dispatch_progress().await?;
        let since = previous.map(|m| m.saturating_sub(EVENT_LATENESS_MICROS));
        let mut after: Option<(EpochMicros, i32, String)> = None;
        let mut newest = None;
        loop {
            let events = self
                .store
                .critical_events(since, after.clone(), REACTIVE_BATCH)
                .await?;
            let Some(last) = events.last() else {
                break;
            };
            after = Some((last.time, last.device_id, last.code.clone()));
            newest = newest.max(Some(last.time));
            for event in &events {
                let mut tx = self.store.begin().await?;
                if !tx
                    .mark_handled("critical_event", event.device_id, event.time, &event.code)
                    .await?
                {
                    continue;
                }
                let signal = TicketSignal {
                    kind: TicketKind::Reactive,
                    device_id: event.device_id,
                    failure_mode: self.critical_mode(event),
                    at: event.time,
                    first_at: event.time,
                    occurrences: 1,
                    priority: self.config.reactive_priority,
                    risk: None,
                    model_version: None,
                    top_factors: serde_json::json!([]),
                    expected_failure_at: None,
                    due_at: None,
                    actor: self.actor.clone(),
                    reason: format!("critical event {}: {}", event.code, event.message),
                };
                tx.open_or_merge_ticket(&signal).await?;
                tx.commit().await?;
                report.critical_events += 1;
            }
            if (events.len() as i64) < REACTIVE_BATCH {
                break;
            }
        }
        let cap = clock.map(|c| c.saturating_add(3_600_000_000));
        let mark = match (newest, cap) {
            (Some(newest), Some(cap)) => Some(newest.min(cap)),
            (newest, _) => newest,
        };
        if mark.is_some() {
            self.store.set_dispatch_progress(None, mark).await?;
        }
        // What can no longer be read again need not be remembered: `dispatch_handled`
        // stays the size of a day of events and the current silences.
        let before = mark
            .or(previous)
            .map(|m| m.saturating_sub(2 * EVENT_LATENESS_MICROS));
        self.store.prune_handled(before).await?;
        Ok(())
    }

    /// Devices marked stale (their telemetry stopped): a silence ticket each, opened at
    /// `clock` (the settle time counts from when silence was seen), first seen when the
    /// device went quiet. Triage decides whether they are a surge.
    pub(super) async fn silent_devices(
        &mut self,
        clock: EpochMicros,
        report: &mut PassReport,
    ) -> Result<(), DispatchError> {
        // A device that reports again ends its silence: its ticket, not booked yet, goes.
        let mut tx = self.store.begin().await?;
        for ticket_id in tx.returned_silences().await? {
            tx.transition(
                ticket_id,
                &Transition::Cancel,
                clock,
                &self.actor,
                "telemetry returned",
            )
            .await?;
            report.cancelled += 1;
        }
        tx.commit().await?;
        loop {
            let silent = self.store.silent_devices(REACTIVE_BATCH).await?;
            if silent.is_empty() {
                break;
            }
            let mut tx = self.store.begin().await?;
            for device in &silent {
                if !tx
                    .mark_handled("silence", device.device_id, device.stale_since, "")
                    .await?
                {
                    continue;
                }
                let hours = (clock - device.stale_since) as f64 / 3.6e9;
                let signal = TicketSignal {
                    kind: TicketKind::Reactive,
                    device_id: device.device_id,
                    failure_mode: format!("{}/silence", device.kind),
                    at: clock.max(device.stale_since),
                    first_at: device.stale_since,
                    occurrences: 1,
                    priority: self.config.reactive_priority,
                    risk: None,
                    model_version: None,
                    top_factors: serde_json::json!([]),
                    expected_failure_at: None,
                    due_at: None,
                    actor: self.actor.clone(),
                    reason: format!("no telemetry for {hours:.1} h"),
                };
                tx.open_or_merge_ticket(&signal).await?;
                report.silent_devices += 1;
            }
            tx.commit().await?;
            if (silent.len() as i64) < REACTIVE_BATCH {
                break;
            }
        }
        Ok(())
    }
}
