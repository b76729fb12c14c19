//! Device kinds: their metrics (with units), usage, and failure modes (component, physical
//! signature, onset rate, warning time). Everything the simulator knows about physics is in
//! these tables; `signals` turns them into readings.

/// A metric a kind reports.
#[derive(Debug, Clone, Copy)]
pub struct MetricSpec {
    pub name: &'static str,
    pub unit: &'static str,
    /// Typical healthy value of a unit while active.
    pub baseline: f64,
    /// Standard deviation of the baseline between units (two healthy machines differ).
    pub unit_spread: f64,
    /// Sample noise (standard deviation).
    pub noise: f64,
    /// Value while the device is idle (washer not washing, car parked); `None`: the metric
    /// is not reported while idle.
    pub idle: Option<f64>,
    /// Slow drift per year of age (sensor ageing), in the metric's unit.
    pub drift_per_year: f64,
    /// Physical limits the value is clamped to.
    pub min: f64,
    pub max: f64,
}

/// How a failure mode shows in one metric when the component's health index reaches 1.
#[derive(Debug, Clone, Copy)]
pub struct Effect {
    pub metric: &'static str,
    pub at_failure: f64,
}

/// A (kind, component) failure mode.
#[derive(Debug, Clone, Copy)]
pub struct FailureModeSpec {
    pub component: &'static str,
    /// What it looks like, for people (simulators/README.md).
    pub signature: &'static str,
    /// Mean days from installation (or repair) to the onset of degradation.
    pub mean_days_to_onset: f64,
    /// Median hours from onset to failure when the failure gives warning.
    pub warning_median_hours: f64,
    /// Log-normal sigma of the warning time.
    pub warning_sigma: f64,
    /// Share of failures that give almost no warning (0.5–6 h).
    pub sudden_probability: f64,
    pub effects: &'static [Effect],
    /// Error code the device raises more often as the component degrades.
    pub warning_code: &'static str,
    pub warning_message: &'static str,
    /// The prediction horizon forewarn uses for this mode (DESIGN.md: failure within
    /// `horizon` after t).
    pub horizon_hours: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Washer,
    Fridge,
    Car,
    Camera,
    Pump,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Washer,
        Kind::Fridge,
        Kind::Car,
        Kind::Camera,
        Kind::Pump,
    ];

    pub fn as_str(self) -> &'static str {
        self.spec().name
    }

    pub fn spec(self) -> &'static KindSpec {
        match self {
            Kind::Washer => &WASHER,
            Kind::Fridge => &FRIDGE,
            Kind::Car => &CAR,
            Kind::Camera => &CAMERA,
            Kind::Pump => &PUMP,
        }
    }

    /// Device id prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Washer => "WM",
            Kind::Fridge => "FR",
            Kind::Car => "CAR",
            Kind::Camera => "CAM",
            Kind::Pump => "PMP",
        }
    }
}

/// How a kind is used over a day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Usage {
    /// Runs in cycles (washer: ~1 cycle a day, evenings and weekends more).
    Cycles {
        cycles_per_day: f64,
        cycle_hours: f64,
    },
    /// Always on, load follows the day (fridge: door openings by day).
    Continuous,
    /// Trips (car: commute peaks).
    Trips { trips_per_day: f64, trip_hours: f64 },
    /// Always on, flat (camera, pump).
    Flat,
}

#[derive(Debug, Clone, Copy)]
pub struct KindSpec {
    pub kind: Kind,
    pub name: &'static str,
    pub models: &'static [&'static str],
    pub usage: Usage,
    pub metrics: &'static [MetricSpec],
    pub modes: &'static [FailureModeSpec],
}

impl KindSpec {
    pub fn metric_index(&self, name: &str) -> Option<usize> {
        self.metrics.iter().position(|m| m.name == name)
    }

    pub fn mode(&self, component: &str) -> Option<&FailureModeSpec> {
        self.modes.iter().find(|m| m.component == component)
    }
}

