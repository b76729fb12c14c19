//! Configuration: one TOML file plus environment overrides, parsed once at the binary edge
//! and passed down as typed structs. Every key is documented here and in the README.
//!
//! Environment: `DATABASE_URL`, `MQTT_URL` and `FOREWARN_HTTP_ADDR` are the stable names;
//! any other key is `FOREWARN_<SECTION>__<KEY>` (e.g. `FOREWARN_INGEST__SHARED_GROUP=ingest`).
//! `FOREWARN_CONFIG` names the file (default `forewarn.toml` when it exists).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error(
        "environment variable {name} does not name a config key (expected FOREWARN_<SECTION>__<KEY>)"
    )]
    BadEnvName { name: String },
    #[error("environment variable {name}={value:?} is not valid for {key}: expected {expected}")]
    BadEnvValue {
        name: String,
        key: String,
        value: String,
        expected: String,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub database: DatabaseConfig,
    pub mqtt: MqttConfig,
    pub ingest: IngestConfig,
    pub storage: StorageConfig,
    pub http: HttpConfig,
    pub embedded: EmbeddedConfig,
    pub log: LogConfig,
    pub train: TrainConfig,
    pub predict: PredictConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://…`; env `DATABASE_URL`. Unset: a private throwaway cluster is started
    /// from the PostgreSQL server binaries found on the machine.
    pub url: Option<String>,
    /// Size of the connection pool.
    pub max_connections: u32,
    /// How long to wait for a connection from the pool.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            max_connections: 8,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// `mqtt://host:port` or `mqtts://host:port` (user and password in the URL); env
    /// `MQTT_URL`. Unset: an embedded in-memory broker is started in-process.
    pub url: Option<String>,
    /// Client id of the ingest session. Stable across restarts so that the broker keeps the
    /// persistent session and redelivers what was not acknowledged. Replicas need distinct ids:
    /// the default, `forewarn-ingest-<host name>` ([`default_client_id`]), gives each machine
    /// or pod its own.
    pub client_id: String,
    /// Topic prefix: devices publish on `{prefix}/{device_id}/{telemetry|events|status}`.
    pub topic_prefix: String,
    /// MQTT keep-alive interval.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Listen address of the embedded broker (used only when `url` is unset); port 0 picks one.
    /// Loopback only: the embedded broker serves this machine, with generated credentials.
    pub embedded_listen: SocketAddr,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: None,
            client_id: default_client_id(proc_host_name().as_deref()),
            topic_prefix: "devices".into(),
            keep_alive: Duration::from_secs(30),
            embedded_listen: "127.0.0.1:1884".parse().expect("literal address"),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Shared-subscription group: subscribe as `$share/{group}/…` so replicas split the stream.
    pub shared_group: Option<String>,
    /// MQTT sessions this process opens (client ids `{client_id}-{n}` when more than one),
    /// each with its own poller, writer, database connections and broker in-flight window.
    /// Several sessions share one subscription group: `shared_group`, or `{client_id}` when
    /// unset (then this process alone splits the stream between its sessions). `0` (the
    /// default) means `AUTO_SESSIONS` with an external broker and 1 with the embedded one,
    /// whose shared subscriptions are broken.
    pub sessions: usize,
    /// Flush a batch when it holds this many readings.
    pub batch_max_readings: usize,
    /// Flush a batch when its oldest message has waited this long. A batch also stops
    /// waiting as soon as no message has come for 2 ms (the broker's window is spent).
    #[serde(with = "humantime_serde")]
    pub batch_max_age: Duration,
    /// Largest payload accepted; larger ones are dead-lettered.
    pub max_payload_bytes: usize,
    /// Largest MQTT packet the client reads at all (must exceed `max_payload_bytes`, so that a
    /// payload between the two is dead-lettered). A larger packet breaks the connection and
    /// the broker resends it first on every reconnect, so the broker's own limit must not
    /// exceed this one (Mosquitto `max_packet_size`; the shipped configurations agree).
    pub max_packet_bytes: usize,
    /// Largest absolute metric value accepted; larger ones are dead-lettered
    /// (`value_out_of_range`). Keeps sums of squares in the rollups finite.
    pub max_abs_value: f64,
    /// How far in the future (by the wall clock) a timestamp may be.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// Oldest timestamp accepted, as an age; `"off"` lifts the limit (imports, replays).
    #[serde(with = "optional_duration")]
    pub max_age: Option<Duration>,
    /// Register unknown devices on first message (`true`) or dead-letter them (`false`).
    pub auto_register: bool,
    /// At most this many devices are registered per minute (per process); messages of
    /// further new devices are dead-lettered (`registration_limited`).
    pub max_new_devices_per_minute: u32,
    /// Add unknown metric names to the catalogue (`true`) or dead-letter them (`false`).
    pub open_metric_catalogue: bool,
    /// At most this many metric names are added per minute (per process; the catalogue
    /// holds 32,767); messages with further new names are dead-lettered
    /// (`registration_limited`).
    pub max_new_metrics_per_minute: u32,
    /// Per process: at most this many messages are held (received, not yet committed and
    /// acknowledged), shared equally between the sessions. A session at its share stops
    /// reading from the broker, which keeps the rest of its backlog, and goes on
    /// acknowledging.
    pub max_pending_messages: usize,
    /// Per process: the same bound in bytes (payload, topic and parsed readings plus a
    /// fixed overhead per message), shared equally between the sessions.
    pub max_pending_bytes: usize,
    /// Per session: batches committing at once, each on its own database connection, while
    /// the next one is prepared. Acknowledgements stay in arrival order.
    pub writes_in_flight: usize,
    /// Per session: device ids and metric ids cached (bounded; the least used fall out).
    pub id_cache_capacity: usize,
    /// `devices.last_seen_at` is written in each batch's transaction when the batch moves
    /// it forward by at least this much (event time), so that a busy device's row is not
    /// rewritten by every batch; it may lag the newest committed reading by less than this.
    #[serde(with = "humantime_serde")]
    pub last_seen_resolution: Duration,
    /// A message without `ts` is stamped with its receive time, which a redelivery does
    /// not share. A redelivered one (MQTT DUP flag, set by Mosquitto and EMQX) is stored
    /// only where the same device has no receive-stamped reading (or event) with the same
    /// metric and value (code and message) within this window before it.
    #[serde(with = "humantime_serde")]
    pub redelivery_window: Duration,
    /// After a shutdown signal, how long ingest may finish the writes it has started;
    /// what is not committed by then is left unacknowledged for redelivery.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

/// Sessions opened with an external broker when `ingest.sessions` is 0: measured by
/// `forewarn bench ingest`, two sessions of two writes in flight drain a backlog about as fast
/// as four, where one session reaches only about 60 %.
pub const AUTO_SESSIONS: usize = 2;

impl IngestConfig {
    /// `sessions`, with 0 resolved for an external broker (the embedded broker's caller
    /// sets 1 explicitly).
    pub fn session_count(&self) -> usize {
        match self.sessions {
            0 => AUTO_SESSIONS,
            n => n,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            shared_group: None,
            sessions: 0,
            batch_max_readings: 20_000,
            batch_max_age: Duration::from_millis(100),
            max_payload_bytes: 64 * 1024,
            max_packet_bytes: 1024 * 1024,
            max_abs_value: 1e12,
            max_future_skew: Duration::from_secs(300),
            max_age: Some(Duration::from_secs(400 * 86_400)),
            auto_register: true,
            max_new_devices_per_minute: 10_000,
            open_metric_catalogue: true,
            max_new_metrics_per_minute: 100,
            max_pending_messages: 20_000,
            max_pending_bytes: 64 * 1024 * 1024,
            writes_in_flight: 2,
            id_cache_capacity: 200_000,
            last_seen_resolution: Duration::from_secs(1),
            redelivery_window: Duration::from_secs(3600),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Whether to use TimescaleDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TimescaleMode {
    /// Use it when the extension is available on the server.
    Auto,
    /// Fail the migration when it is not.
    Require,
    /// Plain PostgreSQL tables even when the extension is available.
    Off,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub timescaledb: TimescaleMode,
    /// Write telemetry with binary COPY (falling back to an idempotent insert on a
    /// duplicate). Off for servers that cannot COPY (the PGlite test lane).
    pub use_copy: bool,
    /// Compress telemetry chunks older than this (TimescaleDB only); `"off"` disables.
    #[serde(with = "optional_duration")]
    pub compress_after: Option<Duration>,
    /// Drop telemetry and events older than this (policy on TimescaleDB, periodic delete
    /// otherwise). `"off"` keeps everything.
    #[serde(with = "optional_duration")]
    pub retention: Option<Duration>,
    /// Delete dead letters received longer ago than this (wall-clock time of receipt), on
    /// both flavours, by the maintenance job in bounded batches. `"off"` keeps them all.
    #[serde(with = "optional_duration")]
    pub dead_letter_retention: Option<Duration>,
    /// How often the maintenance job runs: the plain-PostgreSQL hourly rollup refresh and
    /// retention, and dead-letter retention on both flavours.
    #[serde(with = "humantime_serde")]
    pub maintenance_interval: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            timescaledb: TimescaleMode::Auto,
            use_copy: true,
            compress_after: Some(Duration::from_secs(7 * 86_400)),
            retention: Some(Duration::from_secs(400 * 86_400)),
            dead_letter_retention: Some(Duration::from_secs(30 * 86_400)),
            maintenance_interval: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of `/metrics`, `/healthz`, `/readyz`; env `FOREWARN_HTTP_ADDR`.
    pub addr: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: "127.0.0.1:8080".parse().expect("literal address"),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedConfig {
    /// Where the private PostgreSQL cluster lives when `DATABASE_URL` is unset.
    pub data_dir: PathBuf,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            data_dir: PathBuf::from("data"),
        }
    }
}

/// `forewarn train` and scheduled retraining.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Retrain this often inside `serve` (promoting only a better model); `"off"` never.
    #[serde(with = "optional_duration")]
    pub interval: Option<Duration>,
    /// The held-out time before the test window: candidates are compared, probabilities
    /// calibrated and thresholds chosen on it (out of fold), never trained on by the model
    /// that scores it. `"auto"`: half of the time before the test window (at most 90 days,
    /// at least as long as the test window). (`validation_window` is its old name.)
    #[serde(with = "auto_duration", alias = "validation_window")]
    pub tuning_window: Option<Duration>,
    /// The newest part of the data: nothing is fitted or chosen on it; the model card's
    /// headline figures come from it. `"auto"`: a fifth of the history, at least one and a
    /// half of the longest horizon, at most 30 days.
    #[serde(with = "auto_duration")]
    pub test_window: Option<Duration>,
    /// Rolling-origin folds over the tuning window: fold `k` is scored by a model trained
    /// on every example labelled before it starts. `0`: auto (3).
    pub tuning_folds: usize,
    /// Failure modes found in `failures` but not listed below get the horizon their
    /// history supports (how long before failure their signals separate from healthy
    /// behaviour), `default_horizon` when it cannot tell. `false`: always `default_horizon`.
    pub learn_horizons: bool,
    /// The candidate classifiers every mode compares on its tuning window (at least one).
    /// The pooled one is tried for kinds with two modes or more; a one-mode kind whose list
    /// holds only it uses `gradient_boosted_trees`.
    pub candidates: Vec<crate::model::Algorithm>,
    /// Time between two training examples of one device.
    #[serde(with = "humantime_serde")]
    pub example_stride: Duration,
    /// Share of negative training examples kept (positives are all kept); calibration on
    /// the untouched validation window corrects the base rate.
    pub negative_sample: f64,
    /// Where model artifacts and cards are written (`<model_dir>/<version>/`).
    pub model_dir: PathBuf,
    /// Cost of a proactive visit that finds nothing, for modes without their own.
    pub cost_false_alarm: f64,
    /// Cost of a breakdown nobody saw coming, for modes without their own.
    pub cost_missed_failure: f64,
    /// Horizon of failure modes found in `failures` but not listed below.
    #[serde(with = "humantime_serde")]
    pub default_horizon: Duration,
    /// The failure modes and their horizons (defaults: the simulator fleet's).
    pub failure_modes: Vec<FailureModeConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FailureModeConfig {
    pub kind: String,
    pub component: String,
    #[serde(with = "humantime_serde")]
    pub horizon: Duration,
    #[serde(default)]
    pub cost_false_alarm: Option<f64>,
    #[serde(default)]
    pub cost_missed_failure: Option<f64>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        let mode = |kind: &str, component: &str, hours: u64| FailureModeConfig {
            kind: kind.into(),
            component: component.into(),
            horizon: Duration::from_secs(hours * 3600),
            cost_false_alarm: None,
            cost_missed_failure: None,
        };
        TrainConfig {
            interval: None,
            tuning_window: None,
            test_window: None,
            tuning_folds: 0,
            learn_horizons: true,
            candidates: vec![
                crate::model::Algorithm::LogisticRegression,
                crate::model::Algorithm::GradientBoostedTrees,
                crate::model::Algorithm::PooledGradientBoostedTrees,
            ],
            example_stride: Duration::from_secs(4 * 3600),
            negative_sample: 0.35,
            model_dir: PathBuf::from("models"),
            cost_false_alarm: 100.0,
            cost_missed_failure: 400.0,
            default_horizon: Duration::from_secs(7 * 86_400),
            failure_modes: vec![
                mode("washer", "drum_bearing", 7 * 24),
                mode("washer", "drain_pump", 3 * 24),
                mode("fridge", "compressor", 7 * 24),
                mode("fridge", "refrigerant_leak", 14 * 24),
                mode("car", "battery", 72),
                mode("car", "thermostat", 5 * 24),
                mode("camera", "sd_card", 7 * 24),
                mode("camera", "overheating", 2 * 24),
                mode("pump", "bearing", 7 * 24),
                mode("pump", "seal", 5 * 24),
            ],
        }
    }
}

/// The live `predict` stage of `serve`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PredictConfig {
    /// Score devices with new data this often; `"off"` disables the stage.
    #[serde(with = "optional_duration")]
    pub interval: Option<Duration>,
    /// Contributing factors kept with each prediction.
    pub top_factors: usize,
    /// A model artifact registered and activated for every failure mode that has no
    /// active model (the shipped default, so a fresh install predicts from its first
    /// minute); `""` for none.
    pub default_model: PathBuf,
}

impl Default for PredictConfig {
    fn default() -> Self {
        PredictConfig {
            interval: Some(Duration::from_secs(60)),
            top_factors: 3,
            default_model: PathBuf::from("models/default/model.json"),
        }
    }
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

impl Config {
    /// Reads `path` (when given, or `forewarn.toml` when present) and applies the environment.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let path = path
            .map(Path::to_path_buf)
            .or_else(|| {
                env.iter()
                    .find(|(k, _)| k == "FOREWARN_CONFIG")
                    .map(|(_, v)| PathBuf::from(v))
            })
            .or_else(|| Some(PathBuf::from("forewarn.toml")).filter(|p| p.exists()));
        let mut table = match &path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|source| ConfigError::Parse {
                        path: path.clone(),
                        source: Box::new(source),
                    })?
            }
            None => toml::Table::new(),
        };
        // Without a client id in the file, the host name decides it; HOSTNAME from the
        // environment stands in where /proc has none (not Linux).
        if let Some(host_name) = proc_host_name().or_else(|| {
            env.iter()
                .find(|(k, _)| k == "HOSTNAME")
                .map(|(_, v)| v.clone())
        }) {
            let mqtt = table
                .entry("mqtt")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(mqtt) = mqtt {
                mqtt.entry("client_id")
                    .or_insert_with(|| toml::Value::String(default_client_id(Some(&host_name))));
            }
        }
        // Environment values are typed by the key they set, as its default shows.
        let defaults = toml::Table::try_from(Config::default())
            .map_err(|e| ConfigError::Invalid(format!("default configuration: {e}")))?;
        for (name, value) in &env {
            let (section, key) = match name.as_str() {
                "DATABASE_URL" => ("database", "url".to_string()),
                "MQTT_URL" => ("mqtt", "url".to_string()),
                "FOREWARN_HTTP_ADDR" => ("http", "addr".to_string()),
                "FOREWARN_CONFIG" => continue,
                other => match other.strip_prefix("FOREWARN_") {
                    Some(rest) => {
                        let (section, key) = rest
                            .split_once("__")
                            .ok_or_else(|| ConfigError::BadEnvName { name: name.clone() })?;
                        (section_name(section)?, key.to_ascii_lowercase())
                    }
                    None => continue,
                },
            };
            let entry = table
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(section_table) = entry else {
                return Err(ConfigError::Invalid(format!("`{section}` must be a table")));
            };
            if value.is_empty() {
                section_table.remove(&key);
            } else {
                let default = defaults
                    .get(section)
                    .and_then(|section_defaults| section_defaults.get(&key));
                let typed = env_value(name, value, default).map_err(|expected| {
                    ConfigError::BadEnvValue {
                        name: name.clone(),
                        key: format!("{section}.{key}"),
                        value: value.clone(),
                        expected,
                    }
                })?;
                section_table.insert(key, typed);
            }
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(one_line(&e.to_string())))?;
        config.validate()?;
        Ok(config)
    }

    /// Rejects every value that would make a later call panic or misbehave (a zero period
    /// for `tokio::time::interval`, a keep-alive rumqttc refuses, an empty pool, a NaN cost…),
    /// with one sentence naming the key, its value and what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let database = &self.database;
        rule(
            database.max_connections >= 1,
            "database.max_connections",
            database.max_connections,
            "the pool needs at least 1 connection",
        )?;
        rule(
            !database.acquire_timeout.is_zero(),
            "database.acquire_timeout",
            show(database.acquire_timeout),
            "it must be positive (0 fails every query at once)",
        )?;

        let mqtt = &self.mqtt;
        let ingest = &self.ingest;
        rule(
            crate::contract::is_valid_device_external_id(&mqtt.client_id),
            "mqtt.client_id",
            format!("{:?}", mqtt.client_id),
            "it must be 1-64 characters of [A-Za-z0-9_.:-]",
        )?;
        rule(
            ingest.sessions <= MAX_SESSIONS,
            "ingest.sessions",
            ingest.sessions,
            &format!("it must be between 0 (automatic) and {MAX_SESSIONS}"),
        )?;
        if ingest.session_count() > 1 {
            let last_session_id = format!("{}-{}", mqtt.client_id, ingest.session_count() - 1);
            rule(
                crate::contract::is_valid_device_external_id(&last_session_id),
                "mqtt.client_id",
                format!("{:?}", mqtt.client_id),
                &format!(
                    "with {} ingest sessions the session ids ({last_session_id:?}) must stay within 64 characters",
                    ingest.session_count()
                ),
            )?;
        }
        rule(
            is_valid_topic_prefix(&mqtt.topic_prefix),
            "mqtt.topic_prefix",
            format!("{:?}", mqtt.topic_prefix),
            "it must be one or more topic levels joined by '/', without wildcards (+ #), empty levels or a leading $",
        )?;
        rule(
            mqtt.keep_alive >= Duration::from_secs(1)
                && mqtt.keep_alive <= Duration::from_secs(u64::from(u16::MAX)),
            "mqtt.keep_alive",
            show(mqtt.keep_alive),
            "it must be between 1s and 65535s (MQTT counts whole seconds up to 65535, and without keep-alive a dead connection goes unnoticed)",
        )?;
        rule(
            mqtt.embedded_listen.ip().is_loopback(),
            "mqtt.embedded_listen",
            mqtt.embedded_listen,
            "the embedded broker serves this machine only: it must be a loopback address (127.0.0.0/8 or ::1); for devices on other machines run a real broker and set MQTT_URL",
        )?;

        if let Some(group) = &ingest.shared_group {
            rule(
                !group.is_empty() && !group.contains(['/', '+', '#']),
                "ingest.shared_group",
                format!("{group:?}"),
                "a shared-subscription group must be non-empty and contain none of / + #",
            )?;
        }
        rule(
            ingest.batch_max_readings >= 1,
            "ingest.batch_max_readings",
            ingest.batch_max_readings,
            "it must be at least 1",
        )?;
        rule(
            ingest.max_payload_bytes >= 1,
            "ingest.max_payload_bytes",
            ingest.max_payload_bytes,
            "it must be at least 1",
        )?;
        rule(
            ingest.max_packet_bytes > ingest.max_payload_bytes
                && ingest.max_packet_bytes <= MAX_MQTT_PACKET_BYTES,
            "ingest.max_packet_bytes",
            ingest.max_packet_bytes,
            &format!(
                "it must exceed ingest.max_payload_bytes ({}) and be at most {MAX_MQTT_PACKET_BYTES} (the largest MQTT packet)",
                ingest.max_payload_bytes
            ),
        )?;
        rule(
            (1..=MAX_PENDING_MESSAGES).contains(&ingest.max_pending_messages),
            "ingest.max_pending_messages",
            ingest.max_pending_messages,
            &format!("it must be between 1 and {MAX_PENDING_MESSAGES}"),
        )?;
        for (key, value) in [
            ("ingest.max_pending_bytes", ingest.max_pending_bytes),
            ("ingest.writes_in_flight", ingest.writes_in_flight),
            ("ingest.id_cache_capacity", ingest.id_cache_capacity),
        ] {
            rule(value >= 1, key, value, "it must be at least 1")?;
        }
        rule(
            ingest.max_abs_value.is_finite() && ingest.max_abs_value > 0.0,
            "ingest.max_abs_value",
            ingest.max_abs_value,
            "it must be a positive finite number",
        )?;
        rule(
            !ingest.shutdown_grace.is_zero(),
            "ingest.shutdown_grace",
            show(ingest.shutdown_grace),
            "it must be positive (0 leaves no time to finish a commit)",
        )?;
        rule(
            ingest.max_age.is_none_or(|age| !age.is_zero()),
            "ingest.max_age",
            show_optional(ingest.max_age),
            "it must be positive (0 would reject every reading) or \"off\"",
        )?;

        let storage = &self.storage;
        rule(
            storage
                .compress_after
                .is_none_or(|after| !after.is_zero() && after <= MAX_SPAN),
            "storage.compress_after",
            show_optional(storage.compress_after),
            "it must be positive and at most 36500d or \"off\"",
        )?;
        rule(
            storage
                .retention
                .is_none_or(|retention| !retention.is_zero() && retention <= MAX_SPAN),
            "storage.retention",
            show_optional(storage.retention),
            "it must be positive and at most 36500d (0 would delete everything; more overflows PostgreSQL's interval) or \"off\"",
        )?;
        rule(
            storage
                .dead_letter_retention
                .is_none_or(|retention| !retention.is_zero() && retention <= MAX_SPAN),
            "storage.dead_letter_retention",
            show_optional(storage.dead_letter_retention),
            "it must be positive and at most 36500d (0 would delete every dead letter before anyone reads it) or \"off\"",
        )?;
        period_rule(
            "storage.maintenance_interval",
            Some(storage.maintenance_interval),
        )?;

        rule(
            !self.embedded.data_dir.as_os_str().is_empty(),
            "embedded.data_dir",
            "\"\"",
            "it must name a directory",
        )?;
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            return Err(ConfigError::Invalid(format!(
                "log.filter = {:?} is not allowed: it must be a tracing filter such as \"info,sqlx=warn\" ({error})",
                self.log.filter
            )));
        }

        let train = &self.train;
        period_rule("train.interval", train.interval)?;
        if let Some(window) = train.tuning_window {
            span_rule("train.tuning_window", window)?;
        }
        if let Some(window) = train.test_window {
            span_rule("train.test_window", window)?;
        }
        rule(
            train.tuning_folds <= 12,
            "train.tuning_folds",
            train.tuning_folds,
            "it must be between 0 (auto) and 12",
        )?;
        rule(
            train.example_stride >= HOUR && train.example_stride <= MAX_PERIOD,
            "train.example_stride",
            show(train.example_stride),
            "it must be between 1h (features use hourly buckets) and 365d",
        )?;
        rule(
            train.negative_sample > 0.0 && train.negative_sample <= 1.0,
            "train.negative_sample",
            train.negative_sample,
            "it must be in (0, 1]",
        )?;
        cost_rule("train.cost_false_alarm", train.cost_false_alarm)?;
        cost_rule("train.cost_missed_failure", train.cost_missed_failure)?;
        span_rule("train.default_horizon", train.default_horizon)?;
        rule(
            !train.model_dir.as_os_str().is_empty(),
            "train.model_dir",
            "\"\"",
            "it must name a directory",
        )?;
        rule(
            !train.candidates.is_empty(),
            "train.candidates",
            "[]",
            "at least one candidate is needed (logistic_regression, gradient_boosted_trees, pooled_gradient_boosted_trees)",
        )?;
        for (mode_idx, mode) in train.failure_modes.iter().enumerate() {
            let key = |field: &str| format!("train.failure_modes[{mode_idx}].{field}");
            rule(
                !mode.kind.is_empty(),
                &key("kind"),
                "\"\"",
                "it must name a device kind",
            )?;
            rule(
                !mode.component.is_empty(),
                &key("component"),
                "\"\"",
                "it must name a component",
            )?;
            span_rule(&key("horizon"), mode.horizon)?;
            if let Some(cost) = mode.cost_false_alarm {
                cost_rule(&key("cost_false_alarm"), cost)?;
            }
            if let Some(cost) = mode.cost_missed_failure {
                cost_rule(&key("cost_missed_failure"), cost)?;
            }
            let first_idx = train
                .failure_modes
                .iter()
                .position(|m| m.kind == mode.kind && m.component == mode.component);
            rule(
                first_idx == Some(mode_idx),
                &key("component"),
                format!("{:?}", mode.component),
                &format!(
                    "{}/{} is already train.failure_modes[{}]: a failure mode is listed once",
                    mode.kind,
                    mode.component,
                    first_idx.unwrap_or_default()
                ),
            )?;
        }

        period_rule("predict.interval", self.predict.interval)?;
        Ok(())
    }
}

