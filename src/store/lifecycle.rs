//! A ticket's life after it opens, and what it tells the customer: the `outreach` outbox
//! rows (keyed by their cause, written in the transaction of the change), the lifecycle
//! `booked → en_route → on_site → resolved → closed` (or `cancelled`) with its audit, and
//! the labels an outcome writes (`failures`, `maintenance`) for the next training.

use super::{Store, StoreError, StoreTx, timestamp};
use crate::contract::EpochMicros;

/// A message to a customer (`outreach`, the outbox): written in the transaction of the
/// change that causes it, delivered by the outreach worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    ProactiveNotice,
    BookingProposed,
    BookingConfirmed,
    TechnicianEnRoute,
    Rescheduled,
    IncidentNotice,
    Resolved,
    Cancelled,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::ProactiveNotice => "proactive_notice",
            MessageType::BookingProposed => "booking_proposed",
            MessageType::BookingConfirmed => "booking_confirmed",
            MessageType::TechnicianEnRoute => "technician_en_route",
            MessageType::Rescheduled => "rescheduled",
            MessageType::IncidentNotice => "incident_notice",
            MessageType::Resolved => "resolved",
            MessageType::Cancelled => "cancelled",
        }
    }
}

/// One outbox row to queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Names the cause (`ticket:42:booking:7`): the same cause never queues twice.
    pub idempotency_key: String,
    pub message_type: MessageType,
    /// Safety-critical: not held back by quiet hours.
    pub urgent: bool,
    /// Facts beyond the ticket's own (the slot, the technician's first name).
    pub payload: serde_json::Value,
    /// Event time of the change.
    pub at: EpochMicros,
}

/// How a visit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The fault was there: a `failures` row (`technician_confirmed`) and the repair as a
    /// `maintenance` row — the labels of the next training.
    FaultConfirmed,
    /// Nothing wrong found: a `maintenance` row (`inspected`), and the ticket policy's
    /// cool-down.
    NoFaultFound,
    /// The customer did not want the visit: no label.
    CustomerDeclined,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::FaultConfirmed => "fault_confirmed",
            Outcome::NoFaultFound => "no_fault_found",
            Outcome::CustomerDeclined => "customer_declined",
        }
    }
}

impl std::str::FromStr for Outcome {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "fault_confirmed" => Ok(Outcome::FaultConfirmed),
            "no_fault_found" => Ok(Outcome::NoFaultFound),
            "customer_declined" => Ok(Outcome::CustomerDeclined),
            other => Err(format!(
                "unknown outcome {other:?}: fault_confirmed, no_fault_found or customer_declined"
            )),
        }
    }
}

/// A step of a ticket's life after booking: `booked → en_route → on_site → resolved →
/// closed`, or `cancelled`.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    EnRoute,
    OnSite,
    /// `component`: what was found (required when the ticket's failure mode names no
    /// component, as a silence or a critical event does); `action`: what was done
    /// (`replaced` by default).
    Resolve {
        outcome: Outcome,
        component: Option<String>,
        action: Option<String>,
    },
    Close,
    Cancel,
}

impl Transition {
    /// The status it leads to from `from`, if allowed.
    pub fn target(&self, from: &str) -> Option<&'static str> {
        let allowed: &[&str] = match self {
            Transition::EnRoute => &["booked"],
            Transition::OnSite => &["booked", "en_route"],
            Transition::Resolve {
                outcome: Outcome::CustomerDeclined,
                ..
            } => &["open", "booked", "en_route", "on_site"],
            Transition::Resolve { .. } => &["booked", "en_route", "on_site"],
            Transition::Close => &["resolved"],
            Transition::Cancel => &["open", "booked", "en_route"],
        };
        allowed.contains(&from).then_some(match self {
            Transition::EnRoute => "en_route",
            Transition::OnSite => "on_site",
            Transition::Resolve { .. } => "resolved",
            Transition::Close => "closed",
            Transition::Cancel => "cancelled",
        })
    }
}

/// Components a failure mode names that are not components: a ticket of such a mode
/// confirmed as a fault must say what failed.
pub const NOT_COMPONENTS: &[&str] = &["silence", "critical", "unknown"];

/// What a transition did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transitioned {
    Done {
        from: String,
        to: &'static str,
    },
    /// Not allowed from the ticket's status: nothing written.
    Refused {
        from: String,
    },
    /// `fault_confirmed` on a ticket whose failure mode names no component, without one.
    ComponentRequired,
    NotFound,
}

