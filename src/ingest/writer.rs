//! The writer of one session: batches received messages, resolves device and metric ids,
//! writes the batch in one transaction, then acknowledges its messages in arrival order.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Publish};
use tokio::sync::mpsc::{self, error::TryRecvError};

use super::session::Received;
use super::{CommitReport, IngestDeps, IngestSettings};
use crate::contract::{
    self, DeviceEvent, DeviceStatus, RejectReason, Rejection, TelemetryMessage, TopicKind,
    ValidationLimits,
};
use crate::shutdown::Shutdown;
use crate::store::{DeadLetterRow, EventRow, StatusRow, StoreError, TelemetryColumns, WriteBatch};

/// How long a "not registered" answer is trusted before the database is asked again.
const NEGATIVE_CACHE_TTL: Duration = Duration::from_secs(30);
/// A batch stops waiting for more messages after this long without one.
const LINGER_IDLE_GAP: Duration = Duration::from_millis(2);
/// Retry delays for a database that is down.
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

    fn kind_label(&self) -> &'static str {
        match self {
            Parsed::Telemetry { .. } => "telemetry",
            Parsed::Event { .. } => "events",
            Parsed::Status { .. } => "status",
            Parsed::Rejected {
                kind: Some(kind), ..
            } => kind.as_str(),
            Parsed::Rejected { kind: None, .. } => "unknown",
        }
    }
}

struct Pending {
    received: Received,
    parsed: Parsed,
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

/// Ids known to exist, and ids recently found missing.
#[derive(Default)]
struct IdCache<T> {
    known: HashMap<String, T>,
    missing: HashMap<String, Instant>,
}

impl<T: Copy> IdCache<T> {
    fn get(&self, key: &str) -> Option<T> {
        self.known.get(key).copied()
    }

    /// Records the answer to a lookup of `asked`: found ids are known, the rest missing.
    fn learn(&mut self, asked: Vec<String>, found: Vec<(String, T)>, now: Instant) {
        for (key, id) in found {
            self.missing.remove(&key);
            self.known.insert(key, id);
        }
        for key in asked {
            if !self.known.contains_key(&key) {
                self.missing.insert(key, now);
            }
        }
    }

    fn needs_lookup(&self, key: &str, now: Instant) -> bool {
        !self.known.contains_key(key)
            && self
                .missing
                .get(key)
                .is_none_or(|since| now.duration_since(*since) > NEGATIVE_CACHE_TTL)
    }
}

pub(super) struct Writer {
    settings: IngestSettings,
    limits: ValidationLimits,
    deps: IngestDeps,
    client: AsyncClient,
    devices: IdCache<i32>,
    metrics: IdCache<i16>,
    /// Newest event time per device not yet written to `devices.last_seen_at`.
    last_seen: HashMap<i32, i64>,
    last_seen_flushed: Instant,
    /// Highest `seq` seen per device, to count gaps.
    seq: HashMap<i32, u64>,
}

impl Writer {
    pub(super) fn new(settings: &IngestSettings, deps: IngestDeps, client: AsyncClient) -> Writer {
        Writer {
            limits: settings.limits(),
            settings: settings.clone(),
            deps,
            client,
            devices: IdCache::default(),
            metrics: IdCache::default(),
            last_seen: HashMap::new(),
            last_seen_flushed: Instant::now(),
            seq: HashMap::new(),
        }
    }

    /// Returns true after a clean shutdown (everything written was acked), false when the
    /// session must die without acking (database down at shutdown, or an injected crash).
    pub(super) async fn run(
        mut self,
        mut messages: mpsc::Receiver<Received>,
        mut shutdown: Shutdown,
    ) -> bool {
        let max_readings = self.settings.ingest.batch_max_readings;
        let max_age = self.settings.ingest.batch_max_age;
        let mut batch: Vec<Pending> = Vec::new();
        loop {
            let first = tokio::select! {
                biased;
                _ = shutdown.wait() => break,
                received = messages.recv() => match received {
                    Some(received) => received,
                    None => break,
                },
            };
            let started = Instant::now();
            let mut n_readings = self.push(&mut batch, first);
            // Take what has already arrived; when nothing is waiting, linger up to
            // batch_max_age for more. Under load the commit time itself sets the batch size.
            while n_readings < max_readings {
                match messages.try_recv() {
                    Ok(received) => n_readings += self.push(&mut batch, received),
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) => {
                        let remaining = max_age.saturating_sub(started.elapsed());
                        if remaining.is_zero() {
                            break;
                        }
                        // Wait only while messages keep coming: when the broker has sent
                        // its whole in-flight window it sends nothing more until we ack,
                        // and lingering then only adds latency (rumqttd's window is 100,
                        // Mosquitto's default 20).
                        match tokio::time::timeout(remaining.min(LINGER_IDLE_GAP), messages.recv())
                            .await
                        {
                            Ok(Some(received)) => n_readings += self.push(&mut batch, received),
                            Ok(None) | Err(_) => break,
                        }
                    }
                }
            }
            if !self.flush(&mut batch, &mut shutdown).await {
                return false; // nothing of this batch acked: the broker resends it
            }
        }
        // Shutdown: stop taking messages, but write and ack what has already arrived.
        while let Ok(received) = messages.try_recv() {
            self.push(&mut batch, received);
        }
        let mut no_wait = shutdown.clone();
        if !batch.is_empty() && !self.flush(&mut batch, &mut no_wait).await {
            return false;
        }
        if !self.last_seen.is_empty() {
            return self.flush(&mut batch, &mut no_wait).await;
        }
        true
    }

