//! MQTT ingest: subscribe at QoS 1 on a persistent session, parse and validate each message
//! against the contract, write batches in one transaction, and acknowledge a message only
//! after the batch holding it (its rows or its dead letter) has committed.
//!
//! Each MQTT session is a pair of tasks: the *poller* owns the connection (reads
//! publishes, writes acks and pings) and forwards publishes to the *writer*, which
//! batches, writes, and hands each message back once its batch has committed, in arrival
//! order, for the poller to acknowledge. What a session holds is bounded by its own limits
//! (`ingest.max_pending_messages`, `ingest.max_pending_bytes`): at the limit the poller
//! stops reading (the backlog stays at the broker) but keeps acking (see `session`).

mod cache;
pub mod config;
mod link;
mod session;
mod sparkplug;
pub mod tls;
mod writer;

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::{IngestConfig, MqttConfig};
use crate::contract::{ValidationLimits, duration_micros};
use crate::observability::Metrics;
use crate::shutdown::Shutdown;
use crate::stage::{Stage, StageDeps};
use crate::store::Store;

pub use session::{MqttSetupError, mqtt_options};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Mqtt(#[from] MqttSetupError),
    #[error("ingest task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Everything the ingest stage needs to know.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// The broker, already resolved (embedded broker or `MQTT_URL`).
    pub mqtt_url: String,
    pub mqtt: MqttConfig,
    pub ingest: IngestConfig,
}

impl IngestSettings {
    fn limits(&self) -> ValidationLimits {
        ValidationLimits {
            max_payload_bytes: self.ingest.max_payload_bytes,
            max_future_skew_micros: duration_micros(self.ingest.max_future_skew),
            max_age_micros: self.ingest.max_age.map(duration_micros),
            max_abs_value: self.ingest.max_abs_value,
        }
    }

    /// Whether each session sees every message of the devices it hears from (one session,
    /// no shared subscription): only then can gaps in `seq` counters be counted.
    fn receives_whole_stream(&self) -> bool {
        self.ingest.session_count() == 1 && self.ingest.shared_group.is_none()
    }

    /// The topic filters of session `session_idx`: forewarn's own topics, and Sparkplug B's
    /// for the first session when `ingest.sparkplug` is on (never shared: a host
    /// application sees every message of an edge node, in order).
    fn session_subscriptions(&self, session_idx: usize) -> Vec<String> {
        let mut filters = self.subscriptions();
        if self.reads_sparkplug(session_idx) {
            filters.extend(crate::contract::sparkplug::topic_filters());
        }
        filters
    }

    fn reads_sparkplug(&self, session_idx: usize) -> bool {
        self.ingest.sparkplug && session_idx == 0
    }

    /// The topic filters: shared when a group is configured, or when this process opens
    /// several sessions (which must split the stream, not each take all of it).
    fn subscriptions(&self) -> Vec<String> {
        let prefix = &self.mqtt.topic_prefix;
        let group = match (&self.ingest.shared_group, self.ingest.session_count()) {
            (Some(group), _) => Some(group.as_str()),
            (None, n) if n > 1 => Some(self.mqtt.client_id.as_str()),
            (None, _) => None,
        };
        crate::contract::TopicKind::ALL
            .iter()
            .map(|kind| match group {
                Some(group) => format!("$share/{group}/{prefix}/+/{}", kind.as_str()),
                None => format!("{prefix}/+/{}", kind.as_str()),
            })
            .collect()
    }
}

/// What a committed batch carried, for benchmarks and tests that measure ingest from
/// outside (`forewarn bench ingest`).
#[derive(Debug, Clone, Default)]
pub struct CommitReport {
    pub n_messages: usize,
    pub n_readings_inserted: u64,
    /// Per telemetry message: commit wall-clock time minus its newest reading's `ts` (µs).
    /// When publishers stamp `ts` at publish time this is publish→commit latency.
    pub event_to_commit_micros: Vec<i64>,
}

/// Limits shared by the sessions of one process.
#[derive(Debug)]
pub(crate) struct SharedLimits {
    new_devices: cache::RateLimit,
    new_metrics: cache::RateLimit,
}

