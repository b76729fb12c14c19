//! The fleet and its sample streams. A device's readings are a function of its kind's
//! tables (`fleet`), its own baselines, its usage rhythm, the health of its components
//! (`degradation`), the season, noise and the artefacts real fleets have (missing samples,
//! outliers, offline periods, clock skew). Deterministic for a seed: every device draws from
//! its own generator seeded from (seed, device index).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Poisson};

use crate::degradation::{DAY_MICROS, Episode, HOUR_MICROS, episodes};
use crate::fleet::{FailureModeSpec, Kind, KindSpec, Usage};
use crate::people::{self, Customer, Technician};

/// Imperfections of real telemetry. Transport artefacts (duplicates, reordering,
/// malformed payloads) apply only where there is a transport (`live`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Artefacts {
    /// Share of samples not sent at all.
    pub missing_sample_rate: f64,
    /// Share of single metrics missing from a sample.
    pub missing_metric_rate: f64,
    pub outlier_rate: f64,
    /// Offline periods per device per 30 days (1–12 h each).
    pub offline_per_30_days: f64,
    /// Largest device clock error (seconds, either way).
    pub max_clock_skew_secs: f64,
    pub duplicate_rate: f64,
    pub out_of_order_rate: f64,
    pub malformed_rate: f64,
}

impl Default for Artefacts {
    fn default() -> Self {
        Artefacts {
            missing_sample_rate: 0.01,
            missing_metric_rate: 0.005,
            outlier_rate: 0.001,
            offline_per_30_days: 1.0,
            max_clock_skew_secs: 30.0,
            duplicate_rate: 0.002,
            out_of_order_rate: 0.002,
            malformed_rate: 0.0,
        }
    }
}