/// A row of a metric table; positional, so that the tables below read like tables.
#[allow(clippy::too_many_arguments)]
const fn metric(
    name: &'static str,
    unit: &'static str,
    baseline: f64,
    unit_spread: f64,
    noise: f64,
    idle: Option<f64>,
    drift_per_year: f64,
    min: f64,
    max: f64,
) -> MetricSpec {
    MetricSpec {
        name,
        unit,
        baseline,
        unit_spread,
        noise,
        idle,
        drift_per_year,
        min,
        max,
    }
}

pub static WASHER: KindSpec = KindSpec {
    kind: Kind::Washer,
    name: "washer",
    models: &["WM-7000", "WM-8100", "EcoWash 9"],
    usage: Usage::Cycles {
        cycles_per_day: 0.9,
        cycle_hours: 1.6,
    },
    metrics: &[
        metric(
            "drum_vibration_rms",
            "g",
            0.35,
            0.05,
            0.04,
            Some(0.01),
            0.01,
            0.0,
            20.0,
        ),
        metric(
            "motor_current_a",
            "A",
            2.1,
            0.15,
            0.12,
            Some(0.05),
            0.02,
            0.0,
            15.0,
        ),
        metric(
            "motor_temp_c",
            "°C",
            48.0,
            3.0,
            1.5,
            Some(22.0),
            0.3,
            -10.0,
            150.0,
        ),
        metric("drain_time_s", "s", 55.0, 5.0, 4.0, None, 0.5, 0.0, 1200.0),
        metric("water_temp_c", "°C", 40.0, 1.0, 1.0, None, 0.0, 0.0, 100.0),
    ],
    modes: &[
        FailureModeSpec {
            component: "drum_bearing",
            signature: "drum vibration RMS and motor current rise over weeks, motor runs hotter",
            mean_days_to_onset: 1100.0,
            warning_median_hours: 21.0 * 24.0,
            warning_sigma: 0.45,
            sudden_probability: 0.10,
            effects: &[
                Effect {
                    metric: "drum_vibration_rms",
                    at_failure: 1.6,
                },
                Effect {
                    metric: "motor_current_a",
                    at_failure: 1.2,
                },
                Effect {
                    metric: "motor_temp_c",
                    at_failure: 12.0,
                },
            ],
            warning_code: "E31",
            warning_message: "drum imbalance detected",
            horizon_hours: 7.0 * 24.0,
        },
        FailureModeSpec {
            component: "drain_pump",
            signature: "drain time lengthens over days, drain-timeout codes",
            mean_days_to_onset: 1400.0,
            warning_median_hours: 6.0 * 24.0,
            warning_sigma: 0.5,
            sudden_probability: 0.25,
            effects: &[Effect {
                metric: "drain_time_s",
                at_failure: 240.0,
            }],
            warning_code: "E21",
            warning_message: "drain timeout",
            horizon_hours: 3.0 * 24.0,
        },
    ],
};

pub static FRIDGE: KindSpec = KindSpec {
    kind: Kind::Fridge,
    name: "fridge",
    models: &["FR-200", "FR-340 NoFrost", "CoolLine 60"],
    usage: Usage::Continuous,
    metrics: &[
        metric(
            "cabinet_temp_c",
            "°C",
            4.0,
            0.4,
            0.25,
            None,
            0.05,
            -30.0,
            40.0,
        ),
        metric(
            "compressor_duty_pct",
            "%",
            38.0,
            4.0,
            3.0,
            None,
            0.5,
            0.0,
            100.0,
        ),
        metric(
            "evaporator_temp_c",
            "°C",
            -18.0,
            1.0,
            0.6,
            None,
            0.1,
            -40.0,
            30.0,
        ),
        metric(
            "door_open_count",
            "1/10min",
            0.6,
            0.2,
            0.0,
            None,
            0.0,
            0.0,
            50.0,
        ),
    ],
    modes: &[
        FailureModeSpec {
            component: "compressor",
            signature: "compressor duty cycle climbs towards 100 %, cabinet temperature follows",
            mean_days_to_onset: 1300.0,
            warning_median_hours: 10.0 * 24.0,
            warning_sigma: 0.5,
            sudden_probability: 0.15,
            effects: &[
                Effect {
                    metric: "compressor_duty_pct",
                    at_failure: 55.0,
                },
                Effect {
                    metric: "cabinet_temp_c",
                    at_failure: 6.0,
                },
            ],
            warning_code: "F12",
            warning_message: "compressor overrun",
            horizon_hours: 7.0 * 24.0,
        },
        FailureModeSpec {
            component: "refrigerant_leak",
            signature: "slow creep of evaporator and cabinet temperature over weeks",
            mean_days_to_onset: 1800.0,
            warning_median_hours: 25.0 * 24.0,
            warning_sigma: 0.4,
            sudden_probability: 0.05,
            effects: &[
                Effect {
                    metric: "evaporator_temp_c",
                    at_failure: 14.0,
                },
                Effect {
                    metric: "cabinet_temp_c",
                    at_failure: 7.0,
                },
                Effect {
                    metric: "compressor_duty_pct",
                    at_failure: 25.0,
                },
            ],
            warning_code: "F07",
            warning_message: "evaporator temperature high",
            horizon_hours: 14.0 * 24.0,
        },
    ],
};

