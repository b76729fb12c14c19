//! What the dispatch stage reads and writes beyond a ticket's own life (`tickets.rs`):
//! the modes' facts from `models`, new predictions and critical events, silent devices,
//! the streaks of the ticket policy, the triage of new tickets into incidents, the tickets
//! to book, the technicians and their calendars (`migrations/0008`, `0009`).

// Rows are read as tuples and named in the struct they become, beside the query.
#![allow(clippy::type_complexity)]

use std::collections::HashMap;

use chrono::{DateTime, NaiveTime, Utc};

use super::{Store, StoreError, StoreTx};
use crate::contract::EpochMicros;

/// First key of the advisory lock one triage at a time holds (across replicas).
const TRIAGE_LOCK_KEY: i64 = 0x7472_6961_6765;

fn micros(time: DateTime<Utc>) -> EpochMicros {
    time.timestamp_micros()
}

fn timestamp(micros: EpochMicros) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros)
        .ok_or(StoreError::Unsupported("a time outside chrono's range"))
}

/// What dispatch needs of a trained mode (`models`): its alert threshold, horizon and the
/// lead times its card measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ModeFacts {
    pub version: String,
    pub failure_mode: String,
    pub threshold: f64,
    pub horizon_hours: f64,
    pub lead_times_hours: Vec<f64>,
    pub active: bool,
}

/// A score to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionSignal {
    pub device_id: i32,
    pub failure_mode: String,
    pub time: EpochMicros,
    pub probability: f64,
    pub model_version: String,
    pub top_factors: serde_json::Value,
    pub written_at: EpochMicros,
}

/// The policy's streak row of one (device, mode).
#[derive(Debug, Clone, PartialEq)]
pub struct StreakRow {
    pub device_id: i32,
    pub failure_mode: String,
    pub count: u32,
    pub closing: bool,
    pub above_since: Option<EpochMicros>,
    pub last_time: Option<EpochMicros>,
}

/// An open ticket as the policy reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenTicketRow {
    pub id: i64,
    pub device_id: i32,
    pub failure_mode: String,
    pub kind: String,
    pub status: String,
    pub highest_risk: f64,
}

/// What planning and priority need of a device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceContext {
    pub id: i32,
    pub kind: String,
    pub model: Option<String>,
    pub customer_id: Option<i64>,
    pub tier: String,
    pub position: Option<(f64, f64)>,
}

/// A critical device event.
#[derive(Debug, Clone, PartialEq)]
pub struct CriticalEvent {
    pub device_id: i32,
    pub kind: String,
    pub time: EpochMicros,
    pub code: String,
    pub message: String,
}

/// A device that stopped reporting.
#[derive(Debug, Clone, PartialEq)]
pub struct SilentDevice {
    pub device_id: i32,
    pub kind: String,
    pub stale_since: EpochMicros,
}

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
    /// A booking of it was cancelled before (re-planning: the customer hears
    /// "rescheduled").
    pub rebooking: bool,
    /// The customer was told of it before (no second notice).
    pub planned_before: bool,
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

fn keys(pairs: &[(i32, String)]) -> (Vec<i32>, Vec<String>) {
    pairs.iter().cloned().unzip()
}

fn position(latitude: Option<f64>, longitude: Option<f64>) -> Option<(f64, f64)> {
    match (latitude, longitude) {
        (Some(lat), Some(lon)) if lat.is_finite() && lon.is_finite() => Some((lat, lon)),
        _ => None,
    }
}

