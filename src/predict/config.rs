//! The `predict` section: the live scoring stage.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::rules::period_rule;
use crate::config::{ConfigError, optional_duration};

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

impl PredictConfig {
    /// Rejects what would panic or misbehave later, with one sentence naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        period_rule("predict.interval", self.interval)?;
        Ok(())
    }
}
