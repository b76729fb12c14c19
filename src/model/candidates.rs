//! The candidate classifiers. Both output a margin (log-odds); calibration maps it to a
//! probability.
//!
//! - **Logistic regression** (`linfa-logistic`): features standardised with the training
//!   means and deviations, missing values at the mean. linfa ignores sample weights, so the
//!   positives are repeated until they are a quarter of the set; linfa also picks its own
//!   "positive" class (the more frequent one, see CRATES.md), so the sign is fixed here.
//! - **Gradient-boosted trees** (`forust-ml`, XGBoost's algorithm in pure Rust): log loss,
//!   sample weights for the class imbalance, missing values routed natively. Its SHAP-like
//!   contributions explain each prediction.

use forust_ml::gradientbooster::{ContributionsMethod, ImportanceMethod};
use forust_ml::objective::ObjectiveType;
use forust_ml::{GradientBooster, Matrix};
use linfa::prelude::*;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use super::ModelError;
use crate::features::FeatureTable;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    LogisticRegression,
    GradientBoostedTrees,
}

impl Algorithm {
    pub const ALL: [Algorithm; 2] = [
        Algorithm::LogisticRegression,
        Algorithm::GradientBoostedTrees,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::LogisticRegression => "logistic_regression",
            Algorithm::GradientBoostedTrees => "gradient_boosted_trees",
        }
    }
}

/// Labelled rows (row-major, `NaN` for missing).
pub struct TrainingSet {
    pub values: Vec<f64>,
    pub n_columns: usize,
    pub labels: Vec<bool>,
}

impl TrainingSet {
    pub fn n_rows(&self) -> usize {
        self.labels.len()
    }

    fn row(&self, index: usize) -> &[f64] {
        &self.values[index * self.n_columns..(index + 1) * self.n_columns]
    }
}

#[derive(Serialize, Deserialize)]
pub enum Classifier {
    Logistic {
        means: Vec<f64>,
        scales: Vec<f64>,
        weights: Vec<f64>,
        intercept: f64,
    },
    Boosted(Box<GradientBooster>),
}

/// Column-major copy of row-major values, as forust wants it.
pub fn column_major(values: &[f64], n_rows: usize, n_columns: usize) -> Vec<f64> {
    let mut out = vec![0.0; values.len()];
    for row in 0..n_rows {
        for column in 0..n_columns {
            out[column * n_rows + row] = values[row * n_columns + column];
        }
    }
    out
}

pub fn fit_candidate(algorithm: Algorithm, set: &TrainingSet) -> Result<Classifier, ModelError> {
    match algorithm {
        Algorithm::LogisticRegression => fit_logistic(set),
        Algorithm::GradientBoostedTrees => fit_boosted(set),
    }
}

fn fit_logistic(set: &TrainingSet) -> Result<Classifier, ModelError> {
    let width = set.n_columns;
    let mut means = vec![0.0; width];
    let mut counts = vec![0usize; width];
    for row in 0..set.n_rows() {
        for (column, value) in set.row(row).iter().enumerate() {
            if value.is_finite() {
                means[column] += value;
                counts[column] += 1;
            }
        }
    }
    for (mean, count) in means.iter_mut().zip(&counts) {
        *mean = if *count > 0 {
            *mean / *count as f64
        } else {
            0.0
        };
    }
    let mut scales = vec![0.0; width];
    for row in 0..set.n_rows() {
        for (column, value) in set.row(row).iter().enumerate() {
            if value.is_finite() {
                scales[column] += (value - means[column]).powi(2);
            }
        }
    }
    for (scale, count) in scales.iter_mut().zip(&counts) {
        let std = if *count > 1 {
            (*scale / (*count - 1) as f64).sqrt()
        } else {
            0.0
        };
        *scale = if std > 1e-12 { std } else { 1.0 };
    }
    // Repeat positives until they are about a quarter of the rows.
    let positives: Vec<usize> = (0..set.n_rows()).filter(|&r| set.labels[r]).collect();
    if positives.is_empty() {
        return Err(ModelError::NoPositives("logistic regression".into()));
    }
    let negatives = set.n_rows() - positives.len();
    let repeat = ((negatives as f64 / 3.0) / positives.len() as f64)
        .floor()
        .max(1.0) as usize;
    let mut rows: Vec<usize> = (0..set.n_rows()).collect();
    for _ in 1..repeat {
        rows.extend_from_slice(&positives);
    }
    let mut x = Array2::<f64>::zeros((rows.len(), width));
    let mut y = Array1::<bool>::from_elem(rows.len(), false);
    for (out_row, &row) in rows.iter().enumerate() {
        for (column, value) in set.row(row).iter().enumerate() {
            x[[out_row, column]] = standardise(*value, means[column], scales[column]);
        }
        y[out_row] = set.labels[row];
    }
    let dataset = Dataset::new(x, y);
    let fitted = linfa_logistic::LogisticRegression::default()
        .alpha(1.0)
        .max_iterations(200)
        .fit(&dataset)
        .map_err(|e| ModelError::Logistic(e.to_string()))?;
    // linfa's "positive" class may be `false`: flip the sign so the margin is log-odds of
    // failure.
    let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
    Ok(Classifier::Logistic {
        means,
        scales,
        weights: fitted.params().iter().map(|w| sign * w).collect(),
        intercept: sign * fitted.intercept(),
    })
}

fn standardise(value: f64, mean: f64, scale: f64) -> f64 {
    if value.is_finite() {
        ((value - mean) / scale).clamp(-20.0, 20.0)
    } else {
        0.0
    }
}

