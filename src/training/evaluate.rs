//! `forewarn evaluate`: any model judged on any time range, per mode and overall, with
//! the same rules as the test window of training.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{TrainingError, load_kind, micros_to_time, read_artifact};
use crate::features::{self, HOUR_MICROS};
use crate::model::{self, EventMetrics, EventRules, ModeModel, ModelArtifact, ScoredPoint};
use crate::store::Store;

/// One mode's result of `evaluate`.
#[derive(Debug, Clone, Serialize)]
pub struct ModeEvaluation {
    pub failure_mode: String,
    pub model_version: String,
    pub threshold: f64,
    pub failures: usize,
    pub flagged_24h_ahead: usize,
    pub precision: f64,
    pub recall: f64,
    pub false_alarms_per_1000_device_days: f64,
    pub median_lead_time_hours: Option<f64>,
    /// Flags whose horizon runs past the window's end: neither true nor false.
    pub unjudged_flags: usize,
    pub pr_auc: f64,
    pub examples: model::ExampleMetrics,
    pub events: EventMetrics,
}

#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub overall: Overall,
    pub failure_modes: Vec<ModeEvaluation>,
    /// Flags raised, for `forewarn-sim score`.
    #[serde(skip)]
    pub flags: Vec<(String, String, DateTime<Utc>)>,
}

/// Which of a mode's classifiers an evaluation scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judged {
    /// The shipped one (what scores live): `forewarn evaluate`. Refitted through the end
    /// of its data (`ModeModel::refitted_until`), it has seen the time before that.
    Shipped,
    /// The one the test window judged, fitted before it: promotion.
    AsTested,
}

/// Scores `artifact`'s shipped classifiers on `[from, to)` every `stride` and judges them
/// against `failures`.
pub async fn evaluate(
    store: &Store,
    artifact: &ModelArtifact,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    stride: i64,
) -> Result<Evaluation, TrainingError> {
    evaluate_as(store, artifact, Judged::Shipped, from, to, stride).await
}

/// Scores `artifact`'s `judged` classifiers on `[from, to)` every `stride` and judges them
/// against `failures`.
pub async fn evaluate_as(
    store: &Store,
    artifact: &ModelArtifact,
    judged: Judged,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    stride: i64,
) -> Result<Evaluation, TrainingError> {
    let mut results = Vec::new();
    let mut flags = Vec::new();
    let mut kinds: Vec<&str> = artifact
        .modes
        .iter()
        .map(|m| m.mode.kind.as_str())
        .collect();
    kinds.sort();
    kinds.dedup();
    for kind in kinds {
        let modes: Vec<&ModeModel> = artifact
            .modes
            .iter()
            .filter(|m| m.mode.kind == kind)
            .collect();
        let first = modes[0];
        let spec = first.spec.clone();
        let load_from = from - chrono::Duration::microseconds(spec.daily_lookback_micros());
        let data = load_kind(
            store,
            kind,
            first.schema.components.clone(),
            load_from,
            to,
            &spec,
        )
        .await?;
        let data = data.with_schema(first.schema.clone());
        let requests = data.requests(from.timestamp_micros(), to.timestamp_micros(), stride);
        let externals: HashMap<i32, String> = data
            .devices
            .iter()
            .map(|d| (d.id, d.external_id.clone()))
            .collect();
        // The inputs move into the blocking task and come back with the table.
        let (data, table) = tokio::task::spawn_blocking(move || {
            features::compute(&spec, &data.schema, &data.inputs, &requests).map(|t| (data, t))
        })
        .await??;
        for mode in modes {
            let horizon = (mode.mode.horizon_hours * HOUR_MICROS as f64) as i64;
            let probabilities = match judged {
                Judged::Shipped => mode.probabilities(&table)?,
                Judged::AsTested => mode.tested_probabilities(&table)?,
            };
            let labels = data.labels(&table, &mode.mode.component, horizon);
            let points: Vec<ScoredPoint> = table
                .requests
                .iter()
                .zip(&probabilities)
                .zip(&labels)
                .filter(|(_, label)| label.is_some())
                .map(|((&(device, time), &probability), _)| ScoredPoint {
                    device,
                    time,
                    probability,
                })
                .collect();
            let failures = data.failure_times(&mode.mode.component);
            let rules = EventRules {
                horizon,
                min_lead: 24 * HOUR_MICROS,
                from: from.timestamp_micros(),
                to: to.timestamp_micros(),
            };
            let (events, raised) = model::event_metrics(&points, &failures, mode.threshold, &rules);
            let (judged_probabilities, judged_labels): (Vec<f64>, Vec<bool>) = table
                .requests
                .iter()
                .zip(&probabilities)
                .zip(&labels)
                .filter_map(|((&(_, time), &p), label)| {
                    label.filter(|_| time + horizon <= rules.to).map(|l| (p, l))
                })
                .unzip();
            let examples =
                model::example_metrics(&judged_probabilities, &judged_labels, mode.threshold);
            for flag in raised {
                if let Some(external) = externals.get(&flag.device) {
                    flags.push((
                        external.clone(),
                        mode.mode.component.clone(),
                        micros_to_time(flag.time),
                    ));
                }
            }
            results.push(ModeEvaluation {
                failure_mode: mode.mode.name(),
                model_version: artifact.version.clone(),
                threshold: mode.threshold,
                failures: events.failures,
                flagged_24h_ahead: events.flagged_24h_ahead,
                precision: events.precision,
                recall: events.recall,
                false_alarms_per_1000_device_days: events.false_alarms_per_1000_device_days,
                median_lead_time_hours: events.median_lead_time_hours,
                unjudged_flags: events.unjudged_flags,
                pr_auc: examples.pr_auc,
                examples,
                events,
            });
        }
    }
    let overall = overall(&results);
    Ok(Evaluation {
        from,
        to,
        overall,
        failure_modes: results,
        flags,
    })
}