impl Store {
    /// Every trained mode's threshold, horizon and measured lead times.
    pub async fn mode_facts(&self) -> Result<Vec<ModeFacts>, StoreError> {
        let rows: Vec<(String, String, f64, f64, serde_json::Value, bool)> = sqlx::query_as(
            "select version, failure_mode, threshold, horizon_hours,
                    coalesce(metrics -> 'events' -> 'lead_times_hours', '[]'::jsonb), active
             from models",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(version, failure_mode, threshold, horizon_hours, leads, active)| ModeFacts {
                    version,
                    failure_mode,
                    threshold,
                    horizon_hours,
                    lead_times_hours: serde_json::from_value(leads).unwrap_or_default(),
                    active,
                },
            )
            .collect())
    }

    /// Predictions written after `since` (wall clock) that their streak has not applied
    /// yet (event time after its last), oldest written first.
    pub async fn prediction_signals(
        &self,
        since: Option<EpochMicros>,
        limit: i64,
    ) -> Result<Vec<PredictionSignal>, StoreError> {
        let since = since.map(timestamp).transpose()?;
        let rows: Vec<(
            i32,
            String,
            DateTime<Utc>,
            f64,
            String,
            serde_json::Value,
            DateTime<Utc>,
        )> = sqlx::query_as(
            "select p.device_id, p.failure_mode, p.time, p.probability, p.model_version,
                        p.top_factors, p.written_at
                 from predictions p
                 left join dispatch_streaks s
                   on s.device_id = p.device_id and s.failure_mode = p.failure_mode
                 where ($1::timestamptz is null or p.written_at > $1)
                   and (s.last_time is null or p.time > s.last_time)
                 order by p.written_at, p.device_id, p.failure_mode, p.time
                 limit $2",
        )
        .bind(since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(
                    device_id,
                    failure_mode,
                    time,
                    probability,
                    model_version,
                    top_factors,
                    written,
                )| {
                    PredictionSignal {
                        device_id,
                        failure_mode,
                        time: micros(time),
                        probability,
                        model_version,
                        top_factors,
                        written_at: micros(written),
                    }
                },
            )
            .collect())
    }

    /// Where the stage has read to: (predictions' `written_at`, critical events' time).
    pub async fn dispatch_progress(
        &self,
    ) -> Result<(Option<EpochMicros>, Option<EpochMicros>), StoreError> {
        let row: Option<(Option<DateTime<Utc>>, Option<DateTime<Utc>>)> =
            sqlx::query_as("select predictions_written_at, events_time from dispatch_progress")
                .fetch_optional(&self.pool)
                .await?;
        let (p, e) = row.unwrap_or((None, None));
        Ok((p.map(micros), e.map(micros)))
    }

    /// Moves the progress marks forward (never back: replicas write them too).
    pub async fn set_dispatch_progress(
        &self,
        predictions_written_at: Option<EpochMicros>,
        events_time: Option<EpochMicros>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "update dispatch_progress set
                 predictions_written_at = greatest(predictions_written_at, $1),
                 events_time = greatest(events_time, $2)",
        )
        .bind(predictions_written_at.map(timestamp).transpose()?)
        .bind(events_time.map(timestamp).transpose()?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The fleet's event-time clock: the newest time any device reported.
    pub async fn fleet_clock(&self) -> Result<Option<EpochMicros>, StoreError> {
        let newest: Option<DateTime<Utc>> =
            sqlx::query_scalar("select max(last_seen_at) from devices")
                .fetch_one(&self.pool)
                .await?;
        Ok(newest.map(micros))
    }

    /// Critical events after `after` (event time), oldest first.
    pub async fn critical_events(
        &self,
        after: Option<EpochMicros>,
        limit: i64,
    ) -> Result<Vec<CriticalEvent>, StoreError> {
        let rows: Vec<(i32, String, DateTime<Utc>, String, String)> = sqlx::query_as(
            "select e.device_id, d.kind, e.time, e.code, e.message
             from device_events e join devices d on d.id = e.device_id
             where e.severity = 'critical' and ($1::timestamptz is null or e.time > $1)
             order by e.time, e.device_id, e.code
             limit $2",
        )
        .bind(after.map(timestamp).transpose()?)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(device_id, kind, time, code, message)| CriticalEvent {
                device_id,
                kind,
                time: micros(time),
                code,
                message,
            })
            .collect())
    }

    /// Devices marked stale whose silence has not been acted on.
    pub async fn silent_devices(&self, limit: i64) -> Result<Vec<SilentDevice>, StoreError> {
        let rows: Vec<(i32, String, DateTime<Utc>)> = sqlx::query_as(
            "select d.id, d.kind, d.stale_since from devices d
             where d.stale_since is not null
               and not exists (select 1 from dispatch_handled h
                               where h.source = 'silence' and h.device_id = d.id
                                 and h.at = d.stale_since)
             order by d.stale_since, d.id
             limit $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(device_id, kind, since)| SilentDevice {
                device_id,
                kind,
                stale_since: micros(since),
            })
            .collect())
    }

    /// The devices' kind, customer tier and position: a car's from its newest
    /// `latitude`/`longitude` readings since `positions_since`, else the registered one.
    pub async fn device_contexts(
        &self,
        device_ids: &[i32],
        positions_since: EpochMicros,
    ) -> Result<HashMap<i32, DeviceContext>, StoreError> {
        let rows: Vec<(
            i32,
            String,
            Option<String>,
            Option<i64>,
            String,
            Option<f64>,
            Option<f64>,
        )> = sqlx::query_as(
            "select d.id, d.kind, d.model, d.customer_id, coalesce(c.tier, 'standard'),
                        d.latitude, d.longitude
                 from devices d left join customers c on c.id = d.customer_id
                 where d.id = any($1)",
        )
        .bind(device_ids)
        .fetch_all(&self.pool)
        .await?;
        let moving: Vec<i32> = rows.iter().filter(|r| r.1 == "car").map(|r| r.0).collect();
        let readings = if moving.is_empty() {
            HashMap::new()
        } else {
            let mut connection = self.pool.acquire().await?;
            reported_positions(&mut connection, &moving, positions_since).await?
        };
        Ok(rows
            .into_iter()
            .map(|(id, kind, model, customer_id, tier, lat, lon)| {
                let reported = readings.get(&id).copied();
                (
                    id,
                    DeviceContext {
                        id,
                        kind,
                        model,
                        customer_id,
                        tier,
                        position: reported.or(position(lat, lon)),
                    },
                )
            })
            .collect())
    }

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

    /// Live bookings (at their sites) and unavailability overlapping `[from, to)`.
    pub async fn calendar(
        &self,
        from: EpochMicros,
        to: EpochMicros,
    ) -> Result<Vec<CalendarRow>, StoreError> {
        let rows: Vec<(i32, DateTime<Utc>, DateTime<Utc>, Option<f64>, Option<f64>)> =
            sqlx::query_as(
                "select b.technician_id, lower(b.slot), upper(b.slot),
                        t.site_latitude, t.site_longitude
                 from bookings b join tickets t on t.id = b.ticket_id
                 where b.cancelled_at is null and b.slot && tstzrange($1, $2)
                 union all
                 select technician_id, lower(period), upper(period), null, null
                 from technician_unavailability
                 where period && tstzrange($1, $2) and not upper_inf(period)
                 union all
                 select technician_id, lower(period), $2, null, null
                 from technician_unavailability
                 where period && tstzrange($1, $2) and upper_inf(period)",
            )
            .bind(timestamp(from)?)
            .bind(timestamp(to)?)
            .fetch_all(&self.pool)
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

    /// A technician is unavailable over `[start, end)` (`end` None: until further
    /// notice): recorded, and every live booking it overlaps cancelled and its ticket
    /// opened again for re-planning (the next booking tells the customer "rescheduled").
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
        let tickets: Vec<i64> = sqlx::query_scalar(
            "with cancelled as (
                 update bookings set cancelled_at = now()
                 where technician_id = $1 and cancelled_at is null
                   and slot && tstzrange($2, $3, '[)')
                 returning ticket_id)
             update tickets t set status = 'open', technician_id = null, plan_after = null,
                                  updated_at = now()
             from cancelled c where t.id = c.ticket_id and t.status = 'booked'
             returning t.id",
        )
        .bind(technician_id)
        .bind(start)
        .bind(end)
        .fetch_all(tx.connection())
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
}