impl Artefacts {
    /// Clean data (benchmarks, exact-count tests).
    pub fn none() -> Artefacts {
        Artefacts {
            missing_sample_rate: 0.0,
            missing_metric_rate: 0.0,
            outlier_rate: 0.0,
            offline_per_30_days: 0.0,
            max_clock_skew_secs: 0.0,
            duplicate_rate: 0.0,
            out_of_order_rate: 0.0,
            malformed_rate: 0.0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub devices: usize,
    /// Simulated time span, epoch µs.
    pub start: i64,
    pub end: i64,
    /// Sampling interval (µs); 10 minutes by default.
    pub interval: i64,
    pub artefacts: Artefacts,
    /// Multiplies every mode's nuisance-code rate ([`nuisance_per_day`]); 0 turns nuisance
    /// codes off. Device behaviour, not an artefact: `--clean` leaves it on.
    pub nuisance_scale: f64,
    /// Multiplies every mode's rate of degradation onsets (divides
    /// `mean_days_to_onset`): `4` gives four times the failures. For small fleets whose
    /// natural rate leaves too few failures to learn from or to judge; 1 is the fleet as
    /// documented.
    pub failure_scale: f64,
}

/// How often a healthy device raises a mode's warning code anyway, per device-day: a
/// clogged filter, a cold morning, a hot afternoon, a door left open. Real fleets are full
/// of these; a code that only degrading parts raise would hand the model the answer.
/// Each nuisance episode is a burst of 1–3 events on consecutive samples.
pub fn nuisance_per_day(code: &str) -> f64 {
    match code {
        "E31" => 1.0 / 60.0,    // drum imbalance: an unbalanced load
        "E21" => 1.0 / 30.0,    // drain timeout: a clogged filter
        "F12" => 1.0 / 45.0,    // compressor overrun: a warm room, a door left open
        "F07" => 1.0 / 90.0,    // evaporator temperature high: defrost cycles
        "P0562" => 1.0 / 40.0,  // system voltage low: cold mornings, short trips
        "P0217" => 1.0 / 120.0, // over-temperature: towing, hills in summer
        "S03" => 1.0 / 50.0,    // storage write retry: a busy card
        "T01" => 1.0 / 40.0,    // thermal throttling: a sunny wall
        "V45" => 1.0 / 60.0,    // vibration alarm: cavitation at start-up
        "L12" => 1.0 / 90.0,    // seal leak suspected: a pressure transient
        _ => 0.0,
    }
}

/// A simulated device and its hidden truth.
#[derive(Debug, Clone)]
pub struct Device {
    pub index: usize,
    pub external_id: String,
    pub kind: Kind,
    pub model: &'static str,
    pub customer_index: usize,
    pub latitude: f64,
    pub longitude: f64,
    pub installed_at: i64,
    /// Per metric: this unit's healthy baseline.
    pub baselines: Vec<f64>,
    /// Usage intensity relative to the kind's average.
    pub usage_scale: f64,
    pub clock_skew_micros: i64,
    /// Buffers readings while offline and sends them as one array when back.
    pub buffers_offline: bool,
    /// Per failure mode (same order as the kind's modes): its episodes.
    pub episodes: Vec<Vec<Episode>>,
    pub offline: Vec<(i64, i64)>,
    /// Hours east of UTC (standard time) of the device's city.
    pub utc_offset_hours: i64,
}

pub struct Fleet {
    pub config: SimConfig,
    pub devices: Vec<Device>,
    pub customers: Vec<Customer>,
    pub technicians: Vec<Technician>,
}

/// One ground-truth failure.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TruthRecord {
    pub device: String,
    pub kind: Kind,
    pub component: String,
    pub onset: chrono::DateTime<chrono::Utc>,
    pub failure_at: chrono::DateTime<chrono::Utc>,
    pub prevented: bool,
    /// Gave almost no warning (0.5–6 h).
    #[serde(default)]
    pub sudden: bool,
}

/// An event a device raises.
#[derive(Debug, Clone, PartialEq)]
pub struct SimEvent {
    pub time: i64,
    pub code: &'static str,
    pub severity: forewarn::contract::Severity,
    pub message: String,
}

/// What a device sends at one sampling instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// True time of the sample.
    pub time: i64,
    /// Time the device's clock stamps (true time + skew).
    pub reported_time: i64,
    pub seq: u64,
    pub metrics: Vec<(&'static str, f64)>,
    pub events: Vec<SimEvent>,
    /// The device is offline at this instant (nothing is sent now; buffering devices
    /// send it later).
    pub offline: bool,
}

fn device_rng(seed: u64, index: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn utc_offset(timezone: &str) -> i64 {
    if timezone == "Europe/Kyiv" { 2 } else { 1 }
}

impl Fleet {
    /// Builds the fleet: customers, technicians, devices with their hidden degradation.
    pub fn build(config: SimConfig) -> Fleet {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let n_customers = (config.devices * 2).div_ceil(3).max(1);
        let customers: Vec<Customer> = (0..n_customers)
            .map(|i| people::customer(i, &mut rng))
            .collect();
        let technicians = people::technicians(&mut rng);
        let mut devices = Vec::with_capacity(config.devices);
        for index in 0..config.devices {
            // Mix: washers and fridges most, then cars, cameras, pumps.
            let kind = match index % 10 {
                0..=2 => Kind::Washer,
                3..=5 => Kind::Fridge,
                6 | 7 => Kind::Car,
                8 => Kind::Camera,
                _ => Kind::Pump,
            };
            let spec = kind.spec();
            let mut device_rng = device_rng(config.seed, index);
            let customer_index = rng.gen_range(0..n_customers);
            let customer = &customers[customer_index];
            // Installed up to six years before the simulation starts.
            let installed_at =
                config.start - device_rng.gen_range(30 * DAY_MICROS..6 * 365 * DAY_MICROS);
            let baselines = spec
                .metrics
                .iter()
                .map(|m| {
                    m.baseline
                        + m.unit_spread
                            * Normal::new(0.0, 1.0)
                                .expect("unit normal")
                                .sample(&mut device_rng)
                })
                .collect();
            // Degradation may already be under way when the simulation starts: draw from
            // the installation, keep episodes that matter inside the window.
            let episodes = spec
                .modes
                .iter()
                .map(|mode| {
                    let scaled = FailureModeSpec {
                        mean_days_to_onset: mode.mean_days_to_onset / config.failure_scale,
                        ..*mode
                    };
                    episodes(&scaled, installed_at, config.end, &mut device_rng)
                        .into_iter()
                        .filter(|e| e.repaired_at > config.start)
                        .collect()
                })
                .collect();
            let mut offline = Vec::new();
            let window_days = (config.end - config.start) as f64 / DAY_MICROS as f64;
            let expected = config.artefacts.offline_per_30_days * window_days / 30.0;
            if expected > 0.0 {
                let n_offline = Poisson::new(expected)
                    .map(|p| p.sample(&mut device_rng) as usize)
                    .unwrap_or(0);
                for _ in 0..n_offline {
                    let from = device_rng.gen_range(config.start..config.end.max(config.start + 1));
                    offline.push((
                        from,
                        from + device_rng.gen_range(HOUR_MICROS..12 * HOUR_MICROS),
                    ));
                }
                offline.sort_unstable();
            }
            let skew = config.artefacts.max_clock_skew_secs;
            let clock_skew_micros = if skew > 0.0 {
                (device_rng.gen_range(-skew..skew) * 1e6) as i64
            } else {
                0
            };
            devices.push(Device {
                index,
                external_id: format!("{}-{index:05}", kind.prefix()),
                kind,
                model: spec.models[device_rng.gen_range(0..spec.models.len())],
                customer_index,
                latitude: customer.latitude,
                longitude: customer.longitude,
                installed_at,
                baselines,
                usage_scale: device_rng.gen_range(0.6..1.5),
                clock_skew_micros,
                buffers_offline: device_rng.gen_bool(0.5),
                episodes,
                offline,
                utc_offset_hours: utc_offset(customer.timezone),
            });
        }
        Fleet {
            config,
            devices,
            customers,
            technicians,
        }
    }

    /// Failures inside the simulated window, in time order.
    pub fn truth(&self) -> Vec<TruthRecord> {
        let mut records = Vec::new();
        for device in &self.devices {
            truth_of(
                device,
                &device.episodes,
                self.config.start,
                self.config.end,
                &mut records,
            );
        }
        sort_truth(&mut records);
        records
    }

    /// The sample stream of one device, from the window's start to its end.
    pub fn stream(&self, device_index: usize) -> DeviceStream<'_> {
        let device = &self.devices[device_index];
        DeviceStream {
            device,
            spec: device.kind.spec(),
            config: &self.config,
            rng: device_rng(self.config.seed ^ 0xA5A5_A5A5, device.index),
            next_time: self.config.start,
            episodes: device.episodes.clone(),
            seq: 0,
            today: i64::MIN,
            active_windows: Vec::new(),
            // Failures before the window were announced before it.
            failures_announced: device
                .episodes
                .iter()
                .map(|eps| {
                    eps.iter()
                        .filter(|e| e.failure_at < self.config.start)
                        .count()
                })
                .collect(),
            uptime_since: self.config.start,
            nuisance_left: vec![0; device.episodes.len()],
        }
    }
}

/// Appends the failures of `device` (with these episodes) due in `[from, to)`, and those
/// from `from` on that a visit prevented (marked).
pub fn truth_of(
    device: &Device,
    episodes: &[Vec<Episode>],
    from: i64,
    to: i64,
    records: &mut Vec<TruthRecord>,
) {
    for (mode, episodes) in device.kind.spec().modes.iter().zip(episodes) {
        for episode in episodes {
            // A prevented failure is known as soon as the visit prevented it.
            if episode.failure_at >= from && (episode.failure_at < to || episode.prevented) {
                records.push(TruthRecord {
                    device: device.external_id.clone(),
                    kind: device.kind,
                    component: mode.component.to_string(),
                    onset: micros(episode.onset),
                    failure_at: micros(episode.failure_at),
                    prevented: episode.prevented,
                    sudden: episode.sudden,
                });
            }
        }
    }
}

/// Time order, then device.
pub fn sort_truth(records: &mut [TruthRecord]) {
    records.sort_by(|a, b| {
        a.failure_at
            .cmp(&b.failure_at)
            .then(a.device.cmp(&b.device))
    });
}

pub fn micros(time: i64) -> chrono::DateTime<chrono::Utc> {
    forewarn::contract::micros_to_datetime(time).unwrap_or_default()
}

/// Iterates a device's samples in time order.
pub struct DeviceStream<'a> {
    device: &'a Device,
    spec: &'static KindSpec,
    config: &'a SimConfig,
    rng: ChaCha8Rng,
    next_time: i64,
    /// The device's episodes as the field changed them: a technician's visit prevents a
    /// failure under way or ends a breakdown early ([`DeviceStream::visit`]).
    episodes: Vec<Vec<Episode>>,
    seq: u64,
    /// Local day (days since epoch) whose usage windows are in `active_windows`.
    today: i64,
    active_windows: Vec<(i64, i64)>,
    /// Per mode: how many failures have been announced with a critical event.
    failures_announced: Vec<usize>,
    uptime_since: i64,
    /// Per mode: nuisance events still to come in the current burst.
    nuisance_left: Vec<u8>,
}

