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
            serve(config, Stages::ALL, Some(fleet)).await
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
    stages: Stages,
    demo_fleet: Option<DemoFleet>,
) -> anyhow::Result<()> {
    let (database_url, _cluster) = app::resolve_database(&config).await.context("database")?;
    let (mqtt_url, _broker) = app::resolve_broker(&config).await.context("mqtt broker")?;
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
            "demo: fleet publishing to {mqtt_url}; metrics at http://{http_addr}/metrics"
        );
        tokio::spawn(fleet.run(mqtt_url.clone(), database_url.clone(), shutdown.clone()))
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
    running.await.context("shutting down")?;
    if is_demo {
        let n_readings = store.count_telemetry().await?;
        println!("demo: {n_readings} readings stored in {database_url}");
    }
    Ok(())
}
