//! Configuration: one TOML file plus environment overrides, parsed once at the binary edge
//! and passed down as typed structs. Every key is documented here and in the README.
//!
//! Environment: `DATABASE_URL`, `MQTT_URL` and `FOREWARN_HTTP_ADDR` are the stable names;
//! any other key is `FOREWARN_<SECTION>__<KEY>` (e.g. `FOREWARN_INGEST__SHARED_GROUP=ingest`).
//! `FOREWARN_CONFIG` names the file (default `forewarn.toml` when it exists).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// `mqtt://host:port` or `mqtts://host:port` (user and password in the URL); env
    /// `MQTT_URL`. Unset: an embedded in-memory broker is started in-process.
    pub url: Option<String>,
    /// Client id of the ingest session. Stable across restarts so that the broker keeps the
    /// persistent session and redelivers what was not acknowledged. Replicas need distinct ids.
    pub client_id: String,
    /// Topic prefix: devices publish on `{prefix}/{device_id}/{telemetry|events|status}`.
    pub topic_prefix: String,
    /// MQTT keep-alive interval.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Listen address of the embedded broker (used only when `url` is unset); port 0 picks one.
    pub embedded_listen: SocketAddr,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: None,
            client_id: "forewarn-ingest".into(),
            topic_prefix: "devices".into(),
            keep_alive: Duration::from_secs(30),
            embedded_listen: "127.0.0.1:1884".parse().expect("literal address"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Shared-subscription group: subscribe as `$share/{group}/…` so replicas split the stream.
    pub shared_group: Option<String>,
    /// MQTT sessions this process opens (client ids `{client_id}-{n}` when more than one),
    /// each with its own writer, database connection and broker in-flight window. Several
    /// sessions share one subscription group: `shared_group`, or `{client_id}` when unset
    /// (then this process alone splits the stream between its sessions). Not for the
    /// embedded broker, whose shared subscriptions are broken.
    pub sessions: usize,
    /// Flush a batch when it holds this many readings.
    pub batch_max_readings: usize,
    /// Flush a batch when its oldest message has waited this long. A batch also stops
    /// waiting as soon as no message has come for 2 ms (the broker's window is spent).
    #[serde(with = "humantime_serde")]
    pub batch_max_age: Duration,
    /// Largest payload accepted; larger ones are dead-lettered.
    pub max_payload_bytes: usize,
    /// Largest MQTT packet the client reads at all (must exceed `max_payload_bytes`, so that an
    /// oversized payload is dead-lettered instead of breaking the connection).
    pub max_packet_bytes: usize,
    /// How far in the future (by the wall clock) a timestamp may be.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// Oldest timestamp accepted, as an age; `"off"` lifts the limit (imports, replays).
    #[serde(with = "optional_duration")]
    pub max_age: Option<Duration>,
    /// Register unknown devices on first message (`true`) or dead-letter them (`false`).
    pub auto_register: bool,
    /// Add unknown metric names to the catalogue (`true`) or dead-letter them (`false`).
    pub open_metric_catalogue: bool,
    /// How often `devices.last_seen_at` is written (it is kept in memory in between).
    #[serde(with = "humantime_serde")]
    pub last_seen_flush: Duration,
    /// Upper bound of messages received but not yet written. The broker's in-flight window
    /// is the real bound (unacknowledged QoS 1 messages); this is the channel capacity and
    /// must be at least the window so that the event loop never waits on the writer.
    pub max_pending_messages: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            shared_group: None,
            sessions: 1,
            batch_max_readings: 5000,
            batch_max_age: Duration::from_millis(100),
            max_payload_bytes: 64 * 1024,
            max_packet_bytes: 16 * 1024 * 1024,
            max_future_skew: Duration::from_secs(300),
            max_age: Some(Duration::from_secs(400 * 86_400)),
            auto_register: true,
            open_metric_catalogue: true,
            last_seen_flush: Duration::from_secs(10),
            max_pending_messages: 65_536,
        }
    }
}

/// Whether to use TimescaleDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimescaleMode {
    /// Use it when the extension is available on the server.
    Auto,
    /// Fail the migration when it is not.
    Require,
    /// Plain PostgreSQL tables even when the extension is available.
    Off,
}

#[derive(Debug, Clone, Deserialize)]
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
    /// How often the plain-PostgreSQL hourly rollup is refreshed (and retention applied).
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
            maintenance_interval: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Retrain this often inside `serve` (promoting only a better model); `"off"` never.
    #[serde(with = "optional_duration")]
    pub interval: Option<Duration>,
    /// The newest part of the data, held out: candidates are compared, probabilities
    /// calibrated and the threshold chosen on it, never trained on.
    #[serde(with = "humantime_serde")]
    pub validation_window: Duration,
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

#[derive(Debug, Clone, PartialEq, Deserialize)]
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
            validation_window: Duration::from_secs(30 * 86_400),
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
#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
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
                section_table.insert(key, env_value(value));
            }
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let ingest = &self.ingest;
        if ingest.max_packet_bytes <= ingest.max_payload_bytes {
            return Err(ConfigError::Invalid(
                "ingest.max_packet_bytes must exceed ingest.max_payload_bytes".into(),
            ));
        }
        if ingest.batch_max_readings == 0
            || ingest.max_pending_messages == 0
            || ingest.sessions == 0
        {
            return Err(ConfigError::Invalid(
                "ingest.batch_max_readings, max_pending_messages and sessions must be positive"
                    .into(),
            ));
        }
        if !crate::contract::is_valid_device_external_id(&self.mqtt.client_id) {
            return Err(ConfigError::Invalid(
                "mqtt.client_id must be 1-64 of [A-Za-z0-9_.:-]".into(),
            ));
        }
        let train = &self.train;
        if !(train.negative_sample > 0.0 && train.negative_sample <= 1.0) {
            return Err(ConfigError::Invalid(
                "train.negative_sample must be in (0, 1]".into(),
            ));
        }
        if train.example_stride < Duration::from_secs(3600) {
            return Err(ConfigError::Invalid(
                "train.example_stride must be at least 1h (features use hourly buckets)".into(),
            ));
        }
        Ok(())
    }
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

/// Environment values are strings; numbers and booleans are recognised so that
/// `FOREWARN_INGEST__AUTO_REGISTER=false` means the boolean.
fn env_value(value: &str) -> toml::Value {
    if let Ok(flag) = value.parse::<bool>() {
        return toml::Value::Boolean(flag);
    }
    if let Ok(number) = value.parse::<i64>() {
        return toml::Value::Integer(number);
    }
    toml::Value::String(value.to_string())
}

/// A duration like `"400d"`, or `"off"` for none.
mod optional_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.trim() {
            "off" | "none" => Ok(None),
            other => humantime::parse_duration(other)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
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
    }

    #[test]
    fn environment_overrides_file() {
        let dir = std::env::temp_dir().join(format!("forewarn-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("forewarn.toml");
        std::fs::write(
            &path,
            "[ingest]\nbatch_max_readings = 100\nbatch_max_age = \"250ms\"\n",
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
        assert_eq!(
            config.database.url.as_deref(),
            Some("postgres://localhost/x")
        );
        assert_eq!(config.http.addr.port(), 0);
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(Config::load(None, env(&[("FOREWARN_INGEST__BATCH_SIZE", "5")])).is_err());
        assert!(Config::load(None, env(&[("FOREWARN_NOPE__X", "5")])).is_err());
        assert!(Config::load(None, env(&[("FOREWARN_SOMETHING", "5")])).is_err());
        assert!(Config::load(None, env(&[("FOREWARN_INGEST__SESSIONS", "0")])).is_err());
    }
}
