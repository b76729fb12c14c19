//! The writer of one session: batches received messages, resolves device and metric ids,
//! writes each batch in one transaction, then settles its messages in arrival order (the
//! poller acknowledges them).
//!
//! Up to `ingest.writes_in_flight` batches commit at once, each on its own connection,
//! while the next batch is parsed and resolved; their messages are still settled in
//! arrival order, so a batch is acknowledged only after it and every batch before it have
//! committed.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::Publish;
use tokio::sync::mpsc::{self, error::TryRecvError};
use tokio::task::JoinHandle;

use super::cache::{BoundedMap, IdCache, RateLimit};
use super::session::{Received, Settled};
use super::{CommitReport, IngestDeps, IngestSettings, SharedLimits};
use crate::contract::{
    self, DeviceEvent, DeviceStatus, RejectReason, Rejection, TelemetryMessage, TopicKind,
    ValidationLimits,
};
use crate::observability::Metrics;
use crate::shutdown::Shutdown;
use crate::store::{
    DeadLetterRow, EventRow, StatusRow, Store, StoreError, TelemetryColumns, WriteBatch,
    WriteReport,
};

/// How long a "not registered" answer is trusted before the database is asked again.
const NEGATIVE_CACHE_TTL: Duration = Duration::from_secs(30);
/// What one parsed reading occupies (time, value, flag and its metric name).
const PARSED_READING_BYTES: usize = 96;
/// A batch stops waiting for more messages after this long without one.
const LINGER_IDLE_GAP: Duration = Duration::from_millis(2);
/// Retry delays for a database that is down or refuses for reasons other than the data.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// A message after parsing, before ids are resolved.
#[derive(Debug)]
enum Parsed {
    Telemetry {
        device: String,
        message: TelemetryMessage,
    },
    Event {
        device: String,
        event: DeviceEvent,
    },
    Status {
        device: String,
        status: DeviceStatus,
    },
    Rejected {
        kind: Option<TopicKind>,
        rejection: Rejection,
    },
}

impl Parsed {
    fn device(&self) -> Option<&str> {
        match self {
            Parsed::Telemetry { device, .. }
            | Parsed::Event { device, .. }
            | Parsed::Status { device, .. } => Some(device),
            Parsed::Rejected { .. } => None,
        }
    }

    fn topic_kind(&self) -> Option<TopicKind> {
        match self {
            Parsed::Telemetry { .. } => Some(TopicKind::Telemetry),
            Parsed::Event { .. } => Some(TopicKind::Events),
            Parsed::Status { .. } => Some(TopicKind::Status),
            Parsed::Rejected { kind, .. } => *kind,
        }
    }

    fn kind_label(&self) -> &'static str {
        self.topic_kind().map_or("unknown", TopicKind::as_str)
    }

    fn reject(&mut self, reason: RejectReason, detail: String) {
        *self = Parsed::Rejected {
            kind: self.topic_kind(),
            rejection: Rejection::new(reason, detail),
        };
    }
}

/// A message and what the contract made of it. The poller parses (so that parsing and the
/// writer's work run on two cores); the writer resolves, writes and settles.
pub(super) struct Pending {
    received: Received,
    parsed: Parsed,
}

impl Pending {
    /// Parses a message and charges its parsed form to its cost (`PARSED_READING_BYTES`
    /// per reading beyond the raw bytes).
    pub(super) fn parse(
        mut received: Received,
        prefix: &str,
        limits: &ValidationLimits,
    ) -> Pending {
        let parsed = parse(prefix, &received.publish, received.received_at, limits);
        if let Parsed::Telemetry { message, .. } = &parsed {
            received.cost += PARSED_READING_BYTES * message.readings.len();
        }
        Pending { received, parsed }
    }

    /// What it is charged against `ingest.max_pending_bytes`.
    pub(super) fn cost(&self) -> usize {
        self.received.cost
    }
}

/// Parses one message against the contract. Pure: the tests of the rules live in
/// `contract`; this only routes by topic.
fn parse(prefix: &str, publish: &Publish, received_at: i64, limits: &ValidationLimits) -> Parsed {
    let topic = match contract::parse_topic(prefix, &publish.topic) {
        Ok(topic) => topic,
        Err(rejection) => {
            return Parsed::Rejected {
                kind: None,
                rejection,
            };
        }
    };
    let device = topic.device_external_id.to_string();
    let payload = &publish.payload;
    let result = match topic.kind {
        TopicKind::Telemetry => contract::parse_telemetry(payload, received_at, limits)
            .map(|message| Parsed::Telemetry { device, message }),
        TopicKind::Events => contract::parse_event(payload, received_at, limits)
            .map(|event| Parsed::Event { device, event }),
        TopicKind::Status => {
            contract::parse_status(payload, limits).map(|status| Parsed::Status { device, status })
        }
    };
    result.unwrap_or_else(|rejection| Parsed::Rejected {
        kind: Some(topic.kind),
        rejection,
    })
}

