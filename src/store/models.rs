//! The model registry: `models` (one row per trained mode of a version, at most one active
//! per failure mode) and `model_promotions` (why each became active).

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Store, StoreError};

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

impl Store {
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
}
