//! A failure mode's horizon from its history: how long before a failure its signals
//! separate from healthy behaviour.
//!
//! Training rows are grouped by the time left until the component's next failure (lag
//! buckets: 0–1 d, 1–2 d, 2–3 d, 3–5 d, 5–7 d, 7–10 d, 10–14 d). A bucket *separates* when
//! some feature ranks its rows apart from healthy rows (no failure within 14 days) clearly
//! better than the same statistic does for healthy rows drawn the same way — as many runs
//! of consecutive rows of as many devices (the chance level of the largest of ~100 AUCs on
//! a few devices' rows is far from 0.5: a unit's own baseline sets it apart) — and than it
//! does for the same units' own rows two weeks or more before their failure (what sets the
//! failing units apart whenever one looks, their age or model, says nothing of when). The
//! horizon is the far edge of the run of separating buckets that starts at the failure,
//! at least 2 days (a flag must be able to come 24 h ahead) and at most 14. When not even
//! the last day before the failure separates, the history cannot tell: the mode keeps the
//! default horizon (a 2-day horizon on a signal nobody can see re-flags a device every two
//! days while its risk stays high).

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
/// Healthy samples drawn for the chance level of each bucket.
const NULL_DRAWS: usize = 6;

/// The learned horizon (hours) and why, or why the history cannot tell (too few failures
/// with rows before them, or no bucket separates).
pub fn learn(
    table: &FeatureTable,
    rows: &[usize],
    failures: &HashMap<i32, Vec<i64>>,
    limit: i64,
) -> Result<(f64, String), String> {
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
        return Err(format!(
            "too few healthy rows before the test window ({})",
            healthy.len()
        ));
    }
    let healthy_by_device = by_device(table, &healthy);
    let healthy_of: HashMap<i32, &Vec<usize>> = healthy_by_device
        .iter()
        .map(|rows| (table.requests[rows[0]].0, rows))
        .collect();
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
        // Chance level: the same statistic for healthy rows drawn the way the bucket's
        // rows are, as runs of consecutive rows of as many devices (rows of one device
        // are alike: a few units' own baselines separate from the fleet by themselves).
        let runs = runs_of(&bucket_failures[b]);
        let fleet_chance = (0..NULL_DRAWS)
            .map(|k| best_auc(&healthy_runs(&healthy_by_device, &runs, k)))
            .fold(0.0, f64::max);
        // The same units two weeks or more before their failure: what sets them apart
        // whenever one looks (age, model, a unit's own level) is no sign of the failure
        // coming, and a handful of units always differ from the fleet in something.
        let earlier = same_units_earlier(table, &healthy_of, &bucket_failures[b]);
        let own_chance = if earlier.len() >= 5 {
            best_auc(&earlier)
        } else {
            0.0
        };
        let chance = fleet_chance.max(own_chance);
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
    let Some(&last) = separating.last() else {
        return Err(if notes.is_empty() {
            format!("too few failures (fewer than {MIN_FAILURES} with rows in their last day)")
        } else {
            format!(
                "no signal separates from healthy rows even in the last day ({})",
                notes.join("; ")
            )
        });
    };
    let hours = BUCKETS_HOURS[last + 1].max(MIN_HOURS);
    Ok((
        hours as f64,
        format!(
            "learned: signals separate from healthy rows up to {:.0} d before failure ({})",
            hours as f64 / 24.0,
            notes.join("; ")
        ),
    ))
}

/// `rows` grouped by device, each group in time order (rows arrive in table order).
fn by_device(table: &FeatureTable, rows: &[usize]) -> Vec<Vec<usize>> {
    let mut groups: HashMap<i32, Vec<usize>> = HashMap::new();
    for &row in rows {
        groups.entry(table.requests[row].0).or_default().push(row);
    }
    let mut groups: Vec<(i32, Vec<usize>)> = groups.into_iter().collect();
    groups.sort_unstable_by_key(|(device, _)| *device);
    groups
        .into_iter()
        .map(|(_, mut rows)| {
            rows.sort_unstable_by_key(|&r| table.requests[r].1);
            rows
        })
        .collect()
}

/// A bucket's rows per failure (`failures` holds each row's).
fn rows_per_failure(failures: &[(i32, i64)]) -> std::collections::BTreeMap<(i32, i64), usize> {
    let mut counts = std::collections::BTreeMap::new();
    for &failure in failures {
        *counts.entry(failure).or_default() += 1;
    }
    counts
}

/// The lengths of a bucket's runs: its rows per failure, shortest first.
fn runs_of(failures: &[(i32, i64)]) -> Vec<usize> {
    let mut runs: Vec<usize> = rows_per_failure(failures).into_values().collect();
    runs.sort_unstable();
    runs
}

