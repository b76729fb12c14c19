//! Tickets, their audit trail and bookings (`migrations/0008_dispatch.sql`). A ticket
//! change and its `ticket_events` row commit together: the writes are `impl StoreTx`
//! methods, with a pool version that wraps one transaction. The database is the last word
//! on the two invariants replicas could race on: one open ticket per (device, failure
//! mode) (a partial unique index) and no double booking (an exclusion constraint).

use chrono::{DateTime, Utc};

use super::{Store, StoreError, StoreTx};
use crate::contract::EpochMicros;

/// Times a booking is retried after PostgreSQL broke a deadlock by failing it.
const MAX_DEADLOCK_RETRIES: u32 = 5;
/// First key of the advisory lock a booking takes on its technician (the second).
const BOOKING_LOCK_KEY: i32 = 0x0B00_C1D0;

/// Where a ticket comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketKind {
    Proactive,
    Reactive,
    Incident,
}

impl TicketKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TicketKind::Proactive => "proactive",
            TicketKind::Reactive => "reactive",
            TicketKind::Incident => "incident",
        }
    }
}

/// A signal that opens a ticket, or adds an occurrence to the open one.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketSignal {
    pub kind: TicketKind,
    pub device_id: i32,
    pub failure_mode: String,
    /// Event time of the signal: of the newest of the occurrences it stands for.
    pub at: EpochMicros,
    /// Event time of the oldest of them (`at` for a single signal).
    pub first_at: EpochMicros,
    /// How many occurrences it stands for (a cycle's repeats of one device and mode are
    /// written as one merge).
    pub occurrences: u32,
    pub priority: u8,
    pub risk: Option<f64>,
    pub model_version: Option<String>,
    /// The prediction's top factors, in words.
    pub top_factors: serde_json::Value,
    /// When the failure is expected and the visit due (`dispatch::window`); a merge keeps
    /// the earlier of the ticket's and the signal's.
    pub expected_failure_at: Option<EpochMicros>,
    pub due_at: Option<EpochMicros>,
    /// Who acts (`dispatch`, `api:<key>`, …) and why, for `ticket_events`.
    pub actor: String,
    pub reason: String,
}

/// What a signal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// A new ticket.
    Created { ticket_id: i64 },
    /// An occurrence on the ticket already open; `escalated_from` when it raised the
    /// priority.
    Merged {
        ticket_id: i64,
        escalated_from: Option<u8>,
    },
}

/// A visit to book.
#[derive(Debug, Clone, Copy)]
pub struct BookingRequest<'a> {
    pub ticket_id: i64,
    pub technician_id: i32,
    /// The slot, `[start, end)`.
    pub start: EpochMicros,
    pub end: EpochMicros,
    /// Where the visit goes (a car: its last reported position), kept on the ticket.
    pub site: Option<(f64, f64)>,
    /// Event time of the decision (the audit row's time).
    pub at: EpochMicros,
    pub actor: &'a str,
}

/// What booking a slot did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Booked {
    Booked {
        booking_id: i64,
    },
    /// The technician has an overlapping booking (the exclusion constraint said no).
    SlotTaken,
    /// The ticket is not open (already booked, cancelled, resolved) or does not exist.
    NotBookable,
}

fn timestamp(micros: EpochMicros) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros)
        .ok_or(StoreError::Unsupported("a time outside chrono's range"))
}