fn fit_boosted(set: &TrainingSet) -> Result<Classifier, ModelError> {
    let positives = set.labels.iter().filter(|l| **l).count();
    if positives == 0 {
        return Err(ModelError::NoPositives("gradient boosting".into()));
    }
    let negatives = set.n_rows() - positives;
    // Weight positives up to a third of the total weight at most (not to parity: parity
    // over-predicts failures and calibration has to undo it).
    let positive_weight = (negatives as f64 / positives as f64 / 3.0).clamp(1.0, 50.0);
    let weights: Vec<f64> = set
        .labels
        .iter()
        .map(|&l| if l { positive_weight } else { 1.0 })
        .collect();
    let y: Vec<f64> = set
        .labels
        .iter()
        .map(|&l| if l { 1.0 } else { 0.0 })
        .collect();
    let data = column_major(&set.values, set.n_rows(), set.n_columns);
    let matrix = Matrix::new(&data, set.n_rows(), set.n_columns);
    let mut booster = booster(ObjectiveType::LogLoss);
    booster
        .fit(&matrix, &y, &weights, None)
        .map_err(|e| ModelError::Boosting(e.to_string()))?;
    Ok(Classifier::Boosted(Box::new(booster)))
}

fn booster(objective: ObjectiveType) -> GradientBooster {
    GradientBooster::default()
        .set_objective_type(objective)
        .set_iterations(120)
        .set_learning_rate(0.1)
        .set_max_depth(5)
        .set_min_leaf_weight(5.0)
        .set_l2(1.0)
        .set_subsample(0.8)
        .set_colsample_bytree(0.8)
        .set_seed(7)
        .set_parallel(true)
}

/// A gradient-boosted regressor (squared loss), e.g. remaining useful life.
pub fn fit_regressor(
    values: &[f64],
    n_columns: usize,
    targets: &[f64],
    iterations: usize,
    seed: u64,
) -> Result<GradientBooster, ModelError> {
    let n_rows = targets.len();
    let data = column_major(values, n_rows, n_columns);
    let matrix = Matrix::new(&data, n_rows, n_columns);
    let mut booster = booster(ObjectiveType::SquaredLoss)
        .set_iterations(iterations)
        .set_learning_rate(0.05)
        .set_max_depth(4)
        .set_seed(seed)
        .set_initialize_base_score(true);
    booster
        .fit_unweighted(&matrix, targets, None)
        .map_err(|e| ModelError::Boosting(e.to_string()))?;
    Ok(booster)
}

pub fn predict_regressor(booster: &GradientBooster, values: &[f64], n_columns: usize) -> Vec<f64> {
    let n_rows = values.len() / n_columns.max(1);
    let data = column_major(values, n_rows, n_columns);
    booster.predict(&Matrix::new(&data, n_rows, n_columns), true)
}

impl Classifier {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Classifier::Logistic { .. } => Algorithm::LogisticRegression,
            Classifier::Boosted(_) => Algorithm::GradientBoostedTrees,
        }
    }

    /// Log-odds of failure, one per row.
    pub fn margins(&self, table: &FeatureTable) -> Vec<f64> {
        self.margins_of(&table.values, table.n_rows(), table.n_columns())
    }

    pub fn margins_of(&self, values: &[f64], n_rows: usize, n_columns: usize) -> Vec<f64> {
        match self {
            Classifier::Logistic {
                means,
                scales,
                weights,
                intercept,
            } => (0..n_rows)
                .map(|row| {
                    let x = &values[row * n_columns..(row + 1) * n_columns];
                    intercept
                        + x.iter()
                            .enumerate()
                            .map(|(c, v)| weights[c] * standardise(*v, means[c], scales[c]))
                            .sum::<f64>()
                })
                .collect(),
            Classifier::Boosted(booster) => {
                if n_rows == 0 {
                    return Vec::new();
                }
                let data = column_major(values, n_rows, n_columns);
                booster.predict(&Matrix::new(&data, n_rows, n_columns), true)
            }
        }
    }

    /// Each feature's contribution to each row's margin (row-major, `n_rows × n_columns`):
    /// `w·z` for the logistic model, Saabas path attributions for the trees.
    pub fn contributions(&self, values: &[f64], n_rows: usize, n_columns: usize) -> Vec<f64> {
        match self {
            Classifier::Logistic {
                means,
                scales,
                weights,
                ..
            } => values
                .chunks(n_columns.max(1))
                .flat_map(|x| {
                    x.iter()
                        .enumerate()
                        .map(|(c, v)| weights[c] * standardise(*v, means[c], scales[c]))
                        .collect::<Vec<_>>()
                })
                .collect(),
            Classifier::Boosted(booster) => {
                if n_rows == 0 {
                    return Vec::new();
                }
                let data = column_major(values, n_rows, n_columns);
                let matrix = Matrix::new(&data, n_rows, n_columns);
                // One value per feature plus the bias, per row.
                let with_bias =
                    booster.predict_contributions(&matrix, ContributionsMethod::Weight, true);
                with_bias
                    .chunks(n_columns + 1)
                    .flat_map(|row| row[..n_columns].iter().copied())
                    .collect()
            }
        }
    }

    /// Importance of each column (normalised to sum 1).
    pub fn importances(&self, n_columns: usize) -> Vec<f64> {
        let raw: Vec<f64> = match self {
            Classifier::Logistic { weights, .. } => weights.iter().map(|w| w.abs()).collect(),
            Classifier::Boosted(booster) => {
                let map = booster.calculate_feature_importance(ImportanceMethod::TotalGain, false);
                (0..n_columns)
                    .map(|c| map.get(&c).copied().unwrap_or(0.0) as f64)
                    .collect()
            }
        };
        let total: f64 = raw.iter().sum();
        raw.iter()
            .map(|v| if total > 0.0 { v / total } else { 0.0 })
            .collect()
    }
}
