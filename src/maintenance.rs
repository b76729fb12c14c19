//! The maintenance stage: upkeep that TimescaleDB's background jobs do for themselves and
//! plain PostgreSQL needs done (the hourly rollup's dirty hours, retention of raw rows),
//! and, on both flavours, the retention of dead letters.

use std::future::Future;

use crate::config::StorageConfig;
use crate::shutdown::Shutdown;
use crate::stage::{FirstTick, Periodic, Stage, StageDeps};
use crate::store::Store;

/// Dead letters deleted per statement by the maintenance job.
pub const DEAD_LETTER_BATCH_ROWS: i64 = 10_000;

/// What one maintenance pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Hours of `telemetry_hourly` recomputed (plain PostgreSQL).
    pub n_rollup_hours: i32,
    /// Raw rows deleted past `storage.retention` (plain PostgreSQL).
    pub n_rows_past_retention: u64,
    /// Dead letters deleted past `storage.dead_letter_retention` (both flavours).
    pub n_dead_letters_deleted: u64,
}

/// The maintenance stage's settings: the storage section (its interval and retentions).
#[derive(Debug, Clone)]
pub struct MaintenanceSettings {
    pub storage: StorageConfig,
}

impl Stage for MaintenanceSettings {
    const NAME: &'static str = "maintenance";
    /// A pass cannot fail as a whole: a step that fails is logged and retried next pass.
    type Error = std::convert::Infallible;

    fn run(
        self,
        deps: StageDeps,
        shutdown: Shutdown,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        run(self, deps, shutdown)
    }
}

/// Upkeep every `storage.maintenance_interval`: on plain PostgreSQL the hourly rollup's
/// dirty hours and the retention of raw rows (TimescaleDB's background jobs do both
/// there); on both flavours the retention of dead letters.
pub async fn run(
    settings: MaintenanceSettings,
    deps: StageDeps,
    shutdown: Shutdown,
) -> Result<(), std::convert::Infallible> {
    let storage = settings.storage;
    let mut ticks = Periodic::new(
        storage.maintenance_interval,
        FirstTick::Immediately,
        shutdown,
    );
    while ticks.next().await {
        maintenance_pass(&deps.store, &storage).await;
    }
    Ok(())
}

/// One pass of the maintenance job. A step that fails is logged and retried on the next
/// pass; it does not keep the other steps from running.
pub async fn maintenance_pass(store: &Store, storage: &StorageConfig) -> MaintenanceReport {
    let mut report = MaintenanceReport::default();
    if !store.is_timescaledb() {
        match store.refresh_rollup().await {
            Ok(n_hours) => {
                report.n_rollup_hours = n_hours;
                if n_hours > 0 {
                    tracing::debug!(n_hours, "hourly rollup refreshed");
                }
            }
            Err(error) => tracing::warn!(%error, "hourly rollup refresh failed"),
        }
        if let Some(retention) = storage.retention {
            match store.apply_retention(retention).await {
                Ok(n_rows) => {
                    report.n_rows_past_retention = n_rows;
                    if n_rows > 0 {
                        tracing::info!(n_rows, "rows past retention deleted");
                    }
                }
                Err(error) => tracing::warn!(%error, "retention failed"),
            }
        }
    }
    if let Some(retention) = storage.dead_letter_retention {
        match store
            .delete_dead_letters_older_than(retention, DEAD_LETTER_BATCH_ROWS)
            .await
        {
            Ok(n_rows) => {
                report.n_dead_letters_deleted = n_rows;
                if n_rows > 0 {
                    tracing::info!(n_rows, "dead letters past retention deleted");
                }
            }
            Err(error) => tracing::warn!(%error, "dead-letter retention failed"),
        }
    }
    report
}