    fn push(&mut self, batch: &mut Vec<Pending>, received: Received) -> usize {
        let parsed = parse(
            &self.settings.mqtt.topic_prefix,
            &received.publish,
            received.received_at,
            &self.limits,
        );
        let n_readings = match &parsed {
            Parsed::Telemetry { message, .. } => message.readings.len(),
            _ => 1,
        };
        batch.push(Pending { received, parsed });
        n_readings
    }

    /// Writes the batch and acks it. Returns false when shutdown came while the database
    /// was unavailable (the batch is then neither written nor acked: the broker resends it).
    async fn flush(&mut self, batch: &mut Vec<Pending>, shutdown: &mut Shutdown) -> bool {
        let mut delay = RETRY_MIN;
        let (write_batch, outcome) = loop {
            match self.prepare_and_write(batch).await {
                Ok(done) => break done,
                Err(error) if error.is_transient() => {
                    self.count_error("transient");
                    if shutdown.is_triggered() {
                        tracing::warn!(%error, n_messages = batch.len(), "database unavailable at shutdown; leaving messages unacknowledged for redelivery");
                        return false;
                    }
                    tracing::warn!(%error, retry_in = ?delay, n_messages = batch.len(), "database unavailable; holding the batch");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.wait() => {}
                    }
                    delay = (delay * 2).min(RETRY_MAX);
                }
                Err(error) => {
                    // The data itself was refused (a bug, or input the contract checks
                    // missed). Write the messages one by one, dead-lettering any that fail
                    // alone, so that the valid ones are not lost with it.
                    self.count_error("rejected");
                    tracing::error!(%error, n_messages = batch.len(), "batch refused by the database; writing its messages one by one");
                    match self.write_one_by_one(batch, shutdown).await {
                        Some(done) => break done,
                        None => return false,
                    }
                }
            }
        };
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
        metrics
            .duplicate_readings
            .inc_by((write_batch.telemetry.len() as u64).saturating_sub(outcome.readings_inserted));
        if outcome.copy_fell_back {
            metrics.copy_fallbacks.inc();
        }
        metrics
            .batch_readings
            .observe(write_batch.telemetry.len() as f64);
        if let Some(newest) = write_batch.telemetry.time.iter().max() {
            metrics
                .event_time_lag_seconds
                .set((committed_wall - newest) as f64 / 1e6);
        }
        let mut report = self.deps.commit_observer.as_ref().map(|_| CommitReport {
            n_messages: batch.len(),
            n_readings_inserted: outcome.readings_inserted,
            event_to_commit_micros: Vec::new(),
        });
        for pending in batch.drain(..) {
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
            if let Err(error) = self.client.ack(&pending.received.publish).await {
                tracing::warn!(%error, "could not queue an ack (the message will be redelivered)");
            }
            metrics.pending_messages.dec();
        }
        if let (Some(report), Some(observer)) = (report, &self.deps.commit_observer) {
            let _ = observer.send(report);
        }
        true
    }

    fn count_error(&self, class: &'static str) {
        self.deps
            .metrics
            .ingest
            .write_errors
            .get_or_create(&vec![("class", class)])
            .inc();
    }

    async fn write_one_by_one(
        &mut self,
        batch: &mut [Pending],
        shutdown: &mut Shutdown,
    ) -> Option<(WriteBatch, crate::store::WriteReport)> {
        let mut total_batch = WriteBatch::default();
        let mut total = crate::store::WriteReport::default();
        for pending_idx in 0..batch.len() {
            let mut delay = RETRY_MIN;
            loop {
                match self
                    .prepare_and_write(&mut batch[pending_idx..=pending_idx])
                    .await
                {
                    Ok((written, report)) => {
                        total_batch.telemetry.extend(&written.telemetry);
                        total.readings_inserted += report.readings_inserted;
                        break;
                    }
                    Err(error) if error.is_transient() => {
                        if shutdown.is_triggered() {
                            return None;
                        }
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(RETRY_MAX);
                    }
                    Err(error) => {
                        let pending = &mut batch[pending_idx];
                        let kind =
                            pending
                                .received
                                .publish
                                .topic
                                .rsplit('/')
                                .next()
                                .and_then(|k| {
                                    TopicKind::ALL.into_iter().find(|kind| kind.as_str() == k)
                                });
                        pending.parsed = Parsed::Rejected {
                            kind,
                            rejection: Rejection::new(
                                RejectReason::StorageRejected,
                                error.to_string(),
                            ),
                        };
                        // Loop again: the message is now a dead letter, which is writable.
                    }
                }
            }
        }
        Some((total_batch, total))
    }

    /// Resolves ids (registering devices and metrics when configured), turns the batch into
    /// rows and writes it. Messages whose device or metric stays unknown become dead letters.
    async fn prepare_and_write(
        &mut self,
        batch: &mut [Pending],
    ) -> Result<(WriteBatch, crate::store::WriteReport), StoreError> {
        self.resolve_ids(batch).await?;
        let write_batch = self.build(batch);
        let started = Instant::now();
        let report = self.deps.store.write_batch(&write_batch).await?;
        self.deps
            .metrics
            .ingest
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        if !write_batch.last_seen.is_empty() {
            self.last_seen.clear();
            self.last_seen_flushed = Instant::now();
        }
        Ok((write_batch, report))
    }

    async fn resolve_ids(&mut self, batch: &mut [Pending]) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut device_lookups: Vec<String> = batch
            .iter()
            .filter_map(|p| p.parsed.device())
            .filter(|device| self.devices.needs_lookup(device, now))
            .map(str::to_string)
            .collect();
        device_lookups.sort_unstable();
        device_lookups.dedup();
        if !device_lookups.is_empty() {
            let found = self
                .deps
                .store
                .resolve_devices(&device_lookups, self.settings.ingest.auto_register)
                .await?;
            self.devices.learn(device_lookups, found, now);
        }
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
        if !metric_lookups.is_empty() {
            let found = self
                .deps
                .store
                .resolve_metrics(&metric_lookups, self.settings.ingest.open_metric_catalogue)
                .await?;
            self.metrics.learn(metric_lookups, found, now);
        }
        // Messages whose ids stayed unknown become dead letters.
        for pending in batch.iter_mut() {
            let kind = match &pending.parsed {
                Parsed::Telemetry { .. } => TopicKind::Telemetry,
                Parsed::Event { .. } => TopicKind::Events,
                Parsed::Status { .. } => TopicKind::Status,
                Parsed::Rejected { .. } => continue,
            };
            let device = pending.parsed.device().unwrap_or_default();
            let rejection = if self.devices.get(device).is_none() {
                Some(Rejection::new(
                    RejectReason::UnknownDevice,
                    format!("device `{device}`"),
                ))
            } else if let Parsed::Telemetry { message, .. } = &pending.parsed {
                message
                    .readings
                    .iter()
                    .find(|r| self.metrics.get(&r.metric).is_none())
                    .map(|r| {
                        Rejection::new(
                            RejectReason::UnknownMetric,
                            format!("metric `{}`", r.metric),
                        )
                    })
            } else {
                None
            };
            if let Some(rejection) = rejection {
                pending.parsed = Parsed::Rejected {
                    kind: Some(kind),
                    rejection,
                };
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
        for pending in batch {
            let device_id = pending.parsed.device().and_then(|d| self.devices.get(d));
            match (&pending.parsed, device_id) {
                (Parsed::Telemetry { message, .. }, Some(device_id)) => {
                    let mut newest = i64::MIN;
                    for reading in &message.readings {
                        let Some(metric_id) = self.metrics.get(&reading.metric) else {
                            continue;
                        };
                        telemetry.push(
                            reading.time,
                            device_id,
                            metric_id,
                            reading.value,
                            reading.time_estimated,
                        );
                        newest = newest.max(reading.time);
                    }
                    let seen = self.last_seen.entry(device_id).or_insert(newest);
                    *seen = (*seen).max(newest);
                    if let Some((low, high)) = message.seq_range {
                        let last = self.seq.entry(device_id).or_insert(high);
                        if low > last.saturating_add(1) {
                            self.deps.metrics.ingest.seq_gaps.inc_by(low - *last - 1);
                        }
                        *last = (*last).max(high);
                    }
                }
                (Parsed::Event { event, .. }, Some(device_id)) => {
                    write_batch.events.push(EventRow {
                        time: event.time,
                        device_id,
                        code: event.code.clone(),
                        severity: event.severity.as_str(),
                        message: event.message.clone(),
                        time_estimated: event.time_estimated,
                    });
                    let seen = self.last_seen.entry(device_id).or_insert(event.time);
                    *seen = (*seen).max(event.time);
                }
                (Parsed::Status { status, .. }, Some(device_id)) => {
                    // The last status of a device in the batch wins.
                    statuses.insert(
                        device_id,
                        StatusRow {
                            device_id,
                            online: *status == DeviceStatus::Online,
                            changed_at: pending.received.received_at,
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
        write_batch.statuses = statuses.into_values().collect();
        if self.last_seen_flushed.elapsed() >= self.settings.ingest.last_seen_flush
            || batch.is_empty()
        {
            write_batch.last_seen = self
                .last_seen
                .iter()
                .map(|(id, time)| (*id, *time))
                .collect();
        }
        write_batch
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
