//! The `forewarn` binary: parses the command line and configuration, then hands over to
//! the library. `anyhow` lives only here.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use forewarn::app::{self, App, StageKind};
use forewarn::config::{Config, redact_url};
use forewarn::shutdown::{self, Shutdown};

#[derive(Parser)]
#[command(
    name = "forewarn",
    version,
    about = "Predictive field service: telemetry in, proactive service out"
)]
struct Cli {
    /// Configuration file (TOML); default `forewarn.toml` when present, or `FOREWARN_CONFIG`.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply database migrations and TimescaleDB policies, then exit.
    Migrate,
    /// Run the ingest stage only (plus /metrics, /healthz, /readyz).
    Ingest,
    /// Run every stage built so far.
    Serve,
    /// Everything on one machine: private database, embedded broker (unless the URLs are
    /// set), all stages, and a simulated fleet publishing telemetry.
    Demo {
        /// Devices in the simulated fleet.
        #[arg(long, default_value_t = 200)]
        devices: usize,
        /// Simulated seconds per second (3600: an hour a second).
        #[arg(long, default_value_t = 3600.0)]
        speed: f64,
        /// The fleet starts this many simulated days ago and runs up to now.
        #[arg(long, default_value_t = 7)]
        sim_days: u32,
        /// Seed of the simulated fleet.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Stop after this long (e.g. `2m`); otherwise when the fleet has caught up with now.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
    },
    /// Train a model for every failure mode from the history in the database: labelled
    /// examples, a time split, candidates compared, calibration, cost-minimising threshold.
    /// Writes `<train.model_dir>/<version>/{model,card}.json` and `models` rows.
    Train {
        /// First event time to use (RFC 3339); default: the oldest hourly bucket.
        #[arg(long)]
        from: Option<chrono::DateTime<chrono::Utc>>,
        /// End of the data (exclusive); the validation window is its last
        /// `train.validation_window`. Default: the newest hourly bucket.
        #[arg(long)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Version name; default `v<UTC timestamp>`.
        #[arg(long)]
        version: Option<String>,
        /// `if-better`: activate per mode only where it beats the active model on the
        /// validation window; `always`; `never`.
        #[arg(long, default_value = "if-better")]
        promote: Promote,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Judge a model on a time range: per failure mode and overall, example-level (PR-AUC,
    /// precision/recall at threshold) and event-level (failures flagged ≥ 24 h ahead,
    /// precision of flags, false alarms per 1,000 device-days, median lead time).
    Evaluate {
        /// A version in `models` or a path to a `model.json`; default: the active models.
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        from: chrono::DateTime<chrono::Utc>,
        #[arg(long)]
        to: chrono::DateTime<chrono::Utc>,
        /// Time between scored points of a device.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
        stride: Duration,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Write the raised flags as JSON lines (`forewarn-sim score --flags`).
        #[arg(long)]
        flags_out: Option<PathBuf>,
        /// Judge at this probability threshold instead of each mode's own (to explore the
        /// precision/recall trade-off).
        #[arg(long)]
        threshold: Option<f64>,
    },
    /// Load history (telemetry, events, failures, maintenance) and the device register from
    /// CSV or Parquet through a column mapping, so you can train on your own data. Writes
    /// are idempotent: importing a file twice stores each reading and event once. Every row
    /// is checked before anything is written: a bad row stops the file with an error naming
    /// the file, the row (data rows counted from 1) and the column.
    ///
    /// Column mapping: `--device-column` names the device (prefixed with `--device-prefix`
    /// to make the external id), `--time-column` the time in `--time-format` (`rfc3339`,
    /// `epoch-seconds`, `epoch-millis`, `pattern`: `--time-pattern`, UTC unless the pattern
    /// has an offset, or `cycle`: `--origin + value × --cycle-duration`), `--metrics` the
    /// metric columns (default: every other column; names are lowercased and
    /// non-alphanumerics become `_`). Files without a header take `--columns`.
    ///
    /// Devices a history file names that are not registered yet are registered with
    /// `--kind`; registered ones keep their kind and model (a placeholder kind, `unknown` or
    /// `imported`, and missing values are filled in). `import devices` loads a register and
    /// refuses values that differ from registered ones unless `--overwrite`.
    ///
    /// NASA C-MAPSS (`import cmapss --subset FD001`, from the copy vendored in
    /// `datasets/cmapss` unless `--dir` says otherwise) uses
    /// this documented mapping: whitespace-separated, no header, columns `unit cycle
    /// op_setting_1..3 sensor_1..21`; device `fd001-train-<unit>` / `fd001-test-<unit>`,
    /// kind `engine`, model `FD001`, installed at its first cycle; time `2020-01-01T00:00Z
    /// + cycle × 4 h`; the 24 other columns are metrics; every training unit fails
    /// (`failures`, component `engine`, source `imported`) at its last cycle. The test
    /// units' true RUL (`RUL_FD001.txt`) is not imported (it is the benchmark's answer).
    Import {
        // Boxed: the import commands' options would make every `Command` as large.
        #[command(subcommand)]
        source: Box<ImportCommand>,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        bench: BenchCommand,
    },
}

#[derive(clap::Args, Clone)]
struct MappingArgs {
    /// The file to read.
    file: PathBuf,
    #[arg(long, value_enum, default_value = "csv")]
    format: forewarn::import::SourceFormat,
    /// Field separator of `csv`.
    #[arg(long, default_value = ",")]
    separator: char,
    /// Column names, for files without a header row.
    #[arg(long, value_delimiter = ',')]
    columns: Option<Vec<String>>,
    #[arg(long, default_value = "device")]
    device_column: String,
    #[arg(long, default_value = "")]
    device_prefix: String,
    #[arg(long, default_value = "time")]
    time_column: String,
    #[arg(long, value_enum, default_value = "rfc3339")]
    time_format: forewarn::import::TimeFormat,
    /// strftime pattern of `--time-format pattern` (`%d/%m/%Y %H:%M`, `%Y-%m-%dT%H:%M:%S%z`).
    #[arg(long, default_value = forewarn::import::DEFAULT_TIME_PATTERN)]
    time_pattern: String,
    /// Time of cycle 0 (`--time-format cycle`).
    #[arg(long, default_value = "2020-01-01T00:00:00Z")]
    origin: chrono::DateTime<chrono::Utc>,
    /// Duration of one cycle (`--time-format cycle`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "4h")]
    cycle_duration: Duration,
}

impl MappingArgs {
    fn mapping(&self, metrics: Vec<String>) -> anyhow::Result<forewarn::import::Mapping> {
        anyhow::ensure!(
            self.separator.is_ascii(),
            "--separator must be one ASCII character"
        );
        Ok(forewarn::import::Mapping {
            format: self.format,
            separator: self.separator as u8,
            column_names: self.columns.clone(),
            device_column: self.device_column.clone(),
            device_prefix: self.device_prefix.clone(),
            time_column: self.time_column.clone(),
            time_format: self.time_format,
            time_pattern: self.time_pattern.clone(),
            origin: self.origin,
            cycle_duration: self.cycle_duration,
            metrics,
        })
    }
}

#[derive(clap::Args)]
struct ComponentArgs {
    #[command(flatten)]
    mapping: MappingArgs,
    /// Column naming the component, or `--component` for all rows.
    #[arg(long)]
    component_column: Option<String>,
    #[arg(long)]
    component: Option<String>,
    /// Kind of devices first seen in this file.
    #[arg(long, default_value = "imported")]
    kind: String,
}

impl ComponentArgs {
    /// The file's `(device, time, component)` rows, and defaults for unknown devices.
    fn read(
        &self,
    ) -> anyhow::Result<(
        forewarn::import::ComponentRows,
        forewarn::import::DeviceDefaults,
    )> {
        anyhow::ensure!(
            self.component_column.is_some() || self.component.is_some(),
            "give --component-column or --component"
        );
        let rows = forewarn::import::read_component_records(
            &self.mapping.file,
            &self.mapping.mapping(Vec::new())?,
            self.component_column.as_deref(),
            self.component.as_deref(),
        )?;
        let defaults = forewarn::import::DeviceDefaults {
            kind: self.kind.clone(),
            model: None,
            installed_at_first_reading: false,
        };
        Ok((rows, defaults))
    }
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Telemetry: one reading per (row, metric column).
    Telemetry {
        #[command(flatten)]
        mapping: MappingArgs,
        /// Metric columns (default: all but the device and time columns).
        #[arg(long, value_delimiter = ',')]
        metrics: Vec<String>,
        /// Kind of devices first seen in this file.
        #[arg(long)]
        kind: String,
        #[arg(long)]
        model: Option<String>,
        /// Devices were installed at their first reading (run-to-failure data).
        #[arg(long)]
        installed_at_first_reading: bool,
    },
    /// Events (error codes, alarms): device, time, code, and optionally severity and
    /// message. Stored like `…/events` messages (`device_events`, unique on device, time
    /// and code); training counts the codes seen per kind, so imported codes become
    /// features.
    Events {
        #[command(flatten)]
        mapping: MappingArgs,
        #[arg(long, default_value = "code")]
        code_column: String,
        /// Column of severities (`info`, `warning`, `error`, `critical`); empty cells and
        /// files without one take `--severity`.
        #[arg(long)]
        severity_column: Option<String>,
        #[arg(long, default_value = "warning")]
        severity: forewarn::contract::Severity,
        #[arg(long)]
        message_column: Option<String>,
        /// Kind of devices first seen in this file.
        #[arg(long, default_value = "imported")]
        kind: String,
    },
    /// The device register: one row per device with its kind and, optionally, model,
    /// installation time (or age), customer and position. Registered values that differ
    /// from the register's are listed and nothing is written, unless `--overwrite`;
    /// missing values and placeholder kinds are filled in.
    Devices {
        #[command(flatten)]
        mapping: MappingArgs,
        /// Column of kinds; without it every device is `--kind`.
        #[arg(long)]
        kind_column: Option<String>,
        #[arg(long, default_value = "imported")]
        kind: String,
        #[arg(long)]
        model_column: Option<String>,
        /// Column of installation times, in `--time-format`.
        #[arg(long, conflicts_with = "age_column")]
        installed_at_column: Option<String>,
        /// Column of ages in years as of `--age-as-of` (installed at `as-of − age`).
        #[arg(long, requires = "age_as_of")]
        age_column: Option<String>,
        #[arg(long)]
        age_as_of: Option<chrono::DateTime<chrono::Utc>>,
        /// Column of customer external ids (unknown customers are registered by id).
        #[arg(long)]
        customer_column: Option<String>,
        #[arg(long)]
        latitude_column: Option<String>,
        #[arg(long)]
        longitude_column: Option<String>,
        /// Replace registered values that differ from the register's.
        #[arg(long)]
        overwrite: bool,
    },
    /// Failures (ground truth): device, time, component.
    Failures(ComponentArgs),
    /// Maintenance done: device, time, component.
    Maintenance(ComponentArgs),
    /// NASA C-MAPSS with the documented mapping (see `forewarn import --help`).
    Cmapss {
        /// Default: the vendored copy, `datasets/cmapss` (files may be gzipped).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value = "FD001")]
        subset: String,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "4h")]
        cycle_duration: Duration,
        #[arg(long, default_value = "2020-01-01T00:00:00Z")]
        origin: chrono::DateTime<chrono::Utc>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Promote {
    IfBetter,
    Always,
    Never,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// One live scoring cycle (features, probabilities, top factors) for a large fleet,
    /// in memory, with a trained artifact; with `--cycle`, the whole live cycle against
    /// PostgreSQL (load, features, scoring, writing predictions) in a scratch database.
    Predict {
        #[arg(long, default_value_t = 100_000)]
        devices: usize,
        /// The whole live cycle against the database (`DATABASE_URL`, or the private
        /// cluster), `--repeat` cycles, each one hour of new telemetry later.
        #[arg(long)]
        cycle: bool,
        /// With `--cycle`: days of hourly rollup per device before the first cycle (26
        /// fill every window of the default features).
        #[arg(long, default_value_t = 26)]
        days: i64,
        #[arg(long, default_value = "models/default/model.json")]
        model: PathBuf,
        #[arg(long, default_value = "washer")]
        kind: String,
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        #[arg(long, default_value_t = 3)]
        top_factors: usize,
    },
    /// NASA C-MAPSS RUL through import → rollup → features → gradient boosting: the
    /// regressor's settings chosen on held-out training units, then the official test
    /// units scored once (RMSE with RUL capped at 125 and uncapped, a bootstrap interval,
    /// PHM08 score against the published truth, "fails within 30 cycles"
    /// precision/recall), next to the published references.
    Cmapss {
        /// Default: the vendored copy, `datasets/cmapss`.
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value = "FD001")]
        subset: String,
        /// Seeds of the refitted regressor (medians are reported).
        #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
        seeds: Vec<u64>,
        /// Training units held out to choose the regressor's settings.
        #[arg(long, default_value_t = 20)]
        validation_units: usize,
        /// The short version CI runs (`tests/it/cmapss.rs`): two settings, the first seed,
        /// no ablation.
        #[arg(long)]
        quick: bool,
    },
    /// End-to-end ingest through a real broker, and the database's COPY ceiling.
    Ingest {
        #[arg(long, default_value_t = 1000)]
        devices: usize,
        /// Readings of the flood run (as fast as the broker takes them).
        #[arg(long, default_value_t = 1_000_000)]
        readings: u64,
        #[arg(long, default_value_t = 3)]
        metrics_per_message: usize,
        /// Broker in-flight windows to measure, each with a private Mosquitto (unless MQTT_URL).
        #[arg(long, value_delimiter = ',', default_value = "20,1000")]
        windows: Vec<u16>,
        /// Session counts to measure beside the configuration's own (the default), each one
        /// shared-subscription group.
        #[arg(long, value_delimiter = ',', default_value = "4")]
        sessions: Vec<usize>,
        /// Loads to measure: `flood` (as fast as the broker takes them), `backlog` (the
        /// same queued while ingest is stopped, then ingest started), `sustained`
        /// (`--sustained-rate` for `--sustained-duration`).
        #[arg(long, value_delimiter = ',', default_value = "flood,backlog,sustained")]
        loads: Vec<forewarn::bench::LoadShape>,
        #[arg(long, default_value_t = 4)]
        publisher_connections: usize,
        /// Runs per window and load; medians are reported.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Readings/s of the sustained run (latency at a fixed load); 0 skips it.
        #[arg(long, default_value_t = 100_000.0)]
        sustained_rate: f64,
        /// Length of the sustained run (`10m` for a soak).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
        sustained_duration: Duration,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config =
        Config::load(cli.config.as_deref(), std::env::vars()).context("loading configuration")?;
    forewarn::observability::init_tracing(&config.log, std::env::var("RUST_LOG").ok().as_deref());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(cli.command, config));
    // Blocking tasks (training, feature computation) must not keep a stopping process alive.
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Migrate => {
            let (url, _cluster) = app::resolve_database(&config).await?;
            let store = app::open_store(&config, &url).await?;
            println!("migrated (timescaledb: {})", store.is_timescaledb());
            Ok(())
        }
        Command::Ingest => serve(config, StageKind::INGEST, None).await,
        Command::Serve => serve(config, StageKind::SERVE, None).await,
        Command::Train {
            from,
            until,
            version,
            promote,
            json,
        } => {
            let (store, _cluster) = open_refreshed_store(&config).await?;
            let range = match (from, until) {
                (None, None) => None,
                (from, until) => {
                    let (first, last) = store
                        .rollup_range()
                        .await?
                        .context("telemetry_hourly is empty")?;
                    Some((
                        from.unwrap_or(first),
                        until.unwrap_or(last + chrono::Duration::hours(1)),
                    ))
                }
            };
            let (artifact, report) =
                forewarn::training::train(&store, &config.train, range, version)
                    .await
                    .context("training")?;
            let stride = forewarn::training::stride_micros(config.train.example_stride);
            let decisions = match promote {
                Promote::Never => Vec::new(),
                Promote::IfBetter => {
                    forewarn::training::promote_if_better(&store, &artifact, stride)
                        .await
                        .context("promotion")?
                }
                Promote::Always => {
                    for mode in &artifact.modes {
                        store
                            .promote_model(
                                &artifact.version,
                                &mode.mode.name(),
                                "promoted by hand (--promote always)",
                                &serde_json::json!({}),
                            )
                            .await?;
                    }
                    Vec::new()
                }
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({"report": report, "promotions": decisions})
                );
            } else {
                print_train_report(&report, &decisions);
            }
            Ok(())
        }
        Command::Evaluate {
            model,
            from,
            to,
            stride,
            json,
            flags_out,
            threshold,
        } => {
            let (store, _cluster) = open_refreshed_store(&config).await?;
            let evaluation = evaluate(&store, model.as_deref(), from, to, stride, threshold)
                .await
                .context("evaluating")?;
            if let Some(path) = flags_out {
                let mut lines = String::new();
                for (device, component, time) in &evaluation.flags {
                    lines.push_str(&serde_json::json!({"device": device, "component": component, "time": time}).to_string());
                    lines.push('\n');
                }
                std::fs::write(&path, lines)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if json {
                println!("{}", serde_json::to_string(&evaluation)?);
            } else {
                print_evaluation(&evaluation);
            }
            Ok(())
        }
        Command::Demo {
            devices,
            speed,
            sim_days,
            seed,
            duration,
        } => {
            let fleet = DemoFleet {
                devices,
                speed,
                sim_days,
                seed,
                duration,
            };
            serve(config, StageKind::SERVE, Some(fleet)).await
        }
        Command::Import { source } => import(&config, *source).await,
        Command::Bench {
            bench:
                BenchCommand::Predict {
                    devices,
                    cycle: true,
                    days,
                    model,
                    kind,
                    repeat,
                    top_factors,
                },
        } => {
            let (url, _cluster) = app::resolve_database(&config).await?;
            let bench = forewarn::bench::predict::CycleBench {
                devices,
                model,
                kind,
                days,
                cycles: repeat,
                top_factors,
            };
            let report = forewarn::bench::predict::run_cycle_bench(&config, &url, &bench)
                .await
                .context("bench predict --cycle")?;
            let f = &report.first;
            println!(
                "bench predict --cycle: first cycle (loads the day buckets, as the first cycle of each day does): load rollups {:.2} s + events {:.2} s + maintenance/failures {:.2} s + models/devices/clock {:.2} s + features {:.2} s + scoring {:.2} s + write {:.2} s; wall {:.2} s",
                f.load_rollups_seconds,
                f.load_events_seconds,
                f.load_history_seconds,
                f.prepare_seconds,
                f.features_seconds,
                f.scoring_seconds,
                f.write_seconds,
                f.wall_seconds
            );
            let m = &report.median;
            println!(
                "bench predict --cycle: {} {} devices, {} days of rollup: load rollups {:.2} s + events {:.2} s + maintenance/failures {:.2} s + models/devices/clock {:.2} s + features {:.2} s + scoring {:.2} s + write {:.2} s; wall {:.2} s per cycle (medians of the {} next cycles, same day); target < 30 s",
                report.devices,
                report.kind,
                report.days,
                m.load_rollups_seconds,
                m.load_events_seconds,
                m.load_history_seconds,
                m.prepare_seconds,
                m.features_seconds,
                m.scoring_seconds,
                m.write_seconds,
                report.median_total_seconds,
                report.cycles.len() - 1
            );
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Bench {
            bench:
                BenchCommand::Predict {
                    devices,
                    cycle: false,
                    model,
                    kind,
                    repeat,
                    top_factors,
                    ..
                },
        } => {
            let report = tokio::task::spawn_blocking(move || {
                forewarn::bench::model::run_predict_bench(
                    &model,
                    &kind,
                    devices,
                    repeat,
                    top_factors,
                )
            })
            .await??;
            println!(
                "bench predict: {} {} devices, {} modes, {} features, {} input rows: features {:.2} s + scoring {:.2} s + top factors {:.2} s = {:.2} s per cycle (median of runs), {:.0} devices/s; target < 10 s",
                report.devices,
                report.kind,
                report.modes,
                report.features,
                report.input_rows,
                report.features_seconds,
                report.scoring_seconds,
                report.factors_seconds,
                report.total_seconds,
                report.devices_per_second
            );
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Bench {
            bench:
                BenchCommand::Cmapss {
                    dir,
                    subset,
                    seeds,
                    validation_units,
                    quick,
                },
        } => {
            use forewarn::bench::cmapss::{CmapssBench, run_cmapss_bench};
            let dir = dir.unwrap_or_else(forewarn::import::default_cmapss_dir);
            let bench = if quick {
                CmapssBench {
                    validation_units,
                    ..CmapssBench::quick(dir, &subset)
                }
            } else {
                CmapssBench {
                    seeds,
                    validation_units,
                    ..CmapssBench::full(dir, &subset)
                }
            };
            let (url, _cluster) = app::resolve_database(&config).await?;
            let report = run_cmapss_bench(&config, &url, &bench)
                .await
                .context("bench cmapss")?;
            println!(
                "bench cmapss {}: {} train units ({} examples, {} features), {} test units",
                report.subset,
                report.train_units,
                report.train_examples,
                report.features,
                report.test_units
            );
            println!(
                "  settings chosen on {} held-out training units (of {} tried): {}",
                report.validation_units.len(),
                report.validation.len(),
                report.chosen
            );
            println!(
                "  test units, medians over seeds {:?}: RMSE (RUL capped at {}) {:.2} [95 % bootstrap over units {:.2}–{:.2}]; against the uncapped truth {:.2}; PHM08 score (uncapped truth) {:.0}; fails within 30 cycles: precision {:.2} recall {:.2}",
                bench.seeds,
                report.rul_cap,
                report.rmse_capped,
                report.rmse_capped_interval.0,
                report.rmse_capped_interval.1,
                report.rmse_uncapped,
                report.phm08_score_uncapped,
                report.within_30_precision,
                report.within_30_recall
            );
            if let Some(last_values_only) = report.last_values_only_rmse_capped {
                println!("  same settings on last values + age only: RMSE {last_values_only:.2}");
            }
            println!(
                "  published (RMSE, capped): random forest 17.91, CNN (Babu 2016) 18.45, LSTM (Zheng 2017) 16.14, deep CNN (Li 2018) 12.61, attention ≈ 11"
            );
            println!(
                "  import {:.1} s, features {:.1} s, choosing settings {:.1} s, refit and test {:.1} s",
                report.import_seconds,
                report.features_seconds,
                report.validation_seconds,
                report.train_seconds
            );
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Bench {
            bench:
                BenchCommand::Ingest {
                    devices,
                    readings,
                    metrics_per_message,
                    windows,
                    sessions,
                    loads,
                    publisher_connections,
                    repeat,
                    sustained_rate,
                    sustained_duration,
                },
        } => {
            let bench = forewarn::bench::IngestBench {
                devices,
                readings,
                metrics_per_message,
                windows,
                sessions,
                loads,
                publisher_connections,
                repeat,
                sustained_readings_per_sec: sustained_rate,
                sustained_duration,
            };
            forewarn::bench::run_ingest(&config, &bench)
                .await
                .context("bench ingest")
        }
    }
}

async fn import(config: &Config, source: ImportCommand) -> anyhow::Result<()> {
    use forewarn::import::{self as imp, DeviceDefaults, Imported};
    let (url, _cluster) = app::resolve_database(config).await?;
    let store = app::open_store(config, &url).await?;
    let report = match source {
        ImportCommand::Telemetry {
            mapping,
            metrics,
            kind,
            model,
            installed_at_first_reading,
        } => {
            let imported = imp::read_telemetry(&mapping.file, &mapping.mapping(metrics)?)?;
            let defaults = DeviceDefaults {
                kind,
                model,
                installed_at_first_reading,
            };
            imp::write(&store, &imported, &defaults, &[], &[]).await?
        }
        ImportCommand::Events {
            mapping,
            code_column,
            severity_column,
            severity,
            message_column,
            kind,
        } => {
            let columns = imp::EventColumns {
                code: code_column,
                severity: severity_column,
                default_severity: severity,
                message: message_column,
            };
            let events = imp::read_events(&mapping.file, &mapping.mapping(Vec::new())?, &columns)?;
            let defaults = DeviceDefaults {
                kind,
                model: None,
                installed_at_first_reading: false,
            };
            imp::write_events(&store, &events, &defaults).await?
        }
        ImportCommand::Devices {
            mapping,
            kind_column,
            kind,
            model_column,
            installed_at_column,
            age_column,
            age_as_of,
            customer_column,
            latitude_column,
            longitude_column,
            overwrite,
        } => {
            let columns = imp::RegisterColumns {
                kind_column,
                kind,
                model_column,
                installed_at_column,
                age_column,
                age_as_of: age_as_of.unwrap_or_default(),
                customer_column,
                latitude_column,
                longitude_column,
            };
            let rows =
                imp::read_device_register(&mapping.file, &mapping.mapping(Vec::new())?, &columns)?;
            let report =
                imp::write_device_register(&store, &mapping.file, &rows, overwrite).await?;
            println!(
                "imported: {} devices ({} registered before, {} values overwritten)",
                report.devices, report.already_registered, report.overwritten
            );
            return Ok(());
        }
        ImportCommand::Failures(args) => {
            let (rows, defaults) = args.read()?;
            imp::write(&store, &Imported::default(), &defaults, &rows, &[]).await?
        }
        ImportCommand::Maintenance(args) => {
            let (rows, defaults) = args.read()?;
            imp::write(&store, &Imported::default(), &defaults, &[], &rows).await?
        }
        ImportCommand::Cmapss {
            dir,
            subset,
            cycle_duration,
            origin,
        } => {
            let dir = dir.unwrap_or_else(imp::default_cmapss_dir);
            let data = imp::cmapss(&dir, &subset, cycle_duration, origin)?;
            let defaults = DeviceDefaults {
                kind: "engine".into(),
                model: Some(subset.clone()),
                installed_at_first_reading: true,
            };
            imp::write(&store, &data.all_units(), &defaults, &data.failures, &[]).await?
        }
    };
    println!(
        "imported: {} devices, {} readings ({} new), {} events ({} new), {} failures, {} maintenance records",
        report.devices,
        report.readings,
        report.readings_inserted,
        report.events,
        report.events_inserted,
        report.failures,
        report.maintenance
    );
    Ok(())
}

/// The database with its hourly rollup up to date (training and evaluation read it). The
/// cluster handle keeps a private cluster alive.
async fn open_refreshed_store(
    config: &Config,
) -> anyhow::Result<(
    forewarn::store::Store,
    Option<forewarn::embedded::postgres::PrivateCluster>,
)> {
    let (url, cluster) = app::resolve_database(config).await?;
    let store = app::open_store(config, &url).await?;
    store
        .refresh_rollup_now()
        .await
        .context("refreshing the rollup")?;
    Ok((store, cluster))
}

/// Evaluates `model` (a version, a path, or the active models) on `[from, to)`.
async fn evaluate(
    store: &forewarn::store::Store,
    model: Option<&str>,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    stride: Duration,
    threshold: Option<f64>,
) -> anyhow::Result<forewarn::training::Evaluation> {
    use forewarn::training::{self, read_artifact};
    let stride = training::stride_micros(stride);
    let rows = store.model_rows(false).await?;
    // (artifact path, modes to keep: None = all)
    let mut targets: Vec<(PathBuf, Option<Vec<String>>)> = Vec::new();
    match model {
        Some(model) if std::path::Path::new(model).is_file() => targets.push((model.into(), None)),
        Some(version) => {
            let row = rows
                .iter()
                .find(|r| r.version == version)
                .with_context(|| format!("no model version {version} in `models` (nor a file)"))?;
            targets.push((row.artifact_path.clone().into(), None));
        }
        None => {
            for row in rows.iter().filter(|r| r.active) {
                let path = PathBuf::from(&row.artifact_path);
                match targets.iter_mut().find(|(p, _)| *p == path) {
                    Some((_, Some(modes))) => modes.push(row.failure_mode.clone()),
                    _ => targets.push((path, Some(vec![row.failure_mode.clone()]))),
                }
            }
            anyhow::ensure!(
                !targets.is_empty(),
                "no active model: train one or pass --model"
            );
        }
    }
    let mut merged: Option<training::Evaluation> = None;
    for (path, modes) in targets {
        let mut artifact = read_artifact(&path)?;
        if let Some(modes) = &modes {
            artifact.modes.retain(|m| modes.contains(&m.mode.name()));
        }
        if let Some(threshold) = threshold {
            for mode in &mut artifact.modes {
                mode.threshold = threshold;
            }
        }
        let evaluation = training::evaluate(store, &artifact, from, to, stride).await?;
        merged = Some(match merged {
            None => evaluation,
            Some(mut all) => {
                all.failure_modes.extend(evaluation.failure_modes);
                all.flags.extend(evaluation.flags);
                all
            }
        });
    }
    let mut evaluation = merged.context("nothing evaluated")?;
    evaluation.overall = training::overall(&evaluation.failure_modes);
    Ok(evaluation)
}

fn print_train_report(
    report: &forewarn::training::TrainReport,
    decisions: &[forewarn::training::Decision],
) {
    println!(
        "trained {} on {} .. {} (tuning from {} in {} fold(s), test from {}) in {:.1} s",
        report.version,
        report.data_from,
        report.data_to,
        report.tuning_from,
        report.tuning_folds,
        report.test_from,
        report.seconds
    );
    println!("  figures: test window (nothing fitted or chosen on it) | tuning window");
    println!(
        "artifact {}  card {}",
        report.artifact.display(),
        report.card.display()
    );
    for mode in &report.modes {
        let tuning = &mode.tuning_window.events;
        let baseline = mode
            .baselines
            .iter()
            .map(|b| {
                format!(
                    "{} {}/{} p {:.2}",
                    b.rule, b.test.flagged_24h_ahead, b.test.failures, b.test.precision
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "  {:<26} {:<24} horizon {:>4.0} h  threshold {:.3}  flagged ≥24h {}/{}  false {}  unjudged {}  precision {:.2}  PR-AUC {:.3} | {}/{} p {:.2} | baselines: {}",
            mode.failure_mode,
            mode.algorithm,
            mode.horizon_hours,
            mode.threshold,
            mode.events.flagged_24h_ahead,
            mode.events.failures,
            mode.events.false_flags,
            mode.events.unjudged_flags,
            mode.events.precision,
            mode.pr_auc,
            tuning.flagged_24h_ahead,
            tuning.failures,
            tuning.precision,
            baseline,
        );
    }
    for decision in decisions {
        println!(
            "  {} {}: {}",
            if decision.promoted {
                "promoted"
            } else {
                "kept active"
            },
            decision.failure_mode,
            decision.reason
        );
    }
}

fn print_evaluation(evaluation: &forewarn::training::Evaluation) {
    println!("evaluation {} .. {}", evaluation.from, evaluation.to);
    println!(
        "  {:<26} {:>8} {:>10} {:>9} {:>7} {:>13} {:>11} {:>7}",
        "failure mode",
        "failures",
        "≥24h ahead",
        "precision",
        "recall",
        "FA/1000 d-d",
        "median lead",
        "PR-AUC"
    );
    for m in &evaluation.failure_modes {
        println!(
            "  {:<26} {:>8} {:>10} {:>9.2} {:>7.2} {:>13.2} {:>11} {:>7.3}",
            m.failure_mode,
            m.failures,
            m.flagged_24h_ahead,
            m.precision,
            m.recall,
            m.false_alarms_per_1000_device_days,
            m.median_lead_time_hours
                .map_or("-".into(), |h| format!("{h:.0} h")),
            m.pr_auc
        );
    }
    println!(
        "  overall: {}",
        serde_json::to_string(&evaluation.overall).unwrap_or_default()
    );
}

/// The demo's fleet: `forewarn-sim live` when the simulator binary sits beside this one
/// (`cargo build --release --workspace`), else the synthetic publisher.
struct DemoFleet {
    devices: usize,
    speed: f64,
    sim_days: u32,
    seed: u64,
    duration: Option<Duration>,
}

impl DemoFleet {
    async fn run(self, mqtt_url: String, database_url: String, shutdown: Shutdown) {
        let simulator = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("forewarn-sim")))
            .filter(|path| path.is_file());
        let run = async {
            match simulator {
                Some(simulator) => {
                    tracing::info!(
                        devices = self.devices,
                        speed = self.speed,
                        sim_days = self.sim_days,
                        "demo: simulated fleet (forewarn-sim live)"
                    );
                    let truth = std::path::Path::new("data").join("demo-truth.jsonl");
                    let _ = std::fs::create_dir_all("data");
                    let child = tokio::process::Command::new(simulator)
                        .arg("live")
                        .args([
                            "--devices",
                            &self.devices.to_string(),
                            "--speed",
                            &self.speed.to_string(),
                        ])
                        .args([
                            "--sim-days",
                            &self.sim_days.to_string(),
                            "--seed",
                            &self.seed.to_string(),
                        ])
                        .arg("--truth")
                        .arg(&truth)
                        .env("MQTT_URL", &mqtt_url)
                        .env("DATABASE_URL", &database_url)
                        .kill_on_drop(true)
                        .status();
                    match child.await {
                        Ok(status) if status.success() => {
                            tracing::info!(truth = %truth.display(), "demo fleet caught up with now")
                        }
                        Ok(status) => tracing::error!(%status, "forewarn-sim live failed"),
                        Err(error) => tracing::error!(%error, "could not start forewarn-sim"),
                    }
                }
                None => {
                    tracing::warn!(
                        "forewarn-sim not found beside forewarn (cargo build --release --workspace); demo uses the synthetic publisher"
                    );
                    let spec = forewarn::loadgen::LoadSpec {
                        devices: self.devices,
                        rate_per_sec: Some(self.devices as f64),
                        duration: Some(
                            Duration::from_secs(u64::from(self.sim_days) * 86_400)
                                .div_f64(self.speed),
                        ),
                        connections: 1,
                        device_prefix: "DEMO-".into(),
                        ..Default::default()
                    };
                    if let Err(error) = forewarn::loadgen::publish(&mqtt_url, &spec, shutdown).await
                    {
                        tracing::error!(%error, "demo publisher failed");
                    }
                }
            }
        };
        match self.duration {
            Some(limit) => {
                let _ = tokio::time::timeout(limit, run).await;
            }
            None => run.await,
        }
    }
}

async fn serve(
    config: Config,
    stages: &[StageKind],
    demo_fleet: Option<DemoFleet>,
) -> anyhow::Result<()> {
    let (database_url, _cluster) = app::resolve_database(&config).await.context("database")?;
    let (mqtt_url, broker) = app::resolve_broker(&config).await.context("mqtt broker")?;
    // The simulator publishes as a device: with the embedded broker that is the devices'
    // credential, never ingest's.
    let device_url = broker
        .as_ref()
        .map_or_else(|| mqtt_url.clone(), |broker| broker.device_url());
    let store = app::open_store(&config, &database_url)
        .await
        .context("opening the database")?;
    let forewarn = App::new(&config, store.clone()).await?;
    let http_addr = forewarn.http.local_addr();
    let metrics = forewarn.metrics.clone();
    let (trigger, shutdown) = Shutdown::new();
    let is_demo = demo_fleet.is_some();
    let mut fleet_task = demo_fleet.map(|fleet| {
        tracing::info!(
            "demo: fleet publishing to {}; metrics at http://{http_addr}/metrics",
            redact_url(&device_url)
        );
        tokio::spawn(fleet.run(device_url.clone(), database_url.clone(), shutdown.clone()))
    });
    let running = forewarn.run(&config, &mqtt_url, stages, shutdown);
    tokio::pin!(running);
    let demo_done = async {
        match &mut fleet_task {
            Some(task) => {
                let _ = task.await;
                // The broker may still hold a backlog: stop once ingest has been idle
                // (nothing pending, no new readings) for two seconds.
                let mut last = (u64::MAX, 0);
                for _ in 0..300 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let now = (
                        metrics.ingest.readings.get(),
                        metrics.ingest.pending_messages.get(),
                    );
                    if now.0 == last.0 && now.1 == 0 && last.1 == 0 {
                        break;
                    }
                    last = now;
                }
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = &mut running => return result.context("forewarn stopped"),
        _ = shutdown::os_signal() => tracing::info!("shutting down"),
        _ = demo_done => tracing::info!("demo fleet finished; shutting down"),
    }
    trigger.trigger();
    // Each stage finishes its unit of work within its own grace period; this backstop keeps
    // a hung dependency (or a second signal) from keeping the process alive.
    let deadline = config.ingest.shutdown_grace + Duration::from_secs(3);
    tokio::select! {
        result = &mut running => result.context("shutting down")?,
        _ = shutdown::os_signal() => {
            tracing::warn!("second signal: exiting now");
            std::process::exit(130);
        }
        _ = tokio::time::sleep(deadline) => {
            tracing::error!(?deadline, "stages did not stop in time; exiting");
            std::process::exit(1);
        }
    }
    if is_demo {
        let n_readings = store.count_telemetry().await?;
        let n_predictions = store.count_predictions().await?;
        println!(
            "demo: {n_readings} readings and {n_predictions} predictions stored in {}",
            redact_url(&database_url)
        );
    }
    Ok(())
}
