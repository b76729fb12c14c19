//! Logs and metrics: the tracing subscriber, and every Prometheus metric forewarn exposes,
//! declared in one place so that `/metrics` is documented by this file.

mod process;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

type Labels = Vec<(&'static str, &'static str)>;

/// The ingest stage's metrics.
#[derive(Debug)]
pub struct IngestMetrics {
    /// Messages received, by topic kind and outcome (`stored`, `dead_letter`).
    pub messages: Family<Labels, Counter>,
    /// Readings written (new rows; redelivered duplicates are counted separately).
    pub readings: Counter,
    /// Readings that were already stored (redeliveries, devices resending).
    pub duplicate_readings: Counter,
    /// Dead letters by reason.
    pub dead_letters: Family<Labels, Counter>,
    /// Fields skipped in messages that were otherwise stored, by reason (`not_numeric`,
    /// `nested`, `unknown_key`, `invalid_name`, `non_finite`, `out_of_range`); a message
    /// the broker redelivers counts its skipped fields again, like `messages`.
    pub skipped_fields: Family<Labels, Counter>,
    /// Readings per committed batch.
    pub batch_readings: Histogram,
    /// Seconds from the start of a batch's transaction to its commit.
    pub commit_seconds: Histogram,
    /// Seconds from a message's receipt to the commit of its batch.
    pub receive_to_commit_seconds: Histogram,
    /// Wall-clock time minus the newest event time committed (how far behind ingest is; in
    /// an accelerated simulation this is the simulated clock's distance from now).
    pub event_time_lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Batches whose COPY hit the unique index and were written with the idempotent insert.
    pub copy_fallbacks: Counter,
    /// Failed batch commits, by class (`transient` is retried; `rejected` splits the batch).
    pub write_errors: Family<Labels, Counter>,
    /// Gaps seen in devices' `seq` counters (messages lost or not yet arrived).
    pub seq_gaps: Counter,
    /// Sparkplug B rebirth requests sent (NCMD `Node Control/Rebirth`).
    pub sparkplug_rebirth_requests: Counter,
    /// MQTT connection errors (each is followed by a reconnect with backoff).
    pub mqtt_connection_errors: Counter,
    /// Messages received and not yet acknowledged (all sessions).
    pub pending_messages: Gauge,
    /// What those messages are charged against `ingest.max_pending_bytes` (all sessions).
    pub pending_bytes: Gauge,
    /// Times a session reached its pending limit and stopped reading from the broker.
    pub read_pauses: Counter,
    /// Seconds sessions spent not reading because of their pending limit.
    pub read_paused_seconds: Counter<f64, AtomicU64>,
    /// Acks not sent because their message came on an earlier connection (the broker
    /// redelivers it on the new one).
    pub stale_acks_dropped: Counter,
    /// Ingest's MQTT sessions currently connected.
    pub mqtt_sessions_connected: Gauge,
    /// 1 while the session (by client id) is connected, 0 while it is not.
    pub mqtt_session_connected: Family<KindLabels, Gauge>,
}

