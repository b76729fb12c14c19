//! Telemetry: the ingest write path — one transaction per batch holding telemetry, events,
//! status changes, last-seen times, dead letters and the rollup's dirty hours — and the
//! maintenance of what it writes: the rollup refresh, retention, dead-letter retention.
//! Binary COPY is the fast path; a batch that hits the unique index (a redelivery) is
//! rolled back to a savepoint and written again with `insert … on conflict do nothing`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Store, StoreError, copy, interval_literal, is_unique_violation};
use crate::contract::EpochMicros;
use crate::features::HourlyRow;

/// Telemetry rows in columns, as the database takes them in arrays.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelemetryColumns {
    pub time: Vec<EpochMicros>,
    pub device_id: Vec<i32>,
    pub metric_id: Vec<i16>,
    pub value: Vec<f64>,
    pub time_estimated: Vec<bool>,
}

impl TelemetryColumns {
    pub fn len(&self) -> usize {
        self.time.len()
    }

    pub fn is_empty(&self) -> bool {
        self.time.is_empty()
    }

    pub fn push(
        &mut self,
        time: EpochMicros,
        device_id: i32,
        metric_id: i16,
        value: f64,
        time_estimated: bool,
    ) {
        self.time.push(time);
        self.device_id.push(device_id);
        self.metric_id.push(metric_id);
        self.value.push(value);
        self.time_estimated.push(time_estimated);
    }

    pub fn extend(&mut self, other: &TelemetryColumns) {
        self.time.extend_from_slice(&other.time);
        self.device_id.extend_from_slice(&other.device_id);
        self.metric_id.extend_from_slice(&other.metric_id);
        self.value.extend_from_slice(&other.value);
        self.time_estimated.extend_from_slice(&other.time_estimated);
    }

    pub fn clear(&mut self) {
        self.time.clear();
        self.device_id.clear();
        self.metric_id.clear();
        self.value.clear();
        self.time_estimated.clear();
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub time: EpochMicros,
    /// A redelivery (MQTT DUP) of an event that had no `ts`: stored only when no event
    /// with the same code and message was stamped within the redelivery window before it.
    pub unstamped_redelivery: bool,
    pub device_id: i32,
    pub code: String,
    pub severity: &'static str,
    pub message: String,
    pub time_estimated: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatusRow {
    pub device_id: i32,
    pub online: bool,
    /// When forewarn received it (status payloads carry no time).
    pub changed_at: EpochMicros,
    /// Replayed by the broker from its retained copy (on every subscribe), not sent now:
    /// it sets the status only of a device that has none, and never moves `last_seen_at`.
    pub retained: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterRow {
    pub received_at: EpochMicros,
    pub topic: String,
    pub payload: Vec<u8>,
    pub truncated: bool,
    pub reason: &'static str,
    pub detail: String,
}

/// Everything one commit writes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    pub telemetry: TelemetryColumns,
    /// Readings without `ts` from a redelivered message (MQTT DUP): their receive time is
    /// new, so the unique index cannot recognise them. Each is stored only when the same
    /// device and metric has no receive-stamped reading of the same value within
    /// `redelivery_window_secs` before it (the first delivery's row).
    pub unstamped_redelivered: TelemetryColumns,
    pub redelivery_window_secs: i64,
    pub events: Vec<EventRow>,
    pub statuses: Vec<StatusRow>,
    /// `(device_id, newest event time)`: advances `devices.last_seen_at`, when it moves it
    /// by at least `last_seen_resolution_millis` (so that a busy device's row is not
    /// rewritten by every batch).
    pub last_seen: Vec<(i32, EpochMicros)>,
    pub last_seen_resolution_millis: i64,
    pub dead_letters: Vec<DeadLetterRow>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.telemetry.is_empty()
            && self.unstamped_redelivered.is_empty()
            && self.events.is_empty()
            && self.statuses.is_empty()
            && self.last_seen.is_empty()
            && self.dead_letters.is_empty()
    }
}

/// What a commit did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Readings that were new (redelivered ones are not counted).
    pub readings_inserted: u64,
    pub events_inserted: u64,
    /// COPY hit the unique index and the batch was written with the idempotent insert.
    pub copy_fell_back: bool,
}

fn timestamps(micros: impl Iterator<Item = EpochMicros>) -> Vec<DateTime<Utc>> {
    micros
        .map(|t| DateTime::from_timestamp_micros(t).unwrap_or_default())
        .collect()
}

