//! The `predict` stage of `serve`: every `predict.interval`, score the devices that have
//! new data with the active model of each failure mode, and write `predictions` with the
//! top contributing factors in words. A model activated in `models` (by `forewarn train`,
//! scheduled retraining or by hand) is picked up on the next cycle, without a restart.
//!
//! Features are "as of" the newest complete hour of each device (event time), computed by
//! [`crate::features::compute`] over a lookback loaded from the store: the same function
//! training uses over whole histories.

pub mod config;
mod models;
mod scoring;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::artifact::ArtifactError;
use crate::features::{self, DAY_MICROS, FeatureSpec, HOUR_MICROS};
use crate::history;
use crate::observability::Metrics;
use crate::shutdown::Shutdown;
use crate::stage::{FirstTick, Periodic, Stage, StageDeps};
use crate::store::{DeviceSummary, Store, StoreError};

pub use models::{ActiveMode, ActiveModels, ensure_default_model};
pub use scoring::{ScoreTimes, live_inputs, lookback_spec, score_kind};

#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Features(#[from] features::FeatureError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

#[derive(Debug, Clone)]
pub struct PredictSettings {
    pub interval: Duration,
    pub top_factors: usize,
    /// Registered and activated for modes without an active model.
    pub default_model: Option<PathBuf>,
}

/// What one cycle did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CycleReport {
    /// The fleet's newest hour (event time): what devices are scored as of.
    pub as_of: Option<chrono::DateTime<chrono::Utc>>,
    pub devices: usize,
    pub predictions: usize,
    pub above_threshold: usize,
    /// Devices whose telemetry has stopped (not scored), of kinds with a model.
    pub stale: usize,
    /// Of those, marked stale in this cycle.
    pub newly_stale: usize,
    /// Stale devices whose telemetry came back in this cycle.
    pub reporting_again: usize,
    /// Devices not scored because a component is broken.
    pub broken: usize,
    /// Devices of kinds without an active model.
    pub without_model: usize,
    /// Kinds whose loading, scoring or writing failed (the others were scored).
    pub failed_kinds: Vec<String>,
    /// Models, devices, the fleet's clock; the rollup refresh (plain PostgreSQL).
    pub prepare_seconds: f64,
    pub load_rollups_seconds: f64,
    /// Day buckets: kept ones filtered, covered days computed from the hourly rows, and
    /// days held for no device read from the database (the first cycle).
    pub load_days_seconds: f64,
    /// Day-bucket rows read from the database (the others were kept or computed from the
    /// hourly rows): all of them on a scorer's first cycle, those of new devices later.
    pub day_rows_read: usize,
    pub load_events_seconds: f64,
    /// Maintenance, failures, metric catalogue.
    pub load_history_seconds: f64,
    pub features_seconds: f64,
    /// Probabilities and top factors.
    pub scoring_seconds: f64,
    /// Predictions and stale marks.
    pub write_seconds: f64,
    /// The whole cycle, as the caller measured it (the parts above, plus deciding which
    /// devices are examples).
    pub wall_seconds: f64,
}

impl CycleReport {
    pub fn load_seconds(&self) -> f64 {
        self.load_rollups_seconds
            + self.load_days_seconds
            + self.load_events_seconds
            + self.load_history_seconds
    }

    pub fn total_seconds(&self) -> f64 {
        self.prepare_seconds
            + self.load_seconds()
            + self.features_seconds
            + self.scoring_seconds
            + self.write_seconds
    }
}

/// Scoring state across cycles: the as-of time each device was last scored at.
pub struct Scorer {
    pub models: ActiveModels,
    scored_until: HashMap<i32, i64>,
    resumed: bool,
    metrics: Arc<Metrics>,
    /// The fleet's newest hour at the last cycle: the next one looks only from there.
    clock: Option<i64>,
    /// Kinds with devices and no active model, already logged (once, not every cycle).
    kinds_without_model: HashSet<String>,
    /// Per kind, the day buckets of its lookback, kept across cycles ([`DailyCache`]).
    daily: HashMap<String, DailyCache>,
}

