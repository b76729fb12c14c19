//! Day buckets from hourly rows, in memory: the one aggregation of training (whole
//! histories) and live scoring (the days its hourly lookback covers).

use rustc_hash::FxHashMap;

use super::day_start;
use super::inputs::{DailyRow, HourlyRow};

/// The day buckets (UTC days starting at `days.start ≤ day < days.end`, µs of the day's
/// start) of `hourly`: per device, metric and day, the number of hourly rows, the sum and
/// the sum of squares of their means, min of mins and max of maxes.
///
/// The sums are taken in bucket order whatever the order of `hourly`, so the same rows give
/// the same bits (a database aggregate sums in its plan's scan order, which a parallel plan
/// changes from run to run). Linear: rows are placed by a counting sort on their day bucket,
/// then each bucket's (at most 24) rows are ordered by hour.
pub fn day_buckets(hourly: &[HourlyRow], days: std::ops::Range<i64>) -> Vec<DailyRow> {
    // Row indices are u32: 4 billion hourly rows would be 160 GB in memory before this.
    debug_assert!(hourly.len() < u32::MAX as usize);
    // Pass 1: a dense index per (device, metric, day), and the rows of each. The key is
    // packed into one integer and hashed with FxHash: this loop sees every hourly row of
    // the lookback (tens of millions at 100,000 devices).
    let pack = |row: &HourlyRow, day: i64| {
        (u128::from(row.device_id as u32) << 80)
            | (u128::from(row.metric_id as u16) << 64)
            | u128::from(day as u64)
    };
    let mut index: FxHashMap<u128, u32> = FxHashMap::default();
    let mut keys: Vec<(i32, i16, i64)> = Vec::new();
    let mut counts: Vec<u32> = Vec::new();
    let mut group_of: Vec<u32> = Vec::with_capacity(hourly.len());
    for row in hourly {
        let day = day_start(row.bucket);
        if day < days.start || day >= days.end {
            group_of.push(u32::MAX);
            continue;
        }
        let group = *index.entry(pack(row, day)).or_insert_with(|| {
            keys.push((row.device_id, row.metric_id, day));
            counts.push(0);
            (keys.len() - 1) as u32
        });
        counts[group as usize] += 1;
        group_of.push(group);
    }
    // Pass 2: each group's rows side by side (counting sort).
    let mut starts: Vec<usize> = Vec::with_capacity(counts.len() + 1);
    let mut total = 0usize;
    for &count in &counts {
        starts.push(total);
        total += count as usize;
    }
    starts.push(total);
    let mut next = starts.clone();
    let mut placed: Vec<u32> = vec![0; total];
    for (row, &group) in group_of.iter().enumerate() {
        if group != u32::MAX {
            let slot = &mut next[group as usize];
            placed[*slot] = row as u32;
            *slot += 1;
        }
    }
    // Pass 3: per group, rows by hour, summed in that order.
    let mut buckets = Vec::with_capacity(keys.len());
    for (group, &(device_id, metric_id, day)) in keys.iter().enumerate() {
        let rows = &mut placed[starts[group]..starts[group + 1]];
        rows.sort_unstable_by_key(|&r| hourly[r as usize].bucket);
        let mut bucket = DailyRow {
            device_id,
            metric_id,
            day,
            hours: rows.len() as f64,
            sum: 0.0,
            sum_squares: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        };
        for &r in rows.iter() {
            let row = &hourly[r as usize];
            bucket.sum += row.avg;
            bucket.sum_squares += row.avg * row.avg;
            bucket.min = bucket.min.min(row.min);
            bucket.max = bucket.max.max(row.max);
        }
        buckets.push(bucket);
    }
    buckets
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{DAY_MICROS, HOUR_MICROS};

    fn rows() -> Vec<HourlyRow> {
        let mut rows = Vec::new();
        // Two devices, two metrics, 50 hours from 22:00 of day 100: values whose float sum
        // depends on the order they are added in.
        let start = 100 * DAY_MICROS - 2 * HOUR_MICROS;
        for device_id in [1, 2] {
            for metric_id in [3, 4] {
                for hour in 0..50 {
                    let avg = 1e16 * if hour % 3 == 0 { 1.0 } else { -1.0 }
                        + 0.1 * f64::from(hour)
                        + f64::from(device_id);
                    rows.push(HourlyRow {
                        device_id,
                        metric_id,
                        bucket: start + i64::from(hour) * HOUR_MICROS,
                        avg,
                        min: avg - 1.0,
                        max: avg + f64::from(hour),
                    });
                }
            }
        }
        rows
    }

    fn sorted(mut buckets: Vec<DailyRow>) -> Vec<DailyRow> {
        buckets.sort_by_key(|b| (b.device_id, b.metric_id, b.day));
        buckets
    }

    #[test]
    fn buckets_are_sums_in_hour_order_over_whole_days() {
        let rows = rows();
        let buckets = sorted(day_buckets(&rows, 0..i64::MAX));
        // Day 99 holds 2 hours, day 100 24, day 101 the other 24: per device and metric.
        assert_eq!(buckets.len(), 2 * 2 * 3);
        for bucket in &buckets {
            let mut in_day: Vec<&HourlyRow> = rows
                .iter()
                .filter(|r| {
                    r.device_id == bucket.device_id
                        && r.metric_id == bucket.metric_id
                        && day_start(r.bucket) == bucket.day
                })
                .collect();
            in_day.sort_by_key(|r| r.bucket);
            let sum = in_day.iter().fold(0.0, |s, r| s + r.avg);
            let squares = in_day.iter().fold(0.0, |s, r| s + r.avg * r.avg);
            assert_eq!(bucket.hours, in_day.len() as f64);
            assert_eq!(bucket.sum.to_bits(), sum.to_bits());
            assert_eq!(bucket.sum_squares.to_bits(), squares.to_bits());
            assert_eq!(
                bucket.min,
                in_day.iter().map(|r| r.min).fold(f64::INFINITY, f64::min)
            );
            assert_eq!(
                bucket.max,
                in_day
                    .iter()
                    .map(|r| r.max)
                    .fold(f64::NEG_INFINITY, f64::max)
            );
        }
        assert_eq!(
            buckets.iter().map(|b| b.hours).collect::<Vec<_>>()[..3],
            [2.0, 24.0, 24.0]
        );
    }

    #[test]
    fn the_order_of_the_rows_changes_no_bit() {
        let rows = rows();
        let forward = sorted(day_buckets(&rows, 0..i64::MAX));
        let mut reversed = rows.clone();
        reversed.reverse();
        let mut shuffled = rows.clone();
        // A fixed permutation that interleaves devices, metrics and hours.
        shuffled.sort_by_key(|r| (r.bucket.wrapping_mul(7919) % 13, r.device_id, r.metric_id));
        for other in [reversed, shuffled] {
            let buckets = sorted(day_buckets(&other, 0..i64::MAX));
            assert_eq!(buckets.len(), forward.len());
            for (a, b) in buckets.iter().zip(&forward) {
                assert_eq!(a.sum.to_bits(), b.sum.to_bits());
                assert_eq!(a.sum_squares.to_bits(), b.sum_squares.to_bits());
            }
        }
        // And a naive sum in the shuffled order would differ: the test data can tell.
        let naive = |rows: &[HourlyRow]| {
            rows.iter()
                .filter(|r| r.device_id == 1 && r.metric_id == 3)
                .filter(|r| r.bucket.div_euclid(DAY_MICROS) == 100)
                .fold(0.0, |s, r| s + r.avg)
        };
        let mut by_parity = rows.clone();
        by_parity.sort_by_key(|r| (r.bucket / HOUR_MICROS) % 3 != 0);
        assert_ne!(naive(&rows).to_bits(), naive(&by_parity).to_bits());
    }

    #[test]
    fn only_the_days_asked_for() {
        let rows = rows();
        let buckets = day_buckets(&rows, 100 * DAY_MICROS..101 * DAY_MICROS);
        assert_eq!(buckets.len(), 4);
        assert!(
            buckets
                .iter()
                .all(|b| b.day == 100 * DAY_MICROS && b.hours == 24.0)
        );
        assert!(day_buckets(&rows, 0..99 * DAY_MICROS).is_empty());
    }
}