const HOUR: Duration = Duration::from_secs(3600);
/// Longest period of a repeating task; longer ones are better written `"off"`.
const MAX_PERIOD: Duration = Duration::from_secs(365 * 86_400);
/// Longest horizon or window: ample for any fleet, and safely inside chrono's range.
const MAX_SPAN: Duration = Duration::from_secs(36_500 * 86_400);
/// MQTT's remaining-length field cannot describe a larger packet.
const MAX_MQTT_PACKET_BYTES: usize = 268_435_455;
const MAX_SESSIONS: usize = 256;
/// Far above any broker's in-flight window, far below what a bounded channel can hold.
const MAX_PENDING_MESSAGES: usize = 1 << 24;

/// `Ok` when `ok`; otherwise one sentence naming the key, its value and what is allowed.
fn rule(
    ok: bool,
    key: &str,
    value: impl std::fmt::Display,
    allowed: &str,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "{key} = {value} is not allowed: {allowed}"
        )))
    }
}

/// The period of a repeating task (`tokio::time::interval` panics on zero); `None` is "off".
fn period_rule(key: &str, period: Option<Duration>) -> Result<(), ConfigError> {
    rule(
        period.is_none_or(|p| !p.is_zero() && p <= MAX_PERIOD),
        key,
        show_optional(period),
        "it must be positive and at most 365d",
    )
}