pub static CAR: KindSpec = KindSpec {
    kind: Kind::Car,
    name: "car",
    models: &["Octavia 2.0 TDI", "Golf 1.5 TSI", "Duster 1.6"],
    usage: Usage::Trips {
        trips_per_day: 2.2,
        trip_hours: 0.6,
    },
    metrics: &[
        metric(
            "battery_voltage_v",
            "V",
            12.6,
            0.08,
            0.04,
            Some(12.6),
            -0.05,
            0.0,
            16.0,
        ),
        metric(
            "cranking_voltage_v",
            "V",
            10.4,
            0.2,
            0.15,
            None,
            -0.1,
            0.0,
            14.0,
        ),
        metric(
            "engine_temp_c",
            "°C",
            90.0,
            1.5,
            2.0,
            None,
            0.0,
            -40.0,
            150.0,
        ),
        metric(
            "ambient_temp_c",
            "°C",
            10.0,
            0.0,
            1.0,
            Some(10.0),
            0.0,
            -40.0,
            50.0,
        ),
        metric("latitude", "°", 0.0, 0.0, 0.0, Some(0.0), 0.0, -90.0, 90.0),
        metric(
            "longitude",
            "°",
            0.0,
            0.0,
            0.0,
            Some(0.0),
            0.0,
            -180.0,
            180.0,
        ),
    ],
    modes: &[
        FailureModeSpec {
            component: "battery",
            signature: "resting and cranking voltage sag, much worse on cold mornings",
            mean_days_to_onset: 900.0,
            warning_median_hours: 8.0 * 24.0,
            warning_sigma: 0.6,
            sudden_probability: 0.15,
            effects: &[
                Effect {
                    metric: "cranking_voltage_v",
                    at_failure: -2.6,
                },
                Effect {
                    metric: "battery_voltage_v",
                    at_failure: -0.9,
                },
            ],
            warning_code: "P0562",
            warning_message: "system voltage low",
            horizon_hours: 7.0 * 24.0,
        },
        FailureModeSpec {
            component: "thermostat",
            signature: "engine temperature excursions during trips that grow in size and frequency",
            mean_days_to_onset: 1600.0,
            warning_median_hours: 9.0 * 24.0,
            warning_sigma: 0.5,
            sudden_probability: 0.2,
            effects: &[Effect {
                metric: "engine_temp_c",
                at_failure: 28.0,
            }],
            warning_code: "P0217",
            warning_message: "engine over-temperature",
            horizon_hours: 5.0 * 24.0,
        },
    ],
};