/// `forewarn evaluate`: judges `model` — a version in `models`, a path to a `model.json`,
/// or (`None`) the active model of every mode, each read from its own artifact — on
/// `[from, to)` every `stride` µs, optionally at one `threshold` for every mode instead of
/// each mode's own. The modes of several artifacts are merged into one evaluation.
pub async fn evaluate_models(
    store: &Store,
    model: Option<&str>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    stride: i64,
    threshold: Option<f64>,
) -> Result<Evaluation, TrainingError> {
    let rows = store.model_rows(false).await?;
    // (artifact path, modes to keep: None = all)
    let mut targets: Vec<(PathBuf, Option<Vec<String>>)> = Vec::new();
    match model {
        Some(model) if Path::new(model).is_file() => targets.push((model.into(), None)),
        Some(version) => {
            let row = rows
                .iter()
                .find(|r| r.version == version)
                .ok_or_else(|| TrainingError::UnknownModel(version.to_string()))?;
            targets.push((row.artifact_path.clone().into(), None));
        }
        None => {
            for row in rows.iter().filter(|r| r.active) {
                let path = PathBuf::from(&row.artifact_path);
                match targets.iter_mut().find(|(p, _)| *p == path) {
                    Some((_, Some(modes))) => modes.push(row.failure_mode.clone()),
                    _ => targets.push((path, Some(vec![row.failure_mode.clone()]))),
                }
            }
        }
    }
    let mut merged: Option<Evaluation> = None;
    for (path, modes) in targets {
        let mut artifact = read_artifact(&path)?;
        if let Some(modes) = &modes {
            artifact.modes.retain(|m| modes.contains(&m.mode.name()));
        }
        if let Some(threshold) = threshold {
            for mode in &mut artifact.modes {
                mode.threshold = threshold;
            }
        }
        for mode in &artifact.modes {
            if let Some(until) = mode.refitted_until.filter(|&until| from < until) {
                tracing::warn!(
                    failure_mode = %mode.mode.name(),
                    version = %artifact.version,
                    %until,
                    "the shipped classifier was refitted on examples labelled up to {until}: figures before then are in sample; the card's test figures are the out-of-sample ones"
                );
            }
        }
        let evaluation = evaluate(store, &artifact, from, to, stride).await?;
        merged = Some(match merged {
            None => evaluation,
            Some(mut all) => {
                all.failure_modes.extend(evaluation.failure_modes);
                all.flags.extend(evaluation.flags);
                all
            }
        });
    }
    // Only "the active models" can name no artifact at all.
    let mut evaluation = merged.ok_or(TrainingError::NoActiveModel)?;
    evaluation.overall = overall(&evaluation.failure_modes);
    Ok(evaluation)
}

/// Every mode of an evaluation together.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Overall {
    pub failures: usize,
    pub flagged: usize,
    pub flagged_24h_ahead: usize,
    pub flagged_24h_ahead_share: f64,
    pub flags: usize,
    pub true_flags: usize,
    pub false_flags: usize,
    pub unjudged_flags: usize,
    pub precision: f64,
    pub recall: f64,
    pub false_alarms_per_1000_device_days: f64,
    pub median_lead_time_hours: Option<f64>,
    pub device_days: f64,
}

/// Sums over modes. Device-days are per kind (modes of a kind watch the same devices).
pub fn overall(results: &[ModeEvaluation]) -> Overall {
    let sum = |f: fn(&EventMetrics) -> usize| results.iter().map(|r| f(&r.events)).sum::<usize>();
    let failures = sum(|e| e.failures);
    let flagged = sum(|e| e.flagged);
    let ahead = sum(|e| e.flagged_24h_ahead);
    let true_flags = sum(|e| e.true_flags);
    let false_flags = sum(|e| e.false_flags);
    let mut device_days: HashMap<&str, f64> = HashMap::new();
    for r in results {
        let kind = r.failure_mode.split('/').next().unwrap_or_default();
        let entry = device_days.entry(kind).or_default();
        *entry = entry.max(r.events.device_days);
    }
    let device_days: f64 = device_days.values().sum();
    let mut leads: Vec<f64> = results
        .iter()
        .flat_map(|r| r.events.lead_times_hours.iter().copied())
        .collect();
    leads.sort_by(f64::total_cmp);
    let ratio = |a: usize, b: usize| if b > 0 { a as f64 / b as f64 } else { 0.0 };
    Overall {
        failures,
        flagged,
        flagged_24h_ahead: ahead,
        flagged_24h_ahead_share: ratio(ahead, failures),
        flags: sum(|e| e.flags),
        true_flags,
        false_flags,
        unjudged_flags: sum(|e| e.unjudged_flags),
        precision: ratio(true_flags, true_flags + false_flags),
        recall: ratio(flagged, failures),
        false_alarms_per_1000_device_days: if device_days > 0.0 {
            1000.0 * false_flags as f64 / device_days
        } else {
            0.0
        },
        median_lead_time_hours: model::events::median(&leads),
        device_days,
    }
}