/// Labels naming a device kind (dynamic, unlike the fixed label sets above).
pub type KindLabels = Vec<(&'static str, String)>;

/// The predict stage's metrics.
#[derive(Debug)]
pub struct PredictMetrics {
    /// Predictions written.
    pub predictions: Counter,
    /// Devices whose telemetry stopped (`devices.stale_since` set): not scored.
    pub stale_devices: Gauge,
    /// Devices not scored in the last cycle because a component is broken (failed, not
    /// repaired yet): training has no examples there either.
    pub broken_devices: Gauge,
    /// Devices of kinds that have no active model: not scored.
    pub devices_without_model: Gauge,
    /// Cycles in which loading, scoring or writing one kind failed, by kind (the other
    /// kinds were still scored).
    pub kind_errors: Family<KindLabels, Counter>,
    /// Seconds per scoring cycle (load, features, scoring, write).
    pub cycle_seconds: Histogram,
    /// Cycles by outcome (`ok`, `failed`).
    pub cycles: Family<Labels, Counter>,
    /// Predictions written by the last cycle.
    pub last_cycle_predictions: Gauge,
    /// 1 for the model version scoring each failure mode.
    pub model_info: Family<KindLabels, Gauge>,
}

/// The dispatch stage's metrics.
#[derive(Debug)]
pub struct DispatchMetrics {
    /// What passes did, by action (`signal`, `opened`, `merged`, `escalated`, `cancelled`,
    /// `incident`, `held`, `released`, `booked`, `slot_taken`, `unbookable`, `message`).
    pub actions: Family<KindLabels, Counter>,
    /// Passes by outcome (`ok`, `failed`).
    pub passes: Family<Labels, Counter>,
    /// Seconds per pass.
    pub pass_seconds: Histogram,
}

/// The outreach stage's metrics.
#[derive(Debug)]
pub struct OutreachMetrics {
    /// Attempts by outcome (`sent`, `retry`, `rejected`, `deferred`, `failed`) and channel.
    pub attempts: Family<Labels, Counter>,
    /// Outcomes a worker could not write because its claim had run out (another worker
    /// took the message).
    pub fenced: Counter,
    /// Seconds per batch (claim, render, send, write).
    pub batch_seconds: Histogram,
}

/// The retraining stage's metrics (`train.interval`).
#[derive(Debug)]
pub struct TrainMetrics {
    /// Scheduled trainings by outcome (`trained`, `failed`).
    pub runs: Family<Labels, Counter>,
    /// Seconds the last scheduled training took.
    pub last_seconds: Gauge<f64, AtomicU64>,
    /// Challengers promoted, per failure mode decision.
    pub promotions: Counter,
}

/// Every metric of the process, and the readiness flags `/readyz` reads.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub ingest: IngestMetrics,
    pub predict: PredictMetrics,
    pub train: TrainMetrics,
    pub dispatch: DispatchMetrics,
    pub outreach: OutreachMetrics,
    /// Sessions the ingest stage opens (0: this process does not ingest).
    mqtt_sessions_expected: AtomicI64,
    /// Why ingest's writes are failing right now (`None` when they are not).
    ingest_failure: Mutex<Option<String>>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut root = Registry::default();
        // `process_*` as every Prometheus client names them, without our prefix.
        root.register_collector(Box::new(process::ProcessCollector));
        let registry = root.sub_registry_with_prefix("forewarn");
        let build_info = Family::<KindLabels, Gauge>::default();
        build_info
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())])
            .set(1);
        registry.register(
            "build_info",
            "1, labelled with the version of this build",
            build_info,
        );
        let ingest = IngestMetrics {
            messages: Family::default(),
            readings: Counter::default(),
            duplicate_readings: Counter::default(),
            dead_letters: Family::default(),
            skipped_fields: Family::default(),
            batch_readings: Histogram::new(exponential_buckets(1.0, 4.0, 10)),
            commit_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            receive_to_commit_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            event_time_lag_seconds: Gauge::default(),
            copy_fallbacks: Counter::default(),
            write_errors: Family::default(),
            seq_gaps: Counter::default(),
            sparkplug_rebirth_requests: Counter::default(),
            mqtt_connection_errors: Counter::default(),
            pending_messages: Gauge::default(),
            pending_bytes: Gauge::default(),
            read_pauses: Counter::default(),
            read_paused_seconds: Counter::default(),
            stale_acks_dropped: Counter::default(),
            mqtt_sessions_connected: Gauge::default(),
            mqtt_session_connected: Family::default(),
        };
        let sub = registry.sub_registry_with_prefix("ingest");
        sub.register(
            "messages",
            "MQTT messages received, by kind and outcome",
            ingest.messages.clone(),
        );
        sub.register("readings", "Readings written", ingest.readings.clone());
        sub.register(
            "duplicate_readings",
            "Readings already stored (redeliveries)",
            ingest.duplicate_readings.clone(),
        );
        sub.register(
            "dead_letters",
            "Messages dead-lettered, by reason",
            ingest.dead_letters.clone(),
        );
        sub.register(
            "skipped_fields",
            "Fields skipped in messages otherwise stored, by reason",
            ingest.skipped_fields.clone(),
        );
        sub.register(
            "batch_readings",
            "Readings per committed batch",
            ingest.batch_readings.clone(),
        );
        sub.register(
            "commit_seconds",
            "Batch transaction time",
            ingest.commit_seconds.clone(),
        );
        sub.register(
            "receive_to_commit_seconds",
            "Time from receiving a message to committing it",
            ingest.receive_to_commit_seconds.clone(),
        );
        sub.register(
            "event_time_lag_seconds",
            "Wall clock minus the newest committed event time",
            ingest.event_time_lag_seconds.clone(),
        );
        sub.register(
            "copy_fallbacks",
            "Batches written by the idempotent insert after COPY hit a duplicate",
            ingest.copy_fallbacks.clone(),
        );
        sub.register(
            "write_errors",
            "Failed batch writes, by class",
            ingest.write_errors.clone(),
        );
        sub.register(
            "seq_gaps",
            "Gaps in device seq counters",
            ingest.seq_gaps.clone(),
        );
        sub.register(
            "sparkplug_rebirth_requests",
            "Sparkplug B rebirth requests sent to edge nodes",
            ingest.sparkplug_rebirth_requests.clone(),
        );
        sub.register(
            "mqtt_connection_errors",
            "MQTT connection errors",
            ingest.mqtt_connection_errors.clone(),
        );
        sub.register(
            "pending_messages",
            "Messages received and not yet acknowledged",
            ingest.pending_messages.clone(),
        );
        sub.register(
            "pending_bytes",
            "Bytes charged for messages received and not yet acknowledged",
            ingest.pending_bytes.clone(),
        );
        sub.register(
            "read_pauses",
            "Times a session stopped reading at its pending limit",
            ingest.read_pauses.clone(),
        );
        sub.register(
            "read_paused_seconds",
            "Seconds sessions spent not reading at their pending limit",
            ingest.read_paused_seconds.clone(),
        );
        sub.register(
            "stale_acks_dropped",
            "Acks dropped because their message came on an earlier connection",
            ingest.stale_acks_dropped.clone(),
        );
        sub.register(
            "mqtt_sessions_connected",
            "Ingest MQTT sessions connected",
            ingest.mqtt_sessions_connected.clone(),
        );
        sub.register(
            "mqtt_session_connected",
            "1 while the ingest session (by client id) is connected",
            ingest.mqtt_session_connected.clone(),
        );
        let predict = PredictMetrics {
            predictions: Counter::default(),
            stale_devices: Gauge::default(),
            broken_devices: Gauge::default(),
            devices_without_model: Gauge::default(),
            kind_errors: Family::default(),
            cycle_seconds: Histogram::new(exponential_buckets(0.05, 2.0, 14)),
            cycles: Family::default(),
            last_cycle_predictions: Gauge::default(),
            model_info: Family::default(),
        };
        let sub = registry.sub_registry_with_prefix("predict");
        sub.register(
            "predictions",
            "Predictions written",
            predict.predictions.clone(),
        );
        sub.register(
            "stale_devices",
            "Devices whose telemetry stopped: not scored",
            predict.stale_devices.clone(),
        );
        sub.register(
            "broken_devices",
            "Devices not scored in the last cycle because a component is broken",
            predict.broken_devices.clone(),
        );
        sub.register(
            "devices_without_model",
            "Devices of kinds with no active model: not scored",
            predict.devices_without_model.clone(),
        );
        sub.register(
            "kind_errors",
            "Cycles in which one kind failed to load, score or write, by kind",
            predict.kind_errors.clone(),
        );
        sub.register(
            "cycle_seconds",
            "Seconds per scoring cycle: load, features, scoring, write",
            predict.cycle_seconds.clone(),
        );
        sub.register(
            "cycles",
            "Scoring cycles by outcome",
            predict.cycles.clone(),
        );
        sub.register(
            "last_cycle_predictions",
            "Predictions written by the last cycle",
            predict.last_cycle_predictions.clone(),
        );
        sub.register(
            "model_info",
            "1 for the model version scoring each failure mode",
            predict.model_info.clone(),
        );
        let dispatch = DispatchMetrics {
            actions: Family::default(),
            passes: Family::default(),
            pass_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
        };
        let sub = registry.sub_registry_with_prefix("dispatch");
        sub.register(
            "actions",
            "What dispatch passes did, by action",
            dispatch.actions.clone(),
        );
        sub.register(
            "passes",
            "Dispatch passes by outcome",
            dispatch.passes.clone(),
        );
        sub.register(
            "pass_seconds",
            "Seconds per dispatch pass",
            dispatch.pass_seconds.clone(),
        );
        let outreach = OutreachMetrics {
            attempts: Family::default(),
            fenced: Counter::default(),
            batch_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
        };
        let sub = registry.sub_registry_with_prefix("outreach");
        sub.register(
            "attempts",
            "Delivery attempts by outcome and channel",
            outreach.attempts.clone(),
        );
        sub.register(
            "fenced",
            "Outcomes not written because the worker's claim had run out",
            outreach.fenced.clone(),
        );
        sub.register(
            "batch_seconds",
            "Seconds per outreach batch",
            outreach.batch_seconds.clone(),
        );
        let train = TrainMetrics {
            runs: Family::default(),
            last_seconds: Gauge::default(),
            promotions: Counter::default(),
        };
        let sub = registry.sub_registry_with_prefix("train");
        sub.register("runs", "Scheduled trainings by outcome", train.runs.clone());
        sub.register(
            "last_seconds",
            "Seconds the last scheduled training took",
            train.last_seconds.clone(),
        );
        sub.register(
            "promotions",
            "Challengers promoted, per failure mode",
            train.promotions.clone(),
        );
        Arc::new(Metrics {
            registry: root,
            ingest,
            predict,
            train,
            dispatch,
            outreach,
            mqtt_sessions_expected: AtomicI64::new(0),
            ingest_failure: Mutex::new(None),
        })
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Called by the ingest stage: from now on `/readyz` requires all its sessions connected.
    pub fn expect_mqtt_sessions(&self, sessions: usize) {
        self.mqtt_sessions_expected
            .store(sessions as i64, Ordering::Relaxed);
    }

    /// A session connected (`true`) or lost its connection (`false`); each session reports
    /// each change once.
    pub fn set_session_connected(&self, client_id: &str, connected: bool) {
        self.ingest
            .mqtt_session_connected
            .get_or_create(&vec![("session", client_id.to_string())])
            .set(i64::from(connected));
        if connected {
            self.ingest.mqtt_sessions_connected.inc();
        } else {
            self.ingest.mqtt_sessions_connected.dec();
        }
    }

    /// `None` when no stage of this process uses the broker; else whether every ingest
    /// session is connected.
    pub fn mqtt_ready(&self) -> Option<bool> {
        let expected = self.mqtt_sessions_expected.load(Ordering::Relaxed);
        (expected > 0).then(|| self.ingest.mqtt_sessions_connected.get() >= expected)
    }

    /// Ingest's writes started failing (`Some(why)`) or work again (`None`).
    pub fn set_ingest_failure(&self, failure: Option<String>) {
        *self
            .ingest_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = failure;
    }

    /// Why ingest's writes are failing right now, for `/readyz`.
    pub fn ingest_failure(&self) -> Option<String> {
        self.ingest_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Installs the global tracing subscriber (text or JSON). `RUST_LOG` overrides the filter.
pub fn init_tracing(config: &LogConfig, rust_log: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_new(rust_log.unwrap_or(&config.filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    drop(result);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter (`info`, `forewarn=debug,sqlx=warn`); `RUST_LOG` overrides it.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            filter: "info,sqlx=warn,rumqttd=off".into(),
        }
    }
}

impl LogConfig {
    /// Rejects what would panic or misbehave later, with one sentence naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.filter) {
            return Err(ConfigError::Invalid(format!(
                "log.filter = {:?} is not allowed: it must be a tracing filter such as \"info,sqlx=warn\" ({error})",
                self.filter
            )));
        }

        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric the shipped Grafana dashboard (`deploy/grafana/forewarn.json`) queries
    /// is one this process exports.
    #[test]
    fn the_dashboard_queries_only_metrics_that_exist() {
        let metrics = Metrics::new();
        // Families show a series only once one exists.
        let one = || vec![("reason", "x")];
        metrics.ingest.dead_letters.get_or_create(&one()).inc();
        metrics.ingest.skipped_fields.get_or_create(&one()).inc();
        metrics.ingest.messages.get_or_create(&one()).inc();
        metrics.ingest.write_errors.get_or_create(&one()).inc();
        metrics.set_session_connected("fw-1", true);
        metrics.predict.cycles.get_or_create(&one()).inc();
        metrics
            .predict
            .kind_errors
            .get_or_create(&vec![("kind", "washer".to_string())])
            .inc();
        metrics
            .predict
            .model_info
            .get_or_create(&vec![("failure_mode", "m".to_string())])
            .set(1);
        metrics.train.runs.get_or_create(&one()).inc();
        let exposition = metrics.render();
        let dashboard = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/grafana/forewarn.json"
        ))
        .unwrap();
        let mut names = Vec::new();
        for (start, _) in dashboard.match_indices(['f', 'p']) {
            let rest = &dashboard[start..];
            if (rest.starts_with("forewarn_") || rest.starts_with("process_"))
                && (start == 0 || !dashboard.as_bytes()[start - 1].is_ascii_alphanumeric())
            {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                names.push(name);
            }
        }
        assert!(names.len() > 20, "{names:?}");
        for name in names {
            let found = exposition
                .lines()
                .any(|line| line.starts_with(&name) && line[name.len()..].starts_with(['{', ' ']));
            assert!(
                found,
                "the dashboard queries {name}, which /metrics does not export"
            );
        }
    }
}
