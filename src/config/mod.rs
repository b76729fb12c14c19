//! Configuration: one TOML file plus environment overrides, parsed once at the binary edge
//! and passed down as typed structs. Each section's type lives beside its owner
//! (`ingest::config`, `store::config`, `training::config`, …) and validates itself;
//! this module assembles them, applies the environment ([`env`] lists every variable) and
//! documents the keys in the README.
//!
//! Environment: `DATABASE_URL`, `MQTT_URL` and `FOREWARN_HTTP_ADDR` are the stable names;
//! any other key is `FOREWARN_<SECTION>__<KEY>` (e.g. `FOREWARN_INGEST__SHARED_GROUP=ingest`).
//! `FOREWARN_CONFIG` names the file (default `forewarn.toml` when it exists).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod durations;
pub mod env;
pub(crate) mod rules;
#[cfg(test)]
mod tests;

pub(crate) use durations::{auto_duration, optional_duration};
use env::env_value;

pub use crate::api::config::HttpConfig;
pub use crate::dispatch::config::DispatchConfig;
pub use crate::embedded::config::EmbeddedConfig;
pub use crate::ingest::config::{AUTO_SESSIONS, IngestConfig, MqttConfig, MqttProtocol};
pub use crate::observability::{LogConfig, LogFormat};
pub use crate::outreach::config::OutreachConfig;
pub use crate::predict::config::PredictConfig;
pub use crate::store::config::{DatabaseConfig, StorageConfig, TimescaleMode};
pub use crate::training::config::{FailureModeConfig, TrainConfig};

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
    pub dispatch: DispatchConfig,
    pub outreach: OutreachConfig,
    /// Variables with the `FOREWARN_` prefix that name no key ([`env::is_ignored`]).
    #[serde(skip)]
    pub ignored_env: Vec<String>,
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
        let sections: Vec<String> = defaults.keys().cloned().collect();
        let mut ignored_env = Vec::new();
        for (name, value) in &env {
            let Some((section, key)) = env::key_of(name, &sections)? else {
                if env::is_ignored(name) {
                    ignored_env.push(name.clone());
                }
                continue;
            };
            let section = section.as_str();
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
        // After the other variables, so that an empty DATABASE_URL (which unsets the key)
        // cannot undo it.
        if let Some((_, path)) = env
            .iter()
            .find(|(k, v)| k == "DATABASE_URL_FILE" && !v.is_empty())
        {
            if env
                .iter()
                .any(|(k, v)| k == "DATABASE_URL" && !v.is_empty())
            {
                return Err(ConfigError::Invalid(
                    "DATABASE_URL and DATABASE_URL_FILE are both set: set one".into(),
                ));
            }
            let path = PathBuf::from(path);
            let url = read_secret(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            if let toml::Value::Table(database) = table
                .entry("database")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            {
                database.insert("url".into(), toml::Value::String(url));
            }
        }
        let mut config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(one_line(&e.to_string())))?;
        config.validate()?;
        ignored_env.sort();
        config.ignored_env = ignored_env;
        Ok(config)
    }

    /// Logs the variables with forewarn's prefix that were ignored because they cannot name
    /// a key (call once logging is up).
    pub fn warn_ignored_env(&self) {
        if !self.ignored_env.is_empty() {
            tracing::warn!(
                variables = ?self.ignored_env,
                "environment variables with the FOREWARN_ prefix that name no configuration key (FOREWARN_<SECTION>__<KEY>) are ignored; Kubernetes sets such variables for a Service named forewarn"
            );
        }
    }

    /// Rejects every value that would make a later call panic or misbehave (a zero period
    /// for `tokio::time::interval`, a keep-alive rumqttc refuses, an empty pool, a NaN cost…),
    /// with one sentence naming the key, its value and what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.database.validate()?;
        crate::ingest::config::validate(&self.mqtt, &self.ingest)?;
        self.storage.validate()?;
        self.embedded.validate()?;
        self.log.validate()?;
        self.train.validate()?;
        self.predict.validate()?;
        self.dispatch.validate()?;
        self.outreach.validate()?;
        self.http.validate()?;
        Ok(())
    }
}

/// A secret mounted as a file (`DATABASE_URL_FILE`, `mqtt.password_file`): its content
/// without the trailing newline editors and `echo` leave.
pub fn read_secret(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// toml writes the key on a line of its own (`…\nin `http.addr``): one sentence on one line.
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message.lines().map(str::trim).collect();
    lines.join(" ").trim().to_string()
}

/// The machine's host name from `/proc/sys/kernel/hostname` (Linux), when there is one.
pub(crate) fn proc_host_name() -> Option<String> {
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
/// A command-line scale: a finite number > 0 (clap's `value_parser`, for `forewarn demo`'s
/// and `forewarn-sim`'s `--failure-scale`).
pub fn positive_scale(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(scale) if scale.is_finite() && scale > 0.0 => Ok(scale),
        _ => Err(format!("{text:?} is not a finite number > 0")),
    }
}

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
