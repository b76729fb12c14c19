//! `forewarn bench api`: the API's latency under load. A scratch database holds a fleet
//! (1,000 devices × 30 days of readings with their hourly rollup, scores, thousands of
//! tickets); the real server (`HttpServer`, with its pool and its key check) answers
//! `concurrency` clients on keep-alive connections, each asking in turn for a page of
//! tickets (random filters) and a device's telemetry (random device, metric and range).
//! Reported per route: p50, p95, p99 of each run and their medians over the runs; the
//! target is p99 < 100 ms. Clients run in the same process on the same cores as the
//! server, so the figures include their cost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{BenchError, Noise, median};
use crate::api::HttpServer;
use crate::config::Config;
use crate::observability::Metrics;
use crate::shutdown::Shutdown;
use crate::stage::StageDeps;

const DATABASE: &str = "forewarn_bench_api";

/// What to load and how hard to ask.
#[derive(Debug, Clone)]
pub struct ApiBench {
    pub devices: i32,
    pub days: i32,
    /// Minutes between readings of a metric.
    pub step_minutes: i32,
    pub metrics: i32,
    pub tickets: i32,
    pub concurrency: usize,
    pub duration: Duration,
    pub repeat: usize,
    /// Leave the scratch database behind.
    pub keep_database: bool,
}

/// Latency percentiles of one route, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub requests: usize,
    pub errors: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ApiRun {
    pub ticket_list: Latency,
    pub telemetry: Latency,
    pub requests_per_s: f64,
}

/// The benchmark's report.
#[derive(Debug, Clone, Serialize)]
pub struct ApiBenchReport {
    pub devices: i64,
    pub readings: i64,
    pub tickets: i64,
    pub load_seconds: f64,
    pub concurrency: usize,
    pub run_seconds: f64,
    pub pool_size: u32,
    /// Medians over the runs.
    pub ticket_list_p99_ms: f64,
    pub telemetry_p99_ms: f64,
    pub ticket_list_p50_ms: f64,
    pub telemetry_p50_ms: f64,
    pub requests_per_s: f64,
    pub errors: usize,
    pub runs: Vec<ApiRun>,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn latency(mut samples: Vec<f64>, errors: usize) -> Latency {
    samples.sort_by(f64::total_cmp);
    Latency {
        requests: samples.len(),
        errors,
        p50_ms: percentile(&samples, 0.50),
        p95_ms: percentile(&samples, 0.95),
        p99_ms: percentile(&samples, 0.99),
    }
}

/// Runs the benchmark in a scratch database on the server of `admin_url`.
pub async fn run_api_bench(
    config: &Config,
    admin_url: &str,
    bench: &ApiBench,
) -> Result<ApiBenchReport, BenchError> {
    if bench.devices <= 0 || bench.days <= 0 || bench.step_minutes <= 0 || bench.concurrency == 0 {
        return Err(BenchError::Invalid(
            "--devices, --days, --step-minutes and --concurrency must be positive".into(),
        ));
    }
    crate::store::drop_database(admin_url, DATABASE).await?;
    crate::store::create_database(admin_url, DATABASE).await?;
    let url = crate::store::url_with_database(admin_url, DATABASE)?;
    let store = crate::app::open_store(config, &url).await?;
    let end = chrono::Utc::now();
    let started = Instant::now();
    let seeded = store
        .seed_fleet(
            bench.devices,
            bench.metrics.max(1),
            bench.days,
            bench.step_minutes,
            bench.tickets,
            end,
        )
        .await?;
    let load_seconds = started.elapsed().as_secs_f64();
    tracing::info!(?seeded, load_seconds, "bench api: fleet loaded");

    let key = crate::api::auth::new_key().map_err(|e| BenchError::Invalid(e.to_string()))?;
    store
        .create_api_key(&crate::store::NewApiKey {
            name: "bench",
            role: "dispatcher",
            technician_id: None,
            prefix: &key.prefix,
            hash: &key.hash,
            created_by: "bench",
        })
        .await?;
    let http = HttpServer::bind("127.0.0.1:0".parse().expect("an address"))
        .await
        .map_err(|e| BenchError::Invalid(e.to_string()))?
        // One key for every client: its rate limit is not what is measured.
        .with_rate_limit(1_000_000, 1_000_000);
    let addr = http.local_addr();
    let (trigger, shutdown) = Shutdown::new();
    let state = http
        .state(StageDeps {
            store: store.clone(),
            metrics: Metrics::new(),
        })
        .map_err(|e| BenchError::Invalid(e.to_string()))?;
    let server = tokio::spawn(http.serve(state, shutdown));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(bench.concurrency)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| BenchError::Invalid(e.to_string()))?;
    let base = Arc::new(format!("http://{addr}"));
    let token = Arc::new(key.key);

