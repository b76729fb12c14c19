//! Schema migrations (`migrations/`, embedded at build time) and the TimescaleDB policies
//! whose values come from configuration.

use sqlx::migrate::Migrator;

use super::{Store, StoreError, interval_literal, read_flavour};
use crate::config::{StorageConfig, TimescaleMode};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// What `forewarn migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub timescaledb: bool,
    pub applied_versions: Vec<i64>,
}

impl Store {
    /// Applies pending migrations (under sqlx's advisory lock, so replicas starting together
    /// are safe) and sets the TimescaleDB policies from `storage`.
    pub async fn migrate(
        &mut self,
        storage: &StorageConfig,
    ) -> Result<MigrationReport, StoreError> {
        let mode = match storage.timescaledb {
            TimescaleMode::Auto => "auto",
            TimescaleMode::Require => "require",
            TimescaleMode::Off => "off",
        };
        let mut connection = self.pool.acquire().await?;
        let applied_before: Vec<i64> = applied_versions(&mut connection).await?;
        // Read by the migrations through current_setting('forewarn.timescaledb').
        sqlx::query("select set_config('forewarn.timescaledb', $1, false)")
            .bind(mode)
            .execute(&mut *connection)
            .await?;
        let result = MIGRATOR.run(&mut *connection).await;
        sqlx::query("reset forewarn.timescaledb")
            .execute(&mut *connection)
            .await
            .ok();
        result?;
        let applied_after = applied_versions(&mut connection).await?;
        drop(connection);

        self.timescaledb = read_flavour(&self.pool).await?.unwrap_or(false);
        if self.timescaledb {
            self.apply_timescale_policies(storage).await?;
        }
        Ok(MigrationReport {
            timescaledb: self.timescaledb,
            applied_versions: applied_after
                .into_iter()
                .filter(|v| !applied_before.contains(v))
                .collect(),
        })
    }

    /// Sets (or replaces) the continuous-aggregate refresh, compression and retention
    /// policies. Replacing is remove + add, so a changed setting takes effect on restart.
    async fn apply_timescale_policies(&self, storage: &StorageConfig) -> Result<(), StoreError> {
        // start_offset => null: refresh every invalidated range, however old, so that
        // backfills and replays (event time in the past) reach the aggregate too.
        sqlx::query(
            "select add_continuous_aggregate_policy('telemetry_hourly',
                 start_offset => null, end_offset => interval '1 hour',
                 schedule_interval => interval '5 minutes', if_not_exists => true)",
        )
        .execute(&self.pool)
        .await?;
        sqlx::query("select remove_compression_policy('telemetry', if_exists => true)")
            .execute(&self.pool)
            .await?;
        if let Some(compress_after) = storage.compress_after {
            sqlx::query(
                "select add_compression_policy('telemetry', compress_after => $1::interval)",
            )
            .bind(interval_literal(compress_after))
            .execute(&self.pool)
            .await?;
        }
        for table in ["telemetry", "device_events"] {
            sqlx::query("select remove_retention_policy($1::regclass, if_exists => true)")
                .bind(table)
                .execute(&self.pool)
                .await?;
            if let Some(retention) = storage.retention {
                sqlx::query(
                    "select add_retention_policy($1::regclass, drop_after => $2::interval)",
                )
                .bind(table)
                .bind(interval_literal(retention))
                .execute(&self.pool)
                .await?;
            }
        }
        Ok(())
    }
}

async fn applied_versions(connection: &mut sqlx::PgConnection) -> Result<Vec<i64>, StoreError> {
    let exists: bool = sqlx::query_scalar("select to_regclass('_sqlx_migrations') is not null")
        .fetch_one(&mut *connection)
        .await?;
    if !exists {
        return Ok(Vec::new());
    }
    Ok(
        sqlx::query_scalar("select version from _sqlx_migrations where success order by version")
            .fetch_all(&mut *connection)
            .await?,
    )
}
