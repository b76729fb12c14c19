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
    let StageDeps { store, metrics } = deps;
    let config = settings.train;
    let stride = stride_micros(config.example_stride);
    let mut ticks = Periodic::new(settings.interval, FirstTick::AfterOnePeriod, shutdown);
    while ticks.next().await {
        let started = std::time::Instant::now();
        let trained = train(&store, &config, None, None).await;
        metrics
            .train
            .last_seconds
            .set(started.elapsed().as_secs_f64());
        let outcome = if trained.is_ok() { "trained" } else { "failed" };
        metrics
            .train
            .runs
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
        match trained {
            Ok((artifact, report)) => {
                tracing::info!(version = %report.version, seconds = report.seconds, "challenger trained");
                match promote_if_better(&store, &artifact, stride).await {
                    Ok(decisions) => {
                        let promoted = decisions.iter().filter(|d| d.promoted).count();
                        metrics.train.promotions.inc_by(promoted as u64);
                    }
                    Err(error) => tracing::warn!(%error, "promotion check failed"),
                }
            }
            Err(error) => tracing::warn!(%error, "scheduled retraining failed"),
        }
    }
    Ok(())
}
