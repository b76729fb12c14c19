//! Writing a batch: retried with backoff while the failure is not the data's fault, and
//! message by message when the database refuses the data, so only the refused messages
//! become dead letters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Writer;
use super::parse::{Parsed, Pending};
use crate::contract::RejectReason;
use crate::observability::Metrics;
use crate::shutdown::Shutdown;
use crate::store::{Store, StoreError, WriteBatch, WriteReport};

/// Retry delays for a database that is down or refuses for reasons other than the data.
pub(super) const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// How a batch write ended.
pub(super) enum Written {
    Committed(WriteReport),
    /// The database refused the data itself (SQLSTATE class 22 or 23).
    Rejected(StoreError),
    /// Shutdown came while the database kept failing: nothing committed, nothing to ack.
    Abandoned,
}

impl Writer {
    pub(super) async fn write_one_by_one(
        &mut self,
        messages: &mut [Pending],
        shutdown: &mut Shutdown,
    ) -> Option<(WriteBatch, WriteReport)> {
        let mut total_batch = WriteBatch::default();
        let mut total = WriteReport::default();
        for pending_idx in 0..messages.len() {
            let mut delay = RETRY_MIN;
            loop {
                let batch = Arc::new(self.build(&messages[pending_idx..=pending_idx]));
                match write_retrying(
                    &self.deps.store,
                    &batch,
                    &self.deps.metrics,
                    self.tasks_shutdown.clone(),
                )
                .await
                {
                    Written::Committed(report) => {
                        total_batch.telemetry.extend(&batch.telemetry);
                        total_batch
                            .unstamped_redelivered
                            .extend(&batch.unstamped_redelivered);
                        total.readings_inserted += report.readings_inserted;
                        break;
                    }
                    Written::Abandoned => return None,
                    Written::Rejected(error) => {
                        let pending = &mut messages[pending_idx];
                        if matches!(pending.parsed, Parsed::Rejected { .. }) {
                            // Even its dead letter was refused: never spin; wait, retry, and
                            // let shutdown end it (unacknowledged, so it comes back).
                            tracing::error!(%error, topic = %pending.received.publish.topic, "dead letter refused by the database");
                            if !back_off(&self.deps.metrics, &error, &mut delay, shutdown).await {
                                return None;
                            }
                            continue;
                        }
                        pending
                            .parsed
                            .reject(RejectReason::StorageRejected, error.to_string());
                        // Loop again: the message is now a dead letter, which is writable.
                    }
                }
            }
        }
        Some((total_batch, total))
    }
}

/// Writes `batch`, retrying whatever is not the data's fault with backoff until it commits
/// or shutdown comes.
pub(super) async fn write_retrying(
    store: &Store,
    batch: &Arc<WriteBatch>,
    metrics: &Metrics,
    mut shutdown: Shutdown,
) -> Written {
    let mut delay = RETRY_MIN;
    loop {
        let started = Instant::now();
        match store.write_batch_shared(batch.clone()).await {
            Ok(report) => {
                metrics
                    .ingest
                    .commit_seconds
                    .observe(started.elapsed().as_secs_f64());
                metrics.set_ingest_failure(None);
                return Written::Committed(report);
            }
            Err(error) if error.is_data_rejection() => return Written::Rejected(error),
            Err(error) => {
                if !back_off(metrics, &error, &mut delay, &mut shutdown).await {
                    return Written::Abandoned;
                }
            }
        }
    }
}

/// After a failure that is not the data's fault: counts it, marks ingest unhealthy, and
/// sleeps before the next attempt (doubling `delay`). Returns false when shutdown has come:
/// the caller gives up without acking, so the broker redelivers.
pub(super) async fn back_off(
    metrics: &Metrics,
    error: &StoreError,
    delay: &mut Duration,
    shutdown: &mut Shutdown,
) -> bool {
    record_failure(metrics, error);
    if shutdown.is_triggered() {
        tracing::warn!(%error, "database failing at shutdown; leaving messages unacknowledged for redelivery");
        return false;
    }
    tracing::warn!(%error, retry_in = ?*delay, "database failing; holding the messages");
    tokio::select! {
        _ = tokio::time::sleep(*delay) => {}
        _ = shutdown.wait() => {}
    }
    *delay = (*delay * 2).min(RETRY_MAX);
    true
}

fn record_failure(metrics: &Metrics, error: &StoreError) {
    count_error(
        metrics,
        if error.is_transient() {
            "transient"
        } else {
            "retried"
        },
    );
    metrics.set_ingest_failure(Some(error.to_string()));
}

pub(super) fn count_error(metrics: &Metrics, class: &'static str) {
    metrics
        .ingest
        .write_errors
        .get_or_create(&vec![("class", class)])
        .inc();
}
