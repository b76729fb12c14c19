//! `forewarn bench cmapss`: NASA C-MAPSS through forewarn's own path — `import` into a
//! scratch database, the hourly rollup, the one feature path, a gradient-boosted RUL
//! regressor — scored once on the official test units against the published truth.
//!
//! What keeps the figure honest:
//! - **Settings chosen on training units only.** A seeded draw of `validation_units`
//!   training units is held out; every setting of the grid is fitted on the other
//!   training units and judged on the held-out ones (RMSE over all their cycles, RUL
//!   capped). The winner is refitted on every training unit, and the test units are
//!   scored once, with that choice fixed. The report records the grid, each setting's
//!   validation RMSE, the held-out units and the choice.
//! - **No feature built from the failure records.** The training units' failures are
//!   imported (they are the labels), but a failure's recency is 1 h only on the row of the
//!   failure cycle itself (RUL = 0) and missing on every other row, test units included:
//!   a feature that exists only in training. The bench asks for no component history,
//!   and [`failure_derived_columns`] checks that none reaches the regressor.
//! - **The published truth.** PHM08 score against the true RUL as published (uncapped);
//!   RMSE against RUL capped at [`RUL_CAP`] (the usual convention, the headline) and
//!   against the uncapped truth, each labelled; a bootstrap interval of the capped RMSE
//!   over the test units.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::model::median;
use crate::config::Config;
use crate::features::{self, FeatureSpec, HOUR_MICROS};
use crate::import::{self, DeviceDefaults};
use crate::model::{RegressorSettings, fit_regressor, predict_regressor};
use crate::training;

/// The errors of this benchmark.
pub type CmapssBenchError = super::BenchError;

/// RUL targets and the headline RMSE are capped here (the convention since Heimes 2008).
pub const RUL_CAP: f64 = 125.0;

/// What one run of the bench does.
#[derive(Debug, Clone)]
pub struct CmapssBench {
    /// Holds `train_<subset>.txt`, `test_<subset>.txt`, `RUL_<subset>.txt` (or `.gz`).
    pub directory: PathBuf,
    pub subset: String,
    /// Seeds of the refitted regressor; figures are medians over them.
    pub seeds: Vec<u64>,
    /// Training units held out to choose the settings.
    pub validation_units: usize,
    /// Seed of the draw of held-out units.
    pub split_seed: u64,
    /// Settings compared on the held-out units.
    pub grid: Vec<RegressorSettings>,
    /// Bootstrap resamples of the test units for the RMSE interval.
    pub bootstrap_resamples: usize,
    /// Also fit the chosen settings on last values and age only (what the windows add).
    pub ablation: bool,
}

impl CmapssBench {
    /// The full bench (the README's figure): a 12-setting grid, 3 seeds, the ablation.
    pub fn full(directory: PathBuf, subset: &str) -> CmapssBench {
        let mut grid = Vec::new();
        for learning_rate in [0.05, 0.1] {
            for max_depth in [3, 5] {
                for (iterations, min_leaf_weight) in [(200, 5.0), (400, 5.0), (400, 20.0)] {
                    grid.push(RegressorSettings {
                        iterations,
                        learning_rate,
                        max_depth,
                        min_leaf_weight,
                    });
                }
            }
        }
        CmapssBench {
            directory,
            subset: subset.to_string(),
            seeds: vec![1, 2, 3],
            validation_units: 20,
            split_seed: 2008,
            grid,
            bootstrap_resamples: 1000,
            ablation: true,
        }
    }

    /// The short version CI runs (`tests/it/cmapss.rs`): two settings, one seed, no
    /// ablation; the same split, features and scoring.
    pub fn quick(directory: PathBuf, subset: &str) -> CmapssBench {
        CmapssBench {
            seeds: vec![1],
            grid: vec![
                RegressorSettings {
                    iterations: 200,
                    learning_rate: 0.1,
                    max_depth: 3,
                    min_leaf_weight: 5.0,
                },
                RegressorSettings {
                    iterations: 200,
                    learning_rate: 0.1,
                    max_depth: 5,
                    min_leaf_weight: 20.0,
                },
            ],
            ablation: false,
            ..CmapssBench::full(directory, subset)
        }
    }
}

/// One setting of the grid and how it did on the held-out training units.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ValidationScore {
    pub settings: RegressorSettings,
    /// RMSE over every cycle of the held-out units, RUL capped at [`RUL_CAP`].
    pub rmse_capped: f64,
}