impl Store {
    /// Writes the batch in one transaction. On error nothing is written, and the caller
    /// retries (transient errors) or splits the batch (rejected data).
    ///
    /// The transaction runs on a task of its own, so a caller that stops waiting (a
    /// timeout, a session that dies, a shutdown grace period spent) never cancels it
    /// mid-statement: sqlx leaves a connection cancelled inside a COPY or a transaction out
    /// of step with the server, or idle in a transaction that holds the rows' locks, and the
    /// next write of the same rows (the broker's redelivery) then waits on them for good.
    /// The write completes or fails on its own; its outcome is only not reported.
    pub async fn write_batch(&self, batch: &WriteBatch) -> Result<WriteReport, StoreError> {
        self.write_batch_shared(Arc::new(batch.clone())).await
    }

    /// [`Store::write_batch`] for a caller that keeps its batch after the write (ingest acks
    /// and retries with it): the task shares the batch instead of copying it.
    pub async fn write_batch_shared(
        &self,
        batch: Arc<WriteBatch>,
    ) -> Result<WriteReport, StoreError> {
        let store = self.clone();
        match tokio::spawn(async move { store.write_batch_to_end(&batch).await }).await {
            Ok(written) => written,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            // The runtime is shutting down.
            Err(_) => Err(StoreError::Unavailable(sqlx::Error::PoolClosed)),
        }
    }

