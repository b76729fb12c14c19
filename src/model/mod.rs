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
    Algorithm, Augment, Classifier, RegressorSettings, TrainingSet, fit_candidate, fit_regressor,
    predict_regressor,
};
pub use events::{EventMetrics, EventRules, NEVER, ScoredPoint, event_metrics, expected_cost};
pub use metrics::{ExampleMetrics, example_metrics, pr_auc, rank_auc};

/// Errors of model fitting and loading.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("logistic regression failed: {0}")]
    Logistic(String),
    #[error("gradient boosting failed: {0}")]
    Boosting(String),
    #[error("no positive examples for {0}")]
    NoPositives(String),
    #[error(
        "no failures of {0} in the tuning window: it cannot be calibrated or given a threshold, so it is not trained"
    )]
    Unvalidated(String),
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

    /// Maximum likelihood by damped Newton steps, with Platt's smoothed targets and a
    /// small ridge penalty, so a validation window the model separates perfectly still
    /// gives finite, graded probabilities instead of pushing `a` to infinity. Margins are
    /// clipped to ±30 (beyond that the ranking, not the magnitude, matters).
    pub fn fit(margins: &[f64], labels: &[bool]) -> Calibration {
        const RIDGE: f64 = 1e-2;
        let positives = labels.iter().filter(|l| **l).count() as f64;
        let negatives = labels.len() as f64 - positives;
        if positives == 0.0 || negatives == 0.0 {
            return Calibration::identity();
        }
        let high = (positives + 1.0) / (positives + 2.0);
        let low = 1.0 / (negatives + 2.0);
        let clipped: Vec<f64> = margins.iter().map(|m| m.clamp(-30.0, 30.0)).collect();
        let loss = |a: f64, b: f64| -> f64 {
            let data: f64 = clipped
                .iter()
                .zip(labels)
                .map(|(&m, &l)| {
                    let target = if l { high } else { low };
                    let z = a * m + b;
                    // log(1 + e^z) − target·z, computed stably
                    let softplus = if z > 0.0 {
                        z + (-z).exp().ln_1p()
                    } else {
                        z.exp().ln_1p()
                    };
                    softplus - target * z
                })
                .sum();
            data + 0.5 * RIDGE * (a * a + b * b)
        };
        let (mut a, mut b) = (1.0, 0.0);
        let mut current = loss(a, b);
        for _ in 0..100 {
            let (mut ga, mut gb, mut haa, mut hab, mut hbb) =
                (RIDGE * a, RIDGE * b, RIDGE, 0.0, RIDGE);
            for (&m, &l) in clipped.iter().zip(labels) {
                let target = if l { high } else { low };
                let p = sigmoid(a * m + b);
                let d = p - target;
                let w = p * (1.0 - p);
                ga += d * m;
                gb += d;
                haa += w * m * m;
                hab += w * m;
                hbb += w;
            }
            let det = haa * hbb - hab * hab;
            if det <= 0.0 || !det.is_finite() {
                break;
            }
            let da = (hbb * ga - hab * gb) / det;
            let db = (haa * gb - hab * ga) / det;
            // Halve the step until the loss decreases.
            let mut step = 1.0;
            let mut improved = false;
            for _ in 0..30 {
                let (na, nb) = (a - step * da, b - step * db);
                let candidate = loss(na, nb);
                if candidate <= current {
                    a = na;
                    b = nb;
                    current = candidate;
                    improved = true;
                    break;
                }
                step *= 0.5;
            }
            if !improved || (step * da).abs().max((step * db).abs()) < 1e-10 {
                break;
            }
        }
        Calibration { a, b }
    }

    pub fn apply(&self, margin: f64) -> f64 {
        sigmoid(self.a * margin.clamp(-30.0, 30.0) + self.b)
    }
}

pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// How a trained mode model did on one window: the tuning window (out-of-fold scores, what
/// calibration, threshold and winner were chosen on) or the test window (nothing chosen on
/// it).
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
    /// The shipped classifier: what scores live.
    pub classifier: Classifier,
    /// The classifier the test window judged, fitted on the examples labelled before it,
    /// when the shipped one was refitted through the end of the data
    /// (`train.refit_with_test_window`): the card's test figures and promotion are this
    /// one's. `None`: the shipped classifier is the one the test window judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tested_classifier: Option<Classifier>,
    /// The end of the examples the shipped classifier was refitted on (every label known
    /// by then), when it was; `None`: fitted before the test window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refitted_until: Option<chrono::DateTime<chrono::Utc>>,
    pub calibration: Calibration,
    /// Alert when the calibrated probability is at least this.
    pub threshold: f64,
    /// The tuning window (out of fold).
    pub validation: Validation,
    /// The test window, after the tuning window: the figures to believe. `None` in
    /// artifacts older than the split.
    #[serde(default)]
    pub test: Option<Validation>,
    /// Simple rules judged on the same windows, so the card says what the model adds.
    #[serde(default)]
    pub baselines: Vec<Baseline>,
    /// Where the horizon came from: `configured`, `learned: …` or `default`.
    #[serde(default)]
    pub horizon_source: String,
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

/// A simple rule judged like a model: its one parameter chosen on the tuning window,
/// judged on the test window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub rule: String,
    pub description: String,
    pub threshold: f64,
    pub tuning: EventMetrics,
    pub test: EventMetrics,
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
    /// Calibrated failure probabilities of the shipped classifier, one per row.
    pub fn probabilities(&self, table: &FeatureTable) -> Result<Vec<f64>, ModelError> {
        self.probabilities_of(&self.classifier, table)
    }

    /// Calibrated failure probabilities of the classifier the test window judged (fitted
    /// before it), one per row: what promotion compares on a window new to both models.
    pub fn tested_probabilities(&self, table: &FeatureTable) -> Result<Vec<f64>, ModelError> {
        self.probabilities_of(
            self.tested_classifier.as_ref().unwrap_or(&self.classifier),
            table,
        )
    }

    fn probabilities_of(
        &self,
        classifier: &Classifier,
        table: &FeatureTable,
    ) -> Result<Vec<f64>, ModelError> {
        if table.names != self.feature_names {
            return Err(ModelError::Columns(self.mode.name()));
        }
        Ok(classifier
            .margins(table)
            .into_iter()
            .map(|m| self.calibration.apply(m))
            .collect())
    }

    /// For every row, the `count` features that pushed it towards failure the most.
    pub fn top_factors(&self, table: &FeatureTable, count: usize) -> Vec<Vec<Factor>> {
        let width = table.n_columns();
        let contributions = self
            .classifier
            .contributions(&table.values, table.n_rows(), width);
        contributions
            .chunks(width.max(1))
            .enumerate()
            .map(|(row, row_contributions)| {
                let values = table.row(row);
                let mut ranked: Vec<(usize, f64)> = row_contributions
                    .iter()
                    .copied()
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

    #[test]
    fn a_separable_window_still_calibrates_to_graded_probabilities() {
        let margins: Vec<f64> = (0..1000)
            .map(|i| {
                if i < 990 {
                    -50.0 + i as f64 * 0.01
                } else {
                    80.0
                }
            })
            .collect();
        let labels: Vec<bool> = (0..1000).map(|i| i >= 990).collect();
        let calibration = Calibration::fit(&margins, &labels);
        assert!(
            calibration.a.is_finite() && calibration.a < 100.0,
            "{calibration:?}"
        );
        let top = calibration.apply(80.0);
        assert!(top > 0.5 && top < 1.0, "{top}");
        assert!(calibration.apply(-50.0) < 0.05);
    }
}
