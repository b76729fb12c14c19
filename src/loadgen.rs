//! A synthetic telemetry publisher: many devices over a few MQTT connections at QoS 1,
//! each reading stamped with the wall clock at publish time (so publish→commit latency can
//! be read off the stored rows). It drives `forewarn bench ingest` and, until the fleet
//! simulator replaces it, the demo.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

use crate::contract::{TopicKind, device_topic, telemetry_json};
use crate::shutdown::Shutdown;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Mqtt(#[from] crate::ingest::MqttSetupError),
    #[error("publish failed: {0}")]
    Publish(#[from] rumqttc::ClientError),
    #[error("publisher task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What to publish.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub devices: usize,
    /// Metrics per message (the names are `metric_0`, `metric_1`, …).
    pub metrics_per_message: usize,
    /// Stop after this many messages in total (`None`: until shutdown or `duration`).
    pub total_messages: Option<u64>,
    /// Messages per second over all connections (`None`: as fast as the broker takes them).
    pub rate_per_sec: Option<f64>,
    pub duration: Option<Duration>,
    pub connections: usize,
    pub topic_prefix: String,
    /// Devices are `{device_prefix}{index:05}`.
    pub device_prefix: String,
    /// Outgoing QoS 1 window per connection.
    pub inflight: u16,
}

impl Default for LoadSpec {
    fn default() -> Self {
        LoadSpec {
            devices: 1000,
            metrics_per_message: 3,
            total_messages: None,
            rate_per_sec: None,
            duration: None,
            connections: 4,
            topic_prefix: "devices".into(),
            device_prefix: "LOAD-".into(),
            inflight: 1000,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct LoadReport {
    pub messages: u64,
    pub readings: u64,
    pub elapsed: Duration,
}

pub fn device_name(spec: &LoadSpec, device_idx: usize) -> String {
    format!("{}{device_idx:05}", spec.device_prefix)
}

/// Publishes until the spec's limit or `shutdown`, then waits for the broker to
/// acknowledge what was sent.
pub async fn publish(
    url: &str,
    spec: &LoadSpec,
    shutdown: Shutdown,
) -> Result<LoadReport, LoadError> {
    let started = Instant::now();
    let connections = spec.connections.max(1);
    let metric_names: Vec<String> = (0..spec.metrics_per_message)
        .map(|m| format!("metric_{m}"))
        .collect();
    let mut tasks = Vec::new();
    for connection_idx in 0..connections {
        let mut options = crate::ingest::mqtt_options(
            url,
            &format!("forewarn-load-{}-{connection_idx}", std::process::id()),
            &crate::config::MqttConfig::default(),
            &crate::config::IngestConfig::default(),
        )?;
        options
            .set_clean_session(true)
            .set_manual_acks(false)
            .set_inflight(spec.inflight);
        let devices: Vec<usize> = (connection_idx..spec.devices)
            .step_by(connections)
            .collect();
        let quota = spec.total_messages.map(|total| {
            total / connections as u64
                + u64::from((connection_idx as u64) < total % connections as u64)
        });
        let rate = spec.rate_per_sec.map(|r| r / connections as f64);
        tasks.push(tokio::spawn(publish_connection(
            options,
            spec.clone(),
            metric_names.clone(),
            devices,
            quota,
            rate,
            shutdown.clone(),
        )));
    }
    let mut report = LoadReport::default();
    for task in tasks {
        let (messages, readings) = task.await??;
        report.messages += messages;
        report.readings += readings;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

async fn publish_connection(
    options: MqttOptions,
    spec: LoadSpec,
    metric_names: Vec<String>,
    devices: Vec<usize>,
    quota: Option<u64>,
    rate: Option<f64>,
    shutdown: Shutdown,
) -> Result<(u64, u64), LoadError> {
    if devices.is_empty() {
        return Ok((0, 0));
    }
    let (client, mut event_loop) = AsyncClient::new(options, 1024);
    let (acked_tx, mut acked_rx) = tokio::sync::watch::channel(0u64);
    let poller = tokio::spawn(async move {
        let mut acked = 0u64;
        loop {
            match event_loop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    acked += 1;
                    acked_tx.send_replace(acked);
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "load publisher connection error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    let topics: Vec<String> = devices
        .iter()
        .map(|d| {
            device_topic(
                &spec.topic_prefix,
                &device_name(&spec, *d),
                TopicKind::Telemetry,
            )
        })
        .collect();
    let mut last_time = vec![0i64; devices.len()];
    let mut seq = vec![0u64; devices.len()];
    let started = Instant::now();
    let mut sent = 0u64;
    let mut values: Vec<(&str, f64)> = metric_names
        .iter()
        .map(|name| (name.as_str(), 0.0))
        .collect();
    'publishing: loop {
        for (slot, device_idx) in devices.iter().enumerate() {
            if quota.is_some_and(|q| sent >= q)
                || spec.duration.is_some_and(|d| started.elapsed() >= d)
                || shutdown.is_triggered()
            {
                break 'publishing;
            }
            if let Some(rate) = rate {
                let due = Duration::from_secs_f64(sent as f64 / rate);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
            // Strictly increasing per device, so that no two readings share a key.
            let now = chrono::Utc::now()
                .timestamp_micros()
                .max(last_time[slot] + 1);
            last_time[slot] = now;
            for (metric_idx, value) in values.iter_mut().enumerate() {
                let phase = (now / 1_000_000) as f64 / 600.0 + *device_idx as f64;
                value.1 = 50.0 + 10.0 * (phase + metric_idx as f64).sin();
            }
            seq[slot] += 1;
            let payload = telemetry_json(now, Some(seq[slot]), &values);
            client
                .publish(topics[slot].as_str(), QoS::AtLeastOnce, false, payload)
                .await?;
            sent += 1;
        }
    }
    // Wait until the broker has acknowledged everything sent (bounded).
    let deadline = Instant::now() + Duration::from_secs(60);
    while *acked_rx.borrow() < sent && Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(200), acked_rx.changed()).await;
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), poller).await;
    Ok((sent, sent * spec.metrics_per_message as u64))
}
