//! `live` mode: the fleet publishes over MQTT on an accelerated clock, from `sim_days` ago
//! up to now (then, with `follow`, in real time), with the transport's imperfections:
//! duplicated and out-of-order deliveries, buffered bursts after offline periods, and
//! (at a configurable rate) malformed payloads.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use forewarn::contract::{TopicKind, device_topic, format_timestamp, telemetry_json};
use forewarn::shutdown::Shutdown;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

use crate::sim::{Fleet, Sample};

#[derive(Debug, Clone)]
pub struct LiveOptions {
    pub mqtt_url: String,
    pub topic_prefix: String,
    /// Simulated seconds per wall-clock second.
    pub speed: f64,
    pub connections: usize,
    /// The demo's closed loop: technicians visit what forewarn books, customers answer.
    pub field: Option<crate::field::Field>,
    /// Keep the ground truth so far here (failures whose time has come, prevented ones
    /// marked), rewritten as it changes.
    pub truth: Option<std::path::PathBuf>,
}

/// What was published, for checking against the database.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LiveReport {
    pub messages: u64,
    /// Distinct readings in well-formed telemetry (what ingest must store).
    pub readings: u64,
    pub events: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub malformed: u64,
    pub buffered_bursts: u64,
    pub seconds: f64,
}

struct Outbound {
    topic: String,
    payload: Vec<u8>,
}

/// Turns samples into messages, applying the transport's artefacts. Deterministic for the
/// fleet's seed; the live test checks the report against the database.
pub struct MessagePlanner<'a> {
    fleet: &'a Fleet,
    prefix: String,
    rng: ChaCha8Rng,
    /// Per device: samples buffered while offline.
    buffered: Vec<Vec<Sample>>,
    /// Per device: a telemetry message held back to be sent after the next one.
    held: Vec<Option<Outbound>>,
    pub report: LiveReport,
}