/// A horizon or window over hourly data.
fn span_rule(key: &str, span: Duration) -> Result<(), ConfigError> {
    rule(
        span >= HOUR && span <= MAX_SPAN,
        key,
        show(span),
        "it must be between 1h (features use hourly buckets) and 36500d",
    )
}

/// A cost the alert threshold weighs: the threshold of `0 / 0` or `NaN` means nothing.
fn cost_rule(key: &str, cost: f64) -> Result<(), ConfigError> {
    rule(
        cost.is_finite() && cost > 0.0,
        key,
        cost,
        "it must be a finite number above 0",
    )
}

fn show(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

fn show_optional(duration: Option<Duration>) -> String {
    duration.map_or_else(|| "off".to_string(), show)
}

/// `{prefix}/{device_id}/{kind}` must be a topic name and a filter: levels that are not empty,
/// no wildcards, and no leading `$` (brokers reserve `$SYS`, `$share`).
fn is_valid_topic_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && !prefix.starts_with('$')
        && !prefix.contains(['+', '#', '\0'])
        && prefix.split('/').all(|level| !level.is_empty())
}

/// toml writes the key on a line of its own (`…\nin `http.addr``): one sentence on one line.
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message.lines().map(str::trim).collect();
    lines.join(" ").trim().to_string()
}

