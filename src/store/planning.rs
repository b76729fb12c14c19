//! What the dispatch stage reads and locks to plan: triage of new tickets into incidents,
//! the tickets to book, technicians, their calendars and unavailability (re-planning), and
//! the figures of `forewarn bench dispatch` (`migrations/0008`, `0009`).

// Rows are read as tuples and named in the struct they become, beside the query.
#![allow(clippy::type_complexity)]

use chrono::{DateTime, NaiveTime, Utc};

use super::dispatch::position;
use super::{Store, StoreError, StoreTx, micros, timestamp};
use crate::contract::EpochMicros;

/// First key of the advisory lock one triage at a time holds (across replicas).
const TRIAGE_LOCK_KEY: i64 = 0x7472_6961_6765;

/// A ticket waiting for triage (open, not released, in no incident).
#[derive(Debug, Clone, PartialEq)]
pub struct TriageTicket {
    pub id: i64,
    pub device_id: i32,
    pub device_kind: String,
    pub failure_mode: String,
    /// When it was opened (the settle time counts from here) and when its signal began
    /// (a device's silence: when it went quiet; a surge is members close in this time).
    pub opened_at: EpochMicros,
    pub first_seen_at: EpochMicros,
    pub model: Option<String>,
    pub customer_id: Option<i64>,
    pub position: Option<(f64, f64)>,
}

/// An incident still waiting for a dispatcher.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenIncident {
    pub id: i64,
    pub failure_mode: String,
    pub model: Option<String>,
    pub center: Option<(f64, f64)>,
    pub radius_km: Option<f64>,
    pub last_at: Option<EpochMicros>,
}

/// A new incident.
#[derive(Debug, Clone, PartialEq)]
pub struct NewIncident {
    pub failure_mode: String,
    pub model: Option<String>,
    pub center: Option<(f64, f64)>,
    pub radius_km: Option<f64>,
    pub first_at: EpochMicros,
    pub last_at: EpochMicros,
}

/// A ticket to book.
#[derive(Debug, Clone, PartialEq)]
pub struct BookableTicket {
    pub id: i64,
    pub device_id: i32,
    pub device_kind: String,
    pub failure_mode: String,
    pub ticket_kind: String,
    pub priority: u8,
    pub opened_at: EpochMicros,
    pub due_at: Option<EpochMicros>,
    pub expected_failure_at: Option<EpochMicros>,
    pub position: Option<(f64, f64)>,
    /// A booking of it proposed to its customer was cancelled (re-planning: the customer
    /// hears "rescheduled"; a booking still held was never heard of).
    pub rebooking: bool,
    /// The customer was told of it before (no second notice).
    pub planned_before: bool,
}

type BookableDbRow = (
    i64,
    i32,
    String,
    String,
    String,
    i16,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<f64>,
    Option<f64>,
    bool,
    bool,
);

/// The columns of [`BookableDbRow`] and their joins (`t` the ticket).
macro_rules! bookable_columns {
    () => {
        "t.id, t.device_id, d.kind, t.failure_mode, t.kind, t.priority,
         t.opened_at, t.due_at, t.expected_failure_at,
         coalesce(t.site_latitude, d.latitude), coalesce(t.site_longitude, d.longitude),
         exists (select 1 from bookings b
                 where b.ticket_id = t.id and b.proposed_at is not null),
         t.plan_after is not null
         from tickets t
         join devices d on d.id = t.device_id
         left join incidents i on i.id = t.incident_id"
    };
}

fn bookable(r: BookableDbRow) -> BookableTicket {
    BookableTicket {
        id: r.0,
        device_id: r.1,
        device_kind: r.2,
        failure_mode: r.3,
        ticket_kind: r.4,
        priority: u8::try_from(r.5.clamp(1, 4)).unwrap_or(4),
        opened_at: micros(r.6),
        due_at: r.7.map(micros),
        expected_failure_at: r.8.map(micros),
        position: position(r.9, r.10),
        rebooking: r.11,
        planned_before: r.12,
    }
}

