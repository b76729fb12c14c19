//! Composition: resolves the database and broker (real servers or the embedded
//! defaults), migrates, and runs the stages this process was asked to run.

use std::sync::Arc;

use tokio::task::JoinSet;

use crate::api::{ApiError, ApiState, HttpServer};
use crate::config::Config;
use crate::embedded::broker::{BrokerError, EmbeddedBroker};
use crate::embedded::postgres::{ClusterOptions, PostgresError, PrivateCluster};
use crate::ingest::{IngestDeps, IngestError, IngestSettings};
use crate::observability::Metrics;
use crate::shutdown::Shutdown;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Postgres(#[from] PostgresError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Predict(#[from] crate::predict::PredictError),
    #[error(transparent)]
    Training(#[from] crate::training::TrainingError),
    #[error("stage task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The database forewarn uses in a private cluster.
pub const PRIVATE_DATABASE: &str = "forewarn";

/// A database URL: `DATABASE_URL` when set, else a private cluster under
/// `embedded.data_dir` (kept alive for the process; it keeps running after, so the next
/// run reuses it).
pub async fn resolve_database(
    config: &Config,
) -> Result<(String, Option<PrivateCluster>), AppError> {
    if let Some(url) = &config.database.url {
        return Ok((url.clone(), None));
    }
    let options = ClusterOptions {
        data_dir: config.embedded.data_dir.join("postgres"),
        port: None,
        durable: true,
    };
    let cluster = tokio::task::spawn_blocking(move || PrivateCluster::start(&options)).await??;
    crate::store::create_database(&cluster.url("postgres"), PRIVATE_DATABASE).await?;
    Ok((cluster.url(PRIVATE_DATABASE), Some(cluster)))
}

/// The URL ingest connects with: `MQTT_URL` when set, else an embedded broker (whose
/// `device_url` is what devices on this machine publish with).
pub async fn resolve_broker(config: &Config) -> Result<(String, Option<EmbeddedBroker>), AppError> {
    if let Some(url) = &config.mqtt.url {
        return Ok((url.clone(), None));
    }
    let broker = crate::embedded::broker::start(
        config.mqtt.embedded_listen,
        config.ingest.max_packet_bytes,
        &config.mqtt.client_id,
    )
    .await?;
    Ok((broker.url(), Some(broker)))
}

/// Connects and applies migrations.
pub async fn open_store(config: &Config, database_url: &str) -> Result<Store, AppError> {
    let mut store = Store::connect(database_url, &config.database, &config.storage).await?;
    let report = store.migrate(&config.storage).await?;
    tracing::info!(timescaledb = report.timescaledb, applied = ?report.applied_versions, "database migrated");
    Ok(store)
}

/// Which stages a process runs.
#[derive(Debug, Clone, Copy)]
pub struct Stages {
    pub ingest: bool,
    pub maintenance: bool,
    /// Live scoring (`predict.interval`) and scheduled retraining (`train.interval`).
    pub predict: bool,
}

impl Stages {
    pub const ALL: Stages = Stages {
        ingest: true,
        maintenance: true,
        predict: true,
    };
}

/// A running forewarn: its stages and HTTP server, until `shutdown`.
pub struct App {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub http: HttpServer,
}

impl App {
    pub async fn new(config: &Config, store: Store) -> Result<App, AppError> {
        let http = HttpServer::bind(config.http.addr).await?;
        Ok(App {
            store,
            metrics: Metrics::new(),
            http,
        })
    }

    /// Runs the stages until `shutdown`; each finishes its current unit of work first.
    pub async fn run(
        self,
        config: &Config,
        mqtt_url: &str,
        stages: Stages,
        shutdown: Shutdown,
    ) -> Result<(), AppError> {
        let mut tasks: JoinSet<Result<(), AppError>> = JoinSet::new();
        let state = ApiState {
            health: self.store.health_check(),
            metrics: self.metrics.clone(),
        };
        let http = self.http.serve(state, shutdown.clone());
        tasks.spawn(async move { http.await.map_err(AppError::from) });
        if stages.ingest {
            let mut ingest = config.ingest.clone();
            if ingest.sessions == 0 && config.mqtt.url.is_none() {
                // The embedded broker's shared subscriptions lose and duplicate messages.
                ingest.sessions = 1;
            }
            let settings = IngestSettings {
                mqtt_url: mqtt_url.to_string(),
                mqtt: config.mqtt.clone(),
                ingest,
            };
            let deps = IngestDeps::new(self.store.clone(), self.metrics.clone());
            let ingest = crate::ingest::run(settings, deps, shutdown.clone());
            tasks.spawn(async move { ingest.await.map_err(AppError::from) });
        }
        if stages.maintenance {
            tasks.spawn(run_maintenance(
                self.store.clone(),
                config.storage.clone(),
                shutdown.clone(),
            ));
        }
        if stages.predict
            && let Some(interval) = config.predict.interval
        {
            let settings = crate::predict::PredictSettings {
                interval,
                top_factors: config.predict.top_factors,
                default_model: Some(config.predict.default_model.clone())
                    .filter(|p| !p.as_os_str().is_empty()),
            };
            let predict = crate::predict::run(
                settings,
                self.store.clone(),
                self.metrics.clone(),
                shutdown.clone(),
            );
            tasks.spawn(async move { predict.await.map_err(AppError::from) });
        }
        if stages.predict
            && let Some(interval) = config.train.interval
        {
            let retrain = crate::training::run_retraining(
                config.train.clone(),
                interval,
                self.store.clone(),
                shutdown.clone(),
            );
            tasks.spawn(async move { retrain.await.map_err(AppError::from) });
        }
        let mut first_error = None;
        while let Some(result) = tasks.join_next().await {
            if let Err(error) = result.map_err(AppError::from).and_then(|r| r) {
                tracing::error!(%error, "stage failed");
                first_error.get_or_insert(error);
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

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

/// Upkeep every `storage.maintenance_interval`: on plain PostgreSQL the hourly rollup's
/// dirty hours and the retention of raw rows (TimescaleDB's background jobs do both
/// there); on both flavours the retention of dead letters.
async fn run_maintenance(
    store: Store,
    storage: crate::config::StorageConfig,
    mut shutdown: Shutdown,
) -> Result<(), AppError> {
    let mut ticker = tokio::time::interval(storage.maintenance_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            _ = ticker.tick() => {}
        }
        maintenance_pass(&store, &storage).await;
    }
}

/// One pass of the maintenance job. A step that fails is logged and retried on the next
/// pass; it does not keep the other steps from running.
pub async fn maintenance_pass(
    store: &Store,
    storage: &crate::config::StorageConfig,
) -> MaintenanceReport {
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
