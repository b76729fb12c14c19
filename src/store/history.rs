//! History as features and labels read it — hourly and daily rollup rows, events, the
//! component history, event codes, failure modes, the rollup's range — and the ground truth
//! written by imports, the simulator and (later) closed tickets: `failures`, `maintenance`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{Store, StoreError, StoreTx, micros};
use crate::features::{DailyRow, EventRecord, HourlyRow};

/// A failure or a maintenance action of a device's component.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentRecord {
    pub time: DateTime<Utc>,
    pub device_id: i32,
    pub component: String,
    /// `failures.source` or `maintenance.action`.
    pub detail: String,
}

impl Store {
    /// The newest hourly bucket of the whole fleet (the event-time clock of live scoring),
    /// looking only at buckets at or after `since` when given (the BRIN index on `bucket`
    /// then reads only the newest pages).
    pub async fn newest_rollup_hour(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let newest: Option<DateTime<Utc>> = sqlx::query_scalar(
            "select max(bucket) from telemetry_hourly
             where $1::timestamptz is null or bucket >= $1",
        )
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(newest)
    }

    /// The newest hourly bucket of each of `devices` that has any (at any time).
    pub async fn newest_rollup_hours_of(
        &self,
        devices: &[i32],
    ) -> Result<Vec<(i32, DateTime<Utc>)>, StoreError> {
        if devices.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query_as(
            "select device_id, max(bucket) from telemetry_hourly
             where device_id = any($1) group by device_id",
        )
        .bind(devices)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// First and last hourly bucket of the rollup.
    pub async fn rollup_range(&self) -> Result<Option<(DateTime<Utc>, DateTime<Utc>)>, StoreError> {
        let row: (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
            sqlx::query_as("select min(bucket), max(bucket) from telemetry_hourly")
                .fetch_one(&self.pool)
                .await?;
        Ok(row.0.zip(row.1))
    }

    /// Hourly rollup rows of `devices` with `from <= bucket < to`.
    pub async fn hourly_rows(
        &self,
        devices: &[i32],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<HourlyRow>, StoreError> {
        if self.use_copy {
            return self.hourly_rows_by_copy(devices, from, to).await;
        }
        let fetched = sqlx::query_as::<_, (i32, i16, DateTime<Utc>, f64, f64, f64)>(
            // Every metric id too, so that the primary key (device_id, metric_id, bucket)
            // is probed per series over the time range instead of read whole per device.
            "select device_id, metric_id, bucket, avg, min, max from telemetry_hourly
             where device_id = any($1) and metric_id = any(array(select id from metrics))
               and bucket >= $2 and bucket < $3",
        )
        .bind(devices)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        Ok(fetched
            .into_iter()
            .map(|(device_id, metric_id, bucket, avg, min, max)| HourlyRow {
                device_id,
                metric_id,
                bucket: micros(bucket),
                avg,
                min,
                max,
            })
            .collect())
    }

    /// [`Store::hourly_rows`] through `COPY … TO STDOUT (format binary)`: a live cycle reads
    /// the newest 30 hours of every device of a kind (15.5 million rows for 100,000 washers),
    /// and decoding rows one by one took most of its time. COPY takes no parameters, so the
    /// ids and times are written into the statement (integers only).
    async fn hourly_rows_by_copy(
        &self,
        devices: &[i32],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<HourlyRow>, StoreError> {
        use futures_util::TryStreamExt;
        use std::fmt::Write;
        let mut ids = String::with_capacity(devices.len() * 8);
        for (index, id) in devices.iter().enumerate() {
            if index > 0 {
                ids.push(',');
            }
            let _ = write!(ids, "{id}");
        }
        let statement = format!(
            "copy (select device_id, metric_id, bucket, avg, min, max from telemetry_hourly
                   where device_id = any('{{{ids}}}'::int4[])
                     and metric_id = any(array(select id from metrics))
                     and bucket >= timestamptz 'epoch' + {} * interval '1 microsecond'
                     and bucket < timestamptz 'epoch' + {} * interval '1 microsecond')
             to stdout (format binary)",
            micros(from),
            micros(to)
        );
        let mut connection = self.pool.acquire().await?;
        let mut stream = connection.copy_out_raw(&statement).await?;
        let mut decoder = super::copy::HourlyDecoder::default();
        while let Some(bytes) = stream.try_next().await? {
            decoder.push(&bytes);
        }
        drop(stream);
        decoder.finish().map_err(|detail| {
            StoreError::Other(sqlx::Error::Protocol(format!(
                "copy of telemetry_hourly: {detail}"
            )))
        })
    }

    /// Day buckets of the hourly rollup (UTC days) of `devices` with `from <= day < to`:
    /// hours, sum and sum of squares of the hourly means, min and max. The float sums follow
    /// the plan's scan order (a parallel aggregate can change it between runs, and the last
    /// bit with it); summing in bucket order (`order by bucket`) made this aggregate 3.2×
    /// slower (6 M rows: 3.5 s against 1.1 s) on the live cycle's path, so it waits for a
    /// day rollup computed once by the refresh.
    pub async fn daily_rows(
        &self,
        devices: &[i32],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<DailyRow>, StoreError> {
        let fetched = sqlx::query_as::<_, (i32, i16, DateTime<Utc>, i64, f64, f64, f64, f64)>(
            "select device_id, metric_id,
                    date_bin(interval '1 day', bucket, timestamptz '1970-01-01 00:00:00+00') as day,
                    count(*), sum(avg), sum(avg * avg), min(min), max(max)
             from telemetry_hourly
             where device_id = any($1) and metric_id = any(array(select id from metrics))
               and bucket >= $2 and bucket < $3
             group by 1, 2, 3",
        )
        .bind(devices)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        Ok(fetched
            .into_iter()
            .map(
                |(device_id, metric_id, day, hours, sum, sum_squares, min, max)| DailyRow {
                    device_id,
                    metric_id,
                    day: micros(day),
                    hours: hours as f64,
                    sum,
                    sum_squares,
                    min,
                    max,
                },
            )
            .collect())
    }

    /// Events of `devices` with `from <= time < to`.
    pub async fn event_records(
        &self,
        devices: &[i32],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let rows: Vec<(i32, DateTime<Utc>, String, String)> = sqlx::query_as(
            "select device_id, time, code, severity from device_events
             where device_id = any($1) and time >= $2 and time < $3",
        )
        .bind(devices)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(device_id, time, code, severity)| EventRecord {
                device_id,
                time: micros(time),
                code,
                severity,
            })
            .collect())
    }

    /// Maintenance and failures of `devices`: `(device, component)` → times (µs).
    #[allow(clippy::type_complexity)]
    pub async fn component_history(
        &self,
        devices: &[i32],
        until: DateTime<Utc>,
    ) -> Result<
        (
            HashMap<(i32, String), Vec<i64>>,
            HashMap<(i32, String), Vec<i64>>,
        ),
        StoreError,
    > {
        let mut maps = Vec::new();
        for table in ["maintenance", "failures"] {
            let rows: Vec<(i32, String, DateTime<Utc>)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "select device_id, component, time from {table}
                     where device_id = any($1) and time < $2 order by time"
                )))
                .bind(devices)
                .bind(until)
                .fetch_all(&self.pool)
                .await?;
            let mut map: HashMap<(i32, String), Vec<i64>> = HashMap::new();
            for (device, component, time) in rows {
                map.entry((device, component))
                    .or_default()
                    .push(micros(time));
            }
            maps.push(map);
        }
        let failures = maps.pop().unwrap_or_default();
        let maintenance = maps.pop().unwrap_or_default();
        Ok((maintenance, failures))
    }

    /// Distinct event codes of devices of `kind` before `until`, most frequent first.
    pub async fn event_codes(
        &self,
        kind: &str,
        until: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "select e.code from device_events e join devices d on d.id = e.device_id
             where d.kind = $1 and e.time < $2
             group by e.code order by count(*) desc, e.code limit 12",
        )
        .bind(kind)
        .bind(until)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(c,)| c).collect())
    }

    /// `(kind, component, failures)` present in `failures` before `until`.
    pub async fn failure_modes_seen(
        &self,
        until: DateTime<Utc>,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query_as(
            "select d.kind, f.component, count(*) from failures f
             join devices d on d.id = f.device_id where f.time < $1
             group by 1, 2 order by 1, 2",
        )
        .bind(until)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Records failures (ground truth; `detail` is the source); an existing (device,
    /// component, time) is kept.
    pub async fn insert_failures(&self, rows: &[ComponentRecord]) -> Result<u64, StoreError> {
        insert_component_records(&self.pool, INSERT_FAILURES, rows).await
    }

    /// Records maintenance (`detail` is the action); an existing (device, component, time)
    /// is kept.
    pub async fn insert_maintenance(&self, rows: &[ComponentRecord]) -> Result<u64, StoreError> {
        insert_component_records(&self.pool, INSERT_MAINTENANCE, rows).await
    }
}

impl StoreTx {
    /// [`Store::insert_failures`] in this transaction.
    pub async fn insert_failures(&mut self, rows: &[ComponentRecord]) -> Result<u64, StoreError> {
        insert_component_records(self.connection(), INSERT_FAILURES, rows).await
    }

    /// [`Store::insert_maintenance`] in this transaction.
    pub async fn insert_maintenance(
        &mut self,
        rows: &[ComponentRecord],
    ) -> Result<u64, StoreError> {
        insert_component_records(self.connection(), INSERT_MAINTENANCE, rows).await
    }
}

const INSERT_FAILURES: &str = "insert into failures (time, device_id, component, source)
     select * from unnest($1::timestamptz[], $2::int[], $3::text[], $4::text[])
     on conflict do nothing";

const INSERT_MAINTENANCE: &str = "insert into maintenance (time, device_id, component, action)
     select * from unnest($1::timestamptz[], $2::int[], $3::text[], $4::text[])
     on conflict do nothing";

/// One statement for the pool and for a transaction alike.
async fn insert_component_records(
    executor: impl sqlx::PgExecutor<'_>,
    sql: &'static str,
    rows: &[ComponentRecord],
) -> Result<u64, StoreError> {
    Ok(sqlx::query(sql)
        .bind(rows.iter().map(|r| r.time).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.device_id).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| r.component.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.detail.as_str()).collect::<Vec<_>>())
        .execute(executor)
        .await?
        .rows_affected())
}
