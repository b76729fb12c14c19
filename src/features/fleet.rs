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

use std::collections::HashMap;
use std::ops::Range;

use super::series::Series;
use super::{DAY_MICROS, FeatureInputs, HOUR_MICROS};

/// Fewer devices than this in an hour or a day: no reference (a median of two is one
/// device's reading).
pub(super) const MIN_DEVICES: usize = 3;

/// `(metric column, hour or day since the epoch)` → the fleet's median.
pub(super) struct FleetReference {
    hourly: HashMap<(usize, i64), f64>,
    daily: HashMap<(usize, i64), f64>,
}

impl FleetReference {
    /// The medians of the rows of devices of `kind` (devices whose kind the inputs do not
    /// know count: the inputs of one kind may not carry every device's record).
    pub(super) fn build(
        inputs: &FeatureInputs,
        kind: &str,
        metric_column: &HashMap<i16, usize>,
    ) -> FleetReference {
        let of_kind = |device: i32| inputs.devices.get(&device).is_none_or(|d| d.kind == kind);
        let mut hourly: HashMap<(usize, i64), Vec<f64>> = HashMap::new();
        for row in &inputs.hourly {
            if let Some(&metric) = metric_column.get(&row.metric_id)
                && row.avg.is_finite()
                && of_kind(row.device_id)
            {
                hourly
                    .entry((metric, row.bucket.div_euclid(HOUR_MICROS)))
                    .or_default()
                    .push(row.avg);
            }
        }
        let mut daily: HashMap<(usize, i64), Vec<f64>> = HashMap::new();
        for row in &inputs.daily {
            let mean = row.sum / row.hours;
            if let Some(&metric) = metric_column.get(&row.metric_id)
                && row.hours > 0.0
                && mean.is_finite()
                && of_kind(row.device_id)
            {
                daily
                    .entry((metric, row.day.div_euclid(DAY_MICROS)))
                    .or_default()
                    .push(mean);
            }
        }
        FleetReference {
            hourly: medians(hourly),
            daily: medians(daily),
        }
    }

    /// The fleet's mean over the hours of `rows` of `series` (hourly), weighted as the
    /// device's own window is; `None` when an hour has no reference.
    pub(super) fn hourly_mean(
        &self,
        series: &Series,
        metric: usize,
        rows: Range<usize>,
    ) -> Option<f64> {
        weighted(&self.hourly, series, metric, rows)
    }

    /// The same over the days of `rows` of `series` (daily, weighted by hours).
    pub(super) fn daily_mean(
        &self,
        series: &Series,
        metric: usize,
        rows: Range<usize>,
    ) -> Option<f64> {
        weighted(&self.daily, series, metric, rows)
    }
}

fn weighted(
    reference: &HashMap<(usize, i64), f64>,
    series: &Series,
    metric: usize,
    rows: Range<usize>,
) -> Option<f64> {
    let (mut sum, mut weight) = (0.0, 0.0);
    for row in rows {
        let value = reference.get(&(metric, series.time[row]))?;
        let w = series.input.weight[row];
        sum += w * value;
        weight += w;
    }
    (weight > 0.0).then(|| sum / weight)
}

fn medians(groups: HashMap<(usize, i64), Vec<f64>>) -> HashMap<(usize, i64), f64> {
    groups
        .into_iter()
        .filter(|(_, values)| values.len() >= MIN_DEVICES)
        .map(|(key, mut values)| (key, median(&mut values)))
        .collect()
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
