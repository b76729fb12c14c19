//! `predictions` and what live scoring reads of the devices: the scores written each
//! cycle, resumed after a restart, and the device summaries it chooses from.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Store, StoreError, micros};
use crate::features::DeviceInfo;

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
                    upsert_device_risk(&mut tx, rows).await?;
                    tx.commit().await?;
                    return Ok(n_rows);
                }
                Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("23505") => {
                    tx.rollback().await?;
                }
                Err(error) => return Err(error.into()),
            }
        }
        let mut tx = self.pool.begin().await?;
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
        .execute(&mut *tx)
        .await?;
        upsert_device_risk(&mut tx, rows).await?;
        tx.commit().await?;
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

/// Keeps `device_risk` (each device's newest score per failure mode, what the fleet-risk
/// list reads) in the transaction of the scores, and announces them to live listeners
/// (`forewarn_changes`, delivered at commit). A score older than the one kept changes
/// nothing (a replica writing a late cycle).
async fn upsert_device_risk(
    connection: &mut sqlx::PgConnection,
    rows: &[PredictionRow],
) -> Result<(), StoreError> {
    let mut newest: HashMap<(i32, &str), &PredictionRow> = HashMap::new();
    for row in rows {
        newest
            .entry((row.device_id, row.failure_mode.as_str()))
            .and_modify(|kept| {
                if row.time >= kept.time {
                    *kept = row;
                }
            })
            .or_insert(row);
    }
    let mut newest: Vec<&PredictionRow> = newest.into_values().collect();
    // One order for every writer: two replicas upserting the same devices cannot deadlock.
    newest.sort_by(|a, b| (a.device_id, &a.failure_mode).cmp(&(b.device_id, &b.failure_mode)));
    sqlx::query(
        "insert into device_risk (device_id, failure_mode, time, probability, above_threshold,
                                  model_version, top_factors)
         select d, m, t, p, a, v, f
         from unnest($1::int4[], $2::text[], $3::timestamptz[], $4::float8[], $5::bool[],
                     $6::text[], $7::jsonb[]) as u (d, m, t, p, a, v, f)
         on conflict (device_id, failure_mode) do update set
             time = excluded.time, probability = excluded.probability,
             above_threshold = excluded.above_threshold,
             model_version = excluded.model_version, top_factors = excluded.top_factors
         where device_risk.time <= excluded.time",
    )
    .bind(newest.iter().map(|r| r.device_id).collect::<Vec<_>>())
    .bind(
        newest
            .iter()
            .map(|r| r.failure_mode.clone())
            .collect::<Vec<_>>(),
    )
    .bind(newest.iter().map(|r| r.time).collect::<Vec<_>>())
    .bind(newest.iter().map(|r| r.probability).collect::<Vec<_>>())
    .bind(newest.iter().map(|r| r.above_threshold).collect::<Vec<_>>())
    .bind(
        newest
            .iter()
            .map(|r| r.model_version.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        newest
            .iter()
            .map(|r| r.top_factors.clone())
            .collect::<Vec<_>>(),
    )
    .execute(&mut *connection)
    .await?;
    sqlx::query("select pg_notify('forewarn_changes', $1)")
        .bind(serde_json::json!({"type": "prediction", "count": rows.len()}).to_string())
        .execute(&mut *connection)
        .await?;
    Ok(())
}
