//! A failure mode's horizon from its history: how long before a failure its signals
//! separate from healthy behaviour.
//!
//! Training rows are grouped by the time left until the component's next failure (lag
//! buckets: 0–1 d, 1–2 d, 2–3 d, 3–5 d, 5–7 d, 7–10 d, 10–14 d). A bucket *separates* when
//! some feature ranks its rows apart from healthy rows (no failure within 14 days) clearly
//! better than the same statistic does for as many healthy rows (the
//! chance level of the largest of ~100 AUCs on a small sample is far from 0.5). The
//! horizon is the far edge of the run of separating buckets that starts at the failure,
//! at least 2 days (a flag must be able to come 24 h ahead) and at most 14.

use std::collections::HashMap;

use crate::features::{DAY_MICROS, FeatureTable, HOUR_MICROS};
use crate::model::rank_auc;

const BUCKETS_HOURS: [i64; 8] = [0, 24, 48, 72, 120, 168, 240, 336];
const HEALTHY_GAP: i64 = 14 * DAY_MICROS;
const MIN_HOURS: i64 = 48;
/// How far the bucket's best AUC must clear the chance level.
const MARGIN: f64 = 0.08;
const MAX_HEALTHY: usize = 3000;
const MIN_FAILURES: usize = 3;

/// The learned horizon (hours) and why, or `None` when the history cannot tell (too few
/// failures with rows before them).
pub fn learn(
    table: &FeatureTable,
    rows: &[usize],
    failures: &HashMap<i32, Vec<i64>>,
    limit: i64,
) -> Option<(f64, String)> {
    let mut healthy = Vec::new();
    let mut buckets: Vec<Vec<usize>> = vec![Vec::new(); BUCKETS_HOURS.len() - 1];
    let mut bucket_failures: Vec<Vec<(i32, i64)>> = vec![Vec::new(); BUCKETS_HOURS.len() - 1];
    for &row in rows {
        let (device, time) = table.requests[row];
        // Only what is known by `limit`.
        let next = failures.get(&device).and_then(|times| {
            times
                .iter()
                .copied()
                .filter(|&f| f > time && f < limit)
                .min()
        });
        match next {
            Some(failure) if failure - time < HEALTHY_GAP => {
                let lag_hours = (failure - time) / HOUR_MICROS;
                if let Some(b) = BUCKETS_HOURS
                    .windows(2)
                    .position(|w| lag_hours >= w[0] && lag_hours < w[1])
                {
                    buckets[b].push(row);
                    bucket_failures[b].push((device, failure));
                }
            }
            // Right after a failure the windows still hold the broken part: neither.
            _ if failures.get(&device).is_some_and(|times| {
                times
                    .iter()
                    .any(|&f| f <= time && time < f + 7 * DAY_MICROS)
            }) => {}
            _ if time + HEALTHY_GAP <= limit => healthy.push(row),
            _ => {}
        }
    }
    if healthy.len() < 50 {
        return None;
    }
    // A deterministic thinning of healthy rows.
    if healthy.len() > MAX_HEALTHY {
        let step = healthy.len() as f64 / MAX_HEALTHY as f64;
        healthy = (0..MAX_HEALTHY)
            .map(|i| healthy[(i as f64 * step) as usize])
            .collect();
    }
    let width = table.n_columns();
    let column = |rows: &[usize], j: usize| -> Vec<f64> {
        rows.iter()
            .map(|&r| table.row(r)[j])
            .filter(|v| v.is_finite())
            .collect()
    };
    let healthy_columns: Vec<Vec<f64>> = (0..width).map(|j| column(&healthy, j)).collect();
    let best_auc = |sample: &[usize]| -> f64 {
        (0..width)
            .filter_map(|j| {
                let values = column(sample, j);
                (values.len() >= 5 && healthy_columns[j].len() >= 20)
                    .then(|| (rank_auc(&values, &healthy_columns[j]) - 0.5).abs() * 2.0)
            })
            .fold(0.0, f64::max)
    };
    let mut separating = Vec::new();
    let mut notes = Vec::new();
    for (b, bucket) in buckets.iter().enumerate() {
        let mut distinct: Vec<(i32, i64)> = bucket_failures[b].clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() < MIN_FAILURES || bucket.len() < 5 {
            break;
        }
        let separation = best_auc(bucket);
        // Chance level: the same statistic for healthy samples of the bucket's size.
        let chance = (0..4)
            .map(|k| {
                let sample: Vec<usize> = (0..bucket.len())
                    .map(|i| healthy[(i * 7919 + k * 104_729 + 13) % healthy.len()])
                    .collect();
                best_auc(&sample)
            })
            .fold(0.0, f64::max);
        let separates = separation > chance + MARGIN;
        notes.push(format!(
            "{}–{} d: {:.2} vs chance {:.2}",
            BUCKETS_HOURS[b] / 24,
            BUCKETS_HOURS[b + 1] / 24,
            separation,
            chance
        ));
        if !separates {
            break;
        }
        separating.push(b);
    }
    if notes.is_empty() {
        return None;
    }
    let hours = separating
        .last()
        .map_or(MIN_HOURS, |&b| BUCKETS_HOURS[b + 1].max(MIN_HOURS));
    Some((
        hours as f64,
        format!(
            "learned: signals separate from healthy rows up to {:.0} d before failure ({})",
            hours as f64 / 24.0,
            notes.join("; ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_horizon_is_where_the_signal_starts() {
        // One column that rises over the last 4 days before each failure; noise elsewhere.
        let mut requests = Vec::new();
        let mut values = Vec::new();
        let mut failures = HashMap::new();
        for device in 0..40i32 {
            let failure = (60 + device as i64 % 10) * DAY_MICROS;
            if device % 2 == 0 {
                failures.insert(device, vec![failure]);
            }
            let mut t = 0;
            while t < failure - HOUR_MICROS {
                let noise = ((device as i64 * 31 + t / HOUR_MICROS * 17) % 100) as f64 / 100.0;
                let lag = failure - t;
                let signal = if device % 2 == 0 && lag < 4 * DAY_MICROS + 12 * HOUR_MICROS {
                    3.0
                } else {
                    0.0
                };
                requests.push((device, t));
                values.push(noise + signal);
                values.push(noise);
                t += 6 * HOUR_MICROS;
            }
        }
        let table = FeatureTable {
            names: vec!["signal".into(), "noise".into()],
            requests,
            values,
        };
        let rows: Vec<usize> = (0..table.n_rows()).collect();
        let (hours, why) = learn(&table, &rows, &failures, i64::MAX).unwrap();
        assert_eq!(hours, 120.0, "{why}");
    }
}