    let mut runs = Vec::new();
    for round in 0..bench.repeat.max(1) {
        runs.push(run_once(&client, &base, &token, bench, round, end).await);
    }
    trigger.trigger();
    let _ = server.await;
    store.close().await;
    if !bench.keep_database {
        crate::store::drop_database(admin_url, DATABASE).await?;
    }

    let of = |f: &dyn Fn(&ApiRun) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    Ok(ApiBenchReport {
        devices: seeded.devices,
        readings: seeded.readings,
        tickets: seeded.tickets,
        load_seconds,
        concurrency: bench.concurrency,
        run_seconds: bench.duration.as_secs_f64(),
        pool_size: config.database.max_connections,
        ticket_list_p99_ms: of(&|r| r.ticket_list.p99_ms),
        telemetry_p99_ms: of(&|r| r.telemetry.p99_ms),
        ticket_list_p50_ms: of(&|r| r.ticket_list.p50_ms),
        telemetry_p50_ms: of(&|r| r.telemetry.p50_ms),
        requests_per_s: of(&|r| r.requests_per_s),
        errors: runs
            .iter()
            .map(|r| r.ticket_list.errors + r.telemetry.errors)
            .sum(),
        runs,
    })
}

const STATUSES: [&str; 6] = [
    "",
    "booked",
    "resolved",
    "closed,resolved",
    "open,booked",
    "",
];
const KINDS: [&str; 4] = ["", "proactive", "reactive", ""];
const RANGES_DAYS: [i64; 3] = [1, 7, 30];

async fn run_once(
    client: &reqwest::Client,
    base: &Arc<String>,
    token: &Arc<String>,
    bench: &ApiBench,
    round: usize,
    end: chrono::DateTime<chrono::Utc>,
) -> ApiRun {
    let deadline = Instant::now() + bench.duration;
    let started = Instant::now();
    let clients: Vec<_> = (0..bench.concurrency)
        .map(|c| {
            let (client, base, token) = (client.clone(), base.clone(), token.clone());
            let (devices, metrics) = (bench.devices, bench.metrics.max(1));
            tokio::spawn(async move {
                let mut noise = Noise((round * 10_007 + c) as u64 + 1);
                let pick = |noise: &mut Noise, n: usize| {
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
                    let i = ((noise.next() + 0.5) * n as f64) as usize;
                    i.min(n - 1)
                };
                let (mut tickets, mut telemetry) = (Vec::new(), Vec::new());
                let (mut ticket_errors, mut telemetry_errors) = (0, 0);
                let mut turn = c;
                while Instant::now() < deadline {
                    turn += 1;
                    let list = turn % 2 == 0;
                    let url = if list {
                        let status = STATUSES[pick(&mut noise, STATUSES.len())];
                        let kind = KINDS[pick(&mut noise, KINDS.len())];
                        format!("{base}/api/v1/tickets?limit=50&status={status}&kind={kind}")
                    } else {
                        let device = 1 + pick(&mut noise, usize::try_from(devices).unwrap_or(1));
                        let metric = 1 + pick(&mut noise, usize::try_from(metrics).unwrap_or(1));
                        let days = RANGES_DAYS[pick(&mut noise, RANGES_DAYS.len())];
                        let from = (end - chrono::Duration::days(days)).to_rfc3339();
                        format!(
                            "{base}/api/v1/devices/BENCH-{device}/telemetry?metric=bench_m{metric}&bucket=3600&from={}&to={}",
                            encode(&from),
                            encode(&end.to_rfc3339())
                        )
                    };
                    let asked = Instant::now();
                    let answered = client.get(&url).bearer_auth(token.as_str()).send().await;
                    let ok = match answered {
                        Ok(response) => {
                            let status = response.status();
                            response.bytes().await.is_ok() && status.is_success()
                        }
                        Err(_) => false,
                    };
                    let ms = asked.elapsed().as_secs_f64() * 1_000.0;
                    match (list, ok) {
                        (true, true) => tickets.push(ms),
                        (true, false) => ticket_errors += 1,
                        (false, true) => telemetry.push(ms),
                        (false, false) => telemetry_errors += 1,
                    }
                }
                (tickets, ticket_errors, telemetry, telemetry_errors)
            })
        })
        .collect();
    let (mut tickets, mut telemetry) = (Vec::new(), Vec::new());
    let (mut ticket_errors, mut telemetry_errors) = (0, 0);
    for client in clients {
        if let Ok((t, te, m, me)) = client.await {
            tickets.extend(t);
            telemetry.extend(m);
            ticket_errors += te;
            telemetry_errors += me;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let requests_per_s = (tickets.len() + telemetry.len()) as f64 / elapsed.max(1e-9);
    ApiRun {
        ticket_list: latency(tickets, ticket_errors),
        telemetry: latency(telemetry, telemetry_errors),
        requests_per_s,
    }
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