impl Store {
    /// An open ticket as booking sees it (released or not), to book by hand.
    pub async fn bookable_ticket(&self, id: i64) -> Result<Option<BookableTicket>, StoreError> {
        let row: Option<BookableDbRow> = sqlx::query_as(concat!(
            "select ",
            bookable_columns!(),
            " where t.id = $1 and t.status = 'open'"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(bookable))
    }
}

/// A technician as planning sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct TechnicianPlanRow {
    pub id: i32,
    pub name: String,
    pub home: (f64, f64),
    pub max_travel_km: f64,
    pub skills: Vec<String>,
    pub timezone: String,
    pub shift_days: Vec<i16>,
    pub shift_start: NaiveTime,
    pub shift_end: NaiveTime,
}

/// Something in a technician's calendar: a live booking (at its site) or unavailability.
#[derive(Debug, Clone, PartialEq)]
pub struct CalendarRow {
    pub technician_id: i32,
    pub start: EpochMicros,
    pub end: EpochMicros,
    pub site: Option<(f64, f64)>,
}

/// What a dispatch run produced, for `forewarn bench dispatch`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DispatchFigures {
    pub tickets: i64,
    pub bookings: i64,
    pub proactive_bookings: i64,
    /// Proactive visits ending before the expected failure less the safety margin.
    pub inside_window: i64,
    /// Visits ending after the ticket's due time, and open tickets due before
    /// `horizon_end` without a visit.
    pub sla_misses: i64,
    /// Tickets beyond one per (device, failure mode) open at once: zero by the index.
    pub duplicate_tickets: i64,
    /// Overlapping live bookings of one technician: zero by the constraint.
    pub double_bookings: i64,
}

