//! Bookings held before their customer is told (`migrations/0010`): which may still move,
//! moving one, and telling the customer once its hold is over.
//!
//! Lock order of a move: technicians' booking locks (in id order), then the tickets that
//! are still booked (in id order; a re-opened ticket, which a booking transaction may hold
//! while it waits for a technician's lock, is not waited for), then bookings. Re-planning
//! (`mark_unavailable`) takes one technician's lock, then its booked tickets. A move
//! re-checks under those locks that the booking is still held where it was planned from;
//! the caller checks that the technicians' calendars are those it planned on, and the
//! exclusion constraint has the last word.

// Rows are read as tuples and named in the struct they become, beside the query.
#![allow(clippy::type_complexity)]

use chrono::{DateTime, Utc};

use super::dispatch::position;
use super::planning::CalendarRow;
use super::tickets::BOOKING_LOCK_KEY;
use super::{StoreError, StoreTx, micros, timestamp};
use crate::contract::EpochMicros;

/// First key of the advisory lock one improver at a time holds (across replicas).
const IMPROVE_LOCK_KEY: i64 = 0x696d_7072_6f76;

/// A live booking nobody has been told of yet.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldBooking {
    pub booking_id: i64,
    pub ticket_id: i64,
    pub technician_id: i32,
    pub start: EpochMicros,
    pub end: EpochMicros,
    pub hold_until: EpochMicros,
    pub site: Option<(f64, f64)>,
    pub device_kind: String,
    pub failure_mode: String,
    pub priority: u8,
    pub opened_at: EpochMicros,
    pub due_at: Option<EpochMicros>,
}

/// A held booking to move, from where it was planned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BookingMove {
    pub booking_id: i64,
    pub ticket_id: i64,
    pub from_technician_id: i32,
    pub from_start: EpochMicros,
    pub technician_id: i32,
    pub start: EpochMicros,
    pub end: EpochMicros,
    /// Told no later than this (the new start less the minimum notice).
    pub hold_until: EpochMicros,
    /// What the move saves by the planning cost (km), for the audit.
    pub gain_km: f64,
}

/// A held-booking query: its columns (in [`HeldRow`] order) and joins, then `$rest`.
macro_rules! select_held {
    ($rest:literal) => {
        concat!(
            "select b.id, b.ticket_id, b.technician_id, lower(b.slot), upper(b.slot),
                    b.hold_until, t.site_latitude, t.site_longitude, d.kind, t.failure_mode,
                    t.priority, t.opened_at, t.due_at
             from bookings b join tickets t on t.id = b.ticket_id
             join devices d on d.id = t.device_id ",
            $rest
        )
    };
}

