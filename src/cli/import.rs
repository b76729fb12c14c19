//! `forewarn import …`: history and the device register from CSV/Parquet through a column
//! mapping, and the C-MAPSS preset.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use forewarn::app;
use forewarn::config::Config;

#[derive(clap::Args, Clone)]
pub struct MappingArgs {
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
pub struct ComponentArgs {
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
pub enum ImportCommand {
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

pub async fn run(source: ImportCommand, config: &Config) -> anyhow::Result<()> {
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