/// Day buckets of one kind's lookback, kept across cycles. Features read only complete days
/// before the as-of day, and a complete day's hourly rows rarely change, so each cycle
/// - computes in memory, from the hourly rows it loads anyway, every complete day those
///   cover (the day just ended, in the first hours of a day: late rows up to then count);
/// - keeps the older days from earlier cycles;
/// - reads from the database ([`Store::daily_rows`]) only days it holds for no device yet (the
///   first cycle, or after a pause that skipped a day's first hours), and every day for
///   devices new to the kind or reporting again after being marked stale (what a device
///   that was offline uploads late lands in past days).
///
/// So no cycle in a running scorer aggregates the whole lookback again: at 100,000 devices
/// that was the first cycle of every day. Late rows of a past day from a device that was
/// never marked stale reach the features when the scorer restarts (training sees them).
struct DailyCache {
    lookback: i64,
    /// Sorted.
    devices: Vec<i32>,
    /// Complete days held, `[first, end)` (µs of day starts).
    first: i64,
    end: i64,
    rows: Vec<features::DailyRow>,
}

impl DailyCache {
    /// The day buckets of `devices` (sorted) for the complete days of the lookback before
    /// `as_of` (`daily_lookback` µs): from `cache` where it holds them (not for `reread`),
    /// from `hourly` (loaded from `hourly_from`) where they cover a whole day, from the
    /// store otherwise.
    #[allow(clippy::too_many_arguments)]
    async fn update(
        cache: Option<DailyCache>,
        store: &Store,
        devices: Vec<i32>,
        reread: &HashSet<i32>,
        daily_lookback: i64,
        as_of: i64,
        hourly: &[features::HourlyRow],
        hourly_from: i64,
    ) -> Result<(DailyCache, usize), PredictError> {
        let first = features::day_start(as_of - daily_lookback);
        let end = features::day_start(as_of);
        // The first whole day the hourly rows cover.
        let covered = features::day_start(hourly_from + DAY_MICROS - 1).clamp(first, end);
        let cache = cache.filter(|c| c.lookback == daily_lookback);
        let (mut rows, held, new_devices) = match cache {
            Some(cache) => {
                let held = (cache.first.max(first), cache.end.min(covered));
                let same_devices = cache.devices == devices;
                let mut rows = cache.rows;
                if same_devices && reread.is_empty() {
                    rows.retain(|r| r.day >= held.0 && r.day < held.1);
                } else {
                    let wanted: HashSet<i32> = devices.iter().copied().collect();
                    rows.retain(|r| {
                        r.day >= held.0
                            && r.day < held.1
                            && wanted.contains(&r.device_id)
                            && !reread.contains(&r.device_id)
                    });
                }
                let known: HashSet<i32> = cache.devices.into_iter().collect();
                let new_devices: Vec<i32> = devices
                    .iter()
                    .copied()
                    .filter(|d| !known.contains(d) || reread.contains(d))
                    .collect();
                (rows, held, new_devices)
            }
            None => (Vec::new(), (covered, covered), Vec::new()),
        };
        let load = |ids: Vec<i32>, from: i64, to: i64| async move {
            if ids.is_empty() || from >= to {
                return Ok::<_, PredictError>(Vec::new());
            }
            Ok(store
                .daily_rows(
                    &ids,
                    history::micros_to_time(from),
                    history::micros_to_time(to),
                )
                .await?)
        };
        let (held_from, held_to) = if held.0 < held.1 {
            held
        } else {
            (covered, covered)
        };
        let kept = rows.len();
        // Days no device has yet, before and after what is held.
        rows.extend(load(devices.clone(), first, held_from).await?);
        rows.extend(load(devices.clone(), held_to, covered).await?);
        // Devices new to the kind: every held day.
        rows.extend(load(new_devices, held_from, held_to).await?);
        let read = rows.len() - kept;
        let computed = rows.len();
        rows.extend(features::day_buckets(hourly, covered..end));
        tracing::debug!(
            kept,
            read = computed - kept,
            computed = rows.len() - computed,
            days_from_hourly = (end - covered) / DAY_MICROS,
            "day buckets"
        );
        let cache = DailyCache {
            lookback: daily_lookback,
            devices,
            first,
            end,
            rows,
        };
        Ok((cache, read))
    }
}

impl Default for Scorer {
    fn default() -> Scorer {
        Scorer::new(Metrics::new())
    }
}

/// One kind's modes: (name, version, model).
type KindModes = Vec<(String, String, ActiveMode)>;