/// How much wear a technician sees: a component whose health index has reached this is
/// found worn and replaced (below it the part still looks healthy).
pub const VISIBLE_WEAR: f64 = 0.02;

/// What a technician's visit found, and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisitFinding {
    /// The component was wearing out: replaced before it failed (a prevented failure).
    Prevented(&'static str),
    /// The component had failed: repaired now, not days later.
    Repaired(&'static str),
    /// Nothing wrong with what the technician checked.
    NothingFound,
}

impl DeviceStream<'_> {
    /// A technician visits at `at` about `component` (`None`: whatever is wrong). A broken
    /// component is plain to see and repaired; the component asked about is replaced when
    /// its wear shows ([`VISIBLE_WEAR`]), which prevents its failure; otherwise nothing is
    /// found. Only samples after `at` change.
    pub fn visit(&mut self, at: i64, component: Option<&str>) -> VisitFinding {
        let modes = self.spec.modes;
        for (mode_idx, episodes) in self.episodes.iter_mut().enumerate() {
            if let Some(episode) = episodes.iter_mut().find(|e| e.is_broken(at)) {
                episode.repaired_at = at;
                return VisitFinding::Repaired(modes[mode_idx].component);
            }
        }
        let checked: Vec<usize> =
            match component.and_then(|c| modes.iter().position(|m| m.component == c)) {
                Some(mode_idx) => vec![mode_idx],
                None => (0..modes.len()).collect(),
            };
        let worn = checked
            .into_iter()
            .map(|mode_idx| {
                (
                    mode_idx,
                    crate::degradation::health_at(&self.episodes[mode_idx], at),
                )
            })
            .filter(|(_, health)| *health >= VISIBLE_WEAR)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((mode_idx, _)) = worn
            && let Some(episode) = self.episodes[mode_idx]
                .iter_mut()
                .find(|e| e.onset <= at && at < e.failure_at)
        {
            episode.repaired_at = at;
            episode.prevented = true;
            return VisitFinding::Prevented(modes[mode_idx].component);
        }
        VisitFinding::NothingFound
    }

    /// The device's failures due in `[from, to)` as the field left them.
    pub fn truth(&self, from: i64, to: i64, records: &mut Vec<TruthRecord>) {
        truth_of(self.device, &self.episodes, from, to, records);
    }

    pub fn device(&self) -> &Device {
        self.device
    }
}

