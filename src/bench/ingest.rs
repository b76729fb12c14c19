//! `forewarn bench ingest`: end-to-end ingest throughput and latency through a real broker
//! into the real database, next to the database's own COPY ceiling measured in the same run.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::app::AppError;
use crate::config::{Config, MqttProtocol};
use crate::embedded::mosquitto::{Mosquitto, MosquittoError};
use crate::ingest::{CommitReport, IngestDeps, IngestSettings};
use crate::loadgen::{self, LoadError, LoadSpec};
use crate::observability::Metrics;
use crate::shutdown::Shutdown;
use crate::store::{Store, TelemetryColumns};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    App(#[from] AppError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Mosquitto(#[from] MosquittoError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("ingest stored {stored} readings, expected {expected} (lost or duplicated)")]
    Mismatch { stored: i64, expected: i64 },
    #[error("timed out waiting for ingest to commit {expected} readings ({committed} committed)")]
    Timeout { committed: u64, expected: u64 },
}

/// Parameters of `forewarn bench ingest`.
#[derive(Debug, Clone)]
pub struct IngestBench {
    pub devices: usize,
    /// Readings of the flood run (published as fast as the broker takes them).
    pub readings: u64,
    pub metrics_per_message: usize,
    /// Broker in-flight windows to measure (each with a private Mosquitto); ignored when
    /// `MQTT_URL` is set.
    pub windows: Vec<u16>,
    /// Ingest configurations to compare, as session counts (one shared-subscription group
    /// each); the configuration's own `ingest.sessions` is the default and always measured.
    pub sessions: Vec<usize>,
    /// MQTT versions to compare, with the configuration's session count; the
    /// configuration's own `mqtt.protocol` is always measured.
    pub protocols: Vec<MqttProtocol>,
    /// Replica counts to compare with one (always measured): each replica an ingest of its
    /// own — client id, connection pool, the configuration's sessions — all in one
    /// shared-subscription group, as separate `forewarn ingest` processes would be (here in
    /// one process, so they share its runtime's threads).
    pub replicas: Vec<usize>,
    /// The load shapes to measure.
    pub loads: Vec<LoadShape>,
    pub publisher_connections: usize,
    pub repeat: usize,
    /// Readings/s of the sustained run, which measures latency at a fixed load (0: skip).
    pub sustained_readings_per_sec: f64,
    pub sustained_duration: Duration,
}

/// How a run publishes.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LoadShape {
    /// A fixed number of readings, as fast as possible: the throughput ceiling.
    Flood,
    /// A fixed rate for a fixed time: latency and memory under sustained load.
    Sustained,
    /// The flood's messages queued at the broker while ingest is stopped, then ingest
    /// started: what a persistent session receives after a restart or an outage.
    Backlog,
}

/// One measured run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IngestRun {
    pub shape: LoadShape,
    pub window: Option<u16>,
    pub replicas: usize,
    pub sessions: usize,
    pub protocol: MqttProtocol,
    pub readings: u64,
    pub seconds: f64,
    pub readings_per_sec: f64,
    pub p50_latency_ms: f64,
    pub p99_latency_ms: f64,
    pub max_latency_ms: f64,
    pub peak_rss_mib: f64,
    /// RSS sampled once a second: (seconds since start, MiB).
    pub rss_samples: Vec<(f64, f64)>,
}

