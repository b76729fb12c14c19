//! `forewarn bench dispatch`: a day of risk signals for a fleet becomes tickets and
//! bookings through the dispatch stage against PostgreSQL, with ours (`insertion`) and the
//! naive baseline (`nearest_free`: the nearest free technician, first come first served)
//! run on the same signals in the same scratch database, one after the other.
//!
//! The fleet: `--devices` devices of four kinds around five Polish cities, a customer for
//! every two, `--technicians` technicians based in the same cities (two kinds each,
//! Europe/Warsaw shifts, a third of them 12:00–20:00), an active model per kind whose card measured its own lead
//! times (half a day to 10 days). The signals: `--signals` scores over one simulated day (each device scored
//! at two consecutive hours), `--degrading` of the devices (one in eight) degrading (scores above threshold).
//! The dispatcher passes once per simulated hour until every booking's hold is over; the
//! figures are from the bookings its customers were told of.

use std::time::Instant;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use super::{BenchError, Noise, median};
use crate::config::Config;
use crate::contract::EpochMicros;
use crate::dispatch::plan::{self, Strategy};
use crate::dispatch::{DispatchConfig, Dispatcher};
use crate::store::{CustomerRow, DeviceRow, ModelRow, PredictionRow, Store, TechnicianRow};

const HOUR: EpochMicros = 3_600_000_000;
const DATABASE: &str = "forewarn_bench_dispatch";
const CITIES: [(&str, f64, f64); 5] = [
    ("Warszawa", 52.2297, 21.0122),
    ("Kraków", 50.0647, 19.9450),
    ("Łódź", 51.7592, 19.4560),
    ("Wrocław", 51.1079, 17.0385),
    ("Poznań", 52.4064, 16.9252),
];
const MODES: [(&str, &str); 4] = [
    ("washer", "drum_bearing"),
    ("fridge", "compressor"),
    ("car", "battery"),
    ("camera", "overheating"),
];

