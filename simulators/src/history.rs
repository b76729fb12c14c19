//! `history` mode: months of a fleet's past written straight into the database (binary
//! COPY through forewarn's store), with customers, technicians, devices, failures and
//! maintenance: the training set.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use forewarn::store::{
    ComponentRecord, CustomerRow, DeviceRow, EventRow, MetricRow, Store, StoreError, TechnicianRow,
    WriteBatch,
};
use tokio::sync::{Mutex, mpsc};

use crate::fleet::Kind;
use crate::sim::{Fleet, micros};

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HistoryReport {
    pub devices: usize,
    pub readings: u64,
    pub events: u64,
    pub failures: u64,
    pub maintenance: u64,
    pub seconds: f64,
    pub readings_per_sec: f64,
    pub rollup_seconds: f64,
}

const BATCH_ROWS: usize = 100_000;

/// The database ids of a registered fleet.
pub struct RegisteredFleet {
    /// `(external_id, id)` in the fleet's device order.
    pub device_ids: Vec<(String, i32)>,
    pub metric_ids: HashMap<String, i16>,
}

/// Registers customers, technicians, devices and the metric catalogue.
pub async fn register_fleet(fleet: &Fleet, store: &Store) -> Result<RegisteredFleet, StoreError> {
    let customers: Vec<CustomerRow> = fleet
        .customers
        .iter()
        .map(|c| CustomerRow {
            external_id: c.external_id.clone(),
            name: c.name.clone(),
            email: Some(c.email.clone()),
            phone: Some(c.phone.clone()),
            preferred_channel: c.preferred_channel.into(),
            language: c.language.into(),
            timezone: c.timezone.into(),
            quiet_hours: Some(c.quiet_hours),
            tier: c.tier.into(),
            address: Some(c.address.clone()),
            city: Some(c.city.into()),
            country: Some(c.country.into()),
        })
        .collect();
    store.upsert_customers(&customers).await?;
    let technicians: Vec<TechnicianRow> = fleet
        .technicians
        .iter()
        .map(|t| TechnicianRow {
            external_id: t.external_id.clone(),
            name: t.name.clone(),
            email: Some(t.email.clone()),
            skills: t.skills.clone(),
            home_latitude: t.latitude,
            home_longitude: t.longitude,
            home_city: Some(t.city.into()),
            timezone: t.timezone.into(),
            shift_days: t.shift_days.clone(),
            shift_start_hour: t.shift_start_hour,
            shift_end_hour: t.shift_end_hour,
        })
        .collect();
    store.upsert_technicians(&technicians).await?;
    let mut metrics: Vec<MetricRow> = Vec::new();
    for kind in Kind::ALL {
        for metric in kind.spec().metrics {
            match metrics.iter_mut().find(|m| m.name == metric.name) {
                Some(existing) => existing.device_kinds.push(kind.as_str().into()),
                None => metrics.push(MetricRow {
                    name: metric.name.into(),
                    unit: metric.unit.into(),
                    device_kinds: vec![kind.as_str().into()],
                }),
            }
        }
    }
    let metric_ids = store.upsert_metrics(&metrics).await?.into_iter().collect();
    let devices: Vec<DeviceRow> = fleet
        .devices
        .iter()
        .map(|d| DeviceRow {
            external_id: d.external_id.clone(),
            kind: d.kind.as_str().into(),
            model: Some(d.model.into()),
            customer_external_id: Some(fleet.customers[d.customer_index].external_id.clone()),
            latitude: Some(d.latitude),
            longitude: Some(d.longitude),
            installed_at: Some(micros(d.installed_at)),
            metadata: serde_json::json!({"simulated": true, "seed": fleet.config.seed}),
        })
        .collect();
    let device_ids = store.upsert_devices(&devices).await?;
    Ok(RegisteredFleet {
        device_ids,
        metric_ids,
    })
}