pub async fn run_ingest(config: &Config, bench: &IngestBench) -> Result<(), BenchError> {
    let (admin_url, _cluster) = crate::app::resolve_database(config).await?;
    let database = "forewarn_bench";
    let bench_url = crate::store::url_with_database(&admin_url, database)?;

    let shapes = &bench.loads;
    let default_sessions = config.ingest.session_count();
    // (replicas, sessions per replica, MQTT version)
    let default_configuration = (1, default_sessions, config.mqtt.protocol);
    let mut configurations = vec![default_configuration];
    let others = bench
        .sessions
        .iter()
        .map(|&sessions| (1, sessions, config.mqtt.protocol))
        .chain(bench.protocols.iter().map(|&p| (1, default_sessions, p)))
        .chain(
            bench
                .replicas
                .iter()
                .filter(|&&replicas| replicas > 0)
                .map(|&replicas| (replicas, default_sessions, config.mqtt.protocol)),
        );
    for configuration in others {
        if !configurations.contains(&configuration) {
            configurations.push(configuration);
        }
    }
    let mut runs = Vec::new();
    let brokers: Vec<Option<u16>> = match &config.mqtt.url {
        Some(_) => vec![None],
        None => bench.windows.iter().copied().map(Some).collect(),
    };
    for window in brokers {
        for &shape in shapes {
            for repeat_idx in 0..bench.repeat {
                // Configurations alternate within a repeat, so that a noisy neighbour
                // disturbs all of them alike.
                for &(replicas, sessions, protocol) in &configurations {
                    let mosquitto = match window {
                        Some(window) => Some(Mosquitto::start(window)?),
                        None => None,
                    };
                    let mqtt_url = mosquitto
                        .as_ref()
                        .map(Mosquitto::url)
                        .or_else(|| config.mqtt.url.clone())
                        .unwrap_or_default();
                    crate::store::drop_database(&admin_url, database).await?;
                    crate::store::create_database(&admin_url, database).await?;
                    // A pool per replica, as each process would have its own.
                    let mut stores = Vec::new();
                    for _ in 0..replicas {
                        stores.push(crate::app::open_store(config, &bench_url).await?);
                    }
                    let run = run_once(
                        config,
                        bench,
                        &stores,
                        &mqtt_url,
                        window,
                        shape,
                        (replicas, sessions, protocol),
                    )
                    .await?;
                    eprintln!(
                        "window {:>5} {:<9} replicas {} sessions {:>2} {:<6} run {}: {:>9.0} readings/s  p50 {:>7.1} ms  p99 {:>7.1} ms  peak RSS {:>6.1} MiB",
                        window_label(window),
                        format!("{shape:?}").to_lowercase(),
                        replicas,
                        sessions,
                        protocol_label(protocol),
                        repeat_idx + 1,
                        run.readings_per_sec,
                        run.p50_latency_ms,
                        run.p99_latency_ms,
                        run.peak_rss_mib
                    );
                    runs.push(run);
                    for store in stores {
                        store.close().await;
                    }
                }
            }
        }
    }

    // The database's ceiling: straight COPY of the same number of rows, same layout.
    crate::store::drop_database(&admin_url, database).await?;
    crate::store::create_database(&admin_url, database).await?;
    let store = crate::app::open_store(config, &bench_url).await?;
    let batches = copy_ceiling_rows(bench);
    let mut copy_rates = Vec::new();
    for _ in 0..bench.repeat {
        let started = Instant::now();
        let n_rows = store.bench_copy_ceiling(&batches).await?;
        copy_rates.push(n_rows as f64 / started.elapsed().as_secs_f64());
    }
    store.close().await;
    crate::store::drop_database(&admin_url, database).await?;
    let copy_ceiling = median(&mut copy_rates);

    println!(
        "\nforewarn bench ingest — {} devices, {} metrics/message, QoS 1; default configuration: {} session(s), {} write(s) in flight; medians of {} runs",
        bench.devices,
        bench.metrics_per_message,
        default_sessions,
        config.ingest.writes_in_flight,
        bench.repeat
    );
    println!(
        "flood: {} readings as fast as possible; backlog: the same queued while ingest is stopped; sustained: {:.0} readings/s for {:?}",
        bench.readings, bench.sustained_readings_per_sec, bench.sustained_duration
    );
    println!(
        "{:<8} {:<10} {:<20} {:>12} {:>9} {:>9} {:>9} {:>13} {:>8} {:>8}",
        "window",
        "load",
        "[replicas ×] sessions",
        "readings/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "peak RSS MiB",
        "of COPY",
        "of best"
    );
    let mut summary = Vec::new();
    let mut groups: Vec<(Option<u16>, LoadShape)> =
        runs.iter().map(|r| (r.window, r.shape)).collect();
    groups.dedup();
    for (window, shape) in groups {
        let of = |r: &IngestRun, (replicas, sessions, protocol): (usize, usize, MqttProtocol)| {
            r.window == window
                && r.shape == shape
                && r.replicas == replicas
                && r.sessions == sessions
                && r.protocol == protocol
        };
        let medians: Vec<((usize, usize, MqttProtocol), f64)> = configurations
            .iter()
            .map(|&configuration| {
                let mut rates: Vec<f64> = runs
                    .iter()
                    .filter(|r| of(r, configuration))
                    .map(|r| r.readings_per_sec)
                    .collect();
                (configuration, median(&mut rates))
            })
            .collect();
        let best = medians.iter().map(|m| m.1).fold(0.0, f64::max);
        for &(configuration, rate) in &medians {
            let (replicas, sessions, protocol) = configuration;
            let group: Vec<&IngestRun> = runs.iter().filter(|r| of(r, configuration)).collect();
            let p50 = median(&mut group.iter().map(|r| r.p50_latency_ms).collect::<Vec<_>>());
            let p99 = median(&mut group.iter().map(|r| r.p99_latency_ms).collect::<Vec<_>>());
            let max = median(&mut group.iter().map(|r| r.max_latency_ms).collect::<Vec<_>>());
            let peak = group.iter().map(|r| r.peak_rss_mib).fold(0.0, f64::max);
            let replicas_label = if replicas == 1 {
                String::new()
            } else {
                format!("{replicas} replicas × ")
            };
            let label = if configuration == default_configuration {
                format!("{sessions}, {} default", protocol_label(protocol))
            } else {
                format!("{replicas_label}{sessions}, {}", protocol_label(protocol))
            };
            println!(
                "{:<8} {:<10} {:<20} {:>12.0} {:>9.1} {:>9.1} {:>9.1} {:>13.1} {:>7.0}% {:>7.0}%",
                window_label(window),
                format!("{shape:?}").to_lowercase(),
                label,
                rate,
                p50,
                p99,
                max,
                peak,
                100.0 * rate / copy_ceiling,
                100.0 * rate / best
            );
            summary.push(serde_json::json!({
                "window": window, "load": shape, "replicas": replicas, "sessions": sessions,
                "protocol": protocol_label(protocol),
                "default": configuration == default_configuration, "median_readings_per_sec": rate,
                "median_p50_ms": p50, "median_p99_ms": p99, "peak_rss_mib": peak,
                "ratio_to_copy_ceiling": rate / copy_ceiling, "ratio_to_best": rate / best,
            }));
        }
    }
    println!(
        "{:<8} {:<10} {:>12.0}   straight COPY of {} rows, same table layout, one connection",
        "COPY", "-", copy_ceiling, bench.readings
    );
    println!(
        "{}",
        serde_json::json!({"bench": "ingest", "copy_ceiling_rows_per_sec": copy_ceiling, "summary": summary, "runs": runs})
    );
    Ok(())
}