/// What to run.
#[derive(Debug, Clone)]
pub struct DispatchBench {
    pub devices: usize,
    pub technicians: usize,
    pub signals: usize,
    /// Runs of ours (medians of signals/s); the baseline and the two-replica run once.
    pub repeat: usize,
    pub seed: u64,
    /// The share of devices degrading (scores above threshold).
    pub degrading: f64,
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct RunFigures {
    pub strategy: Strategy,
    pub replicas: usize,
    pub seconds: f64,
    pub signals_per_s: f64,
    pub tickets: i64,
    pub bookings: i64,
    pub travel_km: f64,
    /// Visits ending after their due time, and tickets left unbooked past it.
    pub sla_misses: i64,
    /// Proactive visits ending before the expected failure less the safety margin, as a
    /// share of proactive visits.
    pub booked_inside_window: f64,
    pub duplicate_tickets: i64,
    pub double_bookings: i64,
    /// Held visits moved before their customers were told, and moves refused at write
    /// time (another replica changed the booking or took the slot).
    pub improved: u64,
    pub improve_refused: u64,
}

/// The report: ours (the median run), the baseline, and two replicas of ours.
#[derive(Debug, Clone, Serialize)]
pub struct DispatchBenchReport {
    pub degrading: f64,
    pub devices: usize,
    pub technicians: usize,
    pub signals: usize,
    pub signals_per_s: f64,
    pub signals_per_s_runs: Vec<f64>,
    pub travel_km: f64,
    pub baseline_travel_km: f64,
    /// 1 − ours / baseline.
    pub travel_saving: f64,
    pub sla_misses: i64,
    pub baseline_sla_misses: i64,
    pub booked_inside_window: f64,
    pub baseline_booked_inside_window: f64,
    pub duplicate_tickets: i64,
    pub double_bookings: i64,
    pub ours: RunFigures,
    pub baseline: RunFigures,
    pub two_replicas: RunFigures,
}

/// Runs the benchmark in a scratch database on the server of `admin_url`.
pub async fn run_dispatch_bench(
    config: &Config,
    admin_url: &str,
    bench: &DispatchBench,
) -> Result<DispatchBenchReport, BenchError> {
    if !(0.0..=1.0).contains(&bench.degrading) {
        return Err(BenchError::Invalid(format!(
            "--degrading must be a share between 0 and 1, got {}",
            bench.degrading
        )));
    }
    crate::store::drop_database(admin_url, DATABASE).await?;
    crate::store::create_database(admin_url, DATABASE).await?;
    let url = crate::store::url_with_database(admin_url, DATABASE)?;
    let store = crate::app::open_store(config, &url).await?;
    // A Monday: the day of signals, then a working week to book into.
    let day = Utc
        .with_ymd_and_hms(2026, 3, 2, 0, 0, 0)
        .single()
        .map(|d| d.timestamp_micros())
        .ok_or_else(|| BenchError::Invalid("bench start time".into()))?;
    seed(&store, bench, day).await?;
    let dispatch = DispatchConfig {
        bookings_per_pass: 100_000,
        ..config.dispatch.clone()
    };
    let mut ours = Vec::new();
    for _ in 0..bench.repeat.max(1) {
        store.reset_dispatch_state().await?;
        ours.push(run(&store, &dispatch, Strategy::Insertion, 1, day, bench).await?);
    }
    let rates: Vec<f64> = ours.iter().map(|r| r.signals_per_s).collect();
    let ours = ours
        .into_iter()
        .min_by(|a, b| {
            (a.signals_per_s - median(&rates))
                .abs()
                .total_cmp(&(b.signals_per_s - median(&rates)).abs())
        })
        .ok_or_else(|| BenchError::Invalid("no run".into()))?;
    store.reset_dispatch_state().await?;
    let baseline = run(&store, &dispatch, Strategy::NearestFree, 1, day, bench).await?;
    store.reset_dispatch_state().await?;
    let two_replicas = run(&store, &dispatch, Strategy::Insertion, 2, day, bench).await?;
    store.close().await;
    crate::store::drop_database(admin_url, DATABASE).await?;
    Ok(DispatchBenchReport {
        degrading: bench.degrading,
        devices: bench.devices,
        technicians: bench.technicians,
        signals: bench.signals,
        signals_per_s: median(&rates),
        signals_per_s_runs: rates,
        travel_km: ours.travel_km,
        baseline_travel_km: baseline.travel_km,
        travel_saving: if baseline.travel_km > 0.0 {
            1.0 - ours.travel_km / baseline.travel_km
        } else {
            0.0
        },
        sla_misses: ours.sla_misses,
        baseline_sla_misses: baseline.sla_misses,
        booked_inside_window: ours.booked_inside_window,
        baseline_booked_inside_window: baseline.booked_inside_window,
        duplicate_tickets: ours.duplicate_tickets.max(two_replicas.duplicate_tickets),
        double_bookings: ours.double_bookings.max(two_replicas.double_bookings),
        ours,
        baseline,
        two_replicas,
    })
}

/// Uniform on [0, 1) ([`Noise`] is centred on 0).
fn uniform(noise: &mut Noise) -> f64 {
    noise.next() + 0.5
}

/// The fleet, the technicians, the models and the day's signals.
async fn seed(store: &Store, bench: &DispatchBench, day: EpochMicros) -> Result<(), BenchError> {
    let mut noise = Noise(bench.seed.max(1));
    let customers: Vec<CustomerRow> = (0..bench.devices.div_ceil(2))
        .map(|i| CustomerRow {
            external_id: format!("bench-customer-{i}"),
            name: format!("Customer {i}"),
            email: Some(format!("customer{i}@example.com")),
            phone: None,
            preferred_channel: "email".into(),
            language: ["pl", "en", "uk", "sk"][i % 4].into(),
            timezone: "Europe/Warsaw".into(),
            quiet_hours: None,
            tier: ["standard", "standard", "premium", "basic"][i % 4].into(),
            address: None,
            city: None,
            country: Some("PL".into()),
        })
        .collect();
    store.upsert_customers(&customers).await?;
    let around = |noise: &mut Noise, city: usize, km: f64| {
        let (_, lat, lon) = CITIES[city % CITIES.len()];
        let dlat = noise.next() * 2.0 * km / 111.0;
        let dlon = noise.next() * 2.0 * km / (111.0 * lat.to_radians().cos());
        (lat + dlat, lon + dlon)
    };
    let devices: Vec<DeviceRow> = (0..bench.devices)
        .map(|i| {
            let (lat, lon) = around(&mut noise, i, 25.0);
            DeviceRow {
                external_id: format!("bench-device-{i}"),
                kind: MODES[i % MODES.len()].0.into(),
                model: Some(format!("M{}", i % 3)),
                customer_external_id: Some(format!("bench-customer-{}", i / 2)),
                latitude: Some(lat),
                longitude: Some(lon),
                installed_at: None,
                metadata: serde_json::json!({}),
            }
        })
        .collect();
    let ids = store.upsert_devices(&devices).await?;
    let technicians: Vec<TechnicianRow> = (0..bench.technicians)
        .map(|i| {
            let (lat, lon) = around(&mut noise, i, 20.0);
            let kinds = [MODES[i % 4].0, MODES[(i / 5 + 1 + i) % 4].0];
            TechnicianRow {
                external_id: format!("bench-technician-{i}"),
                name: format!("Tech{i} Bench"),
                email: None,
                skills: kinds.iter().map(|k| format!("{k}/*")).collect(),
                home_latitude: lat,
                home_longitude: lon,
                home_city: Some(CITIES[i % CITIES.len()].0.into()),
                timezone: "Europe/Warsaw".into(),
                shift_days: if i % 3 == 0 {
                    vec![2, 3, 4, 5, 6]
                } else {
                    vec![1, 2, 3, 4, 5]
                },
                // A third work the late shift, as a service covering cars does: a car
                // battery flagged in the afternoon is due before the next morning.
                shift_start_hour: if i % 3 == 1 { 12 } else { 8 },
                shift_end_hour: if i % 3 == 1 { 20 } else { 16 },
            }
        })
        .collect();
    store.upsert_technicians(&technicians).await?;
    let from = DateTime::from_timestamp_micros(day - 400 * 24 * HOUR).unwrap_or_default();
    let to = DateTime::from_timestamp_micros(day).unwrap_or_default();
    // Lead times differ by mode, as cards measure them: a car's battery gives 12–88 h of
    // warning (its window is under a day), a fridge's compressor 36–188 h.
    for (k, (kind, component)) in MODES.into_iter().enumerate() {
        let (first, step) = [(24.0, 12.0), (36.0, 8.0), (12.0, 4.0), (24.0, 6.0)][k];
        let leads: Vec<f64> = (0..20).map(|i| first + step * f64::from(i)).collect();
        let mode = format!("{kind}/{component}");
        store
            .insert_models(&[ModelRow {
                version: "bench".into(),
                failure_mode: mode.clone(),
                algorithm: "logistic".into(),
                horizon_hours: 240.0,
                features: serde_json::json!([]),
                metrics: serde_json::json!({ "events": { "lead_times_hours": leads } }),
                threshold: 0.5,
                artifact_path: String::new(),
                data_from: from,
                data_to: to,
                active: false,
            }])
            .await?;
        store
            .promote_model("bench", &mode, "bench", &serde_json::json!({}))
            .await?;
    }
    let mut rows = Vec::with_capacity(bench.signals);
    let mut device = 0usize;
    while rows.len() < bench.signals && !ids.is_empty() {
        let (external, id) = &ids[device % ids.len()];
        let index: usize = external
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(device);
        let (kind, component) = MODES[index % MODES.len()];
        let degrading = uniform(&mut noise) < bench.degrading;
        let hour = (uniform(&mut noise) * 22.0) as i64;
        for step in 0..2 {
            if rows.len() >= bench.signals {
                break;
            }
            let probability = if degrading {
                0.55 + 0.43 * uniform(&mut noise)
            } else {
                0.05 + 0.4 * uniform(&mut noise)
            };
            rows.push(PredictionRow {
                time: DateTime::from_timestamp_micros(day + (hour + step) * HOUR)
                    .unwrap_or_default(),
                device_id: *id,
                failure_mode: format!("{kind}/{component}"),
                probability,
                horizon_hours: 240.0,
                model_version: "bench".into(),
                above_threshold: probability >= 0.5,
                top_factors: serde_json::json!([
                    "vibration 24h mean 3.1σ above this machine's baseline"
                ]),
            });
        }
        device += 1;
    }
    for chunk in rows.chunks(5_000) {
        store.insert_predictions(chunk).await?;
    }
    Ok(())
}

/// One run: a pass per simulated hour of the day (and one more), with `replicas`
/// dispatchers at once.
async fn run(
    store: &Store,
    config: &DispatchConfig,
    strategy: Strategy,
    replicas: usize,
    day: EpochMicros,
    bench: &DispatchBench,
) -> Result<RunFigures, BenchError> {
    let config = DispatchConfig {
        strategy,
        ..config.clone()
    };
    let started = Instant::now();
    // The first pass reads the whole day's scores (live scoring would have written them
    // hour by hour); each pass releases what has settled by its hour and books it, and
    // the passes go on until the last booking's hold is over and its customer told.
    let hold_hours = config.proposal.hold.as_secs().div_ceil(3600) as i64;
    let mut improved = 0;
    let mut improve_refused = 0;
    for hour in 0..=24 + hold_hours {
        let now = day + (hour + 1) * HOUR;
        let mut passes = tokio::task::JoinSet::new();
        for _ in 0..replicas {
            let mut dispatcher = Dispatcher::new(store.clone(), config.clone());
            passes.spawn(async move { dispatcher.pass(Some(now)).await });
        }
        while let Some(done) = passes.join_next().await {
            let report = done
                .map_err(|e| BenchError::Invalid(format!("dispatcher task: {e}")))?
                .map_err(|e| BenchError::Invalid(format!("dispatch pass: {e}")))?;
            improved += report.improved;
            improve_refused += report.improve_refused;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let horizon_end = day + (i64::from(config.plan.horizon_days) + 1) * 24 * HOUR;
    let margin = i64::try_from(config.window.safety_margin.as_micros()).unwrap_or(0);
    let figures = store.dispatch_figures(horizon_end, margin).await?;
    let technicians: Vec<plan::Technician> = store
        .technicians_for_planning()
        .await?
        .iter()
        .filter_map(crate::dispatch::booking::technician)
        .collect();
    // Unavailability (no site) is in the calendar too; it adds no travel.
    let calendar = crate::dispatch::booking::calendar_of(
        &store
            .calendar(day - 24 * HOUR, horizon_end + 24 * HOUR)
            .await?,
    );
    Ok(RunFigures {
        strategy,
        replicas,
        seconds,
        signals_per_s: bench.signals as f64 / seconds.max(1e-9),
        tickets: figures.tickets,
        bookings: figures.bookings,
        travel_km: plan::travel_km(&technicians, &calendar),
        sla_misses: figures.sla_misses,
        booked_inside_window: if figures.proactive_bookings > 0 {
            figures.inside_window as f64 / figures.proactive_bookings as f64
        } else {
            0.0
        },
        duplicate_tickets: figures.duplicate_tickets,
        double_bookings: figures.double_bookings,
        improved,
        improve_refused,
    })
}
