//! The `embedded` section: where the one-command defaults keep their data.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::config::rules::rule;

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

impl EmbeddedConfig {
    /// Rejects what would panic or misbehave later, with one sentence naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        rule(
            !self.data_dir.as_os_str().is_empty(),
            "embedded.data_dir",
            "\"\"",
            "it must name a directory",
        )?;
        Ok(())
    }
}