impl Store {
    /// Active technicians.
    pub async fn technicians_for_planning(&self) -> Result<Vec<TechnicianPlanRow>, StoreError> {
        let rows: Vec<(
            i32,
            String,
            f64,
            f64,
            f64,
            Vec<String>,
            String,
            Vec<i16>,
            NaiveTime,
            NaiveTime,
        )> = sqlx::query_as(
            "select id, name, home_latitude, home_longitude, max_travel_km, skills,
                        timezone, shift_days, shift_start, shift_end
                 from technicians where active order by id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, name, lat, lon, max_travel_km, skills, timezone, shift_days, start, end)| {
                    TechnicianPlanRow {
                        id,
                        name,
                        home: (lat, lon),
                        max_travel_km,
                        skills,
                        timezone,
                        shift_days,
                        shift_start: start,
                        shift_end: end,
                    }
                },
            )
            .collect())
    }

    /// Live bookings (at their sites) and unavailability overlapping `[from, to)` (an
    /// open-ended unavailability ends at `to`).
    pub async fn calendar(
        &self,
        from: EpochMicros,
        to: EpochMicros,
    ) -> Result<Vec<CalendarRow>, StoreError> {
        calendar_rows(&self.pool, from, to, None).await
    }

    /// A technician is unavailable over `[start, end)` (`end` None: until further
    /// notice): recorded, and every live booking it overlaps cancelled and its ticket
    /// opened again for re-planning (the next booking tells the customer "rescheduled" if
    /// they had been told of the cancelled one; a held booking was told to nobody).
    /// Returns the tickets to re-plan.
    #[allow(clippy::too_many_arguments)]
    pub async fn mark_unavailable(
        &self,
        technician_id: i32,
        start: EpochMicros,
        end: Option<EpochMicros>,
        reason: &str,
        at: EpochMicros,
        actor: &str,
    ) -> Result<Vec<i64>, StoreError> {
        let mut tx = self.begin().await?;
        let (start, end) = (timestamp(start)?, end.map(timestamp).transpose()?);
        // The technician's booking lock: no booking of theirs commits in between, and
        // `book` sees the unavailability once it has the lock.
        tx.lock_technicians(&[technician_id]).await?;
        sqlx::query(
            "insert into technician_unavailability (technician_id, period, reason)
             values ($1, tstzrange($2, $3, '[)'), $4)",
        )
        .bind(technician_id)
        .bind(start)
        .bind(end)
        .bind(reason)
        .execute(tx.connection())
        .await?;
        // Only visits not started are re-planned (a technician already on the way finishes
        // or hands over through the lifecycle); tickets are locked first, in id order, as a
        // cancellation locks its ticket before its booking.
        let tickets: Vec<i64> = sqlx::query_scalar(
            "select t.id from tickets t join bookings b on b.ticket_id = t.id
             where b.technician_id = $1 and b.cancelled_at is null
               and b.slot && tstzrange($2, $3, '[)') and t.status = 'booked'
             order by t.id
             for update of t",
        )
        .bind(technician_id)
        .bind(start)
        .bind(end)
        .fetch_all(tx.connection())
        .await?;
        sqlx::query(
            "update bookings set cancelled_at = $2
             where ticket_id = any($1) and cancelled_at is null",
        )
        .bind(&tickets)
        .bind(timestamp(at)?)
        .execute(tx.connection())
        .await?;
        sqlx::query(
            "update tickets set status = 'open', technician_id = null, plan_after = null,
                                updated_at = now()
             where id = any($1)",
        )
        .bind(&tickets)
        .execute(tx.connection())
        .await?;
        for ticket_id in &tickets {
            tx.ticket_event(
                *ticket_id,
                at,
                actor,
                Some("booked"),
                "open",
                &format!("re-planned: technician {technician_id} unavailable ({reason})"),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(tickets)
    }

    /// A dispatcher triaged an incident: its held tickets are released to be booked.
    pub async fn triage_incident(
        &self,
        incident_id: i64,
        at: EpochMicros,
        actor: &str,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let changed = sqlx::query(
            "update incidents set status = 'triaged', triaged_at = $2, triaged_by = $3
             where id = $1 and status = 'open'",
        )
        .bind(incident_id)
        .bind(timestamp(at)?)
        .bind(actor)
        .execute(tx.connection())
        .await?
        .rows_affected();
        let mut released = 0;
        if changed > 0 {
            let ids: Vec<i64> = sqlx::query_scalar(
                "select id from tickets where incident_id = $1 and status = 'open'",
            )
            .bind(incident_id)
            .fetch_all(tx.connection())
            .await?;
            released = tx.release_tickets(&ids, at).await?;
        }
        tx.commit().await?;
        Ok(released)
    }

    /// Counts what dispatch produced.
    pub async fn dispatch_figures(
        &self,
        horizon_end: EpochMicros,
        safety_margin: EpochMicros,
    ) -> Result<DispatchFigures, StoreError> {
        let row: (i64, i64, i64, i64, i64, i64, i64) = sqlx::query_as(
            "select
                 (select count(*) from tickets),
                 (select count(*) from bookings where cancelled_at is null),
                 (select count(*) from bookings b join tickets t on t.id = b.ticket_id
                  where b.cancelled_at is null and t.kind = 'proactive'),
                 (select count(*) from bookings b join tickets t on t.id = b.ticket_id
                  where b.cancelled_at is null and t.kind = 'proactive'
                    and upper(b.slot) <= t.expected_failure_at - $2 * interval '1 microsecond'),
                 (select count(*) from bookings b join tickets t on t.id = b.ticket_id
                  where b.cancelled_at is null and upper(b.slot) > t.due_at)
                 + (select count(*) from tickets t
                    where t.status = 'open' and t.due_at < $1),
                 (select count(*) from (
                      select device_id, failure_mode, count(*) from tickets
                      where status in ('open', 'booked', 'en_route', 'on_site')
                      group by 1, 2 having count(*) > 1) d),
                 (select count(*) from bookings a join bookings b
                    on a.technician_id = b.technician_id and a.id < b.id and a.slot && b.slot
                  where a.cancelled_at is null and b.cancelled_at is null)",
        )
        .bind(timestamp(horizon_end)?)
        .bind(safety_margin as f64)
        .fetch_one(&self.pool)
        .await?;
        Ok(DispatchFigures {
            tickets: row.0,
            bookings: row.1,
            proactive_bookings: row.2,
            inside_window: row.3,
            sla_misses: row.4,
            duplicate_tickets: row.5,
            double_bookings: row.6,
        })
    }

    /// Empties every table dispatch writes (a benchmark's next run on the same signals).
    pub async fn reset_dispatch_state(&self) -> Result<(), StoreError> {
        sqlx::query(
            "truncate link_answers, outreach_attempts, customer_replies, outreach, bookings,
                      ticket_events, tickets, incidents, dispatch_streaks, dispatch_handled,
                      technician_unavailability restart identity",
        )
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "update dispatch_progress set predictions_written_at = null, events_time = null",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// The calendar of every technician, or of `technicians` only.
pub(super) async fn calendar_rows<'e, E>(
    executor: E,
    from: EpochMicros,
    to: EpochMicros,
    technicians: Option<&[i32]>,
) -> Result<Vec<CalendarRow>, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    let rows: Vec<(i32, DateTime<Utc>, DateTime<Utc>, Option<f64>, Option<f64>)> = sqlx::query_as(
        "select b.technician_id, lower(b.slot), upper(b.slot),
                    t.site_latitude, t.site_longitude
             from bookings b join tickets t on t.id = b.ticket_id
             where b.cancelled_at is null and b.slot && tstzrange($1, $2)
               and ($3::int[] is null or b.technician_id = any($3))
             union all
             select technician_id, lower(period), coalesce(upper(period), $2), null, null
             from technician_unavailability
             where period && tstzrange($1, $2)
               and ($3::int[] is null or technician_id = any($3))",
    )
    .bind(timestamp(from)?)
    .bind(timestamp(to)?)
    .bind(technicians)
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(technician_id, start, end, lat, lon)| CalendarRow {
            technician_id,
            start: micros(start),
            end: micros(end),
            site: position(lat, lon),
        })
        .collect())
}

