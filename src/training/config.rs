//! The `train` section: `forewarn train` and scheduled retraining.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::rules::{HOUR, MAX_PERIOD, cost_rule, period_rule, rule, show, span_rule};
use crate::config::{ConfigError, auto_duration, optional_duration};

/// `forewarn train` and scheduled retraining.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Retrain this often inside `serve` (promoting only a better model); `"off"` never.
    #[serde(with = "optional_duration")]
    pub interval: Option<Duration>,
    /// The held-out time before the test window: candidates are compared, probabilities
    /// calibrated and thresholds chosen on it (out of fold), never trained on by the model
    /// that scores it. `"auto"`: half of the time before the test window (at most 90 days,
    /// at least as long as the test window). (`validation_window` is its old name.)
    #[serde(with = "auto_duration", alias = "validation_window")]
    pub tuning_window: Option<Duration>,
    /// The newest part of the data: nothing is fitted or chosen on it; the model card's
    /// headline figures come from it. `"auto"`: a fifth of the history, at least one and a
    /// half of the longest horizon, at most 30 days.
    #[serde(with = "auto_duration")]
    pub test_window: Option<Duration>,
    /// The shipped classifier of each mode is refitted on every example labelled before
    /// the end of the data, the test window included (the newest failures, the nearest
    /// season); the card's test figures, and promotion, judge the same algorithm as fitted
    /// before the test window (kept in the artifact). `false`: the shipped classifier is
    /// the one the test window judged.
    pub refit_with_test_window: bool,
    /// Positive examples less than this before their failure are left out of fitting
    /// (calibration, thresholds and judging keep them): a flag must come a day ahead, and
    /// the last hours, the easiest positives, teach the signature of a part about to die
    /// rather than the first days' one. At most half a mode's horizon. `"0s"` (the
    /// default: `"24h"` measured no better on untouched fleets): every positive is fitted on.
    #[serde(with = "humantime_serde")]
    pub fit_min_lead: Duration,
    /// Rolling-origin folds over the tuning window: fold `k` is scored by a model trained
    /// on every example labelled before it starts. `0`: auto (3).
    pub tuning_folds: usize,
    /// Failure modes whose horizon is `"auto"` (and those found in `failures` but not
    /// listed below) get the horizon their history supports (how long before failure
    /// their signals separate from healthy behaviour), `default_horizon` when it cannot
    /// tell. `false`: `default_horizon` for them.
    pub learn_horizons: bool,
    /// Features that compare each device with its kind's fleet in the same hours (the
    /// median device), so that what moves every device at once — the season, a heatwave,
    /// a firmware push — is not taken for a failure. Stored in the model; `false`: none.
    pub fleet_reference: bool,
    /// The candidate classifiers every mode compares on its tuning window (at least one).
    /// The pooled one is tried for kinds with two modes or more; a one-mode kind whose list
    /// holds only it uses `gradient_boosted_trees`.
    pub candidates: Vec<crate::model::Algorithm>,
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
    /// Horizon of failure modes whose history cannot tell (or with `learn_horizons` off).
    #[serde(with = "humantime_serde")]
    pub default_horizon: Duration,
    /// Failure modes with their own horizon (or `"auto"`) and costs (defaults: the
    /// simulator fleet's, with fixed horizons; a mode found in `failures` but not listed
    /// is trained with a learned horizon).
    pub failure_modes: Vec<FailureModeConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FailureModeConfig {
    pub kind: String,
    pub component: String,
    /// A flag is true when the component fails within this time after it; `"auto"` (also
    /// when left out): learned from the history, as for modes not listed.
    #[serde(default, with = "auto_duration")]
    pub horizon: Option<Duration>,
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
            horizon: Some(Duration::from_secs(hours * 3600)),
            cost_false_alarm: None,
            cost_missed_failure: None,
        };
        TrainConfig {
            interval: None,
            tuning_window: None,
            test_window: None,
            tuning_folds: 0,
            refit_with_test_window: true,
            fit_min_lead: Duration::ZERO,
            learn_horizons: true,
            fleet_reference: true,
            candidates: vec![
                crate::model::Algorithm::LogisticRegression,
                crate::model::Algorithm::FewFeatureLogistic,
                crate::model::Algorithm::GradientBoostedTrees,
                crate::model::Algorithm::PooledGradientBoostedTrees,
            ],
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
                // A battery sags for days before it dies (the simulator documents a median
                // of 8): with 3 days, a model that saw it coming re-flagged it every 3 days
                // and each early flag was judged false.
                mode("car", "battery", 7 * 24),
                mode("car", "thermostat", 5 * 24),
                mode("camera", "sd_card", 7 * 24),
                mode("camera", "overheating", 2 * 24),
                mode("pump", "bearing", 7 * 24),
                mode("pump", "seal", 5 * 24),
            ],
        }
    }
}