impl DeviceStream<'_> {
    /// Draws the day's cycles or trips (local time), preferring mornings and evenings.
    fn plan_day(&mut self, local_day: i64) {
        self.today = local_day;
        self.active_windows.clear();
        let (per_day, hours) = match self.spec.usage {
            Usage::Cycles {
                cycles_per_day,
                cycle_hours,
            } => (cycles_per_day, cycle_hours),
            Usage::Trips {
                trips_per_day,
                trip_hours,
            } => (trips_per_day, trip_hours),
            Usage::Continuous | Usage::Flat => return,
        };
        let weekday = (local_day + 3).rem_euclid(7); // 0 = Monday (1970-01-01 was a Thursday)
        let weekend_factor = if weekday >= 5 { 1.4 } else { 1.0 };
        let mean = per_day * self.device.usage_scale * weekend_factor;
        let n = Poisson::new(mean)
            .map(|p| p.sample(&mut self.rng) as usize)
            .unwrap_or(0);
        let offset = self.device.utc_offset_hours * HOUR_MICROS;
        for _ in 0..n {
            let peak: f64 = if self.rng.gen_bool(0.45) { 8.0 } else { 18.5 };
            let hour = (peak + Normal::new(0.0, 1.8).expect("normal").sample(&mut self.rng))
                .clamp(5.0, 23.0);
            let start = local_day * DAY_MICROS - offset + (hour * HOUR_MICROS as f64) as i64;
            let length = (hours * self.rng.gen_range(0.7..1.3) * HOUR_MICROS as f64) as i64;
            self.active_windows.push((start, start + length));
        }
    }

    fn ambient(&self, t: i64) -> f64 {
        let day_of_year = (t / DAY_MICROS).rem_euclid(365) as f64;
        let local_hour = ((t / HOUR_MICROS) + self.device.utc_offset_hours).rem_euclid(24) as f64;
        let season = -11.0 * (2.0 * std::f64::consts::PI * (day_of_year - 15.0) / 365.0).cos();
        let daily = 4.0 * (2.0 * std::f64::consts::PI * (local_hour - 9.0) / 24.0).sin();
        9.0 + season + daily
    }
}