impl StoreTx {
    /// Takes the triage lock (one triage at a time across replicas, so a surge split
    /// between two is never missed); false when another holds it.
    pub async fn try_triage_lock(&mut self) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar("select pg_try_advisory_xact_lock($1)")
            .bind(TRIAGE_LOCK_KEY)
            .fetch_one(self.connection())
            .await?)
    }

    /// Open tickets not yet released nor in an incident, locked in id order (as a score
    /// being applied locks them, so the two wait for each other without a cycle).
    pub async fn tickets_to_triage(&mut self, limit: i64) -> Result<Vec<TriageTicket>, StoreError> {
        let rows: Vec<(
            i64,
            i32,
            String,
            String,
            DateTime<Utc>,
            DateTime<Utc>,
            Option<String>,
            Option<i64>,
            Option<f64>,
            Option<f64>,
        )> = sqlx::query_as(
            "select t.id, t.device_id, d.kind, t.failure_mode, t.opened_at, t.first_seen_at,
                        d.model, d.customer_id,
                        coalesce(t.site_latitude, d.latitude),
                        coalesce(t.site_longitude, d.longitude)
                 from tickets t join devices d on d.id = t.device_id
                 where t.status = 'open' and t.released_at is null and t.incident_id is null
                 order by t.id
                 limit $1
                 for update of t",
        )
        .bind(limit)
        .fetch_all(self.connection())
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(
                    id,
                    device_id,
                    device_kind,
                    failure_mode,
                    opened,
                    first,
                    model,
                    customer_id,
                    lat,
                    lon,
                )| {
                    TriageTicket {
                        id,
                        device_id,
                        device_kind,
                        failure_mode,
                        opened_at: micros(opened),
                        first_seen_at: micros(first),
                        model,
                        customer_id,
                        position: position(lat, lon),
                    }
                },
            )
            .collect())
    }

    /// Incidents no dispatcher has triaged yet.
    pub async fn open_incidents(&mut self) -> Result<Vec<OpenIncident>, StoreError> {
        let rows: Vec<(
            i64,
            String,
            Option<String>,
            Option<f64>,
            Option<f64>,
            Option<f64>,
            Option<DateTime<Utc>>,
        )> = sqlx::query_as(
            "select id, failure_mode, model, center_latitude, center_longitude, radius_km,
                        last_at
                 from incidents where status = 'open' order by id",
        )
        .fetch_all(self.connection())
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, failure_mode, model, lat, lon, radius_km, last)| OpenIncident {
                    id,
                    failure_mode,
                    model,
                    center: position(lat, lon),
                    radius_km,
                    last_at: last.map(micros),
                },
            )
            .collect())
    }

    pub async fn create_incident(&mut self, incident: &NewIncident) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "insert into incidents (failure_mode, model, opened_at, first_at, last_at,
                                    center_latitude, center_longitude, radius_km)
             values ($1, $2, $3, $4, $3, $5, $6, $7) returning id",
        )
        .bind(&incident.failure_mode)
        .bind(&incident.model)
        .bind(timestamp(incident.last_at)?)
        .bind(timestamp(incident.first_at)?)
        .bind(incident.center.map(|c| c.0))
        .bind(incident.center.map(|c| c.1))
        .bind(incident.radius_km)
        .fetch_one(self.connection())
        .await?)
    }

    /// Links tickets to an incident (held: not booked until a dispatcher triages it),
    /// each with its audit row; returns the customers of the newly linked tickets.
    pub async fn link_to_incident(
        &mut self,
        incident_id: i64,
        ticket_ids: &[i64],
        at: EpochMicros,
        actor: &str,
    ) -> Result<Vec<i64>, StoreError> {
        // A dispatcher may have triaged it meanwhile: then nothing joins it (the tickets
        // stay waiting and are triaged again).
        let open: Option<String> = sqlx::query_scalar(
            "select status from incidents where id = $1 and status = 'open' for update",
        )
        .bind(incident_id)
        .fetch_optional(self.connection())
        .await?;
        if open.is_none() {
            return Ok(Vec::new());
        }
        let linked: Vec<(i64, Option<i64>, DateTime<Utc>)> = sqlx::query_as(
            "update tickets t set incident_id = $1, updated_at = now()
             from devices d
             where t.id = any($2) and d.id = t.device_id and t.incident_id is null
             returning t.id, d.customer_id, t.first_seen_at",
        )
        .bind(incident_id)
        .bind(ticket_ids)
        .fetch_all(self.connection())
        .await?;
        if let Some(newest) = linked.iter().map(|l| l.2).max() {
            sqlx::query(
                "update incidents set device_count = device_count + $2,
                     last_at = greatest(last_at, $3)
                 where id = $1",
            )
            .bind(incident_id)
            .bind(linked.len() as i32)
            .bind(newest)
            .execute(self.connection())
            .await?;
        }
        for (ticket_id, _, _) in &linked {
            self.ticket_event(
                *ticket_id,
                at,
                actor,
                Some("open"),
                "open",
                &format!("held in incident {incident_id}: part of a surge"),
            )
            .await?;
        }
        let mut customers: Vec<i64> = linked.iter().filter_map(|l| l.1).collect();
        customers.sort_unstable();
        customers.dedup();
        Ok(customers)
    }

    /// Releases tickets from triage: they may be booked and their customers told.
    pub async fn release_tickets(
        &mut self,
        ticket_ids: &[i64],
        at: EpochMicros,
    ) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "update tickets set released_at = $2 where id = any($1) and released_at is null",
        )
        .bind(ticket_ids)
        .bind(timestamp(at)?)
        .execute(self.connection())
        .await?
        .rows_affected())
    }

    /// Claims released open tickets to book, most urgent first, skipping those another
    /// replica holds and those not to be planned before `now`.
    pub async fn claim_bookable(
        &mut self,
        now: EpochMicros,
        limit: i64,
    ) -> Result<Vec<BookableTicket>, StoreError> {
        let rows: Vec<BookableDbRow> = sqlx::query_as(concat!(
            "select ",
            bookable_columns!(),
            " where t.status = 'open' and t.released_at is not null
                   and (t.incident_id is null or i.status <> 'open')
                   and (t.plan_after is null or t.plan_after <= $1)
                 order by t.priority, t.due_at nulls last, t.id
                 limit $2
                 for update of t skip locked"
        ))
        .bind(timestamp(now)?)
        .bind(limit)
        .fetch_all(self.connection())
        .await?;
        Ok(rows.into_iter().map(bookable).collect())
    }

    /// No technician can take the ticket now: planned again after `retry_at`.
    pub async fn plan_later(
        &mut self,
        ticket_id: i64,
        retry_at: EpochMicros,
    ) -> Result<(), StoreError> {
        sqlx::query("update tickets set plan_after = $2 where id = $1")
            .bind(ticket_id)
            .bind(timestamp(retry_at)?)
            .execute(self.connection())
            .await?;
        Ok(())
    }
}
