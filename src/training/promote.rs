//! Promotion: a challenger replaces the active model of a mode only when it is better on
//! a window that neither of them was fitted or tuned on.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::evaluate::{Evaluation, Judged, ModeEvaluation, evaluate_as};
use super::{Span, TrainingError, read_artifact};
use crate::model::{FailureMode, ModeModel, ModelArtifact};
use crate::store::{ModelRow, PromotionOutcome, Store};

/// A promotion decision for one mode.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub failure_mode: String,
    pub challenger: String,
    pub active: Option<String>,
    pub promoted: bool,
    pub reason: String,
    pub challenger_cost: f64,
    pub active_cost: Option<f64>,
}

/// `failure_mode`'s result in `evaluation`.
fn mode_result(
    evaluation: &Evaluation,
    failure_mode: &str,
) -> Result<ModeEvaluation, TrainingError> {
    evaluation
        .failure_modes
        .iter()
        .find(|m| m.failure_mode == failure_mode)
        .cloned()
        .ok_or_else(|| TrainingError::NoData(format!("{failure_mode} was not evaluated")))
}

fn evaluation_cost(evaluation: &ModeEvaluation, mode: &FailureMode) -> f64 {
    mode.cost_false_alarm * evaluation.events.false_flags as f64
        + mode.cost_missed_failure
            * (evaluation.events.failures - evaluation.events.flagged_24h_ahead) as f64
}

/// What comparing a challenger with the active model of its mode concluded.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub promote: bool,
    pub reason: String,
    pub challenger_cost: f64,
    pub active_cost: Option<f64>,
    /// Recorded in `model_promotions.comparison` when promoted.
    pub comparison: Comparison,
}

/// What a promotion compared, recorded as `model_promotions.comparison`. A promotion by
/// hand compared nothing: every field empty (`{}`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Comparison {
    /// The window both models were judged on: new to both.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<Span>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub challenger_cost: Option<f64>,
    /// `None`: no active model was judged (first model, or none comparable).
    pub active_cost: Option<f64>,
    /// The challenger's figures on the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub challenger: Option<ModeEvaluation>,
}

impl Comparison {
    /// As stored in `model_promotions.comparison`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// The future of a comparison (`promote_when_better`'s judge). Boxed and `Send`: an async
/// closure borrowing the store and the artifacts would make its caller's future `Send` only
/// for one lifetime, and `serve` spawns retraining.
pub type JudgeFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Verdict, TrainingError>> + Send + 'a>>;

/// How often one challenger is judged again because another promotion of its mode
/// committed while it was being judged. Each retry means some promotion succeeded, so
/// this bounds only pathological churn.
const MAX_PROMOTION_ATTEMPTS: usize = 16;

/// Promotes `version` for `failure_mode` when `judge` finds it better than the active model,
/// and only while the model it was judged against is still the active one (checked under
/// the mode's promotion lock, in the promotion's transaction). When another promotion won
/// the race meanwhile, `version` is judged again against the new active model, so a
/// decision is always the comparison rule applied to the model it replaces. Returns the
/// active version it was last judged against and the verdict.
pub async fn promote_when_better<'a>(
    store: &Store,
    version: &str,
    failure_mode: &str,
    mut judge: impl FnMut(Option<ModelRow>) -> JudgeFuture<'a>,
) -> Result<(Option<String>, Verdict), TrainingError> {
    let mut attempt = 1;
    loop {
        let active = store
            .model_rows(true)
            .await?
            .into_iter()
            .find(|r| r.failure_mode == failure_mode);
        let active_version = active.as_ref().map(|r| r.version.clone());
        let mut verdict = judge(active).await?;
        if !verdict.promote {
            return Ok((active_version, verdict));
        }
        let outcome = store
            .promote_model_if_active_is(
                version,
                failure_mode,
                active_version.as_deref(),
                &verdict.reason,
                &verdict.comparison.to_json(),
            )
            .await?;
        match outcome {
            PromotionOutcome::Promoted { .. } => return Ok((active_version, verdict)),
            PromotionOutcome::AlreadyActive => {
                verdict.promote = false;
                verdict.reason = "already active".to_string();
                return Ok((active_version, verdict));
            }
            PromotionOutcome::ActiveChanged { active } if attempt < MAX_PROMOTION_ATTEMPTS => {
                tracing::info!(
                    mode = %failure_mode,
                    challenger = %version,
                    active = active.as_deref().unwrap_or("none"),
                    "active model changed during the comparison; comparing again"
                );
                attempt += 1;
            }
            PromotionOutcome::ActiveChanged { active } => {
                verdict.promote = false;
                verdict.reason = format!(
                    "not promoted: the active model changed {MAX_PROMOTION_ATTEMPTS} times while it was being compared"
                );
                return Ok((active, verdict));
            }
        }
    }
}

