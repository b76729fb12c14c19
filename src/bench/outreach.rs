//! `forewarn bench outreach`: an incident's burst of notices — one per affected customer,
//! `--messages` of them due at once — drained through the SMS webhook channel to a local
//! HTTP provider (axum on loopback, in this process) by the outreach workers, against
//! PostgreSQL (a scratch database). The provider checks every body's HMAC signature and
//! counts each idempotency key it receives. Reported: messages/s with `--workers` workers
//! and with one (the baseline, same burst, same run), and over both that no message was
//! sent twice (a key received twice) or lost (a row not `sent`, or a key never received).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;

use super::BenchError;
use crate::api::inbound::verify;
use crate::config::Config;
use crate::outreach::channels::{IDEMPOTENCY_HEADER, SIGNATURE_HEADER, unix_seconds};
use crate::outreach::{Outreach, OutreachConfig, Secret};
use crate::store::{CustomerRow, NewIncident, Store};

const DATABASE: &str = "forewarn_bench_outreach";
const SECRET: &str = "bench-signing-secret-0123456789";

/// What to run.
#[derive(Debug, Clone)]
pub struct OutreachBench {
    pub messages: usize,
    pub workers: usize,
    /// Runs with `workers`; the median messages/s is reported.
    pub repeat: usize,
    /// How long the provider takes to answer each request (a real one: tens of ms).
    pub latency: Duration,
}

/// One drain of the burst.
#[derive(Debug, Clone, Serialize)]
pub struct DrainFigures {
    pub workers: usize,
    pub seconds: f64,
    pub messages_per_s: f64,
    pub sent: u64,
    /// Keys the provider received more than once.
    pub duplicates: u64,
    /// Messages not sent, or never received by the provider.
    pub lost: u64,
    pub bad_signatures: u64,
}

/// The report: the first four fields are the interface other tools read.
#[derive(Debug, Clone, Serialize)]
pub struct OutreachBenchReport {
    pub sent: u64,
    pub duplicates: u64,
    pub lost: u64,
    pub messages_per_s: f64,
    pub messages: usize,
    pub workers: usize,
    pub provider_latency_ms: u64,
    pub send_concurrency: usize,
    pub messages_per_s_runs: Vec<f64>,
    /// One worker, same burst: the baseline.
    pub one_worker_messages_per_s: f64,
    pub speedup: f64,
    pub runs: Vec<DrainFigures>,
}

#[derive(Default)]
struct Provider {
    received: HashMap<String, u32>,
    bad_signatures: u64,
    latency: Duration,
}

