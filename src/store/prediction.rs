//! Queries of training and live scoring: the inputs of features, the labels, the model
//! registry (`models`, `model_promotions`) and `predictions`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Store, StoreError};
use crate::features::{DailyRow, DeviceInfo, EventRecord, HourlyRow};

fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

/// A device as features need it, with its external id.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSummary {
    pub id: i32,
    pub external_id: String,
    pub info: DeviceInfo,
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Set while the device's telemetry has stopped (live scoring's rule): the end of its
    /// newest hour of telemetry.
    pub stale_since: Option<DateTime<Utc>>,
}

/// A `models` row.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRow {
    pub version: String,
    pub failure_mode: String,
    pub algorithm: String,
    pub horizon_hours: f64,
    pub features: serde_json::Value,
    pub metrics: serde_json::Value,
    pub threshold: f64,
    pub artifact_path: String,
    pub data_from: DateTime<Utc>,
    pub data_to: DateTime<Utc>,
    pub active: bool,
}

/// First key of the advisory locks that serialize promotions, one per failure mode (the
/// second key is the hash of the mode's name); "mo" in ASCII.
const PROMOTION_LOCK_CLASS: i32 = 0x6d6f;

/// What a promotion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromotionOutcome {
    /// The model is active now; `previous` was (none: the first model of its mode).
    Promoted { previous: Option<String> },
    /// The model was already the active one: nothing changed, nothing was recorded.
    AlreadyActive,
    /// Another model became active since the caller's comparison: nothing changed.
    ActiveChanged { active: Option<String> },
}

/// A `predictions` row.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionRow {
    pub time: DateTime<Utc>,
    pub device_id: i32,
    pub failure_mode: String,
    pub probability: f64,
    pub horizon_hours: f64,
    pub model_version: String,
    pub above_threshold: bool,
    pub top_factors: serde_json::Value,
}