/// The test units' figures of one seed of the refitted regressor.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SeedScore {
    pub seed: u64,
    pub rmse_capped: f64,
    /// 95 % bootstrap interval of `rmse_capped` over the test units.
    pub rmse_capped_interval: (f64, f64),
    pub rmse_uncapped: f64,
    pub phm08_score_uncapped: f64,
    pub within_30_precision: f64,
    pub within_30_recall: f64,
    pub last_values_only_rmse_capped: Option<f64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CmapssReport {
    pub subset: String,
    pub train_units: usize,
    pub test_units: usize,
    pub train_examples: usize,
    pub features: usize,
    pub rul_cap: f64,
    /// The training units held out to choose the settings (never test units).
    pub validation_units: Vec<String>,
    /// Every setting tried, in grid order, with its validation RMSE.
    pub validation: Vec<ValidationScore>,
    /// The setting with the lowest validation RMSE: the one refitted and tested.
    pub chosen: RegressorSettings,
    pub seeds: Vec<SeedScore>,
    /// Medians over seeds. RMSE against RUL capped at `rul_cap` (the convention).
    pub rmse_capped: f64,
    /// Medians over seeds of the bootstrap interval's bounds.
    pub rmse_capped_interval: (f64, f64),
    /// RMSE against the true RUL as published.
    pub rmse_uncapped: f64,
    /// PHM08 score against the true RUL as published.
    pub phm08_score_uncapped: f64,
    /// "Fails within 30 cycles" as a flag: precision and recall against the true RUL.
    pub within_30_precision: f64,
    pub within_30_recall: f64,
    /// The chosen settings on last values and age only: what the windows add.
    pub last_values_only_rmse_capped: Option<f64>,
    pub import_seconds: f64,
    pub features_seconds: f64,
    pub validation_seconds: f64,
    pub train_seconds: f64,
}

/// PHM08 score: `d = predicted − true`; `e^(−d/13) − 1` for early predictions (`d < 0`),
/// `e^(d/10) − 1` for late ones, summed over units. Late predictions cost more.
pub fn phm08_score(predicted: &[f64], truth: &[f64]) -> f64 {
    predicted
        .iter()
        .zip(truth)
        .map(|(p, t)| {
            let d = p - t;
            if d < 0.0 {
                (-d / 13.0).exp() - 1.0
            } else {
                (d / 10.0).exp() - 1.0
            }
        })
        .sum()
}

pub fn rmse(predicted: &[f64], truth: &[f64]) -> f64 {
    let sum: f64 = predicted
        .iter()
        .zip(truth)
        .map(|(p, t)| (p - t).powi(2))
        .sum();
    (sum / predicted.len().max(1) as f64).sqrt()
}

/// SplitMix64: a seeded stream for the held-out draw and the bootstrap (no dependency
/// for two shuffles).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`); the modulo bias is below 1e-17 for the sizes here.
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// `count` of `units` drawn without replacement by a Fisher–Yates shuffle seeded with
/// `seed`, returned sorted. The same units and seed give the same draw on every machine.
pub fn held_out_units(units: &[String], count: usize, seed: u64) -> Vec<String> {
    let mut shuffled = units.to_vec();
    let mut stream = SplitMix64(seed);
    for index in (1..shuffled.len()).rev() {
        let other = stream.below(index + 1);
        shuffled.swap(index, other);
    }
    shuffled.truncate(count.min(units.len()));
    shuffled.sort();
    shuffled
}

