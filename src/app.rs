//! Composition: resolves the database and broker (real servers or the embedded
//! defaults), migrates, and runs the stages this process was asked to run.

use std::sync::Arc;

use tokio::task::JoinSet;

use crate::api::{ApiError, HttpServer};
use crate::config::Config;
use crate::dispatch::DispatchSettings;
use crate::embedded::broker::{BrokerError, EmbeddedBroker};
use crate::embedded::postgres::{ClusterOptions, PostgresError, PrivateCluster};
use crate::ingest::IngestSettings;
use crate::maintenance::MaintenanceSettings;
use crate::observability::Metrics;
use crate::outreach::OutreachSettings;
use crate::predict::PredictSettings;
use crate::shutdown::Shutdown;
use crate::stage::{StageDeps, StageError, StageTask};
use crate::store::{Store, StoreError};
use crate::training::RetrainSettings;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Postgres(#[from] PostgresError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A stage stopped with its own error (named by the stage).
    #[error(transparent)]
    Stage(#[from] StageError),
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

/// The stages a process can run. A command is a list of them (`serve`: all; `ingest`:
/// ingest; `predict`: scoring, retraining and maintenance); a periodic stage whose interval is switched
/// off in the configuration is left out. The HTTP server runs in every process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageKind {
    /// MQTT ingest (`ingest`).
    Ingest,
    /// Rollup refresh and retention (`maintenance`).
    Maintenance,
    /// Live scoring every `predict.interval` (`predict`).
    Predict,
    /// Scheduled retraining every `train.interval` (`training::retrain`).
    Retrain,
    /// Tickets, incidents and bookings every `dispatch.interval` (`dispatch`).
    Dispatch,
    /// The outbox delivered to customers (`outreach`).
    Outreach,
}

impl StageKind {
    /// `forewarn serve` and the demo.
    pub const SERVE: &'static [StageKind] = &[
        StageKind::Ingest,
        StageKind::Maintenance,
        StageKind::Predict,
        StageKind::Retrain,
        StageKind::Dispatch,
        StageKind::Outreach,
    ];
    /// `forewarn ingest`.
    pub const INGEST: &'static [StageKind] = &[StageKind::Ingest];
    /// `forewarn predict`.
    /// With maintenance: a deployment of `ingest` and `predict` processes still refreshes
    /// the rollup and applies retention (passes from several processes are safe).
    pub const PREDICT: &'static [StageKind] = &[
        StageKind::Predict,
        StageKind::Retrain,
        StageKind::Maintenance,
    ];
    /// `forewarn dispatch`.
    pub const DISPATCH: &'static [StageKind] = &[StageKind::Dispatch];
    /// `forewarn outreach`.
    pub const OUTREACH: &'static [StageKind] = &[StageKind::Outreach];
}

/// A running forewarn: its stages and HTTP server, until `shutdown`.
pub struct App {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub http: HttpServer,
}

impl App {
    pub async fn new(config: &Config, store: Store) -> Result<App, AppError> {
        let http = HttpServer::bind(config.http.addr)
            .await?
            .with_inbound_secret(config.outreach.inbound_secret.clone())
            .with_links(config.outreach.clone(), config.dispatch.clone())
            .with_rate_limit(config.http.rate_limit, config.http.rate_burst);
        Ok(App {
            store,
            metrics: Metrics::new(),
            http,
        })
    }

    /// The tasks of `kinds` (and the HTTP server), bound to this process's dependencies.
    pub fn stage_tasks(
        self,
        config: &Config,
        mqtt_url: &str,
        kinds: &[StageKind],
        shutdown: &Shutdown,
    ) -> Vec<StageTask> {
        let deps = StageDeps {
            store: self.store,
            metrics: self.metrics,
        };
        let mut tasks = vec![StageTask::new(self.http, deps.clone(), shutdown.clone())];
        for kind in kinds {
            match kind {
                StageKind::Ingest => {
                    let mut ingest = config.ingest.clone();
                    if ingest.sessions == 0 && config.mqtt.url.is_none() {
                        // The embedded broker's shared subscriptions lose and duplicate messages.
                        ingest.sessions = 1;
                    }
                    let mut mqtt = config.mqtt.clone();
                    if config.mqtt.url.is_none() {
                        mqtt.protocol = crate::embedded::broker::PROTOCOL;
                    }
                    let settings = IngestSettings {
                        mqtt_url: mqtt_url.to_string(),
                        mqtt,
                        ingest,
                    };
                    tasks.push(StageTask::new(settings, deps.clone(), shutdown.clone()));
                }
                StageKind::Maintenance => {
                    let settings = MaintenanceSettings {
                        storage: config.storage.clone(),
                    };
                    tasks.push(StageTask::new(settings, deps.clone(), shutdown.clone()));
                }
                StageKind::Predict => {
                    if let Some(interval) = config.predict.interval {
                        let settings = PredictSettings {
                            interval,
                            top_factors: config.predict.top_factors,
                            default_model: Some(config.predict.default_model.clone())
                                .filter(|p| !p.as_os_str().is_empty()),
                        };
                        tasks.push(StageTask::new(settings, deps.clone(), shutdown.clone()));
                    }
                }
                StageKind::Dispatch => {
                    if let Some(interval) = config.dispatch.interval {
                        let settings = DispatchSettings {
                            config: config.dispatch.clone(),
                            interval,
                        };
                        tasks.push(StageTask::new(settings, deps.clone(), shutdown.clone()));
                    }
                }
                StageKind::Outreach => {
                    if let Some(interval) = config.outreach.interval {
                        let settings = OutreachSettings {
                            config: config.outreach.clone(),
                            interval,
                        };
                        tasks.push(StageTask::new(settings, deps.clone(), shutdown.clone()));
                    }
                }
                StageKind::Retrain => {
                    if let Some(interval) = config.train.interval {
                        let settings = RetrainSettings {
                            train: config.train.clone(),
                            interval,
                        };
                        tasks.push(StageTask::new(settings, deps.clone(), shutdown.clone()));
                    }
                }
            }
        }
        tasks
    }

    /// Runs the HTTP server and the stages of `kinds` until `shutdown`; each finishes its
    /// current unit of work first. A stage that fails stops the others (a process whose
    /// ingest died must not go on answering its probes as if alive): the first stage error
    /// is returned once all have stopped.
    pub async fn run(
        self,
        config: &Config,
        mqtt_url: &str,
        kinds: &[StageKind],
        shutdown: Shutdown,
    ) -> Result<(), AppError> {
        let (stop_all, shutdown) = shutdown.child();
        let mut running: JoinSet<Result<(), StageError>> = JoinSet::new();
        for task in self.stage_tasks(config, mqtt_url, kinds, &shutdown) {
            tracing::debug!(stage = task.name, "stage starting");
            running.spawn(task.into_future());
        }
        let mut first_error = None;
        while let Some(result) = running.join_next().await {
            if let Err(error) = result
                .map_err(AppError::from)
                .and_then(|r| r.map_err(AppError::from))
            {
                tracing::error!(%error, "stage failed; stopping the others");
                stop_all.trigger();
                first_error.get_or_insert(error);
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}
