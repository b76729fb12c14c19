//! Scheduled retraining, a stage of `serve` and `predict`: every `train.interval`, train a
//! challenger on all data (failures and maintenance written by closed tickets included)
//! and promote it per mode only where it beats the active model.

use std::time::Duration;

use crate::config::TrainConfig;
use crate::shutdown::Shutdown;
use crate::stage::{FirstTick, Periodic, Stage, StageDeps};

use super::{TrainingError, promote_if_better, stride_micros, train};

/// The retraining stage's settings.
#[derive(Debug, Clone)]
pub struct RetrainSettings {
    pub train: TrainConfig,
    /// `train.interval`.
    pub interval: Duration,
}

impl Stage for RetrainSettings {
    const NAME: &'static str = "retrain";
    type Error = TrainingError;

    fn run(
        self,
        deps: StageDeps,
        shutdown: Shutdown,
    ) -> impl std::future::Future<Output = Result<(), TrainingError>> + Send + 'static {
        run(self, deps, shutdown)
    }
}

/// Trains and judges a challenger every `settings.interval` (not at start: the shipped or
/// active model scores first). A failed round is logged; the next tick tries again.
pub async fn run(
    settings: RetrainSettings,
    deps: StageDeps,
    shutdown: Shutdown,
) -> Result<(), TrainingError> {
    let store = deps.store;
    let config = settings.train;
    let stride = stride_micros(config.example_stride);
    let mut ticks = Periodic::new(settings.interval, FirstTick::AfterOnePeriod, shutdown);
    while ticks.next().await {
        match train(&store, &config, None, None).await {
            Ok((artifact, report)) => {
                tracing::info!(version = %report.version, seconds = report.seconds, "challenger trained");
                if let Err(error) = promote_if_better(&store, &artifact, stride).await {
                    tracing::warn!(%error, "promotion check failed");
                }
            }
            Err(error) => tracing::warn!(%error, "scheduled retraining failed"),
        }
    }
    Ok(())
}
