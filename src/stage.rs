//! The shape of every long-running stage. A stage is a folder (`ingest/`, `predict/`,
//! `maintenance/`, later `dispatch/`, `outreach/`) whose typed settings implement
//! [`Stage`]: `run(self, deps, shutdown)` is its whole life, it fails with its own error
//! enum, and it stops when [`Shutdown`] fires after finishing its current unit of work.
//! Periodic stages use [`every`], the one timer-and-shutdown loop. `app` composes a process
//! from a list of stages ([`StageTask`]), so adding a stage adds a list member, not a
//! branch, a variant or a loop.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::observability::Metrics;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// What the process hands every stage: the store (stages communicate only through the
/// database and the broker) and the metrics registry.
#[derive(Clone)]
pub struct StageDeps {
    pub store: Store,
    pub metrics: Arc<Metrics>,
}

/// A long-running part of forewarn, implemented by the stage's settings type.
pub trait Stage: Send + 'static {
    /// The stage's name in logs and in [`StageError`].
    const NAME: &'static str;
    /// The stage's own error enum.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Runs until `shutdown` fires, then finishes the current unit of work and returns.
    fn run(
        self,
        deps: StageDeps,
        shutdown: Shutdown,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static;
}

/// A stage that stopped with an error, named.
#[derive(Debug, thiserror::Error)]
#[error("{stage} stage failed: {source}")]
pub struct StageError {
    pub stage: &'static str,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// A stage bound to its dependencies, ready to be spawned: what `app`'s list holds.
pub struct StageTask {
    pub name: &'static str,
    future: Pin<Box<dyn Future<Output = Result<(), StageError>> + Send>>,
}

impl StageTask {
    pub fn new<S: Stage>(stage: S, deps: StageDeps, shutdown: Shutdown) -> StageTask {
        let future = stage.run(deps, shutdown);
        StageTask {
            name: S::NAME,
            future: Box::pin(async move {
                future.await.map_err(|error| StageError {
                    stage: S::NAME,
                    source: Box::new(error),
                })
            }),
        }
    }

    /// The stage's life as a future.
    pub fn into_future(self) -> Pin<Box<dyn Future<Output = Result<(), StageError>> + Send>> {
        self.future
    }
}

/// When the first tick of [`every`] comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstTick {
    /// At once (a scoring or maintenance loop: work waiting at start is done first).
    Immediately,
    /// After one period (scheduled retraining: the active model scores first).
    AfterOnePeriod,
}

/// The one timer-and-shutdown loop of periodic stages:
///
/// ```ignore
/// let mut ticks = Periodic::new(settings.interval, FirstTick::Immediately, shutdown);
/// while ticks.next().await {
///     cycle().await; // handles its own failure: logged, retried on the next tick
/// }
/// ```
///
/// A tick is never interrupted: shutdown is seen between ticks, so the current unit of work
/// finishes. A tick that overruns its period delays the next one rather than bunching
/// ticks up.
pub struct Periodic {
    ticker: tokio::time::Interval,
    first: Option<FirstTick>,
    shutdown: Shutdown,
}

impl Periodic {
    /// `period` must be positive (configuration validation guarantees it).
    pub fn new(period: Duration, first: FirstTick, shutdown: Shutdown) -> Periodic {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Periodic {
            ticker,
            first: Some(first),
            shutdown,
        }
    }

    /// Waits for the next tick: `true` when it is time to work, `false` once shutdown has
    /// fired (then the stage returns).
    pub async fn next(&mut self) -> bool {
        if self.shutdown.is_triggered() {
            return false;
        }
        if self.first.take() == Some(FirstTick::AfterOnePeriod) {
            // An interval's first tick completes at once; consume it.
            self.ticker.tick().await;
        }
        tokio::select! {
            biased;
            _ = self.shutdown.wait() => false,
            _ = self.ticker.tick() => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A periodic loop whose every tick takes `work` and then counts itself.
    fn spawn_counting_loop(
        first: FirstTick,
        work: Duration,
    ) -> (
        Arc<AtomicUsize>,
        crate::shutdown::ShutdownTrigger,
        tokio::task::JoinHandle<()>,
    ) {
        let ticks = Arc::new(AtomicUsize::new(0));
        let (trigger, shutdown) = Shutdown::new();
        let counted = ticks.clone();
        let running = tokio::spawn(async move {
            let mut periodic = Periodic::new(Duration::from_millis(200), first, shutdown);
            while periodic.next().await {
                tokio::time::sleep(work).await;
                counted.fetch_add(1, Ordering::SeqCst);
            }
        });
        (ticks, trigger, running)
    }

    #[tokio::test]
    async fn ticks_at_once_then_each_period_and_never_after_shutdown() {
        let (ticks, trigger, running) = spawn_counting_loop(FirstTick::Immediately, Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(440)).await;
        // Ticks at 0, 200 and 400 ms (a loaded machine may delay the last).
        let before_shutdown = ticks.load(Ordering::SeqCst);
        assert!(
            (2..=3).contains(&before_shutdown),
            "{before_shutdown} ticks"
        );
        trigger.trigger();
        running.await.unwrap();
        let at_shutdown = ticks.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), at_shutdown);
    }

    #[tokio::test]
    async fn after_one_period_waits_a_period_first() {
        let (ticks, _trigger, _running) =
            spawn_counting_loop(FirstTick::AfterOnePeriod, Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), 0);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_tick_in_progress_finishes_before_the_loop_returns() {
        let (ticks, trigger, running) =
            spawn_counting_loop(FirstTick::Immediately, Duration::from_millis(150));
        tokio::time::sleep(Duration::from_millis(30)).await;
        trigger.trigger();
        running.await.unwrap();
        assert_eq!(ticks.load(Ordering::SeqCst), 1);
    }
}
