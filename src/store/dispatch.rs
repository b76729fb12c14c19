//! What the dispatch stage reads and locks to turn signals into tickets: the modes'
//! facts from `models`, new predictions and critical events, silent devices, device
//! contexts, the streaks of the ticket policy and what it has handled
//! (`migrations/0008`, `0009`). Triage, booking and calendars are `planning.rs`.

// Rows are read as tuples and named in the struct they become, beside the query.
#![allow(clippy::type_complexity)]

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{Store, StoreError, StoreTx, micros, timestamp};
use crate::contract::EpochMicros;

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

fn keys(pairs: &[(i32, String)]) -> (Vec<i32>, Vec<String>) {
    pairs.iter().cloned().unzip()
}

pub(super) fn position(latitude: Option<f64>, longitude: Option<f64>) -> Option<(f64, f64)> {
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

    /// Critical events not handled yet, at or after `since` (event time) and after the
    /// key `after` (time, device, code: the last of the previous page), oldest first.
    pub async fn critical_events(
        &self,
        since: Option<EpochMicros>,
        after: Option<(EpochMicros, i32, String)>,
        limit: i64,
    ) -> Result<Vec<CriticalEvent>, StoreError> {
        let (after_time, after_device, after_code) = match after {
            Some((time, device, code)) => (Some(timestamp(time)?), Some(device), Some(code)),
            None => (None, None, None),
        };
        let rows: Vec<(i32, String, DateTime<Utc>, String, String)> = sqlx::query_as(
            "select e.device_id, d.kind, e.time, e.code, e.message
             from device_events e join devices d on d.id = e.device_id
             where e.severity = 'critical' and ($1::timestamptz is null or e.time >= $1)
               and ($2::timestamptz is null or (e.time, e.device_id, e.code) > ($2, $3, $4))
               and not exists (select 1 from dispatch_handled h
                               where h.source = 'critical_event' and h.device_id = e.device_id
                                 and h.at = e.time and h.key = e.code)
             order by e.time, e.device_id, e.code
             limit $5",
        )
        .bind(since.map(timestamp).transpose()?)
        .bind(after_time)
        .bind(after_device)
        .bind(after_code)
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

    /// Forgets handled signals that can no longer be read again: critical events older
    /// than `events_before` (behind the read window; `None`: none yet), and silences whose device is no
    /// longer stale since that time (a new silence has a new `stale_since`). Returns the
    /// rows deleted.
    pub async fn prune_handled(
        &self,
        events_before: Option<EpochMicros>,
    ) -> Result<u64, StoreError> {
        let events = match events_before {
            Some(before) => sqlx::query(
                "delete from dispatch_handled where source = 'critical_event' and at < $1",
            )
            .bind(timestamp(before)?)
            .execute(&self.pool)
            .await?
            .rows_affected(),
            None => 0,
        };
        let silences = sqlx::query(
            "delete from dispatch_handled h
             where h.source = 'silence'
               and not exists (select 1 from devices d
                               where d.id = h.device_id and d.stale_since = h.at)",
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(events + silences)
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
}