/// The 2.5 % and 97.5 % quantiles of RMSE over `resamples` bootstrap resamples of the
/// units (drawn with replacement), seeded.
pub fn bootstrap_rmse_interval(
    predicted: &[f64],
    truth: &[f64],
    resamples: usize,
    seed: u64,
) -> (f64, f64) {
    let n = predicted.len();
    if n == 0 || resamples == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mut stream = SplitMix64(seed);
    let mut rmses: Vec<f64> = (0..resamples)
        .map(|_| {
            let sum: f64 = (0..n)
                .map(|_| {
                    let unit = stream.below(n);
                    (predicted[unit] - truth[unit]).powi(2)
                })
                .sum();
            (sum / n as f64).sqrt()
        })
        .collect();
    rmses.sort_by(f64::total_cmp);
    let quantile =
        |q: f64| rmses[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    (quantile(0.025), quantile(0.975))
}

/// Columns built from failure or maintenance records (`<component>.hours_since_*`): on
/// run-to-failure data they exist only in training, so they must not reach the regressor.
pub fn failure_derived_columns(names: &[String]) -> Vec<&String> {
    names
        .iter()
        .filter(|n| n.ends_with(".hours_since_failure") || n.ends_with(".hours_since_maintenance"))
        .collect()
}

/// The rows of `values` (row-major, `width` columns) at `rows`.
fn select_rows(values: &[f64], width: usize, rows: &[usize]) -> Vec<f64> {
    rows.iter()
        .flat_map(|&r| values[r * width..(r + 1) * width].iter().copied())
        .collect()
}

fn predict_rul(
    values: &[f64],
    width: usize,
    targets: &[f64],
    settings: &RegressorSettings,
    seed: u64,
    rows_to_predict: &[f64],
) -> Result<Vec<f64>, CmapssBenchError> {
    let booster = fit_regressor(values, width, targets, settings, seed)?;
    Ok(predict_regressor(&booster, rows_to_predict, width)
        .into_iter()
        .map(|p| p.clamp(0.0, RUL_CAP))
        .collect())
}

/// C-MAPSS end to end. A scratch database is created on the server of `admin_url` and
/// dropped at the end.
pub async fn run_cmapss_bench(
    config: &Config,
    admin_url: &str,
    bench: &CmapssBench,
) -> Result<CmapssReport, CmapssBenchError> {
    let subset = bench.subset.as_str();
    if bench.grid.is_empty() || bench.seeds.is_empty() {
        return Err(CmapssBenchError::Invalid(
            "the bench needs at least one setting and one seed".into(),
        ));
    }
    let cycle = std::time::Duration::from_secs(4 * 3600);
    let origin: DateTime<Utc> = DateTime::from_timestamp(1_577_836_800, 0).unwrap_or_default();
    // Read before creating anything: a missing dataset fails at once.
    let data = import::cmapss(&bench.directory, subset, cycle, origin)?;
    // The process id keeps two runs on one server (a test and the CLI) apart.
    let database = format!(
        "forewarn_bench_cmapss_{}_{}",
        subset.to_ascii_lowercase(),
        std::process::id()
    );
    let _ = crate::store::drop_database(admin_url, &database).await;
    crate::store::create_database(admin_url, &database).await?;
    let url = crate::store::url_with_database(admin_url, &database)?;
    let store = crate::app::open_store(config, &url).await?;
    let result = bench_on(&store, bench, &data, cycle, origin).await;
    store.close().await;
    let _ = crate::store::drop_database(admin_url, &database).await;
    result
}

async fn bench_on(
    store: &crate::store::Store,
    bench: &CmapssBench,
    data: &import::Cmapss,
    cycle: std::time::Duration,
    origin: DateTime<Utc>,
) -> Result<CmapssReport, CmapssBenchError> {
    let subset = bench.subset.as_str();
    let importing = Instant::now();
    let defaults = DeviceDefaults {
        kind: "engine".into(),
        model: Some(subset.to_string()),
        installed_at_first_reading: true,
    };
    import::write(store, &data.all_units(), &defaults, &data.failures, &[]).await?;
    let import_seconds = importing.elapsed().as_secs_f64();

    // Engines are not on one calendar (every unit's cycle 1 is the same hour), so "the
    // fleet in the same hour" would be the fleet at the same age: not a fleet reference.
    // Every engine reports every cycle: its newest reading is the `last` hour's already.
    let spec = FeatureSpec {
        fleet_reference: false,
        recent_hours: 0,
        ..FeatureSpec::default()
    };
    let until = origin + chrono::Duration::days(400);
    // No components: no failure or maintenance recency among the features (see the
    // module's doc), and the loaded records are dropped so nothing else can read them.
    let mut kind_data =
        training::load_kind(store, "engine", Vec::new(), origin, until, &spec).await?;
    kind_data.inputs.failures.clear();
    kind_data.inputs.maintenance.clear();
    let ids: HashMap<String, i32> = kind_data
        .devices
        .iter()
        .map(|d| (d.external_id.clone(), d.id))
        .collect();
    let device_id = |name: &String| {
        ids.get(name).copied().ok_or_else(|| {
            CmapssBenchError::Invalid(format!("unit {name} was imported but is not stored"))
        })
    };
    let cycle_micros = cycle.as_micros() as i64;
    let train_names: Vec<String> = data.train.devices.keys().cloned().collect();
    let held_out = held_out_units(&train_names, bench.validation_units, bench.split_seed);
    // Training rows: every cycle of every training unit, as of one hour after the reading.
    let mut requests = Vec::new();
    let mut targets = Vec::new();
    let (mut fit_rows, mut validation_rows) = (Vec::new(), Vec::new());
    for (device, (first, last)) in &data.train.devices {
        let id = device_id(device)?;
        let is_held_out = held_out.binary_search(device).is_ok();
        let mut t = *first;
        while t <= *last {
            if is_held_out {
                validation_rows.push(requests.len());
            } else {
                fit_rows.push(requests.len());
            }
            requests.push((id, t + HOUR_MICROS));
            targets.push((((last - t) / cycle_micros) as f64).min(RUL_CAP));
            t += cycle_micros;
        }
    }
    let n_train = requests.len();
    let mut truth = Vec::new();
    for (device, (_, last)) in &data.test.devices {
        requests.push((device_id(device)?, last + HOUR_MICROS));
        let rul = data.test_rul.get(device).copied().ok_or_else(|| {
            CmapssBenchError::Invalid(format!("no true RUL for test unit {device}"))
        })?;
        truth.push(rul);
    }
    let computing = Instant::now();
    let table = features::compute(&spec, &kind_data.schema, &kind_data.inputs, &requests)?;
    let features_seconds = computing.elapsed().as_secs_f64();
    let leaked = failure_derived_columns(&table.names);
    if !leaked.is_empty() {
        return Err(CmapssBenchError::Invalid(format!(
            "features built from failure records would reach the regressor: {leaked:?}"
        )));
    }
    let width = table.n_columns();
    let train_values = &table.values[..n_train * width];
    let test_values = &table.values[n_train * width..];
    let capped: Vec<f64> = truth.iter().map(|t| t.min(RUL_CAP)).collect();

    // The choice, on training units only.
    let validating = Instant::now();
    let fit_values = select_rows(train_values, width, &fit_rows);
    let fit_targets: Vec<f64> = fit_rows.iter().map(|&r| targets[r]).collect();
    let validation_values = select_rows(train_values, width, &validation_rows);
    let validation_targets: Vec<f64> = validation_rows.iter().map(|&r| targets[r]).collect();
    let mut validation = Vec::new();
    for settings in &bench.grid {
        let predicted = predict_rul(
            &fit_values,
            width,
            &fit_targets,
            settings,
            bench.seeds[0],
            &validation_values,
        )?;
        let score = ValidationScore {
            settings: *settings,
            rmse_capped: rmse(&predicted, &validation_targets),
        };
        println!(
            "validation ({} held-out training units): {settings}: RMSE {:.2}",
            held_out.len(),
            score.rmse_capped
        );
        validation.push(score);
    }
    // The lowest RMSE; the first in grid order on a tie.
    let chosen = validation
        .iter()
        .min_by(|a, b| a.rmse_capped.total_cmp(&b.rmse_capped))
        .map(|score| score.settings)
        .unwrap_or_default();
    let validation_seconds = validating.elapsed().as_secs_f64();

    // Ablation columns: the last values and the age only.
    let keep: Vec<usize> = table
        .names
        .iter()
        .enumerate()
        .filter(|(_, n)| n.ends_with(".last") || *n == "device.age_days")
        .map(|(i, _)| i)
        .collect();
    let select_columns = |values: &[f64]| -> Vec<f64> {
        values
            .chunks(width)
            .flat_map(|row| keep.iter().map(move |&c| row[c]))
            .collect()
    };

    // Refit on every training unit with the choice fixed; the test units, once per seed.
    let training = Instant::now();
    let mut seeds = Vec::new();
    for &seed in &bench.seeds {
        let predicted = predict_rul(train_values, width, &targets, &chosen, seed, test_values)?;
        let flagged: Vec<bool> = predicted.iter().map(|p| *p <= 30.0).collect();
        let actual: Vec<bool> = truth.iter().map(|t| *t <= 30.0).collect();
        let hits = flagged
            .iter()
            .zip(&actual)
            .filter(|(f, a)| **f && **a)
            .count() as f64;
        let last_values_only_rmse_capped = if bench.ablation {
            let predicted_last = predict_rul(
                &select_columns(train_values),
                keep.len(),
                &targets,
                &chosen,
                seed,
                &select_columns(test_values),
            )?;
            Some(rmse(&predicted_last, &capped))
        } else {
            None
        };
        let score = SeedScore {
            seed,
            rmse_capped: rmse(&predicted, &capped),
            rmse_capped_interval: bootstrap_rmse_interval(
                &predicted,
                &capped,
                bench.bootstrap_resamples,
                seed,
            ),
            rmse_uncapped: rmse(&predicted, &truth),
            phm08_score_uncapped: phm08_score(&predicted, &truth),
            within_30_precision: hits / flagged.iter().filter(|f| **f).count().max(1) as f64,
            within_30_recall: hits / actual.iter().filter(|a| **a).count().max(1) as f64,
            last_values_only_rmse_capped,
        };
        println!(
            "seed {seed}: RMSE (capped at {RUL_CAP}) {:.2} [95 % bootstrap {:.2}–{:.2}], uncapped {:.2}, PHM08 (uncapped) {:.0}, ≤30 cycles precision {:.2} recall {:.2}{}",
            score.rmse_capped,
            score.rmse_capped_interval.0,
            score.rmse_capped_interval.1,
            score.rmse_uncapped,
            score.phm08_score_uncapped,
            score.within_30_precision,
            score.within_30_recall,
            score
                .last_values_only_rmse_capped
                .map(|r| format!("; last values only RMSE {r:.2}"))
                .unwrap_or_default(),
        );
        seeds.push(score);
    }
    let train_seconds = training.elapsed().as_secs_f64();
    let of = |field: fn(&SeedScore) -> f64| median(seeds.iter().map(field).collect());
    let last_values_only: Vec<f64> = seeds
        .iter()
        .filter_map(|s| s.last_values_only_rmse_capped)
        .collect();
    Ok(CmapssReport {
        subset: subset.to_string(),
        train_units: data.train.devices.len(),
        test_units: data.test.devices.len(),
        train_examples: n_train,
        features: width,
        rul_cap: RUL_CAP,
        validation_units: held_out,
        validation,
        chosen,
        rmse_capped: of(|s| s.rmse_capped),
        rmse_capped_interval: (
            of(|s| s.rmse_capped_interval.0),
            of(|s| s.rmse_capped_interval.1),
        ),
        rmse_uncapped: of(|s| s.rmse_uncapped),
        phm08_score_uncapped: of(|s| s.phm08_score_uncapped),
        within_30_precision: of(|s| s.within_30_precision),
        within_30_recall: of(|s| s.within_30_recall),
        last_values_only_rmse_capped: (!last_values_only.is_empty())
            .then(|| median(last_values_only)),
        seeds,
        import_seconds,
        features_seconds,
        validation_seconds,
        train_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::KindSchema;

    #[test]
    fn phm08_penalises_late_predictions_more_than_early_ones() {
        let truth = [50.0, 50.0];
        assert_eq!(phm08_score(&truth, &truth), 0.0);
        let early = phm08_score(&[40.0], &[50.0]);
        let late = phm08_score(&[60.0], &[50.0]);
        assert!((early - ((10.0f64 / 13.0).exp() - 1.0)).abs() < 1e-12);
        assert!((late - (1.0f64.exp() - 1.0)).abs() < 1e-12);
        assert!(late > early);
    }

    #[test]
    fn held_out_units_are_a_seeded_draw_of_the_training_units() {
        let units: Vec<String> = (1..=100).map(|u| format!("fd001-train-{u}")).collect();
        let draw = held_out_units(&units, 20, 2008);
        assert_eq!(draw.len(), 20);
        assert_eq!(
            draw,
            held_out_units(&units, 20, 2008),
            "same seed, same draw"
        );
        assert_ne!(draw, held_out_units(&units, 20, 2009));
        let mut distinct = draw.clone();
        distinct.dedup();
        assert_eq!(distinct.len(), 20);
        assert!(draw.iter().all(|u| units.contains(u)));
    }

    #[test]
    fn the_bootstrap_interval_brackets_the_rmse_and_is_seeded() {
        let truth: Vec<f64> = (0..100).map(|u| u as f64).collect();
        let predicted: Vec<f64> = truth
            .iter()
            .enumerate()
            .map(|(u, t)| t + if u % 3 == 0 { 12.0 } else { -4.0 })
            .collect();
        let whole = rmse(&predicted, &truth);
        let (low, high) = bootstrap_rmse_interval(&predicted, &truth, 1000, 1);
        assert!(low < whole && whole < high, "{low} < {whole} < {high}");
        assert_eq!(
            (low, high),
            bootstrap_rmse_interval(&predicted, &truth, 1000, 1)
        );
    }

    #[test]
    fn failure_and_maintenance_recency_are_recognised_as_training_only() {
        let schema = KindSchema {
            kind: "engine".into(),
            metrics: vec!["sensor_2".into()],
            event_codes: Vec::new(),
            components: vec!["engine".into()],
            models: vec!["FD001".into()],
        };
        let names = features::feature_names(&FeatureSpec::default(), &schema);
        assert_eq!(
            failure_derived_columns(&names),
            vec![
                "engine.hours_since_maintenance",
                "engine.hours_since_failure"
            ]
        );
        let without = KindSchema {
            components: Vec::new(),
            ..schema
        };
        let names = features::feature_names(&FeatureSpec::default(), &without);
        assert!(failure_derived_columns(&names).is_empty());
    }
}
