//! `forewarn serve`, `forewarn ingest` and `forewarn demo`: run stages until a signal (the
//! demo: until its fleet has caught up and ingest is idle), then stop within the grace
//! period.

use std::time::Duration;

use anyhow::Context;
use forewarn::app::{self, App, StageKind};
use forewarn::config::{Config, positive_scale, redact_url};
use forewarn::demo::{self, DemoFleet};
use forewarn::shutdown::{self, Shutdown};

#[derive(clap::Args)]
pub struct DemoArgs {
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
    /// Multiplies the fleet's failure rate (1: as documented in simulators/README.md), so
    /// that a few hundred devices give something to watch within minutes.
    #[arg(long, default_value_t = 3.0, value_parser = positive_scale)]
    failure_scale: f64,
    /// Leave the loop open: no simulated technician turns up and no customer answers
    /// (bookings stay booked; messages go to the log).
    #[arg(long)]
    no_field: bool,
    /// Stop after this long (e.g. `2m`); otherwise run until Ctrl-C (the fleet goes on in
    /// real time once it has caught up with now).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
}

pub async fn run_ingest(config: Config) -> anyhow::Result<()> {
    serve(config, StageKind::INGEST, None).await
}

pub async fn run_predict(config: Config) -> anyhow::Result<()> {
    serve(config, StageKind::PREDICT, None).await
}

pub async fn run_dispatch(config: Config) -> anyhow::Result<()> {
    serve(config, StageKind::DISPATCH, None).await
}

pub async fn run_outreach(config: Config) -> anyhow::Result<()> {
    serve(config, StageKind::OUTREACH, None).await
}

pub async fn run_serve(config: Config) -> anyhow::Result<()> {
    serve(config, StageKind::SERVE, None).await
}

pub async fn run_demo(args: DemoArgs, mut config: Config) -> anyhow::Result<()> {
    // Customers' messages reach the log when no channel of theirs is set up (SMTP, SMS…).
    config.outreach.log_channel = true;
    // The fleet's clock runs an hour a second: quiet hours on the wall clock would hold
    // every message of a night-time demo until morning.
    config.outreach.quiet_hours = false;
    // Scores and dispatch passes often enough that the first tickets show within a minute
    // of simulated days.
    if config.predict.interval == forewarn::predict::config::PredictConfig::default().interval {
        config.predict.interval = Some(Duration::from_secs(15));
    }
    let field = if args.no_field {
        None
    } else {
        demo::prepare_field(&mut config).context("setting up the demo's field")?
    };
    let fleet = DemoFleet {
        devices: args.devices,
        speed: args.speed,
        sim_days: args.sim_days,
        seed: args.seed,
        failure_scale: args.failure_scale,
        duration: args.duration,
        field,
    };
    serve(config, StageKind::SERVE, Some(fleet)).await
}

async fn serve(
    config: Config,
    stages: &[StageKind],
    demo_fleet: Option<DemoFleet>,
) -> anyhow::Result<()> {
    let (database_url, _cluster) = app::resolve_database(&config).await.context("database")?;
    // A process without ingest (`predict`) needs no broker: none is started.
    let (mqtt_url, broker) = if stages.contains(&StageKind::Ingest) {
        app::resolve_broker(&config).await.context("mqtt broker")?
    } else {
        (String::new(), None)
    };
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
    let demo_duration = demo_fleet.as_ref().and_then(|fleet| fleet.duration);
    let mut fleet_task = None;
    if let Some(mut fleet) = demo_fleet {
        if let Some(field) = &mut fleet.field {
            field.api_key = demo::make_demo_key(&store, demo::FIELD_KEY, "integration").await?;
        }
        let console_key = demo::make_demo_key(&store, demo::CONSOLE_KEY, "dispatcher").await?;
        println!(
            "demo: console http://{http_addr}/ — sign in with the key {console_key}\n\
             demo: metrics http://{http_addr}/metrics; fleet publishing to {}; customers' \
             messages in the log{}; Ctrl-C stops",
            redact_url(&device_url),
            if fleet.field.is_some() {
                " and on the simulated customers' phones"
            } else {
                ""
            }
        );
        tokio::spawn(demo::print_kpis(store.clone(), Duration::from_secs(5)));
        fleet_task = Some(tokio::spawn(fleet.run(
            device_url.clone(),
            database_url.clone(),
            shutdown.clone(),
        )));
    }
    let running = forewarn.run(&config, &mqtt_url, stages, shutdown);
    tokio::pin!(running);
    // With --duration the demo stops once it has passed and ingest has taken in what the
    // fleet published; otherwise it runs until a signal.
    let demo_done = async {
        match (&mut fleet_task, demo_duration) {
            (Some(task), Some(_)) => {
                let _ = task.await;
                demo::wait_until_ingest_idle(&metrics).await;
            }
            _ => std::future::pending().await,
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