impl<'a> MessagePlanner<'a> {
    pub fn new(fleet: &'a Fleet, prefix: &str) -> MessagePlanner<'a> {
        let n = fleet.devices.len();
        MessagePlanner {
            fleet,
            prefix: prefix.to_string(),
            rng: ChaCha8Rng::seed_from_u64(fleet.config.seed ^ 0x005E_ED0F_11FE),
            buffered: vec![Vec::new(); n],
            held: (0..n).map(|_| None).collect(),
            report: LiveReport::default(),
        }
    }

    /// The messages device `device_idx` sends for `sample`, in sending order.
    pub fn plan(
        &mut self,
        device_idx: usize,
        sample: Sample,
        out: &mut Vec<(usize, Vec<u8>, String)>,
    ) {
        let device = &self.fleet.devices[device_idx];
        let artefacts = self.fleet.config.artefacts;
        let telemetry_topic = device_topic(&self.prefix, &device.external_id, TopicKind::Telemetry);
        let events_topic = device_topic(&self.prefix, &device.external_id, TopicKind::Events);
        if sample.offline {
            if device.buffers_offline && !sample.metrics.is_empty() {
                self.buffered[device_idx].push(sample);
            }
            return;
        }
        // Back online: the buffer goes out as one array message first.
        self.send_buffered(device_idx, out);
        for event in &sample.events {
            let payload = serde_json::json!({
                "ts": format_timestamp(event.time + device.clock_skew_micros),
                "code": event.code,
                "severity": event.severity,
                "message": event.message,
            });
            self.report.events += 1;
            self.report.messages += 1;
            out.push((
                device_idx,
                payload.to_string().into_bytes(),
                events_topic.clone(),
            ));
        }
        if sample.metrics.is_empty() {
            return;
        }
        let mut payload =
            telemetry_json(sample.reported_time, Some(sample.seq), &sample.metrics).into_bytes();
        let malformed =
            artefacts.malformed_rate > 0.0 && self.rng.gen_bool(artefacts.malformed_rate);
        if malformed {
            self.report.malformed += 1;
            payload = match self.rng.gen_range(0..4) {
                0 => payload[..payload.len() / 2].to_vec(),
                1 => b"{\"metrics\": {\"temp\": NaN}}".to_vec(),
                2 => vec![0xff, 0xfe, 0x00, 0x01],
                _ => br#"{"ts": "soon", "metrics": {"x": 1}}"#.to_vec(),
            };
        } else {
            self.report.readings += sample.metrics.len() as u64;
        }
        self.report.messages += 1;
        let message = Outbound {
            topic: telemetry_topic,
            payload,
        };
        if artefacts.duplicate_rate > 0.0 && self.rng.gen_bool(artefacts.duplicate_rate) {
            self.report.duplicates += 1;
            // A duplicated malformed message is two dead letters.
            self.report.malformed += u64::from(malformed);
            self.report.messages += 1;
            out.push((device_idx, message.payload.clone(), message.topic.clone()));
        }
        if let Some(held) = self.held[device_idx].take() {
            // The held-back message arrives after a newer one.
            out.push((device_idx, message.payload, message.topic));
            out.push((device_idx, held.payload, held.topic));
        } else if artefacts.out_of_order_rate > 0.0
            && self.rng.gen_bool(artefacts.out_of_order_rate)
        {
            self.report.reordered += 1;
            self.held[device_idx] = Some(message);
        } else {
            out.push((device_idx, message.payload, message.topic));
        }
    }

    /// Sends what a device buffered while offline as one array message.
    fn send_buffered(&mut self, device_idx: usize, out: &mut Vec<(usize, Vec<u8>, String)>) {
        let buffered = std::mem::take(&mut self.buffered[device_idx]);
        if buffered.is_empty() {
            return;
        }
        let device = &self.fleet.devices[device_idx];
        let parts: Vec<String> = buffered
            .iter()
            .map(|s| telemetry_json(s.reported_time, Some(s.seq), &s.metrics))
            .collect();
        self.report.readings += buffered.iter().map(|s| s.metrics.len() as u64).sum::<u64>();
        self.report.messages += 1;
        self.report.buffered_bursts += 1;
        out.push((
            device_idx,
            format!("[{}]", parts.join(",")).into_bytes(),
            device_topic(&self.prefix, &device.external_id, TopicKind::Telemetry),
        ));
    }

    /// Whatever is still buffered or held at the end.
    pub fn finish(&mut self, out: &mut Vec<(usize, Vec<u8>, String)>) {
        for device_idx in 0..self.fleet.devices.len() {
            if let Some(held) = self.held[device_idx].take() {
                out.push((device_idx, held.payload, held.topic));
            }
            self.send_buffered(device_idx, out);
        }
    }
}

/// Publishes the fleet's window on the accelerated clock. Returns what was published,
/// after the broker acknowledged all of it.
pub async fn run_live(
    fleet: &Fleet,
    options: &LiveOptions,
    mut shutdown: Shutdown,
) -> anyhow::Result<LiveReport> {
    let started = Instant::now();
    let n_connections = options.connections.max(1);
    let mut clients = Vec::new();
    let mut pollers = Vec::new();
    let (acked_tx, mut acked_rx) = tokio::sync::watch::channel(0u64);
    let acked_tx = std::sync::Arc::new(acked_tx);
    for connection_idx in 0..n_connections {
        let url = url::Url::parse(&options.mqtt_url)?;
        let mut mqtt = MqttOptions::new(
            format!("forewarn-sim-{}-{connection_idx}", std::process::id()),
            url.host_str().unwrap_or("127.0.0.1"),
            url.port().unwrap_or(1883),
        );
        if !url.username().is_empty() {
            mqtt.set_credentials(url.username(), url.password().unwrap_or_default());
        }
        mqtt.set_max_packet_size(1 << 20, 1 << 20)
            .set_inflight(500)
            .set_keep_alive(Duration::from_secs(30));
        let (client, mut event_loop) = AsyncClient::new(mqtt, 2048);
        let acked_tx = acked_tx.clone();
        pollers.push(tokio::spawn(async move {
            loop {
                match event_loop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        acked_tx.send_modify(|n| *n += 1);
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "simulator connection error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }));
        clients.push(client);
    }

    let config = &fleet.config;
    let mut streams: Vec<_> = (0..fleet.devices.len()).map(|d| fleet.stream(d)).collect();
    let device_index: std::collections::HashMap<&str, usize> = fleet
        .devices
        .iter()
        .map(|d| (d.external_id.as_str(), d.index))
        .collect();
    let field_tasks = match &options.field {
        Some(field) => field.start().await?,
        None => Vec::new(),
    };
    let mut truth = TruthKeeper::new(options.truth.clone(), config.start);
    let mut last_field_log = Instant::now();
    let mut planner = MessagePlanner::new(fleet, &options.topic_prefix);
    let mut out = Vec::new();
    let mut queue: VecDeque<(usize, Vec<u8>, String)> = VecDeque::new();
    let mut sent = 0u64;
    let wall_start = Instant::now();
    let mut t = config.start;
    while t < config.end && !shutdown.is_triggered() {
        // Pace: simulated time t is due at wall_start + (t - start) / speed, and never
        // ahead of the real clock.
        let due_secs = (t - config.start) as f64 / 1e6 / options.speed;
        let real_lag = (t - chrono::Utc::now().timestamp_micros()) as f64 / 1e6;
        let wait = due_secs - wall_start.elapsed().as_secs_f64();
        let wait = wait.max(real_lag);
        if wait > 0.0 {
            // Following the real clock, a tick can be minutes away: a stop is not.
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs_f64(wait.min(60.0))) => {}
                () = shutdown.wait() => break,
            }
        }
        if let Some(field) = &options.field {
            for visit in field.due(t) {
                let Some(&device_idx) = device_index.get(visit.device.as_str()) else {
                    continue; // not one of this fleet's devices
                };
                let finding = streams[device_idx].visit(t, visit.component.as_deref());
                truth.changed |= matches!(finding, crate::sim::VisitFinding::Prevented(_));
                field.record(visit, finding);
            }
            if last_field_log.elapsed() >= Duration::from_secs(30) {
                last_field_log = Instant::now();
                let report = field.report();
                tracing::info!(
                    "field: visits={} prevented={} repaired={} nothing_found={} messages={} \
                     confirmed={} rescheduled={} declined={} replies={} api_errors={}",
                    report.visits,
                    report.prevented,
                    report.repaired,
                    report.nothing_found,
                    report.messages_received,
                    report.confirmed,
                    report.rescheduled,
                    report.declined,
                    report.replies,
                    report.api_errors
                );
            }
        }
        for (device_idx, stream) in streams.iter_mut().enumerate() {
            if let Some(sample) = stream.next() {
                planner.plan(device_idx, sample, &mut out);
            }
        }
        truth.keep(&streams, t)?;
        queue.extend(out.drain(..));
        while let Some((device_idx, payload, topic)) = queue.pop_front() {
            clients[device_idx % n_connections]
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await?;
            sent += 1;
        }
        t += config.interval;
    }
    truth.changed = true;
    truth.keep(&streams, t.min(config.end))?;
    for task in field_tasks {
        task.abort();
    }
    planner.finish(&mut out);
    for (device_idx, payload, topic) in out.drain(..) {
        clients[device_idx % n_connections]
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await?;
        sent += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while *acked_rx.borrow() < sent && Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(200), acked_rx.changed()).await;
    }
    for client in &clients {
        let _ = client.disconnect().await;
    }
    for poller in pollers {
        let _ = tokio::time::timeout(Duration::from_secs(5), poller).await;
    }
    let mut report = planner.report;
    report.seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        *acked_rx.borrow() >= sent,
        "broker acknowledged {} of {sent} messages",
        *acked_rx.borrow()
    );
    Ok(report)
}

/// Rewrites the truth file as simulated time passes: every simulated day, and at once
/// when a visit prevented a failure. The file is replaced whole (written beside it, then
/// renamed), so a reader never sees half of it.
struct TruthKeeper {
    path: Option<std::path::PathBuf>,
    start: i64,
    written_until: i64,
    changed: bool,
}

impl TruthKeeper {
    fn new(path: Option<std::path::PathBuf>, start: i64) -> TruthKeeper {
        TruthKeeper {
            path,
            start,
            written_until: i64::MIN,
            changed: true,
        }
    }

    /// Failures due before `t`, as the field left them.
    fn keep(&mut self, streams: &[crate::sim::DeviceStream<'_>], t: i64) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if !self.changed && t < self.written_until + crate::degradation::DAY_MICROS {
            return Ok(());
        }
        let mut records = Vec::new();
        for stream in streams {
            stream.truth(self.start, t, &mut records);
        }
        crate::sim::sort_truth(&mut records);
        let partial = path.with_extension("partial");
        crate::write_truth(&partial, &records)?;
        std::fs::rename(&partial, path)?;
        self.written_until = t;
        self.changed = false;
        Ok(())
    }
}