fn section_name(section: &str) -> Result<&'static str, ConfigError> {
    const SECTIONS: [&str; 9] = [
        "database", "mqtt", "ingest", "storage", "http", "embedded", "log", "train", "predict",
    ];
    let lower = section.to_ascii_lowercase();
    SECTIONS
        .into_iter()
        .find(|s| *s == lower)
        .ok_or_else(|| ConfigError::BadEnvName {
            name: format!("FOREWARN_{section}__…"),
        })
}

/// Environment values are strings; each is converted to the type of the key it sets, as the
/// serialized default configuration shows (`FOREWARN_INGEST__AUTO_REGISTER=false` is the
/// boolean, `FOREWARN_MQTT__CLIENT_ID=1234` stays the string "1234"). A key with no default
/// value is an `Option` that is `None` (`database.url`, `mqtt.url`, `ingest.shared_group`),
/// and those are strings; optional durations serialize as `"off"`, so they have one; an
/// unknown key stays a string and deserialization names it. The error is what was expected.
fn env_value(
    name: &str,
    value: &str,
    default: Option<&toml::Value>,
) -> Result<toml::Value, String> {
    let text = value.trim();
    match default {
        None | Some(toml::Value::String(_)) => Ok(toml::Value::String(value.to_string())),
        Some(toml::Value::Integer(_)) => text
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| "an integer".to_string()),
        Some(toml::Value::Float(_)) => text
            .parse::<f64>()
            .map(toml::Value::Float)
            .map_err(|_| "a number".to_string()),
        Some(toml::Value::Boolean(_)) => text
            .parse::<bool>()
            .map(toml::Value::Boolean)
            .map_err(|_| "true or false".to_string()),
        Some(toml::Value::Datetime(_) | toml::Value::Array(_) | toml::Value::Table(_)) => {
            Err(format!(
                "a value the environment cannot give ({name} names a list or table: set it in the config file)"
            ))
        }
    }
}