impl Iterator for DeviceStream<'_> {
    type Item = Sample;

    fn next(&mut self) -> Option<Sample> {
        let t = self.next_time;
        if t >= self.config.end {
            return None;
        }
        self.next_time += self.config.interval;
        let artefacts = &self.config.artefacts;
        let device = self.device;
        let spec = self.spec;
        let local_day = (t + device.utc_offset_hours * HOUR_MICROS).div_euclid(DAY_MICROS);
        if local_day != self.today {
            self.plan_day(local_day);
            // Yesterday's late cycles can run past midnight; keep it simple: windows of
            // the new day only.
        }
        let health: Vec<f64> = self
            .episodes
            .iter()
            .map(|eps| crate::degradation::health_at(eps, t))
            .collect();
        let broken: Vec<bool> = self
            .episodes
            .iter()
            .map(|eps| eps.iter().any(|e| e.is_broken(t)))
            .collect();
        let active = match spec.usage {
            Usage::Continuous | Usage::Flat => true,
            _ => self
                .active_windows
                .iter()
                .any(|(from, to)| t >= *from && t < *to),
        };
        // A washer with a broken component does not complete cycles; a car with a dead
        // battery does not start.
        let disabled = broken.iter().any(|b| *b)
            && matches!(spec.usage, Usage::Cycles { .. } | Usage::Trips { .. });
        let active = active && !disabled;
        let trip_start = matches!(spec.usage, Usage::Trips { .. })
            && self
                .active_windows
                .iter()
                .any(|(from, _)| t >= *from && t < *from + self.config.interval);
        let age_years = (t - device.installed_at) as f64 / (365.0 * DAY_MICROS as f64);
        let ambient = self.ambient(t);
        let cold = ((10.0 - ambient) / 20.0).max(0.0);

        let mut events = Vec::new();
        let mut metrics = Vec::with_capacity(spec.metrics.len());
        for (metric_idx, metric) in spec.metrics.iter().enumerate() {
            let mut value = if active {
                device.baselines[metric_idx]
            } else {
                match metric.idle {
                    Some(idle) => idle,
                    None if matches!(spec.usage, Usage::Cycles { .. } | Usage::Trips { .. }) => {
                        continue;
                    }
                    None => device.baselines[metric_idx],
                }
            };
            value += metric.drift_per_year * age_years;
            for ((mode, h), is_broken) in spec.modes.iter().zip(&health).zip(&broken) {
                for effect in mode.effects.iter().filter(|e| e.metric == metric.name) {
                    let scale = if active { 1.0 } else { 0.3 };
                    let excursion = if metric.name == "engine_temp_c" {
                        // Thermostat: excursions, not a steady offset.
                        if self.rng.gen_bool((0.15 + 0.85 * h).min(1.0)) {
                            1.0
                        } else {
                            0.2
                        }
                    } else {
                        1.0
                    };
                    let severity = if *is_broken { 1.0 } else { *h };
                    value += effect.at_failure * severity * scale * excursion;
                }
            }
            // Kind-specific physics.
            match metric.name {
                "ambient_temp_c" => value = ambient,
                "cabinet_temp_c" => value += 0.04 * (ambient - 20.0).max(0.0),
                "compressor_duty_pct" => value += 0.8 * (ambient - 20.0).max(0.0),
                "cranking_voltage_v" => {
                    if !trip_start {
                        continue;
                    }
                    // Cold mornings make a weak battery much worse.
                    let weakness = spec
                        .modes
                        .iter()
                        .zip(&health)
                        .find(|(m, _)| m.component == "battery")
                        .map_or(0.0, |(_, h)| *h);
                    value -= 0.6 * cold + 1.8 * cold * weakness;
                }
                "engine_temp_c" => value -= 25.0 * cold * self.rng.gen_range(0.0..1.0),
                "latitude" => {
                    value = device.latitude
                        + if active {
                            self.rng.gen_range(-0.05..0.05)
                        } else {
                            0.0
                        }
                }
                "longitude" => {
                    value = device.longitude
                        + if active {
                            self.rng.gen_range(-0.08..0.08)
                        } else {
                            0.0
                        }
                }
                "door_open_count" => {
                    let local_hour = ((t / HOUR_MICROS) + device.utc_offset_hours).rem_euclid(24);
                    let rate = if (7..23).contains(&local_hour) {
                        value * device.usage_scale
                    } else {
                        0.05
                    };
                    value = Poisson::new(rate.max(0.01))
                        .map(|p| p.sample(&mut self.rng))
                        .unwrap_or(0.0);
                }
                "storage_write_errors" => {
                    value = Poisson::new(value.max(0.001))
                        .map(|p| p.sample(&mut self.rng))
                        .unwrap_or(0.0);
                }
                "uptime_h" => value = (t - self.uptime_since) as f64 / HOUR_MICROS as f64,
                _ => {}
            }
            if metric.noise > 0.0
                && !matches!(
                    metric.name,
                    "door_open_count"
                        | "storage_write_errors"
                        | "uptime_h"
                        | "latitude"
                        | "longitude"
                )
            {
                value += Normal::new(0.0, metric.noise)
                    .expect("normal")
                    .sample(&mut self.rng);
            }
            if artefacts.outlier_rate > 0.0 && self.rng.gen_bool(artefacts.outlier_rate) {
                value +=
                    metric.noise.max(0.01) * 10.0 * if self.rng.gen_bool(0.5) { 1.0 } else { -1.0 };
            }
            if artefacts.missing_metric_rate > 0.0
                && self.rng.gen_bool(artefacts.missing_metric_rate)
            {
                continue;
            }
            let value = value.clamp(metric.min, metric.max);
            metrics.push((metric.name, (value * 10_000.0).round() / 10_000.0));
        }

        // Events: warnings grow with degradation, healthy devices raise the same codes now
        // and then (nuisance), and a critical event marks each failure.
        let samples_per_day = DAY_MICROS as f64 / self.config.interval.max(1) as f64;
        for (mode_idx, (mode, h)) in spec.modes.iter().zip(&health).enumerate() {
            let nuisance_start = (nuisance_per_day(mode.warning_code) * self.config.nuisance_scale
                / samples_per_day)
                .clamp(0.0, 1.0);
            let nuisance = !broken[mode_idx]
                && if self.nuisance_left[mode_idx] > 0 {
                    self.nuisance_left[mode_idx] -= 1;
                    true
                } else if nuisance_start > 0.0 && self.rng.gen_bool(nuisance_start) {
                    self.nuisance_left[mode_idx] = self.rng.gen_range(0..3);
                    true
                } else {
                    false
                };
            let degrading =
                *h > 0.05 && !broken[mode_idx] && self.rng.gen_bool((0.05 * h * h).min(1.0));
            if nuisance || degrading {
                let severity = if *h > 0.7 {
                    forewarn::contract::Severity::Error
                } else {
                    forewarn::contract::Severity::Warning
                };
                events.push(SimEvent {
                    time: t,
                    code: mode.warning_code,
                    severity,
                    message: mode.warning_message.to_string(),
                });
            }
            let failures_so_far = self.episodes[mode_idx]
                .iter()
                .filter(|e| e.failed_by(t))
                .count();
            if failures_so_far > self.failures_announced[mode_idx] {
                self.failures_announced[mode_idx] = failures_so_far;
                events.push(SimEvent {
                    time: t,
                    code: "FAIL",
                    severity: forewarn::contract::Severity::Critical,
                    message: format!("{} failure", mode.component),
                });
            }
        }
        // Overheating cameras reboot.
        if spec.kind == Kind::Camera {
            let overheating = spec
                .modes
                .iter()
                .zip(&health)
                .find(|(m, _)| m.component == "overheating")
                .map_or(0.0, |(_, h)| *h);
            if overheating > 0.5 && self.rng.gen_bool(0.1 * overheating) {
                self.uptime_since = t;
                events.push(SimEvent {
                    time: t,
                    code: "T02",
                    severity: forewarn::contract::Severity::Warning,
                    message: "watchdog reboot".into(),
                });
            }
        }

        let offline = device
            .offline
            .iter()
            .any(|(from, to)| t >= *from && t < *to);
        let missing =
            artefacts.missing_sample_rate > 0.0 && self.rng.gen_bool(artefacts.missing_sample_rate);
        // A missing sample sends nothing, but still advances the sequence counter so that
        // the gap is visible.
        self.seq += 1;
        Some(Sample {
            time: t,
            reported_time: t + device.clock_skew_micros,
            seq: self.seq,
            metrics: if missing { Vec::new() } else { metrics },
            events,
            offline,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::MessagePlanner;

    const START: i64 = 1_780_000_000_000_000;

    fn config(seed: u64, devices: usize, days: i64) -> SimConfig {
        SimConfig {
            seed,
            devices,
            start: START,
            end: START + days * DAY_MICROS,
            interval: 10 * 60 * 1_000_000,
            artefacts: Artefacts {
                malformed_rate: 0.01,
                ..Artefacts::default()
            },
            nuisance_scale: 1.0,
            failure_scale: 1.0,
        }
    }

    /// A visit while a component wears out replaces it: its failure never comes (no
    /// critical event, no broken-device effects), the truth marks it prevented, and the
    /// samples before the visit are unchanged. A visit to a healthy component finds
    /// nothing and changes nothing; a visit to a broken one repairs it at once.
    #[test]
    fn a_visit_before_the_failure_prevents_it_and_the_truth_says_so() {
        let mut config = config(7, 300, 60);
        config.artefacts = Artefacts::none();
        let fleet = Fleet::build(config.clone());
        let (device_idx, mode_idx, episode) = fleet
            .devices
            .iter()
            .flat_map(|d| {
                d.episodes
                    .iter()
                    .enumerate()
                    .flat_map(move |(m, eps)| eps.iter().map(move |e| (d.index, m, *e)))
            })
            .find(|(_, _, e)| {
                !e.sudden
                    && e.onset > config.start + DAY_MICROS
                    && e.failure_at < config.end - 5 * DAY_MICROS
                    && e.failure_at - e.onset > 2 * DAY_MICROS
            })
            .expect("a fleet of 300 over 60 days has a slow failure inside the window");
        let device = &fleet.devices[device_idx];
        let component = device.kind.spec().modes[mode_idx].component;
        // The visit comes late in the warning, when the wear shows.
        let visit_at = episode.failure_at - (episode.failure_at - episode.onset) / 5;
        let fails = |samples: &[Sample]| {
            samples.iter().any(|s| {
                s.events
                    .iter()
                    .any(|e| e.code == "FAIL" && e.message == format!("{component} failure"))
                    && s.time >= episode.failure_at
                    && s.time < episode.repaired_at
            })
        };
        let untouched: Vec<Sample> = fleet.stream(device_idx).collect();
        assert!(fails(&untouched), "without a visit the component fails");

        let mut stream = fleet.stream(device_idx);
        let mut visited = Vec::new();
        for sample in stream.by_ref() {
            let t = sample.time;
            visited.push(sample);
            if t + config.interval > visit_at {
                break;
            }
        }
        assert_eq!(
            visited[..],
            untouched[..visited.len()],
            "samples before the visit are the same"
        );
        assert_eq!(
            stream.visit(visit_at, Some(component)),
            VisitFinding::Prevented(component)
        );
        visited.extend(stream.by_ref());
        assert!(!fails(&visited), "the prevented failure never comes");
        let mut truth = Vec::new();
        fleet
            .stream(device_idx)
            .truth(config.start, config.end, &mut truth);
        assert!(truth.iter().all(|r| !r.prevented));
        let mut stream = fleet.stream(device_idx);
        stream.visit(visit_at, Some(component));
        let mut truth = Vec::new();
        stream.truth(config.start, config.start + DAY_MICROS, &mut truth);
        let prevented: Vec<_> = truth.iter().filter(|r| r.prevented).collect();
        assert_eq!(
            prevented.len(),
            1,
            "known as prevented before its time: {truth:?}"
        );
        assert_eq!(prevented[0].component, component);
        assert_eq!(prevented[0].failure_at, micros(episode.failure_at));

        // Before any wear, nothing is found; a broken component is repaired on the spot.
        let mut stream = fleet.stream(device_idx);
        assert_eq!(
            stream.visit(episode.onset - DAY_MICROS, Some(component)),
            VisitFinding::NothingFound
        );
        let broken_at = episode.failure_at + (episode.repaired_at - episode.failure_at) / 2;
        assert_eq!(
            stream.visit(broken_at, Some(component)),
            VisitFinding::Repaired(component)
        );
    }

    /// `failure_scale` multiplies the failures a fleet has (the onset rate), and 1 is the
    /// fleet as documented.
    #[test]
    fn failure_scale_multiplies_the_failures() {
        let n_failures = |scale: f64| {
            Fleet::build(SimConfig {
                failure_scale: scale,
                ..config(5, 400, 120)
            })
            .truth()
            .len()
        };
        let natural = n_failures(1.0);
        let quadrupled = n_failures(4.0);
        assert!(natural >= 30, "{natural} failures");
        let ratio = quadrupled as f64 / natural as f64;
        // Four times the rate, give or take the draw (and repairs, after which a device
        // starts over, pull it down a little).
        assert!((3.0..=5.5).contains(&ratio), "{natural} → {quadrupled}");
    }

    /// Every byte the fleet would publish over `days`.
    fn published_bytes(seed: u64) -> Vec<u8> {
        let fleet = Fleet::build(config(seed, 40, 3));
        let mut planner = MessagePlanner::new(&fleet, "devices");
        let mut streams: Vec<_> = (0..fleet.devices.len()).map(|d| fleet.stream(d)).collect();
        let mut out = Vec::new();
        loop {
            let mut any = false;
            for (device_idx, stream) in streams.iter_mut().enumerate() {
                if let Some(sample) = stream.next() {
                    any = true;
                    planner.plan(device_idx, sample, &mut out);
                }
            }
            if !any {
                break;
            }
        }
        planner.finish(&mut out);
        let mut bytes = Vec::new();
        for (_, payload, topic) in out {
            bytes.extend_from_slice(topic.as_bytes());
            bytes.extend_from_slice(&payload);
        }
        bytes
    }

    #[test]
    fn same_seed_same_bytes() {
        let first = published_bytes(11);
        assert!(first.len() > 100_000);
        assert_eq!(first, published_bytes(11));
        assert_ne!(first, published_bytes(12));
        let truth =
            |seed| serde_json::to_string(&Fleet::build(config(seed, 500, 365)).truth()).unwrap();
        assert_eq!(truth(5), truth(5));
    }

    #[test]
    fn degradation_shows_in_the_signature_metric() {
        // Find warned failures and compare the signature metric in the day before the
        // failure with the same device's week before the onset.
        let fleet = Fleet::build(SimConfig {
            artefacts: Artefacts::none(),
            nuisance_scale: 1.0,
            failure_scale: 1.0,
            ..config(3, 600, 365)
        });
        let mut checked = 0;
        let mut shown = 0;
        for device in &fleet.devices {
            let spec = device.kind.spec();
            for (mode, episodes) in spec.modes.iter().zip(&device.episodes) {
                let effect = mode.effects[0];
                for episode in episodes.iter().filter(|e| !e.sudden) {
                    let warning = episode.failure_at - episode.onset;
                    if episode.onset - 7 * DAY_MICROS < fleet.config.start
                        || episode.failure_at > fleet.config.end
                        || warning < 3 * DAY_MICROS
                    {
                        continue;
                    }
                    let samples: Vec<Sample> = fleet.stream(device.index).collect();
                    // The 90th percentile: the signature shows while the device works (a
                    // washer's drum vibrates during a cycle, not while idle).
                    let high_in = |from: i64, to: i64| {
                        let mut values: Vec<f64> = samples
                            .iter()
                            .filter(|s| s.time >= from && s.time < to)
                            .flat_map(|s| {
                                s.metrics
                                    .iter()
                                    .filter(|(name, _)| *name == effect.metric)
                                    .map(|(_, v)| *v)
                            })
                            .collect();
                        values.sort_by(f64::total_cmp);
                        let rank = if effect.at_failure > 0.0 {
                            values.len() * 98 / 100
                        } else {
                            values.len() / 50
                        };
                        values
                            .get(rank.min(values.len().saturating_sub(1)))
                            .copied()
                            .unwrap_or(f64::NAN)
                    };
                    let healthy = high_in(episode.onset - 7 * DAY_MICROS, episode.onset);
                    let failing = high_in(episode.failure_at - 2 * DAY_MICROS, episode.failure_at);
                    let shift = (failing - healthy) * effect.at_failure.signum();
                    if shift > 0.3 * effect.at_failure.abs() {
                        shown += 1;
                    } else {
                        eprintln!(
                            "{} {}: {} moved only {healthy:.2} → {failing:.2}",
                            device.external_id, mode.component, effect.metric
                        );
                    }
                    checked += 1;
                }
            }
        }
        assert!(
            checked >= 5,
            "enough warned failures in the sample ({checked})"
        );
        // A device that is hardly used in its last days (no washing, no trips) may not show
        // it: that is real, and why some failures are missed. Nearly all must show.
        assert!(
            shown * 10 >= checked * 9,
            "{shown} of {checked} warned failures show their signature"
        );
    }

    #[test]
    fn every_failure_raises_one_critical_event() {
        let fleet = Fleet::build(SimConfig {
            artefacts: Artefacts::none(),
            nuisance_scale: 1.0,
            failure_scale: 1.0,
            ..config(9, 400, 200)
        });
        let truth = fleet.truth();
        assert!(
            truth.len() > 20,
            "a year-ish of 400 devices has failures ({})",
            truth.len()
        );
        let mut critical = 0;
        for device in &fleet.devices {
            for sample in fleet.stream(device.index) {
                for event in sample
                    .events
                    .iter()
                    .filter(|e| e.severity == forewarn::contract::Severity::Critical)
                {
                    critical += 1;
                    let component = event.message.trim_end_matches(" failure");
                    let matched = truth.iter().any(|t| {
                        t.device == device.external_id
                            && t.component == component
                            && (micros(event.time) - t.failure_at).num_minutes().abs() <= 10
                    });
                    assert!(
                        matched,
                        "critical event of {} at {} has a truth record",
                        device.external_id,
                        micros(event.time)
                    );
                }
            }
        }
        assert_eq!(critical, truth.len());
    }

    #[test]
    fn people_live_in_real_cities() {
        let fleet = Fleet::build(config(1, 300, 1));
        let languages: std::collections::BTreeSet<&str> =
            fleet.customers.iter().map(|c| c.language).collect();
        for language in ["pl", "uk", "sk", "cs", "de", "en"] {
            assert!(
                languages.contains(language),
                "{language} missing: {languages:?}"
            );
        }
        assert!(fleet.technicians.len() >= 2 * crate::people::CITIES.len());
        assert!(
            fleet
                .technicians
                .iter()
                .all(|t| t.skills.len() >= 2 && t.shift_end_hour > t.shift_start_hour)
        );
        let kinds: std::collections::BTreeSet<&str> =
            fleet.devices.iter().map(|d| d.kind.as_str()).collect();
        assert_eq!(kinds.len(), 5);
    }

    /// Healthy devices raise each mode's code at about its documented rate (bursts of 1–3
    /// events: 2 on average), and a scale of 0 turns that off.
    #[test]
    fn healthy_devices_raise_nuisance_codes_at_the_documented_rate() {
        let count = |scale: f64| {
            let mut config = config(5, 200, 60);
            config.artefacts = Artefacts::none();
            config.nuisance_scale = scale;
            let fleet = Fleet::build(config.clone());
            let (mut healthy_events, mut expected) = (0usize, 0.0);
            for device in &fleet.devices {
                let spec = device.kind.spec();
                // Only devices whose components stay healthy for the whole window.
                let quiet =
                    device.episodes.iter().flatten().all(|e| {
                        e.failure_at < config.start - 8 * DAY_MICROS || e.onset > config.end
                    });
                if !quiet {
                    continue;
                }
                for mode in spec.modes.iter() {
                    expected += nuisance_per_day(mode.warning_code) * scale * 60.0 * 2.0;
                }
                for sample in fleet.stream(device.index) {
                    healthy_events += sample
                        .events
                        .iter()
                        .filter(|e| spec.modes.iter().any(|m| m.warning_code == e.code))
                        .count();
                }
            }
            (healthy_events as f64, expected)
        };
        let (observed, expected) = count(1.0);
        assert!(expected > 100.0, "{expected}");
        assert!(
            (observed / expected - 1.0).abs() < 0.2,
            "observed {observed}, documented {expected}"
        );
        assert_eq!(count(0.0).0, 0.0);
    }
}
