//! `forewarn bench …`: run a committed benchmark and print its figures, then the report as
//! one JSON line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use forewarn::app;
use forewarn::bench::cmapss::{CmapssBench, run_cmapss_bench};
use forewarn::bench::predict::{CycleBench, run_cycle_bench};
use forewarn::bench::{IngestBench, LoadShape};
use forewarn::config::Config;
use forewarn::predict::CycleReport;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// One live scoring cycle (features, probabilities, top factors) for a large fleet,
    /// in memory, with a trained artifact; with `--cycle`, the whole live cycle against
    /// PostgreSQL (load, features, scoring, writing predictions) in a scratch database.
    Predict(PredictArgs),
    /// NASA C-MAPSS RUL through import → rollup → features → gradient boosting: the
    /// regressor's settings chosen on held-out training units, then the official test
    /// units scored once (RMSE with RUL capped at 125 and uncapped, a bootstrap interval,
    /// PHM08 score against the published truth, "fails within 30 cycles"
    /// precision/recall), next to the published references.
    Cmapss(CmapssArgs),
    /// End-to-end ingest through a real broker, and the database's COPY ceiling.
    Ingest(IngestArgs),
    /// A day of risk signals for a fleet through the dispatch stage against PostgreSQL
    /// (a scratch database): signals/s, and for the bookings made, total travel km, SLA
    /// misses and the share of proactive visits inside the predicted window — ours
    /// (cheapest insertion into the technicians' day routes) against the naive baseline
    /// (nearest free technician, first come first served) on the same signals, and a
    /// run with two dispatchers at once (duplicate tickets, double bookings).
    Dispatch(DispatchArgs),
    /// An incident's burst of notices (one per customer, all due at once) drained by the
    /// outreach workers through the SMS webhook channel to a local HTTP provider that
    /// checks signatures and counts idempotency keys: messages/s with `--workers` workers
    /// against one worker (same burst, same run), duplicates and lost messages.
    Outreach(OutreachArgs),
    /// The HTTP API under load: a fleet loaded in a scratch database (1,000 devices × 30
    /// days of readings, scores, thousands of tickets), the real server, `--concurrency`
    /// clients asking for ticket pages and telemetry buckets; p50/p95/p99 per route
    /// (medians of `--repeat` runs; target p99 < 100 ms).
    Api(ApiArgs),
}

#[derive(clap::Args)]
pub struct ApiArgs {
    #[arg(long, default_value_t = 1_000)]
    devices: i32,
    #[arg(long, default_value_t = 30)]
    days: i32,
    /// Metrics per device.
    #[arg(long, default_value_t = 2)]
    metrics: i32,
    /// Minutes between readings of one metric.
    #[arg(long, default_value_t = 15)]
    step_minutes: i32,
    #[arg(long, default_value_t = 20_000)]
    tickets: i32,
    /// Concurrent clients.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Length of one run.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    duration: Duration,
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Keep the scratch database `forewarn_bench_api` afterwards (to EXPLAIN its queries).
    #[arg(long)]
    keep_database: bool,
    /// Print only the report, as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct OutreachArgs {
    #[arg(long, default_value_t = 50_000)]
    messages: usize,
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Runs with `--workers`; the median messages/s is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// How long the provider takes to answer each request (e.g. `50ms`; a real SMS
    /// provider's API answers in tens of milliseconds).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    provider_latency: Duration,
    /// Print only the report, as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct DispatchArgs {
    #[arg(long, default_value_t = 5_000)]
    devices: usize,
    #[arg(long, default_value_t = 200)]
    technicians: usize,
    #[arg(long, default_value_t = 10_000)]
    signals: usize,
    /// Runs of ours; the median signals/s is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The share of devices whose scores are high (degrading): the load on technicians.
    #[arg(long, default_value_t = 0.125)]
    degrading: f64,
    /// Print only the report, as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct PredictArgs {
    #[arg(long, default_value_t = 100_000)]
    devices: usize,
    /// The whole live cycle against the database (`DATABASE_URL`, or the private
    /// cluster), `--repeat` cycles, each one hour of new telemetry later.
    #[arg(long)]
    cycle: bool,
    /// With `--cycle`: days of hourly rollup per device before the first cycle (26
    /// fill every window of the default features).
    #[arg(long, default_value_t = 26)]
    days: i64,
    #[arg(long, default_value = "models/default/model.json")]
    model: PathBuf,
    #[arg(long, default_value = "washer")]
    kind: String,
    /// With `--cycle`: cycles after the first (the first at 22:00, so the third is the
    /// first of a new day).
    #[arg(long, default_value_t = 4)]
    repeat: usize,
    #[arg(long, default_value_t = 3)]
    top_factors: usize,
}

