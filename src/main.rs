//! The `forewarn` binary: parses the command line and configuration, then hands over to
//! the library. `anyhow` lives only here.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use forewarn::app::{self, App, Stages};
use forewarn::config::Config;
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
        /// Messages per second the fleet publishes in total.
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        /// Stop after this long (e.g. `2m`); runs until Ctrl-C when absent.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        bench: BenchCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
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
        /// MQTT sessions of the ingester (one shared-subscription group).
        #[arg(long, default_value_t = 4)]
        sessions: usize,
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
    runtime.block_on(run(cli.command, config))
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Migrate => {
            let (url, _cluster) = app::resolve_database(&config).await?;
            let store = app::open_store(&config, &url).await?;
            println!("migrated (timescaledb: {})", store.is_timescaledb());
            Ok(())
        }
        Command::Ingest => {
            serve(
                config,
                Stages {
                    ingest: true,
                    maintenance: false,
                },
                None,
            )
            .await
        }
        Command::Serve => serve(config, Stages::ALL, None).await,
        Command::Demo {
            devices,
            rate,
            duration,
        } => {
            let spec = forewarn::loadgen::LoadSpec {
                devices,
                rate_per_sec: Some(rate),
                duration,
                connections: 1,
                device_prefix: "DEMO-".into(),
                ..Default::default()
            };
            serve(config, Stages::ALL, Some(spec)).await
        }
        Command::Bench {
            bench:
                BenchCommand::Ingest {
                    devices,
                    readings,
                    metrics_per_message,
                    windows,
                    sessions,
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

async fn serve(
    config: Config,
    stages: Stages,
    demo_fleet: Option<forewarn::loadgen::LoadSpec>,
) -> anyhow::Result<()> {
    let (database_url, _cluster) = app::resolve_database(&config).await.context("database")?;
    let (mqtt_url, _broker) = app::resolve_broker(&config).await.context("mqtt broker")?;
    let store = app::open_store(&config, &database_url)
        .await
        .context("opening the database")?;
    let forewarn = App::new(&config, store.clone()).await?;
    let http_addr = forewarn.http.local_addr();
    let (trigger, shutdown) = Shutdown::new();
    let mut fleet_task = None;
    let is_demo = demo_fleet.is_some();
    if let Some(spec) = demo_fleet {
        tracing::info!(
            devices = spec.devices,
            "demo: simulated fleet publishing to {mqtt_url}; metrics at http://{http_addr}/metrics"
        );
        let url = mqtt_url.clone();
        let fleet_shutdown = shutdown.clone();
        fleet_task = Some(tokio::spawn(async move {
            forewarn::loadgen::publish(&url, &spec, fleet_shutdown).await
        }));
    }
    let running = forewarn.run(&config, &mqtt_url, stages, shutdown);
    tokio::pin!(running);
    let demo_done = async {
        match &mut fleet_task {
            Some(task) => {
                let _ = task.await;
                // Let ingest commit the last messages before stopping.
                tokio::time::sleep(Duration::from_secs(2)).await;
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
    running.await.context("shutting down")?;
    if is_demo {
        let n_readings = store.count_telemetry().await?;
        println!("demo: {n_readings} readings stored in {database_url}");
    }
    Ok(())
}
