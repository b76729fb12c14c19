//! Artifacts on disk (`model.json`) and the model card (`card.json`, also each mode's
//! `models.metrics`): typed, so the API can publish their schema. Training writes them;
//! live scoring reads them — neither through the other.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{
    Baseline, Calibration, CandidateReport, EventMetrics, ModeModel, ModelArtifact, Validation,
};
use crate::store::ModelRow;

/// Why an artifact could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read model artifact {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model artifact {path} is not valid: {source}")]
    Invalid {
        path: PathBuf,
        source: serde_json::Error,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Span {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Costs {
    pub false_alarm: f64,
    pub missed_failure: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassBalance {
    pub examples: usize,
    pub positives: usize,
    pub positive_share: f64,
}

/// A model's figures on one window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowFigures {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub class_balance: ClassBalance,
    pub pr_auc: f64,
    pub precision_at_threshold: f64,
    pub recall_at_threshold: f64,
    pub events: EventMetrics,
    pub expected_cost: f64,
}

impl From<&Validation> for WindowFigures {
    fn from(v: &Validation) -> Self {
        WindowFigures {
            from: v.from,
            to: v.to,
            class_balance: ClassBalance {
                examples: v.examples.examples,
                positives: v.examples.positives,
                positive_share: v.examples.positive_share,
            },
            pr_auc: v.examples.pr_auc,
            precision_at_threshold: v.examples.precision_at_threshold,
            recall_at_threshold: v.examples.recall_at_threshold,
            events: v.events.clone(),
            expected_cost: v.expected_cost,
        }
    }
}

/// One failure mode's card. The headline figures (`pr_auc`, `events`, …) are the test
/// window's: nothing was fitted or chosen on it. The tuning window's sit beside them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModeCard {
    pub failure_mode: String,
    pub horizon_hours: f64,
    pub horizon_source: String,
    pub costs: Costs,
    pub algorithm: String,
    pub why: String,
    pub threshold: f64,
    pub calibration: Calibration,
    /// Which window the headline figures below come from.
    pub headline: String,
    /// Which classifier ships: the one the test window judged, or the same algorithm
    /// refitted through the end of the data (`train.refit_with_test_window`).
    #[serde(default = "tested_ships")]
    pub shipped: String,
    pub class_balance: ClassBalance,
    pub pr_auc: f64,
    pub precision_at_threshold: f64,
    pub recall_at_threshold: f64,
    pub events: EventMetrics,
    pub expected_cost: f64,
    /// Nothing fitted or chosen here.
    pub test_window: Option<WindowFigures>,
    /// Calibration, threshold and the winner were chosen here (out-of-fold scores).
    pub tuning_window: WindowFigures,
    /// The no-skill rate: the share of test examples that fail within the horizon (what a
    /// flag raised at random would be worth per example).
    pub no_skill_positive_share: f64,
    pub baselines: Vec<Baseline>,
    pub feature_importances: Vec<(String, f64)>,
    pub candidates: Vec<CandidateReport>,
    pub features: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelCard {
    pub version: String,
    pub created_at: DateTime<Utc>,
    pub data: Span,
    pub modes: Vec<ModeCard>,
}

/// What a card written before the refit says ships.
fn tested_ships() -> String {
    "the classifier the figures above judged".to_string()
}

pub fn mode_card(m: &ModeModel) -> ModeCard {
    let tuning = WindowFigures::from(&m.validation);
    let test = m.test.as_ref().map(WindowFigures::from);
    let (headline, figures) = match &test {
        Some(test) => ("test window".to_string(), test.clone()),
        None => (
            "tuning window (this artifact predates the test window)".to_string(),
            tuning.clone(),
        ),
    };
    ModeCard {
        failure_mode: m.mode.name(),
        horizon_hours: m.mode.horizon_hours,
        horizon_source: m.horizon_source.clone(),
        costs: Costs {
            false_alarm: m.mode.cost_false_alarm,
            missed_failure: m.mode.cost_missed_failure,
        },
        algorithm: m.classifier.algorithm().as_str().to_string(),
        why: m.choice.clone(),
        threshold: m.threshold,
        calibration: m.calibration,
        headline,
        shipped: match m.refitted_until {
            Some(until) => format!(
                "refitted on every example labelled by {until} (the test window included); the figures above are the same algorithm's, with the same calibration and threshold, fitted before the test window"
            ),
            None => tested_ships(),
        },
        no_skill_positive_share: figures.class_balance.positive_share,
        class_balance: figures.class_balance,
        pr_auc: figures.pr_auc,
        precision_at_threshold: figures.precision_at_threshold,
        recall_at_threshold: figures.recall_at_threshold,
        events: figures.events,
        expected_cost: figures.expected_cost,
        test_window: test,
        tuning_window: tuning,
        baselines: m.baselines.clone(),
        feature_importances: m.importances.clone(),
        candidates: m.candidates.clone(),
        features: m.feature_names.len(),
    }
}

/// The model card: data range, class balance, PR-AUC, precision/recall at threshold,
/// lead times, false alarms, baselines, importances, candidates and why the winner won.
pub fn card(artifact: &ModelArtifact) -> ModelCard {
    ModelCard {
        version: artifact.version.clone(),
        created_at: artifact.created_at,
        data: Span {
            from: artifact.data_from,
            to: artifact.data_to,
        },
        modes: artifact.modes.iter().map(mode_card).collect(),
    }
}

/// Writes `model.json` (the artifact) and `card.json` (the model card).
pub fn write_artifact(
    directory: &Path,
    artifact: &ModelArtifact,
) -> Result<(PathBuf, PathBuf), ArtifactError> {
    let write = |path: PathBuf, bytes: Vec<u8>| -> Result<PathBuf, ArtifactError> {
        std::fs::create_dir_all(directory).map_err(|source| ArtifactError::Write {
            path: directory.to_path_buf(),
            source,
        })?;
        std::fs::write(&path, bytes).map_err(|source| ArtifactError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    };
    let model = serde_json::to_vec(artifact).map_err(|source| ArtifactError::Invalid {
        path: directory.join("model.json"),
        source,
    })?;
    let card =
        serde_json::to_vec_pretty(&card(artifact)).map_err(|source| ArtifactError::Invalid {
            path: directory.join("card.json"),
            source,
        })?;
    Ok((
        write(directory.join("model.json"), model)?,
        write(directory.join("card.json"), card)?,
    ))
}

pub fn read_artifact(path: &Path) -> Result<ModelArtifact, ArtifactError> {
    let bytes = std::fs::read(path).map_err(|source| ArtifactError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| ArtifactError::Invalid {
        path: path.to_path_buf(),
        source,
    })
}

pub fn model_rows(artifact: &ModelArtifact, path: &Path) -> Vec<ModelRow> {
    artifact
        .modes
        .iter()
        .map(|m| ModelRow {
            version: artifact.version.clone(),
            failure_mode: m.mode.name(),
            algorithm: m.classifier.algorithm().as_str().into(),
            horizon_hours: m.mode.horizon_hours,
            features: serde_json::json!(m.feature_names),
            metrics: serde_json::to_value(mode_card(m)).unwrap_or_default(),
            threshold: m.threshold,
            artifact_path: path.display().to_string(),
            data_from: artifact.data_from,
            data_to: artifact.data_to,
            active: false,
        })
        .collect()
}