/// Evaluations by (artifact, window start): one artifact holds many modes. Locked only
/// between awaits.
type Cache = Mutex<HashMap<(String, DateTime<Utc>), Arc<Evaluation>>>;

/// `artifact` evaluated on `[key.1, to)`, once per key.
async fn cached_evaluation(
    cache: &Cache,
    store: &Store,
    key: (String, DateTime<Utc>),
    artifact: &ModelArtifact,
    to: DateTime<Utc>,
    stride: i64,
) -> Result<Arc<Evaluation>, TrainingError> {
    let cached = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
        .cloned();
    if let Some(evaluation) = cached {
        return Ok(evaluation);
    }
    // Both sides as tested: fitted before their test windows, so before `key.1`.
    let evaluation =
        Arc::new(evaluate_as(store, artifact, Judged::AsTested, key.1, to, stride).await?);
    cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key, evaluation.clone());
    Ok(evaluation)
}

/// Everything a mode's model *as tested* (`ModeModel::tested_probabilities`) was fitted or
/// tuned on lies before this: the start of its test window (artifacts older than the test
/// window: the end of their data). The shipped classifier may be refitted past it
/// (`train.refit_with_test_window`); promotion therefore compares the models as tested.
pub fn fitted_until(model: &ModeModel) -> DateTime<Utc> {
    model
        .test
        .as_ref()
        .map_or(model.validation.to, |test| test.from)
}

