//! The writer of one session: batches received messages, resolves device and metric ids,
//! writes each batch in one transaction, then settles its messages in arrival order (the
//! poller acknowledges them).
//!
//! Up to `ingest.writes_in_flight` batches commit at once, each on its own connection,
//! while the next batch is parsed and resolved; their messages are still settled in
//! arrival order, so a batch is acknowledged only after it and every batch before it have
//! committed.

mod build;
mod parse;
mod resolve;
mod write;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{self, error::TryRecvError};
use tokio::task::JoinHandle;

use super::cache::{BoundedMap, IdCache};
use super::session::Settled;
use super::{CommitReport, IngestDeps, IngestSettings, SharedLimits};
use crate::contract::{TelemetryMessage, ValidationLimits};
use crate::shutdown::{Shutdown, ShutdownTrigger};
use crate::store::{WriteBatch, WriteReport};

pub(super) use parse::{Parsed, Pending};
use write::{RETRY_MIN, Written, back_off, count_error, write_retrying};

/// How long a "not registered" answer is trusted before the database is asked again.
const NEGATIVE_CACHE_TTL: Duration = Duration::from_secs(30);
/// A batch stops waiting for more messages after this long without one.
const LINGER_IDLE_GAP: Duration = Duration::from_millis(2);

/// A batch whose transaction is running on its own task. The task is never aborted: a
/// transaction cancelled mid-statement can leave its pooled connection idle in a
/// transaction that holds row locks (or out of step with the protocol), and the next
/// session's insert of the same redelivered rows then waits on those locks for good. When
/// the writer dies its tasks are told to stop at their next retry instead.
struct InFlight {
    messages: Vec<Pending>,
    task: JoinHandle<(Arc<WriteBatch>, Written)>,
}

pub(super) struct Writer {
    settings: IngestSettings,
    limits: ValidationLimits,
    deps: IngestDeps,
    shared: Arc<SharedLimits>,
    settled: mpsc::UnboundedSender<Settled>,
    devices: IdCache<i32>,
    metrics: IdCache<i16>,
    /// Highest `seq` seen per device, to count gaps; `None` when this session sees only
    /// part of the stream (a shared subscription), where gaps cannot be told from the
    /// messages another member received.
    seq: Option<BoundedMap<i32, u64>>,
    in_flight: VecDeque<InFlight>,
    /// What the write tasks watch: the process's shutdown, or this writer's end.
    tasks_shutdown: Shutdown,
    stop_tasks: ShutdownTrigger,
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Not an abort (see `InFlight`): each task finishes the statement it is in, then
        // gives up at its next retry, unacknowledged, so the broker resends its messages.
        self.stop_tasks.trigger();
    }
}

impl Writer {
    pub(super) fn new(
        settings: &IngestSettings,
        deps: IngestDeps,
        shared: Arc<SharedLimits>,
        settled: mpsc::UnboundedSender<Settled>,
        shutdown: &Shutdown,
    ) -> Writer {
        let capacity = settings.ingest.id_cache_capacity;
        let (stop_tasks, tasks_shutdown) = shutdown.child();
        Writer {
            limits: settings.limits(),
            settings: settings.clone(),
            deps,
            shared,
            settled,
            devices: IdCache::new(capacity, NEGATIVE_CACHE_TTL),
            metrics: IdCache::new(capacity, NEGATIVE_CACHE_TTL),
            seq: settings
                .receives_whole_stream()
                .then(|| BoundedMap::new(capacity)),
            in_flight: VecDeque::new(),
            tasks_shutdown,
            stop_tasks,
        }
    }

    /// Returns true after a clean shutdown (everything written was settled), false when the
    /// session must die without acking (database down at shutdown, the grace period spent,
    /// or an injected crash).
    pub(super) async fn run(
        mut self,
        mut messages: mpsc::UnboundedReceiver<Pending>,
        mut shutdown: Shutdown,
    ) -> bool {
        let max_in_flight = self.settings.ingest.writes_in_flight;
        loop {
            let can_take = self.in_flight.len() < max_in_flight;
            let wake = tokio::select! {
                biased;
                _ = shutdown.wait() => break,
                written = front(&mut self.in_flight), if !self.in_flight.is_empty() => Ok(written),
                received = messages.recv(), if can_take => Err(received),
            };
            let ok = match wake {
                Ok(written) => self.finish_front(written, &mut shutdown).await,
                Err(None) => break,
                Err(Some(first)) => {
                    let batch = self.collect(first, &mut messages).await;
                    self.dispatch(batch, &mut shutdown).await
                }
            };
            if !ok {
                // Nothing of this batch acked: the broker resends it.
                self.stop_in_flight().await;
                return false;
            }
        }
        // Shutdown: stop taking messages; finish the writes in flight and write what has
        // already arrived, within the grace period. Past it, die without acking: what is
        // not committed is redelivered.
        let grace = self.settings.ingest.shutdown_grace;
        match tokio::time::timeout(grace, self.finish_all(&mut messages, &mut shutdown)).await {
            Ok(clean) => clean,
            Err(_) => {
                tracing::warn!(
                    ?grace,
                    "shutdown grace period spent with writes unfinished; leaving them unacknowledged for redelivery"
                );
                false
            }
        }
    }