impl Store {
    /// Devices, optionally of one kind.
    pub async fn device_summaries(
        &self,
        kind: Option<&str>,
    ) -> Result<Vec<DeviceSummary>, StoreError> {
        let rows = sqlx::query(
            "select id, external_id, kind, model, installed_at, last_seen_at, stale_since
             from devices where $1::text is null or kind = $1 order by id",
        )
        .bind(kind)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(DeviceSummary {
                    id: row.try_get("id")?,
                    external_id: row.try_get("external_id")?,
                    info: DeviceInfo {
                        kind: row.try_get("kind")?,
                        model: row.try_get("model")?,
                        installed_at: row
                            .try_get::<Option<DateTime<Utc>>, _>("installed_at")?
                            .map(micros),
                    },
                    last_seen_at: row.try_get("last_seen_at")?,
                    stale_since: row.try_get("stale_since")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

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

    /// Marks devices stale since the given times (a device already stale keeps its time),
    /// and clears the mark of `reporting` ones.
    pub async fn set_stale(
        &self,
        stale: &[(i32, DateTime<Utc>)],
        reporting: &[i32],
    ) -> Result<(), StoreError> {
        if !stale.is_empty() {
            sqlx::query(
                "update devices d set stale_since = s.since
                 from unnest($1::int4[], $2::timestamptz[]) as s (id, since)
                 where d.id = s.id and d.stale_since is null",
            )
            .bind(stale.iter().map(|s| s.0).collect::<Vec<_>>())
            .bind(stale.iter().map(|s| s.1).collect::<Vec<_>>())
            .execute(&self.pool)
            .await?;
        }
        if !reporting.is_empty() {
            sqlx::query(
                "update devices set stale_since = null
                 where id = any($1) and stale_since is not null",
            )
            .bind(reporting)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
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
        Ok(super::copy::copy_binary(
            &mut connection,
            "copy telemetry_hourly (bucket, device_id, metric_id, avg, min, max, stddev, count)
             from stdin (format binary)",
            super::copy::encode_hourly(rows),
        )
        .await?)
    }

    /// Refreshes the planner's statistics and summarizes BRIN ranges (after a bulk load,
    /// as autovacuum would in service).
    pub async fn analyze(&self) -> Result<(), StoreError> {
        sqlx::query("vacuum analyze").execute(&self.pool).await?;
        Ok(())
    }

    /// The metric catalogue: id → name.
    pub async fn metric_names(&self) -> Result<HashMap<i16, String>, StoreError> {
        let rows: Vec<(i16, String)> = sqlx::query_as("select id, name from metrics")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().collect())
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
    /// hours, sum and sum of squares of the hourly means, min and max.
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

    /// First and last hourly bucket of the rollup.
    pub async fn rollup_range(&self) -> Result<Option<(DateTime<Utc>, DateTime<Utc>)>, StoreError> {
        let row: (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
            sqlx::query_as("select min(bucket), max(bucket) from telemetry_hourly")
                .fetch_one(&self.pool)
                .await?;
        Ok(row.0.zip(row.1))
    }

    pub async fn insert_models(&self, rows: &[ModelRow]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for row in rows {
            sqlx::query(
                "insert into models (version, failure_mode, algorithm, horizon_hours, features,
                     metrics, threshold, artifact_path, data_from, data_to, active)
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, false)
                 on conflict (version, failure_mode) do update set
                     algorithm = excluded.algorithm, horizon_hours = excluded.horizon_hours,
                     features = excluded.features, metrics = excluded.metrics,
                     threshold = excluded.threshold, artifact_path = excluded.artifact_path,
                     data_from = excluded.data_from, data_to = excluded.data_to",
            )
            .bind(&row.version)
            .bind(&row.failure_mode)
            .bind(&row.algorithm)
            .bind(row.horizon_hours)
            .bind(&row.features)
            .bind(&row.metrics)
            .bind(row.threshold)
            .bind(&row.artifact_path)
            .bind(row.data_from)
            .bind(row.data_to)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Makes `version` the active model of `failure_mode` whatever is active, and records
    /// why, atomically. Returns the previously active version (`version` itself when it
    /// already was: nothing is recorded then).
    pub async fn promote_model(
        &self,
        version: &str,
        failure_mode: &str,
        reason: &str,
        comparison: &serde_json::Value,
    ) -> Result<Option<String>, StoreError> {
        let outcome = self
            .promote(version, failure_mode, None, reason, comparison)
            .await?;
        Ok(match outcome {
            PromotionOutcome::Promoted { previous } => previous,
            PromotionOutcome::AlreadyActive => Some(version.to_string()),
            // Only a promotion with an expectation can find the active model changed.
            PromotionOutcome::ActiveChanged { active } => active,
        })
    }

    /// Makes `version` the active model of `failure_mode` only if the active model is still
    /// `compared_with` (`None`: no model active), the one the caller's comparison judged;
    /// otherwise changes nothing and answers `ActiveChanged`, so that the caller compares
    /// again with the model that is active now.
    pub async fn promote_model_if_active_is(
        &self,
        version: &str,
        failure_mode: &str,
        compared_with: Option<&str>,
        reason: &str,
        comparison: &serde_json::Value,
    ) -> Result<PromotionOutcome, StoreError> {
        self.promote(
            version,
            failure_mode,
            Some(compared_with),
            reason,
            comparison,
        )
        .await
    }

    /// Promotions of one failure mode are serialized by a transaction-level advisory lock
    /// on the mode, and the active model is read after taking it, in the same transaction:
    /// two promotions never both deactivate the same model and collide on
    /// `models_one_active`, and `expected` is checked against what this transaction replaces.
    async fn promote(
        &self,
        version: &str,
        failure_mode: &str,
        expected: Option<Option<&str>>,
        reason: &str,
        comparison: &serde_json::Value,
    ) -> Result<PromotionOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("select pg_advisory_xact_lock($1, hashtext($2))")
            .bind(PROMOTION_LOCK_CLASS)
            .bind(failure_mode)
            .execute(&mut *tx)
            .await?;
        let active: Option<String> =
            sqlx::query_scalar("select version from models where failure_mode = $1 and active")
                .bind(failure_mode)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(expected) = expected
            && active.as_deref() != expected
        {
            tx.rollback().await?;
            return Ok(PromotionOutcome::ActiveChanged { active });
        }
        if active.as_deref() == Some(version) {
            tx.rollback().await?;
            return Ok(PromotionOutcome::AlreadyActive);
        }
        sqlx::query("update models set active = false where failure_mode = $1 and active")
            .bind(failure_mode)
            .execute(&mut *tx)
            .await?;
        let activated =
            sqlx::query("update models set active = true where version = $1 and failure_mode = $2")
                .bind(version)
                .bind(failure_mode)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if activated != 1 {
            // Deactivating the current model for a version that is not there would leave
            // the mode without a model.
            tx.rollback().await?;
            return Err(StoreError::NoSuchModel {
                version: version.to_string(),
                failure_mode: failure_mode.to_string(),
            });
        }
        sqlx::query(
            "insert into model_promotions (failure_mode, from_version, to_version, reason, comparison)
             values ($1, $2, $3, $4, $5)",
        )
        .bind(failure_mode)
        .bind(&active)
        .bind(version)
        .bind(reason)
        .bind(comparison)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(PromotionOutcome::Promoted { previous: active })
    }

    /// Models rows, optionally only the active ones.
    pub async fn model_rows(&self, only_active: bool) -> Result<Vec<ModelRow>, StoreError> {
        let rows = sqlx::query(
            "select version, failure_mode, algorithm, horizon_hours, features, metrics,
                    threshold, artifact_path, data_from, data_to, active
             from models where active or not $1 order by trained_at, version, failure_mode",
        )
        .bind(only_active)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(ModelRow {
                    version: row.try_get("version")?,
                    failure_mode: row.try_get("failure_mode")?,
                    algorithm: row.try_get("algorithm")?,
                    horizon_hours: row.try_get("horizon_hours")?,
                    features: row.try_get("features")?,
                    metrics: row.try_get("metrics")?,
                    threshold: row.try_get("threshold")?,
                    artifact_path: row.try_get("artifact_path")?,
                    data_from: row.try_get("data_from")?,
                    data_to: row.try_get("data_to")?,
                    active: row.try_get("active")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Writes predictions; a row already written (same device, mode, time, model) is kept.
    /// Binary COPY (a tenth of the statement's time for a large fleet), and when a row is
    /// already there (a replica scored it too) the idempotent insert instead.
    pub async fn insert_predictions(&self, rows: &[PredictionRow]) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        if self.use_copy {
            let mut tx = self.pool.begin().await?;
            let encoded = super::copy::encode_predictions(rows);
            let attempt = super::copy::copy_binary(
                &mut tx,
                "copy predictions (time, device_id, failure_mode, probability, horizon,
                     model_version, above_threshold, top_factors)
                 from stdin (format binary)",
                encoded,
            )
            .await;
            match attempt {
                Ok(n_rows) => {
                    tx.commit().await?;
                    return Ok(n_rows);
                }
                Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("23505") => {
                    tx.rollback().await?;
                }
                Err(error) => return Err(error.into()),
            }
        }
        let result = sqlx::query(
            "insert into predictions (time, device_id, failure_mode, probability, horizon,
                 model_version, above_threshold, top_factors)
             select t, d, m, p, make_interval(secs => h * 3600), v, a, f
             from unnest($1::timestamptz[], $2::int4[], $3::text[], $4::float8[], $5::float8[],
                         $6::text[], $7::bool[], $8::jsonb[]) as u (t, d, m, p, h, v, a, f)
             on conflict do nothing",
        )
        .bind(rows.iter().map(|r| r.time).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.device_id).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| r.failure_mode.clone())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.probability).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.horizon_hours).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| r.model_version.clone())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.above_threshold).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| r.top_factors.clone())
                .collect::<Vec<_>>(),
        )
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    /// The newest prediction time per device (to resume scoring after a restart).
    pub async fn newest_prediction_times(&self) -> Result<HashMap<i32, DateTime<Utc>>, StoreError> {
        let rows: Vec<(i32, DateTime<Utc>)> =
            sqlx::query_as("select device_id, max(time) from predictions group by device_id")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().collect())
    }

    pub async fn count_predictions(&self) -> Result<i64, StoreError> {
        let (count,): (i64,) = sqlx::query_as("select count(*) from predictions")
            .fetch_one(&self.pool)
            .await?;
        Ok(count)
    }
}