/// Compares `challenger` with the active model of each mode, both as tested (fitted before
/// their test windows), on a window neither was fitted or tuned on — the challenger's test
/// window, from where the active model's own fitting ended if that is later — and promotes
/// it where it is better: lower cost, or the same
/// cost and a higher PR-AUC. Without such a window the challenger is not promoted. Every
/// promotion is recorded in `model_promotions` with the comparison; concurrent promotions
/// of a mode (replicas retraining at once) each compare with the model they replace
/// (`promote_when_better`).
pub async fn promote_if_better(
    store: &Store,
    challenger: &ModelArtifact,
    stride: i64,
) -> Result<Vec<Decision>, TrainingError> {
    let evaluated: Cache = Mutex::new(HashMap::new());
    let window_to = challenger.data_to;
    let mut decisions = Vec::new();
    for mode in &challenger.modes {
        let name = mode.mode.name();
        let ours_from = fitted_until(mode);
        let name_ref = &name;
        let evaluated = &evaluated;
        let judge = |active: Option<ModelRow>| -> JudgeFuture<'_> {
            Box::pin(async move {
                let ours_at = |from: DateTime<Utc>| async move {
                    let evaluation = cached_evaluation(
                        evaluated,
                        store,
                        (format!("challenger:{}", challenger.version), from),
                        challenger,
                        window_to,
                        stride,
                    )
                    .await?;
                    mode_result(&evaluation, name_ref)
                };
                let (promote, reason, challenger_cost, active_cost, window_from, ours) =
                    match active {
                        None => {
                            let ours = ours_at(ours_from).await?;
                            let cost = evaluation_cost(&ours, &mode.mode);
                            (
                                true,
                                "first model of this failure mode".to_string(),
                                cost,
                                None,
                                ours_from,
                                ours,
                            )
                        }
                        Some(row) if row.version == challenger.version => {
                            let ours = ours_at(ours_from).await?;
                            let cost = evaluation_cost(&ours, &mode.mode);
                            (
                                false,
                                "already active".to_string(),
                                cost,
                                None,
                                ours_from,
                                ours,
                            )
                        }
                        Some(row) => {
                            let path = PathBuf::from(&row.artifact_path);
                            let artifact =
                                tokio::task::spawn_blocking(move || read_artifact(&path)).await??;
                            let theirs_mode =
                                artifact.modes.iter().find(|m| m.mode.name() == *name_ref);
                            let window_from =
                                theirs_mode.map_or(ours_from, |m| fitted_until(m).max(ours_from));
                            let ours = ours_at(window_from).await?;
                            let challenger_cost = evaluation_cost(&ours, &mode.mode);
                            match theirs_mode {
                                None => (
                                    true,
                                    "active artifact lacks this mode".to_string(),
                                    challenger_cost,
                                    None,
                                    window_from,
                                    ours,
                                ),
                                Some(_) if window_from >= window_to => (
                                    false,
                                    format!(
                                        "not compared: the active model {} was fitted up to {window_from}, after the challenger's data ends ({window_to}); no window is new to both",
                                        row.version
                                    ),
                                    challenger_cost,
                                    None,
                                    window_from,
                                    ours,
                                ),
                                Some(_) => {
                                    let theirs = cached_evaluation(
                                        evaluated,
                                        store,
                                        (row.artifact_path.clone(), window_from),
                                        &artifact,
                                        window_to,
                                        stride,
                                    )
                                    .await?;
                                    let theirs = mode_result(&theirs, name_ref)?;
                                    let active_cost = evaluation_cost(&theirs, &mode.mode);
                                    let better = challenger_cost < active_cost
                                        || (challenger_cost == active_cost
                                            && ours.pr_auc > theirs.pr_auc);
                                    let reason = format!(
                                        "on {window_from}..{window_to}, which neither was fitted or tuned on: challenger cost {challenger_cost:.0} (PR-AUC {:.3}, {}/{} flagged ≥24 h ahead, {} false alarms) vs active {} cost {active_cost:.0} (PR-AUC {:.3}, {}/{}, {} false alarms)",
                                        ours.pr_auc,
                                        ours.events.flagged_24h_ahead,
                                        ours.events.failures,
                                        ours.events.false_flags,
                                        row.version,
                                        theirs.pr_auc,
                                        theirs.events.flagged_24h_ahead,
                                        theirs.events.failures,
                                        theirs.events.false_flags,
                                    );
                                    (
                                        better,
                                        reason,
                                        challenger_cost,
                                        Some(active_cost),
                                        window_from,
                                        ours,
                                    )
                                }
                            }
                        }
                    };
                Ok(Verdict {
                    promote,
                    reason,
                    challenger_cost,
                    active_cost,
                    comparison: Comparison {
                        window: Some(Span {
                            from: window_from,
                            to: window_to,
                        }),
                        challenger_cost: Some(challenger_cost),
                        active_cost,
                        challenger: Some(ours),
                    },
                })
            })
        };
        let (active, verdict) =
            promote_when_better(store, &challenger.version, &name, judge).await?;
        tracing::info!(mode = %name, promoted = verdict.promote, reason = %verdict.reason, "promotion decision");
        decisions.push(Decision {
            failure_mode: name,
            challenger: challenger.version.clone(),
            active,
            promoted: verdict.promote,
            reason: verdict.reason,
            challenger_cost: verdict.challenger_cost,
            active_cost: verdict.active_cost,
        });
    }
    Ok(decisions)
}

/// Activates every mode of `artifact` without a comparison (`forewarn train --promote
/// always`), recording `reason` and an empty comparison in `model_promotions`.
pub async fn promote_all(
    store: &Store,
    artifact: &ModelArtifact,
    reason: &str,
) -> Result<(), TrainingError> {
    for mode in &artifact.modes {
        store
            .promote_model(
                &artifact.version,
                &mode.mode.name(),
                reason,
                &serde_json::json!({}),
            )
            .await?;
    }
    Ok(())
}