    /// The session is dying without acks: tells the write tasks to stop at their next
    /// retry and waits for them (at most `ingest.shutdown_grace`), so that none commits
    /// after the next session has written the broker's redelivery of its messages (a
    /// redelivered message without `ts` is recognised only by a committed first copy).
    async fn stop_in_flight(&mut self) {
        self.stop_tasks.trigger();
        let grace = self.settings.ingest.shutdown_grace;
        let in_flight = &mut self.in_flight;
        let waited = tokio::time::timeout(grace, async move {
            for flight in in_flight.iter_mut() {
                let _ = (&mut flight.task).await;
            }
        })
        .await;
        if waited.is_err() {
            tracing::warn!(
                ?grace,
                "write tasks of a dying session still running after the grace period"
            );
        }
    }

    async fn finish_all(
        &mut self,
        messages: &mut mpsc::UnboundedReceiver<Pending>,
        shutdown: &mut Shutdown,
    ) -> bool {
        if !self.finish_in_flight(shutdown).await {
            return false;
        }
        let mut batch = Vec::new();
        while let Ok(received) = messages.try_recv() {
            self.push(&mut batch, received);
        }
        if !batch.is_empty() && !self.dispatch(batch, shutdown).await {
            return false;
        }
        self.finish_in_flight(shutdown).await
    }

    /// Waits for every write in flight and settles it, oldest first.
    async fn finish_in_flight(&mut self, shutdown: &mut Shutdown) -> bool {
        while !self.in_flight.is_empty() {
            let written = front(&mut self.in_flight).await;
            if !self.finish_front(written, shutdown).await {
                return false;
            }
        }
        true
    }

