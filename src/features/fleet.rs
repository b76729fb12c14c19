//! The fleet's reference: per metric, the median over a kind's devices of each hour's mean
//! and of each day's mean. A reading minus the fleet's in the same hours cancels what moves
//! every device at once — the season (a cold month lowers every car's cranking voltage), a
//! heatwave, a firmware push — and leaves what sets one device apart; it also compares a
//! device with no baseline yet (its first three weeks) with the others.
//!
//! Computed from the rows of every device of the kind in the inputs, not only the devices
//! asked for: training loads the kind's whole history and live scoring the kind's whole
//! lookback, so both take the median of the same devices in the same hours. An hour or day
//! reported by fewer than [`MIN_DEVICES`] devices has no reference.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use super::series::Series;
use super::{DAY_MICROS, FeatureInputs, FeatureSpec, HOUR_MICROS};

/// Fewer devices than this in an hour or a day: no reference (a median of two is one
/// device's reading).
pub(super) const MIN_DEVICES: usize = 3;

/// Per metric column, the fleet's median of each hour and of each day.
pub(super) struct FleetReference {
    hourly: Medians,
    daily: Medians,
}

impl FleetReference {
    /// The medians of the rows of devices of `kind` (devices whose kind the inputs do not
    /// know count: the inputs of one kind may not carry every device's record), over the
    /// hours and days the features of requests between `as_of` (µs) can read.
    pub(super) fn build(
        spec: &FeatureSpec,
        inputs: &FeatureInputs,
        kind: &str,
        metric_column: &HashMap<i16, usize>,
        as_of: Range<i64>,
    ) -> FleetReference {
        let foreign: HashSet<i32> = inputs
            .devices
            .iter()
            .filter(|(_, info)| info.kind != kind)
            .map(|(id, _)| *id)
            .collect();
        let of_kind = |device: i32| foreign.is_empty() || !foreign.contains(&device);
        let metrics = metric_column.values().max().map_or(0, |m| m + 1);
        // Metric ids are small: a table, not a hash per row.
        let ids = metric_column
            .keys()
            .map(|&id| id.max(0) as usize)
            .max()
            .unwrap_or(0);
        let mut dense = vec![None; ids + 1];
        for (&id, &column) in metric_column {
            if id >= 0 {
                dense[id as usize] = Some(column);
            }
        }
        let column_of = |id: i16| -> Option<usize> {
            if id >= 0 {
                dense.get(id as usize).copied().flatten()
            } else {
                metric_column.get(&id).copied()
            }
        };
        // A unit before the first request's lookback, or at or after the last request's
        // own hour or day, is never read (the margin of one is for the window's edge).
        let span = |lookback: i64, unit: i64| {
            (as_of.start - lookback).div_euclid(unit) - 1..as_of.end.div_euclid(unit) + 1
        };
        let hourly = Medians::build(
            metrics,
            span(spec.hourly_lookback_micros(), HOUR_MICROS),
            || {
                inputs.hourly.iter().filter_map(|row| {
                    let metric = column_of(row.metric_id)?;
                    (row.avg.is_finite() && of_kind(row.device_id))
                        .then(|| (metric, row.bucket.div_euclid(HOUR_MICROS), row.avg))
                })
            },
        );
        let daily = Medians::build(
            metrics,
            span(spec.daily_lookback_micros(), DAY_MICROS),
            || {
                inputs.daily.iter().filter_map(|row| {
                    let metric = column_of(row.metric_id)?;
                    let mean = row.sum / row.hours;
                    (row.hours > 0.0 && mean.is_finite() && of_kind(row.device_id))
                        .then(|| (metric, row.day.div_euclid(DAY_MICROS), mean))
                })
            },
        );
        FleetReference { hourly, daily }
    }

    /// The fleet's mean over the hours of `rows` of `series` (hourly), weighted as the
    /// device's own window is; `None` when an hour has no reference.
    pub(super) fn hourly_mean(
        &self,
        series: &Series,
        metric: usize,
        rows: Range<usize>,
    ) -> Option<f64> {
        self.hourly.weighted(series, metric, rows)
    }

    /// The same over the days of `rows` of `series` (daily, weighted by hours).
    pub(super) fn daily_mean(
        &self,
        series: &Series,
        metric: usize,
        rows: Range<usize>,
    ) -> Option<f64> {
        self.daily.weighted(series, metric, rows)
    }
}

/// Per metric and time unit (hour or day since the epoch) of `units`, the median over
/// the devices' values in it, `NaN` below [`MIN_DEVICES`]: dense, so building it and
/// reading it take no hashing per row (at 100,000 devices both run millions of times).
struct Medians {
    units: Range<i64>,
    values: Vec<f64>,
}

impl Medians {
    /// From `rows()` (`(metric, unit, value)`, any order; walked twice: counts, then
    /// values grouped in one buffer), those outside `units` left out.
    fn build<I>(metrics: usize, units: Range<i64>, rows: impl Fn() -> I) -> Medians
    where
        I: Iterator<Item = (usize, i64, f64)>,
    {
        let span = (units.end - units.start).max(0) as usize;
        let cell = |metric: usize, unit: i64| {
            units
                .contains(&unit)
                .then(|| metric * span + (unit - units.start) as usize)
        };
        let mut starts = vec![0usize; metrics * span + 1];
        for (metric, unit, _) in rows() {
            if let Some(c) = cell(metric, unit) {
                starts[c + 1] += 1;
            }
        }
        for c in 1..starts.len() {
            starts[c] += starts[c - 1];
        }
        let mut grouped = vec![0.0; starts[metrics * span]];
        let mut next = starts.clone();
        for (metric, unit, value) in rows() {
            if let Some(c) = cell(metric, unit) {
                grouped[next[c]] = value;
                next[c] += 1;
            }
        }
        let values = (0..metrics * span)
            .map(|c| {
                let group = &mut grouped[starts[c]..starts[c + 1]];
                if group.len() >= MIN_DEVICES {
                    median(group)
                } else {
                    f64::NAN
                }
            })
            .collect();
        Medians { units, values }
    }

    fn get(&self, metric: usize, unit: i64) -> Option<f64> {
        if !self.units.contains(&unit) {
            return None;
        }
        let span = (self.units.end - self.units.start) as usize;
        let value = *self
            .values
            .get(metric * span + (unit - self.units.start) as usize)?;
        (!value.is_nan()).then_some(value)
    }

    /// The mean over the units of `rows` of `series`, weighted as the series' own window
    /// is; `None` when a unit has no median.
    fn weighted(&self, series: &Series, metric: usize, rows: Range<usize>) -> Option<f64> {
        let (mut sum, mut weight) = (0.0, 0.0);
        for row in rows {
            let value = self.get(metric, series.time[row])?;
            let w = series.input.weight[row];
            sum += w * value;
            weight += w;
        }
        (weight > 0.0).then(|| sum / weight)
    }
}

fn median(values: &mut [f64]) -> f64 {
    let n = values.len();
    let (below, upper, _) = values.select_nth_unstable_by(n / 2, f64::total_cmp);
    let upper = *upper;
    if n % 2 == 1 {
        upper
    } else {
        // An even count: the mean of the two middle values.
        let lower = below.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lower + upper) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&mut [5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 10.0]), 3.5);
    }
}