impl StoreTx {
    /// Queues a message to the customer of the ticket's device (nothing when it has none,
    /// or when the key was queued before); the ticket's facts are added to the payload.
    /// Returns whether a row was queued.
    pub async fn queue_ticket_message(
        &mut self,
        ticket_id: i64,
        message: &Message,
    ) -> Result<bool, StoreError> {
        let queued: Option<i64> = sqlx::query_scalar(
            "insert into outreach (idempotency_key, customer_id, ticket_id, incident_id,
                                   message_type, channel, language, urgent, payload, event_at)
             select $2, c.id, t.id, t.incident_id, $3, c.preferred_channel, c.language, $4,
                    jsonb_build_object(
                        'ticket_id', t.id, 'device', d.external_id, 'kind', d.kind,
                        'model', d.model, 'failure_mode', t.failure_mode,
                        'priority', t.priority, 'top_factors', t.top_factors,
                        'expected_failure_at', t.expected_failure_at, 'due_at', t.due_at,
                        'customer_name', c.name, 'timezone', c.timezone,
                        'slot_start', lower(b.slot), 'slot_end', upper(b.slot),
                        'technician', split_part(tech.name, ' ', 1)) || $5::jsonb,
                    $6
             from tickets t
             join devices d on d.id = t.device_id
             join customers c on c.id = d.customer_id
             -- The visit the message is about: the ticket's booking, the latest if several.
             left join lateral (
                 select b.slot, b.technician_id from bookings b
                 where b.ticket_id = t.id and b.cancelled_at is null
                 order by b.id desc limit 1
             ) b on true
             left join technicians tech on tech.id = b.technician_id
             where t.id = $1
             on conflict (idempotency_key) do nothing
             returning id",
        )
        .bind(ticket_id)
        .bind(&message.idempotency_key)
        .bind(message.message_type.as_str())
        .bind(message.urgent)
        .bind(&message.payload)
        .bind(timestamp(message.at)?)
        .fetch_optional(self.connection())
        .await?;
        Ok(queued.is_some())
    }

    /// Queues a message to a customer about an incident (one per customer, whatever the
    /// number of their devices in it). Returns whether a row was queued.
    pub async fn queue_incident_message(
        &mut self,
        customer_id: i64,
        incident_id: i64,
        message: &Message,
    ) -> Result<bool, StoreError> {
        let queued: Option<i64> = sqlx::query_scalar(
            "insert into outreach (idempotency_key, customer_id, incident_id, message_type,
                                   channel, language, urgent, payload, event_at)
             select $3, c.id, i.id, $4, c.preferred_channel, c.language, $5,
                    jsonb_build_object(
                        'incident_id', i.id, 'failure_mode', i.failure_mode,
                        'customer_name', c.name, 'timezone', c.timezone,
                        'devices', (select jsonb_agg(d.external_id order by d.external_id)
                                    from tickets t join devices d on d.id = t.device_id
                                    where t.incident_id = i.id and d.customer_id = c.id))
                      || $6::jsonb,
                    $7
             from customers c, incidents i
             where c.id = $1 and i.id = $2
             on conflict (idempotency_key) do nothing
             returning id",
        )
        .bind(customer_id)
        .bind(incident_id)
        .bind(&message.idempotency_key)
        .bind(message.message_type.as_str())
        .bind(message.urgent)
        .bind(&message.payload)
        .bind(timestamp(message.at)?)
        .fetch_optional(self.connection())
        .await?;
        Ok(queued.is_some())
    }

    /// Moves a ticket one step of its life, with its audit row, the customer's message
    /// and, on resolution, the labels: `fault_confirmed` writes a `failures` row
    /// (`technician_confirmed`) and a `maintenance` row (the repair), `no_fault_found` a
    /// `maintenance` row (`inspected`). Cancelling, or a customer declining, frees the
    /// booked slot.
    pub async fn transition(
        &mut self,
        ticket_id: i64,
        transition: &Transition,
        at: EpochMicros,
        actor: &str,
        reason: &str,
    ) -> Result<Transitioned, StoreError> {
        let at_time = timestamp(at)?;
        let row: Option<(String, i32, String)> = sqlx::query_as(
            "select status, device_id, failure_mode from tickets where id = $1 for update",
        )
        .bind(ticket_id)
        .fetch_optional(self.connection())
        .await?;
        let Some((from, device_id, failure_mode)) = row else {
            return Ok(Transitioned::NotFound);
        };
        let Some(to) = transition.target(&from) else {
            return Ok(Transitioned::Refused { from });
        };
        let mode_component = failure_mode
            .split_once('/')
            .map_or(failure_mode.as_str(), |(_, c)| c);
        let (outcome, component, action) = match transition {
            Transition::Resolve {
                outcome,
                component,
                action,
            } => {
                let component = match component.as_deref() {
                    Some(c) if !c.trim().is_empty() => c.trim().to_string(),
                    _ if *outcome == Outcome::FaultConfirmed
                        && NOT_COMPONENTS.contains(&mode_component) =>
                    {
                        return Ok(Transitioned::ComponentRequired);
                    }
                    _ => mode_component.to_string(),
                };
                (Some(*outcome), Some(component), action.clone())
            }
            _ => (None, None, None),
        };
        sqlx::query(
            "update tickets set status = $2, outcome = coalesce($3, outcome),
                 outcome_component = coalesce($4, outcome_component),
                 resolved_at = case when $2 = 'resolved' then $5 else resolved_at end,
                 updated_at = now()
             where id = $1",
        )
        .bind(ticket_id)
        .bind(to)
        .bind(outcome.map(Outcome::as_str))
        .bind(&component)
        .bind(at_time)
        .execute(self.connection())
        .await?;
        let frees_slot = to == "cancelled" || outcome == Some(Outcome::CustomerDeclined);
        if frees_slot {
            sqlx::query(
                "update bookings set cancelled_at = $2
                 where ticket_id = $1 and cancelled_at is null",
            )
            .bind(ticket_id)
            .bind(at_time)
            .execute(self.connection())
            .await?;
        }
        // The customer heard of a visit (one was ever proposed): they hear it is off.
        let was_booked: bool = sqlx::query_scalar(
            "select exists (select 1 from bookings where ticket_id = $1 and proposed_at is not null)",
        )
                .bind(ticket_id)
                .fetch_one(self.connection())
                .await?;
        let detail = match (&outcome, &component) {
            (Some(outcome), Some(component)) => serde_json::json!({
                "outcome": outcome.as_str(),
                "component": component,
                "action": action,
            }),
            _ => serde_json::json!({}),
        };
        self.ticket_event_with(ticket_id, at, actor, Some(&from), to, reason, detail)
            .await?;
        // A component that is no component (a silence found harmless) is no label.
        let labelled = component.as_deref().filter(|c| !NOT_COMPONENTS.contains(c));
        if let (Some(outcome), Some(component)) = (outcome, labelled) {
            let action = match outcome {
                Outcome::FaultConfirmed => Some(action.as_deref().unwrap_or("replaced")),
                Outcome::NoFaultFound => Some("inspected"),
                Outcome::CustomerDeclined => None,
            };
            if outcome == Outcome::FaultConfirmed {
                sqlx::query(
                    "insert into failures (time, device_id, component, source, ticket_id)
                     values ($1, $2, $3, 'technician_confirmed', $4)
                     on conflict (device_id, component, time) do nothing",
                )
                .bind(at_time)
                .bind(device_id)
                .bind(component)
                .bind(ticket_id)
                .execute(self.connection())
                .await?;
            }
            if let Some(action) = action {
                sqlx::query(
                    "insert into maintenance (time, device_id, component, action, ticket_id)
                     values ($1, $2, $3, $4, $5)
                     on conflict (device_id, component, time) do nothing",
                )
                .bind(at_time)
                .bind(device_id)
                .bind(component)
                .bind(action)
                .bind(ticket_id)
                .execute(self.connection())
                .await?;
            }
        }
        let message = match (to, outcome) {
            ("en_route", _) => Some(MessageType::TechnicianEnRoute),
            ("resolved", Some(Outcome::CustomerDeclined)) => None,
            ("resolved", _) => Some(MessageType::Resolved),
            ("cancelled", _) if was_booked => Some(MessageType::Cancelled),
            _ => None,
        };
        if let Some(message_type) = message {
            self.queue_ticket_message(
                ticket_id,
                &Message {
                    idempotency_key: format!("ticket:{ticket_id}:{}", message_type.as_str()),
                    message_type,
                    urgent: false,
                    payload: serde_json::json!({
                        "reason": reason,
                        "outcome": outcome.map(|o| o.as_str()),
                    }),
                    at,
                },
            )
            .await?;
        }
        Ok(Transitioned::Done { from, to })
    }
}

impl Store {
    /// [`StoreTx::transition`] in a transaction of its own.
    pub async fn transition(
        &self,
        ticket_id: i64,
        transition: &Transition,
        at: EpochMicros,
        actor: &str,
        reason: &str,
    ) -> Result<Transitioned, StoreError> {
        let mut tx = self.begin().await?;
        let done = tx
            .transition(ticket_id, transition, at, actor, reason)
            .await?;
        tx.commit().await?;
        Ok(done)
    }
}
