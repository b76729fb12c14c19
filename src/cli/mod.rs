//! The command line: one module per command, each with its clap arguments and a `run`
//! that calls the library and prints. Nothing here is needed by a library user or the API.

mod bench;
mod evaluate;
mod import;
mod keys;
mod migrate;
mod serve;
mod train;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use forewarn::app;
use forewarn::config::Config;
use forewarn::embedded::postgres::PrivateCluster;
use forewarn::store::Store;

#[derive(Parser)]
#[command(
    name = "forewarn",
    version,
    about = "Predictive field service: telemetry in, proactive service out"
)]
pub struct Cli {
    /// Configuration file (TOML); default `forewarn.toml` when present, or `FOREWARN_CONFIG`.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Apply database migrations and TimescaleDB policies, then exit.
    Migrate,
    /// Run the ingest stage only (plus /metrics, /healthz, /readyz).
    Ingest,
    /// Run live scoring and scheduled retraining only (plus /metrics, /healthz, /readyz),
    /// for a deployment that scales them apart from ingest.
    Predict,
    /// Run the dispatch stage only (plus /metrics, /healthz, /readyz): predictions,
    /// critical events and silent devices become tickets, surges become incidents,
    /// technicians are booked inside the predicted window, customers' messages queued.
    Dispatch,
    /// Run the outreach stage only (plus /metrics, /healthz, /readyz): the outbox's
    /// messages delivered to customers by email, SMS, push or webhook, with retries,
    /// fallback to the next channel and quiet hours.
    Outreach,
    /// Run every stage built so far.
    Serve,
    /// Everything on one machine: private database, embedded broker (unless the URLs are
    /// set), all stages, and a simulated fleet publishing telemetry.
    Demo(serve::DemoArgs),
    /// Train a model for every failure mode from the history in the database: labelled
    /// examples, a time split, candidates compared, calibration, cost-minimising threshold.
    /// Writes `<train.model_dir>/<version>/{model,card}.json` and `models` rows.
    Train(train::TrainArgs),
    /// Judge a model on a time range: per failure mode and overall, example-level (PR-AUC,
    /// precision/recall at threshold) and event-level (failures flagged ≥ 24 h ahead,
    /// precision of flags, false alarms per 1,000 device-days, median lead time).
    Evaluate(evaluate::EvaluateArgs),
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
        source: Box<import::ImportCommand>,
    },
    /// Probe `/readyz` of the forewarn on `http.addr` (loopback for a wildcard address):
    /// exit 0 when ready, 1 with the reason otherwise. For container healthchecks.
    Healthcheck {
        /// Give up after this long.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
        timeout: std::time::Duration,
    },
    /// API keys of `/api/v1`: `keys create --role admin` (the first key), `keys list`,
    /// `keys revoke <id>`.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        bench: bench::BenchCommand,
    },
}

/// Runs `command` to the end.
pub async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Migrate => migrate::run(&config).await,
        Command::Ingest => serve::run_ingest(config).await,
        Command::Predict => serve::run_predict(config).await,
        Command::Dispatch => serve::run_dispatch(config).await,
        Command::Outreach => serve::run_outreach(config).await,
        Command::Serve => serve::run_serve(config).await,
        Command::Demo(args) => serve::run_demo(args, config).await,
        Command::Train(args) => train::run(args, &config).await,
        Command::Evaluate(args) => evaluate::run(args, &config).await,
        Command::Import { source } => import::run(*source, &config).await,
        Command::Bench { bench } => bench::run(bench, &config).await,
        Command::Keys { command } => keys::run(command, &config).await,
        Command::Healthcheck { timeout } => {
            let addr = forewarn::api::probe::probe_address(config.http.addr);
            let body = forewarn::api::probe::probe_ready(addr, timeout).await?;
            println!("ready: {body}");
            Ok(())
        }
    }
}

/// The database with its hourly rollup up to date (training and evaluation read it). The
/// cluster handle keeps a private cluster alive.
async fn open_refreshed_store(config: &Config) -> anyhow::Result<(Store, Option<PrivateCluster>)> {
    let (url, cluster) = app::resolve_database(config).await?;
    let store = app::open_store(config, &url).await?;
    store
        .refresh_rollup_now()
        .await
        .context("refreshing the rollup")?;
    Ok((store, cluster))
}