impl StoreTx {
    /// Opens a ticket for the signal, or — when one is open for its device and failure
    /// mode — adds the signal to it as an occurrence (count, first/last seen, highest
    /// risk; a more urgent priority escalates it). Either way a `ticket_events` row records
    /// it. The open ticket is locked before it is changed, so an escalation is seen by
    /// exactly one of two racing signals; two racing opens cannot both insert (the partial
    /// unique index), and the one that loses merges instead.
    pub async fn open_or_merge_ticket(
        &mut self,
        signal: &TicketSignal,
    ) -> Result<Opened, StoreError> {
        let at = timestamp(signal.at)?;
        let first_at = timestamp(signal.first_at.min(signal.at))?;
        let occurrences = i32::try_from(signal.occurrences.max(1)).unwrap_or(i32::MAX);
        let expected = signal.expected_failure_at.map(timestamp).transpose()?;
        let due = signal.due_at.map(timestamp).transpose()?;
        let priority = i16::from(signal.priority);
        loop {
            let open: Option<(i64, i16, String)> = sqlx::query_as(
                "select id, priority, status from tickets
                 where device_id = $1 and failure_mode = $2
                   and status in ('open', 'booked', 'en_route', 'on_site')
                 for update",
            )
            .bind(signal.device_id)
            .bind(&signal.failure_mode)
            .fetch_optional(self.connection())
            .await?;
            if let Some((ticket_id, old_priority, status)) = open {
                // The words and the model follow the riskiest signal; the window only
                // ever shortens (the earlier expected failure and due time).
                sqlx::query(
                    "update tickets set
                         occurrences = occurrences + $5,
                         first_seen_at = least(first_seen_at, $6),
                         last_seen_at = greatest(last_seen_at, $2),
                         model_version = case when $3 >= coalesce(highest_risk, 0)
                             then coalesce($7, model_version) else model_version end,
                         top_factors = case when $3 >= coalesce(highest_risk, 0)
                                 and $8::jsonb <> '[]'::jsonb
                             then $8 else top_factors end,
                         highest_risk = greatest(highest_risk, $3),
                         priority = least(priority, $4),
                         expected_failure_at = least(expected_failure_at, $9),
                         due_at = least(due_at, $10),
                         updated_at = now()
                     where id = $1",
                )
                .bind(ticket_id)
                .bind(at)
                .bind(signal.risk)
                .bind(priority)
                .bind(occurrences)
                .bind(first_at)
                .bind(&signal.model_version)
                .bind(&signal.top_factors)
                .bind(expected)
                .bind(due)
                .execute(self.connection())
                .await?;
                let escalated_from = (priority < old_priority).then_some(old_priority as u8);
                let repeats = if occurrences > 1 {
                    format!("{occurrences} occurrences")
                } else {
                    "occurrence".to_string()
                };
                let reason = match escalated_from {
                    Some(old) => format!("escalated from priority {old}: {}", signal.reason),
                    None => format!("{repeats}: {}", signal.reason),
                };
                self.ticket_event(
                    ticket_id,
                    signal.at,
                    &signal.actor,
                    Some(&status),
                    &status,
                    &reason,
                )
                .await?;
                return Ok(Opened::Merged {
                    ticket_id,
                    escalated_from,
                });
            }
            // None open: insert, unless a racing transaction inserted first (then the loop
            // finds and merges into its ticket, waiting for its commit).
            let inserted: Option<i64> = sqlx::query_scalar(
                "insert into tickets (kind, priority, device_id, failure_mode, opened_at,
                                      risk_at_opening, model_version, top_factors,
                                      first_seen_at, last_seen_at, highest_risk,
                                      occurrences, expected_failure_at, due_at)
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $5, $6, $10, $11, $12)
                 on conflict (device_id, failure_mode)
                     where status in ('open', 'booked', 'en_route', 'on_site')
                 do nothing
                 returning id",
            )
            .bind(signal.kind.as_str())
            .bind(priority)
            .bind(signal.device_id)
            .bind(&signal.failure_mode)
            .bind(at)
            .bind(signal.risk)
            .bind(&signal.model_version)
            .bind(&signal.top_factors)
            .bind(first_at)
            .bind(occurrences)
            .bind(expected)
            .bind(due)
            .fetch_optional(self.connection())
            .await?;
            if let Some(ticket_id) = inserted {
                self.ticket_event(
                    ticket_id,
                    signal.at,
                    &signal.actor,
                    None,
                    "open",
                    &signal.reason,
                )
                .await?;
                return Ok(Opened::Created { ticket_id });
            }
        }
    }

    /// Appends one audit row.
    pub async fn ticket_event(
        &mut self,
        ticket_id: i64,
        at: EpochMicros,
        actor: &str,
        from_status: Option<&str>,
        to_status: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.ticket_event_with(
            ticket_id,
            at,
            actor,
            from_status,
            to_status,
            reason,
            serde_json::json!({}),
        )
        .await
    }

    /// Appends one audit row with its details (a booking's slot, an outcome's component).
    #[allow(clippy::too_many_arguments)]
    pub async fn ticket_event_with(
        &mut self,
        ticket_id: i64,
        at: EpochMicros,
        actor: &str,
        from_status: Option<&str>,
        to_status: &str,
        reason: &str,
        detail: serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "insert into ticket_events (ticket_id, at, actor, from_status, to_status, reason,
                                        detail)
             values ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(ticket_id)
        .bind(timestamp(at)?)
        .bind(actor)
        .bind(from_status)
        .bind(to_status)
        .bind(reason)
        .bind(detail)
        .execute(self.connection())
        .await?;
        Ok(())
    }

    /// Books the technician for the ticket over the slot and marks the ticket booked; a
    /// ticket that is not open is `NotBookable`, and nothing is written. A slot overlapping one of the technician's live bookings is refused
    /// by the exclusion constraint: `SlotTaken`, and nothing is written (a savepoint keeps
    /// the caller's transaction usable for the next candidate). Two overlapping inserts at
    /// once can deadlock on the constraint check; the one PostgreSQL fails is retried.
    pub async fn book(&mut self, request: &BookingRequest<'_>) -> Result<Booked, StoreError> {
        let BookingRequest {
            ticket_id,
            technician_id,
            start,
            end,
            site,
            at,
            actor,
        } = *request;
        let (start_at, end_at) = (timestamp(start)?, timestamp(end)?);
        // Only an open ticket is booked, once: locked, so a racing booking or cancellation
        // waits and then sees the new status.
        let status: Option<String> =
            sqlx::query_scalar("select status from tickets where id = $1 for update")
                .bind(ticket_id)
                .fetch_optional(self.connection())
                .await?;
        if status.as_deref() != Some("open") {
            return Ok(Booked::NotBookable);
        }
        let mut deadlocks = 0;
        let booking_id = loop {
            sqlx::query("savepoint book")
                .execute(self.connection())
                .await?;
            // Bookings of one technician take turns, so two overlapping inserts do not
            // deadlock on the constraint check (PostgreSQL would find it only after
            // `deadlock_timeout`, a second); the retry below stays for lock orders that
            // still cycle (two transactions booking two technicians in opposite order).
            let locked = sqlx::query("select pg_advisory_xact_lock($1, $2)")
                .bind(BOOKING_LOCK_KEY)
                .bind(technician_id)
                .execute(self.connection())
                .await;
            let inserted: Result<i64, sqlx::Error> = match locked {
                Err(error) => Err(error),
                Ok(_) => {
                    sqlx::query_scalar(
                        "insert into bookings (ticket_id, technician_id, slot)
                 values ($1, $2, tstzrange($3, $4, '[)')) returning id",
                    )
                    .bind(ticket_id)
                    .bind(technician_id)
                    .bind(start_at)
                    .bind(end_at)
                    .fetch_one(self.connection())
                    .await
                }
            };
            let code = match &inserted {
                Err(sqlx::Error::Database(error)) => error.code().map(|c| c.into_owned()),
                _ => None,
            };
            match (inserted, code.as_deref()) {
                (Ok(id), _) => break id,
                // exclusion_violation: the technician is booked then.
                (Err(_), Some("23P01")) => {
                    sqlx::query("rollback to savepoint book")
                        .execute(self.connection())
                        .await?;
                    return Ok(Booked::SlotTaken);
                }
                // Two transactions inserting overlapping slots at once each wait for the
                // other while checking the constraint; PostgreSQL breaks the cycle by
                // failing one. Its insert is tried again: it then waits for the other's
                // commit and learns whether the slot is taken.
                (Err(_), Some("40P01")) if deadlocks < MAX_DEADLOCK_RETRIES => {
                    deadlocks += 1;
                    sqlx::query("rollback to savepoint book")
                        .execute(self.connection())
                        .await?;
                }
                (Err(error), _) => return Err(error.into()),
            }
        };
        sqlx::query("release savepoint book")
            .execute(self.connection())
            .await?;
        sqlx::query(
            "update tickets set status = 'booked', technician_id = $2,
                 site_latitude = coalesce($3, site_latitude),
                 site_longitude = coalesce($4, site_longitude), updated_at = now()
             where id = $1",
        )
        .bind(ticket_id)
        .bind(technician_id)
        .bind(site.map(|s| s.0))
        .bind(site.map(|s| s.1))
        .execute(self.connection())
        .await?;
        self.ticket_event_with(
            ticket_id,
            at,
            actor,
            Some("open"),
            "booked",
            &format!("technician {technician_id} booked"),
            serde_json::json!({
                "booking_id": booking_id,
                "technician_id": technician_id,
                "slot_start": start_at,
                "slot_end": end_at,
            }),
        )
        .await?;
        Ok(Booked::Booked { booking_id })
    }
}

