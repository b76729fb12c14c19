//! The simple rules every card judges beside the model.

use std::collections::HashMap;

use super::fit::Judged;
use crate::features::FeatureTable;
use crate::model::{self, Baseline, FailureMode, ScoredPoint};

/// A baseline: name, description, score of a feature row, and a fixed threshold (`None`:
/// chosen on the tuning window).
type BaselineRule = (String, String, Box<dyn Fn(&[f64]) -> f64>, Option<f64>);

/// The simple rules every card judges beside the model, on the same windows and rules.
pub(super) fn baselines(
    table: &FeatureTable,
    tuning: &Judged,
    test: &Judged,
    failures: &HashMap<i32, Vec<i64>>,
    mode: &FailureMode,
) -> Vec<Baseline> {
    let column = |name: &str| table.names.iter().position(|n| n == name);
    let index: HashMap<(i32, i64), usize> = table
        .requests
        .iter()
        .enumerate()
        .map(|(row, &key)| (key, row))
        .collect();
    let rescore = |judged: &Judged, score: &dyn Fn(&[f64]) -> f64| -> Vec<ScoredPoint> {
        judged
            .points
            .iter()
            .filter_map(|p| {
                index.get(&(p.device, p.time)).map(|&row| ScoredPoint {
                    probability: score(table.row(row)),
                    ..*p
                })
            })
            .collect()
    };
    let mut rules: Vec<BaselineRule> = Vec::new();
    let event_columns: Vec<usize> = ["warning", "error", "critical"]
        .iter()
        .filter_map(|severity| column(&format!("events.{severity}.24h")))
        .collect();
    if !event_columns.is_empty() {
        rules.push((
            "any_event_24h".into(),
            "flag while the device raised any warning, error or critical event in the last 24 h"
                .into(),
            Box::new(move |row: &[f64]| {
                if event_columns.iter().any(|&c| row[c] > 0.0) {
                    1.0
                } else {
                    0.0
                }
            }),
            Some(0.5),
        ));
    }
    let maintenance = column(&format!("{}.hours_since_maintenance", mode.component));
    let age = column("device.age_days");
    if maintenance.is_some() || age.is_some() {
        rules.push((
            "maintenance_age".into(),
            format!(
                "flag when the time since {}'s last maintenance (else the device's age) passes a threshold chosen on the tuning window",
                mode.component
            ),
            Box::new(move |row: &[f64]| {
                let hours = maintenance
                    .map(|c| row[c])
                    .filter(|v| v.is_finite())
                    .or_else(|| age.map(|c| row[c] * 24.0).filter(|v| v.is_finite()))
                    .unwrap_or(0.0);
                1.0 - (-hours / 8760.0).exp()
            }),
            None,
        ));
    }
    rules
        .into_iter()
        .map(|(rule, description, score, fixed)| {
            let tuning_points = rescore(tuning, &*score);
            let threshold = fixed.unwrap_or_else(|| {
                model::events::choose_threshold(
                    &tuning_points,
                    failures,
                    &tuning.rules,
                    mode.cost_false_alarm,
                    mode.cost_missed_failure,
                )
                .0
            });
            let (tuning_events, _) =
                model::event_metrics(&tuning_points, failures, threshold, &tuning.rules);
            let (test_events, _) =
                model::event_metrics(&rescore(test, &*score), failures, threshold, &test.rules);
            Baseline {
                rule,
                description,
                threshold,
                tuning: tuning_events,
                test: test_events,
            }
        })
        .collect()
}