/// The machine's host name from `/proc/sys/kernel/hostname` (Linux), when there is one.
fn proc_host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
}

/// Longest default client id: room is left for the `-{n}` suffix of `ingest.sessions`.
const MAX_DEFAULT_CLIENT_ID_LEN: usize = 60;

/// The default `mqtt.client_id`: `forewarn-ingest-<host name>`, so that every replica (one per
/// machine or pod) has its own persistent session, and keeps it across restarts. The host name
/// is cut down to the client-id alphabet `[A-Za-z0-9_.:-]` (other characters become `-`); a
/// name too long for 60 characters keeps its start plus a hash of the whole, so that two long
/// names stay distinct. No usable host name: `forewarn-ingest`.
pub fn default_client_id(host_name: Option<&str>) -> String {
    const PREFIX: &str = "forewarn-ingest";
    let host_name = host_name.map(str::trim).unwrap_or_default();
    if !host_name.chars().any(|c| c.is_ascii_alphanumeric()) {
        return PREFIX.to_string();
    }
    let sanitised: String = host_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let client_id = format!("{PREFIX}-{sanitised}");
    if client_id.len() <= MAX_DEFAULT_CLIENT_ID_LEN {
        return client_id;
    }
    let suffix = format!("-{:08x}", fnv1a(host_name.as_bytes()));
    // Only ASCII is left, so any byte index is a character boundary.
    format!(
        "{}{suffix}",
        &client_id[..MAX_DEFAULT_CLIENT_ID_LEN - suffix.len()]
    )
}

/// 32-bit FNV-1a: a hash that is the same in every build (std's hasher promises no such thing),
/// so a long host name maps to the same client id after an upgrade.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash: u32, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