type HeldRow = (
    i64,
    i64,
    i32,
    DateTime<Utc>,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<f64>,
    Option<f64>,
    String,
    String,
    i16,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

fn held(r: HeldRow) -> HeldBooking {
    HeldBooking {
        booking_id: r.0,
        ticket_id: r.1,
        technician_id: r.2,
        start: micros(r.3),
        end: micros(r.4),
        hold_until: micros(r.5),
        site: position(r.6, r.7),
        device_kind: r.8,
        failure_mode: r.9,
        priority: r.10.clamp(1, 4) as u8,
        opened_at: micros(r.11),
        due_at: r.12.map(micros),
    }
}

impl StoreTx {
    /// One improver at a time across replicas; false when another holds the lock.
    pub async fn try_improve_lock(&mut self) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar("select pg_try_advisory_xact_lock($1)")
            .bind(IMPROVE_LOCK_KEY)
            .fetch_one(self.connection())
            .await?)
    }

    /// Held bookings that may still move: held past `now`, starting after it, of booked
    /// tickets; those told soonest first, at most `limit`.
    pub async fn movable_bookings(
        &mut self,
        now: EpochMicros,
        limit: i64,
    ) -> Result<Vec<HeldBooking>, StoreError> {
        let rows: Vec<HeldRow> = sqlx::query_as(select_held!(
            "where b.proposed_at is null and b.cancelled_at is null and b.hold_until > $1
               and lower(b.slot) > $1 and t.status = 'booked'
             order by b.hold_until, b.id
             limit $2"
        ))
        .bind(timestamp(now)?)
        .bind(limit)
        .fetch_all(self.connection())
        .await?;
        Ok(rows.into_iter().map(held).collect())
    }

    /// No double booking is checked at commit instead of at each move, so a day's visits
    /// can trade slots (the commit fails, [`StoreError::is_double_booking`], if they
    /// would overlap anything).
    pub async fn defer_double_booking_check(&mut self) -> Result<(), StoreError> {
        sqlx::query("set constraints bookings_no_double_booking deferred")
            .execute(self.connection())
            .await?;
        Ok(())
    }

    /// Takes the booking locks of these technicians, in id order.
    pub async fn lock_technicians(&mut self, technician_ids: &[i32]) -> Result<(), StoreError> {
        let mut ids = technician_ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            sqlx::query("select pg_advisory_xact_lock($1, $2)")
                .bind(BOOKING_LOCK_KEY)
                .bind(id)
                .execute(self.connection())
                .await?;
        }
        Ok(())
    }

    /// Moves a held booking, once the caller holds both technicians' locks and the
    /// ticket's. False, changing nothing, when it is no longer held where it was planned
    /// from, its ticket is no longer booked, or the new technician is off then (an overlap
    /// is refused here, or at commit when the check is deferred).
    pub async fn move_held_booking(
        &mut self,
        change: &BookingMove,
        at: EpochMicros,
        actor: &str,
    ) -> Result<bool, StoreError> {
        let (start, end) = (timestamp(change.start)?, timestamp(change.end)?);
        sqlx::query("savepoint move_booking")
            .execute(self.connection())
            .await?;
        let updated = sqlx::query(
            "update bookings b set technician_id = $2, slot = tstzrange($3, $4, '[)'),
                 hold_until = least(b.hold_until, $5)
             from tickets t
             where b.id = $1 and t.id = b.ticket_id and t.status = 'booked'
               and b.proposed_at is null and b.cancelled_at is null
               and b.technician_id = $6 and lower(b.slot) = $7
               and not exists (select 1 from technician_unavailability u
                               where u.technician_id = $2
                                 and u.period && tstzrange($3, $4, '[)'))",
        )
        .bind(change.booking_id)
        .bind(change.technician_id)
        .bind(start)
        .bind(end)
        .bind(timestamp(change.hold_until)?)
        .bind(change.from_technician_id)
        .bind(timestamp(change.from_start)?)
        .execute(self.connection())
        .await;
        let rows = match updated {
            Ok(done) => done.rows_affected(),
            // exclusion_violation: the slot was booked after the plan was read.
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("23P01") => 0,
            Err(error) => return Err(error.into()),
        };
        if rows == 0 {
            sqlx::query("rollback to savepoint move_booking")
                .execute(self.connection())
                .await?;
            return Ok(false);
        }
        sqlx::query("release savepoint move_booking")
            .execute(self.connection())
            .await?;
        sqlx::query("update tickets set technician_id = $2, updated_at = now() where id = $1")
            .bind(change.ticket_id)
            .bind(change.technician_id)
            .execute(self.connection())
            .await?;
        self.ticket_event_with(
            change.ticket_id,
            at,
            actor,
            Some("booked"),
            "booked",
            &format!(
                "re-planned before proposing: technician {} (saves {:.1} km of planning cost)",
                change.technician_id, change.gain_km
            ),
            serde_json::json!({
                "booking_id": change.booking_id,
                "from_technician_id": change.from_technician_id,
                "from_slot_start": timestamp(change.from_start)?,
                "technician_id": change.technician_id,
                "slot_start": start,
                "slot_end": end,
            }),
        )
        .await?;
        Ok(true)
    }

    /// The calendar of these technicians, read in this transaction (after their locks, so
    /// nothing of theirs changes until commit).
    pub async fn calendar_of(
        &mut self,
        technicians: &[i32],
        from: EpochMicros,
        to: EpochMicros,
    ) -> Result<Vec<CalendarRow>, StoreError> {
        super::planning::calendar_rows(self.connection(), from, to, Some(technicians)).await
    }

    /// Locks those of these tickets that are still booked, in id order (before their
    /// bookings change). A ticket no longer booked is not waited for: one re-opened may be
    /// held by a booking transaction that waits for a technician lock this one holds.
    pub async fn lock_tickets(&mut self, ticket_ids: &[i64]) -> Result<(), StoreError> {
        sqlx::query(
            "select id from tickets where id = any($1) and status = 'booked' order by id
             for update",
        )
        .bind(ticket_ids)
        .fetch_all(self.connection())
        .await?;
        Ok(())
    }

    /// Held bookings whose hold is over at `now`, their tickets locked (skipping those
    /// another replica holds) and read after the lock, so the slot told is the last one.
    pub async fn bookings_to_propose(
        &mut self,
        now: EpochMicros,
        limit: i64,
    ) -> Result<Vec<HeldBooking>, StoreError> {
        let now = timestamp(now)?;
        let tickets: Vec<i64> = sqlx::query_scalar(
            "select t.id from tickets t join bookings b on b.ticket_id = t.id
             where b.proposed_at is null and b.cancelled_at is null and b.hold_until <= $1
               and t.status = 'booked'
             order by t.id
             limit $2
             for update of t skip locked",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(self.connection())
        .await?;
        if tickets.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<HeldRow> = sqlx::query_as(select_held!(
            "where b.ticket_id = any($1) and b.proposed_at is null and b.cancelled_at is null
               and b.hold_until <= $2 and t.status = 'booked'
             order by t.id"
        ))
        .bind(&tickets)
        .bind(now)
        .fetch_all(self.connection())
        .await?;
        Ok(rows.into_iter().map(held).collect())
    }

    /// The booking's customer has been told (the message queued in this transaction).
    pub async fn mark_proposed(
        &mut self,
        booking_id: i64,
        at: EpochMicros,
    ) -> Result<(), StoreError> {
        sqlx::query("update bookings set proposed_at = $2 where id = $1")
            .bind(booking_id)
            .bind(timestamp(at)?)
            .execute(self.connection())
            .await?;
        Ok(())
    }
}
