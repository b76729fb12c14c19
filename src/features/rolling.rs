//! Rolling window sums with polars, over many series at once.
//!
//! Rows are sorted by `key = series << SERIES_SHIFT | local time`; a window of `w` time
//! units is `rolling_*_by(key, "{w}i")` closed on the right, so it covers `(t − w, t]` of
//! the row's own series and never reaches into the previous one (keys of different series
//! are 2^32 apart). One pass over one frame, no per-series grouping.

use polars::prelude::*;

use super::FeatureError;

pub const SERIES_SHIFT: u32 = 32;

/// Per-row inputs: a bucket contributes `weight` observations with `sum` and `sum_squares`,
/// its own `mean` (for slopes), `min` and `max`; `x` is its time within the series.
#[derive(Debug, Default, Clone)]
pub struct RollingInput {
    pub key: Vec<i64>,
    pub x: Vec<f64>,
    pub weight: Vec<f64>,
    pub sum: Vec<f64>,
    pub sum_squares: Vec<f64>,
    pub mean: Vec<f64>,
    pub min: Vec<f64>,
    pub max: Vec<f64>,
}

/// Window sums ending at each row.
#[derive(Debug, Default, Clone)]
pub struct WindowSums {
    pub weight: Vec<f64>,
    pub sum: Vec<f64>,
    pub sum_squares: Vec<f64>,
}

/// Window statistics ending at each row (values centred, as in the input).
#[derive(Debug, Default, Clone)]
pub struct WindowStats {
    pub sums: WindowSums,
    buckets: Vec<f64>,
    sum_x: Vec<f64>,
    sum_xx: Vec<f64>,
    sum_xm: Vec<f64>,
    sum_m: Vec<f64>,
    min: Vec<f64>,
    max: Vec<f64>,
}

#[derive(Debug, Clone, Copy)]
pub struct WindowAt {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
    /// Least-squares slope of the bucket means per time unit.
    pub slope: f64,
}

impl WindowStats {
    pub fn at(&self, row: usize) -> WindowAt {
        let n = self.sums.weight[row];
        let sum = self.sums.sum[row];
        let mean = sum / n;
        let std = if n >= 2.0 {
            (((self.sums.sum_squares[row] - sum * sum / n) / (n - 1.0)).max(0.0)).sqrt()
        } else {
            f64::NAN
        };
        let k = self.buckets[row];
        let denominator = k * self.sum_xx[row] - self.sum_x[row] * self.sum_x[row];
        let slope = if k >= 3.0 && denominator > 0.0 {
            (k * self.sum_xm[row] - self.sum_x[row] * self.sum_m[row]) / denominator
        } else {
            f64::NAN
        };
        WindowAt {
            mean,
            std,
            min: self.min[row],
            max: self.max[row],
            slope,
        }
    }
}

fn options(window: i64) -> RollingOptionsDynamicWindow {
    RollingOptionsDynamicWindow {
        window_size: Duration::parse(&format!("{window}i")),
        min_periods: 1,
        closed_window: ClosedWindow::Right,
        fn_params: None,
    }
}

/// Full statistics for each of `windows`, then only the sums for each of `sum_windows`
/// (returned after the full ones, as `WindowStats` with empty statistics).
pub fn rolling_windows(
    input: &RollingInput,
    windows: &[i64],
    sum_windows: &[i64],
) -> Result<Vec<WindowStats>, FeatureError> {
    let n_rows = input.key.len();
    if n_rows == 0 {
        return Ok(vec![
            WindowStats::default();
            windows.len() + sum_windows.len()
        ]);
    }
    let x_mean: Vec<f64> = input
        .x
        .iter()
        .zip(&input.mean)
        .map(|(x, m)| x * m)
        .collect();
    let x_squared: Vec<f64> = input.x.iter().map(|x| x * x).collect();
    let frame = DataFrame::new(
        n_rows,
        vec![
            Column::new("key".into(), &input.key),
            Column::new("x".into(), &input.x),
            Column::new("xx".into(), x_squared),
            Column::new("xm".into(), x_mean),
            Column::new("weight".into(), &input.weight),
            Column::new("sum".into(), &input.sum),
            Column::new("ss".into(), &input.sum_squares),
            Column::new("mean".into(), &input.mean),
            Column::new("one".into(), vec![1.0f64; n_rows]),
            Column::new("min".into(), &input.min),
            Column::new("max".into(), &input.max),
        ],
    )?;
    let by = || col("key");
    let mut expressions = Vec::new();
    for (index, &window) in windows.iter().enumerate() {
        for column in ["weight", "sum", "ss", "one", "x", "xx", "xm", "mean"] {
            expressions.push(
                col(column)
                    .rolling_sum_by(by(), options(window))
                    .alias(format!("{column}_{index}")),
            );
        }
        expressions.push(
            col("min")
                .rolling_min_by(by(), options(window))
                .alias(format!("min_{index}")),
        );
        expressions.push(
            col("max")
                .rolling_max_by(by(), options(window))
                .alias(format!("max_{index}")),
        );
    }
    for (index, &window) in sum_windows.iter().enumerate() {
        for column in ["weight", "sum", "ss"] {
            expressions.push(
                col(column)
                    .rolling_sum_by(by(), options(window))
                    .alias(format!("{column}_s{index}")),
            );
        }
    }
    let out = frame.lazy().select(expressions).collect()?;
    let take = |name: &str| -> Result<Vec<f64>, FeatureError> {
        Ok(out
            .column(name)?
            .f64()?
            .iter()
            .map(|v| v.unwrap_or(f64::NAN))
            .collect())
    };
    let mut stats = Vec::new();
    for index in 0..windows.len() {
        stats.push(WindowStats {
            sums: WindowSums {
                weight: take(&format!("weight_{index}"))?,
                sum: take(&format!("sum_{index}"))?,
                sum_squares: take(&format!("ss_{index}"))?,
            },
            buckets: take(&format!("one_{index}"))?,
            sum_x: take(&format!("x_{index}"))?,
            sum_xx: take(&format!("xx_{index}"))?,
            sum_xm: take(&format!("xm_{index}"))?,
            sum_m: take(&format!("mean_{index}"))?,
            min: take(&format!("min_{index}"))?,
            max: take(&format!("max_{index}"))?,
        });
    }
    for index in 0..sum_windows.len() {
        stats.push(WindowStats {
            sums: WindowSums {
                weight: take(&format!("weight_s{index}"))?,
                sum: take(&format!("sum_s{index}"))?,
                sum_squares: take(&format!("ss_s{index}"))?,
            },
            ..WindowStats::default()
        });
    }
    Ok(stats)
}
