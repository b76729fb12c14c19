//! `forewarn bench predict --cycle`: the whole live scoring cycle against PostgreSQL, as
//! `serve` runs it — [`Scorer::cycle`]: load the lookback of every device of the kind
//! (hourly rollups, day buckets, events, maintenance), decide which devices are examples,
//! features, probabilities and top factors, write `predictions` — for a large fleet in a
//! scratch database, with where the time goes.
//!
//! The fleet's rollup is written directly (binary COPY into `telemetry_hourly`, plain
//! PostgreSQL): `--days` of hourly rows per device and metric, and a few events per device
//! and day. Every cycle first adds one new hour of rollup rows for every device (not
//! timed), so every cycle scores every device as of a new hour.

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::Utc;

use crate::config::Config;
use crate::features::{DAY_MICROS, HOUR_MICROS, HourlyRow, KindSchema};
use crate::predict::{CycleReport, Scorer};
use crate::store::{DeviceRow, EventRow, MetricRow, Store, WriteBatch};
use crate::training;

#[derive(Debug, thiserror::Error)]
pub enum CycleBenchError {
    #[error(transparent)]
    Predict(#[from] crate::predict::PredictError),
    #[error(transparent)]
    Training(#[from] crate::training::TrainingError),
    #[error(transparent)]
    Artifact(#[from] crate::artifact::ArtifactError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    App(#[from] crate::app::AppError),
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("{0}")]
    Invalid(String),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct CycleBench {
    pub devices: usize,
    pub model: PathBuf,
    pub kind: String,
    /// Days of hourly rollup before the first cycle (26 covers every window of the default
    /// features; fewer leave the long windows partly empty and load less).
    pub days: i64,
    pub cycles: usize,
    pub top_factors: usize,
}

/// The first cycle (a scorer starting: it reads every day bucket of the lookback from the
/// database), the first cycle of a new day (the third: the day just ended is aggregated
/// from the hourly rows in memory), the medians of the others, and each cycle's report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CycleBenchReport {
    pub devices: usize,
    pub kind: String,
    pub days: i64,
    pub rollup_rows: u64,
    pub events: usize,
    pub setup_seconds: f64,
    pub first: CycleReport,
    /// The first cycle whose as-of time is in a new day (the third cycle).
    pub day_change: Option<CycleReport>,
    /// Medians of the cycles after the first, other than `day_change`.
    pub median: CycleReport,
    pub median_total_seconds: f64,
    pub cycles: Vec<CycleReport>,
}

use super::Noise;

/// The cycle (0-based) whose as-of hour is 00:00 of a new day.
const DAY_CHANGE_CYCLE: usize = 2;

/// Devices per COPY of rollup rows.
const DEVICES_PER_COPY: usize = 50_000;

/// Rollup rows of `devices` (ids) for the hours `[from, to)`.
fn rollup_rows(
    ids: &[i32],
    metric_ids: &[i16],
    (from, to): (i64, i64),
    noise: &mut Noise,
) -> Vec<HourlyRow> {
    let hours = ((to - from) / HOUR_MICROS).max(0) as usize;
    let mut rows = Vec::with_capacity(ids.len() * metric_ids.len() * hours);
    for &device in ids {
        for (index, &metric_id) in metric_ids.iter().enumerate() {
            let level = 10.0 * (index + 1) as f64 + (device % 7) as f64 * 0.1;
            let mut bucket = from;
            while bucket < to {
                let value = level + noise.next();
                rows.push(HourlyRow {
                    device_id: device,
                    metric_id,
                    bucket,
                    avg: value,
                    min: value - 0.5,
                    max: value + 0.5,
                });
                bucket += HOUR_MICROS;
            }
        }
    }
    rows
}

/// Writes rollup rows of `ids` for the hours `[from, to)`, hour by hour (time order, as the
/// refresh writes them, so that the BRIN index on `bucket` sees what it sees in service).
async fn write_rollup(
    store: &Store,
    ids: &[i32],
    metric_ids: &[i16],
    (from, to): (i64, i64),
    noise: &mut Noise,
) -> Result<u64, CycleBenchError> {
    let mut written = 0;
    let mut hour = from;
    while hour < to {
        for chunk in ids.chunks(DEVICES_PER_COPY) {
            let rows = rollup_rows(chunk, metric_ids, (hour, hour + HOUR_MICROS), noise);
            written += store.copy_hourly_rollup(&rows).await?;
        }
        hour += HOUR_MICROS;
    }
    Ok(written)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Registers and activates the artifact's modes of `kind`; returns the kind's schema.
async fn activate(store: &Store, model: &Path, kind: &str) -> Result<KindSchema, CycleBenchError> {
    let path = model.canonicalize().unwrap_or_else(|_| model.to_path_buf());
    let read_path = path.clone();
    let artifact =
        tokio::task::spawn_blocking(move || training::read_artifact(&read_path)).await??;
    let modes: Vec<_> = artifact
        .modes
        .iter()
        .filter(|m| m.mode.kind == kind)
        .collect();
    let Some(first) = modes.first() else {
        return Err(CycleBenchError::Invalid(format!(
            "{} has no model for kind {kind}",
            model.display()
        )));
    };
    let schema = first.schema.clone();
    store
        .insert_models(&training::model_rows(&artifact, &path))
        .await?;
    for mode in &modes {
        store
            .promote_model(
                &artifact.version,
                &mode.mode.name(),
                "bench",
                &serde_json::json!({}),
            )
            .await?;
    }
    Ok(schema)
}

/// The whole live cycle, `bench.cycles` times, on a fleet of `bench.devices` devices in a
/// scratch database on the server of `admin_url`.
pub async fn run_cycle_bench(
    config: &Config,
    admin_url: &str,
    bench: &CycleBench,
) -> Result<CycleBenchReport, CycleBenchError> {
    let setting_up = Instant::now();
    let database = "forewarn_bench_predict";
    let _ = crate::store::drop_database(admin_url, database).await;
    crate::store::create_database(admin_url, database).await?;
    let url = crate::store::url_with_database(admin_url, database)?;
    let store = crate::app::open_store(config, &url).await?;
    if store.is_timescaledb() {
        return Err(CycleBenchError::Invalid(
            "bench predict --cycle writes the rollup table directly: it needs plain PostgreSQL"
                .into(),
        ));
    }
    let schema = activate(&store, &bench.model, &bench.kind).await?;
    let metric_ids: Vec<i16> = {
        let rows: Vec<MetricRow> = schema
            .metrics
            .iter()
            .map(|name| MetricRow {
                name: name.clone(),
                unit: String::new(),
                device_kinds: vec![bench.kind.clone()],
            })
            .collect();
        let ids = store.upsert_metrics(&rows).await?;
        schema
            .metrics
            .iter()
            .filter_map(|name| ids.iter().find(|(n, _)| n == name).map(|(_, id)| *id))
            .collect()
    };
    let now = Utc::now().timestamp_micros();
    // The first cycle's hour: 22:00 the day before yesterday (UTC); one more hour per cycle,
    // all in the past, so that the third cycle is the first of a new day.
    let first_hour = now - now.rem_euclid(DAY_MICROS) - DAY_MICROS - 2 * HOUR_MICROS;
    let history_from = first_hour - bench.days * DAY_MICROS;
    let mut ids = Vec::with_capacity(bench.devices);
    for chunk in (0..bench.devices).collect::<Vec<_>>().chunks(10_000) {
        let rows: Vec<DeviceRow> = chunk
            .iter()
            .map(|&i| DeviceRow {
                external_id: format!("bench-{}-{i}", bench.kind),
                kind: bench.kind.clone(),
                model: schema.models.get(i % schema.models.len().max(1)).cloned(),
                customer_external_id: None,
                latitude: None,
                longitude: None,
                installed_at: chrono::DateTime::from_timestamp_micros(
                    history_from - (200 + (i as i64 % 1000)) * DAY_MICROS,
                ),
                metadata: serde_json::json!({}),
            })
            .collect();
        ids.extend(
            store
                .upsert_devices(&rows)
                .await?
                .into_iter()
                .map(|(_, id)| id),
        );
    }
    let mut noise = Noise(42);
    let mut rollup_rows = write_rollup(
        &store,
        &ids,
        &metric_ids,
        (history_from, first_hour),
        &mut noise,
    )
    .await?;
    // About one event a day per device over the event windows (a week), through the
    // store's own write path.
    let codes: Vec<String> = if schema.event_codes.is_empty() {
        vec!["E1".into()]
    } else {
        schema.event_codes.clone()
    };
    let events_from = first_hour - (7 * DAY_MICROS).min(bench.days * DAY_MICROS);
    let mut n_events = 0;
    for chunk in ids.chunks(5000) {
        let mut batch = WriteBatch::default();
        for &device in chunk {
            let mut time = events_from + (device as i64 % 24) * HOUR_MICROS;
            let mut index = device as usize;
            while time < first_hour {
                batch.events.push(EventRow {
                    time,
                    unstamped_redelivery: false,
                    device_id: device,
                    code: codes[index % codes.len()].clone(),
                    severity: if index.is_multiple_of(5) {
                        "error"
                    } else {
                        "warning"
                    },
                    message: String::new(),
                    time_estimated: false,
                });
                index += 1;
                time += DAY_MICROS;
            }
        }
        n_events += batch.events.len();
        store.write_batch(&batch).await?;
    }
    store.analyze().await?;
    let setup_seconds = setting_up.elapsed().as_secs_f64();
    println!(
        "bench predict --cycle: {} {} devices, {} rollup rows ({} days), {} events written in {setup_seconds:.0} s",
        ids.len(),
        bench.kind,
        rollup_rows,
        bench.days,
        n_events
    );

    let mut scorer = Scorer::default();
    let mut cycles = Vec::new();
    for cycle in 0..bench.cycles.max(1) + 1 {
        // A new hour of telemetry for every device: new work for this cycle.
        let hour = first_hour + cycle as i64 * HOUR_MICROS;
        rollup_rows += write_rollup(
            &store,
            &ids,
            &metric_ids,
            (hour, hour + HOUR_MICROS),
            &mut noise,
        )
        .await?;
        let started = Instant::now();
        let mut report = scorer.cycle(&store, bench.top_factors).await?;
        report.wall_seconds = started.elapsed().as_secs_f64();
        println!(
            "cycle {}: {} devices, {} predictions, {} stale → prepare {:.2} s, load rollups {:.2} s, day buckets {:.2} s, events {:.2} s, history {:.2} s, features {:.2} s, scoring {:.2} s, write {:.2} s, sum {:.2} s, wall {:.2} s",
            cycle + 1,
            report.devices,
            report.predictions,
            report.stale,
            report.prepare_seconds,
            report.load_rollups_seconds,
            report.load_days_seconds,
            report.load_events_seconds,
            report.load_history_seconds,
            report.features_seconds,
            report.scoring_seconds,
            report.write_seconds,
            report.total_seconds(),
            report.wall_seconds
        );
        if report.devices != ids.len() {
            return Err(CycleBenchError::Invalid(format!(
                "cycle {} scored {} of {} devices",
                cycle + 1,
                report.devices,
                ids.len()
            )));
        }
        cycles.push(report);
    }
    let first = cycles[0].clone();
    let day_change = cycles.get(DAY_CHANGE_CYCLE).cloned();
    let steady: Vec<&CycleReport> = cycles
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 0 && *i != DAY_CHANGE_CYCLE)
        .map(|(_, c)| c)
        .collect();
    let steady = if steady.is_empty() {
        cycles.iter().skip(1).collect()
    } else {
        steady
    };
    let of = |f: fn(&CycleReport) -> f64| median(steady.iter().map(|c| f(c)).collect());
    let median_report = CycleReport {
        devices: cycles[0].devices,
        predictions: cycles[0].predictions,
        prepare_seconds: of(|r| r.prepare_seconds),
        load_rollups_seconds: of(|r| r.load_rollups_seconds),
        load_days_seconds: of(|r| r.load_days_seconds),
        load_events_seconds: of(|r| r.load_events_seconds),
        load_history_seconds: of(|r| r.load_history_seconds),
        features_seconds: of(|r| r.features_seconds),
        scoring_seconds: of(|r| r.scoring_seconds),
        write_seconds: of(|r| r.write_seconds),
        wall_seconds: of(|r| r.wall_seconds),
        ..CycleReport::default()
    };
    Ok(CycleBenchReport {
        devices: ids.len(),
        kind: bench.kind.clone(),
        days: bench.days,
        rollup_rows,
        events: n_events,
        setup_seconds,
        first,
        day_change,
        median_total_seconds: of(|r| r.wall_seconds),
        median: median_report,
        cycles,
    })
}
