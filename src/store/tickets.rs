//! Tickets, their audit trail and bookings (`migrations/0008_dispatch.sql`). A ticket
//! change and its `ticket_events` row commit together: the writes are `impl StoreTx`
//! methods, with a pool version that wraps one transaction. The database is the last word
//! on the two invariants replicas could race on: one open ticket per (device, failure
//! mode) (a partial unique index) and no double booking (an exclusion constraint).

use chrono::{DateTime, Utc};

use super::{Store, StoreError, StoreTx};
use crate::contract::EpochMicros;

/// Times a booking is retried after PostgreSQL broke a deadlock between two concurrent
/// overlapping inserts by failing it.
const MAX_DEADLOCK_RETRIES: u32 = 5;

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
    /// Event time of the signal.
    pub at: EpochMicros,
    pub priority: u8,
    pub risk: Option<f64>,
    pub model_version: Option<String>,
    /// The prediction's top factors, in words.
    pub top_factors: serde_json::Value,
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

/// What booking a slot did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Booked {
    Booked {
        booking_id: i64,
    },
    /// The technician has an overlapping booking (the exclusion constraint said no).
    SlotTaken,
}

fn timestamp(micros: EpochMicros) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros)
        .ok_or(StoreError::Unsupported("a time outside chrono's range"))
}

impl StoreTx {
    /// Opens a ticket for the signal, or — when one is open for its device and failure
    /// mode — adds the signal to it as an occurrence (count, first/last seen, highest
    /// risk; a higher priority escalates it). Either way a `ticket_events` row records it.
    /// Racing transactions cannot open two: the partial unique index turns the second
    /// insert into the merge.
    pub async fn open_or_merge_ticket(
        &mut self,
        signal: &TicketSignal,
    ) -> Result<Opened, StoreError> {
        let at = timestamp(signal.at)?;
        let priority = i16::from(signal.priority);
        // Insert, or on the open ticket's conflict add the occurrence; `xmax = 0` tells a
        // fresh row from an updated one, and the old priority comes from the row before.
        let row: (i64, bool, i16, Option<i16>, String) = sqlx::query_as(
            // The open statuses are the partial unique index's predicate, as in 0008.
            "with before as (
                 select id, priority from tickets
                 where device_id = $3 and failure_mode = $4 and status in ('open', 'booked', 'en_route', 'on_site')
             )
             insert into tickets (kind, priority, device_id, failure_mode, opened_at,
                                  risk_at_opening, model_version, top_factors,
                                  first_seen_at, last_seen_at, highest_risk)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $5, $5, $6)
             on conflict (device_id, failure_mode) where status in ('open', 'booked', 'en_route', 'on_site')
             do update set
                 occurrences = tickets.occurrences + 1,
                 first_seen_at = least(tickets.first_seen_at, excluded.first_seen_at),
                 last_seen_at = greatest(tickets.last_seen_at, excluded.last_seen_at),
                 highest_risk = greatest(tickets.highest_risk, excluded.highest_risk),
                 priority = least(tickets.priority, excluded.priority),
                 updated_at = now()
             returning id, (xmax = 0), priority,
                       (select priority from before where before.id = tickets.id), status",
        )
        .bind(signal.kind.as_str())
        .bind(priority)
        .bind(signal.device_id)
        .bind(&signal.failure_mode)
        .bind(at)
        .bind(signal.risk)
        .bind(&signal.model_version)
        .bind(&signal.top_factors)
        .fetch_one(self.connection())
        .await?;
        let (ticket_id, inserted, new_priority, old_priority, status) = row;
        let opened = if inserted {
            Opened::Created { ticket_id }
        } else {
            // A racing insert committed between our snapshot and the conflict: the old
            // priority is unknown to this statement, so no escalation is claimed.
            let escalated_from = old_priority
                .filter(|old| new_priority < *old)
                .map(|old| old as u8);
            Opened::Merged {
                ticket_id,
                escalated_from,
            }
        };
        let (from_status, reason) = match opened {
            Opened::Created { .. } => (None, signal.reason.clone()),
            Opened::Merged {
                escalated_from: Some(old),
                ..
            } => (
                Some(status.as_str()),
                format!("escalated from priority {old}: {}", signal.reason),
            ),
            Opened::Merged { .. } => (
                Some(status.as_str()),
                format!("occurrence: {}", signal.reason),
            ),
        };
        self.ticket_event(
            ticket_id,
            signal.at,
            &signal.actor,
            from_status,
            &status,
            &reason,
        )
        .await?;
        Ok(opened)
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
        sqlx::query(
            "insert into ticket_events (ticket_id, at, actor, from_status, to_status, reason)
             values ($1, $2, $3, $4, $5, $6)",
        )
        .bind(ticket_id)
        .bind(timestamp(at)?)
        .bind(actor)
        .bind(from_status)
        .bind(to_status)
        .bind(reason)
        .execute(self.connection())
        .await?;
        Ok(())
    }

    /// Books `technician_id` for the ticket over `[start, end)` (event time) and marks the
    /// ticket booked. A slot overlapping one of the technician's live bookings is refused
    /// by the exclusion constraint: `SlotTaken`, and nothing is written (a savepoint keeps
    /// the caller's transaction usable for the next candidate). Two overlapping inserts at
    /// once can deadlock on the constraint check; the one PostgreSQL fails is retried.
    pub async fn book(
        &mut self,
        ticket_id: i64,
        technician_id: i32,
        start: EpochMicros,
        end: EpochMicros,
        actor: &str,
    ) -> Result<Booked, StoreError> {
        let (start_at, end_at) = (timestamp(start)?, timestamp(end)?);
        let mut deadlocks = 0;
        let booking_id = loop {
            sqlx::query("savepoint book")
                .execute(self.connection())
                .await?;
            let inserted: Result<i64, sqlx::Error> = sqlx::query_scalar(
                "insert into bookings (ticket_id, technician_id, slot)
                 values ($1, $2, tstzrange($3, $4, '[)')) returning id",
            )
            .bind(ticket_id)
            .bind(technician_id)
            .bind(start_at)
            .bind(end_at)
            .fetch_one(self.connection())
            .await;
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
        let from: String =
            sqlx::query_scalar("select status from tickets where id = $1 for update")
                .bind(ticket_id)
                .fetch_one(self.connection())
                .await?;
        sqlx::query(
            "update tickets set status = 'booked', technician_id = $2, updated_at = now()
             where id = $1",
        )
        .bind(ticket_id)
        .bind(technician_id)
        .execute(self.connection())
        .await?;
        self.ticket_event(
            ticket_id,
            start,
            actor,
            Some(&from),
            "booked",
            &format!("technician {technician_id} booked"),
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
    pub async fn book(
        &self,
        ticket_id: i64,
        technician_id: i32,
        start: EpochMicros,
        end: EpochMicros,
        actor: &str,
    ) -> Result<Booked, StoreError> {
        let mut tx = self.begin().await?;
        let booked = tx.book(ticket_id, technician_id, start, end, actor).await?;
        tx.commit().await?;
        Ok(booked)
    }
}