/// Shared dependencies of the stage.
#[derive(Clone)]
pub struct IngestDeps {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub commit_observer: Option<mpsc::UnboundedSender<CommitReport>>,
    /// Fault injection for crash tests: when set, the session dies like a killed process
    /// (connection dropped, no acks, no disconnect) right after the commit that brings the
    /// counter to zero. `None` in production.
    pub crash_after_commits: Option<Arc<std::sync::atomic::AtomicUsize>>,
}

impl IngestDeps {
    pub fn new(store: Store, metrics: Arc<Metrics>) -> IngestDeps {
        IngestDeps {
            store,
            metrics,
            commit_observer: None,
            crash_after_commits: None,
        }
    }
}

impl From<StageDeps> for IngestDeps {
    fn from(deps: StageDeps) -> IngestDeps {
        IngestDeps::new(deps.store, deps.metrics)
    }
}

impl Stage for IngestSettings {
    const NAME: &'static str = "ingest";
    type Error = IngestError;

    fn run(
        self,
        deps: StageDeps,
        shutdown: Shutdown,
    ) -> impl std::future::Future<Output = Result<(), IngestError>> + Send + 'static {
        run(self, IngestDeps::from(deps), shutdown)
    }
}

/// Runs the ingest stage until `shutdown` fires: then it stops taking messages, writes
/// and acknowledges what it holds, disconnects, and returns.
pub async fn run(
    settings: IngestSettings,
    deps: IngestDeps,
    shutdown: Shutdown,
) -> Result<(), IngestError> {
    let n_sessions = settings.ingest.session_count();
    deps.metrics.expect_mqtt_sessions(n_sessions);
    let shared = Arc::new(SharedLimits {
        new_devices: cache::RateLimit::per_minute(settings.ingest.max_new_devices_per_minute),
        new_metrics: cache::RateLimit::per_minute(settings.ingest.max_new_metrics_per_minute),
    });
    let endpoint = Arc::new(session::Endpoint::parse(
        &settings.mqtt_url,
        &settings.mqtt,
    )?);
    let mut tasks = Vec::with_capacity(n_sessions);
    for session_idx in 0..n_sessions {
        let client_id = if n_sessions == 1 {
            settings.mqtt.client_id.clone()
        } else {
            format!("{}-{session_idx}", settings.mqtt.client_id)
        };
        let options = session::link_options(&settings, &endpoint, client_id);
        tasks.push(tokio::spawn(session::run_session(
            options,
            session_idx,
            settings.clone(),
            deps.clone(),
            shared.clone(),
            shutdown.clone(),
        )));
    }
    tracing::info!(
        sessions = n_sessions,
        protocol = ?settings.mqtt.protocol,
        subscriptions = ?settings.session_subscriptions(0),
        broker = %crate::config::redact_url(&settings.mqtt_url),
        "ingest started"
    );
    for task in tasks {
        task.await?;
    }
    tracing::info!("ingest stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(shared_group: Option<&str>, sessions: usize) -> IngestSettings {
        let config = crate::config::Config::default();
        IngestSettings {
            mqtt_url: "mqtt://127.0.0.1:1883".into(),
            // The default client id carries the host name; pin it so the group name is known.
            mqtt: MqttConfig {
                client_id: "forewarn-ingest".into(),
                ..config.mqtt
            },
            ingest: IngestConfig {
                shared_group: shared_group.map(str::to_string),
                sessions,
                ..config.ingest
            },
        }
    }

    #[test]
    fn several_sessions_always_split_the_stream() {
        assert_eq!(settings(None, 1).subscriptions()[0], "devices/+/telemetry");
        assert_eq!(
            settings(None, 4).subscriptions()[0],
            "$share/forewarn-ingest/devices/+/telemetry"
        );
        assert_eq!(
            settings(Some("ingest"), 1).subscriptions()[2],
            "$share/ingest/devices/+/status"
        );
        assert_eq!(
            settings(Some("ingest"), 4).subscriptions()[1],
            "$share/ingest/devices/+/events"
        );
    }
}