/// The newest `latitude`/`longitude` readings of `devices` since `since` (a car's
/// position).
async fn reported_positions(
    connection: &mut sqlx::PgConnection,
    devices: &[i32],
    since: EpochMicros,
) -> Result<HashMap<i32, (f64, f64)>, StoreError> {
    let last: Vec<(i32, String, f64)> = sqlx::query_as(
        "select distinct on (t.device_id, m.name) t.device_id, m.name, t.value
         from telemetry t join metrics m on m.id = t.metric_id
         where t.device_id = any($1) and m.name in ('latitude', 'longitude')
           and t.time >= $2
         order by t.device_id, m.name, t.time desc",
    )
    .bind(devices)
    .bind(timestamp(since)?)
    .fetch_all(connection)
    .await?;
    let mut readings: HashMap<i32, (Option<f64>, Option<f64>)> = HashMap::new();
    for (device_id, name, value) in last {
        let entry = readings.entry(device_id).or_default();
        if name == "latitude" {
            entry.0 = Some(value);
        } else {
            entry.1 = Some(value);
        }
    }
    Ok(readings
        .into_iter()
        .filter_map(|(device, (lat, lon))| position(lat, lon).map(|p| (device, p)))
        .collect())
}

impl StoreTx {
    /// The newest reported positions of `devices` since `since`, in this transaction (a
    /// car is visited where its last position reading puts it).
    pub async fn reported_positions(
        &mut self,
        devices: &[i32],
        since: EpochMicros,
    ) -> Result<HashMap<i32, (f64, f64)>, StoreError> {
        reported_positions(self.connection(), devices, since).await
    }