impl Store {
    /// [`StoreTx::open_or_merge_ticket`] in a transaction of its own.
    pub async fn open_or_merge_ticket(&self, signal: &TicketSignal) -> Result<Opened, StoreError> {
        let mut tx = self.begin().await?;
        let opened = tx.open_or_merge_ticket(signal).await?;
        tx.commit().await?;
        Ok(opened)
    }

    /// [`StoreTx::book`] in a transaction of its own.
    pub async fn book(&self, request: &BookingRequest<'_>) -> Result<Booked, StoreError> {
        let mut tx = self.begin().await?;
        let booked = tx.book(request).await?;
        tx.commit().await?;
        Ok(booked)
    }
}

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
            } => &["open", "booked"],
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
pub const NOT_COMPONENTS: &[&str] = &["silence", "critical"];

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
                        'customer_name', c.name, 'timezone', c.timezone) || $5::jsonb,
                    $6
             from tickets t
             join devices d on d.id = t.device_id
             join customers c on c.id = d.customer_id
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
                "update bookings set cancelled_at = now()
                 where ticket_id = $1 and cancelled_at is null",
            )
            .bind(ticket_id)
            .execute(self.connection())
            .await?;
        }
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
        if let (Some(outcome), Some(component)) = (outcome, &component) {
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
            ("cancelled", _) if from != "open" => Some(MessageType::Cancelled),
            _ => None,
        };
        if let Some(message_type) = message {
            self.queue_ticket_message(
                ticket_id,
                &Message {
                    idempotency_key: format!("ticket:{ticket_id}:{}", message_type.as_str()),
                    message_type,
                    urgent: false,
                    payload: serde_json::json!({ "reason": reason }),
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