/// Writes the fleet's history. Generation runs on a blocking thread; `connections`
/// writers COPY batches concurrently.
pub async fn write_history(
    fleet: Arc<Fleet>,
    store: &Store,
    connections: usize,
) -> anyhow::Result<HistoryReport> {
    let started = Instant::now();
    let RegisteredFleet {
        device_ids,
        metric_ids,
    } = register_fleet(&fleet, store).await?;

    let (batch_tx, batch_rx) = mpsc::channel::<WriteBatch>(4);
    let generator_fleet = fleet.clone();
    let generator_ids = device_ids.clone();
    let generator = tokio::task::spawn_blocking(move || {
        let fleet = generator_fleet;
        let mut batch = WriteBatch::default();
        for (device_idx, (_, device_id)) in generator_ids.iter().enumerate() {
            let device = &fleet.devices[device_idx];
            for sample in fleet.stream(device_idx) {
                // A device that does not buffer loses what it measured while offline.
                if sample.offline && !device.buffers_offline {
                    continue;
                }
                for (name, value) in &sample.metrics {
                    let metric_id = metric_ids[*name];
                    batch.telemetry.push(
                        sample.reported_time,
                        *device_id,
                        metric_id,
                        *value,
                        false,
                    );
                }
                for event in &sample.events {
                    batch.events.push(EventRow {
                        time: event.time + device.clock_skew_micros,
                        unstamped_redelivery: false,
                        device_id: *device_id,
                        code: event.code.to_string(),
                        severity: event.severity.as_str(),
                        message: event.message.clone(),
                        time_estimated: false,
                    });
                }
                if batch.telemetry.len() >= BATCH_ROWS
                    && batch_tx.blocking_send(std::mem::take(&mut batch)).is_err()
                {
                    return;
                }
            }
        }
        if !batch.is_empty() {
            let _ = batch_tx.blocking_send(batch);
        }
    });
    let batch_rx = Arc::new(Mutex::new(batch_rx));
    let mut writers = Vec::new();
    for _ in 0..connections.max(1) {
        let store = store.clone();
        let batch_rx = batch_rx.clone();
        writers.push(tokio::spawn(async move {
            let mut readings = 0u64;
            let mut events = 0u64;
            loop {
                let next = batch_rx.lock().await.recv().await;
                let Some(batch) = next else { break };
                let report = store.write_batch(&batch).await?;
                readings += batch.telemetry.len() as u64;
                events += report.events_inserted;
            }
            Ok::<_, StoreError>((readings, events))
        }));
    }
    let mut report = HistoryReport {
        devices: fleet.devices.len(),
        ..HistoryReport::default()
    };
    for writer in writers {
        let (readings, events) = writer.await.context("history writer")??;
        report.readings += readings;
        report.events += events;
    }
    generator.await.context("history generator")?;

    // Ground truth in the database: failures and the repairs that followed.
    let mut failures = Vec::new();
    let mut maintenance = Vec::new();
    for (device, (_, device_id)) in fleet.devices.iter().zip(&device_ids) {
        for (mode, episodes) in device.kind.spec().modes.iter().zip(&device.episodes) {
            for episode in episodes {
                let window = fleet.config.start..fleet.config.end;
                if window.contains(&episode.failure_at) {
                    failures.push(ComponentRecord {
                        time: micros(episode.failure_at),
                        device_id: *device_id,
                        component: mode.component.into(),
                        detail: "customer_reported".into(),
                    });
                }
                if window.contains(&episode.repaired_at) {
                    maintenance.push(ComponentRecord {
                        time: micros(episode.repaired_at),
                        device_id: *device_id,
                        component: mode.component.into(),
                        detail: "replaced".into(),
                    });
                }
            }
        }
    }
    report.failures = store.insert_failures(&failures).await?;
    report.maintenance = store.insert_maintenance(&maintenance).await?;
    report.seconds = started.elapsed().as_secs_f64();
    report.readings_per_sec = report.readings as f64 / report.seconds;
    let rollup_started = Instant::now();
    store.refresh_rollup_now().await?;
    report.rollup_seconds = rollup_started.elapsed().as_secs_f64();
    Ok(report)
}