    /// Locks the streaks of `pairs` (created when missing), skipping those another
    /// transaction holds: that replica applies their scores.
    pub async fn lock_streaks(
        &mut self,
        pairs: &[(i32, String)],
    ) -> Result<Vec<StreakRow>, StoreError> {
        let (devices, modes) = keys(pairs);
        sqlx::query(
            "insert into dispatch_streaks (device_id, failure_mode)
             select * from unnest($1::int[], $2::text[])
             on conflict do nothing",
        )
        .bind(&devices)
        .bind(&modes)
        .execute(self.connection())
        .await?;
        let rows: Vec<(
            i32,
            String,
            i32,
            bool,
            Option<DateTime<Utc>>,
            Option<DateTime<Utc>>,
        )> = sqlx::query_as(
            "select s.device_id, s.failure_mode, s.count, s.closing, s.above_since,
                        s.last_time
                 from dispatch_streaks s
                 join unnest($1::int[], $2::text[]) k (device_id, failure_mode)
                   on k.device_id = s.device_id and k.failure_mode = s.failure_mode
                 order by s.device_id, s.failure_mode
                 for update of s skip locked",
        )
        .bind(&devices)
        .bind(&modes)
        .fetch_all(self.connection())
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(device_id, failure_mode, count, closing, above, last)| StreakRow {
                    device_id,
                    failure_mode,
                    count: count.max(0) as u32,
                    closing,
                    above_since: above.map(micros),
                    last_time: last.map(micros),
                },
            )
            .collect())
    }

    /// Writes the streaks back.
    pub async fn save_streaks(&mut self, rows: &[StreakRow]) -> Result<(), StoreError> {
        let devices: Vec<i32> = rows.iter().map(|r| r.device_id).collect();
        let modes: Vec<&str> = rows.iter().map(|r| r.failure_mode.as_str()).collect();
        let counts: Vec<i32> = rows
            .iter()
            .map(|r| i32::try_from(r.count).unwrap_or(i32::MAX))
            .collect();
        let closing: Vec<bool> = rows.iter().map(|r| r.closing).collect();
        let above: Vec<Option<DateTime<Utc>>> = rows
            .iter()
            .map(|r| r.above_since.map(timestamp).transpose())
            .collect::<Result<_, _>>()?;
        let last: Vec<Option<DateTime<Utc>>> = rows
            .iter()
            .map(|r| r.last_time.map(timestamp).transpose())
            .collect::<Result<_, _>>()?;
        sqlx::query(
            "update dispatch_streaks s set count = u.count, closing = u.closing,
                 above_since = u.above_since, last_time = u.last_time
             from unnest($1::int[], $2::text[], $3::int[], $4::bool[], $5::timestamptz[],
                         $6::timestamptz[])
                  u (device_id, failure_mode, count, closing, above_since, last_time)
             where s.device_id = u.device_id and s.failure_mode = u.failure_mode",
        )
        .bind(&devices)
        .bind(&modes)
        .bind(&counts)
        .bind(&closing)
        .bind(&above)
        .bind(&last)
        .execute(self.connection())
        .await?;
        Ok(())
    }

    /// The open tickets of `pairs`, locked (a technician resolving one waits for the
    /// occurrences written to it, rather than the occurrences opening a new ticket).
    pub async fn open_tickets_of(
        &mut self,
        pairs: &[(i32, String)],
    ) -> Result<Vec<OpenTicketRow>, StoreError> {
        let (devices, modes) = keys(pairs);
        let rows: Vec<(i64, i32, String, String, String, f64)> = sqlx::query_as(
            "select t.id, t.device_id, t.failure_mode, t.kind, t.status,
                    coalesce(t.highest_risk, 0)
             from tickets t
             join unnest($1::int[], $2::text[]) k (device_id, failure_mode)
               on k.device_id = t.device_id and k.failure_mode = t.failure_mode
             where t.status in ('open', 'booked', 'en_route', 'on_site')
             order by t.id
             for update of t",
        )
        .bind(&devices)
        .bind(&modes)
        .fetch_all(self.connection())
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, device_id, failure_mode, kind, status, highest_risk)| OpenTicketRow {
                    id,
                    device_id,
                    failure_mode,
                    kind,
                    status,
                    highest_risk,
                },
            )
            .collect())
    }

    /// The last `no_fault_found` visit of each of `pairs`: (resolved at, highest risk).
    pub async fn last_faultless_visits(
        &mut self,
        pairs: &[(i32, String)],
    ) -> Result<HashMap<(i32, String), (EpochMicros, f64)>, StoreError> {
        let (devices, modes) = keys(pairs);
        let rows: Vec<(i32, String, DateTime<Utc>, f64)> = sqlx::query_as(
            "select distinct on (t.device_id, t.failure_mode) t.device_id, t.failure_mode,
                    t.resolved_at, coalesce(t.highest_risk, t.risk_at_opening, 0)
             from tickets t
             join unnest($1::int[], $2::text[]) k (device_id, failure_mode)
               on k.device_id = t.device_id and k.failure_mode = t.failure_mode
             where t.outcome = 'no_fault_found' and t.resolved_at is not null
             order by t.device_id, t.failure_mode, t.resolved_at desc",
        )
        .bind(&devices)
        .bind(&modes)
        .fetch_all(self.connection())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(d, m, at, risk)| ((d, m), (micros(at), risk)))
            .collect())
    }

    /// Open silence tickets, not booked yet, whose device reports again (no longer
    /// stale): the silence is over.
    pub async fn returned_silences(&mut self) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "select t.id from tickets t join devices d on d.id = t.device_id
             where t.status = 'open' and t.failure_mode like '%/silence'
               and d.stale_since is null
             order by t.id
             for update of t skip locked",
        )
        .fetch_all(self.connection())
        .await?)
    }

    /// Records a signal as handled; false when it was before (by this or another
    /// replica): then it must not act again.
    pub async fn mark_handled(
        &mut self,
        source: &str,
        device_id: i32,
        at: EpochMicros,
        key: &str,
    ) -> Result<bool, StoreError> {
        let fresh: Option<i32> = sqlx::query_scalar(
            "insert into dispatch_handled (source, device_id, at, key) values ($1, $2, $3, $4)
             on conflict do nothing returning 1",
        )
        .bind(source)
        .bind(device_id)
        .bind(timestamp(at)?)
        .bind(key)
        .fetch_optional(self.connection())
        .await?;
        Ok(fresh.is_some())
    }

    /// Takes the triage lock (one triage at a time across replicas, so a surge split
    /// between two is never missed); false when another holds it.
    pub async fn try_triage_lock(&mut self) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar("select pg_try_advisory_xact_lock($1)")
            .bind(TRIAGE_LOCK_KEY)
            .fetch_one(self.connection())
            .await?)
    }

    /// Open tickets not yet released nor in an incident, oldest first, locked; those
    /// another transaction holds (a score being applied to them) are skipped.
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
                 order by t.opened_at, t.id
                 limit $1
                 for update of t skip locked",
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

    /// How many tickets wait for triage, locked or not.
    pub async fn tickets_waiting_for_triage(&mut self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "select count(*) from tickets
             where status = 'open' and released_at is null and incident_id is null",
        )
        .fetch_one(self.connection())
        .await?)
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
        let linked: Vec<(i64, Option<i64>, DateTime<Utc>)> = sqlx::query_as(
            "update tickets t set incident_id = $1, updated_at = now()
             from devices d
             where t.id = any($2) and d.id = t.device_id and t.incident_id is null
             returning t.id, d.customer_id, t.opened_at",
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
        let rows: Vec<(
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
        )> = sqlx::query_as(
            "select t.id, t.device_id, d.kind, t.failure_mode, t.kind, t.priority,
                        t.opened_at, t.due_at, t.expected_failure_at,
                        coalesce(t.site_latitude, d.latitude),
                        coalesce(t.site_longitude, d.longitude),
                        exists (select 1 from bookings b where b.ticket_id = t.id),
                        t.plan_after is not null
                 from tickets t
                 join devices d on d.id = t.device_id
                 left join incidents i on i.id = t.incident_id
                 where t.status = 'open' and t.released_at is not null
                   and (t.incident_id is null or i.status <> 'open')
                   and (t.plan_after is null or t.plan_after <= $1)
                 order by t.priority, t.due_at nulls last, t.id
                 limit $2
                 for update of t skip locked",
        )
        .bind(timestamp(now)?)
        .bind(limit)
        .fetch_all(self.connection())
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| BookableTicket {
                id: r.0,
                device_id: r.1,
                device_kind: r.2,
                failure_mode: r.3,
                ticket_kind: r.4,
                priority: r.5.clamp(1, 4) as u8,
                opened_at: micros(r.6),
                due_at: r.7.map(micros),
                expected_failure_at: r.8.map(micros),
                position: position(r.9, r.10),
                rebooking: r.11,
                planned_before: r.12,
            })
            .collect())
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

impl Store {
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
            "truncate outreach, bookings, ticket_events, tickets, incidents, dispatch_streaks,
                      dispatch_handled, technician_unavailability restart identity",
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