#[derive(clap::Args)]
pub struct CmapssArgs {
    /// Default: the vendored copy, `datasets/cmapss`.
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(long, default_value = "FD001")]
    subset: String,
    /// Seeds of the refitted regressor (medians are reported).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    seeds: Vec<u64>,
    /// Training units held out to choose the regressor's settings.
    #[arg(long, default_value_t = 20)]
    validation_units: usize,
    /// The short version CI runs (`tests/it/cmapss.rs`): two settings, the first seed,
    /// no ablation.
    #[arg(long)]
    quick: bool,
}

#[derive(clap::Args)]
pub struct IngestArgs {
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Readings of the flood run (as fast as the broker takes them).
    #[arg(long, default_value_t = 1_000_000)]
    readings: u64,
    #[arg(long, default_value_t = 3)]
    metrics_per_message: usize,
    /// Broker in-flight windows to measure, each with a private Mosquitto (unless MQTT_URL).
    #[arg(long, value_delimiter = ',', default_value = "20,1000")]
    windows: Vec<u16>,
    /// Session counts to measure beside the configuration's own (the default), each one
    /// shared-subscription group.
    #[arg(long, value_delimiter = ',', default_value = "4")]
    sessions: Vec<usize>,
    /// MQTT versions of ingest to measure beside the configuration's own (`mqtt.protocol`),
    /// each with the configuration's session count: `5`, `3.1.1`.
    #[arg(long, value_delimiter = ',', default_value = "3.1.1", value_parser = str::parse::<forewarn::config::MqttProtocol>)]
    protocols: Vec<forewarn::config::MqttProtocol>,
    /// Replica counts to measure beside one (e.g. `2`): each replica an ingest of its own
    /// (client id, connection pool, the configuration's sessions), all in one
    /// shared-subscription group, run in this process.
    #[arg(long, value_delimiter = ',')]
    replicas: Vec<usize>,
    /// Loads to measure: `flood` (as fast as the broker takes them), `backlog` (the
    /// same queued while ingest is stopped, then ingest started), `sustained`
    /// (`--sustained-rate` for `--sustained-duration`).
    #[arg(long, value_delimiter = ',', default_value = "flood,backlog,sustained")]
    loads: Vec<LoadShape>,
    #[arg(long, default_value_t = 4)]
    publisher_connections: usize,
    /// Runs per window and load; medians are reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Readings/s of the sustained run (latency at a fixed load); 0 skips it.
    #[arg(long, default_value_t = 100_000.0)]
    sustained_rate: f64,
    /// Length of the sustained run (`10m` for a soak).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    sustained_duration: Duration,
}

pub async fn run(command: BenchCommand, config: &Config) -> anyhow::Result<()> {
    match command {
        BenchCommand::Predict(args) if args.cycle => run_predict_cycle(args, config).await,
        BenchCommand::Predict(args) => run_predict(args).await,
        BenchCommand::Cmapss(args) => run_cmapss(args, config).await,
        BenchCommand::Ingest(args) => run_ingest(args, config).await,
        BenchCommand::Dispatch(args) => run_dispatch(args, config).await,
        BenchCommand::Outreach(args) => run_outreach(args, config).await,
        BenchCommand::Api(args) => run_api(args, config).await,
    }
}