pub static CAMERA: KindSpec = KindSpec {
    kind: Kind::Camera,
    name: "camera",
    models: &["CAM-4K Dome", "CAM-2K Bullet"],
    usage: Usage::Flat,
    metrics: &[
        metric(
            "storage_write_errors",
            "1/10min",
            0.05,
            0.02,
            0.0,
            None,
            0.01,
            0.0,
            10_000.0,
        ),
        metric(
            "dropped_frames_pct",
            "%",
            0.2,
            0.05,
            0.08,
            None,
            0.02,
            0.0,
            100.0,
        ),
        metric(
            "device_temp_c",
            "°C",
            42.0,
            2.0,
            0.8,
            None,
            0.3,
            -30.0,
            110.0,
        ),
        metric("uptime_h", "h", 0.0, 0.0, 0.0, None, 0.0, 0.0, 1e6),
    ],
    modes: &[
        FailureModeSpec {
            component: "sd_card",
            signature: "write errors and dropped frames climb as flash cells wear out",
            mean_days_to_onset: 1000.0,
            warning_median_hours: 12.0 * 24.0,
            warning_sigma: 0.5,
            sudden_probability: 0.1,
            effects: &[
                Effect {
                    metric: "storage_write_errors",
                    at_failure: 40.0,
                },
                Effect {
                    metric: "dropped_frames_pct",
                    at_failure: 9.0,
                },
            ],
            warning_code: "S03",
            warning_message: "storage write retry",
            horizon_hours: 7.0 * 24.0,
        },
        FailureModeSpec {
            component: "overheating",
            signature: "housing temperature rises (fan, dust), then watchdog reboots",
            mean_days_to_onset: 1500.0,
            warning_median_hours: 4.0 * 24.0,
            warning_sigma: 0.5,
            sudden_probability: 0.2,
            effects: &[Effect {
                metric: "device_temp_c",
                at_failure: 35.0,
            }],
            warning_code: "T01",
            warning_message: "thermal throttling",
            horizon_hours: 2.0 * 24.0,
        },
    ],
};

pub static PUMP: KindSpec = KindSpec {
    kind: Kind::Pump,
    name: "pump",
    models: &["CP-50 Centrifugal", "CP-80 Centrifugal"],
    usage: Usage::Flat,
    metrics: &[
        metric(
            "vibration_mm_s",
            "mm/s",
            2.2,
            0.3,
            0.15,
            None,
            0.05,
            0.0,
            100.0,
        ),
        metric(
            "bearing_temp_c",
            "°C",
            55.0,
            3.0,
            0.8,
            None,
            0.3,
            -10.0,
            200.0,
        ),
        metric("flow_m3h", "m³/h", 42.0, 4.0, 1.2, None, -0.2, 0.0, 500.0),
        metric(
            "discharge_pressure_bar",
            "bar",
            6.0,
            0.4,
            0.12,
            None,
            0.0,
            0.0,
            40.0,
        ),
        metric(
            "motor_current_a",
            "A",
            18.0,
            1.5,
            0.5,
            None,
            0.1,
            0.0,
            200.0,
        ),
    ],
    modes: &[
        FailureModeSpec {
            component: "bearing",
            signature: "vibration velocity and bearing temperature rise (ISO 10816 zones B→D)",
            mean_days_to_onset: 1200.0,
            warning_median_hours: 18.0 * 24.0,
            warning_sigma: 0.45,
            sudden_probability: 0.08,
            effects: &[
                Effect {
                    metric: "vibration_mm_s",
                    at_failure: 7.5,
                },
                Effect {
                    metric: "bearing_temp_c",
                    at_failure: 25.0,
                },
                Effect {
                    metric: "motor_current_a",
                    at_failure: 3.0,
                },
            ],
            warning_code: "V45",
            warning_message: "vibration alarm",
            horizon_hours: 7.0 * 24.0,
        },
        FailureModeSpec {
            component: "seal",
            signature: "discharge pressure and flow fall as the mechanical seal leaks",
            mean_days_to_onset: 1600.0,
            warning_median_hours: 7.0 * 24.0,
            warning_sigma: 0.5,
            sudden_probability: 0.2,
            effects: &[
                Effect {
                    metric: "discharge_pressure_bar",
                    at_failure: -2.4,
                },
                Effect {
                    metric: "flow_m3h",
                    at_failure: -14.0,
                },
            ],
            warning_code: "L12",
            warning_message: "seal leak suspected",
            horizon_hours: 5.0 * 24.0,
        },
    ],
};