/// A URL fit for logs and the terminal: the password of its user part and a `password`
/// query parameter (which sqlx and libpq also read) become `***`. Text that does not parse
/// as a URL keeps its scheme and host, and everything between `://` and the last `@` (where
/// credentials would be) becomes `***`: a malformed `DATABASE_URL` must not leak either.
pub fn redact_url(url: &str) -> String {
    const HIDDEN: &str = "***";
    let Ok(mut parsed) = url::Url::parse(url) else {
        return match (url.find("://"), url.rfind('@')) {
            (Some(scheme_end), Some(at)) if at > scheme_end => {
                format!("{}://{HIDDEN}{}", &url[..scheme_end], &url[at..])
            }
            _ => url.to_string(),
        };
    };
    if parsed.password().is_some() {
        // Fails only for URLs that cannot have a user part, which then has no password.
        let _ = parsed.set_password(Some(HIDDEN));
    }
    let has_secret_parameter = parsed
        .query_pairs()
        .any(|(key, _)| key.eq_ignore_ascii_case("password"));
    if has_secret_parameter {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(key, value)| {
                let value = if key.eq_ignore_ascii_case("password") {
                    HIDDEN.to_string()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// An optional duration written as a string: a humantime duration, or one of `words` for
/// `None` (the first is the one written).
mod worded_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
        words: &[&str],
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => {
                serializer.serialize_str(&humantime::format_duration(*duration).to_string())
            }
            None => serializer.serialize_str(words[0]),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
        words: &[&str],
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(deserializer)?;
        let text = text.trim();
        if words.contains(&text) {
            return Ok(None);
        }
        humantime::parse_duration(text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// `None` is written `"auto"`: the value is derived from the data.
mod auto_duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    const WORDS: &[&str] = &["auto"];

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        super::worded_duration::serialize(d, s, WORDS)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::worded_duration::deserialize(d, WORDS)
    }
}

/// `None` is written `"off"`, so that the serialized defaults show the key as a string.
mod optional_duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    const WORDS: &[&str] = &["off", "none"];

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        super::worded_duration::serialize(d, s, WORDS)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::worded_duration::deserialize(d, WORDS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load_without_file() {
        let config = Config::load(None, env(&[])).unwrap();
        assert_eq!(config.mqtt.topic_prefix, "devices");
        assert!(config.ingest.auto_register);
        assert_eq!(config.http.addr.port(), 8080);
        assert_eq!(
            config.storage.dead_letter_retention,
            Some(Duration::from_secs(30 * 86_400))
        );
    }

    #[test]
    fn environment_overrides_file() {
        let dir = std::env::temp_dir().join(format!("forewarn-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("forewarn.toml");
        std::fs::write(
            &path,
            "[ingest]\nbatch_max_readings = 100\nbatch_max_age = \"250ms\"\n\
             [storage]\ndead_letter_retention = \"off\"\n",
        )
        .unwrap();
        let config = Config::load(
            Some(&path),
            env(&[
                ("DATABASE_URL", "postgres://localhost/x"),
                ("MQTT_URL", "mqtt://127.0.0.1:1883"),
                ("FOREWARN_HTTP_ADDR", "127.0.0.1:0"),
                ("FOREWARN_INGEST__AUTO_REGISTER", "false"),
                ("FOREWARN_INGEST__SHARED_GROUP", "ingest"),
                ("FOREWARN_STORAGE__TIMESCALEDB", "off"),
                ("FOREWARN_INGEST__MAX_AGE", "off"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(config.ingest.batch_max_readings, 100);
        assert_eq!(config.ingest.batch_max_age, Duration::from_millis(250));
        assert!(!config.ingest.auto_register);
        assert_eq!(config.ingest.shared_group.as_deref(), Some("ingest"));
        assert_eq!(config.storage.timescaledb, TimescaleMode::Off);
        assert_eq!(config.ingest.max_age, None);
        assert_eq!(
            config.storage.retention,
            Some(Duration::from_secs(400 * 86_400))
        );
        assert_eq!(config.storage.dead_letter_retention, None);
        assert_eq!(
            config.database.url.as_deref(),
            Some("postgres://localhost/x")
        );
        assert_eq!(config.http.addr.port(), 0);
    }

    /// The sentence of a configuration that fails to load.
    fn load_error(pairs: &[(&str, &str)]) -> String {
        Config::load(None, env(pairs)).unwrap_err().to_string()
    }

    #[test]
    fn environment_values_take_the_type_of_their_key() {
        let config = Config::load(
            None,
            env(&[
                ("FOREWARN_MQTT__CLIENT_ID", "1234"),
                ("FOREWARN_INGEST__SHARED_GROUP", "true"),
                ("FOREWARN_INGEST__BATCH_MAX_READINGS", "100"),
                ("FOREWARN_MQTT__TOPIC_PREFIX", "false"),
                ("MQTT_URL", "mqtt://127.0.0.1:1883"),
                ("FOREWARN_TRAIN__COST_FALSE_ALARM", "7"),
                ("FOREWARN_TRAIN__NEGATIVE_SAMPLE", "0.5"),
                ("FOREWARN_INGEST__OPEN_METRIC_CATALOGUE", "false"),
                ("FOREWARN_TRAIN__INTERVAL", "12h"),
                ("FOREWARN_STORAGE__COMPRESS_AFTER", "off"),
                ("FOREWARN_STORAGE__DEAD_LETTER_RETENTION", "14d"),
            ]),
        )
        .unwrap();
        assert_eq!(config.mqtt.client_id, "1234");
        assert_eq!(config.ingest.shared_group.as_deref(), Some("true"));
        assert_eq!(config.ingest.batch_max_readings, 100);
        assert_eq!(config.mqtt.topic_prefix, "false");
        assert_eq!(config.mqtt.url.as_deref(), Some("mqtt://127.0.0.1:1883"));
        assert_eq!(config.train.cost_false_alarm, 7.0);
        assert_eq!(config.train.negative_sample, 0.5);
        assert!(!config.ingest.open_metric_catalogue);
        assert_eq!(config.train.interval, Some(Duration::from_secs(12 * 3600)));
        assert_eq!(config.storage.compress_after, None);
        assert_eq!(
            config.storage.dead_letter_retention,
            Some(Duration::from_secs(14 * 86_400))
        );
    }

    #[test]
    fn a_malformed_environment_value_names_the_variable_and_the_key() {
        let message = load_error(&[("FOREWARN_INGEST__BATCH_MAX_READINGS", "lots")]);
        assert_eq!(
            message,
            "environment variable FOREWARN_INGEST__BATCH_MAX_READINGS=\"lots\" is not valid for \
             ingest.batch_max_readings: expected an integer"
        );
        let message = load_error(&[("FOREWARN_INGEST__AUTO_REGISTER", "yes")]);
        assert!(
            message.contains("FOREWARN_INGEST__AUTO_REGISTER"),
            "{message}"
        );
        assert!(message.contains("true or false"), "{message}");
        let message = load_error(&[("FOREWARN_TRAIN__COST_MISSED_FAILURE", "many")]);
        assert!(message.contains("expected a number"), "{message}");
        let message = load_error(&[("FOREWARN_TRAIN__FAILURE_MODES", "washer")]);
        assert!(message.contains("config file"), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn every_key_without_a_serialized_default_is_a_string() {
        // env_value treats a key missing from the serialized defaults as a string; that is
        // sound only while every such key is an optional string. This lists them: a new
        // optional key of another type must get a default or its own handling.
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        let config = Config::load(
            None,
            env(&[
                ("DATABASE_URL", "1"),
                ("MQTT_URL", "2"),
                ("FOREWARN_INGEST__SHARED_GROUP", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(config.database.url.as_deref(), Some("1"));
        assert_eq!(config.mqtt.url.as_deref(), Some("2"));
        assert_eq!(config.ingest.shared_group.as_deref(), Some("3"));
        let mut missing = Vec::new();
        let loaded = toml::Table::try_from(&config).unwrap();
        for (section, keys) in &loaded {
            for key in keys.as_table().unwrap().keys() {
                if defaults[section].get(key).is_none() {
                    missing.push(format!("{section}.{key}"));
                }
            }
        }
        assert_eq!(
            missing,
            ["database.url", "ingest.shared_group", "mqtt.url"],
            "keys with no default; each must be a string"
        );
    }

    #[test]
    fn the_default_client_id_is_unique_per_host_and_stable() {
        assert_eq!(
            default_client_id(Some("ingest-7\n")),
            "forewarn-ingest-ingest-7"
        );
        assert_eq!(
            default_client_id(Some("ingest-7")),
            default_client_id(Some("ingest-7"))
        );
        assert_ne!(
            default_client_id(Some("ingest-7")),
            default_client_id(Some("ingest-8"))
        );
        assert_eq!(
            default_client_id(Some("rack 3/node#1")),
            "forewarn-ingest-rack-3-node-1"
        );
        assert_eq!(default_client_id(None), "forewarn-ingest");
        assert_eq!(default_client_id(Some("")), "forewarn-ingest");
        assert_eq!(default_client_id(Some("\u{2603}")), "forewarn-ingest");
        let long_a = format!("{}-a", "x".repeat(70));
        let long_b = format!("{}-b", "x".repeat(70));
        for long in [&long_a, &long_b] {
            let client_id = default_client_id(Some(long));
            assert_eq!(client_id.len(), MAX_DEFAULT_CLIENT_ID_LEN);
            assert!(crate::contract::is_valid_device_external_id(&client_id));
            // Room for the session suffix of the most sessions allowed.
            assert!(crate::contract::is_valid_device_external_id(&format!(
                "{client_id}-{}",
                MAX_SESSIONS - 1
            )));
        }
        assert_ne!(
            default_client_id(Some(&long_a)),
            default_client_id(Some(&long_b))
        );
        assert_eq!(
            default_client_id(Some(&long_a)),
            default_client_id(Some(&long_a))
        );
    }

    #[test]
    fn the_loaded_default_client_id_names_this_host() {
        let config = Config::load(None, env(&[("HOSTNAME", "replica-2")])).unwrap();
        let expected = default_client_id(proc_host_name().as_deref().or(Some("replica-2")));
        assert_eq!(config.mqtt.client_id, expected);
        assert!(config.mqtt.client_id.starts_with("forewarn-ingest-"));
        assert_eq!(config.mqtt.client_id, MqttConfig::default().client_id);
        let config = Config::load(None, env(&[("FOREWARN_MQTT__CLIENT_ID", "mine")])).unwrap();
        assert_eq!(config.mqtt.client_id, "mine");
    }

    #[test]
    fn redacted_urls_keep_everything_but_the_password() {
        assert_eq!(
            redact_url("mqtt://forewarn-ingest:s3cret@127.0.0.1:1884"),
            "mqtt://forewarn-ingest:***@127.0.0.1:1884"
        );
        assert_eq!(
            redact_url(
                "postgres://postgres:0123abcd@localhost:5999/forewarn?host=%2Fsrv%2Fdata%2Fpostgres"
            ),
            "postgres://postgres:***@localhost:5999/forewarn?host=%2Fsrv%2Fdata%2Fpostgres"
        );
        // sqlx and libpq also take the password as a query parameter.
        let redacted =
            redact_url("postgres://localhost/db?user=app&password=hunter2&sslmode=require");
        assert_eq!(
            redacted,
            "postgres://localhost/db?user=app&password=***&sslmode=require"
        );
        // Nothing to hide: unchanged.
        assert_eq!(redact_url("mqtt://127.0.0.1:1883"), "mqtt://127.0.0.1:1883");
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:5432/postgres"),
            "postgres://postgres@127.0.0.1:5432/postgres"
        );
    }

    #[test]
    fn a_url_that_does_not_parse_still_hides_its_credentials() {
        let redacted = redact_url("postgres://app:pa ss%zz@[bad-host/db");
        assert!(!redacted.contains("pa ss"), "{redacted}");
        assert_eq!(redacted, "postgres://***@[bad-host/db");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    /// Each value that would panic or misbehave later, with the start of its sentence.
    #[test]
    fn every_dangerous_value_is_rejected_with_one_sentence() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "FOREWARN_DATABASE__MAX_CONNECTIONS",
                "0",
                "database.max_connections = 0 ",
            ),
            (
                "FOREWARN_DATABASE__ACQUIRE_TIMEOUT",
                "0s",
                "database.acquire_timeout = 0s ",
            ),
            (
                "FOREWARN_MQTT__CLIENT_ID",
                "a b",
                "mqtt.client_id = \"a b\" ",
            ),
            (
                "FOREWARN_MQTT__KEEP_ALIVE",
                "500ms",
                "mqtt.keep_alive = 500ms ",
            ),
            ("FOREWARN_MQTT__KEEP_ALIVE", "0s", "mqtt.keep_alive = 0s "),
            (
                "FOREWARN_MQTT__KEEP_ALIVE",
                "65536s",
                "mqtt.keep_alive = 18h 12m 16s ",
            ),
            (
                "FOREWARN_MQTT__EMBEDDED_LISTEN",
                "0.0.0.0:1884",
                "mqtt.embedded_listen = 0.0.0.0:1884 ",
            ),
            (
                "FOREWARN_MQTT__TOPIC_PREFIX",
                "a/+",
                "mqtt.topic_prefix = \"a/+\" ",
            ),
            (
                "FOREWARN_MQTT__TOPIC_PREFIX",
                "a/",
                "mqtt.topic_prefix = \"a/\" ",
            ),
            (
                "FOREWARN_MQTT__TOPIC_PREFIX",
                "$SYS",
                "mqtt.topic_prefix = \"$SYS\" ",
            ),
            (
                "FOREWARN_INGEST__SHARED_GROUP",
                "a/b",
                "ingest.shared_group = \"a/b\" ",
            ),
            (
                "FOREWARN_INGEST__WRITES_IN_FLIGHT",
                "0",
                "ingest.writes_in_flight = 0 ",
            ),
            (
                "FOREWARN_INGEST__MAX_ABS_VALUE",
                "-1",
                "ingest.max_abs_value = -1 ",
            ),
            (
                "FOREWARN_INGEST__SESSIONS",
                "100000",
                "ingest.sessions = 100000 ",
            ),
            (
                "FOREWARN_INGEST__BATCH_MAX_READINGS",
                "0",
                "ingest.batch_max_readings = 0 ",
            ),
            (
                "FOREWARN_INGEST__MAX_PAYLOAD_BYTES",
                "0",
                "ingest.max_payload_bytes = 0 ",
            ),
            (
                "FOREWARN_INGEST__MAX_PACKET_BYTES",
                "1000",
                "ingest.max_packet_bytes = 1000 ",
            ),
            (
                "FOREWARN_INGEST__MAX_PACKET_BYTES",
                "300000000",
                "ingest.max_packet_bytes = 300000000 ",
            ),
            (
                "FOREWARN_INGEST__MAX_PENDING_MESSAGES",
                "0",
                "ingest.max_pending_messages = 0 ",
            ),
            (
                "FOREWARN_INGEST__MAX_PENDING_MESSAGES",
                "4611686018427387904",
                "ingest.max_pending_messages = 4611686018427387904 ",
            ),
            ("FOREWARN_INGEST__MAX_AGE", "0s", "ingest.max_age = 0s "),
            (
                "FOREWARN_STORAGE__COMPRESS_AFTER",
                "0s",
                "storage.compress_after = 0s ",
            ),
            (
                "FOREWARN_STORAGE__RETENTION",
                "0s",
                "storage.retention = 0s ",
            ),
            (
                "FOREWARN_STORAGE__DEAD_LETTER_RETENTION",
                "0s",
                "storage.dead_letter_retention = 0s ",
            ),
            (
                "FOREWARN_STORAGE__DEAD_LETTER_RETENTION",
                "1000000000years",
                "storage.dead_letter_retention = ",
            ),
            (
                "FOREWARN_STORAGE__RETENTION",
                "1000000000years",
                "storage.retention = ",
            ),
            (
                "FOREWARN_STORAGE__COMPRESS_AFTER",
                "1000000000years",
                "storage.compress_after = ",
            ),
            (
                "FOREWARN_STORAGE__MAINTENANCE_INTERVAL",
                "0s",
                "storage.maintenance_interval = 0s ",
            ),
            (
                "FOREWARN_STORAGE__MAINTENANCE_INTERVAL",
                "400d",
                "storage.maintenance_interval = 1year ",
            ),
            ("FOREWARN_LOG__FILTER", "info,[", "log.filter = \"info,[\" "),
            ("FOREWARN_TRAIN__INTERVAL", "0s", "train.interval = 0s "),
            (
                "FOREWARN_TRAIN__TUNING_WINDOW",
                "0s",
                "train.tuning_window = 0s ",
            ),
            (
                "FOREWARN_TRAIN__TEST_WINDOW",
                "1000000000years",
                "train.test_window = ",
            ),
            (
                "FOREWARN_TRAIN__EXAMPLE_STRIDE",
                "30m",
                "train.example_stride = 30m ",
            ),
            (
                "FOREWARN_TRAIN__EXAMPLE_STRIDE",
                "1000000000years",
                "train.example_stride = ",
            ),
            (
                "FOREWARN_TRAIN__NEGATIVE_SAMPLE",
                "NaN",
                "train.negative_sample = NaN ",
            ),
            (
                "FOREWARN_TRAIN__NEGATIVE_SAMPLE",
                "0",
                "train.negative_sample = 0 ",
            ),
            (
                "FOREWARN_TRAIN__COST_FALSE_ALARM",
                "-1",
                "train.cost_false_alarm = -1 ",
            ),
            (
                "FOREWARN_TRAIN__COST_FALSE_ALARM",
                "0",
                "train.cost_false_alarm = 0 ",
            ),
            (
                "FOREWARN_TRAIN__COST_MISSED_FAILURE",
                "NaN",
                "train.cost_missed_failure = NaN ",
            ),
            (
                "FOREWARN_TRAIN__COST_MISSED_FAILURE",
                "inf",
                "train.cost_missed_failure = inf ",
            ),
            (
                "FOREWARN_TRAIN__DEFAULT_HORIZON",
                "0s",
                "train.default_horizon = 0s ",
            ),
            ("FOREWARN_PREDICT__INTERVAL", "0s", "predict.interval = 0s "),
        ];
        for (name, value, start) in cases {
            let message = load_error(&[(name, value)]);
            assert!(
                message.starts_with(&format!("invalid configuration: {start}")),
                "{name}={value}: {message}"
            );
            assert!(
                message.contains("is not allowed: "),
                "{name}={value}: {message}"
            );
            assert!(!message.contains('\n'), "{name}={value}: {message}");
        }
    }

    #[test]
    fn session_ids_must_fit_the_client_id_limit() {
        let client_id = "c".repeat(63);
        assert!(
            Config::load(
                None,
                env(&[
                    ("FOREWARN_MQTT__CLIENT_ID", &client_id),
                    ("FOREWARN_INGEST__SESSIONS", "1")
                ])
            )
            .is_ok()
        );
        for sessions in ["2", "0"] {
            // 0 opens AUTO_SESSIONS (2) with an external broker: the suffix is checked too.
            let message = load_error(&[
                ("FOREWARN_MQTT__CLIENT_ID", &client_id),
                ("FOREWARN_INGEST__SESSIONS", sessions),
            ]);
            assert!(message.contains("within 64 characters"), "{message}");
        }
    }

    #[test]
    fn file_values_are_checked_too() {
        let load_file = |text: &str| {
            let dir = std::env::temp_dir().join(format!(
                "forewarn-config-modes-{}-{}",
                std::process::id(),
                text.len()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("forewarn.toml");
            std::fs::write(&path, text).unwrap();
            let result = Config::load(Some(&path), env(&[]));
            std::fs::remove_dir_all(&dir).unwrap();
            result.map_err(|e| e.to_string())
        };
        let mode = |horizon: &str, extra: &str| {
            format!(
                "[[train.failure_modes]]\nkind = \"washer\"\ncomponent = \"drum\"\nhorizon = \"{horizon}\"\n{extra}"
            )
        };
        assert!(load_file(&mode("7d", "")).is_ok());
        let message = load_file(&mode("7d", "cost_false_alarm = nan\n")).unwrap_err();
        assert!(
            message.starts_with(
                "invalid configuration: train.failure_modes[0].cost_false_alarm = NaN "
            ),
            "{message}"
        );
        let message = load_file(&mode("10m", "")).unwrap_err();
        assert!(
            message.starts_with("invalid configuration: train.failure_modes[0].horizon = 10m "),
            "{message}"
        );
        let message = load_file(&format!("{}{}", mode("7d", ""), mode("3d", ""))).unwrap_err();
        assert!(
            message.contains("washer/drum is already train.failure_modes[0]"),
            "{message}"
        );
        // Empty strings cannot come from the environment (an empty variable unsets the key).
        for (text, start) in [
            ("[mqtt]\ntopic_prefix = \"\"\n", "mqtt.topic_prefix = \"\" "),
            ("[embedded]\ndata_dir = \"\"\n", "embedded.data_dir = \"\" "),
            ("[train]\nmodel_dir = \"\"\n", "train.model_dir = \"\" "),
        ] {
            let message = load_file(text).unwrap_err();
            assert!(
                message.starts_with(&format!("invalid configuration: {start}")),
                "{message}"
            );
        }
    }

    #[test]
    fn a_malformed_file_value_names_its_key() {
        let message = load_error(&[("FOREWARN_HTTP_ADDR", "localhost:8080")]);
        assert!(message.contains("http.addr"), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn the_defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(Config::load(None, env(&[("FOREWARN_INGEST__BATCH_SIZE", "5")])).is_err());
        assert!(Config::load(None, env(&[("FOREWARN_NOPE__X", "5")])).is_err());
        assert!(Config::load(None, env(&[("FOREWARN_SOMETHING", "5")])).is_err());
        assert!(Config::load(None, env(&[("FOREWARN_INGEST__SESSIONS", "100000")])).is_err());
    }
}