    async fn write_batch_to_end(&self, batch: &WriteBatch) -> Result<WriteReport, StoreError> {
        let mut report = WriteReport::default();
        let mut tx = self.pool.begin().await?;

        if !batch.dead_letters.is_empty() {
            let rows = &batch.dead_letters;
            sqlx::query(
                "insert into dead_letters (received_at, topic, payload, truncated, reason, detail)
                 select * from unnest($1::timestamptz[], $2::text[], $3::bytea[], $4::bool[], $5::text[], $6::text[])",
            )
            .bind(timestamps(rows.iter().map(|r| r.received_at)))
            .bind(rows.iter().map(|r| r.topic.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.payload.as_slice()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.truncated).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.reason).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.detail.as_str()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }

        let window = format!("{} seconds", batch.redelivery_window_secs);
        for redelivered in [false, true] {
            let rows: Vec<&EventRow> = batch
                .events
                .iter()
                .filter(|r| r.unstamped_redelivery == redelivered)
                .collect();
            if rows.is_empty() {
                continue;
            }
            report.events_inserted += sqlx::query(if redelivered {
                "insert into device_events (time, device_id, code, severity, message, time_estimated)
                 select e.* from unnest($1::timestamptz[], $2::int[], $3::text[], $4::text[], $5::text[], $6::bool[])
                      as e (time, device_id, code, severity, message, time_estimated)
                 where not exists (
                     select 1 from device_events d
                     where d.device_id = e.device_id and d.code = e.code
                       and d.message is not distinct from e.message and d.time_estimated
                       and d.time > e.time - $7::interval and d.time <= e.time)
                 on conflict do nothing"
            } else {
                "insert into device_events (time, device_id, code, severity, message, time_estimated)
                 select * from unnest($1::timestamptz[], $2::int[], $3::text[], $4::text[], $5::text[], $6::bool[])
                 on conflict do nothing"
            })
            .bind(timestamps(rows.iter().map(|r| r.time)))
            .bind(rows.iter().map(|r| r.device_id).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.code.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.severity).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.message.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.time_estimated).collect::<Vec<_>>())
            .bind(&window)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }

        let rows = &batch.unstamped_redelivered;
        if !rows.is_empty() {
            report.readings_inserted += sqlx::query(
                "insert into telemetry (time, device_id, metric_id, value, time_estimated)
                 select r.time, r.device_id, r.metric_id, r.value, true
                 from unnest($1::timestamptz[], $2::int[], $3::smallint[], $4::float8[])
                      as r (time, device_id, metric_id, value)
                 where not exists (
                     select 1 from telemetry t
                     where t.device_id = r.device_id and t.metric_id = r.metric_id
                       and t.time_estimated and t.value = r.value
                       and t.time > r.time - $5::interval and t.time <= r.time)
                 on conflict do nothing",
            )
            .bind(timestamps(rows.time.iter().copied()))
            .bind(&rows.device_id)
            .bind(&rows.metric_id)
            .bind(&rows.value)
            .bind(&window)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }

        let rows = &batch.telemetry;
        if !rows.is_empty() {
            let mut copied = None;
            if self.use_copy {
                sqlx::query("savepoint telemetry_copy")
                    .execute(&mut *tx)
                    .await?;
                let encoded = copy::encode_telemetry(rows);
                let attempt = copy::copy_binary(
                    &mut tx,
                    "copy telemetry (time, device_id, metric_id, value, time_estimated) from stdin (format binary)",
                    encoded,
                )
                .await;
                match attempt {
                    Ok(n_rows) => {
                        sqlx::query("release savepoint telemetry_copy")
                            .execute(&mut *tx)
                            .await?;
                        copied = Some(n_rows);
                    }
                    Err(error) if is_unique_violation(&error) => {
                        sqlx::query("rollback to savepoint telemetry_copy")
                            .execute(&mut *tx)
                            .await?;
                        report.copy_fell_back = true;
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            report.readings_inserted += match copied {
                Some(n_rows) => n_rows,
                None => sqlx::query(
                    "insert into telemetry (time, device_id, metric_id, value, time_estimated)
                     select * from unnest($1::timestamptz[], $2::int[], $3::smallint[], $4::float8[], $5::bool[])
                     on conflict do nothing",
                )
                .bind(timestamps(rows.time.iter().copied()))
                .bind(&rows.device_id)
                .bind(&rows.metric_id)
                .bind(&rows.value)
                .bind(&rows.time_estimated)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
            };
        }

        if !self.timescaledb {
            // The hours this batch touched, for the plain-PostgreSQL rollup. Append-only
            // (no unique index) so that concurrent writers never wait on each other here.
            let mut hours: Vec<EpochMicros> = rows
                .time
                .iter()
                .chain(&batch.unstamped_redelivered.time)
                .map(|t| t - t.rem_euclid(3_600_000_000))
                .collect();
            hours.sort_unstable();
            hours.dedup();
            if !hours.is_empty() {
                sqlx::query(
                    "insert into telemetry_hourly_dirty (bucket) select unnest($1::timestamptz[])",
                )
                .bind(timestamps(hours.into_iter()))
                .execute(&mut *tx)
                .await?;
            }
        }

        // Device rows last, and only the ones that change, locked in id order: concurrent
        // transactions (several writes in flight, several sessions) then touch few rows and
        // wait briefly on each other instead of deadlocking.
        let last_seen_ids: Vec<i32> = batch.last_seen.iter().map(|r| r.0).collect();
        let last_seen_times = timestamps(batch.last_seen.iter().map(|r| r.1));
        let resolution = format!("{} milliseconds", batch.last_seen_resolution_millis);
        if !batch.statuses.is_empty() || !batch.last_seen.is_empty() {
            let status_ids: Vec<i32> = batch.statuses.iter().map(|r| r.device_id).collect();
            sqlx::query(
                "select 1 from devices d
                 where d.id = any($1)
                    or exists (select 1 from unnest($2::int[], $3::timestamptz[]) as s (device_id, time)
                               where s.device_id = d.id
                                 and (d.last_seen_at is null or d.last_seen_at <= s.time - $4::interval))
                 order by d.id for update",
            )
            .bind(&status_ids)
            .bind(&last_seen_ids)
            .bind(&last_seen_times)
            .bind(&resolution)
            .execute(&mut *tx)
            .await?;
        }

        if !batch.statuses.is_empty() {
            let rows = &batch.statuses;
            // Status changes apply in order: an older one never overwrites a newer one. A
            // retained one only fills in a device that has no status yet.
            sqlx::query(
                "update devices d set online = s.online, status_changed_at = s.changed_at,
                        last_seen_at = case when s.retained then d.last_seen_at
                                            else greatest(d.last_seen_at, s.changed_at) end
                 from unnest($1::int[], $2::bool[], $3::timestamptz[], $4::bool[])
                      as s (device_id, online, changed_at, retained)
                 where d.id = s.device_id
                   and (d.status_changed_at is null
                        or (not s.retained and d.status_changed_at <= s.changed_at))",
            )
            .bind(rows.iter().map(|r| r.device_id).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.online).collect::<Vec<_>>())
            .bind(timestamps(rows.iter().map(|r| r.changed_at)))
            .bind(rows.iter().map(|r| r.retained).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }

        if !batch.last_seen.is_empty() {
            sqlx::query(
                "update devices d set last_seen_at = s.time
                 from unnest($1::int[], $2::timestamptz[]) as s (device_id, time)
                 where d.id = s.device_id
                   and (d.last_seen_at is null or d.last_seen_at <= s.time - $3::interval)",
            )
            .bind(&last_seen_ids)
            .bind(&last_seen_times)
            .bind(&resolution)
            .execute(&mut *tx)
            .await?;
        }

        tx.commit().await?;
        Ok(report)
    }

    /// Straight COPY of `rows` into a scratch table shaped like `telemetry` (unique index
    /// included): the database's ceiling, measured by `forewarn bench ingest` beside the
    /// end-to-end rate. Returns the rows written.
    pub async fn bench_copy_ceiling(
        &self,
        batches: &[TelemetryColumns],
    ) -> Result<u64, StoreError> {
        let mut connection = self.pool.acquire().await?;
        sqlx::query("drop table if exists bench_copy_ceiling")
            .execute(&mut *connection)
            .await?;
        sqlx::query(
            "create table bench_copy_ceiling (like telemetry including defaults including indexes)",
        )
        .execute(&mut *connection)
        .await?;
        let mut n_rows = 0;
        for rows in batches {
            let mut tx = sqlx::Connection::begin(&mut *connection).await?;
            let mut copy_in = tx
                .copy_in_raw(
                    "copy bench_copy_ceiling (time, device_id, metric_id, value, time_estimated) from stdin (format binary)",
                )
                .await?;
            copy_in.send(copy::encode_telemetry(rows)).await?;
            n_rows += copy_in.finish().await?;
            tx.commit().await?;
        }
        sqlx::query("drop table bench_copy_ceiling")
            .execute(&mut *connection)
            .await?;
        Ok(n_rows)
    }

    /// Counts rows of `telemetry` (tests and benchmarks).
    pub async fn count_telemetry(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("select count(*) from telemetry")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Writes rollup rows directly (plain PostgreSQL only, where `telemetry_hourly` is a
    /// table): benchmarks build a large fleet's lookback without its raw telemetry.
    pub async fn copy_hourly_rollup(&self, rows: &[HourlyRow]) -> Result<u64, StoreError> {
        if self.timescaledb {
            return Err(StoreError::Unsupported(
                "writing telemetry_hourly directly (a continuous aggregate on TimescaleDB)",
            ));
        }
        let mut connection = self.pool.acquire().await?;
        Ok(copy::copy_binary(
            &mut connection,
            "copy telemetry_hourly (bucket, device_id, metric_id, avg, min, max, stddev, count)
             from stdin (format binary)",
            copy::encode_hourly(rows),
        )
        .await?)
    }

    /// Recomputes the hours of `telemetry_hourly` that ingest marked dirty (plain
    /// PostgreSQL; a no-op on TimescaleDB). Returns the number of hours recomputed.
    pub async fn refresh_rollup(&self) -> Result<i32, StoreError> {
        Ok(
            sqlx::query_scalar("select forewarn_refresh_telemetry_hourly()")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Materialises the continuous aggregate now (TimescaleDB) or recomputes dirty hours.
    /// Queries give the same answer on both flavours after this.
    pub async fn refresh_rollup_now(&self) -> Result<(), StoreError> {
        if self.timescaledb {
            sqlx::query("call refresh_continuous_aggregate('telemetry_hourly', null, null)")
                .execute(&self.pool)
                .await?;
        } else {
            self.refresh_rollup().await?;
        }
        Ok(())
    }

    /// Deletes raw rows older than `retention` (plain PostgreSQL; TimescaleDB drops whole
    /// chunks through its retention policy instead).
    pub async fn apply_retention(&self, retention: Duration) -> Result<u64, StoreError> {
        if self.timescaledb {
            return Ok(0);
        }
        let interval = interval_literal(retention);
        let mut deleted = 0;
        for statement in [
            "delete from telemetry where time < now() - $1::interval",
            "delete from device_events where time < now() - $1::interval",
            "delete from telemetry_hourly where bucket < now() - $1::interval",
            "delete from predictions where time < now() - $1::interval",
        ] {
            deleted += sqlx::query(statement)
                .bind(&interval)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(deleted)
    }

    /// Deletes dead letters received more than `retention` ago, `batch_rows` at a time, each
    /// batch its own statement (locks, WAL and the time an autovacuum waits stay bounded
    /// however far behind it is). `dead_letters` is a plain table on both flavours, so this
    /// is the retention on TimescaleDB too. Returns the number deleted.
    pub async fn delete_dead_letters_older_than(
        &self,
        retention: Duration,
        batch_rows: i64,
    ) -> Result<u64, StoreError> {
        debug_assert!(batch_rows > 0);
        let interval = interval_literal(retention);
        let mut deleted = 0;
        loop {
            // The cut-off is computed once per batch; a letter crossing it between batches
            // is taken by the next pass.
            let n_rows = sqlx::query(
                "delete from dead_letters where id in (
                     select id from dead_letters
                     where received_at < now() - $1::interval
                     limit $2)",
            )
            .bind(&interval)
            .bind(batch_rows)
            .execute(&self.pool)
            .await?
            .rows_affected();
            deleted += n_rows;
            if n_rows < batch_rows.max(1) as u64 {
                return Ok(deleted);
            }
        }
    }
}
