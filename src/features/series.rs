//! Per-(device, metric) series of hourly or daily buckets, centred on their first value,
//! and their rolling window statistics.

use std::collections::HashMap;

use super::rolling::{self, RollingInput, rolling_windows};
use super::{DAY_MICROS, DailyRow, FeatureError, HOUR_MICROS, HourlyRow};

/// One bucket of a series: `weight` observations (1 hourly mean, or the hours of a day)
/// with their sum and sum of squares, the bucket's own mean (for slopes), min and max.
#[derive(Clone, Copy)]
struct Bucket {
    device: i32,
    metric: usize,
    /// Hours or days since the epoch.
    time: i64,
    weight: f64,
    sum: f64,
    sum_squares: f64,
    mean: f64,
    min: f64,
    max: f64,
}

/// Per-(device, metric) series in key order, with values centred on the series' first
/// value (sums of squares stay exact for large readings; the offset is added back).
pub(super) struct Series {
    /// `(device, metric column)` → row range.
    ranges: HashMap<(i32, usize), (usize, usize)>,
    pub(super) time: Vec<i64>,
    pub(super) offset: Vec<f64>,
    pub(super) input: RollingInput,
}

impl Series {
    pub(super) fn hourly(rows: &[&HourlyRow], metric_column: &HashMap<i16, usize>) -> Series {
        Series::from_buckets(
            rows.iter()
                .filter_map(|r| {
                    metric_column.get(&r.metric_id).map(|&metric| Bucket {
                        device: r.device_id,
                        metric,
                        time: r.bucket.div_euclid(HOUR_MICROS),
                        weight: 1.0,
                        sum: r.avg,
                        sum_squares: r.avg * r.avg,
                        mean: r.avg,
                        min: r.min,
                        max: r.max,
                    })
                })
                .collect(),
        )
    }

    pub(super) fn daily(rows: &[&DailyRow], metric_column: &HashMap<i16, usize>) -> Series {
        Series::from_buckets(
            rows.iter()
                .filter(|r| r.hours > 0.0)
                .filter_map(|r| {
                    metric_column.get(&r.metric_id).map(|&metric| Bucket {
                        device: r.device_id,
                        metric,
                        time: r.day.div_euclid(DAY_MICROS),
                        weight: r.hours,
                        sum: r.sum,
                        sum_squares: r.sum_squares,
                        mean: r.sum / r.hours,
                        min: r.min,
                        max: r.max,
                    })
                })
                .collect(),
        )
    }

    fn from_buckets(mut buckets: Vec<Bucket>) -> Series {
        buckets.sort_unstable_by_key(|b| (b.device, b.metric, b.time));
        buckets.dedup_by_key(|b| (b.device, b.metric, b.time));
        let mut series = SeriesBuilder::default();
        for bucket in &buckets {
            series.push(bucket);
        }
        series.finish()
    }

    /// The newest row of `(device, metric)` with time before `before`.
    pub(super) fn newest_before(&self, device: i32, metric: usize, before: i64) -> Option<usize> {
        let &(start, end) = self.ranges.get(&(device, metric))?;
        let count = self.time[start..end].partition_point(|&t| t < before);
        (count > 0).then(|| start + count - 1)
    }

    /// The rows of `row`'s series (`(device, metric)`) in the window `(t − width, t]`
    /// ending at it, as the rolling statistics cover it.
    pub(super) fn window(
        &self,
        device: i32,
        metric: usize,
        row: usize,
        width: i64,
    ) -> std::ops::Range<usize> {
        let start = self.ranges.get(&(device, metric)).map_or(row, |r| r.0);
        let from = self.time[row] - width;
        start + self.time[start..=row].partition_point(|&t| t <= from)..row + 1
    }

    pub(super) fn hourly_stats(&self, window: i64) -> Result<rolling::WindowStats, FeatureError> {
        let mut stats = rolling_windows(&self.input, &[window], &[])?;
        Ok(stats.remove(0))
    }

    pub(super) fn daily_stats(
        &self,
        long_days: i64,
        until_days: i64,
    ) -> Result<DailyStats, FeatureError> {
        let mut stats = rolling_windows(&self.input, &[long_days], &[until_days])?;
        let long = stats.remove(0);
        let until = stats.remove(0).sums;
        Ok(DailyStats { long, until })
    }
}

pub(super) struct DailyStats {
    pub(super) long: rolling::WindowStats,
    /// Sums over `baseline_until_days`, for the baseline by difference.
    until: rolling::WindowSums,
}

impl DailyStats {
    pub(super) fn baseline(&self, row: usize) -> Option<(f64, f64)> {
        let n = self.until.weight[row] - self.long.sums.weight[row];
        if n < 2.0 {
            return None;
        }
        let sum = self.until.sum[row] - self.long.sums.sum[row];
        let squares = self.until.sum_squares[row] - self.long.sums.sum_squares[row];
        let mean = sum / n;
        let variance = ((squares - sum * sum / n) / (n - 1.0)).max(0.0);
        Some((mean, variance.sqrt()))
    }
}

/// Collects sorted series rows, centring each series on its first bucket mean.
#[derive(Default)]
struct SeriesBuilder {
    ranges: HashMap<(i32, usize), (usize, usize)>,
    current: Option<((i32, usize), usize, f64)>,
    series_index: i64,
    time: Vec<i64>,
    offset: Vec<f64>,
    input: RollingInput,
}

impl SeriesBuilder {
    fn push(&mut self, bucket: &Bucket) {
        let Bucket {
            device,
            metric,
            time,
            weight,
            sum,
            sum_squares,
            mean,
            min,
            max,
        } = *bucket;
        let row = self.time.len();
        let centre = match self.current {
            Some((key, _, centre)) if key == (device, metric) => centre,
            _ => {
                self.close(row);
                self.series_index += 1;
                self.current = Some(((device, metric), row, mean));
                mean
            }
        };
        let first_time = self
            .current
            .map(|(_, start, _)| start)
            .map_or(
                time,
                |start| {
                    if start == row { time } else { self.time[start] }
                },
            );
        // Sums of centred values: Σ(y−c) = Σy − n·c, Σ(y−c)² = Σy² − 2cΣy + n·c².
        self.input
            .key
            .push((self.series_index << rolling::SERIES_SHIFT) | (time - first_time));
        self.input.x.push((time - first_time) as f64);
        self.input.weight.push(weight);
        self.input.sum.push(sum - weight * centre);
        self.input
            .sum_squares
            .push(sum_squares - 2.0 * centre * sum + weight * centre * centre);
        self.input.mean.push(mean - centre);
        self.input.min.push(min);
        self.input.max.push(max);
        self.time.push(time);
        self.offset.push(centre);
    }

    fn close(&mut self, end: usize) {
        if let Some((key, start, _)) = self.current.take() {
            self.ranges.insert(key, (start, end));
        }
    }

    fn finish(mut self) -> Series {
        let end = self.time.len();
        self.close(end);
        Series {
            ranges: self.ranges,
            time: self.time,
            offset: self.offset,
            input: self.input,
        }
    }
}