/// `bench dispatch`: ours against the baseline on the same day of signals.
async fn run_dispatch(args: DispatchArgs, config: &Config) -> anyhow::Result<()> {
    let (url, _cluster) = app::resolve_database(config).await?;
    let bench = forewarn::bench::dispatch::DispatchBench {
        devices: args.devices,
        technicians: args.technicians,
        signals: args.signals,
        repeat: args.repeat,
        seed: args.seed,
        degrading: args.degrading,
    };
    let report = forewarn::bench::dispatch::run_dispatch_bench(config, &url, &bench)
        .await
        .map_err(|e| anyhow::anyhow!("bench dispatch: {e}"))?;
    if !args.json {
        println!(
            "bench dispatch: {} signals, {} devices, {} technicians; {:.0} signals/s (median of {:?}; target ≥ 1,000); two replicas {:.0} signals/s",
            report.signals,
            report.devices,
            report.technicians,
            report.signals_per_s,
            report
                .signals_per_s_runs
                .iter()
                .map(|r| r.round())
                .collect::<Vec<_>>(),
            report.two_replicas.signals_per_s
        );
        for (name, run) in [
            ("ours (insertion)", &report.ours),
            ("baseline (nearest free)", &report.baseline),
        ] {
            println!(
                "bench dispatch: {name}: {} tickets, {} bookings, travel {:.0} km, SLA misses {}, inside the predicted window {:.1} %",
                run.tickets,
                run.bookings,
                run.travel_km,
                run.sla_misses,
                100.0 * run.booked_inside_window
            );
        }
        println!(
            "bench dispatch: travel {:.1} % below the baseline (target ≥ 20 %), SLA misses {} vs {} (target: no more), inside the window {:.1} % (target ≥ 95 %); duplicate tickets {}, double bookings {} (one and two replicas)",
            100.0 * report.travel_saving,
            report.sla_misses,
            report.baseline_sla_misses,
            100.0 * report.booked_inside_window,
            report.duplicate_tickets,
            report.double_bookings
        );
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// `bench predict --cycle`: the whole live cycle against the database.
async fn run_predict_cycle(args: PredictArgs, config: &Config) -> anyhow::Result<()> {
    let (url, _cluster) = app::resolve_database(config).await?;
    let bench = CycleBench {
        devices: args.devices,
        model: args.model,
        kind: args.kind,
        days: args.days,
        cycles: args.repeat,
        top_factors: args.top_factors,
    };
    let report = run_cycle_bench(config, &url, &bench)
        .await
        .context("bench predict --cycle")?;
    let line = |what: &str, c: &CycleReport| {
        println!(
            "bench predict --cycle: {what}: load rollups {:.2} s + day buckets {:.2} s + events {:.2} s + maintenance/failures {:.2} s + models/devices/clock {:.2} s + features {:.2} s + scoring {:.2} s + write {:.2} s; wall {:.2} s",
            c.load_rollups_seconds,
            c.load_days_seconds,
            c.load_events_seconds,
            c.load_history_seconds,
            c.prepare_seconds,
            c.features_seconds,
            c.scoring_seconds,
            c.write_seconds,
            c.wall_seconds
        )
    };
    line(
        "first cycle (a starting scorer reads every day bucket of the lookback)",
        &report.first,
    );
    if let Some(day_change) = &report.day_change {
        line(
            "first cycle of a new day (the day just ended aggregated in memory)",
            day_change,
        );
    }
    line(
        &format!(
            "{} {} devices, {} days of rollup, medians of the {} other cycles (after 00:00 they sum the day just ended in memory too, until 06:00)",
            report.devices,
            report.kind,
            report.days,
            report.cycles.len() - 1 - usize::from(report.day_change.is_some())
        ),
        &report.median,
    );
    println!(
        "bench predict --cycle: slowest running cycle {:.2} s (first of a day included; the starting one apart); target < 30 s",
        report
            .cycles
            .iter()
            .skip(1)
            .map(|c| c.wall_seconds)
            .fold(0.0, f64::max)
    );
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// `bench predict`: one scoring cycle in memory.
async fn run_predict(args: PredictArgs) -> anyhow::Result<()> {
    let PredictArgs {
        devices,
        model,
        kind,
        repeat,
        top_factors,
        ..
    } = args;
    let report = tokio::task::spawn_blocking(move || {
        forewarn::bench::model::run_predict_bench(&model, &kind, devices, repeat, top_factors)
    })
    .await??;
    println!(
        "bench predict: {} {} devices, {} modes, {} features, {} input rows: features {:.2} s + scoring {:.2} s + top factors {:.2} s = {:.2} s per cycle (median of runs), {:.0} devices/s; target < 10 s",
        report.devices,
        report.kind,
        report.modes,
        report.features,
        report.input_rows,
        report.features_seconds,
        report.scoring_seconds,
        report.factors_seconds,
        report.total_seconds,
        report.devices_per_second
    );
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn run_cmapss(args: CmapssArgs, config: &Config) -> anyhow::Result<()> {
    let dir = args
        .dir
        .unwrap_or_else(forewarn::import::default_cmapss_dir);
    let bench = if args.quick {
        CmapssBench {
            validation_units: args.validation_units,
            ..CmapssBench::quick(dir, &args.subset)
        }
    } else {
        CmapssBench {
            seeds: args.seeds,
            validation_units: args.validation_units,
            ..CmapssBench::full(dir, &args.subset)
        }
    };
    let (url, _cluster) = app::resolve_database(config).await?;
    let report = run_cmapss_bench(config, &url, &bench)
        .await
        .context("bench cmapss")?;
    println!(
        "bench cmapss {}: {} train units ({} examples, {} features), {} test units",
        report.subset,
        report.train_units,
        report.train_examples,
        report.features,
        report.test_units
    );
    println!(
        "  settings chosen on {} held-out training units (of {} tried): {}",
        report.validation_units.len(),
        report.validation.len(),
        report.chosen
    );
    println!(
        "  test units, medians over seeds {:?}: RMSE (RUL capped at {}) {:.2} [95 % bootstrap over units {:.2}–{:.2}]; against the uncapped truth {:.2}; PHM08 score (uncapped truth) {:.0}; fails within 30 cycles: precision {:.2} recall {:.2}",
        bench.seeds,
        report.rul_cap,
        report.rmse_capped,
        report.rmse_capped_interval.0,
        report.rmse_capped_interval.1,
        report.rmse_uncapped,
        report.phm08_score_uncapped,
        report.within_30_precision,
        report.within_30_recall
    );
    if let Some(last_values_only) = report.last_values_only_rmse_capped {
        println!("  same settings on last values + age only: RMSE {last_values_only:.2}");
    }
    println!(
        "  published (RMSE, capped): random forest 17.91, CNN (Babu 2016) 18.45, LSTM (Zheng 2017) 16.14, deep CNN (Li 2018) 12.61, attention ≈ 11"
    );
    println!(
        "  import {:.1} s, features {:.1} s, choosing settings {:.1} s, refit and test {:.1} s",
        report.import_seconds,
        report.features_seconds,
        report.validation_seconds,
        report.train_seconds
    );
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn run_ingest(args: IngestArgs, config: &Config) -> anyhow::Result<()> {
    let bench = IngestBench {
        devices: args.devices,
        readings: args.readings,
        metrics_per_message: args.metrics_per_message,
        windows: args.windows,
        sessions: args.sessions,
        protocols: args.protocols,
        replicas: args.replicas,
        loads: args.loads,
        publisher_connections: args.publisher_connections,
        repeat: args.repeat,
        sustained_readings_per_sec: args.sustained_rate,
        sustained_duration: args.sustained_duration,
    };
    forewarn::bench::run_ingest(config, &bench)
        .await
        .context("bench ingest")
}

/// `bench outreach`: a burst of notices through the webhook channel, 4 workers against 1.
async fn run_outreach(args: OutreachArgs, config: &Config) -> anyhow::Result<()> {
    let (url, _cluster) = app::resolve_database(config).await?;
    let bench = forewarn::bench::outreach::OutreachBench {
        messages: args.messages,
        workers: args.workers,
        repeat: args.repeat,
        latency: args.provider_latency,
    };
    let report = forewarn::bench::outreach::run_outreach_bench(config, &url, &bench)
        .await
        .map_err(|e| anyhow::anyhow!("bench outreach: {e}"))?;
    if !args.json {
        println!(
            "bench outreach: {} messages through the SMS webhook (provider answers in {} ms; {} sends in flight per worker); {} workers {:.0} messages/s (median of {:?}; target ≥ 2,000), one worker {:.0} messages/s ({:.2}×)",
            report.messages,
            report.provider_latency_ms,
            report.send_concurrency,
            report.workers,
            report.messages_per_s,
            report
                .messages_per_s_runs
                .iter()
                .map(|r| r.round())
                .collect::<Vec<_>>(),
            report.one_worker_messages_per_s,
            report.speedup,
        );
        println!(
            "bench outreach: sent {} per run; duplicates {}, lost {}, bad signatures {} (over every run)",
            report.sent,
            report.duplicates,
            report.lost,
            report.runs.iter().map(|r| r.bad_signatures).sum::<u64>(),
        );
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// `bench api`: ticket pages and telemetry buckets under `--concurrency` clients.
async fn run_api(args: ApiArgs, config: &Config) -> anyhow::Result<()> {
    let (url, _cluster) = app::resolve_database(config).await?;
    let bench = forewarn::bench::api::ApiBench {
        devices: args.devices,
        days: args.days,
        step_minutes: args.step_minutes,
        metrics: args.metrics,
        tickets: args.tickets,
        concurrency: args.concurrency,
        duration: args.duration,
        repeat: args.repeat,
        keep_database: args.keep_database,
    };
    let report = forewarn::bench::api::run_api_bench(config, &url, &bench)
        .await
        .map_err(|e| anyhow::anyhow!("bench api: {e}"))?;
    if !args.json {
        println!(
            "bench api: {} devices, {} readings, {} tickets (loaded in {:.0} s); {} clients for {:.0} s × {} runs, pool of {}",
            report.devices,
            report.readings,
            report.tickets,
            report.load_seconds,
            report.concurrency,
            report.run_seconds,
            report.runs.len(),
            report.pool_size,
        );
        for (name, p50, p99, runs) in [
            (
                "ticket list",
                report.ticket_list_p50_ms,
                report.ticket_list_p99_ms,
                report
                    .runs
                    .iter()
                    .map(|r| r.ticket_list.p99_ms)
                    .collect::<Vec<_>>(),
            ),
            (
                "telemetry",
                report.telemetry_p50_ms,
                report.telemetry_p99_ms,
                report
                    .runs
                    .iter()
                    .map(|r| r.telemetry.p99_ms)
                    .collect::<Vec<_>>(),
            ),
        ] {
            println!(
                "bench api: {name}: p50 {p50:.1} ms, p99 {p99:.1} ms (median of {:?}; target p99 < 100 ms)",
                runs.iter()
                    .map(|v| (v * 10.0).round() / 10.0)
                    .collect::<Vec<_>>()
            );
        }
        println!(
            "bench api: {:.0} requests/s, {} errors",
            report.requests_per_s, report.errors
        );
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