/// How a batch write ended.
enum Written {
    Committed(WriteReport),
    /// The database refused the data itself (SQLSTATE class 22 or 23).
    Rejected(StoreError),
    /// Shutdown came while the database kept failing: nothing committed, nothing to ack.
    Abandoned,
}

/// A batch whose transaction is running on its own task.
struct InFlight {
    messages: Vec<Pending>,
    task: JoinHandle<(WriteBatch, Written)>,
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
}

impl Drop for Writer {
    fn drop(&mut self) {
        for flight in &self.in_flight {
            flight.task.abort();
        }
    }
}

impl Writer {
    pub(super) fn new(
        settings: &IngestSettings,
        deps: IngestDeps,
        shared: Arc<SharedLimits>,
        settled: mpsc::UnboundedSender<Settled>,
    ) -> Writer {
        let capacity = settings.ingest.id_cache_capacity;
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
                return false; // nothing of this batch acked: the broker resends it
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
        let batch = self.build(&messages);
        let store = self.deps.store.clone();
        let metrics = self.deps.metrics.clone();
        let task_shutdown = shutdown.clone();
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
        written: Result<(WriteBatch, Written), tokio::task::JoinError>,
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
                    Some(done) => done,
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

    async fn write_one_by_one(
        &mut self,
        messages: &mut [Pending],
        shutdown: &mut Shutdown,
    ) -> Option<(WriteBatch, WriteReport)> {
        let mut total_batch = WriteBatch::default();
        let mut total = WriteReport::default();
        for pending_idx in 0..messages.len() {
            let mut delay = RETRY_MIN;
            loop {
                let batch = self.build(&messages[pending_idx..=pending_idx]);
                match write_retrying(
                    &self.deps.store,
                    &batch,
                    &self.deps.metrics,
                    shutdown.clone(),
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

    /// Resolves device and metric ids (registering new ones when configured, within the
    /// registration rate limits). Messages whose ids stay unknown become dead letters.
    async fn resolve_ids(&mut self, batch: &mut [Pending]) -> Result<(), StoreError> {
        let now = Instant::now();
        let ingest = &self.settings.ingest;
        let mut device_lookups: Vec<String> = batch
            .iter()
            .filter_map(|p| p.parsed.device())
            .filter(|device| self.devices.needs_lookup(device, now))
            .map(str::to_string)
            .collect();
        device_lookups.sort_unstable();
        device_lookups.dedup();
        let store = &self.deps.store;
        let limited_devices = resolve_names(
            store,
            &mut self.devices,
            device_lookups,
            ingest.auto_register,
            &self.shared.new_devices,
            now,
            DeviceIds,
        )
        .await?;
        let mut metric_lookups: Vec<String> = batch
            .iter()
            .filter_map(|p| match &p.parsed {
                Parsed::Telemetry { message, .. } => {
                    Some(message.readings.iter().map(|r| r.metric.as_str()))
                }
                _ => None,
            })
            .flatten()
            .filter(|name| self.metrics.needs_lookup(name, now))
            .map(str::to_string)
            .collect();
        metric_lookups.sort_unstable();
        metric_lookups.dedup();
        let limited_metrics = resolve_names(
            store,
            &mut self.metrics,
            metric_lookups,
            ingest.open_metric_catalogue,
            &self.shared.new_metrics,
            now,
            MetricIds,
        )
        .await?;
        for pending in batch.iter_mut() {
            let Some(device) = pending.parsed.device().map(str::to_string) else {
                continue;
            };
            if self.devices.get(&device).is_none() {
                let (reason, detail) = unresolved(
                    "device",
                    &device,
                    &limited_devices,
                    (ingest.max_new_devices_per_minute, "new devices"),
                    RejectReason::UnknownDevice,
                );
                pending.parsed.reject(reason, detail);
                continue;
            }
            let unknown_metric = match &pending.parsed {
                Parsed::Telemetry { message, .. } => message
                    .readings
                    .iter()
                    .find(|r| self.metrics.get(&r.metric).is_none())
                    .map(|r| r.metric.clone()),
                _ => None,
            };
            if let Some(metric) = unknown_metric {
                let (reason, detail) = unresolved(
                    "metric",
                    &metric,
                    &limited_metrics,
                    (ingest.max_new_metrics_per_minute, "new metric names"),
                    RejectReason::UnknownMetric,
                );
                pending.parsed.reject(reason, detail);
            }
        }
        Ok(())
    }

    /// Turns resolved messages into rows. Every id lookup succeeds here (`resolve_ids`
    /// turned the failures into dead letters).
    fn build(&mut self, batch: &[Pending]) -> WriteBatch {
        let mut write_batch = WriteBatch::default();
        let mut telemetry = TelemetryColumns::default();
        let mut statuses: HashMap<i32, StatusRow> = HashMap::new();
        let mut last_seen: HashMap<i32, i64> = HashMap::new();
        for pending in batch {
            let device_id = pending.parsed.device().and_then(|d| self.devices.get(d));
            match (&pending.parsed, device_id) {
                (Parsed::Telemetry { message, .. }, Some(device_id)) => {
                    let mut newest = i64::MIN;
                    let redelivered = pending.received.publish.dup;
                    for reading in &message.readings {
                        let Some(metric_id) = self.metrics.get(&reading.metric) else {
                            continue;
                        };
                        let columns = if redelivered && reading.time_estimated {
                            &mut write_batch.unstamped_redelivered
                        } else {
                            &mut telemetry
                        };
                        columns.push(
                            reading.time,
                            device_id,
                            metric_id,
                            reading.value,
                            reading.time_estimated,
                        );
                        newest = newest.max(reading.time);
                    }
                    let seen = last_seen.entry(device_id).or_insert(newest);
                    *seen = (*seen).max(newest);
                    if let (Some((low, high)), Some(seq)) = (message.seq_range, self.seq.as_mut()) {
                        let last = seq.get(&device_id).unwrap_or(high);
                        if low > last.saturating_add(1) {
                            self.deps.metrics.ingest.seq_gaps.inc_by(low - last - 1);
                        }
                        seq.insert(device_id, last.max(high));
                    }
                }
                (Parsed::Event { event, .. }, Some(device_id)) => {
                    write_batch.events.push(EventRow {
                        time: event.time,
                        device_id,
                        code: event.code.clone(),
                        severity: event.severity.as_str(),
                        unstamped_redelivery: pending.received.publish.dup && event.time_estimated,
                        message: event.message.clone(),
                        time_estimated: event.time_estimated,
                    });
                    let seen = last_seen.entry(device_id).or_insert(event.time);
                    *seen = (*seen).max(event.time);
                }
                (Parsed::Status { status, .. }, Some(device_id)) => {
                    // The last status of a device in the batch wins (arrival order).
                    statuses.insert(
                        device_id,
                        StatusRow {
                            device_id,
                            online: *status == DeviceStatus::Online,
                            changed_at: pending.received.received_at,
                            // A retained status is the broker replaying the last one it
                            // kept (on every subscribe): not news from the device.
                            retained: pending.received.publish.retain,
                        },
                    );
                }
                (Parsed::Rejected { rejection, .. }, _) => {
                    write_batch.dead_letters.push(dead_letter(
                        &pending.received,
                        rejection,
                        self.limits.max_payload_bytes,
                    ));
                }
                (_, None) => debug_assert!(false, "resolve_ids leaves no unresolved device"),
            }
        }
        write_batch.telemetry = telemetry;
        write_batch.last_seen_resolution_millis =
            i64::try_from(self.settings.ingest.last_seen_resolution.as_millis())
                .unwrap_or(i64::MAX);
        write_batch.redelivery_window_secs =
            i64::try_from(self.settings.ingest.redelivery_window.as_secs()).unwrap_or(i64::MAX);
        write_batch.statuses = statuses.into_values().collect();
        write_batch.last_seen = last_seen.into_iter().collect();
        write_batch
    }
}

/// A registry of names with surrogate ids.
trait NameTable {
    type Id: Copy + Send;
    fn lookup(
        store: &Store,
        names: &[String],
    ) -> impl Future<Output = Result<Vec<(String, Self::Id)>, StoreError>> + Send;
    fn register(
        store: &Store,
        names: &[String],
    ) -> impl Future<Output = Result<Vec<(String, Self::Id)>, StoreError>> + Send;
}

struct DeviceIds;
struct MetricIds;

impl NameTable for DeviceIds {
    type Id = i32;
    fn lookup(
        store: &Store,
        names: &[String],
    ) -> impl Future<Output = Result<Vec<(String, i32)>, StoreError>> + Send {
        store.lookup_devices(names)
    }
    fn register(
        store: &Store,
        names: &[String],
    ) -> impl Future<Output = Result<Vec<(String, i32)>, StoreError>> + Send {
        store.register_devices(names)
    }
}

impl NameTable for MetricIds {
    type Id = i16;
    fn lookup(
        store: &Store,
        names: &[String],
    ) -> impl Future<Output = Result<Vec<(String, i16)>, StoreError>> + Send {
        store.lookup_metrics(names)
    }
    fn register(
        store: &Store,
        names: &[String],
    ) -> impl Future<Output = Result<Vec<(String, i16)>, StoreError>> + Send {
        store.register_metrics(names)
    }
}

/// Resolves `names` the cache could not answer: looks them up and, when `register`, adds
/// the missing ones within the rate budget. Returns the names left unregistered for lack
/// of budget; they are asked again with the next message that carries them.
async fn resolve_names<T: NameTable>(
    store: &Store,
    cache: &mut IdCache<T::Id>,
    names: Vec<String>,
    register: bool,
    budget: &RateLimit,
    now: Instant,
    _table: T,
) -> Result<Vec<String>, StoreError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut found = T::lookup(store, &names).await?;
    let mut limited = Vec::new();
    if register && found.len() < names.len() {
        let mut new = crate::store::missing_names(&names, &found);
        limited = new.split_off(budget.take(new.len()));
        if !new.is_empty() {
            found.extend(T::register(store, &new).await?);
        }
    }
    cache.learn(&names, found, now);
    for name in &limited {
        cache.forget_missing(name);
    }
    Ok(limited)
}

/// Why a name stayed without an id: the registration budget was spent on it (`limited`,
/// sorted), or registration is off for its kind (`unknown`).
fn unresolved(
    what: &str,
    name: &str,
    limited: &[String],
    budget: (u32, &str),
    unknown: RejectReason,
) -> (RejectReason, String) {
    if limited.binary_search_by(|l| l.as_str().cmp(name)).is_ok() {
        let (per_minute, new_names) = budget;
        (
            RejectReason::RegistrationLimited,
            format!("{what} `{name}`: more than {per_minute} {new_names} per minute"),
        )
    } else {
        (unknown, format!("{what} `{name}`"))
    }
}

/// Writes `batch`, retrying whatever is not the data's fault with backoff until it commits
/// or shutdown comes.
async fn write_retrying(
    store: &Store,
    batch: &WriteBatch,
    metrics: &Metrics,
    mut shutdown: Shutdown,
) -> Written {
    let mut delay = RETRY_MIN;
    loop {
        let started = Instant::now();
        match store.write_batch(batch).await {
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
async fn back_off(
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

fn count_error(metrics: &Metrics, class: &'static str) {
    metrics
        .ingest
        .write_errors
        .get_or_create(&vec![("class", class)])
        .inc();
}

/// Waits for the oldest write in flight (cancel-safe: the task keeps running).
async fn front(
    in_flight: &mut VecDeque<InFlight>,
) -> Result<(WriteBatch, Written), tokio::task::JoinError> {
    match in_flight.front_mut() {
        Some(flight) => (&mut flight.task).await,
        None => std::future::pending().await,
    }
}

fn dead_letter(
    received: &Received,
    rejection: &Rejection,
    max_payload_bytes: usize,
) -> DeadLetterRow {
    let payload = &received.publish.payload;
    let truncated = payload.len() > max_payload_bytes;
    let kept = if truncated {
        &payload[..max_payload_bytes]
    } else {
        &payload[..]
    };
    if tracing::enabled!(tracing::Level::DEBUG) {
        tracing::debug!(topic = %received.publish.topic, reason = rejection.reason.as_str(), detail = %rejection.detail, "message dead-lettered");
    }
    DeadLetterRow {
        received_at: received.received_at,
        // PostgreSQL text cannot hold NUL; the raw bytes keep the original.
        topic: received.publish.topic.replace('\0', "\u{FFFD}"),
        payload: kept.to_vec(),
        truncated,
        reason: rejection.reason.as_str(),
        detail: rejection.detail.replace('\0', "\u{FFFD}"),
    }
}