fn protocol_label(protocol: MqttProtocol) -> String {
    format!("v{}", protocol.as_str())
}

fn window_label(window: Option<u16>) -> String {
    window
        .map(|w| w.to_string())
        .unwrap_or_else(|| "url".into())
}

/// One run: `stores` holds one store (its own pool) per replica.
async fn run_once(
    config: &Config,
    bench: &IngestBench,
    stores: &[Store],
    mqtt_url: &str,
    window: Option<u16>,
    shape: LoadShape,
    (replicas, sessions, protocol): (usize, usize, MqttProtocol),
) -> Result<IngestRun, BenchError> {
    let mut ingest_config = config.ingest.clone();
    ingest_config.sessions = sessions;
    let client_id = format!("forewarn-bench-{}", std::process::id());
    if replicas > 1 {
        // Replicas split the stream as one shared-subscription group.
        ingest_config.shared_group = Some(client_id.clone());
    }
    let settings: Vec<IngestSettings> = (0..replicas)
        .map(|replica| {
            let mut mqtt = config.mqtt.clone();
            mqtt.protocol = protocol;
            mqtt.client_id = if replicas == 1 {
                client_id.clone()
            } else {
                format!("{client_id}-r{replica}")
            };
            IngestSettings {
                mqtt_url: mqtt_url.to_string(),
                mqtt,
                ingest: ingest_config.clone(),
            }
        })
        .collect();
    let n_messages = bench.readings.div_ceil(bench.metrics_per_message as u64);
    let spec = LoadSpec {
        devices: bench.devices,
        metrics_per_message: bench.metrics_per_message,
        total_messages: (shape != LoadShape::Sustained).then_some(n_messages),
        rate_per_sec: (shape == LoadShape::Sustained)
            .then(|| bench.sustained_readings_per_sec / bench.metrics_per_message as f64),
        duration: (shape == LoadShape::Sustained).then_some(bench.sustained_duration),
        connections: bench.publisher_connections,
        ..LoadSpec::default()
    };
    let mut published = None;
    if shape == LoadShape::Backlog {
        // Create the persistent sessions, stop, and let the broker queue everything.
        let (stop, shutdown) = Shutdown::new();
        let mut ingests = Vec::new();
        for (settings, store) in settings.iter().zip(stores) {
            let deps = IngestDeps::new(store.clone(), Metrics::new());
            ingests.push(tokio::spawn(crate::ingest::run(
                settings.clone(),
                deps,
                shutdown.clone(),
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.trigger();
        for ingest in ingests {
            let _ = ingest.await;
        }
        let (_stop_load, load_shutdown) = Shutdown::new();
        published = Some(loadgen::publish(mqtt_url, &spec, load_shutdown).await?);
    }

    let (observer_tx, mut observer_rx) = mpsc::unbounded_channel::<CommitReport>();
    reset_peak_rss();
    let (stop_ingest, ingest_shutdown) = Shutdown::new();
    let backlog_started = Instant::now();
    let mut ingests = Vec::new();
    for (settings, store) in settings.into_iter().zip(stores) {
        let deps = IngestDeps {
            commit_observer: Some(observer_tx.clone()),
            ..IngestDeps::new(store.clone(), Metrics::new())
        };
        ingests.push(tokio::spawn(crate::ingest::run(
            settings,
            deps,
            ingest_shutdown.clone(),
        )));
    }
    drop(observer_tx);
    if shape != LoadShape::Backlog {
        // Let the sessions subscribe before publishing.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (_stop_load, load_shutdown) = Shutdown::new();
    let started = if shape == LoadShape::Backlog {
        backlog_started
    } else {
        Instant::now()
    };
    let url = mqtt_url.to_string();
    let mut publisher = tokio::spawn(async move {
        match published {
            Some(report) => Ok(report),
            None => loadgen::publish(&url, &spec, load_shutdown).await,
        }
    });

    let mut committed = 0u64;
    let mut latencies = LatencyHistogram::default();
    let mut last_commit = started;
    let mut rss_samples = Vec::new();
    let mut next_sample = Instant::now();
    let mut expected: Option<u64> = None;
    let mut idle_since = Instant::now();
    loop {
        if next_sample <= Instant::now() {
            rss_samples.push((started.elapsed().as_secs_f64(), rss_mib("VmRSS")));
            next_sample += Duration::from_secs(1);
        }
        if expected.is_none() && publisher.is_finished() {
            let report = (&mut publisher).await.map_err(LoadError::from)??;
            expected = Some(report.readings);
        }
        if let Some(expected) = expected
            && committed >= expected
        {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(200), observer_rx.recv()).await {
            Ok(Some(report)) => {
                committed += report.n_readings_inserted;
                for micros in report.event_to_commit_micros {
                    latencies.record(micros);
                }
                last_commit = Instant::now();
                idle_since = Instant::now();
            }
            Ok(None) => break,
            Err(_) if idle_since.elapsed() > Duration::from_secs(30) => {
                return Err(BenchError::Timeout {
                    committed,
                    expected: expected.unwrap_or(n_messages * bench.metrics_per_message as u64),
                });
            }
            Err(_) => {}
        }
    }
    stop_ingest.trigger();
    for ingest in ingests {
        let _ = ingest.await;
    }
    let expected = expected.unwrap_or_default();
    let stored = stores[0].count_telemetry().await?;
    if stored != expected as i64 {
        return Err(BenchError::Mismatch {
            stored,
            expected: expected as i64,
        });
    }
    let quantile = |q: f64| latencies.quantile_micros(q) as f64 / 1000.0;
    let seconds = last_commit.duration_since(started).as_secs_f64();
    Ok(IngestRun {
        shape,
        window,
        replicas,
        sessions,
        protocol,
        readings: committed,
        seconds,
        readings_per_sec: committed as f64 / seconds,
        p50_latency_ms: quantile(0.5),
        p99_latency_ms: quantile(0.99),
        max_latency_ms: quantile(1.0),
        peak_rss_mib: rss_mib("VmHWM"),
        rss_samples,
    })
}

/// Publish→commit latencies in 100 µs buckets up to 60 s: constant memory however long the
/// run (a soak must show ingest's memory, not the benchmark's), exact to 0.1 ms.
struct LatencyHistogram {
    buckets: Vec<u64>,
    count: u64,
}

const LATENCY_BUCKET_MICROS: i64 = 100;

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: vec![0; 600_001],
            count: 0,
        }
    }
}

impl LatencyHistogram {
    fn record(&mut self, micros: i64) {
        let bucket = (micros.max(0) / LATENCY_BUCKET_MICROS).min(self.buckets.len() as i64 - 1);
        self.buckets[bucket as usize] += 1;
        self.count += 1;
    }

    fn quantile_micros(&self, q: f64) -> i64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((self.count - 1) as f64 * q) as u64;
        let mut seen = 0;
        for (bucket, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen > rank {
                return (bucket as i64 + 1) * LATENCY_BUCKET_MICROS;
            }
        }
        self.buckets.len() as i64 * LATENCY_BUCKET_MICROS
    }
}

/// The same shape of rows the publisher produces, in batches of 5,000.
fn copy_ceiling_rows(bench: &IngestBench) -> Vec<TelemetryColumns> {
    let start = chrono::Utc::now().timestamp_micros() - 86_400_000_000;
    let mut batches = Vec::new();
    let mut rows = TelemetryColumns::default();
    let per_device = bench
        .readings
        .div_ceil((bench.devices * bench.metrics_per_message) as u64);
    for step in 0..per_device as i64 {
        for device_idx in 0..bench.devices as i32 {
            for metric_idx in 0..bench.metrics_per_message as i16 {
                rows.push(
                    start + step * 1000,
                    device_idx + 1,
                    metric_idx + 1,
                    50.0 + f64::from(metric_idx),
                    false,
                );
                if rows.len() == 5000 {
                    batches.push(std::mem::take(&mut rows));
                }
            }
        }
    }
    if !rows.is_empty() {
        batches.push(rows);
    }
    batches
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Starts the peak (VmHWM) afresh, so that each run reports its own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A field of /proc/self/status in MiB (VmRSS: now; VmHWM: peak).
fn rss_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_are_exact_to_a_tenth_of_a_millisecond() {
        let mut histogram = LatencyHistogram::default();
        for millis in 1..=1000 {
            histogram.record(millis * 1000);
        }
        assert_eq!(histogram.quantile_micros(0.5), 500_100);
        assert_eq!(histogram.quantile_micros(0.99), 990_100);
        assert_eq!(histogram.quantile_micros(1.0), 1_000_100);
        histogram.record(i64::MAX); // beyond the range: counted in the last bucket
        assert_eq!(histogram.quantile_micros(1.0), 60_000_100);
        assert_eq!(LatencyHistogram::default().quantile_micros(0.5), 0);
    }
}
