//! Models: candidate classifiers (linfa logistic regression, forust gradient-boosted
//! trees), probability calibration, the cost-minimising alert threshold, and the metrics
//! that judge them. Architecture invariant: no IO here; `training` and `predict` feed it
//! feature tables and persist what it returns.

mod candidates;
pub mod events;
mod metrics;

use serde::{Deserialize, Serialize};

use crate::features::{FeatureSpec, FeatureTable, KindSchema};

pub use candidates::{
    Algorithm, Classifier, TrainingSet, fit_candidate, fit_regressor, predict_regressor,
};
pub use events::{EventMetrics, EventRules, ScoredPoint, event_metrics};
pub use metrics::{ExampleMetrics, example_metrics, pr_auc};

/// Errors of model fitting and loading.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("logistic regression failed: {0}")]
    Logistic(String),
    #[error("gradient boosting failed: {0}")]
    Boosting(String),
    #[error("no positive examples for {0}")]
    NoPositives(String),
    #[error("feature columns differ from the model's: {0}")]
    Columns(String),
}

/// A `(device kind, component)` pair with its horizon and costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureMode {
    pub kind: String,
    pub component: String,
    /// A positive example at `t`: the component fails within this many hours after `t`.
    pub horizon_hours: f64,
    /// Cost of one proactive visit that finds nothing wrong.
    pub cost_false_alarm: f64,
    /// Cost of one breakdown nobody saw coming.
    pub cost_missed_failure: f64,
}

impl FailureMode {
    pub fn name(&self) -> String {
        format!("{}/{}", self.kind, self.component)
    }
}

/// Platt scaling: `p = σ(a·margin + b)`, fitted on the validation window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub a: f64,
    pub b: f64,
}

impl Calibration {
    pub fn identity() -> Self {
        Calibration { a: 1.0, b: 0.0 }
    }

    pub fn apply(&self, margin: f64) -> f64 {
        sigmoid(self.a * margin + self.b)
    }

    /// Maximum likelihood by Newton's method, with Platt's smoothed targets (so a perfectly
    /// separable window does not push `a` to infinity).
    pub fn fit(margins: &[f64], labels: &[bool]) -> Calibration {
        let positives = labels.iter().filter(|l| **l).count() as f64;
        let negatives = labels.len() as f64 - positives;
        if positives == 0.0 || negatives == 0.0 {
            return Calibration::identity();
        }
        let high = (positives + 1.0) / (positives + 2.0);
        let low = 1.0 / (negatives + 2.0);
        let (mut a, mut b) = (1.0, 0.0);
        for _ in 0..50 {
            let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for (&m, &l) in margins.iter().zip(labels) {
                let target = if l { high } else { low };
                let p = sigmoid(a * m + b);
                let d = p - target;
                let w = (p * (1.0 - p)).max(1e-12);
                ga += d * m;
                gb += d;
                haa += w * m * m;
                hab += w * m;
                hbb += w;
            }
            let det = haa * hbb - hab * hab;
            if det.abs() < 1e-18 {
                break;
            }
            let da = (hbb * ga - hab * gb) / det;
            let db = (haa * gb - hab * ga) / det;
            a -= da;
            b -= db;
            if da.abs() < 1e-9 && db.abs() < 1e-9 {
                break;
            }
        }
        if a.is_finite() && b.is_finite() {
            Calibration { a, b }
        } else {
            Calibration::identity()
        }
    }
}

pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// How a trained mode model did on its validation window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    pub from: chrono::DateTime<chrono::Utc>,
    pub to: chrono::DateTime<chrono::Utc>,
    pub examples: ExampleMetrics,
    pub events: EventMetrics,
    /// `cost_false_alarm × false flags + cost_missed_failure × missed failures`.
    pub expected_cost: f64,
}

/// A trained model for one failure mode: everything needed to score it.
#[derive(Serialize, Deserialize)]
pub struct ModeModel {
    pub mode: FailureMode,
    pub spec: FeatureSpec,
    pub schema: KindSchema,
    pub feature_names: Vec<String>,
    pub classifier: Classifier,
    pub calibration: Calibration,
    /// Alert when the calibrated probability is at least this.
    pub threshold: f64,
    pub validation: Validation,
    /// Feature importances, largest first.
    pub importances: Vec<(String, f64)>,
    /// Every candidate's validation result, and why the winner won.
    pub candidates: Vec<CandidateReport>,
    pub choice: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateReport {
    pub algorithm: Algorithm,
    pub pr_auc: f64,
    pub threshold: f64,
    pub expected_cost: f64,
    pub events: EventMetrics,
    pub fit_seconds: f64,
}

/// One contributing factor of a prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Factor {
    pub feature: String,
    pub value: f64,
    pub contribution: f64,
    pub text: String,
}

impl ModeModel {
    /// Calibrated failure probabilities, one per row.
    pub fn probabilities(&self, table: &FeatureTable) -> Result<Vec<f64>, ModelError> {
        if table.names != self.feature_names {
            return Err(ModelError::Columns(self.mode.name()));
        }
        Ok(self
            .classifier
            .margins(table)
            .into_iter()
            .map(|m| self.calibration.apply(m))
            .collect())
    }

    /// The `count` features that pushed row `row` towards failure the most.
    pub fn top_factors(&self, table: &FeatureTable, row: usize, count: usize) -> Vec<Factor> {
        let contributions = self.classifier.contributions(table, row);
        let values = table.row(row);
        let mut ranked: Vec<(usize, f64)> = contributions
            .into_iter()
            .enumerate()
            .filter(|(_, c)| c.is_finite() && *c > 0.0)
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        ranked
            .into_iter()
            .take(count)
            .map(|(index, contribution)| Factor {
                feature: self.feature_names[index].clone(),
                value: values[index],
                contribution,
                text: crate::features::describe(
                    &self.spec,
                    &self.feature_names[index],
                    values[index],
                ),
            })
            .collect()
    }
}

/// A trained model version: one [`ModeModel`] per failure mode.
#[derive(Serialize, Deserialize)]
pub struct ModelArtifact {
    pub version: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub data_from: chrono::DateTime<chrono::Utc>,
    pub data_to: chrono::DateTime<chrono::Utc>,
    pub modes: Vec<ModeModel>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platt_scaling_recovers_a_known_link() {
        // Labels drawn deterministically with p = σ(2m − 1).
        let mut margins = Vec::new();
        let mut labels = Vec::new();
        for i in 0..20_000 {
            let m = (i % 200) as f64 / 50.0 - 2.0;
            let p = sigmoid(2.0 * m - 1.0);
            let u = ((i as u64).wrapping_mul(2_654_435_761) % 10_000) as f64 / 10_000.0;
            margins.push(m);
            labels.push(u < p);
        }
        let calibration = Calibration::fit(&margins, &labels);
        assert!((calibration.a - 2.0).abs() < 0.2, "{calibration:?}");
        assert!((calibration.b + 1.0).abs() < 0.2, "{calibration:?}");
    }
}
