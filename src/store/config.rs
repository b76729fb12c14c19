//! The `database` and `storage` sections: the pool, and how telemetry is stored and kept.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::rules::{MAX_SPAN, period_rule, rule, show, show_optional};
use crate::config::{ConfigError, optional_duration};

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

impl DatabaseConfig {
    /// Rejects what would panic or misbehave later, with one sentence naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let database = self;
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

        Ok(())
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

impl StorageConfig {
    /// Rejects what would panic or misbehave later, with one sentence naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let storage = self;
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

        Ok(())
    }
}