    /// Takes what has already arrived after `first`; when nothing is waiting, lingers up to
    /// `batch_max_age` for more. Under load the commit time itself sets the batch size.
    async fn collect(
        &mut self,
        first: Pending,
        messages: &mut mpsc::UnboundedReceiver<Pending>,
    ) -> Vec<Pending> {
        let max_readings = self.settings.ingest.batch_max_readings;
        let max_age = self.settings.ingest.batch_max_age;
        let started = Instant::now();
        let mut batch = Vec::new();
        let mut n_readings = self.push(&mut batch, first);
        while n_readings < max_readings {
            match messages.try_recv() {
                Ok(received) => n_readings += self.push(&mut batch, received),
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let remaining = max_age.saturating_sub(started.elapsed());
                    if remaining.is_zero() {
                        break;
                    }
                    // Wait only while messages keep coming: a broker that has sent its
                    // whole in-flight window sends nothing more until we ack, and
                    // lingering then only adds latency.
                    match tokio::time::timeout(remaining.min(LINGER_IDLE_GAP), messages.recv())
                        .await
                    {
                        Ok(Some(received)) => n_readings += self.push(&mut batch, received),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
        batch
    }

    fn push(&mut self, batch: &mut Vec<Pending>, pending: Pending) -> usize {
        let n_readings = match &pending.parsed {
            Parsed::Telemetry { message, .. } => message.readings.len(),
            _ => 1,
        };
        batch.push(pending);
        n_readings
    }

    /// Resolves ids and starts the batch's transaction on its own task. Returns false when
    /// shutdown came while the database could not resolve ids.
    async fn dispatch(&mut self, mut messages: Vec<Pending>, shutdown: &mut Shutdown) -> bool {
        let mut delay = RETRY_MIN;
        loop {
            // Raced with shutdown: a lookup can wait for the pool's acquire timeout.
            let resolved = tokio::select! {
                resolved = self.resolve_ids(&mut messages) => resolved,
                _ = shutdown.wait() => return false,
            };
            match resolved {
                Ok(()) => break,
                Err(error) => {
                    if !back_off(&self.deps.metrics, &error, &mut delay, shutdown).await {
                        return false;
                    }
                }
            }
        }
        let batch = Arc::new(self.build(&messages));
        let store = self.deps.store.clone();
        let metrics = self.deps.metrics.clone();
        let task_shutdown = self.tasks_shutdown.clone();
        let task = tokio::spawn(async move {
            let written = write_retrying(&store, &batch, &metrics, task_shutdown).await;
            (batch, written)
        });
        self.in_flight.push_back(InFlight { messages, task });
        true
    }

    /// Settles the oldest batch in flight once its write has ended.
    async fn finish_front(
        &mut self,
        written: Result<(Arc<WriteBatch>, Written), tokio::task::JoinError>,
        shutdown: &mut Shutdown,
    ) -> bool {
        let Some(flight) = self.in_flight.pop_front() else {
            return false;
        };
        let mut messages = flight.messages;
        let (batch, report) = match written {
            Ok((batch, Written::Committed(report))) => (batch, report),
            Ok((_, Written::Rejected(error))) => {
                // The data itself was refused (a bug, or input the contract checks
                // missed). Write the messages one by one, dead-lettering only the ones
                // refused alone, so that the valid ones are not lost with it.
                self.count_error("rejected");
                tracing::error!(%error, n_messages = messages.len(), "batch refused by the database; writing its messages one by one");
                match self.write_one_by_one(&mut messages, shutdown).await {
                    Some((batch, report)) => (Arc::new(batch), report),
                    None => return false,
                }
            }
            Ok((_, Written::Abandoned)) => return false,
            Err(error) => {
                tracing::error!(%error, "batch write task failed");
                return false;
            }
        };
        self.acknowledge(messages, &batch, report)
    }

    /// Records a committed batch and settles its messages, in arrival order.
    fn acknowledge(
        &mut self,
        messages: Vec<Pending>,
        batch: &WriteBatch,
        outcome: WriteReport,
    ) -> bool {
        if let Some(countdown) = &self.deps.crash_after_commits
            && countdown.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1
        {
            tracing::warn!("fault injection: crashing after commit, before acks");
            return false;
        }
        let committed_at = Instant::now();
        let committed_wall = chrono::Utc::now().timestamp_micros();
        let metrics = &self.deps.metrics.ingest;
        metrics.readings.inc_by(outcome.readings_inserted);
        metrics.duplicate_readings.inc_by(
            (batch.telemetry.len() as u64 + batch.unstamped_redelivered.len() as u64)
                .saturating_sub(outcome.readings_inserted),
        );
        if outcome.copy_fell_back {
            metrics.copy_fallbacks.inc();
        }
        metrics.batch_readings.observe(batch.telemetry.len() as f64);
        if let Some(newest) = batch.telemetry.time.iter().max() {
            metrics
                .event_time_lag_seconds
                .set((committed_wall - newest) as f64 / 1e6);
        }
        let mut report = self.deps.commit_observer.as_ref().map(|_| CommitReport {
            n_messages: messages.len(),
            n_readings_inserted: outcome.readings_inserted,
            event_to_commit_micros: Vec::new(),
        });
        for pending in messages {
            let outcome_label = match &pending.parsed {
                Parsed::Rejected { rejection, .. } => {
                    metrics
                        .dead_letters
                        .get_or_create(&vec![("reason", rejection.reason.as_str())])
                        .inc();
                    "dead_letter"
                }
                Parsed::Telemetry {
                    message: TelemetryMessage { skipped, .. },
                    ..
                }
                | Parsed::Ignored { skipped } => {
                    for (reason, n) in skipped.iter() {
                        metrics
                            .skipped_fields
                            .get_or_create(&vec![("reason", reason.as_str())])
                            .inc_by(u64::from(n));
                    }
                    match pending.parsed {
                        Parsed::Ignored { .. } => "ignored",
                        _ => "stored",
                    }
                }
                _ => "stored",
            };
            metrics
                .messages
                .get_or_create(&vec![
                    ("kind", pending.parsed.kind_label()),
                    ("outcome", outcome_label),
                ])
                .inc();
            metrics.receive_to_commit_seconds.observe(
                committed_at
                    .duration_since(pending.received.received_instant)
                    .as_secs_f64(),
            );
            if let (Some(report), Parsed::Telemetry { message, .. }) =
                (report.as_mut(), &pending.parsed)
                && let Some(newest) = message.readings.iter().map(|r| r.time).max()
            {
                report.event_to_commit_micros.push(committed_wall - newest);
            }
            // In arrival order: brokers (rumqttd) disconnect a client that acks out of order.
            if self.settled.send(pending.received.settled()).is_err() {
                return false; // the poller is gone
            }
        }
        if let (Some(report), Some(observer)) = (report, &self.deps.commit_observer) {
            let _ = observer.send(report);
        }
        true
    }

    fn count_error(&self, class: &'static str) {
        count_error(&self.deps.metrics, class);
    }
}

/// Waits for the oldest write in flight (cancel-safe: the task keeps running).
async fn front(
    in_flight: &mut VecDeque<InFlight>,
) -> Result<(Arc<WriteBatch>, Written), tokio::task::JoinError> {
    match in_flight.front_mut() {
        Some(flight) => (&mut flight.task).await,
        None => std::future::pending().await,
    }
}
