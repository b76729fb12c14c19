//! Tickets, their audit trail and bookings (`migrations/0008_dispatch.sql`). A ticket
//! change and its `ticket_events` row commit together: the writes are `impl StoreTx`
//! methods, with a pool version that wraps one transaction. The database is the last word
//! on the two invariants replicas could race on: one open ticket per (device, failure
//! mode) (a partial unique index) and no double booking (an exclusion constraint).

use chrono::{DateTime, Utc};

use super::{Store, StoreError, StoreTx, micros, timestamp};
use crate::contract::EpochMicros;

/// Times a booking is retried after PostgreSQL broke a deadlock by failing it.
const MAX_DEADLOCK_RETRIES: u32 = 5;
/// First key of the advisory lock a booking takes on its technician (the second).
pub(super) const BOOKING_LOCK_KEY: i32 = 0x0B00_C1D0;

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

impl Opened {
    /// The ticket, new or merged into.
    pub fn ticket_id(&self) -> i64 {
        match self {
            Opened::Created { ticket_id } | Opened::Merged { ticket_id, .. } => *ticket_id,
        }
    }
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
    /// Held until then (event time) before its customer is told, while the plan may move
    /// it; `None`: told now (the caller queues the message in the same transaction).
    pub hold_until: Option<EpochMicros>,
    /// What the planner saw of the technician around the slot, checked under their lock.
    pub planned_on: Option<&'a PlannedOn>,
}

/// The technician's routed visits (those with a site) the planner saw in `[from, to)`, by
/// start and end. A visit another replica booked meanwhile changes the drive to or from
/// the slot, which the exclusion constraint cannot see: then [`Booked::Stale`].
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedOn {
    pub from: EpochMicros,
    pub to: EpochMicros,
    pub visits: Vec<(EpochMicros, EpochMicros)>,
}

/// What booking a slot did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Booked {
    Booked {
        booking_id: i64,
    },
    /// The technician has an overlapping booking (the exclusion constraint said no), or
    /// is unavailable then.
    SlotTaken,
    /// The ticket is not open (already booked, cancelled, resolved) or does not exist.
    NotBookable,
    /// The technician's visits around the slot are not those it was planned on.
    Stale,
}

impl StoreTx {
    /// Whether the technician's routed visits in the window are those planned on.
    async fn visits_are(
        &mut self,
        technician_id: i32,
        planned: &PlannedOn,
    ) -> Result<bool, StoreError> {
        let rows: Vec<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
            "select lower(b.slot), upper(b.slot)
             from bookings b join tickets t on t.id = b.ticket_id
             where b.technician_id = $1 and b.cancelled_at is null
               and b.slot && tstzrange($2, $3)
               and t.site_latitude is not null and t.site_longitude is not null",
        )
        .bind(technician_id)
        .bind(timestamp(planned.from)?)
        .bind(timestamp(planned.to)?)
        .fetch_all(self.connection())
        .await?;
        let mut now: Vec<(EpochMicros, EpochMicros)> = rows
            .into_iter()
            .map(|(a, b)| (micros(a), micros(b)))
            .collect();
        let mut seen = planned.visits.clone();
        now.sort_unstable();
        seen.sort_unstable();
        Ok(now == seen)
    }

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
            hold_until,
            planned_on,
        } = *request;
        let hold_until = hold_until.map(timestamp).transpose()?;
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
            // With the lock held, an unavailability recorded before is seen (one recorded
            // after waits for this commit and then re-plans the booking).
            let off: Result<bool, sqlx::Error> = match locked {
                Err(error) => Err(error),
                Ok(_) => {
                    sqlx::query_scalar(
                        "select exists (select 1 from technician_unavailability
                                        where technician_id = $1
                                          and period && tstzrange($2, $3, '[)'))",
                    )
                    .bind(technician_id)
                    .bind(start_at)
                    .bind(end_at)
                    .fetch_one(self.connection())
                    .await
                }
            };
            if matches!(off, Ok(true)) {
                sqlx::query("rollback to savepoint book")
                    .execute(self.connection())
                    .await?;
                return Ok(Booked::SlotTaken);
            }
            if let (Ok(false), Some(planned)) = (&off, planned_on)
                && !self.visits_are(technician_id, planned).await?
            {
                sqlx::query("rollback to savepoint book")
                    .execute(self.connection())
                    .await?;
                return Ok(Booked::Stale);
            }
            let inserted: Result<i64, sqlx::Error> = match off {
                Err(error) => Err(error),
                Ok(_) => sqlx::query_scalar(
                    "insert into bookings (ticket_id, technician_id, slot, hold_until, proposed_at)
                 values ($1, $2, tstzrange($3, $4, '[)'), $5,
                         case when $5::timestamptz is null then $6::timestamptz end)
                 returning id",
                )
                .bind(ticket_id)
                .bind(technician_id)
                .bind(start_at)
                .bind(end_at)
                .bind(hold_until)
                .bind(timestamp(at)?)
                .fetch_one(self.connection())
                .await,
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
