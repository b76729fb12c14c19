//! Resolving device and metric names to ids: the bounded caches first, then the store,
//! registering new names within the rate limits.

use std::time::Instant;

use super::Writer;
use super::parse::{Parsed, Pending};
use crate::contract::RejectReason;
use crate::ingest::cache::{IdCache, RateLimit};
use crate::store::{Store, StoreError};

impl Writer {
    /// Resolves device and metric ids (registering new ones when configured, within the
    /// registration rate limits). Messages whose ids stay unknown become dead letters.
    pub(super) async fn resolve_ids(&mut self, batch: &mut [Pending]) -> Result<(), StoreError> {
        let now = Instant::now();
        let ingest = &self.settings.ingest;
        let mut device_lookups: Vec<String> = batch
            .iter()
            .filter_map(|p| p.parsed.device())
            .filter(|device| self.devices.needs_lookup(device, now))
            .map(str::to_string)
            .collect();
        device_lookups.sort_unstable();
        device_lookups.dedup();
        let store = &self.deps.store;
        let limited_devices = resolve_names(
            store,
            &mut self.devices,
            device_lookups,
            ingest.auto_register,
            &self.shared.new_devices,
            now,
            DeviceIds,
        )
        .await?;
        let mut metric_lookups: Vec<String> = batch
            .iter()
            .filter_map(|p| match &p.parsed {
                Parsed::Telemetry { message, .. } => {
                    Some(message.readings.iter().map(|r| r.metric.as_str()))
                }
                _ => None,
            })
            .flatten()
            .filter(|name| self.metrics.needs_lookup(name, now))
            .map(str::to_string)
            .collect();
        metric_lookups.sort_unstable();
        metric_lookups.dedup();
        let limited_metrics = resolve_names(
            store,
            &mut self.metrics,
            metric_lookups,
            ingest.open_metric_catalogue,
            &self.shared.new_metrics,
            now,
            MetricIds,
        )
        .await?;
        for pending in batch.iter_mut() {
            let Some(device) = pending.parsed.device().map(str::to_string) else {
                continue;
            };
            if self.devices.get(&device).is_none() {
                let (reason, detail) = unresolved(
                    "device",
                    &device,
                    &limited_devices,
                    (ingest.max_new_devices_per_minute, "new devices"),
                    RejectReason::UnknownDevice,
                );
                pending.parsed.reject(reason, detail);
                continue;
            }
            let unknown_metric = match &pending.parsed {
                Parsed::Telemetry { message, .. } => message
                    .readings
                    .iter()
                    .find(|r| self.metrics.get(&r.metric).is_none())
                    .map(|r| r.metric.clone()),
                _ => None,
            };
            if let Some(metric) = unknown_metric {
                let (reason, detail) = unresolved(
                    "metric",
                    &metric,
                    &limited_metrics,
                    (ingest.max_new_metrics_per_minute, "new metric names"),
                    RejectReason::UnknownMetric,
                );
                pending.parsed.reject(reason, detail);
            }
        }
        Ok(())
    }
}

/// A registry of names with surrogate ids.
trait NameTable {
    type Id: Copy + Send;
    fn lookup(
        store: &Store,
        names: &[String],
    ) -> impl Future<Output = Result<Vec<(String, Self::Id)>, StoreError>> + Send;
    fn register(
        store: &Store,
        names: &[String],
    ) -> impl Future<Output = Result<Vec<(String, Self::Id)>, StoreError>> + Send;
}

struct DeviceIds;
struct MetricIds;

impl NameTable for DeviceIds {
    type Id = i32;
    fn lookup(
        store: &Store,
        names: &[String],
    ) -> impl Future<Output = Result<Vec<(String, i32)>, StoreError>> + Send {
        store.lookup_devices(names)
    }
    fn register(
        store: &Store,
        names: &[String],
    ) -> impl Future<Output = Result<Vec<(String, i32)>, StoreError>> + Send {
        store.register_devices(names)
    }
}

impl NameTable for MetricIds {
    type Id = i16;
    fn lookup(
        store: &Store,
        names: &[String],
    ) -> impl Future<Output = Result<Vec<(String, i16)>, StoreError>> + Send {
        store.lookup_metrics(names)
    }
    fn register(
        store: &Store,
        names: &[String],
    ) -> impl Future<Output = Result<Vec<(String, i16)>, StoreError>> + Send {
        store.register_metrics(names)
    }
}

/// Resolves `names` the cache could not answer: looks them up and, when `register`, adds
/// the missing ones within the rate budget. Returns the names left unregistered for lack
/// of budget; they are asked again with the next message that carries them.
async fn resolve_names<T: NameTable>(
    store: &Store,
    cache: &mut IdCache<T::Id>,
    names: Vec<String>,
    register: bool,
    budget: &RateLimit,
    now: Instant,
    _table: T,
) -> Result<Vec<String>, StoreError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut found = T::lookup(store, &names).await?;
    let mut limited = Vec::new();
    if register && found.len() < names.len() {
        let mut new = crate::store::missing_names(&names, &found);
        limited = new.split_off(budget.take(new.len()));
        if !new.is_empty() {
            found.extend(T::register(store, &new).await?);
        }
    }
    cache.learn(&names, found, now);
    for name in &limited {
        cache.forget_missing(name);
    }
    Ok(limited)
}

/// Why a name stayed without an id: the registration budget was spent on it (`limited`,
/// sorted), or registration is off for its kind (`unknown`).
fn unresolved(
    what: &str,
    name: &str,
    limited: &[String],
    budget: (u32, &str),
    unknown: RejectReason,
) -> (RejectReason, String) {
    if limited.binary_search_by(|l| l.as_str().cmp(name)).is_ok() {
        let (per_minute, new_names) = budget;
        (
            RejectReason::RegistrationLimited,
            format!("{what} `{name}`: more than {per_minute} {new_names} per minute"),
        )
    } else {
        (unknown, format!("{what} `{name}`"))
    }
}
