//! The models in use: the active version of every mode, hot-reloaded when `models` says
//! another is active, and the shipped default registered for modes without one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::artifact;
use crate::model::{ModeModel, ModelArtifact};
use crate::observability::Metrics;
use crate::store::{PromotionOutcome, Store};

use super::PredictError;

/// Models in use, reloaded when `models` says another version is active.
#[derive(Default)]
pub struct ActiveModels {
    /// failure mode → (version, model)
    modes: HashMap<String, (String, ActiveMode)>,
    artifacts: HashMap<PathBuf, Arc<ModelArtifact>>,
}

impl ActiveModels {
    /// Brings the set in line with `models.active`; returns the modes whose version changed.
    /// An artifact that cannot be read leaves its mode without a model (logged and counted
    /// as its kind's error); the other modes are loaded.
    pub async fn refresh(
        &mut self,
        store: &Store,
        metrics: &Metrics,
    ) -> Result<Vec<String>, PredictError> {
        let rows = store.model_rows(true).await?;
        let mut changed = Vec::new();
        let mut next = HashMap::new();
        for row in rows {
            if let Some((version, model)) = self.modes.get(&row.failure_mode)
                && *version == row.version
            {
                next.insert(row.failure_mode.clone(), (version.clone(), model.clone()));
                continue;
            }
            let path = PathBuf::from(&row.artifact_path);
            let artifact = match self.artifacts.get(&path) {
                Some(artifact) if artifact.version == row.version => artifact.clone(),
                _ => {
                    let read_path = path.clone();
                    let read =
                        tokio::task::spawn_blocking(move || artifact::read_artifact(&read_path))
                            .await?;
                    match read {
                        Ok(artifact) => {
                            let artifact = Arc::new(artifact);
                            self.artifacts.insert(path.clone(), artifact.clone());
                            artifact
                        }
                        Err(error) => {
                            let kind = row.failure_mode.split('/').next().unwrap_or_default();
                            tracing::warn!(version = %row.version, mode = %row.failure_mode, error = %error, "active model cannot be read: its mode is not scored");
                            metrics
                                .predict
                                .kind_errors
                                .get_or_create(&vec![("kind", kind.to_string())])
                                .inc();
                            continue;
                        }
                    }
                }
            };
            let Some(index) = artifact
                .modes
                .iter()
                .position(|m| m.mode.name() == row.failure_mode)
            else {
                tracing::warn!(version = %row.version, mode = %row.failure_mode, "active model's artifact lacks this mode");
                continue;
            };
            let model = ActiveMode::new(artifact.clone(), index);
            tracing::info!(mode = %row.failure_mode, version = %row.version, algorithm = %row.algorithm, "model activated for scoring");
            changed.push(row.failure_mode.clone());
            next.insert(row.failure_mode, (row.version, model));
        }
        self.artifacts
            .retain(|_, a| next.values().any(|(v, _)| *v == a.version));
        self.modes = next;
        Ok(changed)
    }

    /// The active modes of `kind`, by name: (name, version, model).
    pub(super) fn modes_of(&self, kind: &str) -> Vec<(String, String, ActiveMode)> {
        let mut modes: Vec<_> = self
            .modes
            .iter()
            .filter(|(_, (_, m))| m.model().mode.kind == kind)
            .map(|(name, (version, model))| (name.clone(), version.clone(), model.clone()))
            .collect();
        modes.sort_by(|a, b| a.0.cmp(&b.0));
        modes
    }

    pub fn is_empty(&self) -> bool {
        self.modes.is_empty()
    }

    pub fn versions(&self) -> HashMap<String, String> {
        self.modes
            .iter()
            .map(|(mode, (version, _))| (mode.clone(), version.clone()))
            .collect()
    }
}

/// One failure mode's model inside a shared, loaded artifact.
#[derive(Clone)]
pub struct ActiveMode {
    artifact: Arc<ModelArtifact>,
    index: usize,
}

impl ActiveMode {
    pub fn new(artifact: Arc<ModelArtifact>, index: usize) -> ActiveMode {
        ActiveMode { artifact, index }
    }

    pub fn model(&self) -> &ModeModel {
        &self.artifact.modes[self.index]
    }
}

/// Registers the shipped default model for every mode that has no active model.
pub async fn ensure_default_model(store: &Store, path: &Path) -> Result<usize, PredictError> {
    if !path.exists() {
        tracing::info!(path = %path.display(), "no default model shipped");
        return Ok(0);
    }
    let active = store.model_rows(true).await?;
    let read_path = path.to_path_buf();
    let artifact =
        tokio::task::spawn_blocking(move || artifact::read_artifact(&read_path)).await??;
    let missing: Vec<String> = artifact
        .modes
        .iter()
        .map(|m| m.mode.name())
        .filter(|name| !active.iter().any(|row| row.failure_mode == *name))
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    store
        .insert_models(&artifact::model_rows(&artifact, path))
        .await?;
    let mut n_activated = 0;
    for mode in &missing {
        // Only where still no model is active: a replica starting at the same time, or a
        // training run, may have activated one since `active` was read.
        let outcome = store
            .promote_model_if_active_is(
                &artifact.version,
                mode,
                None,
                "default model shipped with forewarn (no model was active)",
                &serde_json::json!({}),
            )
            .await?;
        if matches!(outcome, PromotionOutcome::Promoted { .. }) {
            n_activated += 1;
        }
    }
    tracing::info!(version = %artifact.version, modes = n_activated, "default model activated");
    Ok(n_activated)
}