/// For each failure of a bucket, as many of its unit's healthy rows (two weeks or more
/// before a failure) as the bucket holds of it: the newest before this failure's healthy
/// gap, so the unit is compared with itself, not with the fleet.
fn same_units_earlier(
    table: &FeatureTable,
    healthy_of: &HashMap<i32, &Vec<usize>>,
    failures: &[(i32, i64)],
) -> Vec<usize> {
    let mut sample = Vec::new();
    for ((device, failure), run) in rows_per_failure(failures) {
        let Some(rows) = healthy_of.get(&device) else {
            continue;
        };
        let end = rows.partition_point(|&r| table.requests[r].1 <= failure - HEALTHY_GAP);
        sample.extend_from_slice(&rows[end.saturating_sub(run)..end]);
    }
    sample
}

/// Draw `k` of a healthy sample shaped like a bucket: for each run, that many consecutive
/// rows of one healthy device (a different device per run while there are enough),
/// chosen deterministically.
fn healthy_runs(devices: &[Vec<usize>], runs: &[usize], k: usize) -> Vec<usize> {
    let mut sample = Vec::new();
    if devices.is_empty() {
        return sample;
    }
    for (j, &run) in runs.iter().enumerate() {
        let pick = (j * 7919 + k * 104_729 + 13) % devices.len();
        let rows = &devices[pick];
        let start = if rows.len() > run {
            (j * 31 + k * 977 + 5) % (rows.len() - run + 1)
        } else {
            0
        };
        sample.extend(rows.iter().skip(start).take(run));
    }
    sample
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

    /// Forty devices with a row every 4 hours over 80 days; those `fails` picks fail on
    /// day 60–69 and report until then. Column `reading`: noise, plus 3 over the last
    /// `signal_days` before a failure; then `units` columns of each unit's own constant
    /// (`salt` varies them), as a unit's baseline is.
    fn units_table(
        fails: impl Fn(i32) -> bool,
        signal_days: i64,
        units: usize,
        salt: u64,
    ) -> (FeatureTable, HashMap<i32, Vec<i64>>) {
        let unit = |device: i32, column: usize| -> f64 {
            let x = (device as u64 + salt) * 2_654_435_761 + column as u64 * 40_503;
            ((x ^ (x >> 13)) % 1000) as f64 / 1000.0
        };
        let mut requests = Vec::new();
        let mut values = Vec::new();
        let mut failures = HashMap::new();
        let end = 80 * DAY_MICROS;
        for device in 0..40i32 {
            let failure = (60 + device as i64 % 10) * DAY_MICROS;
            let fails = fails(device);
            if fails {
                failures.insert(device, vec![failure]);
            }
            let last = if fails { failure - HOUR_MICROS } else { end };
            let mut t = 0;
            while t < last {
                let noise = ((device as i64 * 31 + t / HOUR_MICROS * 17) % 100) as f64 / 100.0;
                let signal = if fails && failure - t < signal_days * DAY_MICROS {
                    3.0
                } else {
                    0.0
                };
                requests.push((device, t));
                values.push(noise + signal);
                values.extend((0..units).map(|c| unit(device, c)));
                t += 4 * HOUR_MICROS;
            }
        }
        let mut names = vec!["reading".to_string()];
        names.extend((0..units).map(|c| format!("unit_{c}")));
        let table = FeatureTable {
            names,
            requests,
            values,
        };
        (table, failures)
    }

    #[test]
    fn a_mode_whose_signals_never_separate_keeps_the_default_horizon() {
        // Ten of forty devices fail, and nothing in their rows tells them apart: noise and
        // each unit's own constants. The learner must say it cannot tell (the mode then
        // keeps the default horizon), not fall back to its 2-day minimum.
        let (table, failures) = units_table(|device| device % 4 == 1, 0, 10, 7);
        let rows: Vec<usize> = (0..table.n_rows()).collect();
        let why = learn(&table, &rows, &failures, i64::MAX).unwrap_err();
        assert!(why.contains("no signal separates"), "{why}");
    }

    #[test]
    fn a_few_units_own_baselines_do_not_stretch_the_horizon() {
        // Twenty columns hold each unit's own constant (as a unit's baseline does) and one
        // rises over the last 2 days before a failure. Four of forty devices fail: their
        // rows are only four units, which some column always ranks apart from the fleet.
        // A chance level from scattered healthy rows called that separation and stretched
        // the horizon to 14 days; runs of four healthy units do the same, so it is 2 days.
        let (table, failures) = units_table(|device| device % 10 == 3, 2, 20, 1);
        let rows: Vec<usize> = (0..table.n_rows()).collect();
        let (hours, why) = learn(&table, &rows, &failures, i64::MAX).unwrap();
        assert_eq!(hours, 48.0, "{why}");
    }
}