impl TrainConfig {
    /// Rejects what would panic or misbehave later, with one sentence naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let train = self;
        period_rule("train.interval", train.interval)?;
        if let Some(window) = train.tuning_window {
            span_rule("train.tuning_window", window)?;
        }
        if let Some(window) = train.test_window {
            span_rule("train.test_window", window)?;
        }
        rule(
            train.tuning_folds <= 12,
            "train.tuning_folds",
            train.tuning_folds,
            "it must be between 0 (auto) and 12",
        )?;
        rule(
            train.example_stride >= HOUR && train.example_stride <= MAX_PERIOD,
            "train.example_stride",
            show(train.example_stride),
            "it must be between 1h (features use hourly buckets) and 365d",
        )?;
        rule(
            train.negative_sample > 0.0 && train.negative_sample <= 1.0,
            "train.negative_sample",
            train.negative_sample,
            "it must be in (0, 1]",
        )?;
        rule(
            train.fit_min_lead <= MAX_PERIOD,
            "train.fit_min_lead",
            show(train.fit_min_lead),
            "it must be at most 365d (0s fits every positive example)",
        )?;
        cost_rule("train.cost_false_alarm", train.cost_false_alarm)?;
        cost_rule("train.cost_missed_failure", train.cost_missed_failure)?;
        span_rule("train.default_horizon", train.default_horizon)?;
        rule(
            !train.model_dir.as_os_str().is_empty(),
            "train.model_dir",
            "\"\"",
            "it must name a directory",
        )?;
        rule(
            !train.candidates.is_empty(),
            "train.candidates",
            "[]",
            "at least one candidate is needed (logistic_regression, gradient_boosted_trees, pooled_gradient_boosted_trees)",
        )?;
        for (mode_idx, mode) in train.failure_modes.iter().enumerate() {
            let key = |field: &str| format!("train.failure_modes[{mode_idx}].{field}");
            rule(
                !mode.kind.is_empty(),
                &key("kind"),
                "\"\"",
                "it must name a device kind",
            )?;
            rule(
                !mode.component.is_empty(),
                &key("component"),
                "\"\"",
                "it must name a component",
            )?;
            if let Some(horizon) = mode.horizon {
                span_rule(&key("horizon"), horizon)?;
            }
            if let Some(cost) = mode.cost_false_alarm {
                cost_rule(&key("cost_false_alarm"), cost)?;
            }
            if let Some(cost) = mode.cost_missed_failure {
                cost_rule(&key("cost_missed_failure"), cost)?;
            }
            let first_idx = train
                .failure_modes
                .iter()
                .position(|m| m.kind == mode.kind && m.component == mode.component);
            rule(
                first_idx == Some(mode_idx),
                &key("component"),
                format!("{:?}", mode.component),
                &format!(
                    "{}/{} is already train.failure_modes[{}]: a failure mode is listed once",
                    mode.kind,
                    mode.component,
                    first_idx.unwrap_or_default()
                ),
            )?;
        }

        Ok(())
    }
}