async fn receive(
    State(provider): State<Arc<Mutex<Provider>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let latency = provider.lock().unwrap_or_else(|e| e.into_inner()).latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let key = headers
        .get(IDEMPOTENCY_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let signed = verify(
        headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()),
        SECRET,
        &body,
        unix_seconds(),
    )
    .is_ok();
    let mut provider = provider.lock().unwrap_or_else(|e| e.into_inner());
    if !signed {
        provider.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    *provider.received.entry(key).or_default() += 1;
    StatusCode::ACCEPTED
}

/// Runs the benchmark in a scratch database on the server of `admin_url`.
pub async fn run_outreach_bench(
    config: &Config,
    admin_url: &str,
    bench: &OutreachBench,
) -> Result<OutreachBenchReport, BenchError> {
    if bench.messages == 0 || bench.workers == 0 {
        return Err(BenchError::Invalid(
            "--messages and --workers must be positive".into(),
        ));
    }
    crate::store::drop_database(admin_url, DATABASE).await?;
    crate::store::create_database(admin_url, DATABASE).await?;
    let url = crate::store::url_with_database(admin_url, DATABASE)?;
    let store = crate::app::open_store(config, &url).await?;
    let customers: Vec<CustomerRow> = (0..bench.messages)
        .map(|i| CustomerRow {
            external_id: format!("bench-customer-{i}"),
            name: format!("Customer {i}"),
            email: None,
            phone: Some(format!("+4860{i:07}")),
            preferred_channel: "sms".into(),
            language: ["pl", "en", "uk", "sk"][i % 4].into(),
            timezone: "Europe/Warsaw".into(),
            quiet_hours: None,
            tier: "standard".into(),
            address: None,
            city: None,
            country: Some("PL".into()),
        })
        .collect();
    store.upsert_customers(&customers).await?;

    let provider = Arc::new(Mutex::new(Provider::default()));
    let app = axum::Router::new()
        .route("/sms", axum::routing::post(receive))
        .with_state(provider.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| BenchError::Invalid(format!("binding the provider: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| BenchError::Invalid(e.to_string()))?;
    // Responses go out at once (no Nagle delay waiting on the client's ACK).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let outreach = OutreachConfig {
        sms_url: Some(Secret::new(format!("http://{addr}/sms"))),
        signing_secret: Some(Secret::new(SECRET)),
        smtp_url: None,
        push_url: None,
        webhook_url: None,
        log_channel: false,
        ..config.outreach.clone()
    };
    let mut runs = Vec::new();
    for round in 0..=bench.repeat.max(1) {
        // The last round is the one-worker baseline.
        let workers = if round == bench.repeat.max(1) {
            1
        } else {
            bench.workers
        };
        runs.push(drain(&store, &outreach, &provider, bench, workers, round).await?);
    }
    server.abort();
    store.close().await;
    crate::store::drop_database(admin_url, DATABASE).await?;

    let (ours, baseline) = runs.split_at(runs.len() - 1);
    let rates: Vec<f64> = ours.iter().map(|r| r.messages_per_s).collect();
    let median = super::median(&rates);
    let one = baseline.first().map_or(0.0, |r| r.messages_per_s);
    Ok(OutreachBenchReport {
        sent: ours.iter().map(|r| r.sent).min().unwrap_or(0),
        duplicates: runs.iter().map(|r| r.duplicates).sum(),
        lost: runs.iter().map(|r| r.lost).sum(),
        messages_per_s: median,
        messages: bench.messages,
        workers: bench.workers,
        provider_latency_ms: u64::try_from(bench.latency.as_millis()).unwrap_or(u64::MAX),
        send_concurrency: outreach.send_concurrency,
        messages_per_s_runs: rates,
        one_worker_messages_per_s: one,
        speedup: if one > 0.0 { median / one } else { 0.0 },
        runs,
    })
}

/// Queues the burst (a fresh incident) and drains it with `workers` workers.
async fn drain(
    store: &Store,
    config: &OutreachConfig,
    provider: &Arc<Mutex<Provider>>,
    bench: &OutreachBench,
    workers: usize,
    round: usize,
) -> Result<DrainFigures, BenchError> {
    *provider.lock().unwrap_or_else(|e| e.into_inner()) = Provider {
        latency: bench.latency,
        ..Provider::default()
    };
    let now = chrono::Utc::now().timestamp_micros();
    let mut tx = store.begin().await?;
    let incident = tx
        .create_incident(&NewIncident {
            failure_mode: "silence".into(),
            model: None,
            center: Some((52.23, 21.01)),
            radius_km: Some(5.0),
            first_at: now,
            last_at: now,
        })
        .await?;
    let notices: Vec<(String, Vec<String>)> = (0..bench.messages)
        .map(|i| {
            let devices = (0..1 + i % 3).map(|d| format!("dev-{i}-{d}")).collect();
            (format!("bench-customer-{i}"), devices)
        })
        .collect();
    let queued = tx
        .queue_incident_notices(incident, &notices, false, now)
        .await?;
    tx.commit().await?;
    tracing::info!(round, workers, queued, "bench outreach: burst queued");

    let worker = Outreach::new(store.clone(), config, None)
        .map_err(|e| BenchError::Invalid(e.to_string()))?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let worker = worker.clone();
        tasks.spawn(async move { worker.drain().await });
    }
    let mut sent = 0;
    while let Some(done) = tasks.join_next().await {
        let report = done
            .map_err(|e| BenchError::Invalid(e.to_string()))?
            .map_err(|e| BenchError::Invalid(e.to_string()))?;
        sent += report.sent;
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    // Anything a worker left claimed would show as `sending`: give the database a moment.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let rows = store.incident_outreach_sent(incident).await?;
    let provider = provider.lock().unwrap_or_else(|e| e.into_inner());
    let duplicates = provider.received.values().filter(|n| **n > 1).count() as u64;
    let received = provider.received.len() as u64;
    let expected = queued;
    let lost = expected.saturating_sub(rows.min(received));
    Ok(DrainFigures {
        workers,
        seconds,
        messages_per_s: sent as f64 / seconds,
        sent: rows,
        duplicates,
        lost,
        bad_signatures: provider.bad_signatures,
    })
}