impl Scorer {
    pub fn new(metrics: Arc<Metrics>) -> Scorer {
        Scorer {
            models: ActiveModels::default(),
            scored_until: HashMap::new(),
            resumed: false,
            metrics,
            clock: None,
            kinds_without_model: HashSet::new(),
            daily: HashMap::new(),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Brings the models in line with `models.active` ([`ActiveModels::refresh`]).
    pub async fn refresh_models(&mut self, store: &Store) -> Result<Vec<String>, PredictError> {
        self.models.refresh(store, &self.metrics).await
    }

    /// One cycle: refresh models, find the fleet's newest hour, and for each kind load its
    /// lookback once, decide which devices are examples at that hour (the training rule,
    /// [`history::Examples`]), mark the silent ones stale, score the rest, write. A kind
    /// that fails is logged and counted; the others are still scored.
    pub async fn cycle(
        &mut self,
        store: &Store,
        top_factors: usize,
    ) -> Result<CycleReport, PredictError> {
        let preparing = Instant::now();
        let mut report = CycleReport::default();
        self.models.refresh(store, &self.metrics).await?;
        let model_info = &self.metrics.predict.model_info;
        model_info.clear();
        for (mode, version) in self.models.versions() {
            model_info
                .get_or_create(&vec![("failure_mode", mode), ("version", version)])
                .set(1);
        }
        if !self.resumed {
            for (device, time) in store.newest_prediction_times().await? {
                self.scored_until.insert(device, time.timestamp_micros());
            }
            self.resumed = true;
        }
        store.refresh_rollup_now().await?;
        // The clock never goes back; a day of slack for hours refreshed late.
        // The clock never goes back: only buckets from its hour on are read (the BRIN index
        // on `bucket` reads the newest pages). The first cycle looks from two days before the wall clock
        // first, which a live fleet has data in, and reads everything only when that finds
        // nothing (a replay, an import): the answer is the same, only the reading differs.
        let since = self.clock.map_or_else(
            || chrono::Utc::now() - chrono::Duration::days(2),
            history::micros_to_time,
        );
        let newest = match store.newest_rollup_hour(Some(since)).await? {
            Some(newest) => Some(newest),
            None if self.clock.is_none() => store.newest_rollup_hour(None).await?,
            None => None,
        };
        let Some(newest) = newest else {
            return Ok(report);
        };
        let as_of = newest.timestamp_micros().div_euclid(HOUR_MICROS) * HOUR_MICROS;
        self.clock = Some(self.clock.map_or(as_of, |c| c.max(as_of)));
        let as_of = self.clock.unwrap_or(as_of);
        report.as_of = Some(history::micros_to_time(as_of));
        let devices = store.device_summaries(None).await?;
        let mut by_kind: HashMap<String, Vec<DeviceSummary>> = HashMap::new();
        for device in devices {
            by_kind
                .entry(device.info.kind.clone())
                .or_default()
                .push(device);
        }
        let mut kinds: Vec<_> = by_kind.into_iter().collect();
        kinds.sort_by(|a, b| a.0.cmp(&b.0));
        report.prepare_seconds = preparing.elapsed().as_secs_f64();
        for (kind, kind_devices) in kinds {
            let modes = self.models.modes_of(&kind);
            if modes.is_empty() {
                report.without_model += kind_devices.len();
                if self.kinds_without_model.insert(kind.clone()) {
                    tracing::warn!(kind = %kind, devices = kind_devices.len(), "no active model for this kind: its devices are not scored");
                }
                continue;
            }
            self.kinds_without_model.remove(&kind);
            if let Err(error) = self
                .score_kind_cycle(
                    store,
                    &kind,
                    &kind_devices,
                    modes,
                    as_of,
                    top_factors,
                    &mut report,
                )
                .await
            {
                tracing::warn!(kind = %kind, error = %error, "scoring this kind failed: the other kinds are scored");
                self.metrics
                    .predict
                    .kind_errors
                    .get_or_create(&vec![("kind", kind.clone())])
                    .inc();
                report.failed_kinds.push(kind);
            }
        }
        let predict = &self.metrics.predict;
        predict.predictions.inc_by(report.predictions as u64);
        predict
            .last_cycle_predictions
            .set(report.predictions as i64);
        predict.stale_devices.set(report.stale as i64);
        predict.broken_devices.set(report.broken as i64);
        predict
            .devices_without_model
            .set(report.without_model as i64);
        Ok(report)
    }

    /// One kind of one cycle: load its lookback as of `as_of`, apply the training rule,
    /// mark stale devices, score, write.
    #[allow(clippy::too_many_arguments)]
    async fn score_kind_cycle(
        &mut self,
        store: &Store,
        kind: &str,
        devices: &[DeviceSummary],
        modes: KindModes,
        as_of: i64,
        top_factors: usize,
        report: &mut CycleReport,
    ) -> Result<(), PredictError> {
        let specs: Vec<&FeatureSpec> = modes.iter().map(|(_, _, m)| &m.model().spec).collect();
        let lookback = lookback_spec(&specs);
        // The hour of `as_of` itself is loaded too: it tells a device that reports again
        // (no longer stale) from one still silent, though features use only earlier hours.
        let device_ids: Vec<i32> = devices.iter().map(|d| d.id).collect();
        let (mut inputs, times) = history::load_inputs_timed(
            store,
            devices,
            &lookback,
            history::micros_to_time(as_of),
            history::micros_to_time(as_of + HOUR_MICROS),
            Some(Vec::new()),
        )
        .await?;
        let mut sorted_ids = device_ids;
        sorted_ids.sort_unstable();
        // Which devices reported when: the training rule, and the day cache's re-reads.
        let examples = history::Examples::new(&inputs, &lookback);
        let days = Instant::now();
        // Marked stale and reporting again: what it uploads late lands in past days.
        let reread: HashSet<i32> = devices
            .iter()
            .filter(|d| d.stale_since.is_some() && examples.newest_hour(d.id).is_some())
            .map(|d| d.id)
            .collect();
        let (mut cache, day_rows_read) = DailyCache::update(
            self.daily.remove(kind),
            store,
            sorted_ids,
            &reread,
            lookback.daily_lookback_micros(),
            as_of,
            &inputs.hourly,
            as_of - lookback.hourly_lookback_micros(),
        )
        .await?;
        report.load_days_seconds += days.elapsed().as_secs_f64();
        report.day_rows_read += day_rows_read;
        inputs.daily = std::mem::take(&mut cache.rows);
        let daily_cache = |rows| DailyCache { rows, ..cache };
        report.load_rollups_seconds += times.rollups_seconds;
        report.load_events_seconds += times.events_seconds;
        report.load_history_seconds += times.history_seconds;

        let staleness = lookback.hourly_staleness_hours * HOUR_MICROS;
        let mut requests = Vec::new();
        let mut newly_stale = Vec::new();
        let mut stale_unknown = Vec::new();
        let mut reporting_again = Vec::new();
        for device in devices {
            let newest = examples.newest_hour(device.id);
            let silent = newest.is_none_or(|hour| hour < as_of - staleness);
            if silent {
                match (device.stale_since, newest) {
                    (Some(_), _) => report.stale += 1,
                    (None, Some(hour)) => newly_stale.push((device, hour + HOUR_MICROS)),
                    (None, None) => stale_unknown.push(device.id),
                }
                continue;
            }
            if device.stale_since.is_some() {
                reporting_again.push(device);
            }
            match examples.check(device.id, as_of) {
                Ok(()) => {
                    if self.scored_until.get(&device.id).is_none_or(|&t| t < as_of) {
                        requests.push((device.id, as_of));
                    }
                }
                Err(history::NotAnExample::Broken) => report.broken += 1,
                // Reporting again after a silence: scored once an hour before `as_of` has
                // telemetry, like a training example.
                Err(history::NotAnExample::Silent) => {}
            }
        }
        // Silent for longer than the lookback: when did they stop (if they ever reported)?
        if !stale_unknown.is_empty() {
            let by_id: HashMap<i32, &DeviceSummary> = devices.iter().map(|d| (d.id, d)).collect();
            let newest = match store.newest_rollup_hours_of(&stale_unknown).await {
                Ok(newest) => newest,
                Err(error) => {
                    self.daily
                        .insert(kind.to_string(), daily_cache(inputs.daily));
                    return Err(error.into());
                }
            };
            for (id, hour) in newest {
                newly_stale.push((by_id[&id], hour.timestamp_micros() + HOUR_MICROS));
            }
        }
        report.stale += newly_stale.len();
        report.newly_stale += newly_stale.len();
        report.reporting_again += reporting_again.len();
        for (device, since) in newly_stale.iter().take(STALE_LOG_LINES) {
            tracing::warn!(kind = %kind, device = %device.external_id, silent_since = %history::micros_to_time(*since), "telemetry stopped: device marked stale, not scored");
        }
        if newly_stale.len() > STALE_LOG_LINES {
            tracing::warn!(kind = %kind, devices = newly_stale.len(), "telemetry stopped: devices marked stale, not scored");
        }
        for device in reporting_again.iter().take(STALE_LOG_LINES) {
            tracing::info!(kind = %kind, device = %device.external_id, "telemetry back: device no longer stale");
        }
        let writing = Instant::now();
        let marks: Vec<(i32, chrono::DateTime<chrono::Utc>)> = newly_stale
            .iter()
            .map(|(d, since)| (d.id, history::micros_to_time(*since)))
            .collect();
        let reporting_again_ids: Vec<i32> = reporting_again.iter().map(|d| d.id).collect();
        if let Err(error) = store.set_stale(&marks, &reporting_again_ids).await {
            self.daily
                .insert(kind.to_string(), daily_cache(inputs.daily));
            return Err(error.into());
        }
        report.write_seconds += writing.elapsed().as_secs_f64();
        if requests.is_empty() {
            self.daily
                .insert(kind.to_string(), daily_cache(inputs.daily));
            return Ok(());
        }

        // The day buckets come back whether scoring worked or not: a failed cycle must not
        // cost the next one the whole lookback.
        let (scored, daily) = tokio::task::spawn_blocking(move || {
            let scored = score_kind(&inputs, &requests, &modes, top_factors);
            (scored, inputs.daily)
        })
        .await?;
        self.daily.insert(kind.to_string(), daily_cache(daily));
        let (rows, scored) = scored?;
        report.features_seconds += scored.features_seconds;
        report.scoring_seconds += scored.scoring_seconds;

        let writing = Instant::now();
        for chunk in rows.chunks(PREDICTIONS_PER_WRITE) {
            store.insert_predictions(chunk).await?;
        }
        report.write_seconds += writing.elapsed().as_secs_f64();
        let mut scored_devices = HashSet::new();
        for row in &rows {
            let entry = self.scored_until.entry(row.device_id).or_insert(i64::MIN);
            *entry = (*entry).max(row.time.timestamp_micros());
            scored_devices.insert(row.device_id);
        }
        report.devices += scored_devices.len();
        report.predictions += rows.len();
        report.above_threshold += rows.iter().filter(|r| r.above_threshold).count();
        Ok(())
    }
}

/// Newly stale devices named one per log line, per kind and cycle (then one summary line).
const STALE_LOG_LINES: usize = 10;

/// Predictions per insert statement.
const PREDICTIONS_PER_WRITE: usize = 20_000;

/// Runs cycles every `interval` until shutdown. A failed cycle is logged and retried on
/// the next tick: scoring is idempotent (one row per device, mode, time and model).
impl Stage for PredictSettings {
    const NAME: &'static str = "predict";
    type Error = PredictError;

    fn run(
        self,
        deps: StageDeps,
        shutdown: Shutdown,
    ) -> impl std::future::Future<Output = Result<(), PredictError>> + Send + 'static {
        run(self, deps, shutdown)
    }
}

/// Scores every `settings.interval` until `shutdown`; a failed cycle is logged and the
/// next tick tries again.
pub async fn run(
    settings: PredictSettings,
    deps: StageDeps,
    shutdown: Shutdown,
) -> Result<(), PredictError> {
    let StageDeps { store, metrics } = deps;
    if let Some(path) = &settings.default_model
        && let Err(error) = ensure_default_model(&store, path).await
    {
        tracing::warn!(error = %error, "default model not registered");
    }
    let mut scorer = Scorer::new(metrics.clone());
    let mut ticks = Periodic::new(settings.interval, FirstTick::Immediately, shutdown);
    while ticks.next().await {
        let started = std::time::Instant::now();
        let cycle = scorer.cycle(&store, settings.top_factors).await;
        metrics
            .predict
            .cycle_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics
            .predict
            .cycles
            .get_or_create(&vec![(
                "outcome",
                if cycle.is_ok() { "ok" } else { "failed" },
            )])
            .inc();
        match cycle {
            Ok(report) if report.predictions > 0 || report.newly_stale > 0 => tracing::info!(
                devices = report.devices,
                predictions = report.predictions,
                above_threshold = report.above_threshold,
                stale = report.stale,
                broken = report.broken,
                without_model = report.without_model,
                load_seconds = report.load_seconds(),
                features_seconds = report.features_seconds,
                scoring_seconds = report.scoring_seconds,
                write_seconds = report.write_seconds,
                "prediction cycle"
            ),
            Ok(_) => tracing::debug!("prediction cycle: nothing new"),
            Err(error) => tracing::warn!(error = %error, "prediction cycle failed"),
        }
    }
    Ok(())
}
